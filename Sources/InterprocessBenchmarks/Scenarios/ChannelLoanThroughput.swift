#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// One-way throughput of 1 MiB messages between two processes: a ``Channel`` with the loan API (the
/// sender loans the buffer in the channel's loan heap and sends it; the receiver reads it in place
/// and gives it back: no copy), against a pipe, a Unix socket pair and a POSIX message queue in the
/// same run. Every message carries its sequence number in its first and last 8 bytes, which the
/// receiver checks; the kernel baselines copy the whole message in and out, the loan moves only
/// the pointer. A POSIX message queue holds at most `/proc/sys/fs/mqueue/msgsize_max` bytes per
/// message, so a 1 MiB message goes as chunks of that size (read back into one buffer). Two more
/// rows for context, without targets: the loan API with the sender writing every byte of each
/// message, and a plain `send` / `receive` of `[UInt8]` (which goes through the loan heap too, but
/// copies the message in and out).
enum ChannelLoanThroughputBench: BenchScenario {
    static let id = "channel-loan-throughput"
    static let title = "one-way throughput of 1 MiB messages: channel loans vs the kernel's message passing"
    static let summary = "Channel loans (zero copy, 1 MiB) vs pipe, Unix socket, POSIX message queue"
    static let unit = "bytes/s, one way"
    static let higherIsBetter = true
    static let baseline: String? = "socketpair"
    static let targets = [
        BenchTarget("Channel loans / pipe", "channel-loan", over: "pipe", .atLeast(5)),
        BenchTarget("Channel loans / Unix socket", "channel-loan", over: "socketpair", .atLeast(5)),
        BenchTarget("Channel loans / POSIX message queue", "channel-loan", over: "mqueue", .atLeast(5)),
    ]
    static let roles: [BenchRole] = [.loanSinkChannel, .loanSinkStream, .loanSinkQueue]

    /// The size of every message.
    static let messageSize = 1 << 20

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let names = LoanNames(session: session.name.description)
        let chunk = PosixMessageQueue.largestMessage
        let channel = try Channel<[UInt8]>.create(name: names.channel, capacity: 8, maxMessageSize: 64)
        defer { channel.detach() }
        // Room for every message in flight, so that no run grows the heap.
        try channel.prepareLoans(capacity: 16 << 20, maximumCapacity: 64 << 20)
        let queue = try PosixMessageQueue.create(name: names.queue, capacity: PosixMessageQueue.usableDepth, messageSize: chunk)
        defer { queue.close(); queue.unlink() }
        let done = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pongSemaphore, value: 0)
        let count = plan.loanMessages
        var rates: [String: [Double]] = [:]
        var correct = true
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let pipe = try BenchIO.pipe()
            let pair = try BenchIO.socketPair()
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.loanSinkChannel, segment: session.name, ["--count", "\(count)"])
            try peers.spawn(.loanSinkQueue, segment: session.name, ["--count", "\(count)"])
            try peers.spawn(.loanSinkStream, segment: session.name, ["--count", "\(count)", "--in", "\(pipe.read.fd)"], passing: [pipe.read])
            try peers.spawn(.loanSinkStream, segment: session.name, ["--count", "\(count)", "--in", "\(pair.1.fd)"], passing: [pair.1])
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 4, deadline: deadline)

            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: messageSize, alignment: 64)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
            func run(_ id: String, _ send: (UInt64) throws -> Void) throws {
                let start = BenchClock.now()
                for sequence in 1...UInt64(count) { try send(sequence) }
                // The peer signals once it has received and checked every message of the run.
                try done.blockingWait(timeout: .nanoseconds(Int64(clamping: deadline.remainingNanoseconds)))
                let seconds = Double(BenchClock.now() &- start) / 1e9
                rates[id, default: []].append(Double(count * messageSize) / seconds)
                if control.word(BenchLayout.stop).pointee.load(ordering: .acquiring) != 0 { correct = false }
            }
            for _ in 0..<plan.loanRuns {
                try run("channel-loan") { sequence in
                    let loan = try channel.loan(byteCount: messageSize)
                    loan.withUnsafeMutableBytes { LoanNames.stamp($0, sequence) }
                    try channel.blockingSend(loan)
                }
                try run("pipe") { sequence in
                    LoanNames.stamp(buffer, sequence)
                    try BenchIO.writeMessage(pipe.write.fd, UnsafeRawBufferPointer(buffer))
                }
                try run("socketpair") { sequence in
                    LoanNames.stamp(buffer, sequence)
                    try BenchIO.writeMessage(pair.0.fd, UnsafeRawBufferPointer(buffer))
                }
                try run("mqueue") { sequence in
                    LoanNames.stamp(buffer, sequence)
                    var offset = 0
                    while offset < messageSize {
                        let length = min(chunk, messageSize - offset)
                        try queue.send(UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + length)]))
                        offset += length
                    }
                }
                try run("channel-loan-filled") { sequence in
                    let loan = try channel.loan(byteCount: messageSize)
                    loan.withUnsafeMutableBytes { bytes in
                        bytes.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: sequence))
                        LoanNames.stamp(bytes, sequence)
                    }
                    try channel.blockingSend(loan)
                }
                try run("channel-copy") { sequence in
                    LoanNames.stamp(buffer, sequence)
                    try channel.blockingSend(Array(buffer))
                }
            }
            channel.close()
            pipe.write.close()
            pair.0.close()
            try queue.send(UnsafeRawBufferPointer(rebasing: buffer[0..<1]))  // a 1-byte message ends the queue's peer
            try peers.finish(deadline: deadline)
        }
        scenario.correctness("every message arrived whole and in order", correct)

        for (id, name) in [
            ("channel-loan", "Channel, loan API (1 MiB loaned, sequence stamped, sent; read in place)"),
            ("pipe", "pipe (1 MiB written, read into a buffer)"),
            ("socketpair", "Unix socket (socketpair; 1 MiB written, read into a buffer)"),
            ("mqueue", "POSIX message queue (1 MiB as \(chunk)-byte messages, read into one buffer)"),
            ("channel-loan-filled", "Channel, loan API, the sender writing all 1 MiB of each message"),
            ("channel-copy", "Channel, plain send / receive of a 1 MiB [UInt8] (through the loan heap, copied in and out)"),
        ] {
            let summary = Summary(rates[id] ?? [])
            guard summary.count > 0 else { throw ToolError("\(id): no run completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.notes.append(
            "\(count) messages of 1 MiB per run, median of \(plan.loanRuns) run(s) per variant (variants take turns); "
                + "a run ends when the receiver has checked every message; channel of 8 slots; "
                + "POSIX message queue messages of \(chunk) bytes (/proc/sys/fs/mqueue/msgsize_max), \(PosixMessageQueue.usableDepth) deep")
    }
}

