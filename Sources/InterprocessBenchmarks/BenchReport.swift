import Foundation
import InterprocessSystem

/// Everything one `ipc bench` run measured: what `--json` prints.
package struct BenchResults: Codable {
    package var build: String
    package var quick: Bool
    package var date: String
    package var machine: BenchMachine
    /// The cost of one clock read (monotonic clock, median), part of every per-round-trip sample.
    package var clockReadNanoseconds: Double
    package var scenarios: [BenchScenarioResult]
    /// Whether every speed target was met (correctness failures and errors count as misses).
    package var allTargetsMet: Bool

    init(build: String, quick: Bool, date: String, machine: BenchMachine, clockReadNanoseconds: Double, scenarios: [BenchScenarioResult]) {
        self.build = build
        self.quick = quick
        self.date = date
        self.machine = machine
        self.clockReadNanoseconds = clockReadNanoseconds
        self.scenarios = scenarios
        allTargetsMet = scenarios.allSatisfy { $0.error == nil && $0.checks.allSatisfy(\.passed) }
    }
}

/// The machine a run measured.
package struct BenchMachine: Codable {
    package var processors: Int
    package var cpuModel: String
    package var kernel: String

    static var current: BenchMachine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let kernel = ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "unknown")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return BenchMachine(processors: SpinPolicy.processorCount, cpuModel: model, kernel: "Linux " + kernel)
    }
}

/// What one scenario measured: its rows (ours and the baselines) and its targets.
package struct BenchScenarioResult: Codable {
    package var id: String
    package var title: String
    /// What `median` and `p99` measure, e.g. "ns per round trip" or "ops/s".
    package var unit: String
    package var higherIsBetter: Bool
    /// The `id` of the row the ratios are against.
    package var baseline: String?
    package var rows: [BenchRow] = []
    package var checks: [BenchCheck] = []
    package var notes: [String] = []
    /// Why the scenario could not be measured.
    package var error: String?

    init(id: String, title: String, unit: String, higherIsBetter: Bool, baseline: String?) {
        self.id = id
        self.title = title
        self.unit = unit
        self.higherIsBetter = higherIsBetter
        self.baseline = baseline
    }

    func row(_ id: String) -> BenchRow? { rows.first { $0.id == id } }

    /// Fills in each row's ratio to the baseline row.
    mutating func computeRatios() {
        guard let baseline, let base = row(baseline)?.median, base > 0 else { return }
        for index in rows.indices { rows[index].ratio = rows[index].median / base }
    }

    /// Checks a speed target against the rows: the ratio of the two rows' medians against the
    /// target's limit. A row that is missing, or a divisor that is not positive, fails the target
    /// (with the value 0, which JSON can carry).
    mutating func check(_ target: BenchTarget) {
        var value = 0.0
        var measured = false
        if let dividend = row(target.row)?.median, let divisor = row(target.over)?.median, divisor > 0, dividend.isFinite {
            value = dividend / divisor
            measured = true
        }
        let (text, met): (String, Bool)
        switch target.comparison {
        case .atMost(let limit): (text, met) = ("≤ \(Self.format(limit))×", value <= limit)
        case .atLeast(let limit): (text, met) = ("≥ \(Self.format(limit))×", value >= limit)
        case .below(let limit): (text, met) = ("< \(Self.format(limit))×", value < limit)
        }
        checks.append(BenchCheck(name: target.name, target: text, value: value, passed: measured && met))
    }

    /// A correctness check (value 1 = correct).
    mutating func correctness(_ name: String, _ correct: Bool) {
        checks.append(BenchCheck(name: name, target: "correct", value: correct ? 1 : 0, passed: correct))
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.2g", value)
    }
}

/// One measured variant.
package struct BenchRow: Codable {
    package var id: String
    package var name: String
    package var median: Double
    package var p99: Double?
    /// Samples (or batches, or runs) the median is taken over.
    package var samples: Int
    package var ratio: Double?
    /// For contention runs: whether the shared counter ended at the total.
    package var correct: Bool?
    /// The smallest and largest batch or run, where the median is over batches or runs (per-sample
    /// rows give a p99 instead).
    package var min: Double?
    package var max: Double?
}

