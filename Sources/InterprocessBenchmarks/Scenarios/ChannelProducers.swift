import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// 1, 2, 4 and 8 producer processes sending 64-byte values into one ``Channel`` (1,024 slots), this
/// process the one consumer: the messages received per second, all producers together. On a
/// 2-CPU machine, 8 producers and a consumer are 9 processes for 2 CPUs; the target (issue 13) is
/// that 8 producers still move at least half as many messages as 1.
///
/// The producers (`ipc bench-peer stream-channel`) share the run's messages equally and number
/// theirs `P << 40 | n`; the consumer checks every message: whole, from a producer of the run, and
/// each producer's in order with none missing or repeated. The time runs from go to the last
/// message. Runs take turns (1, 2, 4, 8, 1, 2, …); the median run is reported.
enum ChannelProducersBench: BenchScenario {
    static let id = "channel-producers"
    static let title = "1, 2, 4 and 8 producer processes into one channel, one consumer"
    static let summary = "Channel<64-byte value> throughput with 1, 2, 4 and 8 producer processes and one consumer"
    static let unit = "messages/s, all producers together"
    static let higherIsBetter = true
    static let baseline: String? = "producers-1"
    static let targets = [BenchTarget("8 producers / 1 producer", "producers-8", over: "producers-1", .atLeast(0.5))]
    // The producers are the throughput scenario's `stream-channel` role.
    static let producerCounts = [1, 2, 4, 8]

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
                name: "Channel<64-byte value>, \(producers) producer process\(producers == 1 ? "" : "es") → 1 consumer",
                median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.notes.append(
            "\(plan.producersMessages) messages per run, shared equally; \(plan.producersRuns) run(s) per producer count, in turns; "
                + "a channel of \(ChannelThroughputBench.channelCapacity(BenchMessage.size)) slots; \(SpinPolicy.processorCount) CPUs")
    }

    /// One run with `producers` producers; the messages per second and whether every one was right.
    private static func run(producers: Int, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan) throws -> (Double, Bool) {
        control.clear()
        let peers = session.peers
        defer { peers.killAll() }
        let size = BenchMessage.size
        let channel = try Channel<BenchMessage>.create(
            name: ChannelThroughputBench.channelName(session: session.name.description, size: size, raw: true),
            capacity: ChannelThroughputBench.channelCapacity(size))
        defer { channel.detach() }
        let each = plan.producersMessages / producers
        for producer in 0..<producers {
            try peers.spawn(
                .streamChannel, segment: session.name,
                ["--count", "\(each)", "--bytes", "\(size)", "--parties", "1", "--slot", "\(producer)"])
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try peers.awaitReady(control, count: producers, deadline: deadline)
        let watchdog = Watchdog(peers: peers.children, deadline: deadline) { channel.close() }
        var next = [UInt64](repeating: 0, count: producers)
        var correct = true
        let total = each * producers
        let start = BenchClock.now()
        control.sayGo()
        do {
            defer { watchdog.disarm() }
            for _ in 0..<total {
                let message = try channel.blockingReceive(timeout: plan.stepTimeout)
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

extension BenchPlan {
    /// Messages per run (all producers together; a multiple of 8).
    var producersMessages: Int { quick ? 16_000 : 800_000 }
    /// Runs per producer count.
    var producersRuns: Int { quick ? 1 : 5 }
}
