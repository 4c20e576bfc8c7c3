#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import Synchronization
import SystemPackage

/// The one time type (`Deadline`) on its way to the kernel, and the forms of the verbs that the
/// reshaping added: timeouts on the scoped locks, `flush` in both forms, a segment sent with a
/// timeout, and the liveness check a waiter makes before it parks.
@Suite("Deadlines and the forms of the waits")
struct WaitFormsTests {
    // MARK: Deadline

    @Test func aDeadlineIsBuiltOnceFromATimeoutAndSaturates() {
        #expect(Deadline(after: nil) == .never)
        #expect(Deadline.never.isNever && !Deadline.never.hasPassed)
        #expect(Deadline.never.pollMilliseconds == -1)
        #expect(Deadline.never.kernelNanoseconds == -1)
        #expect(Deadline.never.remainingNanoseconds == .max)
        // Too long to represent: no deadline (not an overflow into the past).
        #expect(Deadline(after: .seconds(Int64.max)) == .never)
        #expect(Deadline.now.advanced(byNanoseconds: .max) == .never)
        // Zero or negative: already passed; a wait makes one attempt and times out.
        for timeout: Duration in [.zero, .seconds(-1), .nanoseconds(-1)] {
            let deadline = Deadline(after: timeout)
            #expect(deadline.hasPassed && deadline.remainingNanoseconds == 0 && deadline.pollMilliseconds == 0, "\(timeout)")
        }
        // Absolute: what is left shrinks as time passes, and poll gets whole milliseconds rounded up
        // (a poll never ends before the deadline).
        let start = Deadline.now
        let deadline = start.advanced(by: .milliseconds(1500))
        #expect(deadline.nanoseconds == start.nanoseconds + 1_500_000_000)
        #expect(deadline.kernelNanoseconds == Int64(deadline.nanoseconds))
        let left = deadline.remainingNanoseconds
        #expect(left > 0 && left <= 1_500_000_000)
        #expect(Int(deadline.pollMilliseconds) == Int((left + 999_999) / 1_000_000) || Int(deadline.pollMilliseconds) == Int(left / 1_000_000))
        #expect(deadline.pollMilliseconds >= 1 && deadline.pollMilliseconds <= 1500)
        #expect(start.advanced(by: .nanoseconds(1)).nanoseconds == start.nanoseconds + 1)
        #expect(start.advanced(by: .seconds(-5)) == start, "a negative duration does not move it")
        #expect(min(deadline, .never) == deadline)
    }

    @Test func theFutexWaitTakesTheDeadlineAsAbsoluteMonotonicTime() {
        let word = UnsafeMutableRawPointer.allocate(byteCount: 4, alignment: 4)
        defer { word.deallocate() }
        word.storeBytes(of: UInt32(0), as: UInt32.self)
        // A deadline that has passed: the kernel times out at once.
        let passed = Deadline.now
        #expect(Futex.wait(word, expected: 0, deadline: passed) == .timedOut)
        // One 100 ms ahead: timed out, and not before it (read as relative time, an absolute
        // deadline would be hours away; spurious returns are re-parked with the same deadline).
        let deadline = Deadline(after: .milliseconds(100))
        var result = Futex.WaitResult.retry
        var rounds = 0
        while result == .retry && rounds < 1000 {
            result = Futex.wait(word, expected: 0, deadline: deadline)
            rounds += 1
        }
        #expect(result == .timedOut)
        #expect(deadline.hasPassed, "a futex wait timed out before its deadline")
        #expect(Deadline.now.nanoseconds - deadline.nanoseconds < UInt64(promptly * 1e9))
        // A word that differs: the wait returns at once, whatever the deadline.
        #expect(Futex.wait(word, expected: 1, deadline: .never) == .retry)
    }

    @Test func aDescriptorWaitEndsAtTheDeadlineNotBefore() throws {
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let deadline = Deadline(after: .milliseconds(30))
        #expect(!DescriptorWait.wait(FileDescriptor(rawValue: fds[0]), for: .readable, deadline: deadline))
        #expect(deadline.hasPassed, "poll returned before the deadline")
        var byte: UInt8 = 1
        #expect(write(fds[1], &byte, 1) == 1)
        #expect(DescriptorWait.wait(FileDescriptor(rawValue: fds[0]), for: .readable, deadline: .never))
    }

    // MARK: Liveness checked before parking

