import Foundation
import InterprocessSystem
import SystemPackage

/// Runs scenarios of ``BenchScenarios/all`` and gathers what they measured: what `ipc bench` prints
/// as a table or as JSON.
package enum BenchSuite {
    /// Measures `scenarios` one after the other (`willMeasure` is told before each), on a machine
    /// described once, with the clock's read cost measured first.
    /// - Parameter build: "release" or "debug", as the caller was compiled.
    package static func run(
        _ scenarios: [any BenchScenario.Type], plan: BenchPlan, build: String,
        willMeasure: (any BenchScenario.Type) -> Void = { _ in }
    ) -> BenchResults {
        let clockRead = BenchClock.readCost()
        var results: [BenchScenarioResult] = []
        for scenario in scenarios {
            willMeasure(scenario)
            results.append(run(scenario, plan))
        }
        return BenchResults(
            build: build, quick: plan.quick, date: ISO8601DateFormatter().string(from: Date()), machine: .current,
            clockReadNanoseconds: clockRead, scenarios: results)
    }

    /// Runs one scenario; a failure becomes the result's `error` (the other scenarios still run).
    package static func run(_ scenario: any BenchScenario.Type, _ plan: BenchPlan) -> BenchScenarioResult {
        var result = BenchScenarioResult(
            id: scenario.id, title: scenario.title, unit: scenario.unit, higherIsBetter: scenario.higherIsBetter,
            baseline: scenario.baseline)
        do {
            try scenario.measure(&result, plan)
            result.computeRatios()
            for target in scenario.targets { result.check(target) }
        } catch {
            result.error = describe(error)
            result.computeRatios()
        }
        return result
    }

    /// An error as `ipc` words it: its description, and the number of an `Errno`.
    static func describe(_ error: any Error) -> String {
        if let error = error as? Errno { return "\(error) (errno \(error.rawValue))" }
        return "\(error)"
    }
}

/// How much to measure: the full run, or `--quick` (a smoke run of a few seconds). Each scenario
/// adds the amounts it needs as an extension in its own file, each with its full and quick value.
package struct BenchPlan: Sendable {
    package var quick: Bool

    package init(quick: Bool) { self.quick = quick }

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
