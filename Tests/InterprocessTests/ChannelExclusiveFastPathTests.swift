#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Raw values through the exclusive endpoints: the inlined fast paths
/// (`ChannelRing+ExclusiveFastPath.swift`) and their hand-overs to the general path — waking a
/// parked peer, a message redelivered before the next one, a close, a detached handle — between
/// real processes. (Their crash points: `anExclusiveSenderKilledAtEachStep` and
/// `aRawValueReceiverKilledAtEachStep`, for raw values.)
@Suite("Channel exclusive endpoints: raw values", .serialized, .timeLimit(.minutes(5)))
struct ChannelExclusiveFastPathTests {
    /// `receive_signal` and `send_signal` of a channel's state: bumped by every wake-up.
    static let receiveSignal = SharedMemory.payloadOffset + 384
    static let sendSignal = SharedMemory.payloadOffset + 448

    /// A producer process sends 0 … n-1 through its exclusive sender (blocking, async or try)
    /// into a ring of 4 slots, and this process receives them through its exclusive receiver
    /// (the same form), each side now and then sleeping 1–2 ms so that the other parks (a full
    /// ring, an empty one) and is woken by the other's fast path: every value arrives once, in order.
    @Test(arguments: ["blocking", "async", "try"])
    func valuesBetweenProcessesArriveInOrder(mode: String) async throws {
        try await withCleanNamesAsync("chanxraw") { name in
            let count: UInt64 = 60_000
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            var receiver = try channel.exclusiveReceiver()
            let producer = try Peer.spawn("chan-x-raw-produce", name, "\(count)", mode)
            defer { producer.stop() }
            #expect(producer.readLine() == "ready")
            var expected: UInt64 = 0
            var wrong: [String] = []
            while expected < count {
                let value: UInt64
                switch mode {
                case "async": value = try await receiver.receive(timeout: .seconds(60))
                case "try": value = try receiveTrying(&receiver)
                default: value = try receiveBlocking(&receiver)
                }
                if value != expected, wrong.count < 10 { wrong.append("\(value) after \(expected)") }
                expected = value + 1
                if value % 2_000 == 0 { usleep(1_000 + UInt32.random(in: 0..<1_000)) }
            }
            #expect(wrong.isEmpty, "\(wrong)")
            #expect(expected == count)
            #expect(producer.readLine(timeout: .seconds(60)) == "done")
            #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            #expect(try receiver.tryReceive() == nil)
            #expect(detail(name, "abandonedSends") == 0 && detail(name, "droppedMessages") == 0, "\(details(name))")
        }
    }

