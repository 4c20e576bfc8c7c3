#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

@Suite("ProcessCondition", .serialized, .timeLimit(.minutes(3)))
struct ProcessConditionTests {
    private func setFlag(_ segment: SharedMemory, _ mutex: ProcessMutex) throws {
        try mutex.withBlockingLock {
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(1), toByteOffset: 576, as: UInt64.self) }
        }
    }

    @Test func signalWakesAWaiterInAnotherProcess() throws {
        try withCleanNames("cond") { name in
            let segment = try makeSyncSegment(name)
            defer { segment.close() }
            let mutex = try ProcessMutex.open(in: segment, at: 0)
            let condition = try ProcessCondition.open(in: segment, at: 192)
            let child = try Peer.spawn("cond-wait", name, "10000")
            defer { child.stop() }
            #expect(child.readLine() == "waiting")
            try setFlag(segment, mutex)
            condition.signal()
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
        }
    }

    @Test func broadcastWakesEveryWaiter() throws {
        try withCleanNames("condb") { name in
            let segment = try makeSyncSegment(name)
            defer { segment.close() }
            let mutex = try ProcessMutex.open(in: segment, at: 0)
            let condition = try ProcessCondition.open(in: segment, at: 192)
            let children = try (0..<3).map { _ in try Peer.spawn("cond-wait", name, "10000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "waiting") }
            try setFlag(segment, mutex)
            condition.broadcast()
            for child in children { #expect(child.wait(timeout: .seconds(10)) == .exited(0)) }
        }
    }

    @Test func timedWaitReturnsOnTimeHoldingTheMutex() throws {
        try withCleanNames("condt") { name in
            let condition = try ProcessCondition.create(name: name + "-c")
            let mutex = try ProcessMutex.create(name: name + "-m")
            defer { condition.close(); mutex.close() }
            try mutex.blockingLock()
            let start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try condition.blockingWait(on: mutex, timeout: .milliseconds(100)) }
            let took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            #expect(mutex.isLocked)
            try mutex.unlock() // we hold it again: this must not throw notOwner
            expectError(.notOwner) { try condition.blockingWait(on: mutex) }
        }
    }

    @Test func asyncWaitReacquiresTheMutexEvenWhenCancelled() async throws {
        let name = TestNames.make("conda")
        let condition = try ProcessCondition.create(name: name + "-c")
        let mutex = try ProcessMutex.create(name: name + "-m")
        defer { condition.close(); mutex.close() }
        let waitersOfCondition = { waiters(name + "-c") }
        let waiting = Task { () async throws -> Bool in
            try await mutex.lock()
            do {
                try await condition.wait(on: mutex)
            } catch let error as InterprocessError where error.code == .cancelled {
                let held = mutex.isLocked
                try mutex.unlock()
                return held
            }
            try mutex.unlock()
            return false
        }
        #expect(await eventually { waitersOfCondition() == 1 }, "the task waits on the condition")
        waiting.cancel()
        #expect(try await waiting.value, "cancelled, and holding the mutex again")
        #expect(!mutex.isLocked)
        // And a signal reaches an async waiter.
        let signalled = Task { () async throws in
            try await mutex.lock()
            try await condition.wait(on: mutex, timeout: .seconds(20))
            try mutex.unlock()
        }
        #expect(await eventually { waitersOfCondition() == 1 }, "the task waits on the condition")
        condition.signal()
        try await signalled.value
    }
}
