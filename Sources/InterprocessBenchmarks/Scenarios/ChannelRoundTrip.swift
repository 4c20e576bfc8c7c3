import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// A 64-byte round trip between two processes through two ``Channel``s (one each way), against the
/// floor (both processes spinning on one atomic word), a ``ProcessSemaphore`` pair (the same
/// waiting without a message: what the channel adds to it) and the operating system's message
/// passing: a pipe pair, a Unix stream socket pair and a pair of POSIX message queues, 64 bytes
/// each way.
/// Every round trip is timed on its own; the variants take turns in chunks, round after round (the
/// ping-pong scenario's runner and floor), so that a change in where the scheduler puts the
/// processes hits every variant alike. Between its chunks a peer waits in its receive (parked).
enum ChannelRoundTripBench: BenchScenario {
    static let id = "channel-round-trip"
    static let title = "64-byte round trip between two processes through two channels"
    static let summary = "Channel pair (64-byte values; shared, and through exclusive endpoints) vs spinning floor, ProcessSemaphore, pipe, Unix socket, POSIX message queue"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "floor-spin"
    static let targets = [
        BenchTarget("Channel (exclusive endpoints) / floor", "channel-exclusive", over: "floor-spin", .atMost(2)),
        BenchTarget("pipe / Channel (exclusive endpoints)", "pipe", over: "channel-exclusive", .atLeast(50)),
        BenchTarget("Unix socket / Channel (exclusive endpoints)", "unix-socket", over: "channel-exclusive", .atLeast(50)),
        BenchTarget("POSIX message queue / Channel (exclusive endpoints)", "mqueue", over: "channel-exclusive", .atLeast(50)),
    ]
    // The floor's and the semaphores' peers are the ping-pong scenario's (`pong-spin`, `pong-semaphore`).
    static let roles: [BenchRole] = [.pongChannel, .pongExclusive, .pongMessage, .pongQueue]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let names = ChannelNames(session: session.name.description)
        let ping = try Channel<BenchMessage>.create(name: names.ping, capacity: 16)
        defer { ping.detach() }
        let pong = try Channel<BenchMessage>.create(name: names.pong, capacity: 16)
        defer { pong.detach() }
        let pingExclusive = try Channel<BenchMessage>.create(name: names.ping + "x", capacity: 16)
        defer { pingExclusive.detach() }
        let pongExclusive = try Channel<BenchMessage>.create(name: names.pong + "x", capacity: 16)
        defer { pongExclusive.detach() }
        let pingQueue = try PosixMessageQueue.create(name: names.pingQueue, capacity: 8, messageSize: BenchMessage.size)
        defer { pingQueue.close(); pingQueue.unlink() }
        let pongQueue = try PosixMessageQueue.create(name: names.pongQueue, capacity: 8, messageSize: BenchMessage.size)
        defer { pongQueue.close(); pongQueue.unlink() }

