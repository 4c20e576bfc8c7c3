#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

@Suite("SharedMemory", .serialized, .timeLimit(.minutes(3)))
struct SharedMemoryTests {
    // MARK: In one process

    @Test func createWriteOpenAndZeroFill() throws {
        try withCleanNames("basic") { prefix in
            let name = prefix + "-a"
            let segment = try SharedMemory.create(name: name, size: 10_000)
            #expect(segment.name == name)
            #expect(segment.size == 10_000)
            #expect(segment.osName == "/" + name)
            #expect(segment.lifetime == .whileReferenced)
            try segment.withUnsafeBytes { bytes in
                #expect(bytes.count == 10_000)
                #expect(bytes.allSatisfy { $0 == 0 })
            }
            try segment.withUnsafeMutableBytes { $0[9_999] = 42 }
            let second = try SharedMemory.open(name: name)
            #expect(second.size == 10_000)
            #expect(try second.withUnsafeBytes { $0[9_999] } == 42)
            // Independent handles: closing one leaves the other working.
            segment.close()
            #expect(segment.isClosed)
            #expect(try second.withUnsafeBytes { $0[9_999] } == 42)
            #expect(SharedMemory.exists(name: name))
            expectError(.closed) { try segment.withUnsafeBytes { $0.count } }
            expectError(.closed) { try segment.readBytes() }
            segment.close() // idempotent
            second.close()
            #expect(!SharedMemory.exists(name: name))
            expectError(.notFound) { try SharedMemory.open(name: name) }
        }
    }

    @Test func lastReferenceGoingAwayCloses() throws {
        try withCleanNames("deinit") { prefix in
            do {
                let segment = try SharedMemory.create(name: prefix, size: 256)
                try segment.write("x")
                #expect(SharedMemory.exists(name: prefix))
            }
            #expect(!SharedMemory.exists(name: prefix))
        }
    }

    @Test func storesBytesStringsAndCodableValues() throws {
        struct Reading: Codable, Equatable { var sensor: String; var celsius: Double; var tags: [String] }
        try withCleanNames("store") { prefix in
            let bytes = try SharedMemory.create(name: prefix + "-b", bytes: [1, 2, 3, 0, 255])
            defer { bytes.close() }
            #expect(bytes.size == SharedMemory.storageSize(capacity: 5) && bytes.size == 128 + 2 * 8)
            #expect(try bytes.readBytes() == [1, 2, 3, 0, 255])

            let text = try SharedMemory.create(name: prefix + "-s", string: "grüße, 世界")
            defer { text.close() }
            #expect(try text.readString() == "grüße, 世界")

            let value = Reading(sensor: "t1", celsius: 21.5, tags: ["a", "b"])
            let stored = try SharedMemory.create(name: prefix + "-v", storing: value)
            defer { stored.close() }
            #expect(try stored.load(Reading.self) == value)

            let roomy = try SharedMemory.create(name: prefix + "-r", size: 400)
            defer { roomy.close() }
            // Nothing stored yet is said so, not "not valid JSON" (issue 17).
            expectError(.empty) { try roomy.readBytes() }
            expectError(.empty) { try roomy.load(Reading.self) }
            #expect(try roomy.storedValueExtent() == nil)
            try roomy.store(value)
            // The first store laid the frame out over the payload: slots of (400 - 128) / 2 = 136 bytes.
            #expect(try roomy.storedValueExtent() == 0..<400)
            #expect(try SharedMemory.open(name: prefix + "-r").load(Reading.self) == value)
            try roomy.write("short")
            #expect(try roomy.readString() == "short")
            expectError(.invalidSize) { try roomy.write([UInt8](repeating: 7, count: 137)) }
            #expect(try roomy.readString() == "short", "a value that does not fit changes nothing")
            try roomy.write([UInt8](repeating: 7, count: 136))
            expectError(.decodingFailed) { try roomy.load(Reading.self) }

            // Too small for a frame: storing is refused, reading says nothing was stored.
            let tiny = try SharedMemory.create(name: prefix + "-t", size: 64)
            defer { tiny.close() }
            expectError(.invalidSize) { try tiny.write("x") }
            expectError(.empty) { try tiny.readString() }
        }
    }

