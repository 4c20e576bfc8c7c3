// Runs the built `ipc` tool as a user would and checks its output, exit status and effects.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Testing

@Suite(.serialized)
struct IPCToolTests {
    // MARK: Helpers

    private static let counter = Atomic<Int>(0)

    /// A name no other test (or test run) uses.
    private func uniqueName() -> String {
        "ipct-cli-\(getpid())-\(TestNames.fixedWidth(Self.counter.add(1, ordering: .relaxed).newValue))"
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
        try ipc(arguments: arguments)
    }

    /// Parses JSON output.
    private func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    /// Reads from `fd` until the text read contains `marker`; fails after `timeout` (unless not
    /// `required`: then it returns what it read).
    private func readUntil(_ marker: String, from fd: Int32, timeout: Duration = .seconds(10), required: Bool = true) throws -> String {
        let deadline = Deadline(after: timeout)
        var bytes: [UInt8] = []
        while !String(decoding: bytes, as: UTF8.self).contains(marker) {
            guard !deadline.hasPassed else {
                if required { Issue.record("timed out waiting for \"\(marker)\"; read so far: \(String(decoding: bytes, as: UTF8.self))") }
                break
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, min(deadline.pollMilliseconds, 1000))
            guard ready > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                bytes += chunk[..<n]
            } else if n == 0 || errno != EINTR {
                if required { Issue.record("output ended before \"\(marker)\": \(String(decoding: bytes, as: UTF8.self))") }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func ipc(arguments: [String]) throws -> Result {
        let (termination, output, error) = try ChildProcess.run(try ipcPath(), arguments, timeout: .seconds(30))
        return Result(termination: termination, output: output, error: error)
    }

    /// Runs `ipc` with arguments given as raw bytes, which need not be UTF-8 (a Swift `String` cannot
    /// carry them): through `/bin/sh`, each argument made by `printf` from octal escapes (all but letters and digits, so that none looks like an option to `printf`).
    private func ipc(rawArguments: [[UInt8]]) throws -> Result {
        let words = rawArguments.map { bytes in
            let format = bytes.map { byte -> String in
                let plain = (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                let octal = String(byte, radix: 8)
                return plain ? String(UnicodeScalar(byte)) : "\\" + String(repeating: "0", count: 3 - octal.count) + octal
            }
            return "\"$(printf '\(format.joined())')\""
        }
        let (termination, output, error) = try ChildProcess.run(
            "/bin/sh", ["-c", "exec \"$0\" " + words.joined(separator: " "), try ipcPath()], timeout: .seconds(30))
        return Result(termination: termination, output: output, error: error)
    }

    /// The first scalar in `text` that a terminal would act on — C0 controls other than the line feeds
    /// that end lines, DEL, C1 controls, line and paragraph separators, bidirectional controls — if any.
    private func terminalControl(in text: String) -> Unicode.Scalar? {
        text.unicodeScalars.first { scalar in
            switch scalar.value {
            case 0x0A: false
            case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C: true
            default: false
            }
        }
    }

    /// Checks that neither output of `result` holds anything a terminal would act on.
    private func expectPrintable(_ result: Result, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for (stream, text) in [("output", result.output), ("error", result.error)] {
            if let scalar = terminalControl(in: text) {
                Issue.record(
                    "\(what): raw U+\(String(scalar.value, radix: 16, uppercase: true)) in its \(stream): \(text.debugDescription)",
                    sourceLocation: sourceLocation)
            }
        }
    }

    /// Rewrites the header of the segment file /dev/shm/FILE as another program could: a new name
    /// (any bytes) and optionally a new lifetime code, with the FNV-1a checksum over bytes 0..<344
    /// (state and checksum read as zero) recomputed, so that the header is otherwise valid.
    private func forgeHeader(file: String, name: [UInt8], lifetime: UInt32? = nil) throws {
        let fd = Glibc.open("/dev/shm/" + file, O_RDWR)
        try #require(fd >= 0, "cannot open /dev/shm/\(file): errno \(errno)")
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 4096)
        try #require(pread(fd, &header, header.count, 0) == header.count)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        try #require(name.count <= 256)
        header.replaceSubrange(88..<344, with: name + [UInt8](repeating: 0, count: 256 - name.count))
        put(UInt32(name.count), at: 76)
        if let lifetime { put(lifetime, at: 20) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for offset in 0..<344 {
            let byte = (24..<28).contains(offset) || (80..<88).contains(offset) ? 0 : header[offset]
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        put(hash, at: 80)
        try #require(pwrite(fd, header, header.count, 0) == header.count)
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

    /// `ipc inspect` lists what is placed in a raw segment, in text and JSON; `ipc write` over a
    /// placed object is refused. (Changed on purpose with the two-slot value frame: the objects are
    /// placed first, since a first store lays the frame out over every free byte before them — its
    /// entry is the whole frame, 0..<1024 here, not the 10 bytes of a length-prefixed "hi".)
    @Test func inspectListsPlacedObjects() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let segment = try SharedMemory.create(name: name, size: 4096, lifetime: .persistent)
        defer { segment.close() }
        _ = try ProcessMutex.create(in: segment, at: 1024)
        _ = try SharedAtomic<Int64>.create(in: segment, named: "hits")
        // A first value whose frame (128 + 2 × 504 bytes) would reach the mutex: refused, nothing written.
        let write = try ipc("write", name, String(repeating: "x", count: 500))
        #expect(!write.succeeded && write.error.contains("overlaps") && write.error.contains("a mutex at 1024..<1088"), "\(write.error)")
        #expect(try segment.placedObjects().map(\.kind) == ["mutex", "atomic"])
        #expect(try ipc("write", name, "hi").succeeded)
        #expect(try segment.readString() == "hi")
        let inspect = try ipc("inspect", name)
        #expect(inspect.succeeded, "\(inspect.error)")
        #expect(inspect.output.contains("placed:\n  0..<1024  stored value\n  1024..<1088  mutex\n  3904..<4096  atomic 'hits'\n"), "\(inspect.output)")
        let object = try #require(try json(try ipc("inspect", name, "--json").output) as? [String: Any])
        let placed = try #require(object["placed"] as? [[String: Any]])
        #expect(placed.map { $0["kind"] as? String } == ["stored value", "mutex", "atomic"])
        #expect(placed.first?["size"] as? Int == 1024)
        #expect(placed.last?["name"] as? String == "hits" && placed.last?["offset"] as? Int == 3904)
        // Later values are bounded by the frame's capacity, (1024 − 128) / 2.
        let large = try ipc("write", name, String(repeating: "y", count: 449))
        #expect(!large.succeeded && large.error.contains("invalidSize"), "\(large.error)")
        #expect(try segment.readString() == "hi")
    }

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
        #expect(info.size == SharedMemory.storageSize(capacity: text.utf8.count))
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

    /// A program in another language reads the stored value by the README's recipe, following the
    /// value frame's seqlock protocol: here the second store, which is in slot 0.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
    func pythonReadsWhatIPCWrote() throws {
        let name = uniqueName()
        defer { try? SharedMemory.remove(name: name) }
        let text = "from swift to python: ünïcode"
        #expect(try ipc("write", name, "first", "--capacity", "64").succeeded)
        #expect(try ipc("write", name, text).succeeded)
        let object = try #require(try json(try ipc("inspect", name, "--json").output) as? [String: Any])
        let osName = try #require(object["osName"] as? String)
        let offset = try #require(object["payloadOffset"] as? Int)

        // Plain open()+mmap rather than multiprocessing.shared_memory, whose resource tracker may
        // unlink the segment when Python exits. The same steps as the README's example.
        let script = """
            import mmap, struct, sys
            path, off = sys.argv[1], int(sys.argv[2])
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                (tag,) = struct.unpack_from("<I", m, off + 76)
                if tag != 0x31524656:
                    sys.exit("nothing stored yet" if tag == 0 else "not a value frame")
                (capacity,) = struct.unpack_from("<Q", m, off + 80)
                while True:
                    (seq,) = struct.unpack_from("<Q", m, off + 64)
                    if seq == 0:
                        sys.exit("nothing stored yet")
                    slot = seq & 1
                    (n,) = struct.unpack_from("<Q", m, off + 88 + 8 * slot)
                    start = off + 128 + slot * capacity
                    data = m[start : start + min(n, capacity)]
                    if struct.unpack_from("<Q", m, off + 64)[0] == seq:
                        if n > capacity:
                            sys.exit("corrupt")
                        break
                sys.stdout.buffer.write(b"%d:" % seq + data)
            """
        let (termination, output, error) = try ChildProcess.run(
            "/usr/bin/python3", ["-c", script, "/dev/shm" + osName, "\(offset)"], timeout: .seconds(30))
        #expect(termination == .exited(0), "\(error)")
        #expect(output == "2:" + text)
        #expect(SharedMemory.exists(name: name))
    }

    // MARK: Hardening: what the tool prints, what it accepts, and racing writers

    /// A header is written by whoever can write the file: a forged name full of escape sequences and
    /// line breaks must reach no terminal, and the segment is shown by its file name.
    @Test func forgedHeaderNameIsNeverPrintedRaw() throws {
        let name = TestNames.make("forged")
        defer { try? SharedMemoryObject.unlink("/" + name) }
        #expect(try ipc("create", name, "--size", "4K").succeeded)
        let forged = "victim\n\u{1B}[31mFAKE row\u{7F}\u{9B}\u{202E}\u{2028}\u{2066}end"
        // While referenced and held by nobody: `gc` considers it too.
        try forgeHeader(file: name, name: Array(forged.utf8), lifetime: 1)

        let list = try ipc("ls")
        #expect(list.succeeded, "\(list.error)")
        expectPrintable(list, "ipc ls")
        let row = try #require(list.output.split(separator: "\n").first { $0.hasPrefix(name + " ") }, "\(list.output)")
        #expect(row.contains("corrupt") && row.contains("victim\\n\\e[31mFAKE row\\u{7F}\\u{9B}\\u{202E}\\u{2028}\\u{2066}end"), "\(row)")
        #expect(!list.output.split(separator: "\n").contains { $0.hasPrefix("victim") || ($0.contains("FAKE row") && !$0.hasPrefix(name + " ")) })

        let listJSON = try ipc("ls", "--json")
        #expect(listJSON.succeeded)
        expectPrintable(listJSON, "ipc ls --json")
        let array = try #require(try json(listJSON.output) as? [[String: Any]])
        #expect(!array.contains { ($0["name"] as? String)?.hasPrefix("victim") == true })
        let entry = try #require(array.first { $0["name"] as? String == name })
        #expect((entry["problem"] as? String)?.contains(forged) == true, "the JSON escapes keep the value")

        let inspect = try ipc("inspect", name)
        #expect(inspect.succeeded, "\(inspect.error)")
        expectPrintable(inspect, "ipc inspect")
        #expect(inspect.output.split(separator: "\n").first { $0.hasPrefix("name:") }?.hasSuffix(" " + name) == true, "\(inspect.output)")
        #expect(inspect.output.contains("the header names the segment 'victim\\n\\e[31mFAKE row"))

        let inspectJSON = try ipc("inspect", name, "--json")
        #expect(inspectJSON.succeeded)
        expectPrintable(inspectJSON, "ipc inspect --json")
        let object = try #require(try json(inspectJSON.output) as? [String: Any])
        #expect(object["name"] as? String == name)

        for arguments in [["gc", "--dry-run", "--prefix", name], ["gc", "--dry-run", "--json", "--prefix", name], ["gc", "--prefix", name]] {
            let gc = try ipc(arguments: arguments)
            #expect(gc.succeeded, "\(arguments): \(gc.error)")
            expectPrintable(gc, "ipc \(arguments.joined(separator: " "))")
            #expect(!gc.output.contains("victim"), "\(arguments) names the segment by its header: \(gc.output)")
        }
    }

    /// Names given on the command line are printed escaped too: in what the tool says, in its errors
    /// and in ArgumentParser's usage errors.
    @Test func commandLineNamesArePrintedEscaped() throws {
        let name = TestNames.make("esc") + "\u{1B}[31m\nFAKE\u{202E}\u{85}"
        let shown = String(name.prefix { $0 != "\u{1B}" }) + "\\e[31m\\nFAKE\\u{202E}\\u{85}"
        defer { try? SharedMemory.remove(name: name) }

        let missing = try ipc("read", name)
        #expect(missing.termination == .exited(1))
        expectPrintable(missing, "ipc read (missing)")
        #expect(missing.error.hasPrefix("ipc: notFound '\(shown)'"), "\(missing.error.debugDescription)")
        #expect(missing.error.filter { $0 == "\n" }.count == 1, "\(missing.error.debugDescription)")

        let badSize = try ipc("create", name, "--size", "4\u{1B}[2J")
        #expect(badSize.termination != .exited(0) && badSize.termination != nil)
        expectPrintable(badSize, "ipc create --size (usage error)")
        #expect(badSize.error.contains("invalid size '4\\e[2J'"), "\(badSize.error)")

        let created = try ipc("create", name, "--size", "4K")
        #expect(created.succeeded, "\(created.error)")
        expectPrintable(created, "ipc create")
        #expect(created.output == "created \(shown) (4096 bytes, persistent)\n", "\(created.output.debugDescription)")

        let list = try ipc("ls")
        expectPrintable(list, "ipc ls")
        #expect(list.output.split(separator: "\n").contains { $0.hasPrefix(shown + " ") })

        let written = try ipc("write", name, "text")
        expectPrintable(written, "ipc write")
        #expect(written.output == "wrote 4 bytes to \(shown)\n")

        let removed = try ipc("rm", name)
        expectPrintable(removed, "ipc rm")
        #expect(removed.output == "removed \(shown)\n")
        #expect(!SharedMemory.exists(name: name))
    }

    /// Swift decodes `argv` with repair: a name that is not UTF-8 would silently become one with
    /// U+FFFD in it, a different object. The tool refuses such an argument and does nothing.
    @Test func argumentsThatAreNotUTF8AreRefused() throws {
        let prefix = TestNames.make("notutf8")
        let repaired = prefix + "\u{FFFD}"
        defer {
            for left in TestNames.leftovers(prefix) { try? SharedMemoryObject.unlink("/" + left) }
            try? SharedMemory.remove(name: repaired)
        }
        let invalid = Array(prefix.utf8) + [0xFF]

        let create = try ipc(rawArguments: [Array("create".utf8), invalid, Array("--size".utf8), Array("4K".utf8)])
        #expect(create.termination != .exited(0) && create.termination != nil, "\(create.output)")
        #expect(create.error.contains("argument 2 is not valid UTF-8: '\(prefix)\\xFF'"), "\(create.error)")
        expectPrintable(create, "ipc create <not UTF-8>")
        #expect(TestNames.leftovers(prefix).isEmpty, "created \(TestNames.leftovers(prefix))")

        // The text to store is an argument like any other.
        let text = try ipc(rawArguments: [Array("write".utf8), Array(prefix.utf8), [0x61, 0xC3, 0x28]])
        #expect(text.termination != .exited(0) && text.termination != nil)
        #expect(text.error.contains("not valid UTF-8"))
        #expect(TestNames.leftovers(prefix).isEmpty, "created \(TestNames.leftovers(prefix))")

        // Where the repaired name exists, `rm` and `write` must not act on it instead.
        let segment = try SharedMemory.create(name: repaired, size: 256, lifetime: .persistent)
        segment.close()
        let write = try ipc(rawArguments: [Array("write".utf8), invalid, Array("hello".utf8)])
        #expect(write.termination != .exited(0) && write.termination != nil)
        #expect(write.error.contains("not valid UTF-8"))
        let opened = try SharedMemory.open(name: repaired)
        expectError(.empty) { try opened.readBytes() } // ipc write did not write into the repaired name
        opened.close()
        let remove = try ipc(rawArguments: [Array("rm".utf8), invalid])
        #expect(remove.termination != .exited(0) && remove.termination != nil)
        #expect(remove.error.contains("not valid UTF-8"))
        #expect(SharedMemory.exists(name: repaired), "ipc rm removed \(repaired.debugDescription)")
    }

    /// `ipc write` on a missing name creates it. Writers that race on one fresh name (and a process
    /// that keeps creating and removing it, which widens the window between a writer's failed open
    /// and its create) must all succeed: open, else create, else open again.
    @Test func concurrentWritesToOneNameAllSucceed() throws {
        let ipc = try ipcPath()
        let writers = 8
        func race(_ name: String, rounds: Int) -> [String] {
            var failures: [String] = []
            for _ in 0..<rounds {
                var children: [ChildProcess] = []
                for _ in 0..<writers {
                    if let child = try? ChildProcess.spawn(ipc, ["write", name, "same text"], standardError: .pipe) {
                        children.append(child)
                    }
                }
                for child in children {
                    let termination = child.wait(timeout: .seconds(60))
                    if termination != .exited(0) {
                        var bytes = [UInt8](repeating: 0, count: 4096)
                        let n = child.standardError.map { fd in bytes.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) } } ?? 0
                        failures.append("\(termination?.description ?? "timed out"): \(String(decoding: bytes.prefix(max(n, 0)), as: UTF8.self))")
                    }
                    child.closePipes()
                }
                try? SharedMemory.remove(name: name)
            }
            return failures
        }

        // A fresh name each round, writers only.
        for _ in 0..<3 {
            let name = TestNames.make("wrace")
            defer { try? SharedMemory.remove(name: name) }
            let failures = race(name, rounds: 1)
            #expect(failures.isEmpty, "\(failures.count) of \(writers) writers failed: \(failures.first ?? "")")
        }

        // One name, and a churner that creates and removes it as fast as it can.
        let name = TestNames.make("wchurn")
        defer { try? SharedMemory.remove(name: name) }
        final class Flag: Sendable {
            let raised = Atomic<Bool>(false)
        }
        let stop = Flag()
        let churner = Thread {
            while !stop.raised.load(ordering: .relaxed) {
                if let segment = try? SharedMemory.create(name: name, size: 4096, lifetime: .persistent) {
                    segment.close()
                    try? SharedMemory.remove(name: name)
                }
            }
        }
        churner.start()
        let failures = race(name, rounds: 10)
        stop.raised.store(true, ordering: .relaxed)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(failures.isEmpty, "\(failures.count) of \(10 * writers) writers failed: \(failures.first ?? "")")
    }

    /// The race of `concurrentWritesToOneNameAllSucceed`, made certain: the writer finds nothing,
    /// builds its segment and stops itself just before naming it (`INTERPROCESS_STOP_POINT`); we
    /// see it stopped, create the name, and let it go on. The writer must then write into ours.
    @Test func writeThatLosesTheCreateRaceWritesIntoTheWinner() throws {
        let name = TestNames.make("wlost")
        defer { try? SharedMemory.remove(name: name) }
        var environment: [String: String] = [:]
        for (key, value) in ProcessEnvironment.all { environment[key] = value }
        environment["INTERPROCESS_STOP_POINT"] = "create.beforeLink"
        let child = try ChildProcess.spawn(
            try ipcPath(), ["write", name, "text"], standardOutput: .pipe, standardError: .pipe, environment: environment)
        defer { child.stop() }
        #expect(pollUntil(timeout: .seconds(20)) { processState(child.pid) == "T" }, "the writer stopped before naming its segment")
        let winner = try SharedMemory.create(name: name, size: 4096, lifetime: .persistent)
        winner.close()
        child.kill(signal: SIGCONT)
        let termination = child.wait(timeout: .seconds(30))
        let output = child.readToEnd(timeout: .seconds(5)) ?? ""
        #expect(termination == .exited(0), "\(output)")
        #expect(output == "wrote 4 bytes to \(name)\n")
        let segment = try SharedMemory.open(name: name)
        #expect(try segment.readString() == "text")
        segment.close()
    }

    /// Stored data is whatever the writer chose: on a terminal `ipc read` shows its control
    /// characters escaped (lines and tabs kept); to a pipe it stays exact.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script")))
    func readEscapesControlsOnATerminal() throws {
        let name = TestNames.make("readtty")
        defer { try? SharedMemory.remove(name: name) }
        let text = "line one\n\u{1B}[31mred\ttab\u{9B}\u{202E}"
        #expect(try ipc("write", name, text).succeeded)
        #expect(try ipc("read", name).output == text + "\n", "a pipe gets the text as it is")

        let (termination, output, error) = try ChildProcess.run(
            "/usr/bin/script", ["-qec", "'\(try ipcPath())' read \(name)", "/dev/null"], timeout: .seconds(30))
        #expect(termination == .exited(0), "\(error)")
        let lines = output.replacingOccurrences(of: "\r\n", with: "\n")
        #expect(lines == "line one\n\\e[31mred\ttab\\u{9B}\\u{202E}\n", "\(output.debugDescription)")
    }
}
