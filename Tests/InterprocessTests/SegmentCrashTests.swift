#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

/// Peers SIGKILLed at each step of the segment protocols, and many peers churning at once.
@Suite("Segment crashes", .serialized, .timeLimit(.minutes(3)))
struct SegmentCrashTests {
    @Test(arguments: ["create.afterHeader", "create.afterReserve", "create.beforeReady", "close.afterMarkRemoved"])
    func creatorOrCloserKilledMidwayLeavesNothingWedged(point: String) throws {
        try withCleanNames("crash") { name in
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "create-close", name)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            // The name is left behind in an intermediate state…
            #expect(!TestNames.leftovers(name).isEmpty)
            #expect(!SharedMemory.exists(name: name))
            // …an open does not hang or see a half-built segment…
            expectError(.notFound) { try SharedMemory.open(name: name) }
            // …and the name can be created again.
            let segment = try SharedMemory.create(name: name, size: 64)
            #expect(try segment.readBytes() == [])
            segment.close()
        }
    }

    @Test func creatorKilledBeforeLockingLeavesAnEmptyFileThatCreateSweepsAfterGrace() throws {
        try withCleanNames("crash0") { name in
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "create.afterOpen", "create-close", name)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            #expect(TestNames.leftovers(name) == [name])
            // A young empty file may be a creator that has not locked yet: it is not swept at once…
            expectError(.alreadyExists) { try SharedMemory.create(name: name, size: 64) }
            // …an open waits for it to be initialized, and once it is older than the grace period
            // reports that nothing usable is there…
            let start = Clock.monotonicNanoseconds()
            expectError(.notFound) { try SharedMemory.open(name: name) }
            #expect(elapsed(since: start) < 4.0)
            // …and create takes the name over.
            let segment = try SharedMemory.create(name: name, size: 64)
            segment.close()
        }
    }

    @Test func churningPeersKilledAtRandomNeverCorruptOrLeak() throws {
        try withCleanNames("churn") { name in
            var generator = SystemRandomNumberGenerator()
            var killed = 0
            for _ in 0..<3 {
                let children = try (0..<4).map { _ in try Peer.spawn("churn", name, "2000") }
                // Kill two of them at random moments while they create, open and close.
                Clock.sleep(nanoseconds: UInt64.random(in: 1_000_000...20_000_000, using: &generator))
                children[0].kill(signal: SIGKILL)
                Clock.sleep(nanoseconds: UInt64.random(in: 1_000_000...20_000_000, using: &generator))
                children[1].kill(signal: SIGKILL)
                let results = children.map { $0.wait(timeout: .seconds(60)) }
                children.forEach { $0.closePipes() }
                for result in results {
                    #expect(result == .exited(0) || result == .signaled(SIGKILL), "\(String(describing: result))")
                    if result == .signaled(SIGKILL) { killed += 1 }
                }
                // Whatever the killed ones left behind is abandoned, and the next open sweeps it.
                if TestNames.leftovers(name).count == 1 {
                    #expect(!SharedMemory.exists(name: name))
                    expectError(.notFound) { try SharedMemory.open(name: name) }
                }
                #expect(TestNames.leftovers(name).isEmpty)
            }
            #expect(killed > 0)
        }
    }
}
