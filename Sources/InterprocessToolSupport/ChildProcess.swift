// Process and terminal helpers of the tools (`ipc`, its benchmarks, the tests and their child):
// spawning and reaping children, finding the executables built beside this one, unbuffered standard
// streams. Not part of the library: `Interprocess` never starts a process. Like InterprocessSystem,
// this target calls the C library itself (posix_spawn, waitpid, poll, signal masks).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess
import InterprocessSystem
package import SystemPackage
import Synchronization

/// A child process started with `posix_spawn` (never `fork`: the parent is multithreaded).
/// Used by the tests, `ipc demo` and `ipc bench` to run real peer processes.
///
/// The child is reaped at most once; its termination is remembered, so that waiting again never
/// signals a pid that may since belong to another process.
package final class ChildProcess: Sendable {
    /// How a child ended.
    package enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        package var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Where a child's standard output or error goes.
    package enum Output: Sendable {
        case null, inherit, pipe
    }

    package let pid: Int32
    /// Our end of the child's standard input / output / error, when spawned with `.pipe`.
    package let standardInput: FileDescriptor?
    package let standardOutput: FileDescriptor?
    package let standardError: FileDescriptor?
    private let reaped = Mutex<Termination?>(nil)
    private let pipesClosed = Mutex(false)
    /// Bytes read from ``standardOutput`` and not yet returned: a read that times out in the middle
    /// of a line keeps what it got for the next.
    private let unread = Mutex<[UInt8]>([])

    private init(pid: Int32, ends: [FileDescriptor?]) {
        self.pid = pid
        standardInput = ends[0]
        standardOutput = ends[1]
        standardError = ends[2]
    }

    /// Starts `executable` with `arguments` (not including argv[0]). Standard input is /dev/null
    /// unless `standardInput` is `.pipe` (then ``standardInput`` is our writing end: closing it
    /// gives the child end-of-file).
    ///
    /// Every pipe is created close-on-exec in one step (`pipe2`), so that a child spawned by another
    /// thread at the same moment never inherits an end of it (which would keep a pipe open after
    /// this child exits, and a reader waiting for end-of-file waiting on).
    package static func spawn(
        _ executable: String, _ arguments: [String],
        standardInput: Output = .null, standardOutput: Output = .null, standardError: Output = .null,
        environment: [String: String]? = nil
    ) throws(Errno) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }

        var ourEnds: [FileDescriptor?] = [nil, nil, nil]
        var theirEnds: [CInt] = []
        defer { for fd in theirEnds { close(fd) } }
        let streams = [(CInt(0), standardInput), (CInt(1), standardOutput), (CInt(2), standardError)]
        for (target, output) in streams {
            switch output {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .inherit:
                break
            case .pipe:
                var fds: [CInt] = [0, 0]
                guard cipc_pipe_cloexec(&fds) == 0 else {
                    let error = Errno(rawValue: errno)
                    ourEnds.forEach { try? $0?.close() }
                    throw error
                }
                // fds[0] reads, fds[1] writes: the child gets the reading end of its input.
                let (ours, theirs) = target == 0 ? (fds[1], fds[0]) : (fds[0], fds[1])
                posix_spawn_file_actions_adddup2(&actions, theirs, target)
                ourEnds[Int(target)] = FileDescriptor(rawValue: ours)
                theirEnds.append(theirs)
            }
        }

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        let env: [UnsafeMutablePointer<CChar>?]
        if let environment {
            env = environment.map { strdup("\($0.key)=\($0.value)") }
        } else {
            var inherited: [UnsafeMutablePointer<CChar>?] = []
            var cursor = environ
            while let entry = cursor.pointee { inherited.append(strdup(entry)); cursor += 1 }
            env = inherited
        }
        defer { env.forEach { free($0) } }

        var pid: pid_t = 0
        let rc = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (env + [nil]).withUnsafeBufferPointer { envBuffer in
                posix_spawn(&pid, executable, &actions, nil, argvBuffer.baseAddress!, envBuffer.baseAddress!)
            }
        }
        guard rc == 0 else {
            ourEnds.forEach { try? $0?.close() }
            throw Errno(rawValue: rc)
        }
        return ChildProcess(pid: pid, ends: ourEnds)
    }

    /// Writes `text` to the child's standard input (spawned with `.pipe`); false if the child is gone
    /// or its input was closed. Never raises SIGPIPE: the signal is blocked for this thread during
    /// the write and a pending one is consumed, so a test that tells a dead child something lives on.
    @discardableResult
    package func send(_ text: String) -> Bool {
        guard let fd = standardInput else { return false }
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        defer {
            var zero = timespec(tv_sec: 0, tv_nsec: 0)
            while sigtimedwait(&pipeSignal, nil, &zero) == SIGPIPE {}
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc_write(fd.rawValue, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if errno == EINTR { continue } else { return false } }
            done += n
        }
        return true
    }

    /// Closes our ends of the child's pipes, once: a second call does nothing (closing a descriptor
    /// twice could close one that another thread has opened since under the same number).
    package func closePipes() {
        let first = pipesClosed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        for fd in [standardInput, standardOutput, standardError] { try? fd?.close() }
    }

    /// Reads one line from the child's standard output (without its newline), waiting at most
    /// `timeout`; nil on timeout or end of output. A partial line read before a timeout is kept.
    package func readLine(timeout: Duration = .seconds(20)) -> String? {
        let bytes = readOutput(timeout: timeout) { buffer in
            buffer.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 }
        } atEnd: { buffer in
            buffer.isEmpty ? nil : buffer.count
        }
        guard var bytes else { return nil }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads exactly `count` bytes from the child's standard output, waiting at most `timeout`.
    package func readBytes(_ count: Int, timeout: Duration = .seconds(20)) -> [UInt8]? {
        readOutput(timeout: timeout) { $0.count >= count ? count : nil } atEnd: { _ in nil }
    }

    /// Reads the child's standard output until it closes it, waiting at most `timeout`.
    package func readToEnd(timeout: Duration = .seconds(30)) -> String? {
        readOutput(timeout: timeout) { _ in nil } atEnd: { $0.count }.map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reads from standard output into the unread buffer until `complete` says how many of its
    /// bytes to return, or the output ends (then `atEnd` decides), or `timeout` passes (nil; the
    /// bytes stay unread).
    private func readOutput(
        timeout: Duration, complete: ([UInt8]) -> Int?, atEnd: ([UInt8]) -> Int?
    ) -> [UInt8]? {
        guard let fd = standardOutput else { return nil }
        let deadline = Deadline(after: timeout)
        return unread.withLock { buffer -> [UInt8]? in
            func take(_ count: Int) -> [UInt8] {
                defer { buffer.removeFirst(count) }
                return Array(buffer[..<count])
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                if let count = complete(buffer) { return take(count) }
                if deadline.hasPassed { return nil }
                var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
                let ready = Glibc_poll(&entry, 1, min(deadline.pollMilliseconds, 1000))
                if ready <= 0 { continue }
                let n = chunk.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return atEnd(buffer).map(take) }
                buffer += chunk[..<n]
            }
        }
    }

    /// Reaps the child if it has ended, without blocking.
    package func poll() -> Termination? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: CInt = 0
            guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
            reaped = Self.decode(status)
            return reaped
        }
    }

    /// Waits up to `timeout` for the child to end. On timeout the child is killed with SIGKILL,
    /// reaped, and nil is returned: a test never waits forever on a straggler. Also nil at once if
    /// the child was already reaped.
    @discardableResult
    package func wait(timeout: Duration) -> Termination? {
        let deadline = Deadline(after: timeout)
        var pause: UInt64 = 100_000
        while true {
            if let termination = poll() { return termination }
            if deadline.hasPassed {
                kill(signal: SIGKILL)
                reaped.withLock { reaped in
                    var status: CInt = 0
                    if reaped == nil, waitpid(pid, &status, 0) == pid { reaped = Self.decode(status) }
                }
                return nil
            }
            Clock.sleep(nanoseconds: pause)
            pause = min(pause * 2, 5_000_000)
        }
    }

    /// Sends `signal` (SIGKILL unless told otherwise), unless the child was already reaped (its pid
    /// may belong to another process).
    package func kill(signal: Int32 = SIGKILL) {
        reaped.withLock { reaped in
            if reaped == nil { _ = Glibc_kill(pid, signal) }
        }
    }

    private static func decode(_ status: CInt) -> Termination {
        let low = status & 0x7f
        if low == 0 { return .exited((status >> 8) & 0xff) }
        return .signaled(low)
    }

    /// Runs a command to completion, collecting its output. Kills it after `timeout`.
    package static func run(
        _ executable: String, _ arguments: [String], timeout: Duration = .seconds(60),
        environment: [String: String]? = nil
    ) throws(Errno) -> (termination: Termination?, standardOutput: String, standardError: String) {
        let child = try spawn(executable, arguments, standardOutput: .pipe, standardError: .pipe, environment: environment)
        let deadline = Deadline(after: timeout)
        var outputs: [[UInt8]] = [[], []]
        var open = [child.standardOutput!, child.standardError!]
        var indices = [0, 1]
        defer { open.forEach { try? $0.close() } }
        while !open.isEmpty {
            if deadline.hasPassed { break }
            var fds = open.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            let waitMs = min(deadline.pollMilliseconds, 1000)
            let ready = Glibc_poll(&fds, nfds_t(fds.count), waitMs)
            if ready <= 0 { continue }
            for position in fds.indices.reversed() where fds[position].revents != 0 {
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = chunk.withUnsafeMutableBytes { read(fds[position].fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    outputs[indices[position]].append(contentsOf: chunk[..<n])
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    try? open[position].close()
                    open.remove(at: position)
                    indices.remove(at: position)
                }
            }
        }
        let termination = child.wait(timeout: .nanoseconds(Int64(clamping: deadline.remainingNanoseconds)))
        return (termination, String(decoding: outputs[0], as: UTF8.self), String(decoding: outputs[1], as: UTF8.self))
    }
}