    /// A receiver parked in another process is woken by the sender's fast path — the send bumps
    /// `receive_signal` once (the wake-up itself, not the periodic check, which would deliver the
    /// value too, 50 ms late) — and a sender parked on a full ring by the receiver's fast path.
    @Test func parkedPeersAreWokenByTheFastPaths() throws {
        try withCleanNames("chanxwake") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 2)
            defer { channel.detach() }
            // A parked receiver, three times.
            do {
                var sender = try channel.exclusiveSender()
                let child = try Peer.spawn("chan-x-raw-receive", name, "exclusive", "3")
                defer { child.stop() }
                #expect(child.readLine() == "receiving")
                for value in UInt64(1)...3 {
                    #expect(pollUntil(timeout: .seconds(20)) { details(name)["receiversWaiting"] == "1" }, "\(details(name))")
                    let signal = peek32(name, at: Self.receiveSignal)
                    try sender.blockingSend(value, timeout: .seconds(5))
                    #expect(peek32(name, at: Self.receiveSignal) == signal &+ 1)
                    #expect(child.readLine(timeout: .seconds(20)) == "received \(value)")
                }
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            // A sender parked on a full ring.
            var receiver = try channel.exclusiveReceiver()
            let child = try Peer.spawn("chan-x-raw-send", name, "4", "5", "6")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            #expect(pollUntil(timeout: .seconds(20)) { details(name)["sendersWaiting"] == "1" }, "\(details(name))")
            let signal = peek32(name, at: Self.sendSignal)
            #expect(try receiver.tryReceive() == 4)
            #expect(peek32(name, at: Self.sendSignal) == signal &+ 1)
            #expect(child.readLine(timeout: .seconds(20)) == "sent")
            #expect(try receiver.tryReceive() == 5)
            #expect(try receiver.tryReceive() == 6)
            #expect(try receiver.tryReceive() == nil)
        }
    }

    /// A shared receiver that died holding value 1 leaves it an orphan; the exclusive receiver
    /// that takes the role delivers it before value 2, which is in at the receive position (the
    /// fast path leaves a channel with orphans to the general path).
    @Test func anOrphanComesBeforeTheNextValue() throws {
        try withCleanNames("chanxorphan") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend(1)
            try channel.blockingSend(2)
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.receive.afterClaim", "chan-x-raw-receive", name, "shared")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            var receiver = try channel.exclusiveReceiver()
            #expect(try receiver.blockingReceive(timeout: .seconds(20)) == 1)
            #expect(try receiver.blockingReceive(timeout: .seconds(5)) == 2)
            #expect(try receiver.tryReceive() == nil)
            #expect(detail(name, "redeliveries") == 1, "\(details(name))")
        }
    }

    /// Closing while an exclusive sender in another process sends raw values back to back: every
    /// value whose send returned is received, and the sender's next send throws `closed` (its
    /// announcement taken back, nothing half sent).
    @Test func closeRacingTheSendersFastPathLosesNothingSent() throws {
        try withCleanNames("chanxrawclose") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 64)
            defer { channel.detach() }
            let producer = try Peer.spawn("chan-x-raw-produce", name, "100000000", "until-closed")
            defer { producer.stop() }
            #expect(producer.readLine() == "ready")
            var received: UInt64 = 0
            var inOrder = true
            while received < 20_000 {
                let value = try channel.blockingReceive(timeout: .seconds(20))
                inOrder = inOrder && value == received
                received += 1
            }
            channel.close()
            while true {
                do {
                    let value = try channel.blockingReceive(timeout: .seconds(20))
                    inOrder = inOrder && value == received
                    received += 1
                } catch let error as InterprocessError where error.code == .closed {
                    break
                }
            }
            #expect(inOrder)
            #expect(producer.readLine(timeout: .seconds(30)) == "closed \(received)")
            #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            #expect(detail(name, "abandonedSends") == 0, "\(details(name))")
        }
    }

    /// Once `close()` returned, every send through an exclusive sender throws `closed` and sends
    /// nothing, though its slot is free (the fast path checks CLOSING after announcing its
    /// position, and takes the announcement back); the receiver takes what was in, then sees the end.
    @Test func aClosedChannelRefusesTheFastPathsSends() async throws {
        try await withCleanNamesAsync("chanxrawshut") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            var sender = try channel.exclusiveSender()
            var receiver = try channel.exclusiveReceiver()
            #expect(try sender.trySend(1))
            channel.close()
            await expectErrorAsync(.closed) { try await sender.send(2) }
            await expectErrorAsync(.closed) { _ = try sender.trySend(2) }
            expectError(.closed) { try sendBlocking(&sender, 2) }
            #expect(try receiver.tryReceive() == 1)
            await expectErrorAsync(.closed) { _ = try receiver.tryReceive() }
            await expectErrorAsync(.closed) { _ = try await receiver.receive() }
            expectError(.closed) { _ = try receiveBlocking(&receiver) }
            #expect(detail(name, "sent") == 1 && detail(name, "abandonedSends") == 0, "\(details(name))")
        }
    }

    /// Endpoints of a handle that was then detached: every verb throws `closed` and touches
    /// nothing (the fast paths check it first); another handle sees the value that was in.
    @Test func endpointsOfADetachedHandleThrowClosed() async throws {
        try await withCleanNamesAsync("chanxrawdet") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            let other = try Channel<UInt64>.open(name: name)
            defer { other.detach() }
            try await channel.send(1)
            do {
                var sender = try channel.exclusiveSender()
                var receiver = try channel.exclusiveReceiver()
                channel.detach()
                await expectErrorAsync(.closed) { try await sender.send(2) }
                await expectErrorAsync(.closed) { _ = try sender.trySend(2) }
                await expectErrorAsync(.closed) { _ = try await receiver.receive() }
                await expectErrorAsync(.closed) { _ = try receiver.tryReceive() }
                expectBlockingClosed(&sender, &receiver)
            }
            #expect(try other.tryReceive() == 1)
            #expect(try other.tryReceive() == nil)
        }
    }
}

/// One value through `receiver`, blocking (its inlined spin, then the general wait).
private func receiveBlocking(_ receiver: inout ExclusiveReceiver<UInt64>) throws(InterprocessError) -> UInt64 {
    try receiver.blockingReceive(timeout: .seconds(60))
}

/// `value` through `sender`, blocking.
private func sendBlocking(_ sender: inout ExclusiveSender<UInt64>, _ value: UInt64) throws(InterprocessError) {
    try sender.blockingSend(value, timeout: .seconds(5))
}

/// One value through `receiver`'s `tryReceive`, retried (yielding) for at most 60 s.
private func receiveTrying(_ receiver: inout ExclusiveReceiver<UInt64>) throws -> UInt64 {
    let deadline = Deadline(after: .seconds(60))
    while true {
        if let value = try receiver.tryReceive() { return value }
        guard !deadline.hasPassed else { throw InterprocessError(.timedOut, detail: "no value within 60 s") }
        sched_yield()
    }
}

/// The blocking forms of endpoints whose handle was detached throw `closed`.
private func expectBlockingClosed(_ sender: inout ExclusiveSender<UInt64>, _ receiver: inout ExclusiveReceiver<UInt64>) {
    expectError(.closed) { try sender.blockingSend(2) }
    expectError(.closed) { _ = try receiver.blockingReceive() }
}
