import ArgumentParser
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// One-way throughput from a producer process to a consumer process (this one): 64-byte, 4 KiB and
/// 1 MiB messages through a ``Channel`` (the copying send and receive), against a pipe, a Unix
/// stream socket pair and a POSIX message queue, in the same run.
///
/// Each measurement starts a producer (`ipc bench-peer stream-channel`, `stream-fd` or
/// `stream-mq`), waits until it is ready, says go and receives every message, checking each (its
/// first word is its number, its last word the complement: whole, in order, none missing); the
/// time runs from go to the last message. The variants take turns, size after size, run after run,
/// so that a change of load hits them alike; the median run is reported.
///
/// How each moves a message:
/// - `Channel`: one send per message on the producer's side, one receive per message here. 64-byte
///   messages are a 64-byte `BitwiseCopyable` value (`Channel<BenchMessage>`, copied raw), and also
///   `[UInt8]` (a new array per receive); 4 KiB and 1 MiB messages are `[UInt8]` in a
///   `Channel<[UInt8]>` whose slots hold one message (`maxMessageSize` = the message size).
/// - pipe and socketpair: one `write` per message (what a program that sends messages as they come
///   does); the consumer reads the stream in 64 KiB (1 MiB for 1 MiB messages) batches, its best case.
/// - POSIX message queue: one `mq_send` / `mq_receive` per message, capacity 10 (the default
///   `msg_max`); a message larger than `/proc/sys/fs/mqueue/msgsize_max` (8 KiB by default) is sent
///   in chunks of that size, so a 1 MiB message is 128 system calls on each side.
enum ChannelThroughputBench: BenchScenario {
    static let id = "channel-throughput"
    static let title = "one-way throughput, producer process → consumer process, by message size"
    static let summary = "Channel one-way throughput (64 B, 4 KiB, 1 MiB, copying) vs pipe, Unix socket, POSIX message queue"
    static let unit = "messages/s, one way"
    static let higherIsBetter = true
    static let baseline: String? = nil
    /// ≥ 10× the best of the three at 64 bytes: ≥ 10× each of them.
    static let targets = [
        BenchTarget("Channel 64 B (exclusive endpoints) / pipe 64 B", "channel-exclusive-64", over: "pipe-64", .atLeast(10)),
        BenchTarget("Channel 64 B (exclusive endpoints) / Unix socket 64 B", "channel-exclusive-64", over: "unix-socket-64", .atLeast(10)),
        BenchTarget("Channel 64 B (exclusive endpoints) / POSIX message queue 64 B", "channel-exclusive-64", over: "mqueue-64", .atLeast(10)),
    ]
    static let roles: [BenchRole] = [.streamChannel, .streamDescriptor, .streamQueue]

    /// The message sizes, in bytes.
    static let sizes = [64, 4096, 1 << 20]

    /// The variants: row id prefix, row name, and the channel's form for the size.
    enum Variant: CaseIterable {
        case channel, channelExclusive, channelBytes, pipe, socket, queue

        var id: String {
            switch self {
            case .channel: "channel"
            case .channelExclusive: "channel-exclusive"
            case .channelBytes: "channel-bytes"
            case .pipe: "pipe"
            case .socket: "unix-socket"
            case .queue: "mqueue"
            }
        }

        /// The variants measured at `size`: the raw-value channel only at 64 bytes (its message is
        /// a 64-byte value), the `[UInt8]` one at every size.
        static func at(_ size: Int) -> [Variant] {
            size == BenchMessage.size ? allCases : [.channelBytes, .pipe, .socket, .queue]
        }

        func name(_ size: Int, chunk: Int) -> String {
            let bytes = ChannelThroughputBench.label(size)
            switch self {
            case .channel: return "Channel<64-byte value>, \(bytes) messages"
            case .channelExclusive: return "Channel<64-byte value> through exclusive endpoints, \(bytes) messages"
            case .channelBytes: return "Channel<[UInt8]>, \(bytes) messages (slots of \(bytes))"
            case .pipe: return "pipe, \(bytes) messages (one write each)"
            case .socket: return "Unix socket (socketpair), \(bytes) messages (one write each)"
            case .queue:
                return size <= chunk
                    ? "POSIX message queue, \(bytes) messages"
                    : "POSIX message queue, \(bytes) messages in \(size / chunk) chunks of \(label(chunk))"
            }
        }
    }

