// What an attack from outside found in segments (issue "Hardening"), each with real processes: a
// hostile or unlucky peer puts a FIFO, a directory or a forged file at a name, scribbles a state
// word, plants a segment as another user, truncates a file under its holders.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage
import Synchronization
import Dispatch

/// Whether this process can run a child as uid 65534 (it is root and setuid works); if not, prints
/// why the calling test is skipped.
func canActAsAnotherUser(_ test: String) -> Bool {
    guard geteuid() == 0 else {
        print("\(test): skipped — needs root to run a child as another user (uid 65534)")
        return false
    }
    return true
}

@Suite("Segment hardening", .serialized, .timeLimit(.minutes(3)))
struct SegmentHardeningTests {
    @Test func aFIFOOrADirectoryAtANameNeverBlocksAndIsNotASegment() throws {
        try withCleanNames("fifo") { prefix in
            let fifo = prefix + "-f"
            let directory = prefix + "-d"
            #expect(mkfifo("/dev/shm/" + fifo, 0o666) == 0)
            #expect(mkdir("/dev/shm/" + directory, 0o755) == 0)
            defer { unlink("/dev/shm/" + fifo); rmdir("/dev/shm/" + directory) }
            // Each of these used to block forever on the FIFO (opened without O_NONBLOCK).
            expectError(.incompatible) { try SharedMemory.info(name: fifo) }
            expectError(.incompatible) { try SharedMemory.open(name: fifo) }
            #expect(!SharedMemory.exists(name: fifo))
            expectError(.incompatible) { try SharedMemory.remove(name: fifo) }
            // A directory is not a segment either (it used to say invalidName: EISDIR became EINVAL).
            expectError(.incompatible) { try SharedMemory.open(name: directory) }
            let inspect = try ipc("inspect", fifo)
            #expect(inspect.termination == .exited(1), "ipc inspect on a FIFO: \(String(describing: inspect.termination))")
            let list = try ipc("ls")
            #expect(list.termination == .exited(0), "ipc ls with a FIFO present: \(String(describing: list.termination))")
            // create never removes what is not provably ours.
            expectError(.alreadyExists) { try SharedMemory.create(name: fifo, size: 256) }
            var status = stat()
            #expect(lstat("/dev/shm/" + fifo, &status) == 0 && status.st_mode & S_IFMT == S_IFIFO, "the FIFO is still there")
        }
    }

    @Test func aFIFORenamedOverAFileWhileToolsRunNeverHangsThem() throws {
        try withCleanNames("fiforace") { prefix in
            let target = "/dev/shm/" + prefix
            let spare = "/dev/shm/" + prefix + "-spare"
            try SharedMemory.create(name: prefix, size: 256, lifetime: .persistent).close()
            // A thread swaps a FIFO and a plain file in under the name, over and over, until told to
            // stop; it is joined before the names are removed.
            let stop = Atomic<Bool>(false)
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                while !stop.load(ordering: .relaxed) {
                    _ = mkfifo(spare, 0o666)
                    _ = rename(spare, target)
                    let fd = open(spare, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
                    if fd >= 0 { close(fd) }
                    _ = rename(spare, target)
                }
                done.signal()
            }
            defer {
                stop.store(true, ordering: .relaxed)
                done.wait()
                unlink(target)
                unlink(spare)
            }
            for round in 0..<15 {
                for command in [["ls"], ["gc", "--dry-run", "--prefix", prefix], ["inspect", prefix]] {
                    let result = try ipc(command[0], command.count > 1 ? command[1] : "--json", command.count > 2 ? command[2] : "--json", command.count > 3 ? command[3] : "--json")
                    #expect(result.termination != nil, "round \(round): ipc \(command) hung")
                }
            }
        }
    }

    @Test func oneWriteIntoTheStateWordNeverDeletesAPersistentSegment() throws {
        try withCleanNames("statew") { prefix in
            for value: UInt8 in [0, 2] {
                let name = "\(prefix)-\(value)"
                let segment = try SharedMemory.create(name: name, size: 256, lifetime: .persistent)
                try segment.write("keep me")
                segment.close()
                scribble(name, at: 24, [value, 0, 0, 0])
                expectError(.corrupt) { try SharedMemory.open(name: name) }
                #expect(SharedMemory.collectGarbage(prefix: name).isEmpty)
                #expect(try SharedMemory.info(name: name).problem != nil, "ls flags it")
                expectError(.corrupt) { try SharedMemory.open(name: name) }
                #expect(TestNames.leftovers(name) == [name], "state \(value): the segment is still there")
                // Repaired, it reads as before: nothing was lost.
                scribble(name, at: 24, [1, 0, 0, 0])
                #expect(try SharedMemory.open(name: name).readString() == "keep me")
                try SharedMemory.remove(name: name)
            }
        }
    }

