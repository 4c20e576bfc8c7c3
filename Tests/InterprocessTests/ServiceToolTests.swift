// `ipc call` and `ipc serve`, run as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

private struct Job: Codable, Equatable, Sendable {
    var id: Int
    var path: String
}

@Suite("ipc call and serve", .serialized, .timeLimit(.minutes(5)))
struct ServiceToolTests {
    private func ipcPath() throws -> String {
        try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
    }

    /// Runs `ipc arguments…` to completion (killed after 30 s).
    private func ipc(_ arguments: String...) throws -> (termination: ChildProcess.Termination?, output: String, error: String) {
        let result = try ChildProcess.run(try ipcPath(), arguments, timeout: .seconds(30))
        return (result.termination, result.standardOutput, result.standardError)
    }

    @Test func callAndServeFromTheShell() throws {
        try withCleanNames("svccli") { name in
            defer { try? Service<String, String>.remove(name: name) }
            let server = try ChildProcess.spawn(
                try ipcPath(), ["serve", name, "--echo", "--create", "--prefix", "got ", "--count", "3", "--capacity", "4"],
                standardInput: .null, standardOutput: .pipe, standardError: .inherit)
            defer { server.stop() }
            #expect(pollUntil { SharedMemory.exists(name: name) })
            var result = try ipc("call", name, "hello")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output == "got hello\n")
            result = try ipc("call", name, "hi", "--json")
            #expect(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? NSDictionary == ["bytes": 6, "text": "got hi"])
            let listed = try ipc("ls")
            #expect(listed.output.contains("4 slots"), "\(listed.output)")
            let inspected = try ipc("inspect", name)
            #expect(inspected.output.contains("replies"), "\(inspected.output)")
            result = try ipc("call", name, "last")
            #expect(result.output == "got last\n")
            #expect(server.readLine(timeout: .seconds(30)) == "served 3 requests of \(name)")
            #expect(server.wait(timeout: .seconds(30)) == .exited(0))
            // Nobody serves now: the call times out.
            let start = Clock.monotonicNanoseconds()
            result = try ipc("call", name, "anyone?", "--timeout", "0.2")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("timedOut"), "\(result.error)")
            #expect(elapsed(since: start) < 20)
            result = try ipc("call", name + "-none", "x")
            #expect(result.termination == .exited(1) && result.error.contains("notFound"), "\(result.error)")
        }
    }

    @Test func callChecksTheRequestFormat() async throws {
        try await onOwnQueue { _ in
            let name = TestNames.make("svcclijson")
            let jobs = try Service<Job, Job>.create(name: name, capacity: 2)
            defer { jobs.detach() }
            // On an executor of its own: this test's own queue blocks while `ipc` runs, and the
            // global pool (one thread per CPU) may be taken by other tests' blocking calls — the
            // server then never ran and the call timed out (seen once, load average 15).
            let serverQueue = OwnQueueExecutor()
            let server = Task.detached(executorPreference: serverQueue) { () async throws -> Void in
                try await jobs.serve { Job(id: $0.id * 10, path: $0.path) }
            }
            var result = try ipc("call", name, "{\"id\":4,\"path\":\"/p\"}", "--json")
            #expect(result.termination == .exited(0), "\(result.error)")
            let reply = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? NSDictionary
            #expect(reply?["value"] as? NSDictionary == ["id": 40, "path": "/p"], "\(result.output)")
            result = try ipc("call", name, "not json")
            #expect(result.termination == .exited(1) && result.error.contains("not JSON"), "\(result.error)")
            result = try ipc("call", name, "{\"id\":\"x\"}")
            #expect(result.termination == .exited(1) && result.error.contains("requestFailed"), "a request the server cannot decode is refused: \(result.error)")
            jobs.close()
            try await server.value

            let numbers = try Service<Int, Int>.create(name: name + "-raw", capacity: 2)
            defer { numbers.detach() }
            result = try ipc("call", name + "-raw", "5")
            #expect(result.termination == .exited(1) && result.error.contains("raw values"), "\(result.error)")
            let lengths = try Service<String, Int>.create(name: name + "-mixed", capacity: 2)
            defer { lengths.detach() }
            result = try ipc("serve", name + "-mixed", "--echo", "--count", "1")
            #expect(result.termination == .exited(1) && result.error.contains("same type"), "\(result.error)")
        }
    }
}
