#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Dispatch
import SystemPackage

/// Names unique to this test run: "ipct-PID-TAG-NNNNNN".
///
/// The counter has a fixed width so that no name is a prefix of another test's name: tests collect
/// garbage and look for leftovers by prefix, and "…-1" must not match "…-17" of a test running beside it.
enum TestNames {
    private static let counter = Atomic<Int>(0)

    static func make(_ tag: String) -> String {
        "ipct-\(getpid())-\(tag)-\(fixedWidth(counter.add(1, ordering: .relaxed).newValue))"
    }

    /// `n` in six decimal digits, zero-padded.
    static func fixedWidth(_ n: Int) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    /// Objects in /dev/shm whose name starts with `prefix`.
    static func leftovers(_ prefix: String) -> [String] {
        SharedMemoryObject.listNames().filter { $0.hasPrefix(prefix) }
    }
}

/// Runs `body` with a name prefix and checks afterwards that nothing with that prefix is left in
/// /dev/shm; removes anything left so that one failure does not leak into the next run.
func withCleanNames(_ tag: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: (String) throws -> Void) rethrows {
    let prefix = TestNames.make(tag)
    defer {
        let left = TestNames.leftovers(prefix)
        #expect(left.isEmpty, "left in /dev/shm: \(left)", sourceLocation: sourceLocation)
        for name in left { try? SharedMemoryObject.unlink("/" + name) }
    }
    try body(prefix)
}

/// ``withCleanNames(_:sourceLocation:_:)`` for an async body.
func withCleanNamesAsync(_ tag: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: (String) async throws -> Void) async rethrows {
    let prefix = TestNames.make(tag)
    defer {
        let left = TestNames.leftovers(prefix)
        #expect(left.isEmpty, "left in /dev/shm: \(left)", sourceLocation: sourceLocation)
        for name in left { try? SharedMemoryObject.unlink("/" + name) }
    }
    try await body(prefix)
}

/// The test child executable, built beside the test binary.
enum Peer {
    static var path: String {
        guard let path = BuiltExecutable.path(of: "InterprocessTestChild") else {
            Issue.record("InterprocessTestChild not found near \(BuiltExecutable.directory)")
            return "/nonexistent"
        }
        return path
    }

    /// Starts the child with `arguments`, its standard input and output on pipes (``ChildProcess/tell(_:)``
    /// tells it to go on; ``ChildProcess/readLine(timeout:)`` reads what it says).
    static func spawn(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess.spawn(path, arguments, standardInput: .pipe, standardOutput: .pipe, standardError: .inherit)
    }

    /// Starts the child with `arguments` and one environment variable set.
    static func spawn(environment key: String, _ value: String, _ arguments: String...) throws -> ChildProcess {
        var environment: [String: String] = [:]
        for (name, entry) in ProcessEnvironment.all { environment[name] = entry }
        environment[key] = value
        return try ChildProcess.spawn(
            path, arguments, standardInput: .pipe, standardOutput: .pipe, standardError: .inherit, environment: environment)
    }

    /// Runs the child to completion (bounded) and returns its exit and output.
    static func run(_ arguments: String..., timeout: Duration = .seconds(30)) throws -> (termination: ChildProcess.Termination?, output: String) {
        let result = try ChildProcess.run(path, arguments, timeout: timeout)
        if !result.standardError.isEmpty { print("child stderr: \(result.standardError)") }
        return (result.termination, result.standardOutput)
    }
}

extension ChildProcess {
    /// Tells a child that holds something (a lock, a segment, a wait) to go on: one line on its
    /// standard input. The child, not a clock, decides when the next step happens.
    func tell(_ line: String = "go") {
        #expect(send(line + "\n"), "child \(pid) is gone or stopped listening")
    }

    /// Kills and reaps the child and closes our pipe ends (once, however often it is called: a test
    /// and its `defer` may both stop a child).
    func stop() {
        kill(signal: SIGKILL)
        wait(timeout: .seconds(10))
        closePipes()
    }
}

/// The upper bound, in seconds, for "returns promptly" in the tests: a timed wait that ends at its
/// timeout, a takeover of a dead owner, a cancelled wait. What the tests catch with it is a wait
/// that does not end by its own mechanism (it would take its full, much longer timeout, or forever);
/// how fast the mechanism is belongs to `ipc bench`. Generous, because on a 2-CPU machine running
/// the parallel suites beside other work a thread waits its turn: up to 2 s was seen at a load
/// average of 15.
let promptly = 5.0

/// Polls `condition` every 2 ms, without blocking a thread of the cooperative pool, until it holds
/// or `timeout` passes; returns whether it held. How an async test waits for state it can observe
/// (a waiter parked, a lock claimed).
func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = Deadline(after: timeout)
    while !deadline.hasPassed {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return try condition()
}

