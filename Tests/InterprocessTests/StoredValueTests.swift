#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// The test child's checked values (Sources/InterprocessTestChild/ValueCommands.swift): the tests
/// only create the first one, seed -1, which the child accepts as whole.
private struct CheckedValue: Codable, Sendable, Equatable {
    var seed: Int
    var body: String
    var checksum: UInt64

    /// The fingerprint both sides use (the child's type has another module's name).
    static let type = TypeFingerprint(typeName: "tests.CheckedValue", size: 0, alignment: 1)

    static func start() -> CheckedValue { CheckedValue(seed: -1, body: "start", checksum: 0) }
}

private struct Config: Codable, Sendable, Equatable {
    var level: Int
    var final = false

    /// The fingerprint both sides use (the child's type has another module's name).
    static let type = TypeFingerprint(typeName: "tests.BroadcastConfig", size: 0, alignment: 1)
}

/// Writes `bytes` at `offset` of the file of the named object (a peer that scribbles over it).
private func scribble(_ name: String, at offset: Int64, _ bytes: [UInt8]) throws {
    let fd = try FileDescriptor.open("/dev/shm/" + name, .readWrite)
    defer { try? fd.close() }
    _ = try fd.writeAll(toAbsoluteOffset: offset, bytes)
}

@Suite("Stored and watched values", .serialized, .timeLimit(.minutes(5)))
struct StoredValueTests {
    // MARK: Readers never see a torn or missing value

