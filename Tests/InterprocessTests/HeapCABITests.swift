#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import InterprocessHeapABI
import CInterprocessHeapABI

/// The heap's C ABI (`interprocess_heap.h`, libInterprocessHeap.so) as a C program sees it: the
/// tests compile real C programs with the system's C compiler, link them to the library built beside
/// the test binary, and run them as separate processes on one heap. The tests that wait for the
/// compiler and the programs do it on a thread of their own (``onOwnQueue(_:)``), not on the
/// cooperative pool that the async tests of the other suites need.
@Suite("Heap C ABI", .serialized, .timeLimit(.minutes(3)))
struct HeapCABITests {
    // MARK: Real C programs

    @Test func twoCProcessesAllocateAndFreeOnOneHeapThroughFunctionPointers() async throws {
        try await onOwnQueue { _ in
            let build = try CBuild()
            defer { build.remove() }
            let peer = try #require(build.compile("CPrograms/heap_peer.c", output: "heap_peer"))
            try withCleanNames("cabi-two") { name in
                let heap = try SharedHeap.create(name: name, capacity: 1 << 20, maximumCapacity: 16 << 20)
                defer { heap.close() }
                let count = 3000
                let producer = try ChildProcess.spawn(
                    peer, ["producer", name, "\(count)", "7"], standardInput: .pipe, standardOutput: .pipe, standardError: .inherit)
                defer { producer.stop() }
                let consumer = try ChildProcess.spawn(
                    peer, ["consumer", name, "11"], standardInput: .pipe, standardOutput: .pipe, standardError: .inherit)
                defer { consumer.stop() }
                #expect(producer.readLine() == "ready")
                #expect(consumer.readLine() == "ready")
                // Both run at once from here: the producer allocates, fills and hands blocks over (their
                // words, through its stdout and the consumer's stdin), the consumer checks and frees
                // them, and both churn blocks of their own in between.
                producer.tell()
                var forwarded = 0
                var producerDone: String?
                while let line = producer.readLine(timeout: .seconds(60)) {
                    if line.hasPrefix("done") {
                        producerDone = line
                        break
                    }
                    #expect(consumer.send(line + "\n"), "the consumer stopped reading")
                    forwarded += 1
                }
                #expect(forwarded == count)
                #expect(producerDone != nil, "the producer did not finish")
                consumer.tell("end")
                #expect(consumer.readLine(timeout: .seconds(60)) == "done \(count)")
                #expect(producer.wait(timeout: .seconds(30)) == .exited(0))
                #expect(consumer.wait(timeout: .seconds(30)) == .exited(0))

                let report = try heap.check()
                #expect(report.problems == [])
                let statistics = try heap.statistics()
                #expect(statistics.blocks == 0, "blocks left in use: \(statistics)")
            }
        }
    }

    @Test func failuresAreNullAndACodeNeverACrash() async throws {
        try await onOwnQueue { _ in
            let build = try CBuild()
            defer { build.remove() }
            let peer = try #require(build.compile("CPrograms/heap_peer.c", output: "heap_peer"))
            try withCleanNames("cabi-errors") { name in
                // A small maximum, so that the program can exhaust it.
                let heap = try SharedHeap.create(name: name, capacity: 64 * 1024, maximumCapacity: 256 * 1024)
                defer { heap.close() }
                let result = try ChildProcess.run(peer, ["errors", name, name + "-c"], timeout: .seconds(60))
                if !result.standardError.isEmpty { print("heap_peer errors: \(result.standardError)") }
                #expect(result.termination == .exited(0))
                #expect(result.standardOutput.hasPrefix("ok "))
                #expect(heap.capacity > 64 * 1024 && heap.capacity <= 256 * 1024, "capacity \(heap.capacity): it should have grown, within its maximum")
                #expect(try heap.check().problems == [])
                #expect(try heap.statistics().blocks == 0)
            }
        }
    }

    @Test func theReadmeExampleCompilesAndRuns() async throws {
        try await onOwnQueue { _ in
            let readme = try String(contentsOf: CBuild.repository.appendingPathComponent("README.md"), encoding: .utf8)
            let source = try #require(Self.firstCBlock(in: readme, after: "### The heap from C"), "no C example in the README")
            let build = try CBuild()
            defer { build.remove() }
            let example = try #require(try build.compile(text: source, output: "readme_example"))
            try withCleanNames("cabi-readme") { name in
                let result = try ChildProcess.run(example, [name], timeout: .seconds(30))
                #expect(result.standardError == "")
                #expect(result.termination == .exited(0))
                #expect(result.standardOutput == "hello from C\ninvalid_pointer\n")
            }
        }
    }