    static func label(_ size: Int) -> String {
        size >= 1 << 20 ? "\(size >> 20) MiB" : size >= 1024 ? "\(size >> 10) KiB" : "\(size) B"
    }

    /// The row id of `variant` at `size`: "channel-64", "pipe-4096", "mqueue-1048576".
    static func row(_ variant: Variant, _ size: Int) -> String { "\(variant.id)-\(size)" }

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let chunk = PosixMessageQueue.largestMessage
        var rates: [String: [Double]] = [:]
        var correct = true
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.throughputRuns {
                for size in sizes {
                    let count = plan.throughputMessages(size)
                    for variant in Variant.at(size) {
                        let (seconds, ok) = try run(variant, size: size, count: count, chunk: chunk, session, control, plan)
                        rates[row(variant, size), default: []].append(Double(count) / seconds)
                        correct = correct && ok
                    }
                }
            }
        }
        scenario.correctness("every message arrived whole, in order, exactly once", correct)
        for size in sizes {
            for variant in Variant.at(size) {
                let summary = Summary(rates[row(variant, size)] ?? [])
                guard summary.count > 0 else { throw ToolError("\(row(variant, size)): no run completed") }
                scenario.rows.append(BenchRow(
                    id: row(variant, size), name: variant.name(size, chunk: chunk), median: summary.median,
                    samples: summary.count, min: summary.min, max: summary.max))
            }
        }
        for size in sizes {
            let best = [Variant.pipe, .socket, .queue].compactMap { scenario.row(row($0, size)) }.max { $0.median < $1.median }
            guard let best, let ours = scenario.row(row(.channelBytes, size)) else { continue }
            var line = "\(label(size)): best OS baseline \(best.id) at \(rateText(best.median, size)); Channel<[UInt8]> \(rateText(ours.median, size)) = "
                + String(format: "%.2f×", ours.median / best.median)
            if let raw = scenario.row(row(.channel, size)) {
                line += ", Channel<64-byte value> \(rateText(raw.median, size)) = " + String(format: "%.2f×", raw.median / best.median)
            }
            scenario.notes.append(line)
        }
        scenario.notes.append(
            "messages per run: " + sizes.map { "\(label($0)) \(plan.throughputMessages($0))" }.joined(separator: ", ")
                + "; \(plan.throughputRuns) run(s) per variant, in turns; channels of \(sizes.map { "\(channelCapacity($0))" }.joined(separator: " / ")) slots; "
                + "POSIX message queue chunks of \(label(chunk)) (msgsize_max)")
    }

    /// "12.3 M msg/s (787 MB/s)".
    static func rateText(_ messagesPerSecond: Double, _ size: Int) -> String {
        String(format: "%.3g M msg/s (%.3g GB/s)", messagesPerSecond / 1e6, messagesPerSecond * Double(size) / 1e9)
    }

    /// Slots of the channel for `size`-byte messages: 256 KiB of messages, at most 1,024 slots (a
    /// pipe holds 1,024 64-byte messages), at least 4.
    static func channelCapacity(_ size: Int) -> Int { max(4, min(1024, (256 << 10) / size)) }

    /// The names of a session's channels (one per size and form) and message queue.
    static func channelName(session: String, size: Int, raw: Bool) -> String { session + "-tp\(raw ? "v" : "b")\(size)" }
    static func queueName(session: String) -> String { "/" + session + "-tpq" }

    /// One measurement: starts a producer of `count` messages of `size` bytes through `variant`,
    /// receives them all, checks them; the seconds from go to the last one.
    private static func run(
        _ variant: Variant, size: Int, count: Int, chunk: Int, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan
    ) throws -> (seconds: Double, correct: Bool) {
        control.clear()
        let peers = session.peers
        defer { peers.killAll() }
        let sessionName = session.name.description
        let common = ["--count", "\(count)", "--bytes", "\(size)"]
        let deadline = Deadline(after: plan.stepTimeout)
        var consume: () throws -> Bool
        var rescue: @Sendable () -> Void = {}
        var cleanup: () -> Void = {}
        switch variant {
        case .channel:
            let channel = try Channel<BenchMessage>.create(name: channelName(session: sessionName, size: size, raw: true), capacity: channelCapacity(size))
            cleanup = { channel.detach() }
            rescue = { channel.close() }
            try peers.spawn(.streamChannel, segment: session.name, common + ["--parties", "1"])
            consume = { try StreamCheck.receiveValues(channel, count: count, timeout: plan.stepTimeout) }
        case .channelExclusive:
            let channel = try Channel<BenchMessage>.create(name: channelName(session: sessionName, size: size, raw: true), capacity: channelCapacity(size))
            cleanup = { channel.detach() }
            rescue = { channel.close() }
            try peers.spawn(.streamChannel, segment: session.name, common + ["--parties", "3"])
            consume = { try StreamCheck.receiveValuesExclusively(channel, count: count, timeout: plan.stepTimeout) }
        case .channelBytes:
            let channel = try Channel<[UInt8]>.create(
                name: channelName(session: sessionName, size: size, raw: false), capacity: channelCapacity(size), maxMessageSize: size)
            cleanup = { channel.detach() }
            rescue = { channel.close() }
            try peers.spawn(.streamChannel, segment: session.name, common + ["--parties", "2"])
            consume = { try StreamCheck.receiveBytes(channel, size: size, count: count, timeout: plan.stepTimeout) }
        case .pipe:
            let pipe = try BenchIO.pipe()
            try peers.spawn(.streamDescriptor, segment: session.name, common + ["--out", "\(pipe.write.fd)"], passing: [pipe.write])
            consume = { try StreamCheck.readStream(pipe.read.fd, size: size, count: count) }
        case .socket:
            let pair = try BenchIO.socketPair()
            try peers.spawn(.streamDescriptor, segment: session.name, common + ["--out", "\(pair.1.fd)"], passing: [pair.1])
            consume = { try StreamCheck.readStream(pair.0.fd, size: size, count: count) }
        case .queue:
            let queue = try PosixMessageQueue.create(name: queueName(session: sessionName), capacity: PosixMessageQueue.usableDepth, messageSize: min(size, chunk))
            cleanup = { queue.close(); queue.unlink() }
            rescue = {
                // A short message ends the consumer's loop with an error.
                var quit: UInt8 = 0
                try? withUnsafeBytes(of: &quit) { try queue.send($0) }
            }
            try peers.spawn(.streamQueue, segment: session.name, common)
            consume = { try StreamCheck.receiveQueue(queue, size: size, chunk: min(size, chunk), count: count) }
        }
        defer { cleanup() }
        try peers.awaitReady(control, count: 1, deadline: deadline)
        let watchdog = Watchdog(peers: peers.children, deadline: deadline, rescue: rescue)
        let start = BenchClock.now()
        control.sayGo()
        let correct: Bool
        do {
            defer { watchdog.disarm() }
            correct = try consume()
        }
        let elapsed = BenchClock.now() &- start
        try watchdog.check(row(variant, size))
        control.releaseProducers()
        try peers.finish(deadline: deadline)
        return (Double(elapsed) / 1e9, correct)
    }
}

