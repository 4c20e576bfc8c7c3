import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// A 64-byte round trip between two processes through two ``MessageQueue``s (one each way), against
/// a pair of POSIX message queues (`mq_send` / `mq_receive`, what `MessageQueue` is modelled on) and
/// a ``Channel`` pair, 64 bytes each way, in the same run. Every round trip is timed on its own; the
/// variants take turns in chunks (the ping-pong scenario's runner), so that the scheduler's moods hit
/// every variant alike. Between its chunks a peer waits in its receive (parked).
enum MessageQueueRoundTripBench: BenchScenario {
    static let id = "message-queue"
    static let title = "64-byte round trip between two processes through two message queues"
    static let summary = "MessageQueue pair (64-byte values, priority 0) vs POSIX message queues and a Channel pair"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "posix-mqueue"
    static let roles: [BenchRole] = [.pongMessageQueue]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let names = ChannelNames(session: session.name.description)
        let queueNames = MessageQueueNames(session: session.name.description)
        let ping = try MessageQueue<BenchMessage>.create(name: queueNames.ping, capacity: 16)
        defer { ping.detach() }
        let pong = try MessageQueue<BenchMessage>.create(name: queueNames.pong, capacity: 16)
        defer { pong.detach() }
        let pingChannel = try Channel<BenchMessage>.create(name: names.ping, capacity: 16)
        defer { pingChannel.detach() }
        let pongChannel = try Channel<BenchMessage>.create(name: names.pong, capacity: 16)
        defer { pongChannel.detach() }
        let pingQueue = try PosixMessageQueue.create(name: names.pingQueue, capacity: 8, messageSize: BenchMessage.size)
        defer { pingQueue.close(); pingQueue.unlink() }
        let pongQueue = try PosixMessageQueue.create(name: names.pongQueue, capacity: 8, messageSize: BenchMessage.size)
        defer { pongQueue.close(); pongQueue.unlink() }
        var samples: [String: [UInt64]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.pongMessageQueue, segment: session.name)
            try peers.spawn(.pongChannel, segment: session.name)
            try peers.spawn(.pongQueue, segment: session.name)
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 3, deadline: deadline)
            let watchdog = Watchdog(peers: peers.children, deadline: deadline) { [pongQueue] in
                pong.close()
                pongChannel.close()
                var empty = BenchMessage()
                try? withUnsafeBytes(of: &empty) { try pongQueue.send(UnsafeRawBufferPointer(rebasing: $0[..<1])) }
            }
            var queues = MessageQueuePairRoundTrip(ping: ping, pong: pong)
            var channels = ChannelPairRoundTrip(ping: pingChannel, pong: pongChannel)
            var posix = MessageQueueRoundTrip(ping: pingQueue, pong: pongQueue)
            do {
                defer { watchdog.disarm() }
                for _ in 0..<plan.pingPongRounds {
                    try PingPongBench.chunk(&queues, plan, watchdog, into: &samples["message-queue", default: []])
                    try PingPongBench.chunk(&posix, plan, watchdog, into: &samples["posix-mqueue", default: []])
                    try PingPongBench.chunk(&channels, plan, watchdog, into: &samples["channel", default: []])
                }
            }
            queues.finish()
            try channels.finish()
            try posix.finish()
            try peers.finish(deadline: deadline)
            scenario.correctness("every answer was the message sent", queues.correct && channels.correct && posix.correct)
        }
        let rows = [
            ("message-queue", "MessageQueue pair (64-byte BitwiseCopyable values, blocking send and receive)"),
            ("posix-mqueue", "POSIX message queue round trip (2 queues, 64-byte messages)"),
            ("channel", "Channel pair (the same messages, no priorities)"),
        ]
        for (id, name) in rows {
            let summary = Summary((samples[id] ?? []).map { Double($0) })
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.pingPongRounds) round(s) of chunks per variant "
                + "(the ping-pong scenario's amounts); message queues and channels of 16 slots, POSIX queues of 8")
    }
}

/// The names of the scenario's message queues, made from the bench segment's name.
struct MessageQueueNames {
    let ping: String
    let pong: String

    init(session: String) {
        ping = session + "-mping"
        pong = session + "-mpong"
    }
}

/// A ping sent on one message queue, its echo received on the other.
struct MessageQueuePairRoundTrip: RoundTrip {
    let ping: MessageQueue<BenchMessage>
    let pong: MessageQueue<BenchMessage>
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        try ping.blockingSend(BenchMessage(sequence))
        let answer = try pong.blockingReceive()
        if answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// Closing the ping queue ends the peer's loop.
    func finish() {
        ping.close()
    }
}

extension BenchRole {
    static let pongMessageQueue = BenchRole.inSegment("pong-message-queue") { try $0.pongMessageQueue() }
}

extension PeerWork {
    /// Sends back every message of the ping queue on the pong queue, until the ping queue is closed.
    func pongMessageQueue() throws {
        let names = MessageQueueNames(session: memory.name)
        let ping = try MessageQueue<BenchMessage>.open(name: names.ping)
        defer { ping.detach() }
        let pong = try MessageQueue<BenchMessage>.open(name: names.pong)
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
}
