#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess

@Suite("FileLock", .serialized, .timeLimit(.minutes(3)))
struct FileLockTests {
    @Test func lockingInOneProcessAndErrors() throws {
        try withLocalDirectory("flock") { directory in
            let path = directory + "/a.lock"
            let lock = try FileLock(path: path)
            #expect(fileMode(path)?.permissions == 0o600)
            #expect(lock.mode == nil)
            try lock.blockingLock()
            #expect(lock.mode == .exclusive)
            // A second FileLock on the same file is another holder, even in this process.
            let other = try FileLock(path: path)
            #expect(try other.tryLock(.shared) == false)
            #expect(try other.isHeldByOthers())
            expectError(.timedOut) { try other.blockingLock(.exclusive, timeout: .milliseconds(50)) }
            // Conversion to shared lets other shared holders in.
            try lock.blockingLock(.shared)
            #expect(lock.mode == .shared)
            #expect(try other.tryLock(.shared))
            #expect(try lock.tryLock(.exclusive) == false) // another shared holder
            other.unlock()
            #expect(try lock.tryLock(.exclusive))
            lock.unlock()
            #expect(lock.mode == nil)
            #expect(try other.withBlockingLock{ 7 } == 7)
            #expect(try !other.isHeldByOthers())
            other.close()
            lock.close()
            #expect(lock.isClosed)
            expectError(.closed) { try lock.tryLock() }
            lock.close() // idempotent

            expectError(.notFound) { try FileLock(path: directory + "/missing", create: false) }
            expectError(.incompatible) { try FileLock(path: directory) }
            #expect(symlink(path, directory + "/link") == 0)
            expectError(.permissionDenied) { try FileLock(path: directory + "/link") }
            unlink(directory + "/link")
            unlink(path)
        }
    }

    @Test func anotherProcessIsExcludedUntilTheHolderReleases() throws {
        try withLocalDirectory("flock2") { directory in
            let path = directory + "/b.lock"
            let child = try Peer.spawn("local-lock-hold", path, "exclusive")
            defer { child.stop() }
            #expect(child.readLine() == "locked")
            let lock = try FileLock(path: path)
            defer { lock.close() }
            #expect(try lock.tryLock() == false)
            #expect(try lock.tryLock(.shared) == false)
            expectError(.timedOut) { try lock.blockingLock(timeout: .milliseconds(100)) }
            child.tell()
            #expect(child.readLine() == "unlocked")
            try lock.blockingLock(timeout: .seconds(20))
            #expect(lock.mode == .exclusive)
            lock.unlock()
            unlink(path)
        }
    }

    @Test func sharedHoldersCoexistAndExcludeAnExclusiveOne() throws {
        try withLocalDirectory("flock3") { directory in
            let path = directory + "/c.lock"
            let reader = try Peer.spawn("local-lock-hold", path, "shared")
            defer { reader.stop() }
            #expect(reader.readLine() == "locked")
            let shared = try Peer.run("local-lock-try", path, "shared")
            #expect(shared.output == "yes\n")
            let exclusive = try Peer.run("local-lock-try", path, "exclusive")
            #expect(exclusive.output == "no\n")
            reader.tell()
            #expect(reader.readLine() == "unlocked")
            let after = try Peer.run("local-lock-try", path, "exclusive")
            #expect(after.output == "yes\n")
            unlink(path)
        }
    }

    @Test func aLockHeldByAKilledProcessIsFreeAgain() throws {
        try withLocalDirectory("flock4") { directory in
            let path = directory + "/d.lock"
            let child = try Peer.spawn("local-lock-hold", path, "exclusive")
            defer { child.stop() }
            #expect(child.readLine() == "locked")
            let lock = try FileLock(path: path)
            defer { lock.close() }
            #expect(try lock.tryLock() == false)
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            // The kernel dropped the dead holder's lock: no stale lock, no pid check.
            #expect(try lock.tryLock())
            unlink(path)
        }
    }

    @Test func asyncLockWaitsWithoutBlockingAndHonoursCancellation() async throws {
        try await withLocalDirectory("flock5") { directory in
            let path = directory + "/e.lock"
            let child = try Peer.spawn("local-lock-hold", path, "exclusive")
            defer { child.stop() }
            #expect(child.readLine() == "locked")
            let lock = try FileLock(path: path)
            defer { lock.close() }

            // Cancelled while waiting: throws cancelled and holds nothing.
            let waiting = Task { try await lock.lock(.exclusive) }
            waiting.cancel()
            do {
                try await waiting.value
                Issue.record("the cancelled lock succeeded")
            } catch let error as InterprocessError {
                #expect(error.code == .cancelled)
            }
            #expect(lock.mode == nil)
            do {
                try await lock.lock(.shared, timeout: .milliseconds(50))
                Issue.record("the lock was taken while the child held it")
            } catch let error as InterprocessError {
                #expect(error.code == .timedOut)
            }

            // Waiting while the holder releases: acquired.
            let acquiring = Task { try await lock.lock(.shared, timeout: .seconds(20)) }
            child.tell()
            try await acquiring.value
            #expect(lock.mode == .shared)
            #expect(child.readLine() == "unlocked")
            let result = try await lock.withLock(.exclusive) { () async throws -> Int in 5 }
            #expect(result == 5)
            unlink(path)
        }
    }
}
