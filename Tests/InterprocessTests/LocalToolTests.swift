#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

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
            // Every file starts with the directory's unique name and every `gc` is limited to it: a `gc`
            // of everything would also sweep the abandoned segments that tests running beside this one
            // are still looking at.
            let unique = String(directory.split(separator: "/").last!)
            let live = unique + "-live.sock", dead = unique + "-dead.sock", fifo = unique + "-jobs.fifo"
            let server = try Peer.spawn("local-serve", directory + "/" + live)
            defer { server.stop() }
            #expect(server.readLine() == "listening")
            let deadServer = try Peer.spawn("local-serve", directory + "/" + dead)
            defer { deadServer.stop() }
            #expect(deadServer.readLine() == "listening")
            deadServer.kill(signal: SIGKILL)
            #expect(deadServer.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            try NamedPipe.create(path: directory + "/" + fifo)

            let list = try ipc(directory, "ls")
            #expect(list.succeeded, "\(list.error)")
            let lines = list.output.split(separator: "\n").map(String.init)
            #expect(lines.contains("sockets and pipes in \(directory):"), "\(list.output)")
            let liveRow = try #require(lines.first { $0.hasPrefix(live + " ") }, "\(list.output)")
            #expect(liveRow.contains("socket") && liveRow.contains("listening") && liveRow.contains("pid \(server.pid)") && liveRow.contains("0600"))
            let deadRow = try #require(lines.first { $0.hasPrefix(dead + " ") }, "\(list.output)")
            #expect(deadRow.contains("stale") && !deadRow.contains("pid"))
            #expect(lines.contains { $0.hasPrefix(fifo + " ") && $0.contains("fifo") })
            #expect(!lines.contains { $0.hasPrefix(live + ".lock") }) // lock files belong to their socket

            let listJSON = try ipc(directory, "ls", "--json")
            #expect(listJSON.succeeded)
            let array = try #require(try JSONSerialization.jsonObject(with: Data(listJSON.output.utf8)) as? [[String: Any]])
            let entry = try #require(array.first { $0["name"] as? String == live })
            #expect(entry["kind"] as? String == "socket")
            #expect(entry["state"] as? String == "listening")
            #expect(entry["serverPID"] as? Int == Int(server.pid))
            #expect(entry["path"] as? String == directory + "/" + live)

            let dry = try ipc(directory, "gc", "--dry-run", "--prefix", unique)
            #expect(dry.succeeded)
            #expect(dry.output.contains("would remove \(directory)/\(dead) (socket; its server is gone)"), "\(dry.output)")
            #expect(fileMode(directory + "/" + dead) != nil)

            let gc = try ipc(directory, "gc", "--prefix", unique)
            #expect(gc.succeeded)
            #expect(gc.output.contains("removed \(directory)/\(dead)"), "\(gc.output)")
            #expect(!gc.output.contains(live) && !gc.output.contains(fifo))
            #expect(directoryEntries(directory) == [fifo, live, live + ".lock"].sorted())
            #expect(try ipc(directory, "gc", "--prefix", unique).output.contains("nothing to remove"))

            // The live server still serves; when it stops, its files go with it.
            let socket = try LocalSocket.blockingConnect(path: directory + "/" + live, timeout: .seconds(20))
            #expect(server.readLine()?.hasPrefix("accepted") == true)
            socket.close()
            #expect(server.readLine() == "peer gone")
            #expect(server.wait(timeout: .seconds(20)) == .exited(0))
            try NamedPipe.remove(path: directory + "/" + fifo)
        }
    }
}