        let pingSemaphore = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pingSemaphore, value: 0)
        let pongSemaphore = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pongSemaphore, value: 0)
        var samples: [String: [UInt64]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let floorWord = atomic32(base + BenchLayout.floorWord)
            floorWord.initialize(to: Atomic(0))
            let toPipePeer = try BenchIO.pipe()
            let fromPipePeer = try BenchIO.pipe()
            let sockets = try BenchIO.socketPair()
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.pongSpin, segment: session.name)
            try peers.spawn(.pongChannel, segment: session.name)
            try peers.spawn(.pongExclusive, segment: session.name)
            try peers.spawn(.pongSemaphore, segment: session.name)
            try peers.spawn(.pongQueue, segment: session.name)
            try peers.spawn(
                .pongMessage, segment: session.name, ["--in", "\(toPipePeer.read.fd)", "--out", "\(fromPipePeer.write.fd)"],
                passing: [toPipePeer.read, fromPipePeer.write])
            try peers.spawn(
                .pongMessage, segment: session.name, ["--in", "\(sockets.1.fd)", "--out", "\(sockets.1.fd)"], passing: [sockets.1])
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 7, deadline: deadline)

            let watchdog = Watchdog(peers: peers.children, deadline: deadline) { [pongQueue] in
                // Release a side that waits for an answer that will not come.
                pong.close()
                pongExclusive.close()
                try? pongSemaphore.signal()
                var empty = BenchMessage()
                try? withUnsafeBytes(of: &empty) { try pongQueue.send(UnsafeRawBufferPointer(rebasing: $0[..<1])) }
            }
            var spin = SpinRoundTrip(word: floorWord, watchdog: watchdog)
            var channels = ChannelPairRoundTrip(ping: ping, pong: pong)
            var exclusive = ExclusivePairRoundTrip(
                ends: ExclusiveEnds(sender: try pingExclusive.exclusiveSender(), receiver: try pongExclusive.exclusiveReceiver()),
                ping: pingExclusive)
            var semaphores = SemaphoreRoundTrip(ping: pingSemaphore, pong: pongSemaphore, control: control)
            var pipes = MessagePipeRoundTrip(output: toPipePeer.write, input: fromPipePeer.read)
            var socket = MessagePipeRoundTrip(output: sockets.0, input: sockets.0)
            var queues = MessageQueueRoundTrip(ping: pingQueue, pong: pongQueue)
            do {
                defer { watchdog.disarm() }
                for _ in 0..<plan.pingPongRounds {
                    try PingPongBench.chunk(&spin, plan, watchdog, into: &samples["floor-spin", default: []])
                    try PingPongBench.chunk(&channels, plan, watchdog, into: &samples["channel", default: []])
                    try PingPongBench.chunk(&exclusive, plan, watchdog, into: &samples["channel-exclusive", default: []])
                    try PingPongBench.chunk(&semaphores, plan, watchdog, into: &samples["semaphore", default: []])
                    try PingPongBench.chunk(&pipes, plan, watchdog, into: &samples["pipe", default: []])
                    try PingPongBench.chunk(&socket, plan, watchdog, into: &samples["unix-socket", default: []])
                    try PingPongBench.chunk(&queues, plan, watchdog, into: &samples["mqueue", default: []])
                }
            }
            spin.finish()
            try channels.finish()
            exclusive.finish()
            try semaphores.finish()
            pipes.finish()
            socket.finish()
            try queues.finish()
            try peers.finish(deadline: deadline)
            scenario.correctness("every answer was the message sent", channels.correct && exclusive.correct && pipes.correct && socket.correct && queues.correct)
        }

        let rows = [
            ("floor-spin", "floor: spin on one atomic word (pause)"),
            ("channel", "Channel pair (64-byte BitwiseCopyable values, blocking send and receive)"),
            ("channel-exclusive", "Channel pair through exclusive endpoints (ExclusiveSender / ExclusiveReceiver)"),
            ("semaphore", "ProcessSemaphore pair (no message: the wake-up alone)"),
            ("pipe", "pipe round trip (2 pipes, 64 bytes each way)"),
            ("unix-socket", "Unix domain socket round trip (socketpair, 64 bytes each way)"),
            ("mqueue", "POSIX message queue round trip (2 queues, 64-byte messages)"),
        ]
        for (id, name) in rows {
            let summary = Summary((samples[id] ?? []).map { Double($0) })
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.pingPongRounds) round(s) of chunks per variant, "
                + "each chunk \(plan.pingPongWarmup) warm-up round trips then up to \(plan.pingPongSamples) samples "
                + "or \(plan.pingPongBudget / 1_000_000) ms (the ping-pong scenario's amounts); channels of 16 slots")
    }
}

/// The message of the round trip: 64 bytes, copied raw.
struct BenchMessage: BitwiseCopyable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    static let size = MemoryLayout<BenchMessage>.size

    init() {}

    init(_ sequence: UInt64) {
        words = (sequence, ~sequence, sequence, ~sequence, sequence, ~sequence, sequence, ~sequence)
    }

    var sequence: UInt64 { words.0 }
    var isWhole: Bool { words.1 == ~words.0 && words.7 == ~words.0 && words.4 == words.0 }
}

/// The names of the scenario's channels and message queues, made from the bench segment's name.
struct ChannelNames {
    let ping: String
    let pong: String
    let pingQueue: String
    let pongQueue: String

    init(session: String) {
        ping = session + "-cping"
        pong = session + "-cpong"
        pingQueue = "/" + session + "-qping"
        pongQueue = "/" + session + "-qpong"
    }
}

/// A ping sent on one channel, its echo received on the other.
struct ChannelPairRoundTrip: RoundTrip {
    let ping: Channel<BenchMessage>
    let pong: Channel<BenchMessage>
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        try ping.blockingSend(BenchMessage(sequence))
        let answer = try pong.blockingReceive()
        if answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// Closing the ping channel ends the peer's loop.
    func finish() throws {
        ping.close()
    }
}

/// The exclusive endpoints of one side of the round trip (a class, so that the round trip, which
/// the bench's chunks copy, can hold the non-copyable endpoints). Only the measuring thread uses
/// them, one call at a time: `@exclusivity(unchecked)` spares each sample the runtime's access
/// bookkeeping (a `swift_beginAccess` / `swift_endAccess` pair around every send and receive, which
/// the peer, holding its endpoints in local variables, does not pay either).
final class ExclusiveEnds {
    @exclusivity(unchecked) var sender: ExclusiveSender<BenchMessage>
    @exclusivity(unchecked) var receiver: ExclusiveReceiver<BenchMessage>

    init(sender: consuming ExclusiveSender<BenchMessage>, receiver: consuming ExclusiveReceiver<BenchMessage>) {
        self.sender = sender
        self.receiver = receiver
    }
}

