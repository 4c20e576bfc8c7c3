#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import Interprocess
import InterprocessSystem

/// `ipc ls` and `ipc gc` on the sockets and FIFOs of the runtime directory.
@Suite("ipc ls/gc for local objects", .serialized, .timeLimit(.minutes(3)))
struct LocalToolTests {
    /// Runs `ipc arguments…` with the runtime directory `directory`.
    private func ipc(_ directory: String, _ arguments: String...) throws -> (succeeded: Bool, output: String, error: String) {
        let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        var environment: [String: String] = [:]
        for (name, value) in ProcessEnvironment.all { environment[name] = value }
        environment["INTERPROCESS_RUNTIME_DIR"] = directory
        let (termination, output, error) = try ChildProcess.run(path, arguments, timeout: .seconds(30), environment: environment)
        return (termination == .exited(0), output, error)
    }

    @Test func lsShowsSocketsWithTheirServerAndPipesAndGcRemovesOnlyStaleSockets() throws {
        try withLocalDirectory("tool") { directory in
            let live = try Peer.spawn("local-serve", directory + "/live.sock")
            defer { live.stop() }
            #expect(live.readLine() == "listening")
            let dead = try Peer.spawn("local-serve", directory + "/dead.sock")
            defer { dead.stop() }
            #expect(dead.readLine() == "listening")
            dead.kill(signal: SIGKILL)
            #expect(dead.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            try NamedPipe.create(path: directory + "/jobs.fifo")

            let list = try ipc(directory, "ls")
            #expect(list.succeeded, "\(list.error)")
            let lines = list.output.split(separator: "\n").map(String.init)
            #expect(lines.contains("sockets and pipes in \(directory):"), "\(list.output)")
            let liveRow = try #require(lines.first { $0.hasPrefix("live.sock ") }, "\(list.output)")
            #expect(liveRow.contains("socket") && liveRow.contains("listening") && liveRow.contains("pid \(live.pid)") && liveRow.contains("0600"))
            let deadRow = try #require(lines.first { $0.hasPrefix("dead.sock ") }, "\(list.output)")
            #expect(deadRow.contains("stale") && !deadRow.contains("pid"))
            #expect(lines.contains { $0.hasPrefix("jobs.fifo ") && $0.contains("fifo") })
            #expect(!lines.contains { $0.hasPrefix("live.sock.lock") }) // lock files belong to their socket

            let listJSON = try ipc(directory, "ls", "--json")
            #expect(listJSON.succeeded)
            let array = try #require(try JSONSerialization.jsonObject(with: Data(listJSON.output.utf8)) as? [[String: Any]])
            let entry = try #require(array.first { $0["name"] as? String == "live.sock" })
            #expect(entry["kind"] as? String == "socket")
            #expect(entry["state"] as? String == "listening")
            #expect(entry["serverPID"] as? Int == Int(live.pid))
            #expect(entry["path"] as? String == directory + "/live.sock")

            let dry = try ipc(directory, "gc", "--dry-run")
            #expect(dry.succeeded)
            #expect(dry.output.contains("would remove \(directory)/dead.sock (socket; its server is gone)"), "\(dry.output)")
            #expect(fileMode(directory + "/dead.sock") != nil)

            let gc = try ipc(directory, "gc")
            #expect(gc.succeeded)
            #expect(gc.output.contains("removed \(directory)/dead.sock"), "\(gc.output)")
            #expect(!gc.output.contains("live.sock") && !gc.output.contains("jobs.fifo"))
            #expect(directoryEntries(directory) == ["jobs.fifo", "live.sock", "live.sock.lock"])
            #expect(try ipc(directory, "gc").output.contains("nothing to remove"))

            // The live server still serves; when it stops, its files go with it.
            let socket = try LocalSocket.connect(path: directory + "/live.sock", timeout: .seconds(20))
            #expect(live.readLine()?.hasPrefix("accepted") == true)
            socket.close()
            #expect(live.readLine() == "peer gone")
            #expect(live.wait(timeout: .seconds(20)) == .exited(0))
            try NamedPipe.remove(path: directory + "/jobs.fifo")
        }
    }
}