    @Test func theHeaderCompilesAsCxx() async throws {
        try await onOwnQueue { _ in
            let build = try CBuild()
            defer { build.remove() }
            let compiler = try #require(CBuild.findProgram(["clang", "c++", "g++"]), "no C++ compiler in PATH")
            let file = build.directory + "/header.cpp"
            try "#include \"interprocess_heap.h\"\nint main() { return sizeof(ipc_heap_allocation_callbacks) == 6 * sizeof(void *) ? 0 : 1; }\n"
                .write(toFile: file, atomically: true, encoding: .utf8)
            let result = try ChildProcess.run(
                compiler, ["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I", CBuild.includeDirectory, file],
                timeout: .seconds(60))
            #expect(result.termination == .exited(0), "\(result.standardError)")
        }
    }

    // MARK: In this process

    @Test func swiftAndCSeeTheSameBlocks() throws {
        try withCleanNames("cabi-swift") { name in
            let heap = try SharedHeap.create(name: name, capacity: 1 << 20)
            defer { heap.close() }
            var handle: OpaquePointer?
            #expect(name.withCString { ipcHeapOpen($0, &handle) } == IPC_HEAP_OK)
            #expect(handle != nil)
            defer { ipcHeapClose(handle) }

            // C allocates; Swift reads the block through its word.
            let block = try #require(ipcHeapMalloc(handle, 8))
            block.storeBytes(of: 0xFEED_F00D as UInt64, as: UInt64.self)
            let word = ipcHeapToShared(handle, block)
            #expect(word != 0)
            #expect(try heap.load(SharedPointer<UInt64>(bitPattern: word)) == 0xFEED_F00D)

            // Swift allocates and hands the block over; C resolves and frees it.
            let handedOver = try heap.allocate(UInt64(42)).relinquish()
            let address = try #require(ipcHeapFromShared(handle, handedOver.bitPattern))
            #expect(address.load(as: UInt64.self) == 42)
            #expect(ipcHeapUsableSize(handle, address) == 8)
            ipcHeapFree(handle, address)
            #expect(ipc_heap_last_error() == IPC_HEAP_OK)
            #expect(!heap.contains(handedOver))
            ipcHeapFree(handle, address)
            #expect(ipc_heap_last_error() == IPC_HEAP_ERROR_INVALID_POINTER)
            #expect(String(cString: ipc_heap_last_error_message()).contains("invalidPointer"))
            #expect(ipcHeapFromShared(handle, word) != nil)
            #expect(ipc_heap_last_error() == IPC_HEAP_OK)
            #expect(String(cString: ipc_heap_last_error_message()) == "", "a success leaves no message")

            try heap.adopt(SharedPointer<UInt64>(bitPattern: word)).deallocate()
            #expect(ipcHeapFromShared(handle, word) == nil)
            #expect(ipcHeapCheck(handle) == 0)
            #expect(try heap.statistics().blocks == 0)
        }
    }

    @Test func everyErrorCodeHasItsStableNumberAndName() {
        let table: [(InterprocessError.Code, ipc_heap_error, UInt32)] = [
            (.alreadyExists, IPC_HEAP_ERROR_ALREADY_EXISTS, 1), (.notFound, IPC_HEAP_ERROR_NOT_FOUND, 2),
            (.createFailed, IPC_HEAP_ERROR_CREATE_FAILED, 3), (.openFailed, IPC_HEAP_ERROR_OPEN_FAILED, 4),
            (.outOfMemory, IPC_HEAP_ERROR_OUT_OF_MEMORY, 5), (.statFailed, IPC_HEAP_ERROR_STAT_FAILED, 6),
            (.invalidName, IPC_HEAP_ERROR_INVALID_NAME, 7), (.invalidSize, IPC_HEAP_ERROR_INVALID_SIZE, 8),
            (.invalidArgument, IPC_HEAP_ERROR_INVALID_ARGUMENT, 9), (.permissionDenied, IPC_HEAP_ERROR_PERMISSION_DENIED, 10),
            (.incompatible, IPC_HEAP_ERROR_INCOMPATIBLE, 11), (.corrupt, IPC_HEAP_ERROR_CORRUPT, 12),
            (.closed, IPC_HEAP_ERROR_CLOSED, 13), (.encodingFailed, IPC_HEAP_ERROR_ENCODING_FAILED, 14),
            (.decodingFailed, IPC_HEAP_ERROR_DECODING_FAILED, 15), (.timedOut, IPC_HEAP_ERROR_TIMED_OUT, 16),
            (.wouldBlock, IPC_HEAP_ERROR_WOULD_BLOCK, 17), (.cancelled, IPC_HEAP_ERROR_CANCELLED, 18),
            (.ownerDied, IPC_HEAP_ERROR_OWNER_DIED, 19), (.notOwner, IPC_HEAP_ERROR_NOT_OWNER, 20),
            (.systemError, IPC_HEAP_ERROR_SYSTEM, 21), (.disconnected, IPC_HEAP_ERROR_DISCONNECTED, 22),
            (.connectionRefused, IPC_HEAP_ERROR_CONNECTION_REFUSED, 23), (.invalidPointer, IPC_HEAP_ERROR_INVALID_POINTER, 24),
        ]
        for (code, constant, number) in table {
            #expect(HeapCABI.errorCode(code) == constant, "\(code)")
            #expect(constant.rawValue == number, "\(code): the header's number changed")
            // The C name is the Swift code in snake case.
            let snake = code.description.reduce(into: "") { text, character in
                if character.isUppercase { text += "_" + character.lowercased() } else { text.append(character) }
            }
            #expect(String(cString: ipc_heap_error_name(Int32(number))) == snake, "\(code)")
        }
        #expect(Set(table.map(\.2)).count == table.count)
        #expect(IPC_HEAP_OK.rawValue == 0)
        #expect(String(cString: ipc_heap_error_name(0)) == "ok")
        #expect(String(cString: ipc_heap_error_name(Int32(IPC_HEAP_ERROR_UNKNOWN.rawValue))) == "unknown")
    }