    @Test func aWaitThatStartsAfterTheOwnerDiedTakesOverBeforeItParks() async throws {
        try await withCleanNamesAsync("mtxdeadfirst") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", name)
            #expect(child.readLine() == "locked acquired")
            child.stop()
            // 1 ms is far shorter than the 25 ms between the checks of a parked waiter: the owner's
            // liveness is checked as the wait is about to park.
            #expect(try await mutex.lock(timeout: .milliseconds(1)) == .previousOwnerDied)
            try mutex.unlock()
            mutex.markConsistent()
            let again = try Peer.spawn("mutex-hold", name)
            #expect(again.readLine() == "locked acquired")
            again.stop()
            #expect(try blockingLock(mutex, timeout: .milliseconds(1)) == .previousOwnerDied)
            mutex.markConsistent()
            try mutex.unlock()
        }
    }

    // MARK: Scoped locks with a timeout

    @Test func aScopedLockThatTimesOutRunsNothing() async throws {
        try await withCleanNamesAsync("scopedtimeout") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Peer.spawn("mutex-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            await expectErrorAsync(.timedOut) { try await mutex.withLock(timeout: .milliseconds(20)) { Issue.record("ran without the lock") } }
            expectError(.timedOut) { try withBlockingLock(mutex, timeout: .milliseconds(20)) { Issue.record("ran without the lock") } }
            child.tell("release")
            #expect(child.readLine() == "unlocked")
            #expect(try await mutex.withLock(timeout: .seconds(20)) { 7 } == 7)
            #expect(!mutex.isLocked)
        }
        try await withCleanNamesAsync("scopedtimeoutrw") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Peer.spawn("rw-write-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "claiming")
            #expect(child.readLine() == "locked acquired")
            await expectErrorAsync(.timedOut) { try await lock.withReadLock(timeout: .milliseconds(20)) { Issue.record("read without the lock") } }
            await expectErrorAsync(.timedOut) { try await lock.withWriteLock(timeout: .milliseconds(20)) { Issue.record("wrote without the lock") } }
            child.tell("release")
            #expect(child.readLine() == "unlocked")
            #expect(try await lock.withWriteLock(timeout: .seconds(20)) { 8 } == 8)
            #expect(try await lock.withReadLock(timeout: .seconds(20)) { 9 } == 9)
            #expect(!lock.isWriteLocked && lock.readerCount == 0)
        }
    }

    // MARK: Flush and segments, in both forms

    /// The sender and the receiver each run on a queue of their own (``onOwnQueue(_:)``), not on the
    /// cooperative pool: the blocking flush blocks its thread until the receiver has read, and on a
    /// busy machine the pool's two threads can both be blocked by synchronous tests of other suites
    /// for longer than the timeout (seen: `timedOut` after 60 s in the full suite, 4 s alone).
    @Test func flushSendsWhatTrySendLeftQueuedInBothForms() async throws {
        let (a, b) = try LocalSocket.pair()
        defer { a.close(); b.close() }
        let big = [UInt8](repeating: 7, count: 8 << 20)
        let receiver = OwnQueueExecutor()
        try await onOwnQueue { _ in
            for form in ["async", "blocking"] {
                #expect(try a.trySend(big), "the first part went out")
                #expect(a.queuedBytes > 0, "\(form): more than a socket buffer stays queued")
                let receiving = Task.detached(executorPreference: receiver) { try await b.receive(timeout: .seconds(60)) }
                if form == "async" {
                    try await a.flush(timeout: .seconds(60))
                } else {
                    try blockingFlush(a, timeout: .seconds(60))
                }
                #expect(a.queuedBytes == 0, "\(form)")
                let message = try await receiving.value
                #expect(message.bytes.count == big.count && message.bytes.allSatisfy { $0 == 7 }, "\(form)")
            }
            // Nothing queued: a flush returns at once.
            try await a.flush(timeout: .zero)
        }
    }

    @Test func aSegmentIsHandedOverWithATimeoutInBothForms() async throws {
        let (a, b) = try LocalSocket.pair()
        defer { a.close(); b.close() }
        let segment = try SharedMemory.anonymous(size: 4096)
        defer { segment.close() }
        try segment.write("handed over")
        try await a.send(segment, timeout: .seconds(20))
        let received = try await b.receiveSegment(timeout: .seconds(20))
        #expect(try received.readString() == "handed over")
        received.close()
        try blockingSendSegment(a, segment, timeout: .seconds(20))
        let again = try blockingReceiveSegment(b, timeout: .seconds(20))
        #expect(try again.readString() == "handed over")
        again.close()
        await expectErrorAsync(.timedOut) { _ = try await b.receiveSegment(timeout: .milliseconds(10)) }
    }
}

// The blocking forms are unavailable in async code: these synchronous wrappers call them from the
// async tests above, as synchronous code of a program would.

private func blockingLock(_ mutex: ProcessMutex, timeout: Duration) throws -> ProcessMutex.Acquisition {
    try mutex.blockingLock(timeout: timeout)
}

private func withBlockingLock(_ mutex: ProcessMutex, timeout: Duration, _ body: () -> Void) throws {
    try mutex.withBlockingLock(timeout: timeout, body)
}

private func blockingFlush(_ socket: LocalSocket, timeout: Duration) throws {
    try socket.blockingFlush(timeout: timeout)
}

private func blockingSendSegment(_ socket: LocalSocket, _ segment: SharedMemory, timeout: Duration) throws {
    try socket.blockingSend(segment, timeout: timeout)
}

private func blockingReceiveSegment(_ socket: LocalSocket, timeout: Duration) throws -> SharedMemory {
    try socket.blockingReceiveSegment(timeout: timeout)
}
