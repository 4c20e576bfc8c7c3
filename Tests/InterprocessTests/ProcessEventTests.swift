#if canImport(Glibc)
import Glibc
#endif
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

@Suite("ProcessEvent", .serialized, .timeLimit(.minutes(3)))
struct ProcessEventTests {
    @Test func manualResetReleasesEveryWaiterAndStaysSet() throws {
        try withCleanNames("evm") { name in
            let event = try ProcessEvent.create(name: name, mode: .manualReset)
            defer { event.close() }
            #expect(event.mode == .manualReset)
            #expect(!event.isSet)
            let children = try (0..<3).map { _ in try Peer.spawn("event-wait", name, "10000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "waiting") }
            #expect(waitForWaiters(name, 3))
            event.set()
            for child in children { #expect(child.wait(timeout: .seconds(10)) == .exited(0)) }
            #expect(event.isSet)
            #expect(event.tryWait())
            #expect(event.tryWait(), "manual reset: waiting does not consume")
            event.reset()
            #expect(!event.tryWait())
            expectError(.timedOut) { try event.blockingWait(timeout: .milliseconds(50)) }
            #expect(try SharedMemory.info(name: name).details["mode"] == "manualReset")
        }
    }

    @Test func autoResetReleasesOneWaiterPerSet() throws {
        try withCleanNames("eva") { name in
            let event = try ProcessEvent.create(name: name, mode: .autoReset)
            defer { event.close() }
            let children = try (0..<2).map { _ in try Peer.spawn("event-wait", name, "10000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "waiting") }
            #expect(waitForWaiters(name, 2))
            event.set()
            // Exactly one is released.
            let deadline = Deadline(after: .seconds(10))
            var done: [ChildProcess.Termination?] = [nil, nil]
            while done.compactMap({ $0 }).isEmpty && !deadline.hasPassed {
                done = children.map { $0.poll() }
                Clock.sleep(nanoseconds: 1_000_000)
            }
            Clock.sleep(nanoseconds: 100_000_000)
            done = children.map { $0.poll() }
            #expect(done.compactMap { $0 } == [.exited(0)], "\(done)")
            #expect(!event.isSet, "the released waiter consumed it")
            event.set()
            for child in children { #expect(child.wait(timeout: .seconds(10)) == .exited(0)) }
            // With nobody waiting, a set stays until one wait consumes it; a second set adds nothing.
            event.set()
            event.set()
            #expect(event.tryWait())
            #expect(!event.tryWait())
        }
    }

    @Test func asyncWaitAndCancellation() async throws {
        let name = TestNames.make("evasync")
        let event = try ProcessEvent.create(name: name, mode: .autoReset)
        defer { event.close() }
        let cancelled = Task { try await event.wait() }
        #expect(await eventually { waiters(name) == 1 }, "the task parked")
        cancelled.cancel()
        await #expect(throws: InterprocessError.self) { try await cancelled.value }
        event.set()
        #expect(event.isSet, "the cancelled wait consumed nothing")
        try await event.wait(timeout: .seconds(5))
        #expect(!event.isSet)
        let waiting = Task { try await event.wait(timeout: .seconds(20)) }
        #expect(await eventually { waiters(name) == 1 }, "the task parked")
        event.set()
        try await waiting.value
    }

    @Test func placedInASegmentAndCheckedOnOpen() throws {
        try withCleanNames("evseg") { name in
            let segment = try SharedMemory.create(name: name, size: 256)
            defer { segment.close() }
            let event = try ProcessEvent.create(in: segment, at: 64, mode: .manualReset, initiallySet: true)
            #expect(event.isSet)
            #expect(try ProcessEvent.open(in: segment, at: 64).mode == .manualReset)
            // A peer scribbles the mode: opening reports it instead of misbehaving.
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(9), toByteOffset: 64 + fieldOffset(\cipc_event.mode), as: UInt32.self) }
            expectError(.corrupt) { try ProcessEvent.open(in: segment, at: 64) }
        }
    }
}