extension BenchPlan {
    /// Messages per run, and runs per variant.
    var loanMessages: Int { quick ? 64 : 512 }
    var loanRuns: Int { quick ? 1 : 5 }
}

/// The scenario's names, made from the bench segment's name, and what both sides share.
struct LoanNames {
    let channel: String
    let queue: String

    init(session: String) {
        channel = session + "-loans"
        queue = "/" + session + "-lq"
    }

    /// Writes `sequence` into the first 8 bytes and its complement into the last 8.
    @inline(__always)
    static func stamp(_ bytes: UnsafeMutableRawBufferPointer, _ sequence: UInt64) {
        bytes.storeBytes(of: sequence, toByteOffset: 0, as: UInt64.self)
        bytes.storeBytes(of: ~sequence, toByteOffset: bytes.count - 8, as: UInt64.self)
    }

    /// Whether `bytes` carries `sequence` as ``stamp(_:_:)`` wrote it.
    @inline(__always)
    static func carries(_ bytes: UnsafeRawBufferPointer, _ sequence: UInt64) -> Bool {
        bytes.count == ChannelLoanThroughputBench.messageSize
            && bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == sequence
            && bytes.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self) == ~sequence
    }
}

extension BenchRole {
    static let loanSinkChannel = BenchRole.inSegment("loan-sink-channel") { try $0.loanSinkChannel() }
    static let loanSinkStream = BenchRole.inSegment("loan-sink-stream") { try $0.loanSinkStream() }
    static let loanSinkQueue = BenchRole.inSegment("loan-sink-queue") { try $0.loanSinkQueue() }
}

// MARK: - The receiving side (`ipc bench-peer loan-sink-channel`, `loan-sink-stream`, `loan-sink-queue`)

extension PeerWork {
    /// After each `--count` messages checked, signals the bench's semaphore; a message out of
    /// order or damaged sets the stop word (the run is then reported incorrect).
    private func runs(_ receive: (UInt64) throws -> Bool?) throws {
        let done = try ProcessSemaphore.open(in: memory, at: BenchLayout.pongSemaphore)
        control.markReady()
        var sequence: UInt64 = 1
        while true {
            guard let whole = try receive(sequence) else { return }
            if !whole { control.sayStop() }
            if sequence == UInt64(count) {
                sequence = 1
                try done.signal()
            } else {
                sequence += 1
            }
        }
    }

    /// Receives the channel's messages: loans in place (given back at once), plain sends copied out.
    func loanSinkChannel() throws {
        let channel = try Channel<[UInt8]>.open(name: LoanNames(session: memory.name).channel)
        defer { channel.detach() }
        try runs { sequence in
            do throws(InterprocessError) {
                return try Self.receiveInPlace(channel, sequence)
            } catch where error.code == .closed {
                return nil
            }
        }
    }

    /// Receives one message in place; whether it carries `sequence`. (Its block goes back here.)
    private static func receiveInPlace(_ channel: Channel<[UInt8]>, _ sequence: UInt64) throws(InterprocessError) -> Bool {
        let message = try channel.blockingReceiveInPlace()
        return message.withUnsafeBytes { LoanNames.carries($0, sequence) }
    }

    /// Reads 1 MiB messages from `--in` (a pipe or a socket) into a buffer, until end of file.
    func loanSinkStream() throws {
        guard input >= 0 else { throw ToolError("--in is required") }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ChannelLoanThroughputBench.messageSize, alignment: 64)
        defer { buffer.deallocate() }
        try runs { sequence in
            guard try BenchIO.readMessage(input, into: buffer) else { return nil }
            return LoanNames.carries(UnsafeRawBufferPointer(buffer), sequence)
        }
    }

    /// Receives the queue's chunks into one 1 MiB buffer, until a 1-byte message comes.
    func loanSinkQueue() throws {
        let queue = try PosixMessageQueue.open(name: LoanNames(session: memory.name).queue)
        defer { queue.close() }
        let chunk = PosixMessageQueue.largestMessage
        let size = ChannelLoanThroughputBench.messageSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size + chunk, alignment: 64)
        defer { buffer.deallocate() }
        try runs { sequence in
            var offset = 0
            while offset < size {
                let n = try queue.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + chunk)]))
                if n == 1 && offset == 0 { return nil }
                offset += n
            }
            return LoanNames.carries(UnsafeRawBufferPointer(rebasing: buffer[0..<size]), sequence)
        }
    }
}