    @Test func aRefusedRemoveChangesNothing() throws {
        guard canActAsAnotherUser("aRefusedRemoveChangesNothing") else { return }
        try withCleanNames("rmrefused") { prefix in
            let segment = try SharedMemory.create(
                name: prefix, size: 256, permissions: FilePermissions(rawValue: 0o666), lifetime: .persistent)
            try segment.write("root's")
            segment.close()
            // Another user may write it (mode 666) but not unlink it (sticky /dev/shm).
            let result = try Peer.run("--as-nobody", "remove", prefix)
            #expect(result.termination == .exited(5) && result.output == "permissionDenied\n", "\(result)")
            #expect(SharedMemory.exists(name: prefix), "still there and still ready")
            #expect(try SharedMemory.open(name: prefix).readString() == "root's")
            #expect(SharedMemory.exists(name: prefix), "reading it did not sweep it")
            try SharedMemory.remove(name: prefix)
        }
    }

    @Test func aSegmentOfAnotherUserIsNotOpenedUnlessTrusted() throws {
        guard canActAsAnotherUser("aSegmentOfAnotherUserIsNotOpenedUnlessTrusted") else { return }
        try withCleanNames("planted") { prefix in
            let planted = try Peer.run("--as-nobody", "create-exit", prefix, "256", "persistent", "planted")
            #expect(planted.termination == .exited(0))
            defer { unlink("/dev/shm/" + prefix) }
            expectError(.permissionDenied) { try SharedMemory.open(name: prefix) }
            expectError(.permissionDenied) { try SharedMemory.openOrCreate(name: prefix, size: 64) }
            expectError(.permissionDenied) { try ProcessMutex.open(name: prefix) }
            let trusted = try SharedMemory.open(name: prefix, trusting: .users([65534]))
            #expect(try trusted.readString() == "planted")
            trusted.close()
            #expect(try SharedMemory.open(name: prefix, trusting: .anyone).readString() == "planted")
        }
    }

    @Test func aSegmentSharedWithAGroupOpensForItsMembers() throws {
        guard canActAsAnotherUser("aSegmentSharedWithAGroupOpensForItsMembers") else { return }
        try withCleanNames("group") { prefix in
            // Created for group 65534; a child running as uid/gid 65534 trusts that group.
            let segment = try SharedMemory.create(
                name: prefix, size: 256, permissions: [.ownerReadWrite, .groupReadWrite], group: 65534)
            defer { segment.close() }
            #expect(try SharedMemory.info(name: prefix).group == 65534)
            try segment.write("for the group")
            let refused = try Peer.run("--as-nobody", "expect-open-error", prefix, "permissionDenied")
            #expect(refused.termination == .exited(0), "by default another user's segment is refused: \(refused.output)")
        }
    }