extension BenchPlan {
    /// Messages per run, by size.
    func throughputMessages(_ size: Int) -> Int {
        switch size {
        case ...64: quick ? 20_000 : 400_000
        case ...4096: quick ? 2_000 : 40_000
        default: quick ? 8 : 160
        }
    }

    /// Runs per variant and size.
    var throughputRuns: Int { quick ? 1 : 5 }
}

/// The consumer's side: receives and checks every message. A message of `size` bytes number `n`
/// holds `n` in its first 8 bytes and `~n` in its last 8; a message from producer `p` (of several)
/// is numbered `p << 40 | n`.
enum StreamCheck {
    /// Whether the message at `bytes` (of at least 16 bytes) is whole and numbered `number`.
    @inline(__always)
    static func isWhole(_ bytes: UnsafeRawPointer, size: Int, number: UInt64) -> Bool {
        bytes.loadUnaligned(as: UInt64.self) == number && bytes.loadUnaligned(fromByteOffset: size - 8, as: UInt64.self) == ~number
    }

    /// Stamps `number` into the message at `bytes`.
    @inline(__always)
    static func stamp(_ bytes: UnsafeMutableRawPointer, size: Int, number: UInt64) {
        bytes.storeBytes(of: number, as: UInt64.self)
        bytes.storeBytes(of: ~number, toByteOffset: size - 8, as: UInt64.self)
    }

