#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem

/// Peers SIGKILLed at each step of the segment protocols, and many peers churning at once.
@Suite("Segment crashes", .serialized, .timeLimit(.minutes(3)))
struct SegmentCrashTests {
    /// The segment is built unnamed (O_TMPFILE) and named only when complete: a creator killed
    /// before that leaves nothing at all behind.
    @Test(arguments: ["create.afterOpen", "create.afterHeader", "create.afterReserve", "create.beforeLink"])
    func aCreatorKilledBeforeNamingTheSegmentLeavesNothing(point: String) throws {
        try withCleanNames("crash") { name in
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "create-close", name)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            #expect(TestNames.leftovers(name).isEmpty, "nothing is left behind")
            expectError(.notFound) { try SharedMemory.open(name: name) }
            let segment = try SharedMemory.create(name: name, size: 64)
            expectError(.empty) { try segment.readBytes() } // new memory: nothing stored yet
            segment.close()
        }
    }

    /// Killed right after naming it, the creator leaves a complete segment that nobody holds: the
    /// next open sweeps it, and the name can be created again.
    @Test func aCreatorKilledRightAfterNamingLeavesAnAbandonedSegmentThatIsSwept() throws {
        try withCleanNames("crashlink") { name in
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "create.afterLink", "create-close", name)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            #expect(TestNames.leftovers(name) == [name])
            #expect(!SharedMemory.exists(name: name))
            #expect(try SharedMemory.info(name: name).isAbandoned)
            expectError(.notFound) { try SharedMemory.open(name: name) }
            #expect(TestNames.leftovers(name).isEmpty, "the open swept it")
            let segment = try SharedMemory.create(name: name, size: 64)
            segment.close()
        }
    }

    /// The last closer unlinks the name first and marks the header afterwards: killed in between,
    /// it leaves no name behind.
    @Test func aLastCloserKilledAfterUnlinkingLeavesNoName() throws {
        try withCleanNames("crashclose") { name in
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "close.afterUnlink", "create-close", name)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            #expect(TestNames.leftovers(name).isEmpty)
            expectError(.notFound) { try SharedMemory.open(name: name) }
            try SharedMemory.create(name: name, size: 64).close()
        }
    }

    /// A process that takes the live lock only to look — an open refused because the segment is of
    /// another kind, a remove refused for the same reason — may hold it at the instant the last
    /// holder closes; the closer then cannot take the exclusive lock and leaves the name. The looker,
    /// releasing last, must sweep it. The child stops itself while it holds the lock (made certain,
    /// not timed); we close the last handle, see the name still there, and let the child go on.
    @Test(arguments: [("open-as-mutex", "open.refusing"), ("remove-as-mutex", "remove.refusing")])
    func aRefusedLookerThatReleasesLastSweepsTheAbandonedSegment(command: String, point: String) throws {
        try withCleanNames("looker") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            let child = try Peer.spawn(environment: "INTERPROCESS_STOP_POINT", point, command, name)
            defer { child.stop() }
            #expect(pollUntil(timeout: .seconds(20)) { processState(child.pid) == "T" }, "the looker stopped holding the lock")
            segment.close()
            #expect(TestNames.leftovers(name) == [name], "the closer could not decide while the looker held the lock")
            child.kill(signal: SIGCONT)
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            #expect(child.readLine() == "incompatible")
            #expect(TestNames.leftovers(name).isEmpty, "the looker, releasing last, swept it")
            try SharedMemory.create(name: name, size: 64).close()
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
