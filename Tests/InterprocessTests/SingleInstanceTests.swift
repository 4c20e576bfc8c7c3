#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

@Suite("SingleInstance", .serialized, .timeLimit(.minutes(3)))
struct SingleInstanceTests {
    /// Starts `local-single NAME TAG START` with the runtime directory `directory`.
    private func launch(_ directory: String, _ name: String, _ tag: String, start: UInt64 = 0) throws -> ChildProcess {
        try Peer.spawn(environment: "INTERPROCESS_RUNTIME_DIR", directory, "local-single", name, tag, "\(start)")
    }

    @Test func tenLaunchesAtOnceGiveOnePrimaryThatReceivesTheOtherNine() throws {
        try withLocalDirectory("single") { directory in
            let name = "app"
            let start = Clock.monotonicNanoseconds() + 300_000_000
            let children = try (0..<10).map { try launch(directory, name, "t\($0)", start: start) }
            defer { children.forEach { $0.stop() } }
            var primary: ChildProcess?
            var secondaries: [(ChildProcess, String)] = []
            for (index, child) in children.enumerated() {
                let line = child.readLine(timeout: .seconds(60))
                if line == "primary" {
                    #expect(primary == nil, "a second primary: t\(index)")
                    primary = child
                } else {
                    #expect(line?.hasPrefix("secondary ") == true, "t\(index) said \(line ?? "nothing")")
                    secondaries.append((child, "t\(index)"))
                }
            }
            let first = try #require(primary)
            #expect(secondaries.count == 9)
            for (child, _) in secondaries {
                #expect(child.wait(timeout: .seconds(30)) == .exited(0))
            }
            // Every secondary was told the primary's pid, and the primary got its arguments.
            var received: Set<String> = []
            for _ in 0..<9 {
                let line = try #require(first.readLine(timeout: .seconds(30)))
                let parts = line.split(separator: " ").map(String.init)
                #expect(parts.count == 3 && parts[0] == "launch", "\(line)")
                if parts.count == 3 {
                    received.insert(parts[1])
                    #expect(secondaries.contains { $0.0.pid == Int32(parts[2]) && $0.1 == parts[1] }, "\(line)")
                }
            }
            #expect(received == Set(secondaries.map(\.1)))
            first.tell()
            #expect(first.wait(timeout: .seconds(30)) == .exited(0))
            // The primary closed: nothing is left behind.
            #expect(directoryEntries(directory).isEmpty)
        }
    }

    @Test func whenThePrimaryIsKilledTheNextLaunchBecomesPrimary() throws {
        try withLocalDirectory("single2") { directory in
            let name = "editor"
            let first = try launch(directory, name, "a")
            defer { first.stop() }
            #expect(first.readLine(timeout: .seconds(30)) == "primary")
            let second = try launch(directory, name, "b")
            defer { second.stop() }
            #expect(second.readLine(timeout: .seconds(30)) == "secondary \(first.pid)")
            #expect(first.readLine(timeout: .seconds(30)) == "launch b \(second.pid)")

            first.kill(signal: SIGKILL)
            #expect(first.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            // Its socket file is left, with nobody holding the lock: the next launch is primary at once.
            #expect(directoryEntries(directory) == ["editor.instance", "editor.instance.lock"])
            let third = try launch(directory, name, "c")
            defer { third.stop() }
            #expect(third.readLine(timeout: .seconds(30)) == "primary")
            let fourth = try launch(directory, name, "d")
            defer { fourth.stop() }
            #expect(fourth.readLine(timeout: .seconds(30)) == "secondary \(third.pid)")
            #expect(third.readLine(timeout: .seconds(30)) == "launch d \(fourth.pid)")
            third.tell()
            #expect(third.wait(timeout: .seconds(30)) == .exited(0))
            #expect(directoryEntries(directory).isEmpty)
        }
    }

    @Test func inOneProcessThePrimaryReceivesLaunchesAsAnAsyncSequence() async throws {
        let name = TestNames.make("single")
        let role = try await SingleInstance.acquire(name: name, arguments: ["first"], timeout: .seconds(10))
        guard case .primary(let instance) = role else {
            Issue.record("not primary: \(role)")
            return
        }
        #expect(instance.name == name)
        let secondary = try await SingleInstance.acquire(name: name, arguments: ["second", "x y"], timeout: .seconds(10))
        guard case .secondary(let primary) = secondary else {
            Issue.record("a second primary")
            instance.close()
            return
        }
        #expect(primary.pid == getpid())
        var iterator = instance.launches.makeAsyncIterator()
        let launch = await iterator.next()
        #expect(launch?.arguments == ["second", "x y"])
        #expect(launch?.process.pid == getpid())
        #expect(launch?.workingDirectory.isEmpty == false)
        instance.close()
        #expect(await iterator.next() == nil)
        // Closed: the next acquisition is primary again.
        let again = try await SingleInstance.acquire(name: name, arguments: [], timeout: .seconds(10))
        guard case .primary(let next) = again else {
            Issue.record("not primary after close")
            return
        }
        next.close()
        await #expect(throws: InterprocessError.self) { try await SingleInstance.acquire(name: "a/b") }
    }
}