    // MARK: Helpers

    /// The first ```c block after the line `heading` in `markdown`.
    static func firstCBlock(in markdown: String, after heading: String) -> String? {
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0 == heading }),
              let open = lines[start...].firstIndex(where: { $0 == "```c" }),
              let close = lines[(open + 1)...].firstIndex(where: { $0 == "```" })
        else { return nil }
        return lines[(open + 1)..<close].joined(separator: "\n") + "\n"
    }
}

/// Compiles C programs against `interprocess_heap.h` and libInterprocessHeap.so, in a directory of
/// its own (removed by ``remove()``).
struct CBuild {
    /// The repository (this file is Tests/InterprocessTests/HeapCABITests.swift).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var includeDirectory: String { repository.appendingPathComponent("Sources/CInterprocessHeapABI/include").path }
    static var testsDirectory: String { repository.appendingPathComponent("Tests/InterprocessTests").path }

    let directory: String
    let compiler: String
    let libraryDirectory: String

    init(sourceLocation: SourceLocation = #_sourceLocation) throws {
        compiler = try #require(Self.findProgram(["cc", "clang", "gcc"]), "no C compiler (cc, clang, gcc) in PATH", sourceLocation: sourceLocation)
        libraryDirectory = try #require(Self.libraryDirectory(), "libInterprocessHeap.so not found near \(BuiltExecutable.directory)", sourceLocation: sourceLocation)
        directory = NSTemporaryDirectory() + TestNames.make("cabi-build")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// Compiles the test source `path` (under Tests/InterprocessTests); the executable's path, or
    /// nil (and an issue with the compiler's messages).
    func compile(_ path: String, output: String, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        compile(file: Self.testsDirectory + "/" + path, output: output, sourceLocation: sourceLocation)
    }

    /// Compiles `text` as a C file.
    func compile(text: String, output: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String? {
        let file = directory + "/" + output + ".c"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return compile(file: file, output: output, sourceLocation: sourceLocation)
    }

    private func compile(file: String, output: String, sourceLocation: SourceLocation) -> String? {
        let executable = directory + "/" + output
        let arguments = [
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-I", Self.includeDirectory, "-o", executable, file,
            "-L", libraryDirectory, "-lInterprocessHeap", "-Wl,-rpath," + libraryDirectory,
        ]
        do {
            let result = try ChildProcess.run(compiler, arguments, timeout: .seconds(120))
            guard result.termination == .exited(0) else {
                Issue.record("\(compiler) \(arguments.joined(separator: " ")) failed (\(String(describing: result.termination))):\n\(result.standardError)", sourceLocation: sourceLocation)
                return nil
            }
            return executable
        } catch {
            Issue.record("cannot start \(compiler): \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// The directory of libInterprocessHeap.so: beside the test binary or above it (SwiftPM puts
    /// products in the build configuration's directory).
    static func libraryDirectory() -> String? {
        var directory = BuiltExecutable.directory
        for _ in 0..<4 {
            if access(directory + "/libInterprocessHeap.so", R_OK) == 0 { return directory }
            guard let slash = directory.lastIndex(of: "/"), slash != directory.startIndex else { break }
            directory = String(directory[..<slash])
        }
        return nil
    }

    /// The first of `names` found in PATH.
    static func findProgram(_ names: [String]) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for name in names {
            for entry in path.split(separator: ":") where access("\(entry)/\(name)", X_OK) == 0 {
                return "\(entry)/\(name)"
            }
        }
        return nil
    }
}
