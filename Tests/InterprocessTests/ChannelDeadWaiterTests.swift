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

    /// A receiver killed while parked on an empty channel (blocking or async): the next send that
    /// would wake it wakes nobody, sweeps its entry, and its count is gone — the send after that
    /// makes no wake-up call (the receivers' futex word does not move).
    @Test(arguments: ["chan-receive", "chan-receive-async"])
    func aReceiverKilledWhileParkedIsNoLongerCounted(command: String) throws {
        try withCleanNames("deadrecv") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let child = try Peer.spawn(command, name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 1)
            #expect(details(name).values.contains { $0.contains("waiting: 1 receiving, 0 sending") }, "\(details(name))")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(detail(name, "receiversWaiting") == 1)

            // The send the dead receiver waited for: a wake-up call that wakes nobody, and the sweep.
            try channel.blockingSend("first", timeout: .seconds(5))
            expectDetail(name, "receiversWaiting", 0)
            #expect(try channel.tryReceive() == "first")
            // Empty again, nobody waits: a send publishes the message the receive position is at,
            // and makes no wake-up call.
            let signal = peek32(name, at: Self.receiveSignal)
            try channel.blockingSend("second", timeout: .seconds(5))
            #expect(peek32(name, at: Self.receiveSignal) == signal)
            #expect(try channel.tryReceive() == "second")
        }
    }

    /// A sender killed while parked on a full ring: the receive that frees the slot it waited for
    /// sweeps it; the next receive that frees such a slot makes no wake-up call.
    @Test func aSenderKilledWhileParkedIsNoLongerCounted() throws {
        try withCleanNames("deadsend") { name in
            let channel = try Channel<String>.create(name: name, capacity: 1)
            defer { channel.detach() }
            try channel.blockingSend("full", timeout: .seconds(5))
            let child = try Peer.spawn("chan-send-wait", name, "never", "60000")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            expectDetail(name, "sendersWaiting", 1)
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(detail(name, "sendersWaiting") == 1)

            #expect(try channel.tryReceive() == "full")
            expectDetail(name, "sendersWaiting", 0)
            // Full again, nobody waits: the receive that frees the slot makes no wake-up call.
            try channel.blockingSend("again", timeout: .seconds(5))
            let signal = peek32(name, at: Self.sendSignal)
            #expect(try channel.tryReceive() == "again")
            #expect(peek32(name, at: Self.sendSignal) == signal)
            #expect(try channel.tryReceive() == nil)
        }
    }

    /// A sweep of a dead parked receiver, made by a process that opens the channel (joining sweeps
    /// the entries of dead processes), takes out its count only: a live receiver parked in another
    /// process stays counted and is woken by the next send.
    @Test func aLiveWaiterIsNotSubtractedWithADeadOne() throws {
        try withCleanNames("deadlive") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let live = try Peer.spawn("chan-receive", name, "60000")
            defer { live.stop() }
            #expect(live.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 1)
            let dead = try Peer.spawn("chan-receive", name, "60000")
            defer { dead.stop() }
            #expect(dead.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 2)
            dead.kill(signal: SIGKILL)
            #expect(dead.wait(timeout: .seconds(10)) == .signaled(SIGKILL))

            // A program that opens the channel and sends nothing.
            let opener = try Peer.spawn("chan-send", name)
            defer { opener.stop() }
            #expect(opener.readLine() == "sending")
            #expect(opener.readLine() == "sent")
            #expect(opener.wait(timeout: .seconds(10)) == .exited(0))
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")

            try channel.blockingSend("for the live one", timeout: .seconds(5))
            #expect(live.readLine(timeout: .seconds(20)) == "received for the live one")
            expectDetail(name, "receiversWaiting", 0)
        }
    }

    /// `ipc gc`, which sweeps the entries of ended processes, takes a dead parked receiver's count
    /// out too.
    @Test func ipcGCTakesTheCountOfADeadWaiter() throws {
        try withCleanNames("deadgc") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let child = try Peer.spawn("chan-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 1)
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))

            let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
            let gc = try ChildProcess.run(path, ["gc", "--prefix", name], timeout: .seconds(30))
            #expect(gc.termination == .exited(0), "\(gc.standardError)")
            #expect(detail(name, "receiversWaiting") == 0, "\(gc.standardOutput) \(details(name))")
            let signal = peek32(name, at: Self.receiveSignal)
            try channel.blockingSend("nobody waits", timeout: .seconds(5))
            #expect(peek32(name, at: Self.receiveSignal) == signal)
            #expect(try channel.tryReceive() == "nobody waits")
        }
    }

    /// A waiter killed between its two counts, on the way in (`channel.wait.countedGlobally`: in
    /// the header, not yet in its entry) or on the way out (`channel.wait.uncountedEntry`: out of
    /// its entry, not yet out of the header), leaves an over-count of one that no sweep can
    /// attribute — never less than the live waiters — and the channel works on.
    @Test(arguments: ["channel.wait.countedGlobally", "channel.wait.uncountedEntry"])
    func aWaiterKilledBetweenItsTwoCounts(point: String) throws {
        try withCleanNames("deadcount") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
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
            let opener = try Peer.spawn("chan-send", name)
            defer { opener.stop() }
            #expect(opener.wait(timeout: .seconds(10)) == .exited(0))
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")

            // A live receiver on top of it is counted, and woken.
            let live = try Peer.spawn("chan-receive", name, "60000")
            defer { live.stop() }
            #expect(live.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 2)
            try channel.blockingSend("for the live one", timeout: .seconds(5))
            #expect(live.readLine(timeout: .seconds(20)) == "received for the live one")
            expectDetail(name, "receiversWaiting", 1)
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
        try withCleanNames("deadsweeper") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let dead = try Peer.spawn("chan-receive", name, "60000")
            defer { dead.stop() }
            #expect(dead.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 1)
            dead.kill(signal: SIGKILL)
            #expect(dead.wait(timeout: .seconds(10)) == .signaled(SIGKILL))

            // A process that opens the channel sweeps the dead entry, and dies doing it.
            let sweeper = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.participants.sweep.countsTaken", "chan-send", name)
            defer { sweeper.stop() }
            #expect(sweeper.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(detail(name, "receiversWaiting") == 1)
            // The next sweeps (a process that opens it; a send that wakes nobody) take nothing twice.
            let opener = try Peer.spawn("chan-send", name)
            defer { opener.stop() }
            #expect(opener.wait(timeout: .seconds(10)) == .exited(0))
            try channel.blockingSend("one", timeout: .seconds(5))
            #expect(try channel.tryReceive() == "one")
            #expect(detail(name, "receiversWaiting") == 1, "\(details(name))")
            #expect(ParticipantsSweep.endedEntries(inDetails: details(name)) == 0, "\(details(name))")

            let live = try Peer.spawn("chan-receive", name, "60000")
            defer { live.stop() }
            #expect(live.readLine() == "receiving")
            expectDetail(name, "receiversWaiting", 2)
            try channel.blockingSend("for the live one", timeout: .seconds(5))
            #expect(live.readLine(timeout: .seconds(20)) == "received for the live one")
            expectDetail(name, "receiversWaiting", 1)
        }
    }
}
