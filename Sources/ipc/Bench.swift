import ArgumentParser
import Foundation
import Interprocess
import InterprocessSystem

/// `ipc bench`: measures our primitives and the operating system's baselines in one run and prints
/// medians, p99s and ratios against the baselines, with the speed targets marked PASS or FAIL.
///
/// Each scenario lives in its own file (BenchUncontended, BenchPingPong, BenchContention,
/// BenchOversubscribed, BenchSharedVariable, BenchLoaded); peers are this tool started again as `ipc bench-peer ROLE` (BenchPeer).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the primitives against OS baselines (run a release build).",
        discussion: """
            Run it as a release build: swift run -c release ipc bench. Scenarios: uncontended lock \
            (ProcessMutex vs pthread robust mutex vs Swift Mutex), ping-pong between two processes \
            (spinning floor, ProcessSemaphore, ProcessEvent, pipe, Unix socket), two processes \
            contending on one lock, 4 ping-pong pairs on 2 CPUs (oversubscribed), SharedVariable \
            put/take round trips (two processes, two threads, an in-process condition-variable box), \
            1 putter and 4 takers moving values through one slot beside one CPU-bound process per CPU \
            (SharedVariable vs POSIX semaphores; loaded), local socket round trips and throughput next \
            to pipe and socketpair, and a segment handed over as a descriptor against a named one \
            created and opened. The exit status \
            is 0 even when a speed target is missed; it is 1 when a scenario fails or a count is wrong.
            """
    )

    @Flag(help: "A short smoke run (a few seconds; the numbers are rough).")
    var quick = false

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Option(
        name: .customLong("scenario"),
        help: ArgumentHelp("Run only this scenario (repeatable).", valueName: "id"))
    var only: [BenchScenarioID] = []

    func run() throws {
        #if DEBUG
        let build = "debug"
        complain("warning: this is a debug build, its numbers mean nothing; run `swift run -c release ipc bench`")
        #else
        let build = "release"
        #endif
        let plan = BenchPlan(quick: quick)
        let chosen = only.isEmpty ? BenchScenarioID.allCases : BenchScenarioID.allCases.filter(only.contains)
        let clockRead = BenchClock.readCost()
        var scenarios: [BenchScenario] = []
        for id in chosen {
            if !json { StandardStream.write(Terminal.escape("measuring: \(id.title)…") + "\n", to: 2) }
            scenarios.append(id.run(plan))
        }
        let results = BenchResults(
            build: build, quick: quick, date: ISO8601DateFormatter().string(from: Date()), machine: .current,
            clockReadNanoseconds: clockRead, scenarios: scenarios)
        if json {
            StandardStream.write(try Format.json(results))
        } else {
            BenchTable.render(results).forEach(say)
        }
        let broken = scenarios.filter { $0.error != nil || $0.rows.contains { $0.correct == false } }
        if !broken.isEmpty {
            complain("failed: \(broken.map(\.id).joined(separator: ", "))")
            throw ExitCode.failure
        }
    }
}

/// The scenarios, in the order they run.
enum BenchScenarioID: String, CaseIterable, ExpressibleByArgument {
    case uncontendedLock = "uncontended-lock"
    case pingPong = "ping-pong"
    case contendedLock = "contended-lock"
    case oversubscribed = "oversubscribed"
    case sharedVariable = "shared-variable"
    case loaded = "loaded"
    case localSocketLatency = "local-socket-latency"
    case localSocketThroughput = "local-socket-throughput"
    case segmentHandOver = "segment-hand-over"
    case asyncWake = "async-wake"

    var title: String {
        switch self {
        case .uncontendedLock: "uncontended lock+unlock"
        case .pingPong: "ping-pong between two processes"
        case .contendedLock: "two processes contending on one lock"
        case .oversubscribed: "oversubscribed: 4 ping-pong pairs (8 processes) at once"
        case .sharedVariable: "SharedVariable put/take round trip"
        case .loaded: "loaded: 1 putter → 4 takers through one slot, CPU hogs beside them"
        case .localSocketLatency: "local socket round trip, next to pipe and socketpair"
        case .localSocketThroughput: "local socket throughput, next to pipe and socketpair"
        case .segmentHandOver: "segment hand-over: anonymous (descriptor) vs named (create + open)"
        case .asyncWake: "async wake-up: 1, 4 and 1,000 async waits vs a blocked thread"
        }
    }

