import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc check NAME`: walks a heap and prints every inconsistency; exit status 1 if there is one.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a heap: walk every block, free list and named object, and print every inconsistency.",
        discussion: "Exit status 0 when the heap is consistent, 1 when a problem is found (or it cannot be checked)."
    )

    @Argument(help: "The heap's name.")
    var name: String

    @OptionGroup var trust: TrustOptions

    @Flag(help: "Print a JSON object: name, consistent, problems.")
    var json = false

    struct Result: Encodable {
        var name: String
        var consistent: Bool
        var problems: [String]
    }

    func run() throws {
        let info = try SharedMemory.info(name: name)
        let heap = try HeapReport.open(name, info: info, trusting: trust.trusted)
        defer { heap.close() }
        let report = try heap.check()
        if json {
            StandardStream.write(try Format.json(Result(name: name, consistent: report.isConsistent, problems: report.problems)))
        } else if report.isConsistent {
            let blocks = report.statistics.map { " (\($0.blocks) block\($0.blocks == 1 ? "" : "s") in use, \(Format.bytes($0.usedBytes)) of \(Format.bytes($0.capacity)))" } ?? ""
            say("\(name): consistent\(blocks)")
        } else {
            for problem in report.problems { say(problem) }
            say("\(name): \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")")
        }
        if !report.isConsistent { throw ExitCode.failure }
    }
}
