import Interprocess
import InterprocessSystem

/// Scenario 4: four ping-pong pairs (eight peer processes) at once, on a machine with fewer CPUs:
/// total round trips per second through ``ProcessSemaphore`` pairs, against four pairs doing pipe
/// ping-pong. Each pinging peer counts its round trips between go and stop and records its own
/// times; the row is the sum of the pairs' rates (median of the runs; the variants take turns).
enum OversubscribedBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.oversubscribed.rawValue, title: BenchScenarioID.oversubscribed.title,
            unit: "round trips/s, all pairs together", higherIsBetter: true, baseline: "pipe")
    }

    static let pairs = BenchLayout.pairCount

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        var semaphoreRates: [Double] = []
        var pipeRates: [Double] = []
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.oversubscribedRuns {
                semaphoreRates.append(try run(pipes: false, session, control, plan))
                pipeRates.append(try run(pipes: true, session, control, plan))
            }
        }
        for (id, name, rates) in [
            ("semaphore", "ProcessSemaphore pairs", semaphoreRates), ("pipe", "pipe pairs (1 byte each way)", pipeRates),
        ] {
            let summary = Summary(rates)
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.computeRatios()
        scenario.target(
            "ProcessSemaphore pairs / pipe pairs (throughput)", scenario.row("semaphore")!.median / scenario.row("pipe")!.median,
            atLeast: 1)
        scenario.notes.append(
            "\(pairs) pairs = \(2 * pairs) processes on \(SpinPolicy.processorCount) CPUs; "
                + "\(plan.oversubscribedDuration / 1_000_000) ms per run; median of \(plan.oversubscribedRuns) run(s)")
    }

    /// One run: start all pairs, let them go for the planned time, stop them and add up their rates.
    private static func run(pipes: Bool, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan) throws -> Double {
        control.clear()
        defer { session.peers.killAll() }
        for pair in 0..<pairs {
            let slot = ["--slot", "\(pair)"]
            if pipes {
                let toPonger = try BenchIO.pipe()
                let toPinger = try BenchIO.pipe()
                let pongerArguments = slot + ["--in", "\(toPonger.read.fd)", "--out", "\(toPinger.write.fd)"]
                let pingerArguments = slot + ["--in", "\(toPinger.read.fd)", "--out", "\(toPonger.write.fd)"]
                try session.peers.spawn(.pairPongPipe, segment: session.name, pongerArguments, passing: [toPonger.read, toPinger.write])
                try session.peers.spawn(.pairPingPipe, segment: session.name, pingerArguments, passing: [toPinger.read, toPonger.write])
            } else {
                _ = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pairPing(pair), value: 0)
                _ = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pairPong(pair), value: 0)
                try session.peers.spawn(.pairPongSemaphore, segment: session.name, slot)
                try session.peers.spawn(.pairPingSemaphore, segment: session.name, slot)
            }
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try session.peers.awaitReady(control, count: 2 * pairs, deadline: deadline)
        control.sayGo()
        Clock.sleep(nanoseconds: plan.oversubscribedDuration)
        try session.peers.checkRunning()
        control.sayStop()
        try session.peers.finish(deadline: deadline)
        var total = 0.0
        for pair in 0..<pairs {
            let result = control.result(slot: pair)
            guard result.end > result.start, result.count > 0 else {
                throw ToolError("pair \(pair) recorded no round trips")
            }
            total += Double(result.count) / (Double(result.end - result.start) / 1e9)
        }
        return total
    }
}
