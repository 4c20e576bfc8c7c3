import Interprocess
import InterprocessSystem

/// Scenario 6: a busy machine. One CPU-bound process per CPU (`ipc bench-peer hog`, a loop of
/// multiplications that never sleeps) runs beside one putter and four takers that move M values
/// through one slot, each in its own process:
/// - ours: a ``SharedVariable<UInt64>`` (the putter `put`s, the takers `take`);
/// - the baseline: the textbook bounded buffer of one slot from two POSIX unnamed semaphores in the
///   same shared segment (`sem_init` with `pshared` = 1: `empty` starts at 1, `full` at 0; a put is
///   `sem_wait(empty)`, write, `sem_post(full)`; a take is `sem_wait(full)`, read, `sem_post(empty)`).
///
/// The putter then puts one quit value per taker. A run's time is from the putter's start (after
/// go) to the last worker's end, divided by M; every run checks that the takers took M values whose
/// sum is 0 + 1 + … + (M − 1). Runs alternate between the variants; the rows give the median run.
/// Target: ours no slower than the POSIX semaphores (issue 10, point 11: yields before parking used
/// to hand the CPU to the hogs).
enum LoadedBench {
    static let quit = UInt64.max
    static let takers = 4

    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.loaded.rawValue, title: BenchScenarioID.loaded.title,
            unit: "ns per value moved", higherIsBetter: false, baseline: "posix")
    }

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        guard BenchLayout.pingVariable + SharedVariable<UInt64>.stateSize <= BenchLayout.posixEmpty,
              BenchLayout.posixSlot + 8 <= BenchLayout.size, PosixSemaphore.size <= 64
        else { throw ToolError("the loaded scenario's buffers do not fit the bench segment") }
        let session = try BenchSession()
        defer { session.close() }
        _ = try SharedVariable<UInt64>.create(in: session.segment, at: BenchLayout.pingVariable)
        var times: [String: [Double]] = [:]
        var correct: [String: Bool] = ["ours": true, "posix": true]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.loadedRuns {
                for variant in ["ours", "posix"] {
                    let (time, ok) = try run(posix: variant == "posix", session, control, base, plan)
                    times[variant, default: []].append(time)
                    correct[variant] = correct[variant]! && ok
                }
            }
        }
        for (id, name) in [
            ("ours", "SharedVariable<UInt64>, 1 putter → \(takers) takers"),
            ("posix", "POSIX semaphores (sem_init, pshared), one-slot buffer, 1 putter → \(takers) takers"),
        ] {
            let summary = Summary(times[id] ?? [])
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count, correct: correct[id],
                min: summary.min, max: summary.max))
        }
        scenario.computeRatios()
        scenario.target(
            "SharedVariable / POSIX semaphores (time per value, loaded)",
            scenario.row("ours")!.median / scenario.row("posix")!.median, atMost: 1)
        scenario.notes.append(
            "\(plan.loadedHogs) CPU-bound process(es) (one per CPU) beside 1 putter and \(takers) takers; "
                + "\(plan.loadedValues) values per run; median of \(plan.loadedRuns) run(s) per variant, in turns; "
                + "a run is checked: \(plan.loadedValues) values taken, each once")
    }

    /// One run: start the hogs, then the putter and the takers; go; wait for the workers; stop the hogs.
    /// Returns the time per value (ns) and whether the values arrived whole.
    private static func run(
        posix: Bool, _ session: BenchSession, _ control: BenchControl, _ base: UnsafeMutableRawPointer, _ plan: BenchPlan
    ) throws -> (Double, Bool) {
        control.clear()
        defer { session.peers.killAll() }
        if posix { _ = try PosixSlot.create(base: base) }
        for _ in 0..<plan.loadedHogs { try session.peers.spawn(.hog, segment: session.name) }
        var workers = [
            try session.peers.spawn(
                posix ? .loadedPutPosix : .loadedPutVariable, segment: session.name,
                ["--slot", "0", "--count", "\(plan.loadedValues)", "--parties", "\(takers)"])
        ]
        for taker in 1...takers {
            workers.append(try session.peers.spawn(posix ? .loadedTakePosix : .loadedTakeVariable, segment: session.name, ["--slot", "\(taker)"]))
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try session.peers.awaitReady(control, count: plan.loadedHogs + 1 + takers, deadline: deadline)
        control.sayGo()
        for worker in workers {
            let termination = worker.wait(timeout: .nanoseconds(Int64(clamping: deadline.remainingNanoseconds)))
            guard termination == .exited(0) else {
                throw ToolError("loaded \(posix ? "POSIX" : "SharedVariable") worker \(worker.pid) "
                    + (termination.map { "\($0)" } ?? "did not finish in time and was killed"))
            }
        }
        control.sayStop()
        try session.peers.finish(deadline: deadline)

        let start = control.result(slot: 0).start
        let end = (0...takers).map { control.result(slot: $0).end }.max()!
        guard end > start else { throw ToolError("loaded: the workers recorded no times") }
        let taken = (1...takers).reduce(UInt64(0)) { $0 &+ control.result(slot: $1).count }
        let sum = (1...takers).reduce(UInt64(0)) { $0 &+ control.extra(slot: $1) }
        let values = UInt64(plan.loadedValues)
        let whole = taken == values && sum == values * (values &- 1) / 2
        return (Double(end - start) / Double(values), whole)
    }
}
