#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

// The forms of a channel that its exclusive endpoints offer beside send and receive: loans (zero
// copy) and in-place receives, `messages()` as an AsyncSequence, and a readiness descriptor racing
// an exclusive sender in another process.

/// The code of the `InterprocessError` that `body` throws, or nil if it returns.
private func errorCode<R>(_ body: () async throws(InterprocessError) -> R) async -> InterprocessError.Code? {
    do throws(InterprocessError) {
        _ = try await body()
        return nil
    } catch {
        return error.code
    }
}

@Suite("Channel exclusive endpoints: loans, messages, readiness", .serialized, .timeLimit(.minutes(5)))
struct ChannelExclusiveFormsTests {
    // MARK: Loans

    /// In one process: loans sent through the exclusive sender are read in place through the
    /// exclusive receiver; a short message received in place is a copy; a full ring hands a tried
    /// loan back unsent; a loan of another channel handle is refused; every block goes back.
    @Test func loansThroughTheEndpointsInOneProcess() throws {
        try withCleanNames("chanxloan") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 2, maxMessageSize: 64)
            defer { channel.detach() }
            var sender = try channel.exclusiveSender()
            var receiver = try channel.exclusiveReceiver()
            let loan = try sender.loan(byteCount: 100_000)
            loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = pattern(3, index) } }
            try sender.blockingSend(loan, timeout: .seconds(5))
            do {
                let received = try receiver.blockingReceiveInPlace(timeout: .seconds(5))
                #expect(received.isInPlace && received.byteCount == 100_000)
                #expect(received.withUnsafeBytes { bytes in bytes.indices.allSatisfy { bytes[$0] == pattern(3, $0) } })
                #expect(try blocksInUse(channel) == 1)
            }
            #expect(try blocksInUse(channel) == 0)

            // A short message received in place is a copy; a loan of the channel handle goes too.
            #expect(try sender.trySend([1, 2, 3]))
            if let short = try receiver.tryReceiveInPlace() {
                #expect(!short.isInPlace && short.bytes == [1, 2, 3])
            } else {
                Issue.record("the short message is not there")
            }
            var small = try channel.loan(byteCount: 10)
            small.withUnsafeMutableBytes { $0.copyBytes(from: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]) }
            small.truncate(to: 4)
            #expect(try sender.trySend(small) == nil)
            #expect(try receiver.tryReceive() == [9, 8, 7, 6])

            // A full ring gives the tried loan back, unsent.
            for seed in 0..<2 {
                let loan = try sender.loan(byteCount: 1000)
                loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = pattern(seed, index) } }
                #expect(try sender.trySend(loan) == nil)
            }
            if let unsent = try sender.trySend(try sender.loan(byteCount: 1000)) {
                #expect(unsent.byteCount == 1000)
                try unsent.giveBack()
            } else {
                Issue.record("a loan was sent into a full channel")
            }
            for seed in 0..<2 {
                if let received = try receiver.tryReceiveInPlace() {
                    #expect(received.isInPlace && received.bytes == message(seed, count: 1000))
                } else {
                    Issue.record("message \(seed) is not there")
                }
            }
            #expect(try receiver.tryReceiveInPlace() == nil)

            // A loan of another handle of the channel is refused (and given back).
            let other = try Channel<[UInt8]>.open(name: name)
            defer { other.detach() }
            expectError(.invalidArgument) { try sender.blockingSend(try other.loan(byteCount: 100), timeout: .seconds(1)) }
            #expect(try blocksInUse(channel) == 0, "every block went back")
            #expect(channel.count == 0)
        }
    }

    /// Across processes, in each form (blocking, async, try): a child sends a 1 MiB loan through
    /// its exclusive sender, another receives it in place through its exclusive receiver, whole;
    /// the block goes back when the receiver releases it.
    @Test(arguments: ["blocking", "async", "try"])
    func loansBetweenExclusiveEndpointsInTwoProcesses(form: String) throws {
        try withCleanNames("chanxloan2") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            let sender = try Peer.spawn("chan-x-loan-send", name, "\(1 << 20)", "17", form)
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            #expect(sender.readLine(timeout: .seconds(20)) == "sent")
            // The sender holds its role still; receiving takes the other one.
            expectError(.wouldBlock) { _ = try channel.exclusiveSender() }
            let receiver = try Peer.spawn("chan-x-loan-receive", name, "17", form)
            defer { receiver.stop() }
            #expect(receiver.readLine() == "receiving")
            #expect(receiver.readLine(timeout: .seconds(20)) == "received \(1 << 20) in place whole")
            #expect(try blocksInUse(channel) == 1)
            receiver.tell()
            #expect(receiver.readLine() == "released")
            #expect(receiver.wait(timeout: .seconds(10)) == .exited(0))
            #expect(try blocksInUse(channel) == 0)
            sender.tell()
            #expect(sender.wait(timeout: .seconds(10)) == .exited(0))
            #expect(details(name)["exclusiveSender"] == "none" && details(name)["exclusiveReceiver"] == "none")
            #expect(channel.count == 0)
        }
    }

    /// An exclusive sender killed at each step of sending a loan: before it published, the message
    /// is not sent (counted abandoned) and the block, which no published slot names, is freed by
    /// the sweep; after, the message is delivered whole and no sweep frees its block meanwhile. A
    /// shared sender waiting for the role repairs.
    @Test(arguments: [
        ("channel.send.afterClaim", false),
        ("channel.loan.afterWrite", false),
        ("channel.loan.afterPublish", true),
        ("", true), // killed holding the role after its send returned
    ])
    func anExclusiveSenderKilledAtEachStepOfSendingALoan(point: String, delivered: Bool) throws {
        try withCleanNames("chanxloankill") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            // This process has the loan heap open already, so that the sweep below is the first
            // to look at the dead child's blocks (opening the heap sweeps too).
            #expect(try channel.prepareLoans(capacity: 4 << 20, maximumCapacity: 64 << 20))
            let child = try point.isEmpty
                ? Peer.spawn("chan-x-loan-send", name, "40000", "21")
                : Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-x-loan-send", name, "40000", "21")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            if point.isEmpty {
                #expect(child.readLine() == "sent")
                child.kill(signal: SIGKILL)
            }
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(details(name)["exclusiveSender"]?.hasSuffix("(ended)") == true, "\(details(name))")
            let reclaimed = try channel.reclaimLoans()
            #expect(reclaimed.blocks == (delivered ? 0 : 1), "a block the ring names is kept; one it does not is freed: \(reclaimed)")
            try channel.blockingSend([1], timeout: .seconds(20))
            var received: [[UInt8]] = []
            while let next = try channel.tryReceive() { received.append(next) }
            #expect(received == (delivered ? [message(21, count: 40000), [1]] : [[1]]))
            #expect(detail(name, "abandonedSends") == (delivered ? 0 : 1), "\(details(name))")
            #expect(details(name)["exclusiveSender"] == "none")
            #expect(try blocksInUse(channel) == 0, "nothing left in the loan heap")
        }
    }

    /// An exclusive receiver killed at each step of receiving a loan in place: having taken the
    /// block over but not freed its slot, the message is received again, whole, in place; after
    /// freeing the slot (or holding the received message), it is lost with the receiver and its
    /// block is freed by the sweep. A shared receiver waiting for the role repairs.
    @Test(arguments: [
        ("channel.loan.afterAdopt", true),
        ("channel.receive.afterRelease", false),
        ("", false), // killed holding the ReceivedMessage
    ])
    func anExclusiveReceiverKilledAtEachStepOfReceivingALoan(point: String, redelivered: Bool) throws {
        try withCleanNames("chanxloanrecv") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            try channel.blockingSend(message(31, count: 70_000))
            let child = try point.isEmpty
                ? Peer.spawn("chan-x-loan-receive", name, "31")
                : Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-x-loan-receive", name, "31")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            if point.isEmpty {
                #expect(child.readLine() == "received 70000 in place whole")
                child.kill(signal: SIGKILL)
            }
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try blocksInUse(channel) == 1)
            let reclaimed = try channel.reclaimLoans()
            #expect(reclaimed.blocks == (redelivered ? 0 : 1), "\(reclaimed)")
            if redelivered {
                let again = try channel.blockingReceiveInPlace(timeout: .seconds(20))
                #expect(again.isInPlace && again.bytes == message(31, count: 70_000))
            } else {
                expectError(.timedOut) { _ = try channel.blockingReceiveInPlace(timeout: .milliseconds(200)) }
            }
            #expect(details(name)["exclusiveReceiver"] == "none")
            #expect(try blocksInUse(channel) == 0)
            // The ring goes on, in step.
            for round in 0..<6 {
                try channel.blockingSend([UInt8(round)], timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == [UInt8(round)])
            }
        }
    }

    // MARK: Messages as a sequence

    /// The sequence holds the role from the moment it is made (a sequence never iterated gives it
    /// back when dropped); its one iterator receives in order and gives the role back as soon as
    /// the channel is closed and drained; a second iterator throws `wouldBlock`.
    @Test func messagesHoldTheRoleForTheIteration() async throws {
        try await withCleanNamesAsync("chanxmsgs") { name in
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            do {
                let unused = try channel.exclusiveReceiver().messages()
                expectError(.wouldBlock) { _ = try channel.exclusiveReceiver() }
                _ = unused
            }
            #expect(details(name)["exclusiveReceiver"] == "none", "a sequence never iterated gave the role back")
            for text in ["a", "b", "c"] { try await channel.send(text) }
            let messages = try channel.exclusiveReceiver().messages()
            var iterator = messages.makeAsyncIterator()
            #expect(try await iterator.next() == "a")
            var second = messages.makeAsyncIterator()
            #expect(await errorCode { () async throws(InterprocessError) in try await second.next() } == .wouldBlock)
            expectError(.wouldBlock) { _ = try channel.exclusiveReceiver() }
            #expect(try channel.tryReceive() == nil, "shared receives wait for the role")
            #expect(try await iterator.next() == "b")
            #expect(try await iterator.next() == "c")
            channel.close()
            #expect(try await iterator.next() == nil)
            #expect(try await iterator.next() == nil)
            #expect(details(name)["exclusiveReceiver"] == "none", "the end gave the role back, the iterator still alive")
            withExtendedLifetime(iterator) {}
        }
    }

    /// A cancelled iteration takes nothing: cancelled before it waits, the message stays in; parked
    /// on an empty channel and cancelled, it throws `cancelled`; either way the role goes back
    /// when the iterator is dropped and the next receive gets every message.
    @Test func aCancelledIterationConsumesNothing() async throws {
        try await withCleanNamesAsync("chanxmsgcancel") { name in
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            try await channel.send("kept")
            let messages = try channel.exclusiveReceiver().messages()
            let before = await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                var iterator = messages.makeAsyncIterator()
                return await errorCode { () async throws(InterprocessError) in try await iterator.next() }
            }.value
            #expect(before == .cancelled)
            #expect(channel.count == 1)
            #expect(details(name)["exclusiveReceiver"] == "none", "the dropped iterator gave the role back")
            #expect(try channel.tryReceive() == "kept")

            // Parked on an empty channel, then cancelled.
            let parked = Task {
                var iterator = try channel.exclusiveReceiver().messages().makeAsyncIterator()
                return await errorCode { () async throws(InterprocessError) in try await iterator.next() }
            }
            #expect(await eventually { (Int(details(name)["waiters"] ?? "") ?? 0) == 1 }, "the iteration parks")
            parked.cancel()
            #expect(try await parked.value == .cancelled)
            #expect(details(name)["exclusiveReceiver"] == "none")
            try await channel.send("after")
            var receiver = try channel.exclusiveReceiver()
            #expect(try await receiver.receive(timeout: .seconds(5)) == "after")
            #expect(try receiver.tryReceive() == nil)
        }
    }

    /// Across processes: a child iterates its exclusive receiver's messages; while it does (also
    /// between messages) the role is its own; the test's close ends the iteration and the role is
    /// back at once.
    @Test func messagesOfAnExclusiveReceiverInAnotherProcess() throws {
        try withCleanNames("chanxmsgchild") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let child = try Peer.spawn("chan-x-messages", name)
            defer { child.stop() }
            #expect(child.readLine() == "ready")
            expectError(.wouldBlock) { _ = try channel.exclusiveReceiver() }
            for round in 0..<20 {
                try channel.blockingSend("m\(round)", timeout: .seconds(20))
                #expect(child.readLine(timeout: .seconds(20)) == "received m\(round)")
            }
            #expect(details(name)["exclusiveReceiver"]?.hasSuffix("(alive)") == true, "\(details(name))")
            channel.close()
            #expect(child.readLine(timeout: .seconds(20)) == "ended")
            #expect(child.readLine() == "role back")
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
        }
    }

    /// A process killed while it iterates its exclusive receiver's messages leaves what a holder
    /// of the role killed in a receive leaves: killed while copying a message out, the message is
    /// received again; after freeing its slot, it is lost with the process. A shared receiver
    /// waiting for the role takes it over and repairs.
    @Test(arguments: [
        ("channel.receive.afterCopy", ["first", "second"]),
        ("channel.receive.afterRelease", ["second"]),
    ])
    func aProcessKilledWhileIteratingMessages(point: String, expected: [String]) throws {
        try withCleanNames("chanxmsgkill") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend("first")
            try channel.blockingSend("second")
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-x-messages", name)
            defer { child.stop() }
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            var received: [String] = []
            for _ in expected { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
            #expect(received == expected)
            #expect(try channel.tryReceive() == nil)
            #expect(details(name)["exclusiveReceiver"] == "none")
        }
    }

    // MARK: Readiness racing an exclusive sender

    /// A child sends numbered messages through an exclusive sender — back to back, or at a pace of
    /// its own (pauses of a few microseconds to a few hundred, so that the loop here often finds the
    /// channel empty and goes back to `poll` while a send is on its way; and after every other
    /// message it waits until this process has taken it, so that a wake-up lost for that message
    /// is not made up for by the next one's) — while this process waits on a readiness descriptor
    /// (armed, by its acknowledgements, while the role is held: the arming makes the asymmetric
    /// fence) and drains with `tryReceive`, shared or through its own exclusive receiver: every
    /// message arrives, once, in order, and the poll never waits out its bound (no wake-up lost).
    /// (Checked by breaking it: a sender that skips the datagram for one message in 5,000 makes the
    /// paced cases wait out the bound.)
    @Test(arguments: [("paced", "shared"), ("paced", "exclusive"), ("fast", "shared"), ("fast", "exclusive")])
    func readinessRacingAnExclusiveSenderLosesNoWakeUp(pace: String, receiving: String) throws {
        try withCleanNames("chanxready") { name in
            let count = 20_000
            let channel = try Channel<String>.create(name: name, capacity: 16)
            defer { channel.detach() }
            let readiness = try channel.readinessDescriptor()
            defer { readiness.close() }
            let child = try Peer.spawn("chan-x-ready-send", name, "\(count)", pace)
            defer { child.stop() }
            #expect(child.readLine() == "ready")
            #expect(details(name)["exclusiveSender"]?.hasSuffix("(alive)") == true, "\(details(name))")
            var next = 0
            var stalls = 0
            var problems: [String] = []
            func drainByReadiness(_ tryReceive: () throws -> String?) throws {
                // Right after creating the descriptor, receive until nil once (the protocol).
                func drain() throws {
                    while let text = try tryReceive() {
                        if text != "\(next)" { problems.append("\(text) after \(next - 1)") }
                        next = (Int(text) ?? next) + 1
                    }
                }
                try drain()
                child.tell()
                while next < count {
                    guard isReadable(readiness.fileDescriptor, within: 30_000) else {
                        stalls += 1
                        break
                    }
                    readiness.acknowledge()
                    try drain()
                }
            }
            if receiving == "exclusive" {
                var receiver = try channel.exclusiveReceiver()
                try drainByReadiness { try receiver.tryReceive() }
            } else {
                try drainByReadiness { try channel.tryReceive() }
            }
            #expect(stalls == 0, "the loop waited 30 s for a wake-up with \(count - next) messages to come")
            #expect(problems.isEmpty, "\(problems.prefix(5))")
            #expect(next == count)
            #expect(child.readLine(timeout: .seconds(20)) == "done")
            #expect(readiness.wakeUps >= 1)
            child.tell()
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            #expect(try channel.tryReceive() == nil)
            #expect(details(name)["exclusiveSender"] == "none")
        }
    }
}
