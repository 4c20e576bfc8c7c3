import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Scenario 3: two peer processes contend on one lock, each doing `contendedIterations`
/// lock / increment a shared counter / unlock; they pass a spinning start barrier first, so that
/// they really overlap (otherwise one may finish before the other is even scheduled, and the
/// "contended" figure is the uncontended one). The rows are total throughput (both processes'
/// operations over the time from the first start to the last end, median of the runs), and each
/// run checks that the counter ends at the total. Ours (``ProcessMutex``) against a pthread robust
/// process-shared mutex; the variants take turns run by run.
enum ContendedLockBench: BenchScenario {
    static let id = "contended-lock"
    static let title = "two processes contending on one lock"
    static let summary = "ProcessMutex vs pthread robust mutex, two processes"
    static let unit = "ops/s, both processes together"
    static let higherIsBetter = true
    static let baseline: String? = "pthread-robust"
    static let roles: [BenchRole] = [.contendProcessMutex, .contendPthread]

    static let processes = 2

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
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
        guard last > first, total > 0 else { throw ToolError("\(role.name): the peers recorded no work") }
        let counter = (base + BenchLayout.counter).load(as: UInt64.self)
        let expected = UInt64(processes * plan.contendedIterations)
        return (Double(total) / (Double(last - first) / 1e9), counter == expected && total == expected)
    }
}

extension BenchPlan {
    /// Increments per process, and runs per variant.
    var contendedIterations: Int { quick ? 50_000 : 1_000_000 }
    var contendedRuns: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let contendProcessMutex = BenchRole.inSegment("contend-process-mutex") { work in
        let mutex = try ProcessMutex.open(in: work.memory, at: BenchLayout.processMutex)
        let counter = work.base + BenchLayout.counter
        try work.contend { () throws -> UInt64 in try PeerWork.increment(mutex, counter, work.count) }
    }
    static let contendPthread = BenchRole.inSegment("contend-pthread") { work in
        let mutex = RobustPthreadMutex.open(at: work.base + BenchLayout.pthreadMutex)
        let counter = work.base + BenchLayout.counter
        try work.contend { () throws -> UInt64 in try PeerWork.increment(mutex, counter, work.count) }
    }
}

// MARK: - The contending side (`ipc bench-peer contend-…`)

extension PeerWork {
    /// Ready, go, wait for the other contenders, run `body` (which returns the operations done)
    /// and record the times.
    func contend(_ body: () throws -> UInt64) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        try control.arrive(parties: parties, deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        let done = try body()
        control.record(slot: slot, count: done, start: start, end: Clock.monotonicNanoseconds())
    }

    @inline(never)
    static func increment(_ mutex: ProcessMutex, _ counter: UnsafeMutableRawPointer, _ count: Int) throws -> UInt64 {
        for _ in 0..<count {
            try mutex.blockingLock()
            counter.storeBytes(of: counter.load(as: UInt64.self) &+ 1, as: UInt64.self)
            try mutex.unlock()
        }
        return UInt64(count)
    }

    @inline(never)
    static func increment(_ mutex: RobustPthreadMutex, _ counter: UnsafeMutableRawPointer, _ count: Int) throws -> UInt64 {
        for _ in 0..<count {
            try mutex.lock()
            counter.storeBytes(of: counter.load(as: UInt64.self) &+ 1, as: UInt64.self)
            mutex.unlock()
        }
        return UInt64(count)
    }
}