    /// `create(name:storing:)` makes room for the first value only; `capacity:` reserves room for
    /// larger later values (issue 17).
    @Test func aCapacityReservesRoomForLargerLaterValues() throws {
        try withCleanNames("capacity") { prefix in
            let exact = try SharedMemory.create(name: prefix + "-e", storing: ["a": 1])
            defer { exact.close() }
            expectError(.invalidSize) { try exact.store(["a": 1, "bb": 22, "ccc": 333]) }
            #expect(try exact.load([String: Int].self) == ["a": 1])

            let roomy = try SharedMemory.create(name: prefix + "-r", storing: ["a": 1], capacity: 256)
            defer { roomy.close() }
            #expect(roomy.size == SharedMemory.storageSize(capacity: 256))
            let larger = Dictionary(uniqueKeysWithValues: (0..<20).map { ("key\($0)", $0) })
            try roomy.store(larger)
            #expect(try roomy.load([String: Int].self) == larger)
            #expect(try roomy.storedValueExtent() == 0..<(128 + 2 * 256))
            expectError(.invalidSize) { try SharedMemory.create(name: prefix + "-x", bytes: [1, 2, 3], capacity: 2) }
        }
    }

    /// A peer that scribbles over the frame makes reads and writes fail with `corrupt`, never read
    /// or write out of bounds.
    @Test func aScribbledFrameIsCorrupt() throws {
        try withCleanNames("scribble") { prefix in
            let segment = try SharedMemory.create(name: prefix, string: "hello", capacity: 64)
            defer { segment.close() }
            try segment.write("again") // store 2: slot 0 is current
            func scribble(_ value: some FixedWidthInteger, at offset: Int) throws {
                try segment.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: type(of: value)) }
            }
            // The current slot's length (slot 0's, at 88).
            try scribble(UInt64(1 << 40), at: 88)
            expectError(.corrupt) { try segment.readBytes() }
            try scribble(UInt64(65), at: 88)
            expectError(.corrupt) { try segment.readBytes() }
            try scribble(UInt64(5), at: 88)
            #expect(try segment.readString() == "again")
            // The slot capacity: beyond the payload, or not a multiple of 8.
            try scribble(UInt64(1 << 40), at: 80)
            expectError(.corrupt) { try segment.readBytes() }
            expectError(.corrupt) { try segment.write("x") }
            try scribble(UInt64(60), at: 80)
            expectError(.corrupt) { try segment.readBytes() }
            try scribble(UInt64(64), at: 80)
            #expect(try segment.readString() == "again")
            // The tag.
            try scribble(UInt32(0xDEAD_BEEF), at: 76)
            expectError(.corrupt) { try segment.readBytes() }
            expectError(.corrupt) { try segment.write("x") }
        }
    }

    @Test func openOrCreateSaysWhatItDid() throws {
        try withCleanNames("ooc") { prefix in
            let (first, created) = try SharedMemory.openOrCreate(name: prefix, size: 128)
            #expect(created)
            let (second, createdAgain) = try SharedMemory.openOrCreate(name: prefix, size: 64)
            #expect(!createdAgain)
            #expect(second.size == 128)
            expectError(.invalidSize) { try SharedMemory.openOrCreate(name: prefix, size: 4096) }
            first.close()
            second.close()
        }
    }

    @Test func typedErrors() throws {
        try withCleanNames("errors") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 256)
            defer { segment.close() }
            expectError(.alreadyExists) { try SharedMemory.create(name: prefix, size: 256) }
            expectError(.notFound) { try SharedMemory.open(name: prefix + "-missing") }
            expectError(.notFound) { try SharedMemory.remove(name: prefix + "-missing") }
            // Bad names
            expectError(.invalidName) { try SharedMemory.create(name: "", size: 256) }
            expectError(.invalidName) { try SharedMemory.create(name: String(repeating: "n", count: 256), size: 64) }
            expectError(.invalidName) { try SharedMemory.create(name: prefix + "/x", size: 64) }
            expectError(.invalidName) { try SharedMemory.create(name: prefix + "\0x", size: 64) }
            expectError(.invalidName) { try SharedMemory.create(name: "..", size: 256) }
            expectError(.invalidName) { try SharedMemory.open(name: "a/b") }
            // Bad sizes
            expectError(.invalidSize) { try SharedMemory.create(name: prefix + "-z", size: 0) }
            expectError(.invalidSize) { try SharedMemory.create(name: prefix + "-n", size: -5) }
            expectError(.invalidSize) { try SharedMemory.create(name: prefix + "-m", size: Int.max) }
            // Bigger than the shm file system: a typed error at create, never SIGBUS later.
            let capacity = SharedMemoryObject.availableBytes() ?? (1 << 40)
            expectError(.outOfMemory) { try SharedMemory.create(name: prefix + "-big", size: Int(capacity) * 2) }
            // Errors describe themselves readably.
            do { _ = try SharedMemory.create(name: prefix, size: 256) } catch let error as InterprocessError {
                #expect("\(error)".contains("alreadyExists"))
                #expect("\(error)".contains(prefix))
                #expect(error.systemError == .fileExists)
            } catch { Issue.record("\(error)") }
            // `catch Code` pattern matching works.
            do { _ = try SharedMemory.open(name: prefix + "-missing") } catch InterprocessError.Code.notFound {} catch {
                Issue.record("pattern did not match \(error)")
            }
        }
    }

    @Test func permissionsAreOwnerOnlyByDefaultAndExactWhenWidened() throws {
        try withCleanNames("perm") { prefix in
            let private_ = try SharedMemory.create(name: prefix + "-p", size: 256)
            defer { private_.close() }
            #expect(try SharedMemory.info(name: prefix + "-p").permissions == "0600")
            let shared = try SharedMemory.create(name: prefix + "-w", size: 256, permissions: [.ownerReadWrite, .groupReadWrite, .otherReadWrite])
            defer { shared.close() }
            #expect(try SharedMemory.info(name: prefix + "-w").permissions == "0666", "the umask must not narrow explicit permissions")
        }
    }

    @Test func segmentWithoutPermissionGivesPermissionDenied() throws {
        try withCleanNames("noperm") { prefix in
            if geteuid() == 0 {
                // Root bypasses permission bits: a child that drops to 'nobody' tries to open it.
                let segment = try SharedMemory.create(name: prefix, size: 256)
                defer { segment.close() }
                let result = try Peer.run("--as-nobody", "expect-open-error", prefix, "permissionDenied")
                #expect(result.termination == .exited(0), "child said: \(result.output)")
            } else {
                let segment = try SharedMemory.create(name: prefix, size: 256, permissions: [])
                defer { segment.close() }
                expectError(.permissionDenied) { try SharedMemory.open(name: prefix) }
            }
        }
    }

    // MARK: Corruption and foreign objects

    @Test func corruptAndForeignObjectsGiveTypedErrors() throws {
        try withCleanNames("corrupt") { prefix in
            // A file that is not ours.
            let foreign = prefix + "-foreign"
            let fd = try SharedMemoryObject.open("/" + foreign, create: true, exclusive: true)
            try fd.truncate(to: 8192)
            try fd.close()
            scribble(foreign, at: 0, Array("hello, not a segment".utf8))
            expectError(.incompatible) { try SharedMemory.open(name: foreign) }
            expectError(.incompatible) { try SharedMemory.remove(name: foreign) }
            expectError(.alreadyExists) { try SharedMemory.create(name: foreign, size: 256) }
            #expect(!SharedMemory.list().contains { $0.name == foreign })
            try SharedMemoryObject.unlink("/" + foreign)

            // Scribbles over our header, one field at a time.
            let cases: [(String, Int, [UInt8], InterprocessError.Code)] = [
                ("magic", 0, [0x42], .incompatible),
                ("version", 8, [9], .incompatible),
                ("total", 32, [1, 2, 3], .corrupt),
                ("payload", 48, [0xff], .corrupt),
                ("holders", 28, [7], .corrupt),
                ("lifetime", 20, [9], .corrupt),
                ("state", 24, [77], .corrupt),
                ("name", 90, [0x41], .corrupt),
            ]
            for (label, offset, bytes, code) in cases {
                let name = "\(prefix)-\(label)"
                let segment = try SharedMemory.create(name: name, size: 4096, lifetime: .persistent)
                segment.close()
                scribble(name, at: offset, bytes)
                expectError(code) { try SharedMemory.open(name: name) }
                let info = try? SharedMemory.info(name: name)
                if code == .corrupt { #expect(info?.problem != nil, "\(label): ls must flag it") }
                if label == "magic" {
                    // Not recognisably ours any more: remove refuses to touch it.
                    expectError(.incompatible) { try SharedMemory.remove(name: name) }
                    try SharedMemoryObject.unlink("/" + name)
                } else {
                    try SharedMemory.remove(name: name) // ours (magic intact) can still be removed
                }
            }

            // Truncated below the header.
            let truncated = prefix + "-trunc"
            try SharedMemory.create(name: truncated, size: 4096, lifetime: .persistent).close()
            let tfd = try SharedMemoryObject.open("/" + truncated, create: false, exclusive: false)
            try tfd.truncate(to: 100)
            try tfd.close()
            expectError(.corrupt) { try SharedMemory.open(name: truncated) }
            try SharedMemoryObject.unlink("/" + truncated)

            // Grown behind our back: the header's size no longer matches the file.
            let grown = prefix + "-grown"
            try SharedMemory.create(name: grown, size: 4096, lifetime: .persistent).close()
            let gfd = try SharedMemoryObject.open("/" + grown, create: false, exclusive: false)
            try gfd.truncate(to: 1 << 20)
            try gfd.close()
            expectError(.corrupt) { try SharedMemory.open(name: grown) }
            try SharedMemory.remove(name: grown)
        }
    }

    // MARK: Across processes

    @Test func peersSeeEachOthersWrites() throws {
        try withCleanNames("visible") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 256)
            defer { segment.close() }
            try segment.write("from the parent")
            let read = try Peer.run("read", prefix)
            #expect(read.termination == .exited(0))
            #expect(read.output == "from the parent\n")
            let write = try Peer.run("write", prefix, "from the child")
            #expect(write.termination == .exited(0))
            #expect(try segment.readString() == "from the child")
        }
    }

    @Test func whileReferencedLivesWhileAnyProcessHoldsIt() throws {
        try withCleanNames("lifetime") { prefix in
            let child = try Peer.spawn("create-hold", prefix, "256", "whileReferenced", "30")
            defer { child.stop() }
            #expect(child.readLine() == "ready")
            let mine = try SharedMemory.open(name: prefix)
            #expect(try mine.readString() == "hello from \(child.pid)")
            let info = try SharedMemory.info(name: prefix)
            #expect(info.holders.count == 2)
            #expect(info.holders.allSatisfy { $0.alive })
            #expect(Set(info.holders.map(\.pid)) == [child.pid, getpid()])
            // The creator is killed without closing: our handle keeps the segment.
            child.stop()
            #expect(try mine.readString() == "hello from \(child.pid)")
            #expect(SharedMemory.exists(name: prefix))
            // We are the last holder now: closing removes it, although the creator never closed.
            mine.close()
            #expect(!SharedMemory.exists(name: prefix))
        }
    }

    @Test func sigkilledLastHolderIsSweptByTheNextOpen() throws {
        try withCleanNames("swept") { prefix in
            let child = try Peer.spawn("create-hold", prefix, "4096", "whileReferenced", "30")
            #expect(child.readLine() == "ready")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let info = try SharedMemory.info(name: prefix)
            #expect(info.isAbandoned)
            #expect(info.holders.map(\.pid) == [child.pid])
            #expect(info.holders.map(\.alive) == [false])
            #expect(!SharedMemory.exists(name: prefix))
            expectError(.notFound) { try SharedMemory.open(name: prefix) }
            #expect(TestNames.leftovers(prefix).isEmpty, "the open swept it")
            // And the name is free again.
            try SharedMemory.create(name: prefix, size: 256).close()
        }
    }

    @Test func sigkilledLastHolderIsSweptByCreateAndCollectGarbage() throws {
        try withCleanNames("gc") { prefix in
            for name in [prefix + "-create", prefix + "-gc"] {
                let child = try Peer.spawn("create-hold", name, "256", "whileReferenced", "30")
                #expect(child.readLine() == "ready")
                child.stop()
            }
            // create over an abandoned name sweeps it first.
            let fresh = try SharedMemory.create(name: prefix + "-create", size: 256)
            expectError(.empty) { try fresh.readBytes() }
            fresh.close()
            // gc: the dry run reports, the real run removes; live segments stay.
            let live = try SharedMemory.create(name: prefix + "-live", size: 256)
            defer { live.close() }
            let wouldRemove = SharedMemory.collectGarbage(dryRun: true, prefix: prefix).map(\.name)
            #expect(wouldRemove == [prefix + "-gc"])
            #expect((try? SharedMemory.info(name: prefix + "-gc")) != nil)
            let removed = SharedMemory.collectGarbage(prefix: prefix).map(\.name)
            #expect(removed == [prefix + "-gc"])
            #expect(TestNames.leftovers(prefix + "-gc").isEmpty)
            #expect(SharedMemory.exists(name: prefix + "-live"))
        }
    }

    @Test func deadHolderDoesNotKeepItAliveWhenOthersClose() throws {
        try withCleanNames("deadholder") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 256)
            let child = try Peer.spawn("hold", prefix, "30")
            #expect(child.readLine() == "ready 256")
            #expect(try SharedMemory.info(name: prefix).holders.count == 2)
            child.kill(signal: SIGKILL)
            child.wait(timeout: .seconds(10))
            let holders = try SharedMemory.info(name: prefix).holders
            #expect(holders.first { $0.pid == child.pid }?.alive == false)
            #expect(holders.first { $0.pid == getpid() }?.alive == true)
            // A new open sweeps the dead slot.
            let again = try SharedMemory.open(name: prefix)
            #expect(try SharedMemory.info(name: prefix).holders.map(\.pid).sorted() == [getpid(), getpid()])
            again.close()
            segment.close()
            #expect(!SharedMemory.exists(name: prefix))
        }
    }

    @Test func persistentOutlivesItsCreator() throws {
        try withCleanNames("persist") { prefix in
            let result = try Peer.run("create-exit", prefix, "256", "persistent", "kept")
            #expect(result.termination == .exited(0))
            #expect(SharedMemory.exists(name: prefix))
            let segment = try SharedMemory.open(name: prefix)
            #expect(segment.lifetime == .persistent)
            #expect(try segment.readString() == "kept")
            segment.close()
            #expect(SharedMemory.exists(name: prefix), "closing a persistent segment keeps it")
            #expect(SharedMemory.collectGarbage(dryRun: true, prefix: prefix).isEmpty)
            try SharedMemory.remove(name: prefix)
            #expect(!SharedMemory.exists(name: prefix))
            expectError(.notFound) { try SharedMemory.remove(name: prefix) }
        }
    }

    @Test func removeLeavesHoldersWorking() throws {
        try withCleanNames("rm") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 256)
            try segment.write("still here")
            try SharedMemory.remove(name: prefix)
            #expect(!SharedMemory.exists(name: prefix))
            #expect(try segment.readString() == "still here")
            // A new segment of the same name is independent, and closing the old handle leaves it alone.
            let newer = try SharedMemory.create(name: prefix, size: 256)
            segment.close()
            #expect(SharedMemory.exists(name: prefix))
            newer.close()
        }
    }

    @Test func racingCreatorsExactlyOneWins() throws {
        try withCleanNames("race") { prefix in
            for round in 0..<5 {
                let name = "\(prefix)-\(round)"
                let start = Clock.monotonicNanoseconds() + 150_000_000
                let children = try (0..<6).map { _ in try Peer.spawn("race-create", name, "\(start)") }
                let results = children.map { $0.wait(timeout: .seconds(20)) }
                children.forEach { try? $0.standardOutput?.close() }
                #expect(results.filter { $0 == .exited(0) }.count == 1, "round \(round): \(results)")
                #expect(results.filter { $0 == .exited(3) }.count == 5, "round \(round): \(results)")
                try SharedMemory.remove(name: name)
            }
        }
    }
}
