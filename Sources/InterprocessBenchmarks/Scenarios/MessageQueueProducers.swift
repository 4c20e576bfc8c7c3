import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// 1, 2, 4 and 8 producer processes sending 64-byte values (priority 0) into one ``MessageQueue``
/// of 1,024 slots, this process the one consumer: the messages received per second, all producers
/// together — the ``ChannelProducersBench`` of message queues, in the same shape and amounts.
///
/// The producers (`ipc bench-peer stream-message-queue`) share the run's messages equally and number
/// theirs `P << 40 | n`; the consumer checks every message: whole, from a producer of the run, and
/// each producer's in order (one priority: a queue keeps the order of publication) with none missing
/// or repeated. The time runs from go to the last message. Runs take turns (1, 2, 4, 8, 1, 2, …); the
/// median run is reported. Count the wake-up calls with
/// `perf stat -e 'syscalls:sys_enter_futex' -a -- ipc bench --scenario message-queue-producers`.
enum MessageQueueProducersBench: BenchScenario {
    static let id = "message-queue-producers"
    static let title = "1, 2, 4 and 8 producer processes into one message queue, one consumer"
    static let summary = "MessageQueue<64-byte value> throughput with 1, 2, 4 and 8 producer processes and one consumer"
    static let unit = "messages/s, all producers together"
    static let higherIsBetter = true
    static let baseline: String? = "producers-1"
    static let roles: [BenchRole] = [.streamMessageQueue]
    static let producerCounts = [1, 2, 4, 8]
    static let capacity = 1024

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        var rates: [Int: [Double]] = [:]
        var correct = true
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.producersRuns {
                for producers in producerCounts {
                    let (rate, ok) = try run(producers: producers, session, control, plan)
                    rates[producers, default: []].append(rate)
                    correct = correct && ok
                }
            }
        }
        scenario.correctness("every message arrived whole, once, in order per producer", correct)
        for producers in producerCounts {
            let summary = Summary(rates[producers] ?? [])
            guard summary.count > 0 else { throw ToolError("\(producers) producers: no run completed") }
            scenario.rows.append(BenchRow(
                id: "producers-\(producers)",
                name: "MessageQueue<64-byte value>, \(producers) producer process\(producers == 1 ? "" : "es") → 1 consumer",
                median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.notes.append(
            "\(plan.producersMessages) messages per run, shared equally; \(plan.producersRuns) run(s) per producer count, in turns; "
                + "a message queue of \(capacity) slots, priority 0; \(SpinPolicy.processorCount) CPUs")
    }

    /// The name of the session's queue.
    static func queueName(session: String) -> String { session + "-mqp" }

    /// One run with `producers` producers; the messages per second and whether every one was right.
    private static func run(producers: Int, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan) throws -> (Double, Bool) {
        control.clear()
        let peers = session.peers
        defer { peers.killAll() }
        let size = BenchMessage.size
        let queue = try MessageQueue<BenchMessage>.create(name: queueName(session: session.name.description), capacity: capacity)
        defer { queue.detach() }
        let each = plan.producersMessages / producers
        for producer in 0..<producers {
            try peers.spawn(
                .streamMessageQueue, segment: session.name,
                ["--count", "\(each)", "--bytes", "\(size)", "--slot", "\(producer)"])
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try peers.awaitReady(control, count: producers, deadline: deadline)
        let watchdog = Watchdog(peers: peers.children, deadline: deadline) { queue.close() }
        var next = [UInt64](repeating: 0, count: producers)
        var correct = true
        let total = each * producers
        let start = BenchClock.now()
        control.sayGo()
        do {
            defer { watchdog.disarm() }
            for _ in 0..<total {
                let message = try queue.blockingReceive(timeout: plan.stepTimeout)
                let producer = Int(truncatingIfNeeded: message.sequence >> 40)
                guard message.isWhole, producer < producers, message.sequence & 0xFF_FFFF_FFFF == next[producer] else {
                    correct = false
                    continue
                }
                next[producer] &+= 1
            }
        }
        let elapsed = BenchClock.now() &- start
        try watchdog.check("\(producers) producers")
        control.releaseProducers()
        try peers.finish(deadline: deadline)
        return (Double(total) / (Double(elapsed) / 1e9), correct && next.allSatisfy { $0 == UInt64(each) })
    }
}

extension BenchRole {
    /// Sends `--count` 64-byte values on the session's message queue of the producers scenario, after
    /// go, numbered `P << 40 | n` with `--slot P`.
    static let streamMessageQueue = BenchRole("stream-message-queue") { peer in
        try peer.withControl { control, session in
            let first = UInt64(peer.slot) << 40
            let queue = try MessageQueue<BenchMessage>.open(name: MessageQueueProducersBench.queueName(session: session))
            defer { queue.detach() }
            control.markReady()
            try control.awaitGo(deadline: Deadline(after: .seconds(60)))
            for number in 0..<UInt64(peer.count) { try queue.blockingSend(BenchMessage(first | number)) }
            try control.awaitRelease()
        }
    }
}