    /// A writer stores values of varying size (raw: 1 to 62 KB; watched: 0 to 3 KB of JSON) with a checksum; readers in two other
    /// processes copy them as fast as they can and must never see a torn value, a missing one
    /// (`empty`) or an older one after a newer.
    @Test(arguments: ["raw", "watched"])
    func readersInOtherProcessesNeverSeeATornOrMissingValue(_ kind: String) async throws {
        // Off the cooperative pool: this test blocks while it waits for its children.
        try await onOwnQueue { _ in
            try withCleanNames("valstress-\(kind)") { name in
                let count = 400
                let close: () -> Void
                if kind == "raw" {
                    let segment = try SharedMemory.create(name: name, string: "start", capacity: 65536)
                    close = segment.close
                } else {
                    let value = try SharedWatchedValue<CheckedValue>.create(name: name, initialValue: .start(), capacity: 4096, type: CheckedValue.type)
                    close = value.close
                }
                defer { close() }
                let readers = try (0..<2).map { _ in try Peer.spawn("val-reader", kind, name, "\(count - 1)") }
                defer { readers.forEach { $0.stop() } }
                for reader in readers { #expect(reader.readLine() == "ready") }
                let writer = try Peer.spawn("val-writer", kind, name, "\(count)")
                defer { writer.stop() }
                #expect(writer.readLine() == "ready")
                #expect(writer.readLine(timeout: .seconds(120)) == "done")
                #expect(writer.wait(timeout: .seconds(30)) == .exited(0))
                for reader in readers {
                    let line = reader.readLine(timeout: .seconds(60)) ?? "nothing"
                    #expect(line.hasPrefix("ok "), "\(line)")
                    #expect(reader.wait(timeout: .seconds(30)) == .exited(0))
                }
            }
        }
    }

    /// The seqlock made to happen: a reader is stopped (SIGSTOP) in the middle of copying the
    /// current slot; two stores follow, the second overwriting that very slot; the reader goes on and
    /// its copy is torn — it must notice (the counter moved), copy again and return the latest whole
    /// value.
    @Test(arguments: ["raw", "watched"])
    func aReaderOvertakenMidCopyCopiesAgain(_ kind: String) async throws {
        // Off the cooperative pool: this test blocks while it waits for its children.
        try await onOwnQueue { _ in
            try withCleanNames("valovertake-\(kind)") { name in
                let raw = kind == "raw" ? try SharedMemory.create(name: name, string: "start", capacity: 65536) : nil
                let watched = kind == "watched"
                    ? try SharedWatchedValue<CheckedValue>.create(name: name, initialValue: .start(), capacity: 4096, type: CheckedValue.type) : nil
                defer { raw?.close(); watched?.close() }
                let reader = try Peer.spawn(environment: "INTERPROCESS_STOP_POINT", "value.read.midCopy", "val-read-once", kind, name)
                defer { reader.stop() }
                #expect(reader.readLine() == "reading")
                #expect(pollUntil(timeout: .seconds(30)) { processState(reader.pid) == "T" }, "stopped in the middle of its copy")
                for seed in ["1", "2"] {
                    let store = try Peer.run("val-store", kind, name, seed)
                    #expect(store.termination == .exited(0))
                }
                // Let it go on; it stops again at its next copy (a retry), until one is whole.
                var resumed = 0
                while reader.poll() == nil, resumed < 1000 {
                    if processState(reader.pid) == "T" {
                        reader.kill(signal: SIGCONT)
                        resumed += 1
                    } else {
                        usleep(200)
                    }
                }
                #expect(resumed >= 2, "the torn copy was made again")
                #expect(reader.readLine() == "read 2")
                #expect(reader.wait(timeout: .seconds(10)) == .exited(0))
            }
        }
    }

    // MARK: A writer killed at each step

    /// A writer SIGKILLed at each step of a store leaves the old value (before it published) or the
    /// new one (after), never a mix; the next writer takes its lock over and stores.
    @Test(arguments: [
        ("value.store.afterLock", false), ("value.store.midCopy", false), ("value.store.beforePublish", false),
        ("value.store.afterPublish", true),
    ])
    func aWriterKilledAtEachStepLeavesTheOldOrTheNewValue(_ point: (name: String, published: Bool)) async throws {
        // Off the cooperative pool: this test blocks while it waits for its children.
        try await onOwnQueue { _ in
            try withCleanNames("valkill") { name in
                let segment = try SharedMemory.create(name: name, string: "old", capacity: 65536)
                defer { segment.close() }
                let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point.name, "val-store", "raw", name, "7")
                defer { child.stop() }
                #expect(child.readLine() == "storing")
                #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
                let current = try segment.readBytes()
                if point.published {
                    #expect(current.count > 16 && current != Array("old".utf8), "the new value is in")
                } else {
                    #expect(current == Array("old".utf8))
                }
                // The table of placed objects is untouched (a store holds only the frame's writer
                // lock, never the table's, while it changes the frame): one complete entry, the whole frame.
                let frame = PlacedObject(kind: "stored value", offset: 0, size: SharedMemory.storageSize(capacity: 65536))
                #expect(try segment.placedObjects() == [frame])
                expectError(.overlaps) { try ProcessMutex.create(in: segment, at: 128) }
                let start = Clock.monotonicNanoseconds()
                try segment.write("next")
                #expect(elapsed(since: start) < promptly)
                #expect(try segment.readString() == "next")
                #expect(try segment.placedObjects() == [frame])
            }
        }
    }