    @Test func aTruncatedFileNeverKillsItsHolderOnClose() throws {
        try withCleanNames("trunc") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 1 << 16, lifetime: .persistent)
            segment.close()
            let result = try Peer.run("truncate-close", prefix)
            #expect(result.termination == .exited(0), "the holder died: \(String(describing: result.termination))")
            #expect(result.output == "closed\n")
            // An empty file is no longer recognisably a segment: refused, and left for its owner.
            expectError(.incompatible) { try SharedMemory.open(name: prefix) }
            unlink("/dev/shm/" + prefix)
        }
    }

    @Test func openingMakesEveryPageOfASparseFileExist() throws {
        try withCleanNames("sparse") { prefix in
            let size = 8 << 20
            let segment = try SharedMemory.create(name: prefix, size: size, lifetime: .persistent)
            segment.close()
            // A peer cuts the payload off and grows the file back: sparse, its pages no longer reserved.
            let fd = open("/dev/shm/" + prefix, O_RDWR)
            #expect(ftruncate(fd, 4096) == 0 && ftruncate(fd, off_t(4096 + size)) == 0)
            var status = stat()
            fstat(fd, &status)
            #expect(Int(status.st_blocks) * 512 < size / 2, "punched")
            let opened = try SharedMemory.open(name: prefix)
            fstat(fd, &status)
            close(fd)
            #expect(Int(status.st_blocks) * 512 >= size + 4096, "the open reserved every page: \(status.st_blocks) blocks")
            opened.close()
            try SharedMemory.remove(name: prefix)
        }
    }

    @Test func createNeverRemovesAnEmptyFileThatIsNotProvablyOurs() {
        withCleanNames("empty") { prefix in
            let fd = open("/dev/shm/" + prefix, O_CREAT | O_EXCL | O_RDWR, 0o600)
            close(fd)
            defer { unlink("/dev/shm/" + prefix) }
            // Older than any grace a creator could need (the old code took it over after 2 s).
            Clock.sleep(nanoseconds: 2_200_000_000)
            expectError(.alreadyExists) { try SharedMemory.create(name: prefix, size: 256) }
            expectError(.incompatible) { try SharedMemory.open(name: prefix) }
            #expect(TestNames.leftovers(prefix) == [prefix], "the empty file is still there")
        }
    }

    @Test func theOwnerRemovesASegmentItCannotOpen() throws {
        guard canActAsAnotherUser("theOwnerRemovesASegmentItCannotOpen") else { return }
        try withCleanNames("mode0") { prefix in
            let result = try Peer.run("--as-nobody", "create-remove", prefix, "000")
            #expect(result.termination == .exited(0) && result.output == "removed\n", "\(result)")
            #expect(TestNames.leftovers(prefix).isEmpty)
        }
    }

    @Test func aDryRunListsOnlyWhatTheRealCollectionWouldRemove() throws {
        guard canActAsAnotherUser("aDryRunListsOnlyWhatTheRealCollectionWouldRemove") else { return }
        try withCleanNames("gcdry") { prefix in
            // Readable by everyone (mode 644), so another user's gc sees it.
            let child = try Peer.spawn("create-hold", prefix, "256", "whileReferenced", "30", "644")
            #expect(child.readLine() == "ready")
            child.stop()
            #expect(SharedMemory.collectGarbage(dryRun: true, prefix: prefix).map(\.name) == [prefix])
            // Another user could not remove root's segment: its dry run must not list it.
            let other = try Peer.run("--as-nobody", "gc-dry", prefix)
            #expect(other.termination == .exited(0) && other.output.isEmpty, "\(other)")
            #expect(SharedMemory.collectGarbage(prefix: prefix).map(\.name) == [prefix])
        }
    }

    @Test func removeRacingCreateNeverMeetsAHalfBuiltSegment() throws {
        try withCleanNames("rmrace") { prefix in
            let creator = try Peer.spawn("churn-create", prefix, "3000")
            defer { creator.stop() }
            #expect(creator.readLine() == "ready")
            var removed = 0
            var wrong: [String] = []
            for _ in 0..<3000 {
                do throws(InterprocessError) {
                    try SharedMemory.remove(name: prefix)
                    removed += 1
                } catch where error.code == .notFound {
                } catch {
                    wrong.append("\(error)")
                }
                if creator.poll() != nil { break }
            }
            #expect(wrong.isEmpty, "\(wrong.count) removes failed otherwise, e.g. \(wrong.first ?? "")")
            #expect(creator.wait(timeout: .seconds(30)) == .exited(0))
            try? SharedMemory.remove(name: prefix)
            print("remove racing create: \(removed) removed")
        }
    }
}

extension SegmentHardeningTests {
    @Test func theToolRefusesAPlantedSegmentUnlessTold() throws {
        guard canActAsAnotherUser("theToolRefusesAPlantedSegmentUnlessTold") else { return }
        try withCleanNames("toolplant") { prefix in
            let planted = try Peer.run("--as-nobody", "create-exit", prefix, "256", "persistent", "from nobody")
            #expect(planted.termination == .exited(0))
            defer { unlink("/dev/shm/" + prefix) }
            // Root's write used to go into the planted segment, for its owner to read.
            let write = try ipc("write", prefix, "SECRET")
            #expect(write.termination == .exited(1) && write.error.contains("permissionDenied"), "\(write)")
            let read = try ipc("read", prefix)
            #expect(read.termination == .exited(1), "\(read)")
            let trusted = try ipc("read", prefix, "--trust-owner", "65534")
            #expect(trusted.termination == .exited(0) && trusted.output == "from nobody\n", "\(trusted)")
            let anyone = try ipc("read", prefix, "--trust-anyone")
            #expect(anyone.termination == .exited(0), "\(anyone)")
        }
    }
}
