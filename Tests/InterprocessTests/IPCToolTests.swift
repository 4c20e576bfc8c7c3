// Runs the built `ipc` tool as a user would and checks its output, exit status and effects.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import Synchronization
import Testing

@Suite(.serialized)
struct IPCToolTests {
    // MARK: Helpers

    private static let counter = Atomic<Int>(0)

    /// A name no other test (or test run) uses.
    private func uniqueName() -> String {
        "ipct-cli-\(getpid())-\(Self.counter.add(1, ordering: .relaxed).newValue)"
    }

    private func ipcPath() throws -> String {
        try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
    }

    private struct Result {
        var termination: ChildProcess.Termination?
        var output: String
        var error: String
        var succeeded: Bool { termination == .exited(0) }
    }

    /// Runs `ipc arguments…` to completion (killed after 30 s).
    private func ipc(_ arguments: String...) throws -> Result {
        let (termination, output, error) = try ChildProcess.run(try ipcPath(), arguments, timeout: .seconds(30))
        return Result(termination: termination, output: output, error: error)
    }

    /// Parses JSON output.
    private func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    /// Reads from `fd` until the text read contains `marker`; fails after `timeout`.
    private func readUntil(_ marker: String, from fd: Int32, timeout: Duration = .seconds(10)) throws -> String {
        let deadline = Clock.deadline(after: timeout)
        var bytes: [UInt8] = []
        while !String(decoding: bytes, as: UTF8.self).contains(marker) {
            let now = Clock.monotonicNanoseconds()
            guard now < deadline else {
                Issue.record("timed out waiting for \"\(marker)\"; read so far: \(String(decoding: bytes, as: UTF8.self))")
                break
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, CInt(min((deadline - now) / 1_000_000 + 1, 1000)))
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                bytes += chunk[..<n]
            } else if n == 0 || errno != EINTR {
                Issue.record("output ended before \"\(marker)\": \(String(decoding: bytes, as: UTF8.self))")
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Starts `ipc create NAME --size 4K --hold` and waits until it says it holds the segment.
    private func startHolder(_ name: String) throws -> ChildProcess {
        let child = try ChildProcess.spawn(
            try ipcPath(), ["create", name, "--size", "4K", "--hold"], standardOutput: .pipe, standardError: .null)
        let output = try readUntil("holding", from: child.standardOutput!.rawValue)
        #expect(output.contains("holding \(name) (pid \(child.pid))"))
        return child
    }

    // MARK: Tests

    @Test func createListAndInspect() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }

        let created = try ipc("create", name, "--size", "4K")
        #expect(created.succeeded, "\(created.error)")
        #expect(created.output.contains("created \(name) (4096 bytes, persistent)"))

        let list = try ipc("ls")
        #expect(list.succeeded)
        let row = try #require(list.output.split(separator: "\n").first { $0.hasPrefix(name + " ") })
        #expect(row.contains("raw") && row.contains("4.0K") && row.contains("persistent"))
        #expect(list.output.hasPrefix("NAME"))

        let listJSON = try ipc("ls", "--json")
        #expect(listJSON.succeeded)
        let array = try #require(try json(listJSON.output) as? [[String: Any]])
        let entry = try #require(array.first { $0["name"] as? String == name })
        #expect(entry["kind"] as? String == "raw")
        #expect(entry["size"] as? Int == 4096)
        #expect(entry["lifetime"] as? String == "persistent")

        let inspect = try ipc("inspect", name, "--json")
        #expect(inspect.succeeded)
        let object = try #require(try json(inspect.output) as? [String: Any])
        for key in ["name", "osName", "kind", "size", "payloadOffset", "lifetime", "holders", "createdAt", "state"] {
            #expect(object[key] != nil, "inspect --json lacks \(key)")
        }
        #expect(object["name"] as? String == name)
        #expect(object["osName"] as? String == "/" + name)
        #expect(object["kind"] as? String == "raw")
        #expect(object["size"] as? Int == 4096)
        #expect(object["payloadOffset"] as? Int == 4096)
        #expect(object["lifetime"] as? String == "persistent")
        #expect((object["holders"] as? [Any])?.isEmpty == true)

        let text = try ipc("inspect", name)
        #expect(text.succeeded)
        #expect(text.output.contains("osName:") && text.output.contains("/" + name))
        #expect(text.output.contains("holders:"))
    }

