#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// Sends and receives through the exclusive endpoints of a channel (``ExclusiveSender``,
/// ``ExclusiveReceiver``): the roles, the other senders and receivers waiting while they are held,
/// processes that hold them killed at each step, and close racing an exclusive sender.
@Suite("Channel exclusive endpoints", .serialized, .timeLimit(.minutes(5)))
struct ChannelExclusiveTests {
    /// In one process: the endpoints move values in order around a small ring (full and empty many
    /// times over); a role is held once at a time; while it is held, the shared forms would wait;
    /// once it is given up, they work again and see what the endpoints left. Raw values, so the
    /// endpoints' inlined fast paths; a capacity of 4 finds slots with a mask, one of 3 with a division.
    @Test(arguments: [4, 3])
    func endpointsKeepOrderAndHoldTheirRoleAlone(capacity: Int) throws {
        try withCleanNames("chanxone") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: capacity)
            defer { channel.detach() }
            do {
                var sender = try channel.exclusiveSender()
                var receiver = try channel.exclusiveReceiver()
                expectError(.wouldBlock) { _ = try channel.exclusiveSender() }
                expectError(.wouldBlock) { _ = try channel.exclusiveReceiver() }
                #expect(details(name)["exclusiveSender"]?.hasSuffix("(alive)") == true, "\(details(name))")
                var next: UInt64 = 0, expected: UInt64 = 0
                for round in 0..<500 {
                    // Fill (the ring refuses one more), then drain part of it.
                    while try sender.trySend(next) { next += 1 }
                    #expect(channel.count == capacity)
                    for _ in 0..<(round % capacity + 1) {
                        #expect(try receiver.tryReceive() == expected)
                        expected += 1
                    }
                }
                // The shared forms wait for the roles.
                #expect(try channel.trySend(99) == false)
                #expect(try channel.tryReceive() == nil)
                expectError(.timedOut) { try channel.blockingSend(99, timeout: .milliseconds(100)) }
                expectError(.timedOut) { _ = try channel.blockingReceive(timeout: .milliseconds(100)) }
                try sender.blockingSend(next, timeout: .seconds(5))
                _ = consume sender
                // The sender role is back: shared sends work, after the exclusive sender's messages.
                try channel.blockingSend(next + 1, timeout: .seconds(5))
                while expected <= next + 1 {
                    #expect(try receiver.blockingReceive(timeout: .seconds(5)) == expected)
                    expected += 1
                }
                #expect(try receiver.tryReceive() == nil)
            }
            #expect(details(name)["exclusiveSender"] == "none" && details(name)["exclusiveReceiver"] == "none")
            try channel.blockingSend(7, timeout: .seconds(5))
            #expect(try channel.blockingReceive(timeout: .seconds(5)) == 7)
            #expect(channel.count == 0)
        }
    }

    /// A producer process and a consumer process, each through an exclusive endpoint, exchange
    /// numbered messages of many lengths through a ring of 8 slots (both park and wake each other
    /// many times): every message arrives once, whole and in order; then close ends the consumer.
    @Test(arguments: ["blocking", "async"])
    func numberedMessagesBetweenExclusiveEndpoints(mode: String) throws {
        try withCleanNames("chanxnum") { name in
            let count = 20_000
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 8, maxMessageSize: 128)
            defer { channel.detach() }
            let ledger = try SharedMemory.create(name: name + "-ledger", size: 1024 + 4 * count)
            defer { ledger.close() }
            let consumer = try Peer.spawn("chan-x-consume", name, name + "-ledger", "\(count)")
            defer { consumer.stop() }
            #expect(consumer.readLine() == "ready")
            let producer = try Peer.spawn("chan-x-produce", name, name + "-ledger", "0", "\(count)", mode)
            defer { producer.stop() }
            #expect(producer.readLine() == "ready")
            #expect(producer.readLine(timeout: .seconds(120)) == "done")
            #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            channel.close()
            #expect(consumer.readLine(timeout: .seconds(60)) == "drained \(count)")
            #expect(consumer.wait(timeout: .seconds(10)) == .exited(0))
            try ledger.withUnsafeBytes { bytes in
                #expect(bytes.load(as: UInt64.self) == 0, "order violations")
                #expect(bytes.load(fromByteOffset: 8, as: UInt64.self) == 0, "damaged messages")
                let wrong = (0..<count).filter { bytes.load(fromByteOffset: 1024 + 4 * $0, as: UInt32.self) != 1 }
                #expect(wrong.count == 0, "\(wrong.prefix(20))")
            }
        }
    }

    /// Closing while an exclusive sender in another process sends as fast as it can: every message
    /// whose send returned is received, none after the close's end, and the sender sees `closed`.
    @Test func closeRacingAnExclusiveSenderLosesNothingSent() throws {
        try withCleanNames("chanxclose") { name in
            let count = 2_000_000
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 64, maxMessageSize: 128)
            defer { channel.detach() }
            let ledger = try SharedMemory.create(name: name + "-ledger", size: 1024 + 4 * count)
            defer { ledger.close() }
            let producer = try Peer.spawn("chan-x-produce", name, name + "-ledger", "0", "\(count)", "until-closed")
            defer { producer.stop() }
            #expect(producer.readLine() == "ready")
            var received = 0
            // Receive a while, then close in the middle of the stream, then drain.
            while received < 20_000 {
                _ = try channel.blockingReceive(timeout: .seconds(20))
                received += 1
            }
            channel.close()
            while true {
                do {
                    _ = try channel.blockingReceive(timeout: .seconds(20))
                    received += 1
                } catch let error as InterprocessError where error.code == .closed {
                    break
                }
            }
            let line = producer.readLine(timeout: .seconds(30)) ?? ""
            #expect(line.hasPrefix("closed "), "\(line)")
            #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            let sent = try ledger.withUnsafeBytes { Int($0.load(fromByteOffset: 64, as: UInt64.self)) }
            #expect(received == sent && "closed \(sent)" == line, "received \(received), sent \(sent), \(line)")
        }
    }

    /// An exclusive sender killed at each step of a send: after taking the role, or announcing its
    /// position, or writing, nothing is sent (a message being written is counted abandoned); after
    /// publishing, the message is delivered. A shared sender waiting for the role takes it over from
    /// the dead process and repairs, promptly; the channel goes on working, around the ring. For
    /// strings (the general path) and raw values (the sender's inlined fast path, whose steps are
    /// the same crash points).
    @Test(arguments: [
        ("channel.role.afterTake", false, 0),
        ("channel.send.afterClaim", false, 1),
        ("channel.send.afterWrite", false, 1),
        ("channel.send.afterPublish", true, 0),
    ], ["text", "raw"])
    func anExclusiveSenderKilledAtEachStep(step: (point: String, delivered: Bool, abandoned: Int), kind: String) throws {
        try withCleanNames("chanxkillsend") { name in
            if kind == "raw" {
                let channel = try Channel<UInt64>.create(name: name, capacity: 4)
                defer { channel.detach() }
                try senderKilled(step, channel, name: name, values: [1, 2, 3], command: "chan-x-raw-send", lost: "2") { 10 + UInt64($0) }
            } else {
                let channel = try Channel<String>.create(name: name, capacity: 4)
                defer { channel.detach() }
                try senderKilled(step, channel, name: name, values: ["before", "lost?", "after"], command: "chan-x-send", lost: "lost?") { "m\($0)" }
            }
        }
    }

    /// ``anExclusiveSenderKilledAtEachStep(step:kind:)`` on `channel`: `values` are sent before, by
    /// the child (`command` … `lost`) and after.
    private func senderKilled<Message: Equatable>(
        _ step: (point: String, delivered: Bool, abandoned: Int), _ channel: Channel<Message>, name: String,
        values: [Message], command: String, lost: String, round: (Int) -> Message
    ) throws {
        try channel.blockingSend(values[0])
        let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", step.point, command, name, lost)
        defer { child.stop() }
        #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
        #expect(details(name)["exclusiveSender"]?.hasSuffix("(ended)") == true, "\(details(name))")
        let start = Clock.monotonicNanoseconds()
        try channel.blockingSend(values[2], timeout: .seconds(20))
        var received: [Message] = []
        for _ in 0..<(step.delivered ? 3 : 2) { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
        #expect(elapsed(since: start) < promptly)
        #expect(received == (step.delivered ? values : [values[0], values[2]]))
        #expect(detail(name, "abandonedSends") == step.abandoned, "\(details(name))")
        #expect(details(name)["exclusiveSender"] == "none")
        #expect(try channel.tryReceive() == nil)
        for index in 0..<10 {
            try channel.blockingSend(round(index), timeout: .seconds(5))
            #expect(try channel.blockingReceive(timeout: .seconds(5)) == round(index))
        }
        #expect(channel.count == 0)
    }

    /// An exclusive receiver killed at each step of a receive: while copying the message out, it is
    /// still in and is received again; after freeing its slot, it is lost with the receiver and the
    /// receive position moves past it. A shared receiver waiting for the role repairs, promptly.
    @Test(arguments: [
        ("channel.receive.afterCopy", ["first", "second"]),
        ("channel.receive.afterRelease", ["second"]),
    ])
    func anExclusiveReceiverKilledAtEachStep(point: String, expected: [String]) throws {
        try withCleanNames("chanxkillrecv") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend("first")
            try channel.blockingSend("second")
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-x-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            var received: [String] = []
            for _ in expected { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == expected)
            expectError(.timedOut) { _ = try channel.blockingReceive(timeout: .milliseconds(200)) }
            #expect(details(name)["exclusiveReceiver"] == "none")
            // Around the ring, with the senders' slots in step with the receive position.
            for round in 0..<10 {
                try channel.blockingSend("m\(round)", timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
            #expect(channel.count == 0)
        }
    }

    /// A process that takes the role of a dead exclusive sender and dies while repairing leaves a
    /// dead token again: the next process repairs the same way, and nothing is sent twice.
    @Test func aRepairerKilledWhileRepairingLeavesItToTheNext() throws {
        try withCleanNames("chanxrepair") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let sender = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.send.afterPublish", "chan-x-send", name, "one", "two")
            defer { sender.stop() }
            #expect(sender.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let repairer = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.role.afterRepairClaim", "chan-x-send", name, "three")
            defer { repairer.stop() }
            #expect(repairer.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            var receiver = try channel.exclusiveReceiver()
            #expect(try receiver.blockingReceive(timeout: .seconds(20)) == "one")
            var next = try channel.exclusiveSender()
            try next.blockingSend("four", timeout: .seconds(5))
            #expect(try receiver.blockingReceive(timeout: .seconds(5)) == "four")
            #expect(try receiver.tryReceive() == nil)
        }
    }

    /// Shared senders and receivers in other processes wait while the roles are held, and go on
    /// when the holder gives them up (woken, not by a timeout).
    @Test func sharedSendersAndReceiversWaitForTheRoles() throws {
        try withCleanNames("chanxwait") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let holder = try Peer.spawn("chan-x-hold", name, "sender")
            defer { holder.stop() }
            #expect(holder.readLine() == "holding")
            let sender = try Peer.spawn("chan-send", name, "waited")
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            // The shared sender parks behind the role; nothing arrives while it is held.
            expectError(.timedOut) { _ = try channel.blockingReceive(timeout: .milliseconds(300)) }
            #expect(holder.send("release\n"))
            #expect(holder.readLine() == "released")
            #expect(try channel.blockingReceive(timeout: .seconds(20)) == "waited")
            #expect(sender.readLine() == "sent")

            let receiverHolder = try Peer.spawn("chan-x-hold", name, "receiver")
            defer { receiverHolder.stop() }
            #expect(receiverHolder.readLine() == "holding")
            let receiver = try Peer.spawn("chan-receive", name, "60000")
            defer { receiver.stop() }
            #expect(receiver.readLine() == "receiving")
            try channel.blockingSend("for the shared receiver")
            #expect(receiverHolder.send("release\n"))
            #expect(receiverHolder.readLine() == "released")
            #expect(receiver.readLine(timeout: .seconds(20)) == "received for the shared receiver")
        }
    }

    /// A channel of the layout before exclusive endpoints (tag "CHN1") is refused as an older layout:
    /// its processes would not respect the roles.
    @Test func aChannelOfTheOlderLayoutIsIncompatible() throws {
        try withCleanNames("chanxold") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            scribble(name, at: SharedMemory.payloadOffset + 20, Array("CHN1".utf8))
            do {
                _ = try Channel<UInt64>.open(name: name)
                Issue.record("a CHN1 channel opened")
            } catch let error as InterprocessError {
                #expect(error.code == .incompatible && error.detail.contains("older layout"), "\(error)")
            }
        }
    }
}
