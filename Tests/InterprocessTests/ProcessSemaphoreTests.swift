#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

/// Waits until the named primitive's `waiters` detail reads `count` (bounded).
func waitForWaiters(_ name: String, _ count: Int, timeout: Duration = .seconds(10)) -> Bool {
    let deadline = Deadline(after: timeout)
    while !deadline.hasPassed {
        if (try? SharedMemory.info(name: name))?.details["waiters"] == "\(count)" { return true }
        Clock.sleep(nanoseconds: 2_000_000)
    }
    return false
}

@Suite("ProcessSemaphore", .serialized, .timeLimit(.minutes(3)))
struct ProcessSemaphoreTests {
    @Test func countingAndArgumentChecks() throws {
        try withCleanNames("sem") { name in
            expectError(.invalidArgument) { try ProcessSemaphore.create(name: name, value: -1) }
            #expect(!SharedMemory.exists(name: name), "a rejected create leaves nothing")
            let semaphore = try ProcessSemaphore.create(name: name, value: 2)
            defer { semaphore.close() }
            #expect(semaphore.value == 2)
            #expect(semaphore.tryWait())
            try semaphore.blockingWait()
            #expect(!semaphore.tryWait())
            expectError(.invalidArgument) { try semaphore.signal(count: 0) }
            expectError(.invalidArgument) { try semaphore.signal(count: -3) }
            try semaphore.signal(count: 5)
            #expect(semaphore.value == 5)
            expectError(.invalidArgument) { try semaphore.signal(count: ProcessSemaphore.maximumCount) }
            #expect(semaphore.value == 5, "a rejected signal adds nothing")
            let other = try ProcessSemaphore.open(name: name)
            #expect(other.value == 5)
            #expect(try SharedMemory.info(name: name).details["count"] == "5")
        }
    }

    @Test func kSignalsReleaseExactlyKWaiters() throws {
        try withCleanNames("semk") { name in
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            // The children wait until signalled, or until told to stop waiting (exit 4).
            let children = try (0..<5).map { _ in try Peer.spawn("sem-wait", name, "60000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "waiting") }
            #expect(waitForWaiters(name, 5), "all five children parked")
            try semaphore.signal(count: 3)
            #expect(pollUntil(timeout: .seconds(20)) { children.filter { $0.poll() != nil }.count >= 3 }, "three released")
            #expect(waitForWaiters(name, 2), "two still parked")
            for child in children where child.poll() == nil { child.tell("stop") }
            let results = children.map { $0.wait(timeout: .seconds(20)) }
            #expect(results.filter { $0 == .exited(0) }.count == 3, "\(results)")
            #expect(results.filter { $0 == .exited(4) }.count == 2, "\(results)")
            #expect(semaphore.value == 0)
        }
    }

    @Test func aWaiterKilledWhileParkedDoesNotBreakTheOthers() throws {
        try withCleanNames("semkill") { name in
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            let children = try (0..<3).map { _ in try Peer.spawn("sem-wait", name, "10000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "waiting") }
            #expect(waitForWaiters(name, 3))
            children[0].kill(signal: SIGKILL)
            #expect(children[0].wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            try semaphore.signal(count: 2)
            #expect(children[1].wait(timeout: .seconds(10)) == .exited(0))
            #expect(children[2].wait(timeout: .seconds(10)) == .exited(0))
            #expect(semaphore.value == 0)
        }
    }

    @Test func timedWaitReturnsOnTime() throws {
        try withCleanNames("semtime") { name in
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            let start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try semaphore.blockingWait(timeout: .milliseconds(100)) }
            let took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            expectError(.timedOut) { try semaphore.blockingWait(timeout: .zero) }
        }
    }

    @Test func pingPongBetweenProcesses() throws {
        try withCleanNames("sempp") { name in
            let segment = try makeSyncSegment(name)
            defer { segment.close() }
            let ping = try ProcessSemaphore.open(in: segment, at: 64)
            let pong = try ProcessSemaphore.open(in: segment, at: 128)
            let child = try Peer.spawn("sem-pong", name, "2000")
            defer { child.stop() }
            for _ in 0..<2000 {
                try ping.signal()
                try pong.blockingWait(timeout: .seconds(20))
            }
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
        }
    }

    @Test func asyncWaitHonoursCancellationAndConsumesNothing() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("semasync")
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            let waiting = Task(executorPreference: executor) { try await semaphore.wait() }
            #expect(await eventually { waiters(name) == 1 }, "the task parked")
            let start = Clock.monotonicNanoseconds()
            waiting.cancel()
            do {
                try await waiting.value
                Issue.record("a cancelled wait returned normally")
            } catch let error as InterprocessError {
                #expect(error.code == .cancelled)
            }
            #expect(elapsed(since: start) < promptly)
            try semaphore.signal()
            #expect(semaphore.value == 1, "the cancelled wait took nothing")
            // An async wait completes when another process signals.
            #expect(semaphore.tryWait())
            let segmentName = TestNames.make("semasync2")
            let segment = try makeSyncSegment(segmentName)
            defer { segment.close() }
            let ping = try ProcessSemaphore.open(in: segment, at: 64)
            let pong = try ProcessSemaphore.open(in: segment, at: 128)
            let child = try Peer.spawn("sem-pong", segmentName, "50")
            defer { child.stop() }
            for _ in 0..<50 {
                try ping.signal()
                try await pong.wait(timeout: .seconds(20))
            }
            await #expect(throws: InterprocessError.self) { try await pong.wait(timeout: .milliseconds(50)) }
        }
    }

    @Test func manyAsyncWaitersShareOneThread() async throws {
        let name = TestNames.make("semmany")
        let semaphore = try ProcessSemaphore.create(name: name, value: 0)
        defer { semaphore.close() }
        // More waiters than the cooperative pool has threads: none may block a thread.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<200 {
                group.addTask { try await semaphore.wait(timeout: .seconds(20)) }
            }
            // All 200 parked at once (on the waiter thread: none holds a cooperative thread).
            #expect(await eventually { waiters(name) == 200 }, "\(waiters(name) ?? -1) of 200 parked")
            try semaphore.signal(count: 200)
            try await group.waitForAll()
        }
        #expect(semaphore.value == 0)
    }
}