    static func receiveValues(_ channel: Channel<BenchMessage>, count: Int, timeout: Duration) throws -> Bool {
        var correct = true
        for number in 0..<UInt64(count) {
            let message = try channel.blockingReceive(timeout: timeout)
            if message.sequence != number || !message.isWhole { correct = false }
        }
        return correct
    }

    static func receiveValuesExclusively(_ channel: Channel<BenchMessage>, count: Int, timeout: Duration) throws -> Bool {
        var receiver = try channel.exclusiveReceiver()
        var correct = true
        for number in 0..<UInt64(count) {
            let message = try receiver.blockingReceive(timeout: timeout)
            if message.sequence != number || !message.isWhole { correct = false }
        }
        return correct
    }

    static func receiveBytes(_ channel: Channel<[UInt8]>, size: Int, count: Int, timeout: Duration) throws -> Bool {
        var correct = true
        for number in 0..<UInt64(count) {
            let message = try channel.blockingReceive(timeout: timeout)
            let whole = message.withUnsafeBytes { $0.count == size && isWhole($0.baseAddress!, size: size, number: number) }
            if !whole { correct = false }
        }
        return correct
    }

    /// Reads `count` messages of `size` bytes from a stream, in batches of whole messages.
    static func readStream(_ fd: Int32, size: Int, count: Int) throws -> Bool {
        let perBatch = max(1, (64 << 10) / size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: perBatch * size, alignment: 16)
        defer { buffer.deallocate() }
        var correct = true
        var number: UInt64 = 0
        var left = count
        while left > 0 {
            let messages = min(perBatch, left)
            guard try BenchIO.readMessage(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<(messages * size)])) else {
                throw ToolError("the producer closed its end after \(count - left) messages")
            }
            for index in 0..<messages {
                if !isWhole(buffer.baseAddress! + index * size, size: size, number: number) { correct = false }
                number &+= 1
            }
            left -= messages
        }
        return correct
    }

    /// Receives `count` messages of `size` bytes, each in `size / chunk` chunks (at least one).
    static func receiveQueue(_ queue: PosixMessageQueue, size: Int, chunk: Int, count: Int) throws -> Bool {
        let chunks = max(1, size / chunk)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        var correct = true
        for number in 0..<UInt64(count) {
            for index in 0..<chunks {
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[(index * chunk)..<((index + 1) * chunk)])
                guard try queue.receive(into: part) == chunk else { throw ToolError("a message queue message of the wrong length") }
            }
            if !isWhole(buffer.baseAddress!, size: size, number: number) { correct = false }
        }
        return correct
    }
}

extension BenchRole {
    /// Sends `--count` messages of `--bytes` bytes on the session's channel for that size, after go:
    /// raw 64-byte values with `--parties 1` (`3`: through the exclusive sender), `[UInt8]` with `--parties 2`. With `--slot P`, numbers
    /// them `P << 40 | n` (one of several producers).
    static let streamChannel = BenchRole("stream-channel") { peer in
        try peer.withControl { control, session in
            let count = peer.count, size = peer.bytes, first = UInt64(peer.slot) << 40
            if peer.parties == 3 {
                // Through the exclusive sender.
                let channel = try Channel<BenchMessage>.open(name: ChannelThroughputBench.channelName(session: session, size: size, raw: true))
                defer { channel.detach() }
                var sender = try channel.exclusiveSender()
                control.markReady()
                try control.awaitGo(deadline: Deadline(after: .seconds(60)))
                for number in 0..<UInt64(count) { try sender.blockingSend(BenchMessage(first | number)) }
                try control.awaitRelease()
            } else if peer.parties == 1 {
                let channel = try Channel<BenchMessage>.open(name: ChannelThroughputBench.channelName(session: session, size: size, raw: true))
                defer { channel.detach() }
                control.markReady()
                try control.awaitGo(deadline: Deadline(after: .seconds(60)))
                for number in 0..<UInt64(count) { try channel.blockingSend(BenchMessage(first | number)) }
                try control.awaitRelease()
            } else {
                let channel = try Channel<[UInt8]>.open(name: ChannelThroughputBench.channelName(session: session, size: size, raw: false))
                defer { channel.detach() }
                var message = [UInt8](repeating: 0x5A, count: size)
                control.markReady()
                try control.awaitGo(deadline: Deadline(after: .seconds(60)))
                for number in 0..<UInt64(count) {
                    message.withUnsafeMutableBytes { StreamCheck.stamp($0.baseAddress!, size: size, number: first | number) }
                    try channel.blockingSend(message)
                }
                try control.awaitRelease()
            }
        }
    }

