#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// A channel waiter killed while parked does not stay counted: its process's entry in the table of
/// participants counts its waiters too, and whoever sweeps the dead entry takes them out of the
/// header's `receivers_waiting` / `senders_waiting` ("Waiters of a process" in
/// `CInterprocessChannel.h`). Without that, every later send (receive) that would wake it made a
/// futex call, for good.
@Suite("Channel waiters killed while parked", .serialized, .timeLimit(.minutes(3)))
struct ChannelDeadWaiterTests {
    /// The header's futex words (`receive_signal`, `send_signal`): a wake-up call bumps them first.
    static let receiveSignal = SharedMemory.payloadOffset + 384
    static let sendSignal = SharedMemory.payloadOffset + 448

    /// Waits (bounded) until the detail `key` of `name` reads `value`.
    private func expectDetail(_ name: String, _ key: String, _ value: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let reached = pollUntil(timeout: .seconds(20)) { detail(name, key) == value }
        #expect(reached, "\(key) is \(detail(name, key).map(String.init) ?? "?"), not \(value): \(details(name))", sourceLocation: sourceLocation)
    }

    /// Runs `body` with a new `Channel<String>` of `capacity` and its name (nothing left in /dev/shm after).
    private func withChannel(_ tag: String, capacity: Int = 4, _ body: (String, Channel<String>) throws -> Void) throws {
        try withCleanNames(tag) { name in
            let channel = try Channel<String>.create(name: name, capacity: capacity)
            defer { channel.detach() }
            try body(name, channel)
        }
    }

    /// A child (`command` NAME 60000) that parks receiving on the empty channel `name`, once
    /// `receiversWaiting` reads `counted`. The caller stops it.
    private func parkedReceiver(_ name: String, counted: Int, command: String = "chan-receive", sourceLocation: SourceLocation = #_sourceLocation) throws -> ChildProcess {
        let child = try Peer.spawn(command, name, "60000")
        #expect(child.readLine() == "receiving", sourceLocation: sourceLocation)
        expectDetail(name, "receiversWaiting", counted, sourceLocation: sourceLocation)
        return child
    }

    /// SIGKILLs the parked `child` and reaps it.
    private func killParked(_ child: ChildProcess, sourceLocation: SourceLocation = #_sourceLocation) {
        child.kill(signal: SIGKILL)
        #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL), sourceLocation: sourceLocation)
    }

