import Interprocess
import InterprocessSystem

/// Scenario 3: two peer processes contend on one lock, each doing `contendedIterations`
/// lock / increment a shared counter / unlock; they pass a spinning start barrier first, so that
/// they really overlap (otherwise one may finish before the other is even scheduled, and the
/// "contended" figure is the uncontended one). The rows are total throughput (both processes'
/// operations over the time from the first start to the last end, median of the runs), and each
/// run checks that the counter ends at the total. Ours (``ProcessMutex``) against a pthread robust
/// process-shared mutex; the variants take turns run by run.
enum ContendedLockBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.contendedLock.rawValue, title: BenchScenarioID.contendedLock.title,
            unit: "ops/s, both processes together", higherIsBetter: true, baseline: "pthread-robust")
    }

    static let processes = 2

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        _ = try ProcessMutex.create(in: session.segment, at: BenchLayout.processMutex)
        let variants: [(id: String, name: String, role: BenchRole)] = [
            ("ours", "ProcessMutex", .contendProcessMutex),
            ("pthread-robust", "pthread mutex, robust + process-shared", .contendPthread),
        ]
        var rates: [String: [Double]] = [:]
        var correct: [String: Bool] = [:]
        try session.withMemory { base in
            _ = try RobustPthreadMutex.create(at: base + BenchLayout.pthreadMutex)
            let control = BenchControl(base: base)
            for _ in 0..<plan.contendedRuns {
                for variant in variants {
                    let (rate, ok) = try run(variant.role, session, control, base, plan)
                    rates[variant.id, default: []].append(rate)
                    correct[variant.id] = (correct[variant.id] ?? true) && ok
                }
            }
        }
        for variant in variants {
            let runs = rates[variant.id] ?? []
            guard !runs.isEmpty else { continue }
            let summary = Summary(runs)
            scenario.rows.append(BenchRow(
                id: variant.id, name: variant.name, median: summary.median, samples: summary.count,
                correct: correct[variant.id], min: summary.min, max: summary.max))
            scenario.correctness("\(variant.name): counter == \(processes) × \(plan.contendedIterations) in every run", correct[variant.id] ?? false)
        }
        scenario.notes.append(
            "\(processes) processes × \(plan.contendedIterations) lock/increment/unlock each; median of \(plan.contendedRuns) run(s); "
                + "throughput = all operations / (last end − first start); no speed target, ratio is ours vs pthread")
    }

    /// One run: both peers ready, go, wait for both, then read the counter and their times.
    private static func run(
        _ role: BenchRole, _ session: BenchSession, _ control: BenchControl, _ base: UnsafeMutableRawPointer, _ plan: BenchPlan
    ) throws -> (rate: Double, correct: Bool) {
        control.clear()
        (base + BenchLayout.counter).storeBytes(of: UInt64(0), as: UInt64.self)
        defer { session.peers.killAll() }
        for slot in 0..<processes {
            try session.peers.spawn(role, segment: session.name, ["--slot", "\(slot)", "--count", "\(plan.contendedIterations)", "--parties", "\(processes)"])
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try session.peers.awaitReady(control, count: processes, deadline: deadline)
        control.sayGo()
        try session.peers.finish(deadline: deadline)
        let results = (0..<processes).map { control.result(slot: $0) }
        let total = results.reduce(0) { $0 + $1.count }
        let first = results.map(\.start).min()!
        let last = results.map(\.end).max()!
        guard last > first, total > 0 else { throw ToolError("\(role.rawValue): the peers recorded no work") }
        let counter = (base + BenchLayout.counter).load(as: UInt64.self)
        let expected = UInt64(processes * plan.contendedIterations)
        return (Double(total) / (Double(last - first) / 1e9), counter == expected && total == expected)
    }
}