@inline(__always) private func Glibc_kill(_ pid: pid_t, _ signal: Int32) -> Int32 { kill(pid, signal) }
@inline(__always) private func Glibc_poll(_ fds: UnsafeMutablePointer<pollfd>, _ n: nfds_t, _ timeout: CInt) -> CInt {
    poll(fds, n, timeout)
}

/// Paths of executables built beside the running one (the test binary, `ipc`, the test child).
package enum BuiltExecutable {
    /// The directory of the running executable.
    package static var directory: String {
        #if os(Linux)
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "." }
        let path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #else
        let path = CommandLine.arguments[0]
        #endif
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    /// Finds `name` next to the running executable or in a directory above it.
    package static func path(of name: String) -> String? {
        var directory = Self.directory
        for _ in 0..<4 {
            let candidate = directory + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
            guard let slash = directory.lastIndex(of: "/"), slash != directory.startIndex else { break }
            directory = String(directory[..<slash])
        }
        return nil
    }
}

/// Unbuffered writes to standard output and error (no stdio globals, so no shared mutable state).
package enum StandardStream {
    package static func write(_ text: String, to fd: Int32 = 1) {
        var bytes = Array(text.utf8)
        writeAll(&bytes, to: fd)
    }

    /// Whether `fd` (standard output by default) is a terminal.
    package static func isTerminal(_ fd: Int32 = 1) -> Bool { isatty(fd) == 1 }

    package static func write(bytes: [UInt8], to fd: Int32 = 1) {
        var bytes = bytes
        writeAll(&bytes, to: fd)
    }

    private static func writeAll(_ bytes: inout [UInt8], to fd: Int32) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc_write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 { if errno == EINTR { continue } else { return } }
            done += n
        }
    }
}

@inline(__always) private func Glibc_write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
