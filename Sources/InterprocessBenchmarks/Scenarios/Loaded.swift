import Interprocess
import InterprocessSystem
import InterprocessToolSupport

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
/// to hand the CPU to the hogs). Every process of the scenario runs under `SCHED_OTHER`, also when
/// the bench runs under `chrt` (``PeerLifetime/useOrdinaryScheduling()``).
enum LoadedBench: BenchScenario {
    static let id = "loaded"
    static let title = "loaded: 1 putter → 4 takers through one slot, CPU hogs beside them"
    static let summary = "1 putter and 4 takers moving values through one slot beside one CPU-bound process per CPU: SharedVariable vs POSIX semaphores"
    static let unit = "ns per value moved"
    static let higherIsBetter = false
    static let baseline: String? = "posix"
    static let targets = [
        BenchTarget("SharedVariable / POSIX semaphores (time per value, loaded)", "ours", over: "posix", .atMost(1))
    ]
    static let roles: [BenchRole] = [.hog, .loadedPutVariable, .loadedTakeVariable, .loadedPutPosix, .loadedTakePosix]

    static let quit = UInt64.max
    static let takers = 4

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
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

extension BenchPlan {
    /// Values moved from the putter to the takers per run, runs per variant, CPU hogs (one per CPU).
    var loadedValues: Int { quick ? 2_000 : 50_000 }
    var loadedRuns: Int { quick ? 1 : 3 }
    var loadedHogs: Int { SpinPolicy.processorCount }
}

extension BenchRole {
    static let hog = BenchRole.inSegment("hog") { try $0.hog() }
    static let loadedPutVariable = BenchRole.inSegment("loaded-put-variable") { work in
        let variable = try SharedVariable<UInt64>.open(in: work.memory, at: BenchLayout.pingVariable)
        try work.loadedPut { value throws in try variable.blockingPut(value) }
    }
    static let loadedTakeVariable = BenchRole.inSegment("loaded-take-variable") { work in
        let variable = try SharedVariable<UInt64>.open(in: work.memory, at: BenchLayout.pingVariable)
        try work.loadedTake { () throws -> UInt64 in try variable.blockingTake() }
    }
    static let loadedPutPosix = BenchRole.inSegment("loaded-put-posix") { work in
        let buffer = PosixSlot.open(base: work.base)
        try work.loadedPut { value throws in try buffer.put(value) }
    }
    static let loadedTakePosix = BenchRole.inSegment("loaded-take-posix") { work in
        let buffer = PosixSlot.open(base: work.base)
        try work.loadedTake { () throws -> UInt64 in try buffer.take() }
    }
}

// MARK: - The hogs, the putter and the takers (`ipc bench-peer hog`, `loaded-…`)

extension PeerWork {
    /// Burns its CPU (no system call, no pause) from ready until the bench says stop.
    func hog() throws {
        PeerLifetime.useOrdinaryScheduling()
        let parent = PeerLifetime.parentPID
        control.markReady()
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while !control.shouldStop {
            for _ in 0..<4096 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407 }
            blackHole(state)
            guard PeerLifetime.parentPID == parent, !deadline.hasPassed else {
                throw ToolError("bench-peer: the bench went away")
            }
        }
    }

    /// Puts 0..<count, then one quit value per taker (`parties`); records the count and the times.
    func loadedPut(_ put: (UInt64) throws -> Void) throws {
        PeerLifetime.useOrdinaryScheduling()
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        for value in 0..<UInt64(count) { try put(value) }
        for _ in 0..<parties { try put(LoadedBench.quit) }
        control.record(slot: slot, count: UInt64(count), start: start, end: Clock.monotonicNanoseconds())
    }

    /// Takes values until the quit value; records how many it took, their sum and when it was done.
    func loadedTake(_ take: () throws -> UInt64) throws {
        PeerLifetime.useOrdinaryScheduling()
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var taken: UInt64 = 0
        var sum: UInt64 = 0
        while true {
            let value = try take()
            if value == LoadedBench.quit { break }
            taken &+= 1
            sum &+= value
        }
        control.record(slot: slot, count: taken, start: start, end: Clock.monotonicNanoseconds(), extra: sum)
    }
}