/// A target or a correctness check, and whether it was met.
package struct BenchCheck: Codable {
    package var name: String
    package var target: String
    package var value: Double
    package var passed: Bool
}

/// The human-readable table.
package enum BenchTable {
    package static func render(_ results: BenchResults) -> [String] {
        var lines: [String] = []
        lines.append(
            "ipc bench — \(results.build) build, \(results.quick ? "quick" : "full") run, \(results.date)")
        lines.append(
            "machine: \(results.machine.processors) CPUs, \(results.machine.cpuModel), \(results.machine.kernel)")
        lines.append(
            "clock read: \(duration(results.clockReadNanoseconds)) (included once in every per-round-trip sample)")
        for (index, scenario) in results.scenarios.enumerated() {
            lines.append("")
            lines.append("\(index + 1). \(scenario.title) [\(scenario.unit)]")
            if let error = scenario.error {
                lines.append("   ERROR: \(error)")
            }
            if !scenario.rows.isEmpty {
                let header = ["", "median", "p99", "min … max", "n", "ratio"]
                let cells = scenario.rows.map { row in
                    [
                        row.name + (row.correct == false ? " (COUNTER WRONG)" : ""),
                        value(row.median, unit: scenario.unit),
                        row.p99.map { value($0, unit: scenario.unit) } ?? "-",
                        row.min.flatMap { min in
                            row.max.map { value(min, unit: scenario.unit) + " … " + value($0, unit: scenario.unit) }
                        } ?? "-",
                        "\(row.samples)",
                        row.ratio.map { String(format: "%.2f×", $0) } ?? "-",
                    ]
                }
                lines += align([header] + cells).map { "   " + $0 }
                if let baseline = scenario.baseline.flatMap(scenario.row) {
                    lines.append("   ratio = median / median of \"\(baseline.name)\"")
                }
            }
            for check in scenario.checks {
                let value = check.target == "correct" ? "" : ": " + String(format: "%.2f×", check.value)
                lines.append("   [\(check.passed ? "PASS" : "FAIL")] \(check.name) (target \(check.target))\(value)")
            }
            for note in scenario.notes { lines.append("   note: \(note)") }
        }
        lines.append("")
        lines.append(results.allTargetsMet ? "all targets met" : "some targets missed (see FAIL lines)")
        return lines
    }

    /// A value in the scenario's unit, readable.
    static func value(_ value: Double, unit: String) -> String {
        unit.hasPrefix("ns") ? duration(value) : rate(value)
    }

    /// "6.1 ns", "187 ns", "74.2 µs", "1.20 ms".
    static func duration(_ nanoseconds: Double) -> String {
        guard nanoseconds.isFinite else { return "-" }
        switch nanoseconds {
        case ..<100: return String(format: "%.1f ns", nanoseconds)
        case ..<10_000: return String(format: "%.0f ns", nanoseconds)
        case ..<1_000_000: return String(format: "%.1f µs", nanoseconds / 1000)
        default: return String(format: "%.2f ms", nanoseconds / 1_000_000)
        }
    }

    /// "12.3 M/s", "45.6 k/s".
    static func rate(_ perSecond: Double) -> String {
        guard perSecond.isFinite else { return "-" }
        switch perSecond {
        case 1_000_000...: return String(format: "%.2f M/s", perSecond / 1_000_000)
        case 1000...: return String(format: "%.1f k/s", perSecond / 1000)
        default: return String(format: "%.0f /s", perSecond)
        }
    }

    /// Columns padded to a common width: the first left-aligned, the others right-aligned.
    private static func align(_ rows: [[String]]) -> [String] {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + pad : pad + cell
            }
            .joined(separator: "  ")
        }
    }
}
