import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// A ``Broadcast`` of 64-byte values from this process to 1, 4 and 16 subscriber processes
/// (`ipc bench-peer broadcast-subscriber`), policy `.blockPublisher`, a ring of 256: the time per
/// message from the first publish until every subscriber has received the last one, divided by the
/// messages — what one message costs to reach every subscriber — and how it grows with them.
/// Each subscriber checks every message (whole, in order, none missing) and exits non-zero
/// otherwise. Runs take turns (1, 4, 16, 1, 4, 16, …); the median run is reported. There is no
/// speed target (issue 13 asks for the figures and their growth).
enum BroadcastFanOutBench: BenchScenario {
    static let id = "broadcast"
    static let title = "Broadcast to 1, 4 and 16 subscriber processes"
    static let summary = "Broadcast<64-byte value> per-message cost to 1, 4 and 16 subscriber processes (blockPublisher)"
    static let unit = "ns per message (until every subscriber has it)"
    static let higherIsBetter = false
    static let baseline: String? = "subscribers-1"
    static let roles: [BenchRole] = [.broadcastSubscriber]
    static let fanOuts = [1, 4, 16]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        var times: [Int: [Double]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.broadcastRuns {
                for subscribers in fanOuts {
                    times[subscribers, default: []].append(try run(subscribers: subscribers, session, control, plan))
                }
            }
        }
        var perDelivery: [String] = []
        for subscribers in fanOuts {
            let summary = Summary(times[subscribers] ?? [])
            guard summary.count > 0 else { throw ToolError("\(subscribers) subscribers: no run completed") }
            scenario.rows.append(BenchRow(
                id: "subscribers-\(subscribers)",
                name: "Broadcast<64-byte value>, 1 publisher → \(subscribers) subscriber process\(subscribers == 1 ? "" : "es")",
                median: summary.median, samples: summary.count, correct: true, min: summary.min, max: summary.max))
            perDelivery.append("\(subscribers): \(Int(summary.median / Double(subscribers))) ns")
        }
        scenario.correctness("every subscriber received every message whole and in order", true)
        scenario.notes.append(
            "\(plan.broadcastMessages) messages per run, \(plan.broadcastRuns) run(s) per fan-out in turns; ring of 256, blockPublisher; "
                + "per delivery (per message ÷ subscribers) — " + perDelivery.joined(separator: ", "))
    }

    /// One run: start the subscribers, wait until they subscribed, publish, wait until each has
    /// received every message. Returns the nanoseconds per message.
    private static func run(subscribers: Int, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan) throws -> Double {
        control.clear()
        let peers = session.peers
        defer { peers.killAll() }
        let broadcast = try Broadcast<BenchMessage>.create(
            name: broadcastName(session: session.name.description, subscribers), capacity: 256, maxSubscribers: max(subscribers, 1))
        defer { broadcast.detach() }
        let messages = plan.broadcastMessages
        for _ in 0..<subscribers {
            try peers.spawn(.broadcastSubscriber, segment: session.name, ["--parties", "\(subscribers)", "--count", "\(messages)"])
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try peers.awaitReady(control, count: subscribers, deadline: deadline)
        let start = BenchClock.now()
        for sequence in 0..<messages {
            try broadcast.blockingPublish(BenchMessage(UInt64(sequence)), timeout: plan.stepTimeout)
        }
        // Each subscriber says ready a second time once it has every message.
        while control.readyCount < 2 * subscribers {
            try peers.checkRunning()
            guard !deadline.hasPassed else { throw ToolError("subscribers did not receive every message in time") }
            SpinPolicy.pause()
        }
        let elapsed = BenchClock.now() &- start
        broadcast.close()
        try peers.finish(deadline: deadline)
        return Double(elapsed) / Double(messages)
    }

    static func broadcastName(session: String, _ subscribers: Int) -> String { session + "-bc\(subscribers)" }
}

extension BenchPlan {
    /// Messages per broadcast run.
    var broadcastMessages: Int { quick ? 2_000 : 50_000 }
    /// Runs per fan-out.
    var broadcastRuns: Int { quick ? 1 : 5 }
}

extension BenchRole {
    /// Subscribes to the broadcast of the fan-out `--parties`, says ready, receives `--count`
    /// messages checking each, says ready again, and waits for the end of the broadcast.
    static let broadcastSubscriber = BenchRole.inSegment("broadcast-subscriber") { work in
        let broadcast = try Broadcast<BenchMessage>.open(name: BroadcastFanOutBench.broadcastName(session: work.memory.name, work.parties))
        let subscription = try broadcast.subscribe()
        work.control.markReady()
        for expected in 0..<UInt64(work.count) {
            guard case .message(let message) = try subscription.blockingReceive(timeout: .seconds(60)) else {
                throw ToolError("broadcast subscriber: missed messages under blockPublisher")
            }
            guard message.isWhole, message.sequence == expected else {
                throw ToolError("broadcast subscriber: message \(message.sequence) (whole: \(message.isWhole)) where \(expected) was due")
            }
        }
        work.control.markReady()
        switch Result(catching: { () throws(InterprocessError) in try subscription.blockingReceive(timeout: .seconds(60)) }) {
        case .success: throw ToolError("broadcast subscriber: a message after the last one")
        case .failure(let error) where error.code == .closed: return
        case .failure(let error): throw error
        }
    }
}
