import ArgumentParser
import InterprocessBenchmarks
import InterprocessToolSupport

/// `ipc bench`: measures our primitives and the operating system's baselines in one run and prints
/// medians, p99s and ratios against the baselines, with the speed targets marked PASS or FAIL.
///
/// The scenarios live in the InterprocessBenchmarks target, one file each, registered in
/// ``BenchScenarios/all``; their peers are this tool started again as `ipc bench-peer ROLE`
/// (``BenchPeer``). This command only chooses, reports and sets the exit status.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the primitives against OS baselines (run a release build).",
        discussion: """
            Run it as a release build: swift run -c release ipc bench. Scenarios: \
            \(BenchScenarios.all.map { "\($0.id) (\($0.summary))" }.joined(separator: "; ")). The exit status \
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
    var only: [ScenarioID] = []

    func run() throws {
        #if DEBUG
        let build = "debug"
        complain("warning: this is a debug build, its numbers mean nothing; run `swift run -c release ipc bench`")
        #else
        let build = "release"
        #endif
        let chosen = only.isEmpty ? BenchScenarios.all : BenchScenarios.all.filter { only.map(\.id).contains($0.id) }
        let results = BenchSuite.run(chosen, plan: BenchPlan(quick: quick), build: build) { scenario in
            if !json { StandardStream.write(Terminal.escape("measuring: \(scenario.title)…") + "\n", to: 2) }
        }
        if json {
            StandardStream.write(try Format.json(results))
        } else {
            BenchTable.render(results).forEach(say)
        }
        let broken = results.scenarios.filter { $0.error != nil || $0.rows.contains { $0.correct == false } }
        if !broken.isEmpty {
            complain("failed: \(broken.map(\.id).joined(separator: ", "))")
            throw ExitCode.failure
        }
    }
}

/// The id of a registered scenario, as `--scenario` takes it.
struct ScenarioID: ExpressibleByArgument {
    var id: String

    init?(argument: String) {
        guard BenchScenarios.named(argument) != nil else { return nil }
        id = argument
    }

    static var allValueStrings: [String] { BenchScenarios.ids }

    static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
}