/// A ping sent through the exclusive sender of one channel, its echo received through the
/// exclusive receiver of the other (the peer holds the other two roles).
struct ExclusivePairRoundTrip: RoundTrip {
    let ends: ExclusiveEnds
    let ping: Channel<BenchMessage>
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        try ends.sender.blockingSend(BenchMessage(sequence))
        let answer = try ends.receiver.blockingReceive()
        if answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// Closing the ping channel ends the peer's loop.
    func finish() {
        ping.close()
    }
}

/// 64 bytes written, 64 bytes read back (a pipe pair, or one end of a socket pair).
struct MessagePipeRoundTrip: RoundTrip {
    let output: BenchDescriptor
    let input: BenchDescriptor
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        var message = BenchMessage(sequence)
        try withUnsafeBytes(of: &message) { try BenchIO.writeMessage(output.fd, $0) }
        var answer = BenchMessage()
        guard try withUnsafeMutableBytes(of: &answer, { try BenchIO.readMessage(input.fd, into: $0) }) else {
            throw ToolError("the peer closed its end")
        }
        if answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// Closing our write end ends the peer's loop.
    func finish() {
        output.close()
    }
}

/// A message sent on one POSIX message queue, its echo received on the other.
struct MessageQueueRoundTrip: RoundTrip {
    let ping: PosixMessageQueue
    let pong: PosixMessageQueue
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        var message = BenchMessage(sequence)
        try withUnsafeBytes(of: &message) { try ping.send($0) }
        var answer = BenchMessage()
        let count = try withUnsafeMutableBytes(of: &answer) { try pong.receive(into: $0) }
        if count != BenchMessage.size || answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// A 1-byte message ends the peer's loop.
    func finish() throws {
        var quit: UInt8 = 0
        try withUnsafeBytes(of: &quit) { try ping.send($0) }
    }
}

extension BenchRole {
    static let pongChannel = BenchRole.inSegment("pong-channel") { try $0.pongChannel() }
    static let pongExclusive = BenchRole.inSegment("pong-exclusive") { try $0.pongExclusive() }
    static let pongMessage = BenchRole.inSegment("pong-message") { try $0.pongMessages() }
    static let pongQueue = BenchRole.inSegment("pong-queue") { try $0.pongQueue() }
}

// MARK: - The answering side (`ipc bench-peer pong-channel`, `pong-message`, `pong-queue`)

extension PeerWork {
    /// Sends back every message of the ping channel on the pong channel, until the ping channel is closed.
    func pongChannel() throws {
        let names = ChannelNames(session: memory.name)
        let ping = try Channel<BenchMessage>.open(name: names.ping)
        defer { ping.detach() }
        let pong = try Channel<BenchMessage>.open(name: names.pong)
        defer { pong.detach() }
        control.markReady()
        while true {
            let message: BenchMessage
            switch Result(catching: { () throws(InterprocessError) in try ping.blockingReceive() }) {
            case .success(let received): message = received
            case .failure(let error) where error.code == .closed: return
            case .failure(let error): throw error
            }
            try pong.blockingSend(message)
        }
    }

    /// ``pongChannel()`` through exclusive endpoints: the receiver of the ping channel, the sender
    /// of the pong channel.
    func pongExclusive() throws {
        let names = ChannelNames(session: memory.name)
        let ping = try Channel<BenchMessage>.open(name: names.ping + "x")
        defer { ping.detach() }
        let pong = try Channel<BenchMessage>.open(name: names.pong + "x")
        defer { pong.detach() }
        var receiver = try ping.exclusiveReceiver()
        var sender = try pong.exclusiveSender()
        control.markReady()
        while true {
            let message: BenchMessage
            switch Result(catching: { () throws(InterprocessError) in try receiver.blockingReceive() }) {
            case .success(let received): message = received
            case .failure(let error) where error.code == .closed: return
            case .failure(let error): throw error
            }
            try sender.blockingSend(message)
        }
    }

    /// Answers every 64 bytes read from `--in` with the same bytes on `--out`, until end of file.
    func pongMessages() throws {
        guard input >= 0, output >= 0 else { throw ToolError("--in and --out are required") }
        control.markReady()
        var message = BenchMessage()
        while try withUnsafeMutableBytes(of: &message, { try BenchIO.readMessage(input, into: $0) }) {
            try withUnsafeBytes(of: &message) { try BenchIO.writeMessage(output, $0) }
        }
    }

    /// Sends back every message of the ping queue on the pong queue, until a short one comes.
    func pongQueue() throws {
        let names = ChannelNames(session: memory.name)
        let ping = try PosixMessageQueue.open(name: names.pingQueue)
        defer { ping.close() }
        let pong = try PosixMessageQueue.open(name: names.pongQueue)
        defer { pong.close() }
        control.markReady()
        var message = BenchMessage()
        while true {
            let count = try withUnsafeMutableBytes(of: &message) { try ping.receive(into: $0) }
            if count != BenchMessage.size { return }
            try withUnsafeBytes(of: &message) { try pong.send($0) }
        }
    }
}
