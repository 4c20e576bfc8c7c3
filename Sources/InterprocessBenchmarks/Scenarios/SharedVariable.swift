import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Scenario 5: a round trip through two one-slot variables (put into `ping`, the other side takes
/// it and puts it into `pong`, take it back), timed per round trip:
/// - ours between two processes (``SharedVariable`` in a segment, the peer is
///   `ipc bench-peer pong-variable`);
/// - ours between two threads of this process (what the process boundary costs);
/// - the in-process equivalent: the classic one-slot box built from a mutex and a condition
///   variable (`NSCondition`), between two threads — the baseline.
///
/// The variants take turns in chunks, as in the ping-pong scenario. There is no speed target.
enum SharedVariableBench: BenchScenario {
    static let id = "shared-variable"
    static let title = "SharedVariable put/take round trip"
    static let summary = "SharedVariable round trips between two processes and two threads vs an in-process condition-variable box"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "in-process-condition"
    static let roles: [BenchRole] = [.pongVariable]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        guard BenchLayout.pongVariable + SharedVariable<UInt64>.stateSize <= BenchLayout.size else {
            throw ToolError("two SharedVariable<UInt64> do not fit the bench segment")
        }
        let session = try BenchSession()
        defer { session.close() }
        let segment = session.segment
        let ping = try SharedVariable<UInt64>.create(in: segment, at: BenchLayout.pingVariable)
        let pong = try SharedVariable<UInt64>.create(in: segment, at: BenchLayout.pongVariable)
        // The threads' variables live in a segment of their own: only this process maps it.
        let threadSession = try BenchSession()
        defer { threadSession.close() }
        let threadPing = try SharedVariable<UInt64>.create(in: threadSession.segment, at: BenchLayout.pingVariable)
        let threadPong = try SharedVariable<UInt64>.create(in: threadSession.segment, at: BenchLayout.pongVariable)
        let boxPing = ConditionBox()
        let boxPong = ConditionBox()

        var samples: [String: [UInt64]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.pongVariable, segment: session.name)
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 1, deadline: deadline)
            Thread.detachNewThread { try? VariableRoundTrip.echo(threadPing, threadPong) }
            Thread.detachNewThread { ConditionRoundTrip.echo(boxPing, boxPong) }

            let watchdog = Watchdog(peers: peers.children, deadline: deadline) {
                _ = pong.tryPut(VariableRoundTrip.quit)
                _ = threadPong.tryPut(VariableRoundTrip.quit)
                boxPong.offer(VariableRoundTrip.quit)
            }
            var processes = VariableRoundTrip(ping: ping, pong: pong)
            var threads = VariableRoundTrip(ping: threadPing, pong: threadPong)
            var condition = ConditionRoundTrip(ping: boxPing, pong: boxPong)
            do {
                defer { watchdog.disarm() }
                for _ in 0..<plan.pingPongRounds {
                    try PingPongBench.chunk(&processes, plan, watchdog, into: &samples["ours-processes", default: []])
                    try PingPongBench.chunk(&threads, plan, watchdog, into: &samples["ours-threads", default: []])
                    try PingPongBench.chunk(&condition, plan, watchdog, into: &samples["in-process-condition", default: []])
                }
            }
            try processes.finish()
            try threads.finish()
            try condition.finish()
            try peers.finish(deadline: deadline)
        }

        let rows = [
            ("ours-processes", "SharedVariable<UInt64> pair, two processes"),
            ("ours-threads", "SharedVariable<UInt64> pair, two threads of one process"),
            ("in-process-condition", "in-process one-slot box (NSCondition), two threads"),
        ]
        for (id, name) in rows {
            let summary = Summary((samples[id] ?? []).map { Double($0) })
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.notes.append(
            "a round trip is put(ping) + take(pong) against a partner doing take(ping) + put(pong); "
                + "\(plan.pingPongRounds) round(s) of chunks per variant; no speed target")
    }
}

extension BenchRole {
    static let pongVariable = BenchRole.inSegment("pong-variable") { work in
        let ping = try SharedVariable<UInt64>.open(in: work.memory, at: BenchLayout.pingVariable)
        let pong = try SharedVariable<UInt64>.open(in: work.memory, at: BenchLayout.pongVariable)
        work.control.markReady()
        try VariableRoundTrip.echo(ping, pong)
    }
}

/// A round trip through two ``SharedVariable``s; the value comes back unchanged.
struct VariableRoundTrip: RoundTrip {
    static let quit = UInt64.max

    let ping: SharedVariable<UInt64>
    let pong: SharedVariable<UInt64>
    var next: UInt64 = 0

    @inline(__always)
    mutating func once() throws {
        try ping.blockingPut(next)
        guard try pong.blockingTake() == next else { throw ToolError("SharedVariable round trip: a wrong value came back") }
        next &+= 1
    }

    /// Tells the partner to stop and waits for its acknowledgement.
    func finish() throws {
        try ping.blockingPut(Self.quit)
        _ = try pong.blockingTake(timeout: .seconds(10))
    }

    /// The partner's side: echoes every value until the quit value, which it acknowledges.
    static func echo(_ ping: SharedVariable<UInt64>, _ pong: SharedVariable<UInt64>) throws {
        while true {
            let value = try ping.blockingTake()
            try pong.blockingPut(value)
            if value == quit { return }
        }
    }
}

/// The same round trip through two ``ConditionBox``es.
struct ConditionRoundTrip: RoundTrip {
    let ping: ConditionBox
    let pong: ConditionBox
    var next: UInt64 = 0

    @inline(__always)
    mutating func once() throws {
        ping.put(next)
        guard pong.take() == next else { throw ToolError("condition-box round trip: a wrong value came back") }
        next &+= 1
    }

    func finish() throws {
        ping.put(VariableRoundTrip.quit)
        _ = pong.take()
    }

    static func echo(_ ping: ConditionBox, _ pong: ConditionBox) {
        while true {
            let value = ping.take()
            pong.put(value)
            if value == VariableRoundTrip.quit { return }
        }
    }
}

/// The textbook in-process one-slot box: a value guarded by a mutex, and a condition variable that
/// takers wait on while it is empty and putters while it is full.
///
/// `@unchecked Sendable`: `value` is only touched while holding `condition`'s lock.
final class ConditionBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: UInt64?

    func put(_ newValue: UInt64) {
        condition.lock()
        while value != nil { condition.wait() }
        value = newValue
        condition.broadcast()
        condition.unlock()
    }

    /// Puts `newValue` if the box is empty (never waits).
    func offer(_ newValue: UInt64) {
        condition.lock()
        if value == nil {
            value = newValue
            condition.broadcast()
        }
        condition.unlock()
    }

    func take() -> UInt64 {
        condition.lock()
        while value == nil { condition.wait() }
        let taken = value!
        value = nil
        condition.broadcast()
        condition.unlock()
        return taken
    }
}