/// A task executor with a serial dispatch queue of its own (a queue always gets a thread).
///
/// Swift Testing runs the synchronous tests of the parallel suites on the cooperative pool (2 threads
/// on 2 CPUs), where they block while they wait for children; an async test that measures how
/// promptly a cancelled wait returns would measure that congestion too (seen: 1.5 s on a loaded
/// machine). Tasks that prefer this executor run beside the pool instead, so such a bound measures
/// the library, not the pool.
final class OwnQueueExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "interprocess.tests.own-queue")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Runs `body` on an ``OwnQueueExecutor`` of its own; tasks that `body` starts should prefer it too
/// (`Task(executorPreference: executor) { … }`: unstructured tasks do not inherit a preference).
func onOwnQueue<R: Sendable>(_ body: (OwnQueueExecutor) async throws -> R) async rethrows -> R {
    let executor = OwnQueueExecutor()
    return try await withTaskExecutorPreference(executor) { try await body(executor) }
}

/// The `waiters` detail of the named primitive (as `ipc inspect` shows it), or nil.
func waiters(_ name: String) -> Int? {
    (try? SharedMemory.info(name: name)).flatMap { Int($0.details["waiters"] ?? "") }
}

/// The state letter of process `pid` in /proc (`T`: stopped, `S`: sleeping, …), or nil.
func processState(_ pid: Int32) -> Character? {
    stateLetter(ofStatFile: "/proc/\(pid)/stat")
}

/// The state letter in a /proc `stat` file (a process's or one thread's), or nil if it cannot be read.
private func stateLetter(ofStatFile path: String) -> Character? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 512)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0, let paren = buffer[..<n].lastIndex(of: UInt8(ascii: ")")), paren + 2 < n else { return nil }
    return Character(UnicodeScalar(buffer[paren + 2]))
}

/// Whether every thread of process `pid` is stopped (after a SIGSTOP, which stops the threads one by
/// one, each when it next runs or sleeps interruptibly: the main thread's state alone does not say a
/// thread parked in a futex wait has stopped too).
func allThreadsStopped(_ pid: Int32) -> Bool {
    guard let directory = opendir("/proc/\(pid)/task") else { return false }
    var tids: [Int32] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let tid = Int32(name) { tids.append(tid) }
    }
    closedir(directory)
    guard !tids.isEmpty else { return false }
    return tids.allSatisfy { tid in
        let path = "/proc/\(pid)/task/\(tid)/stat"
        guard let state = stateLetter(ofStatFile: path) else { return access(path, F_OK) != 0 }  // ended: fine
        return state == "T" || state == "t"
    }
}

/// Expects `body` to throw an `InterprocessError` with `code`.
func expectError<R>(
    _ code: InterprocessError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R
) {
    do {
        _ = try body()
        Issue.record("expected \(code), but it succeeded", sourceLocation: sourceLocation)
    } catch let error as InterprocessError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

/// ``expectError(_:sourceLocation:_:)`` for an async body.
func expectErrorAsync<R>(
    _ code: InterprocessError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> R
) async {
    do {
        _ = try await body()
        Issue.record("expected \(code), but it succeeded", sourceLocation: sourceLocation)
    } catch let error as InterprocessError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Writes raw bytes into the file of shared memory object `name` (to corrupt it on purpose).
func scribble(_ name: String, at offset: Int, _ bytes: [UInt8]) {
    let fd = open("/dev/shm/" + name, O_RDWR)
    precondition(fd >= 0)
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    precondition(written == bytes.count)
}

enum ProcessEnvironment {
    static var all: [(String, String)] {
        var result: [(String, String)] = []
        var cursor = environ
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result.append((String(text[..<equals]), String(text[text.index(after: equals)...])))
            }
            cursor += 1
        }
        return result
    }
}

/// Owner tokens that look alive, for tests that fill a primitive's state by hand: this object locks
/// each token's byte on an open file description of the segment file of its own, as a live
/// process's `OwnerLease` does; the locks go when it is deallocated.
final class LiveTokens {
    private let fd: FileDescriptor

    init(segment name: String) throws {
        fd = try FileDescriptor.open(FilePath("/dev/shm/" + name), .readWrite, options: .closeOnExec)
    }

    deinit { try? fd.close() }

    /// Makes `token` alive and returns it.
    func make(_ token: UInt64) throws -> UInt64 {
        let locked = try FileLock.tryLock(fd, byte: OwnerLease.lockByte(of: token), .exclusive)
        #expect(locked, "token \(token) is held elsewhere")
        return token
    }
}

/// `count` bytes of the segment file `name` at `offset` (a peer's view of its shared state, read
/// without mapping it).
func peek(_ name: String, at offset: Int, count: Int) -> [UInt8] {
    let fd = open("/dev/shm/" + name, O_RDONLY)
    precondition(fd >= 0)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    precondition(n == count)
    return bytes
}

func peek32(_ name: String, at offset: Int) -> UInt32 {
    UInt32(littleEndian: peek(name, at: offset, count: 4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
}

func peek64(_ name: String, at offset: Int) -> UInt64 {
    UInt64(littleEndian: peek(name, at: offset, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
}
