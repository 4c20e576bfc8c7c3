// `ipc demo workers`, run as a user would: worker processes share jobs through a channel and return
// results through a shared heap.
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite("ipc demo workers", .serialized, .timeLimit(.minutes(5)))
struct DemoToolTests {
    private func ipc(_ arguments: String...) throws -> (termination: ChildProcess.Termination?, output: String, error: String) {
        let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        let result = try ChildProcess.run(path, arguments, timeout: .seconds(60))
        return (result.termination, result.standardOutput, result.standardError)
    }

    /// Each worker is a process of its own that did some of the jobs; the counts add up to every job,
    /// each done once (the demo checks every answer and exits 1 otherwise); its objects are gone.
    @Test func workersShareTheJobsAndReturnResultsThroughTheHeap() throws {
        try withCleanNames("demow") { prefix in
            let result = try ipc("demo", "workers", "--workers", "3", "--jobs", "600", "--name", prefix)
            #expect(result.termination == .exited(0), "\(result.error)\n\(result.output)")
            let lines = result.output.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.contains("every job done exactly once: 600 answers adopted from the heap") }, "\(result.output)")
            #expect(lines.contains { $0.contains("every worker exited 0") })
            #expect(lines.contains { $0.contains("heap checked: consistent, 0 blocks in use") })
            #expect(lines.contains { $0.contains("are gone") })

            // "worker pid P did N jobs", as the parent counted them, once per worker; and each
            // worker's own count, from the worker itself, matches.
            let counted = lines.compactMap { line -> (pid: String, jobs: Int)? in
                guard line.hasPrefix("[demo pid "), let marker = line.range(of: "]   worker pid ") else { return nil }
                let words = line[marker.upperBound...].split(separator: " ")
                guard words.count >= 3, words[1] == "did", let jobs = Int(words[2]) else { return nil }
                return (String(words[0]), jobs)
            }
            #expect(counted.count == 3, "\(result.output)")
            #expect(counted.map(\.jobs).reduce(0, +) == 600)
            let workerPIDs = Set(lines.compactMap { line -> String? in
                guard line.hasPrefix("[worker pid "), line.contains(" did ") else { return nil }
                return line.split(separator: " ")[2].dropLast().description
            })
            #expect(workerPIDs == Set(counted.map(\.pid)), "\(result.output)")
            for name in ["-jobs", "-results", "-heap"] {
                #expect(!SharedMemory.exists(name: prefix + name))
            }
        }
    }

    /// One worker does every job; bad counts are refused before anything is created.
    @Test func oneWorkerAndBadCounts() throws {
        try withCleanNames("demow1") { prefix in
            let result = try ipc("demo", "workers", "--workers", "1", "--jobs", "50", "--name", prefix)
            #expect(result.termination == .exited(0), "\(result.error)\n\(result.output)")
            #expect(result.output.contains("did 50 jobs"))
            #expect(try ipc("demo", "workers", "--workers", "0", "--name", prefix).termination != .exited(0))
            #expect(try ipc("demo", "workers", "--jobs", "0", "--name", prefix).termination != .exited(0))
        }
    }
}