    /// The same for a watched value.
    @Test(arguments: [
        ("value.store.afterLock", false), ("value.store.midCopy", false), ("value.store.beforePublish", false),
        ("value.store.afterPublish", true),
    ])
    func aWatchedValuesWriterKilledAtEachStep(_ point: (name: String, published: Bool)) async throws {
        // Off the cooperative pool: this test blocks while it waits for its children.
        try await onOwnQueue { _ in
            try withCleanNames("watchkill") { name in
                let value = try SharedWatchedValue<CheckedValue>.create(name: name, initialValue: .start(), capacity: 4096, type: CheckedValue.type)
                defer { value.close() }
                let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point.name, "val-store", "watched", name, "7")
                defer { child.stop() }
                #expect(child.readLine() == "storing")
                #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
                let snapshot = try #require(try value.snapshot())
                #expect(snapshot.version == (point.published ? 2 : 1))
                #expect(snapshot.value.seed == (point.published ? 7 : -1))
                #expect(details(name)["writerAlive"] == "no")
                let start = Clock.monotonicNanoseconds()
                try value.store(.start())
                #expect(elapsed(since: start) < promptly)
                #expect(value.version == snapshot.version + 1)
                #expect(try value.load() == .start())
                #expect(details(name)["recoveries"] == "1")
                #expect(details(name)["writer"] == "-")
            }
        }
    }

    // MARK: Watched values

    @Test func versionsSnapshotsAndErrors() throws {
        try withCleanNames("watch") { name in
            let value = try SharedWatchedValue<Config>.create(name: name, capacity: 64)
            defer { value.close() }
            #expect(value.version == 0 && value.capacity == 64)
            #expect(try value.snapshot() == nil)
            expectError(.empty) { try value.load() }
            expectError(.timedOut) { try value.blockingNext(after: 0, timeout: .milliseconds(20)) }
            try value.store(Config(level: 1))
            #expect(value.version == 1)
            let peer = try SharedWatchedValue<Config>.open(name: name)
            defer { peer.close() }
            #expect(try peer.load() == Config(level: 1))
            #expect(try peer.blockingNext(after: 0).version == 1)
            expectError(.timedOut) { try peer.blockingNext(after: 1, timeout: .milliseconds(20)) }
            try value.store(Config(level: 2))
            try value.store(Config(level: 3))
            // A slow reader skips to the latest.
            let latest = try peer.blockingNext(after: 1)
            #expect(latest.version == 3 && latest.value == Config(level: 3))
            // A value that does not fit is refused; the stored one stays.
            let words = try SharedWatchedValue<[String]>.create(name: name + "-w", initialValue: ["short"], capacity: 16)
            defer { words.close() }
            expectError(.invalidSize) { try words.store(["a value whose JSON is longer than 16 bytes"]) }
            #expect(try words.load() == ["short"])
            #expect(words.version == 1)
            expectError(.invalidSize) { try SharedWatchedValue<[String]>.create(name: name + "-x", initialValue: ["0123456789abcdef"], capacity: 16) }
            // Types and kinds are checked.
            expectError(.incompatible) { try SharedWatchedValue<CheckedValue>.open(name: name) }
            expectError(.incompatible) { try SharedWatchedValue<Config>.open(name: name, type: TypeFingerprint(codable: Config.self, version: 2)) }
            expectError(.incompatible) { try SharedMemory.open(name: name) }
            // openOrCreate keeps what exists.
            let (again, created) = try SharedWatchedValue<Config>.openOrCreate(name: name, initialValue: Config(level: 9))
            defer { again.close() }
            #expect(!created)
            #expect(try again.load() == Config(level: 3))
            // ipc ls / inspect show the version and the size.
            let info = details(name)
            #expect(info["version"] == "3" && info["capacity"] == "64")
            #expect(info["size"] == "\(Array(#"{"final":false,"level":3}"#.utf8).count)")
            #expect(try SharedMemory.info(name: name).kind == "watched")
            #expect(try SharedMemory.info(name: name).summary.hasPrefix("version 3,"))
        }
    }

    /// A peer that scribbles over a watched value's frame makes its readers fail with `corrupt`.
    @Test func aScribbledWatchedValueIsCorrupt() throws {
        try withCleanNames("watchscribble") { name in
            let value = try SharedWatchedValue<Config>.create(name: name, initialValue: Config(level: 1), capacity: 64)
            defer { value.close() }
            let frame = Int64(SharedMemory.payloadOffset + 192)
            // Store 1 is in slot 1: its length at 88 + 8.
            try scribble(name, at: frame + 96, withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
            expectError(.corrupt) { try value.load() }
            expectError(.corrupt) { try value.blockingNext(after: 0, timeout: .seconds(1)) }
            try scribble(name, at: frame + 96, withUnsafeBytes(of: UInt64(3).littleEndian, Array.init))
            expectError(.decodingFailed) { try value.load() }
            try scribble(name, at: frame + 80, withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
            expectError(.corrupt) { try value.load() }
            expectError(.corrupt) { try value.store(Config(level: 2)) }
            expectError(.corrupt) { try SharedWatchedValue<Config>.open(name: name) }
        }
    }

    /// A cancelled wait throws `cancelled`, promptly, and consumes nothing: the iterator still
    /// stands at the version it last yielded and yields the next one afterwards.
    @Test func aCancelledWaitConsumesNothing() async throws {
        let name = TestNames.make("watchcancel")
        defer { #expect(TestNames.leftovers(name).isEmpty) }
        let value = try SharedWatchedValue<Config>.create(name: name, initialValue: Config(level: 1))
        defer { value.close() }
        var iterator = value.updates.makeAsyncIterator()
        #expect(try await iterator.next() == Config(level: 1))
        #expect(iterator.lastVersion == 1)
        await onOwnQueue { executor in
            let waiting = iterator
            let task = Task(executorPreference: executor) { () -> (UInt64, InterprocessError?) in
                var iterator = waiting
                do throws(InterprocessError) {
                    _ = try await iterator.next()
                    return (iterator.lastVersion, nil)
                } catch {
                    return (iterator.lastVersion, error)
                }
            }
            #expect(await eventually { details(name)["waiters"] == "1" })
            let start = Clock.monotonicNanoseconds()
            task.cancel()
            let (last, error) = await task.value
            #expect(elapsed(since: start) < promptly)
            #expect(error?.code == .cancelled)
            #expect(last == 1, "the cancelled wait consumed nothing")
            #expect(await eventually { details(name)["waiters"] == "0" })
        }
        try value.store(Config(level: 2))
        #expect(try await iterator.next() == Config(level: 2))
        // A task cancelled before it waits gets nothing either, even with a newer value there.
        try value.store(Config(level: 3))
        let early = Task { () -> InterprocessError? in
            withUnsafeCurrentTask { $0?.cancel() }
            do throws(InterprocessError) { _ = try await value.next(after: 2); return nil } catch { return error }
        }
        #expect(await early.value?.code == .cancelled)
        #expect(try await iterator.next() == Config(level: 3))
    }

    /// The config broadcaster of issue 17: one writer, two readers in other processes — one started
    /// before the writer created the value, one started late. Each reader is ten lines
    /// (`broadcastReader` in the test child); each receives the current config on subscribing, then
    /// every newer one, and both end at the final one.
    @Test func theConfigBroadcaster() async throws {
        // Off the cooperative pool: this test blocks while it waits for its children.
        try await onOwnQueue { _ in
            try withCleanNames("broadcast") { name in
                let early = try Peer.spawn("val-config", name)
                defer { early.stop() }
                #expect(early.readLine() == "waiting")
                // The writer.
                let config = try SharedWatchedValue<Config>.create(name: name, initialValue: Config(level: 1), type: Config.type)
                defer { config.close() }
                #expect(early.readLine(timeout: .seconds(30)) == "config 1")
                try config.store(Config(level: 2))
                #expect(early.readLine(timeout: .seconds(30)) == "config 2")
                try config.store(Config(level: 3))
                #expect(early.readLine(timeout: .seconds(30)) == "config 3")
                let late = try Peer.spawn("val-config", name)
                defer { late.stop() }
                #expect(late.readLine() == "waiting")
                #expect(late.readLine(timeout: .seconds(30)) == "config 3", "the current config on subscribing")
                try config.store(Config(level: 4, final: true))
                for reader in [early, late] {
                    #expect(reader.readLine(timeout: .seconds(30)) == "config 4")
                    #expect(reader.wait(timeout: .seconds(30)) == .exited(0))
                }
            }
        }
    }
}
