#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

private struct Report: Codable, Equatable, Sendable {
    var title: String
    var lines: [String]
}

private func bytes(of value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
private func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

/// Where slot `index` of a channel of `maxMessageSize`-byte slots is in its segment's file.
private func slotOffset(_ index: Int, maxMessageSize: Int) -> Int {
    4096 + 512 + index * ((32 + maxMessageSize + 63) / 64 * 64)
}

@Suite("Channel loans", .serialized, .timeLimit(.minutes(5)))
struct ChannelLoanTests {
    // MARK: Loans and large messages

    @Test func aLoanIsReadInPlaceAndLargeMessagesTravelTransparently() throws {
        try withCleanNames("loan") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            #expect(channel.loanHeapName == name + "~loans")
            #expect(!SharedMemory.exists(name: channel.loanHeapName), "the loan heap is made on first need")
            let loan = try channel.loan(byteCount: 1 << 20)
            #expect(loan.byteCount == 1 << 20)
            loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = pattern(3, index) } }
            try channel.blockingSend(loan)
            #expect(details(name)["loanHeapNonce"] != nil)
            let received = try channel.blockingReceiveInPlace(timeout: .seconds(10))
            #expect(received.isInPlace && received.byteCount == 1 << 20)
            #expect(received.withUnsafeBytes { bytes in bytes.indices.allSatisfy { bytes[$0] == pattern(3, $0) } })
            #expect(try blocksInUse(channel) == 1)
            try received.release()
            #expect(try blocksInUse(channel) == 0)

            // A plain send of a message longer than a slot goes the same way; so does one received plainly.
            let big = message(5, count: 100_000)
            try channel.blockingSend(big)
            #expect(try channel.blockingReceive(timeout: .seconds(10)) == big)
            #expect(try channel.trySend(message(6, count: 65)))
            #expect(try channel.tryReceive() == message(6, count: 65))
            // A short message received in place is a copy; a loan can be shorter than a slot too.
            try channel.blockingSend([1, 2, 3])
            let short = try channel.blockingReceiveInPlace()
            #expect(!short.isInPlace && short.bytes == [1, 2, 3])
            var small = try channel.loan(byteCount: 10)
            small.withUnsafeMutableBytes { $0.copyBytes(from: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]) }
            small.truncate(to: 4)
            try channel.blockingSend(small)
            #expect(try channel.blockingReceive() == [9, 8, 7, 6])
            #expect(try blocksInUse(channel) == 0, "every block went back")

            // A full channel gives a tried loan back, unsent; a loan dropped unsent goes back too.
            for index in 0..<4 { try channel.blockingSend([UInt8(index)]) }
            var refusedCount = 0
            if let refused = try channel.trySend(try channel.loan(byteCount: 1000)) { refusedCount = refused.byteCount }
            #expect(refusedCount == 1000)
            do { _ = try channel.loan(byteCount: 5000) }
            #expect(try blocksInUse(channel) == 0)
            for index in 0..<4 { #expect(try channel.blockingReceive() == [UInt8(index)]) }

            // A loan of another handle of the channel is refused.
            let peer = try Channel<[UInt8]>.open(name: name)
            expectError(.invalidArgument) { try peer.blockingSend(try channel.loan(byteCount: 100)) }
            peer.detach()
            channel.detach()
            #expect(!SharedMemory.exists(name: name) && !SharedMemory.exists(name: name + "~loans"), "the loan heap goes with the channel")
        }
    }

    @Test func largeStringsAndCodableValuesTravelThroughTheLoanHeap() throws {
        try withCleanNames("loantext") { name in
            let text = try Channel<String>.create(name: name + "-text", capacity: 2, maxMessageSize: 16)
            defer { text.detach() }
            let long = String(repeating: "héllo ", count: 50_000)
            try text.blockingSend(long)
            try text.blockingSend("short")
            #expect(try text.blockingReceive() == long)
            #expect(try text.blockingReceive() == "short")

            let reports = try Channel<Report>.create(name: name + "-json", capacity: 2, maxMessageSize: 64)
            defer { reports.detach() }
            let report = Report(title: "big", lines: (0..<2000).map { "line \($0)" })
            try reports.blockingSend(report)
            #expect(try reports.blockingReceive(timeout: .seconds(10)) == report)
        }
    }

    @Test func aLoanCrossesProcessesBothWays() throws {
        try withCleanNames("loanpeer") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 128)
            defer { channel.detach() }
            // A child loans, fills and sends; we read it in place.
            let sender = try Peer.spawn("loan-send", name, "\(300_000)", "11")
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            #expect(sender.readLine() == "sent")
            let received = try channel.blockingReceiveInPlace(timeout: .seconds(10))
            #expect(received.isInPlace && received.bytes == message(11, count: 300_000))
            sender.tell()
            #expect(sender.wait(timeout: .seconds(10)) == .exited(0))
            try received.release()
            // We send; a child reads it in place.
            let receiver = try Peer.spawn("loan-receive", name, "12")
            defer { receiver.stop() }
            try channel.blockingSend(message(12, count: 200_000))
            #expect(receiver.readLine() == "received 200000 in place whole")
            receiver.tell()
            #expect(receiver.readLine() == "released")
            #expect(receiver.wait(timeout: .seconds(10)) == .exited(0))
            #expect(try blocksInUse(channel) == 0)
        }
    }

    /// The README's example of loans ("Large messages: loans"), as written there but for the name.
    @Test func theReadmeExampleRuns() throws {
        try withCleanNames("loanreadme") { name in
            let frames = try Channel<[UInt8]>.openOrCreate(name: name, capacity: 8, maxMessageSize: 64).channel
            let loan = try frames.loan(byteCount: 1 << 20)                 // 1 MiB in the channel's loan heap
            loan.withUnsafeMutableBytes { buffer in
                for index in buffer.indices { buffer[index] = UInt8(truncatingIfNeeded: index) }
            }
            try frames.blockingSend(loan)                                   // consumes the loan: nothing is copied

            // The receiver (usually another process) reads the same memory in place:
            let frame = try frames.blockingReceiveInPlace()
            let sum = frame.withUnsafeBytes { bytes in bytes.reduce(0) { $0 &+ Int($1) } }
            print(frame.byteCount, frame.isInPlace, sum)                    // 1048576 true 133693440
            #expect(frame.byteCount == 1_048_576 && frame.isInPlace && sum == 133_693_440)
            try frame.release()                                             // or let it go out of scope

            try frames.blockingSend([UInt8](repeating: 1, count: 100_000))  // a plain send longer than a slot
            let copy = try frames.blockingReceive()                         // travels the same way (copied in and out)
            print(copy.count)
            #expect(copy == [UInt8](repeating: 1, count: 100_000))
            frames.detach()
        }
    }

    // MARK: Processes killed at each step

    /// A sender killed while it holds a loan it has not sent: nothing was sent, and the block, which
    /// no slot names, is freed by the next sweep.
    @Test func aSenderKilledHoldingAnUnsentLoanLeavesABlockTheSweepFrees() throws {
        try withCleanNames("loankillhold") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            let child = try Peer.spawn("loan-hold", name, "50000")
            defer { child.stop() }
            #expect(child.readLine() == "loaned")
            #expect(try channel.reclaimLoans(dryRun: true).blocks == 0, "its holder is alive")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try blocksInUse(channel) == 1)
            let reclaimed = try channel.reclaimLoans()
            #expect(reclaimed.blocks == 1 && reclaimed.processes == [child.pid])
            #expect(try blocksInUse(channel) == 0)
            #expect(try channel.tryReceive() == nil, "nothing was sent")
        }
    }

    /// A sender killed at each step of sending a loan: before it published the slot, the message
    /// is not sent (the slot is skipped) and its block is freed by the sweep; after, the message is
    /// delivered whole, and no sweep frees its block while the ring names it.
    @Test(arguments: [
        ("channel.send.afterClaim", false),
        ("channel.loan.afterWrite", false),
        ("channel.loan.afterPublish", true),
        ("", true), // killed after its send returned
    ])
    func aSenderKilledAtEachStepOfSendingALoan(point: String, delivered: Bool) throws {
        try withCleanNames("loankillsend") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            let child = try point.isEmpty
                ? Peer.spawn("loan-send", name, "40000", "21")
                : Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "loan-send", name, "40000", "21")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            if point.isEmpty {
                #expect(child.readLine() == "sent")
                child.kill(signal: SIGKILL)
            }
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try channel.reclaimLoans().blocks == 0 || !delivered, "a block the ring names is kept")
            try channel.blockingSend([1])
            var received: [[UInt8]] = []
            while let next = try channel.blockingReceiveOrNil() { received.append(next) }
            #expect(received == (delivered ? [message(21, count: 40000), [1]] : [[1]]))
            _ = try channel.reclaimLoans()
            #expect(try blocksInUse(channel) == 0, "nothing left in the loan heap")
        }
    }

    /// A receiver killed at each step of taking a loan: before it released the slot (having taken the
    /// block over or not) the message is redelivered whole; killed holding the received message, the
    /// message is gone with it and its block is freed by the sweep.
    @Test(arguments: [
        ("channel.receive.afterClaim", true),
        ("channel.loan.afterAdopt", true),
        ("", false), // killed holding the ReceivedMessage
    ])
    func aReceiverKilledAtEachStepOfTakingALoan(point: String, redelivered: Bool) throws {
        try withCleanNames("loankillrecv") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            try channel.blockingSend(message(31, count: 70_000))
            let child = try point.isEmpty
                ? Peer.spawn("loan-receive", name, "31")
                : Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "loan-receive", name, "31")
            defer { child.stop() }
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
                #expect(detail(name, "redeliveries") == 1, "\(details(name))")
            } else {
                #expect(try channel.tryReceive() == nil)
            }
            #expect(try blocksInUse(channel) == 0)
        }
    }

    /// Closed with loans in flight, the channel is drained as usual; removed (its last holder
    /// detaches), its loan heap goes with it, while a message still held stays readable.
    @Test func aChannelClosedAndRemovedWithLoansInFlight() throws {
        try withCleanNames("loanclose") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            let heapName = channel.loanHeapName
            for seed in 41...43 { try channel.blockingSend(message(seed, count: 20_000)) }
            let held = try channel.blockingReceiveInPlace()
            channel.close()
            expectError(.closed) { try channel.blockingSend(message(44, count: 20_000)) }
            #expect(try channel.blockingReceive() == message(42, count: 20_000))
            // One message is left in the ring; another process detaches; we detach last.
            let peer = try Channel<[UInt8]>.open(name: name)
            peer.detach()
            #expect(SharedMemory.exists(name: heapName))
            channel.detach()
            #expect(!SharedMemory.exists(name: name) && !SharedMemory.exists(name: heapName))
            #expect(held.bytes == message(41, count: 20_000), "a held message stays readable")
            try held.release()

            // Channel.remove takes the loan heap with it too, and `ipc rm` does the same.
            let kept = try Channel<[UInt8]>.create(name: name + "-kept", capacity: 2, maxMessageSize: 64, lifetime: .persistent)
            try kept.blockingSend(message(45, count: 10_000))
            kept.detach()
            #expect(SharedMemory.exists(name: name + "-kept~loans"))
            try Channel<[UInt8]>.remove(name: name + "-kept")
            #expect(!SharedMemory.exists(name: name + "-kept") && !SharedMemory.exists(name: name + "-kept~loans"))
        }
    }

    /// Children that die holding loans, again and again, in a loan heap with room for three: each
    /// still gets its loan (opening the heap and running out of room both sweep), so what the dead
    /// leave stays bounded.
    @Test func repeatedCrashesDoNotLeak() throws {
        try withCleanNames("loanleak") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            #expect(try channel.prepareLoans(capacity: 64 * 1024, maximumCapacity: 64 * 1024))
            #expect(try !channel.prepareLoans(capacity: 1 << 20, maximumCapacity: 1 << 20), "there is one already")
            for round in 0..<12 {
                let child = try Peer.spawn("loan-hold", name, "16000")
                defer { child.stop() }
                #expect(child.readLine() == "loaned", "round \(round)")
                child.kill(signal: SIGKILL)
                #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
                #expect(try blocksInUse(channel) <= 3, "round \(round)")
            }
            // And we still get three 16 KB loans at once.
            let loans = try (0..<3).map { _ in try channel.loan(byteCount: 16000).giveBackLater() }
            #expect(loans.count == 3)
        }
    }

    // MARK: Never trusting a peer

    /// A scribbled loan word or length in a slot is `corrupt` for the receiver (the message is
    /// dropped and counted), never a wild access; the channel goes on working.
    @Test func aScribbledLoanIsCorrupt() throws {
        try withCleanNames("loanscribble") { name in
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 4, maxMessageSize: 64)
            defer { channel.detach() }
            let slot0 = slotOffset(0, maxMessageSize: 64)
            let slot1 = slotOffset(1, maxMessageSize: 64)
            let slot2 = slotOffset(2, maxMessageSize: 64)
            try channel.blockingSend(message(51, count: 5000))
            try channel.blockingSend(message(52, count: 5000))
            try channel.blockingSend(message(53, count: 5000))
            scribble(name, at: slot0 + 24, bytes(of: UInt64(0xDEAD_BEEF_1234_5678)))  // a forged word
            scribble(name, at: slot1 + 16, bytes(of: UInt32(0x8000_0000 | 6_000_000)))  // longer than its block
            scribble(name, at: slot2 + 24, bytes(of: UInt64(0)))  // the null word
            expectError(.corrupt) { try channel.blockingReceive(timeout: .seconds(5)) }
            expectError(.corrupt) { _ = try channel.blockingReceiveInPlace(timeout: .seconds(5)) }
            expectError(.corrupt) { try channel.blockingReceive(timeout: .seconds(5)) }
            #expect(detail(name, "droppedMessages") == 3)
            try channel.blockingSend(message(54, count: 5000))
            #expect(try channel.blockingReceive(timeout: .seconds(5)) == message(54, count: 5000))
        }
    }
}

extension MessageLoan {
    /// Keeps the loan until the value that holds it goes (a test's way to hold several).
    consuming func giveBackLater() -> HeldLoan { HeldLoan(self) }
}

/// A class that holds a loan (so that an array can hold several).
final class HeldLoan {
    var loan: MessageLoan?
    init(_ loan: consuming MessageLoan) { self.loan = .some(loan) }
}

extension Channel where Message == [UInt8] {
    /// The next message, or nil if none comes within 300 ms.
    func blockingReceiveOrNil() throws(InterprocessError) -> [UInt8]? {
        do throws(InterprocessError) {
            return try blockingReceive(timeout: .milliseconds(300))
        } catch where error.code == .timedOut {
            return nil
        }
    }
}