    @Test func sizesWithUnits() throws {
        for (argument, bytes) in [("64K", 65536), ("1mib", 1 << 20), ("4096", 4096), ("2KiB", 2048)] {
            let name = uniqueName()
            defer { try? SharedMemory.remove(name: name) }
            let created = try ipc("create", name, "--size", argument)
            #expect(created.succeeded, "\(argument): \(created.error)")
            #expect(try SharedMemory.info(name: name).size == bytes, "\(argument)")
        }
    }

    @Test func badSizesAreRejected() throws {
        for argument in ["0", "12Q", "-5", "K", "1.5M", ""] {
            let name = uniqueName()
            defer { try? SharedMemory.remove(name: name) }
            let result = try ipc("create", name, "--size", argument)
            #expect(!result.succeeded && result.termination != nil, "size '\(argument)' was accepted")
            #expect(result.error.contains("invalid size"), "size '\(argument)': \(result.error)")
            #expect(!SharedMemory.exists(name: name))
        }
    }

    @Test func createExistingNameFails() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        #expect(try ipc("create", name, "--size", "4096").succeeded)
        let again = try ipc("create", name, "--size", "4096")
        #expect(again.termination == .exited(1))
        #expect(again.error.hasPrefix("ipc: "))
        #expect(again.error.contains("alreadyExists"))
        #expect(again.error.contains(name))
    }

    @Test func writeAndReadRoundTrip() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }

        let text = "hello, wörld ✓"
        let first = try ipc("write", name, text)
        #expect(first.succeeded, "\(first.error)")
        #expect(first.output.contains("created \(name)"))
        let info = try SharedMemory.info(name: name)
        #expect(info.lifetime == .persistent)
        #expect(info.size == SharedMemory.framePrefixSize + text.utf8.count)
        #expect(try ipc("read", name).output == text + "\n")

        // Writing to an existing segment replaces the contents; it must fit.
        let second = try ipc("write", name, "short")
        #expect(second.succeeded)
        #expect(second.output.contains("wrote 5 bytes to \(name)"))
        #expect(try ipc("read", name, "--raw").output == "short")
        let tooLong = try ipc("write", name, String(repeating: "x", count: 100))
        #expect(tooLong.termination == .exited(1))
        #expect(tooLong.error.contains("invalidSize"))

        // The library reads what the tool wrote.
        let segment = try SharedMemory.open(name: name)
        #expect(try segment.readString() == "short")
        segment.close()
    }

    @Test func writeFromFile() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let path = "/tmp/\(name).bin"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes: [UInt8] = Array("line one\nline two\n".utf8) + [0, 1, 2]
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let written = try ipc("write", name, "--file", path)
        #expect(written.succeeded, "\(written.error)")
        let segment = try SharedMemory.open(name: name)
        #expect(try segment.readBytes() == bytes)
        segment.close()

        // Not UTF-8 (a lone 0xFF): `read` writes the raw bytes.
        try Data([0x61, 0xFF, 0x62]).write(to: URL(fileURLWithPath: path))
        #expect(try ipc("write", name, "--file", path).succeeded)
        let notText = try ipc("read", name)
        #expect(notText.succeeded)
        #expect(notText.output == "a\u{FFFD}b", "expected the raw bytes without a newline")

        // Standard input (here /dev/null): an empty value.
        #expect(try ipc("write", name, "--file", "-").succeeded)
        #expect(try ipc("read", name, "--raw").output == "")

        let missing = try ipc("write", name, "--file", path + ".missing")
        #expect(missing.termination == .exited(1))
        #expect(missing.error.contains("cannot read"))
    }

    @Test func removeThenReadFails() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        #expect(try ipc("write", name, "soon gone").succeeded)

        let removed = try ipc("rm", name)
        #expect(removed.succeeded)
        #expect(removed.output == "removed \(name)\n")
        #expect(!SharedMemory.exists(name: name))

        let read = try ipc("read", name)
        #expect(read.termination == .exited(1))
        #expect(read.error.hasPrefix("ipc: notFound"))
        #expect(read.error.contains(name))

        let again = try ipc("rm", name)
        #expect(again.termination == .exited(1))
        #expect(again.error.contains("notFound"))
    }

    @Test func holdUntilSIGTERM() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let child = try startHolder(name)
        defer { child.closePipes() }
        var reaped = false
        defer { if !reaped { child.wait(timeout: .zero) } }  // kills a straggler

        #expect(SharedMemory.exists(name: name))
        let inspect = try ipc("inspect", name, "--json")
        let object = try #require(try json(inspect.output) as? [String: Any])
        #expect(object["lifetime"] as? String == "whileReferenced")
        let holders = try #require(object["holders"] as? [[String: Any]])
        #expect(holders.count == 1)
        #expect(holders.first?["pid"] as? Int == Int(child.pid))
        #expect(holders.first?["alive"] as? Bool == true)

        child.kill(signal: SIGTERM)
        let termination = child.wait(timeout: .seconds(10))
        reaped = true
        #expect(termination == .exited(0))
        #expect(!SharedMemory.exists(name: name))
        #expect(throws: InterprocessError.self) { try SharedMemory.info(name: name) }
    }

    @Test func killedHolderIsCollected() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let child = try startHolder(name)
        defer { child.closePipes() }

        child.kill(signal: SIGKILL)
        #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
        #expect(!SharedMemory.exists(name: name))
        #expect(try SharedMemory.info(name: name).isAbandoned)

        let list = try ipc("ls")
        let row = try #require(list.output.split(separator: "\n").first { $0.hasPrefix(name + " ") })
        #expect(row.contains("abandoned") && row.contains("0 alive, 1 dead"))

        let dryRun = try ipc("gc", "--dry-run", "--prefix", name)
        #expect(dryRun.succeeded)
        #expect(dryRun.output.contains("would remove \(name) (raw, 4.0K; holders all dead)"))
        #expect(try SharedMemory.info(name: name).isAbandoned, "a dry run removed it")

        let collected = try ipc("gc", "--prefix", name)
        #expect(collected.succeeded)
        #expect(collected.output.contains("removed \(name) (raw, 4.0K; holders all dead)"))
        #expect(throws: InterprocessError.self) { try SharedMemory.info(name: name) }
    }

    @Test func lsAndInspectShowNamedPrimitivesState() throws {
        let name = uniqueName()
        let mutex = try ProcessMutex.create(name: name + "-m")
        defer { mutex.close() }
        let semaphore = try ProcessSemaphore.create(name: name + "-s", value: 3)
        defer { semaphore.close() }
        let child = try Peer.spawn("mutex-hold", name + "-m")
        defer { child.stop() }
        #expect(child.readLine() == "locked acquired")

        let list = try ipc("ls")
        let mutexRow = try #require(list.output.split(separator: "\n").first { $0.hasPrefix(name + "-m ") })
        #expect(mutexRow.contains("mutex") && mutexRow.contains("locked by \(child.pid)"), "\(mutexRow)")
        let semaphoreRow = try #require(list.output.split(separator: "\n").first { $0.hasPrefix(name + "-s ") })
        #expect(semaphoreRow.contains("semaphore") && semaphoreRow.contains("count 3"), "\(semaphoreRow)")

        let inspect = try ipc("inspect", name + "-m")
        #expect(inspect.output.contains("ownerPID: \(child.pid)"))
        child.stop()
        let afterDeath = try ipc("ls")
        #expect(afterDeath.output.split(separator: "\n").first { $0.hasPrefix(name + "-m ") }?.contains("(dead)") == true)
    }

    @Test func demoRunsTwoProcesses() throws {
        let result = try ipc("demo")
        #expect(result.succeeded, "\(result.termination?.description ?? "timed out"): \(result.error)")
        #expect(result.output.contains("[demo pid "))
        #expect(result.output.contains("[peer pid "))
        #expect(result.output.contains("2 alive, 0 dead"))
        #expect(result.output.contains("is gone"))
        #expect(result.output.contains("previousOwnerDied"), "the demo recovers the mutex of a killed peer")
        // The segment it used is gone.
        let name = try #require(
            result.output.split(separator: " ").first { $0.hasPrefix("demo_") }.map(String.init))
        #expect(throws: InterprocessError.self) { try SharedMemory.info(name: name) }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
    func pythonReadsWhatIPCWrote() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let text = "from swift to python: ünïcode"
        #expect(try ipc("write", name, text).succeeded)
        let object = try #require(try json(try ipc("inspect", name, "--json").output) as? [String: Any])
        let osName = try #require(object["osName"] as? String)
        let offset = try #require(object["payloadOffset"] as? Int)

        // Plain open()+mmap rather than multiprocessing.shared_memory, whose resource tracker may
        // unlink the segment when Python exits.
        let script = """
            import mmap, struct, sys
            path, offset = sys.argv[1], int(sys.argv[2])
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                (n,) = struct.unpack_from("<Q", m, offset)
                sys.stdout.buffer.write(m[offset + 8 : offset + 8 + n])
            """
        let (termination, output, error) = try ChildProcess.run(
            "/usr/bin/python3", ["-c", script, "/dev/shm" + osName, "\(offset)"], timeout: .seconds(30))
        #expect(termination == .exited(0), "\(error)")
        #expect(output == text)
        #expect(SharedMemory.exists(name: name))
    }
}
