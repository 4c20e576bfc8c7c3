#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

/// A segment laid out as the test child's sync commands expect (see SyncCommands.swift).
func makeSyncSegment(_ name: String) throws -> SharedMemory {
    let segment = try SharedMemory.create(name: name, size: 4096)
    _ = try ProcessMutex.create(in: segment, at: 0)
    _ = try ProcessSemaphore.create(in: segment, at: 64, value: 0)
    _ = try ProcessSemaphore.create(in: segment, at: 128, value: 0)
    _ = try ProcessCondition.create(in: segment, at: 192)
    return segment
}

/// Seconds since `start` (monotonic).
func elapsed(since start: UInt64) -> Double { Double(Clock.monotonicNanoseconds() - start) / 1e9 }

@Suite("ProcessMutex", .serialized, .timeLimit(.minutes(3)))
struct ProcessMutexTests {
    @Test func uncontendedLockingAndErrors() throws {
        try withCleanNames("mtx") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            #expect(mutex.name == name)
            #expect(!mutex.isLocked)
            #expect(try mutex.blockingLock() == .acquired)
            #expect(mutex.isLocked)
            #expect(try mutex.tryLock() == nil)
            try mutex.unlock()
            expectError(.notOwner) { try mutex.unlock() }
            #expect(try mutex.tryLock() == .acquired)
            try mutex.unlock()
            #expect(try mutex.withBlockingLock{ 42 } == 42)
            #expect(!mutex.isLocked)
            // Opening it as another kind of object is an error.
            expectError(.incompatible) { try SharedMemory.open(name: name) }
            expectError(.incompatible) { try ProcessSemaphore.open(name: name) }
            let info = try SharedMemory.info(name: name)
            #expect(info.kind == "mutex")
            #expect(info.details["locked"] == "no")
        }
    }

    @Test func placementInAUserSegmentIsChecked() throws {
        try withCleanNames("mtxplace") { name in
            let segment = try SharedMemory.create(name: name, size: 256)
            defer { segment.close() }
            expectError(.invalidArgument) { try ProcessMutex.create(in: segment, at: 3) }
            expectError(.invalidArgument) { try ProcessMutex.create(in: segment, at: 200) }
            expectError(.invalidArgument) { try ProcessMutex.create(in: segment, at: -8) }
            expectError(.corrupt) { try ProcessMutex.open(in: segment, at: 64) }
            let mutex = try ProcessMutex.create(in: segment, at: 64)
            let again = try ProcessMutex.open(in: segment, at: 64)
            try mutex.blockingLock()
            #expect(try again.tryLock() == nil)
            try again.unlock() // same process: ownership is per process
            // The memory stays valid after the segment handle closes: the mutex keeps it mapped.
            segment.close()
            try mutex.blockingLock()
            try mutex.unlock()
        }
    }

    @Test func excludesAcrossProcesses() throws {
        try withCleanNames("mtxcount") { name in
            let segment = try makeSyncSegment(name)
            defer { segment.close() }
            let children = try (0..<3).map { _ in try Peer.spawn("mutex-count", name, "20000") }
            defer { children.forEach { $0.stop() } }
            let mutex = try ProcessMutex.open(in: segment, at: 0)
            for _ in 0..<20000 {
                try mutex.blockingLock()
                try segment.withUnsafeMutableBytes { bytes in
                    bytes.storeBytes(of: bytes.load(fromByteOffset: 512, as: UInt64.self) + 1, toByteOffset: 512, as: UInt64.self)
                    bytes.storeBytes(of: bytes.load(fromByteOffset: 520, as: UInt64.self) + 1, toByteOffset: 520, as: UInt64.self)
                }
                try mutex.unlock()
            }
            for child in children {
                #expect(child.wait(timeout: .seconds(60)) == .exited(0))
            }
            let (a, b) = try segment.withUnsafeBytes { ($0.load(fromByteOffset: 512, as: UInt64.self), $0.load(fromByteOffset: 520, as: UInt64.self)) }
            #expect(a == 80_000)
            #expect(b == 80_000)
        }
    }

    @Test func ownerKilledWhileHoldingIsTakenOverAndReported() throws {
        try withCleanNames("mtxdead") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            #expect(try mutex.tryLock() == nil, "a live owner keeps it")
            #expect(try SharedMemory.info(name: name).details["ownerPID"] == "\(child.pid)")
            child.kill(signal: SIGKILL)
            child.wait(timeout: .seconds(10))
            let start = Clock.monotonicNanoseconds()
            #expect(try mutex.blockingLock(timeout: .seconds(20)) == .previousOwnerDied)
            let took = elapsed(since: start)
            #expect(took < promptly, "took over after \(took) s; documented bound is 50 ms")
            #expect(!mutex.isConsistent)
            try mutex.unlock()
            // Still inconsistent: withLock refuses to run the body and releases the lock.
            expectError(.ownerDied) { try mutex.withBlockingLock { Issue.record("ran on inconsistent data") } }
            #expect(!mutex.isLocked)
            var repaired = false
            try mutex.withBlockingLock(onOwnerDied: { repaired = true }) {}
            #expect(repaired)
            #expect(mutex.isConsistent)
            #expect(try mutex.blockingLock() == .acquired)
            try mutex.unlock()
            #expect(try SharedMemory.info(name: name).details["recoveries"] == "1")
        }
    }

    @Test func tryLockTakesOverFromAGoneOwner() throws {
        try withCleanNames("mtxtry") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", name)
            #expect(child.readLine() == "locked acquired")
            child.stop() // killed and reaped: the pid no longer exists
            #expect(try mutex.tryLock() == .previousOwnerDied)
            mutex.markConsistent()
            try mutex.unlock()
        }
    }

    @Test func aReusedPidIsNotMistakenForTheOwner() throws {
        try withCleanNames("mtxreuse") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            let mutex = try ProcessMutex.create(in: segment, at: 0)
            // The lock word names a live pid — this process's — with a token whose lock nobody
            // holds: what a dead owner whose pid was reused looks like.
            let stale = UInt64(UInt32(bitPattern: getpid())) << 32 | 0x1234_5679
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: stale, toByteOffset: 0, as: UInt64.self) }
            #expect(try mutex.blockingLock(timeout: .seconds(5)) == .previousOwnerDied)
            mutex.markConsistent()
            try mutex.unlock()
            // A live owner is respected: the wait times out.
            let child = try Peer.spawn("mutex-hold", name, "0")
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            expectError(.timedOut) { try mutex.blockingLock(timeout: .milliseconds(120)) }
            #expect(try mutex.tryLock() == nil)
            child.stop()
            #expect(try mutex.tryLock() == .previousOwnerDied, "its token died with it")
            mutex.markConsistent()
            try mutex.unlock()
        }
    }

    @Test func ownersKilledAtRandomMomentsNeverDeadlockOrCorrupt() throws {
        try withCleanNames("mtxchaos") { name in
            let segment = try makeSyncSegment(name)
            defer { segment.close() }
            var generator = SystemRandomNumberGenerator()
            var survivorRecoveries = 0
            for _ in 0..<12 {
                let victim = try Peer.spawn("mutex-count", name, "1000000")
                let survivor = try Peer.spawn("mutex-count", name, "3000")
                #expect(victim.readLine() == "ready")
                #expect(survivor.readLine() == "ready")
                Clock.sleep(nanoseconds: UInt64.random(in: 0...3_000_000, using: &generator))
                victim.kill(signal: SIGKILL)
                let line = survivor.readLine(timeout: .seconds(30))
                #expect(line?.hasPrefix("done ") == true, "survivor said \(String(describing: line))")
                survivorRecoveries += Int(line?.dropFirst(5) ?? "") ?? 0
                #expect(survivor.wait(timeout: .seconds(30)) == .exited(0))
                victim.stop()
                survivor.stop()
            }
            // Each kill that landed inside the critical section was repaired by the next locker.
            let mutex = try ProcessMutex.open(in: segment, at: 0)
            if try mutex.blockingLock(timeout: .seconds(5)) == .previousOwnerDied {
                try segment.withUnsafeMutableBytes { $0.storeBytes(of: $0.load(fromByteOffset: 512, as: UInt64.self), toByteOffset: 520, as: UInt64.self) }
                mutex.markConsistent()
            }
            let (a, b) = try segment.withUnsafeBytes { ($0.load(fromByteOffset: 512, as: UInt64.self), $0.load(fromByteOffset: 520, as: UInt64.self)) }
            #expect(a == b)
            try mutex.unlock()
            print("mutex chaos: \(survivorRecoveries) takeovers from killed owners")
        }
    }

    @Test func timedLockReturnsOnTime() throws {
        try withCleanNames("mtxtime") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            let start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try mutex.blockingLock(timeout: .milliseconds(150)) }
            let took = elapsed(since: start)
            #expect(took >= 0.149 && took < promptly, "\(took) s")
        }
    }

    @Test func anAlreadyCancelledTaskAcquiresNothingEvenWhenFree() async throws {
        let name = TestNames.make("cancelled")
        let mutex = try ProcessMutex.create(name: name + "-m")
        let semaphore = try ProcessSemaphore.create(name: name + "-s", value: 1)
        let lock = try ProcessRWLock.create(name: name + "-rw")
        let variable = try SharedVariable<UInt64>.create(name: name + "-v", initialValue: 7)
        defer { mutex.close(); semaphore.close(); lock.close(); variable.close() }
        let outcomes = await Task { () async -> [InterprocessError.Code?] in
            withUnsafeCurrentTask { $0?.cancel() }
            func code(_ body: () async throws -> Void) async -> InterprocessError.Code? {
                do { try await body(); return nil } catch { return (error as? InterprocessError)?.code }
            }
            return [
                await code { _ = try await mutex.lock() },
                await code { try await semaphore.wait() },
                await code { _ = try await lock.readLock() },
                await code { _ = try await lock.writeLock() },
                await code { _ = try await variable.take() },
            ]
        }.value
        #expect(outcomes == Array(repeating: InterprocessError.Code.cancelled, count: 5))
        #expect(!mutex.isLocked)
        #expect(semaphore.value == 1)
        #expect(lock.readerCount == 0 && !lock.isWriteLocked)
        #expect(variable.tryRead() == 7)
    }

    /// A cancellation that meets a release may legitimately go either way: each outcome must be
    /// whole. Acquired: the task holds the lock (or the unit) exactly once; cancelled: it holds nothing.
    @Test func aCancellationThatMeetsAReleaseEitherAcquiresOrHoldsNothing() async throws {
        let prefix = TestNames.make("cancelrace")
        let mutex = try ProcessMutex.create(name: prefix + "-m")
        let semaphore = try ProcessSemaphore.create(name: prefix + "-s", value: 0)
        defer { mutex.close(); semaphore.close() }
        var outcomes: [String: Int] = [:]
        for round in 0..<40 {
            // The mutex: held here, a task parks on it, then the release and the cancellation race.
            try await mutex.lock()
            let locking = Task { try await mutex.lock() }
            #expect(await eventually { waiters(prefix + "-m") == 1 }, "round \(round): the task parked")
            try mutex.unlock()
            locking.cancel()
            switch await locking.result {
            case .success(let acquisition):
                #expect(acquisition == .acquired)
                #expect(mutex.isLocked, "acquired, so held")
                try mutex.unlock()
                outcomes["mutex acquired", default: 0] += 1
            case .failure(let error):
                #expect((error as? InterprocessError)?.code == .cancelled, "\(error)")
                #expect(!mutex.isLocked, "cancelled, so nothing held")
                outcomes["mutex cancelled", default: 0] += 1
            }
            #expect(!mutex.isLocked)
            // The semaphore: one unit signalled as the waiting task is cancelled.
            let waiting = Task { try await semaphore.wait() }
            #expect(await eventually { waiters(prefix + "-s") == 1 }, "round \(round): the task parked")
            try semaphore.signal()
            waiting.cancel()
            switch await waiting.result {
            case .success:
                #expect(semaphore.value == 0, "acquired: the unit was consumed once")
                outcomes["semaphore acquired", default: 0] += 1
            case .failure(let error):
                #expect((error as? InterprocessError)?.code == .cancelled, "\(error)")
                #expect(semaphore.value == 1, "cancelled: the unit is still there")
                #expect(semaphore.tryWait())
                outcomes["semaphore cancelled", default: 0] += 1
            }
            #expect(semaphore.value == 0)
        }
        print("cancellation meeting a release: \(outcomes.sorted { $0.key < $1.key })")
    }

    @Test func asyncLockWaitsWithoutBlockingAndHonoursCancellation() async throws {
        try await onOwnQueue { executor in
            let prefix = TestNames.make("mtxasync")
            let mutex = try ProcessMutex.create(name: prefix)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", prefix)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            // Cancelled while parked (the child holds the lock until told): returns promptly with
            // `cancelled`, acquiring nothing.
            let waiting = Task(executorPreference: executor) { try await mutex.lock() }
            #expect(await eventually { waiters(prefix) == 1 }, "the task parked behind the child")
            let start = Clock.monotonicNanoseconds()
            waiting.cancel()
            await #expect(throws: InterprocessError.self) { try await waiting.value }
            #expect(elapsed(since: start) < promptly)
            #expect(try SharedMemory.info(name: prefix).details["ownerPID"] == "\(child.pid)", "the cancelled task took nothing")
            // A fresh async wait, parked before the child lets go, gets the lock once it does.
            let fresh = Task(executorPreference: executor) { try await mutex.lock(timeout: .seconds(20)) }
            #expect(await eventually { waiters(prefix) == 1 }, "the fresh task parked behind the child")
            child.tell("release")
            #expect(try await fresh.value == .acquired)
            #expect(child.readLine() == "unlocked")
            try mutex.unlock()
            child.stop()
            mutex.close() // the last holder now: removes the name
            #expect(TestNames.leftovers(prefix).isEmpty)
        }
    }
}