    /// Writes `--count` messages of `--bytes` bytes to `--out` (a pipe or a socket), one write each, after go.
    static let streamDescriptor = BenchRole("stream-fd") { peer in
        try peer.withControl { control, _ in
            let size = peer.bytes, output = peer.output
            guard output >= 0 else { throw ValidationError("stream-fd needs --out") }
            let message = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { message.deallocate() }
            message.initializeMemory(as: UInt8.self, repeating: 0x5A)
            control.markReady()
            try control.awaitGo(deadline: Deadline(after: .seconds(60)))
            for number in 0..<UInt64(peer.count) {
                StreamCheck.stamp(message.baseAddress!, size: size, number: number)
                try BenchIO.writeMessage(output, UnsafeRawBufferPointer(message))
            }
            try control.awaitRelease()
        }
    }

    /// Sends `--count` messages of `--bytes` bytes on the session's POSIX message queue, after go,
    /// each in chunks of the queue's largest message.
    static let streamQueue = BenchRole("stream-mq") { peer in
        try peer.withControl { control, session in
            let size = peer.bytes
            let chunk = min(size, PosixMessageQueue.largestMessage)
            let queue = try PosixMessageQueue.open(name: ChannelThroughputBench.queueName(session: session))
            defer { queue.close() }
            let message = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { message.deallocate() }
            message.initializeMemory(as: UInt8.self, repeating: 0x5A)
            control.markReady()
            try control.awaitGo(deadline: Deadline(after: .seconds(60)))
            for number in 0..<UInt64(peer.count) {
                StreamCheck.stamp(message.baseAddress!, size: size, number: number)
                for index in 0..<max(1, size / chunk) {
                    try queue.send(UnsafeRawBufferPointer(rebasing: message[(index * chunk)..<((index + 1) * chunk)]))
                }
            }
            try control.awaitRelease()
        }
    }
}

extension BenchControl {
    /// A producer that sent everything waits here until the consumer has received it all (the
    /// watchdog takes a peer that ends for one that failed); throws after a minute.
    func awaitRelease() throws {
        let stop = base + BenchLayout.stop
        let deadline = Deadline(after: .seconds(60))
        while !shouldStop {
            if Futex.wait(stop, expected: 0, deadline: deadline) == .timedOut { throw ToolError("the consumer never finished") }
        }
    }

    /// Lets the producers that wait in ``awaitRelease()`` end.
    func releaseProducers() {
        sayStop()
        Futex.wakeAll(base + BenchLayout.stop)
    }
}

extension BenchPeer {
    /// Opens the bench's segment (`--segment`) and runs `body` with its control words and name, for
    /// roles that also need the peer's other options (`--bytes`).
    func withControl(_ body: (BenchControl, String) throws -> Void) throws {
        guard let segment else { throw ValidationError("\(role.name) needs --segment") }
        let memory = try SharedMemory.open(name: segment)
        defer { memory.close() }
        guard memory.size >= BenchLayout.size else { throw ToolError("\(segment) is not a bench segment") }
        try memory.withUnsafeMutableBytes { buffer in try body(BenchControl(base: buffer.baseAddress!), memory.name) }
    }
}