    /// Runs the scenario; a failure becomes the scenario's `error` (the other scenarios still run).
    func run(_ plan: BenchPlan) -> BenchScenario {
        var scenario: BenchScenario
        switch self {
        case .uncontendedLock: scenario = UncontendedLockBench.scenario()
        case .pingPong: scenario = PingPongBench.scenario()
        case .contendedLock: scenario = ContendedLockBench.scenario()
        case .oversubscribed: scenario = OversubscribedBench.scenario()
        case .sharedVariable: scenario = SharedVariableBench.scenario()
        case .loaded: scenario = LoadedBench.scenario()
        case .localSocketLatency: scenario = LocalSocketLatencyBench.scenario()
        case .localSocketThroughput: scenario = LocalSocketThroughputBench.scenario()
        case .segmentHandOver: scenario = HandOverBench.scenario()
        case .asyncWake: scenario = AsyncWakeBench.scenario()
        }
        do {
            switch self {
            case .uncontendedLock: try UncontendedLockBench.measure(&scenario, plan)
            case .pingPong: try PingPongBench.measure(&scenario, plan)
            case .contendedLock: try ContendedLockBench.measure(&scenario, plan)
            case .oversubscribed: try OversubscribedBench.measure(&scenario, plan)
            case .sharedVariable: try SharedVariableBench.measure(&scenario, plan)
            case .loaded: try LoadedBench.measure(&scenario, plan)
            case .localSocketLatency: try LocalSocketLatencyBench.measure(&scenario, plan)
            case .localSocketThroughput: try LocalSocketThroughputBench.measure(&scenario, plan)
            case .segmentHandOver: try HandOverBench.measure(&scenario, plan)
            case .asyncWake: try AsyncWakeBench.measure(&scenario, plan)
            }
            scenario.computeRatios()
        } catch {
            scenario.error = ToolError.message(for: error) ?? "\(error)"
            scenario.computeRatios()
        }
        return scenario
    }
}

/// How much to measure: the full run, or `--quick` (a smoke run of a few seconds).
struct BenchPlan {
    var quick: Bool

    /// Uncontended lock: iterations per timed batch; fresh instances, and batches per instance
    /// (after one warm-up batch).
    var lockIterations: Int { quick ? 100_000 : 1_000_000 }
    var lockInstances: Int { quick ? 1 : 5 }
    var lockBatches: Int { quick ? 5 : 4 }

    /// Ping-pong: rounds of chunks; each chunk is warm-up round trips, then samples until
    /// `pingPongSamples` or `pingPongBudget` (ns).
    var pingPongRounds: Int { quick ? 1 : 5 }
    var pingPongWarmup: Int { quick ? 200 : 1000 }
    var pingPongSamples: Int { quick ? 20_000 : 40_000 }
    var pingPongBudget: UInt64 { quick ? 150_000_000 : 600_000_000 }

    /// Contended lock: increments per process, and runs per variant.
    var contendedIterations: Int { quick ? 50_000 : 1_000_000 }
    var contendedRuns: Int { quick ? 1 : 5 }

    /// Oversubscribed: seconds per run, runs per variant.
    var oversubscribedDuration: UInt64 { quick ? 300_000_000 : 1_500_000_000 }
    var oversubscribedRuns: Int { quick ? 1 : 5 }

    /// Loaded: values moved from the putter to the takers per run, runs per variant, CPU hogs (one
    /// per CPU).
    var loadedValues: Int { quick ? 2_000 : 50_000 }
    var loadedRuns: Int { quick ? 1 : 3 }
    var loadedHogs: Int { SpinPolicy.processorCount }

    /// The most a scenario step may take before its peers are killed.
    var stepTimeout: Duration { .seconds(60) }
}

enum BenchClock {
    @inline(__always)
    static func now() -> UInt64 { Clock.monotonicNanoseconds() }

    /// The median cost of one monotonic clock read.
    static func readCost() -> Double {
        var samples: [Double] = []
        samples.reserveCapacity(20_000)
        for _ in 0..<20_000 {
            let start = now()
            let end = now()
            samples.append(Double(end &- start))
        }
        return Summary(samples).median
    }
}