    /// A program that opens the channel `name` and sends nothing (joining sweeps the entries of
    /// dead processes), killed at `crashPoint` if one is given; how it ended.
    private func openAndLeave(_ name: String, crashPoint: String? = nil) throws -> ChildProcess.Termination? {
        let child = try crashPoint.map { try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", $0, "chan-send", name) } ?? Peer.spawn("chan-send", name)
        defer { child.stop() }
        return child.wait(timeout: .seconds(10))
    }

    /// Runs `body` (a send or receive that nobody waits for) and expects the futex word at `offset`
    /// of `name` not to move: no wake-up call.
    private func expectNoWake(_ name: String, at offset: Int, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) rethrows {
        let signal = peek32(name, at: offset)
        try body()
        #expect(peek32(name, at: offset) == signal, "a wake-up call", sourceLocation: sourceLocation)
    }

    /// Sends a message that the parked `live` receiver gets, then waits until `receiversWaiting`
    /// reads `left` (the over-count that stays, if any).
    private func wake(_ live: ChildProcess, of channel: Channel<String>, name: String, leaving left: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try channel.blockingSend("for the live one", timeout: .seconds(5))
        #expect(live.readLine(timeout: .seconds(20)) == "received for the live one", sourceLocation: sourceLocation)
        expectDetail(name, "receiversWaiting", left, sourceLocation: sourceLocation)
    }

    /// A receiver killed while parked on an empty channel (blocking or async): the next send that
    /// would wake it wakes nobody, sweeps its entry, and its count is gone — the send after that
    /// makes no wake-up call (the receivers' futex word does not move).
    @Test(arguments: ["chan-receive", "chan-receive-async"])
    func aReceiverKilledWhileParkedIsNoLongerCounted(command: String) throws {
        try withChannel("deadrecv") { name, channel in
            let child = try parkedReceiver(name, counted: 1, command: command)
            defer { child.stop() }
            #expect(details(name).values.contains { $0.contains("waiting: 1 receiving, 0 sending") }, "\(details(name))")
            killParked(child)
            #expect(detail(name, "receiversWaiting") == 1)

            // The send the dead receiver waited for: a wake-up call that wakes nobody, and the sweep.
            try channel.blockingSend("first", timeout: .seconds(5))
            expectDetail(name, "receiversWaiting", 0)
            #expect(try channel.tryReceive() == "first")
            // Empty again, nobody waits: a send publishes the message the receive position is at,
            // and makes no wake-up call.
            try expectNoWake(name, at: Self.receiveSignal) { try channel.blockingSend("second", timeout: .seconds(5)) }
            #expect(try channel.tryReceive() == "second")
        }
    }

    /// A sender killed while parked on a full ring: the receive that frees the slot it waited for
    /// sweeps it; the next receive that frees such a slot makes no wake-up call.
    @Test func aSenderKilledWhileParkedIsNoLongerCounted() throws {
        try withChannel("deadsend", capacity: 1) { name, channel in
            try channel.blockingSend("full", timeout: .seconds(5))
            let child = try Peer.spawn("chan-send-wait", name, "never", "60000")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            expectDetail(name, "sendersWaiting", 1)
            killParked(child)
            #expect(detail(name, "sendersWaiting") == 1)

            #expect(try channel.tryReceive() == "full")
            expectDetail(name, "sendersWaiting", 0)
            // Full again, nobody waits: the receive that frees the slot makes no wake-up call.
            try channel.blockingSend("again", timeout: .seconds(5))
            var again: String?
            try expectNoWake(name, at: Self.sendSignal) { again = try channel.tryReceive() }
            #expect(again == "again")
            #expect(try channel.tryReceive() == nil)
        }
    }

    /// A sweep of a dead parked receiver, made by a process that opens the channel (joining sweeps
    /// the entries of dead processes), takes out its count only: a live receiver parked in another
    /// process stays counted and is woken by the next send.
    @Test func aLiveWaiterIsNotSubtractedWithADeadOne() throws {
        try withChannel("deadlive") { name, channel in
            let live = try parkedReceiver(name, counted: 1)
            defer { live.stop() }
            let dead = try parkedReceiver(name, counted: 2)
            defer { dead.stop() }
            killParked(dead)
            #expect(try openAndLeave(name) == .exited(0))
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")
            try wake(live, of: channel, name: name, leaving: 0)
        }
    }

    /// `ipc gc`, which sweeps the entries of ended processes, takes a dead parked receiver's count
    /// out too.
    @Test func ipcGCTakesTheCountOfADeadWaiter() throws {
        try withChannel("deadgc") { name, channel in
            let child = try parkedReceiver(name, counted: 1)
            defer { child.stop() }
            killParked(child)

            let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
            let gc = try ChildProcess.run(path, ["gc", "--prefix", name], timeout: .seconds(30))
            #expect(gc.termination == .exited(0), "\(gc.standardError)")
            #expect(detail(name, "receiversWaiting") == 0, "\(gc.standardOutput) \(details(name))")
            try expectNoWake(name, at: Self.receiveSignal) { try channel.blockingSend("nobody waits", timeout: .seconds(5)) }
            #expect(try channel.tryReceive() == "nobody waits")
        }
    }

    /// A waiter killed between its two counts, on the way in (`channel.wait.countedGlobally`: in
    /// the header, not yet in its entry) or on the way out (`channel.wait.uncountedEntry`: out of
    /// its entry, not yet out of the header), leaves an over-count of one that no sweep can
    /// attribute — never less than the live waiters — and the channel works on.
    @Test(arguments: ["channel.wait.countedGlobally", "channel.wait.uncountedEntry"])
    func aWaiterKilledBetweenItsTwoCounts(point: String) throws {
        try withChannel("deadcount") { name, channel in
            // On the way out: a receive that parks and times out (one woken for a message would
            // die holding it: a redelivery, ChannelTests' business).
            let timeout = point == "channel.wait.uncountedEntry" ? "300" : "60000"
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-receive", name, timeout)
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(detail(name, "receiversWaiting") == 1)
            // Every sweep there is: a send that wakes nobody, a process that opens the channel.
            try channel.blockingSend("one", timeout: .seconds(5))
            #expect(try channel.tryReceive() == "one")
            #expect(try openAndLeave(name) == .exited(0))
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")

            // A live receiver on top of it is counted, and woken.
            let live = try parkedReceiver(name, counted: 2)
            defer { live.stop() }
            try wake(live, of: channel, name: name, leaving: 1)
            for round in 0..<6 {
                try channel.blockingSend("m\(round)", timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
        }
    }

    /// A sweeper killed after it took a dead waiter's counts and before it subtracted them
    /// (`channel.participants.sweep.countsTaken`) leaves them in the header: an over-count, which
    /// no later sweep takes twice; a live waiter is still counted and woken.
    @Test func aSweeperKilledAfterTakingTheCounts() throws {
        try withChannel("deadsweeper") { name, channel in
            let dead = try parkedReceiver(name, counted: 1)
            defer { dead.stop() }
            killParked(dead)

            // A process that opens the channel sweeps the dead entry, and dies doing it.
            #expect(try openAndLeave(name, crashPoint: "channel.participants.sweep.countsTaken") == .signaled(SIGKILL))
            #expect(detail(name, "receiversWaiting") == 1)
            // The next sweeps (a process that opens it; a send that wakes nobody) take nothing twice.
            #expect(try openAndLeave(name) == .exited(0))
            try channel.blockingSend("one", timeout: .seconds(5))
            #expect(try channel.tryReceive() == "one")
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")
            #expect(ParticipantsSweep.endedEntries(inDetails: details(name)) == 0, "\(details(name))")

            let live = try parkedReceiver(name, counted: 2)
            defer { live.stop() }
            try wake(live, of: channel, name: name, leaving: 1)
        }
    }
}
