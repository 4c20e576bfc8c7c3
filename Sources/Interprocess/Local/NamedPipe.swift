public import SystemPackage
import InterprocessSystem

/// One end of a named pipe (a FIFO in the file system): bytes written at the writing end come out,
/// in order, at the reading end, in whatever process opened it.
///
/// ```swift
/// // Reader
/// try NamedPipe.create(path: "/run/user/1000/jobs.fifo")
/// let input = try NamedPipe.openForReading(path: "/run/user/1000/jobs.fifo")
/// while case let bytes = try await input.read(), !bytes.isEmpty { handle(bytes) }
///
/// // Writer (another process)
/// let output = try await NamedPipe.openForWriting(path: "/run/user/1000/jobs.fifo", timeout: .seconds(5))
/// try await output.write(Array("job 1\n".utf8))
/// try output.blockingWrite(Array("job 2\n".utf8))       // blocks the thread (not in async code)
/// ```
///
/// **When the other end is gone.** A write when no process has the pipe open for reading any more
/// throws `disconnected`; it never raises SIGPIPE, so it never kills the process (SIGPIPE is blocked
/// for the writing thread during the write, and the one it raised is consumed). Opening for writing
/// with no reader present waits for one (``openForWriting(path:timeout:)``, or its blocking form) or
/// throws `disconnected` at once (``tryOpenForWriting(path:)``). A read returns the empty array at
/// end of stream: when every writer has closed (or died) after at least one opened; before any
/// writer opens, a read waits.
///
/// Writes of up to 4096 bytes (PIPE_BUF) are atomic: with several writers, each such write comes out
/// whole. Longer writes may interleave with other writers'.
///
/// Every read and write comes `async` (``read(upTo:timeout:)``: parks no thread — one process-wide
/// thread polls every waiting descriptor — and honours cancellation), blocking
/// (``blockingRead(upTo:timeout:)``: unavailable in async code) and `try…` (never waits), with an
/// optional timeout. Opening for writing has no descriptor to wait on until a reader exists, so it
/// polls with a growing pause (up to 10 ms).
///
/// A `NamedPipe` is `Sendable`; its reads (and its writes) should come from one task or thread at a
/// time, since each returns whatever bytes are there.
public final class NamedPipe: Sendable {
    /// Which end this is.
    public enum Direction: Sendable, Hashable {
        /// The reading end (``openForReading(path:)``).
        case reading
        /// The writing end (``openForWriting(path:timeout:)`` and its other forms).
        case writing
    }

    /// The FIFO's path.
    public let path: String
    /// Which end this is.
    public let direction: Direction
    private let owner: DescriptorOwner

    private init(path: String, direction: Direction, fd: FileDescriptor) {
        self.path = path
        self.direction = direction
        owner = DescriptorOwner(fd, name: path)
    }

    deinit { close() }

    /// Most bytes one read returns by default.
    public static let defaultReadSize = 65536

    // MARK: The FIFO in the file system

    /// Creates a FIFO at `path`, with exactly `permissions` (owner-only by default).
    /// - Throws: `alreadyExists` if anything is at `path`; `notFound` if its directory does not exist.
    public static func create(path: String, permissions: FilePermissions = .ownerReadWrite) throws(InterprocessError) {
        try checkPath(path)
        try perform(.makeFIFO, name: path) { () throws(Errno) in try LocalPath.makeFIFO(path, permissions: permissions) }
    }

    /// Creates a FIFO named `name` in the per-user runtime directory (see ``LocalObjects``) and
    /// returns its path.
    @discardableResult
    public static func create(name: String, permissions: FilePermissions = .ownerReadWrite) throws(InterprocessError) -> String {
        let path = try path(forName: name)
        try create(path: path, permissions: permissions)
        return path
    }

    /// The path of the FIFO named `name` in the per-user runtime directory (`…/NAME.fifo`).
    public static func path(forName name: String) throws(InterprocessError) -> String {
        try LocalDirectory.path(for: name, suffix: LocalDirectory.pipeSuffix)
    }

    /// Removes the FIFO at `path`. Open ends keep working; new opens fail with `notFound`.
    /// - Throws: `notFound`; `incompatible` if `path` is not a FIFO (nothing else is ever removed).
    public static func remove(path: String) throws(InterprocessError) {
        let status = try perform(.statPath, name: path) { () throws(Errno) in try LocalPath.status(path) }
        guard status.isFIFO else {
            throw InterprocessError(.incompatible, objectName: path, detail: "not a FIFO; only a FIFO is removed")
        }
        try perform(.unlinkPath, name: path) { () throws(Errno) in try LocalPath.unlink(path) }
    }

    /// Whether a FIFO is at `path`.
    public static func exists(path: String) -> Bool {
        (try? LocalPath.status(path))?.isFIFO ?? false
    }

    // MARK: Opening

    /// Opens the reading end. Never waits: reads wait for a writer.
    /// - Throws: `notFound`, `permissionDenied`, `incompatible` (not a FIFO).
    public static func openForReading(path: String) throws(InterprocessError) -> NamedPipe {
        guard let pipe = try open(path: path, direction: .reading) else {
            throw InterprocessError(.openFailed, objectName: path, detail: "could not open it for reading")
        }
        return pipe
    }

    /// Opens the writing end if a process has the FIFO open for reading; never waits.
    /// - Throws: `disconnected` if no process has it open for reading; `notFound`, `permissionDenied`,
    ///   `incompatible` (not a FIFO).
    public static func tryOpenForWriting(path: String) throws(InterprocessError) -> NamedPipe {
        guard let pipe = try open(path: path, direction: .writing) else { throw noReader(path) }
        return pipe
    }

    /// Opens the writing end, suspending the task (no thread blocks) until a process opens the pipe
    /// for reading, for at most `timeout` (nil: as long as it takes).
    /// - Throws: `timedOut` when nobody opened it for reading in time, `cancelled`; `notFound`,
    ///   `permissionDenied`, `incompatible` (not a FIFO).
    public static func openForWriting(path: String, timeout: Duration? = nil) async throws(InterprocessError) -> NamedPipe {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff()
        while true {
            if Task.isCancelled { throw InterprocessError(.cancelled, objectName: path, detail: "the task was cancelled") }
            if let pipe = try openForWritingAttempt(path: path, deadline: deadline, timeout: timeout) { return pipe }
            try await backoff.sleepAsync(before: deadline, name: path)
        }
    }

    /// Opens the writing end, blocking the calling thread until a process opens the pipe for reading,
    /// for at most `timeout` (nil: as long as it takes). The blocking form of
    /// ``openForWriting(path:timeout:)``.
    @available(*, noasync, message: "use the async openForWriting(path:timeout:) in async code")
    public static func blockingOpenForWriting(path: String, timeout: Duration? = nil) throws(InterprocessError) -> NamedPipe {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff()
        while true {
            if let pipe = try openForWritingAttempt(path: path, deadline: deadline, timeout: timeout) { return pipe }
            backoff.sleep(before: deadline)
        }
    }

    /// One round of waiting for a reader: the pipe, or nil to pause and try again; `timedOut` once
    /// `deadline` has passed.
    private static func openForWritingAttempt(path: String, deadline: Deadline, timeout: Duration?) throws(InterprocessError) -> NamedPipe? {
        if let pipe = try open(path: path, direction: .writing) { return pipe }
        if deadline.hasPassed { throw noReaderInTime(path, timeout) }
        return nil
    }

    /// Opens one end, non-blocking: nil for a writing end that has no reader (ENXIO).
    private static func open(path: String, direction: Direction) throws(InterprocessError) -> NamedPipe? {
        try checkPath(path)
        let flags = (direction == .reading ? LocalPath.readOnly : LocalPath.writeOnly) | LocalPath.nonBlockingFlag | LocalPath.noFollowFlag
        let fd: FileDescriptor
        do { fd = try LocalPath.open(path, flags) } catch {
            // ENXIO for the writing end of a FIFO: nobody has it open for reading yet. (A socket or
            // a device gives ENXIO too: that is never a FIFO.)
            if error == .noSuchAddressOrDevice, direction == .writing, (try? LocalPath.status(path))?.isFIFO == true { return nil }
            throw InterprocessError(.openFIFO, error, objectName: path)
        }
        guard (try? fd.status())?.isFIFO == true else {
            try? fd.close()
            throw InterprocessError(.incompatible, objectName: path, detail: "not a FIFO")
        }
        return NamedPipe(path: path, direction: direction, fd: fd)
    }

    private static func checkPath(_ path: String) throws(InterprocessError) {
        guard !path.isEmpty, !path.utf8.contains(0) else {
            throw InterprocessError(.invalidName, objectName: path.replacingNulls, detail: "a path is not empty and contains no NUL")
        }
    }

    private static func noReader(_ path: String) -> InterprocessError {
        InterprocessError(.disconnected, objectName: path, detail: "no process has the pipe open for reading")
    }

    private static func noReaderInTime(_ path: String, _ timeout: Duration?) -> InterprocessError {
        InterprocessError(.timedOut, objectName: path, detail: "no process opened the pipe for reading within \(timeout ?? .zero)")
    }

    // MARK: Reading

    /// Reads what is there (up to `maxCount` bytes), suspending the task (no thread blocks) until
    /// some bytes arrive, for at most `timeout` (nil: as long as it takes).
    /// - Returns: the bytes; empty at end of stream (every writer closed).
    /// - Throws: `timedOut`, `cancelled` (nothing was read).
    public func read(upTo maxCount: Int = NamedPipe.defaultReadSize, timeout: Duration? = nil) async throws(InterprocessError) -> [UInt8] {
        try await DescriptorIO.suspending(owner, deadline: Deadline(after: timeout)) { fd throws(InterprocessError) in try readAttempt(fd, maxCount) }
    }

    /// Reads what is there (up to `maxCount` bytes), blocking the calling thread until some bytes
    /// arrive, for at most `timeout` (nil: as long as it takes). The blocking form of
    /// ``read(upTo:timeout:)``.
    @available(*, noasync, message: "use the async read(upTo:timeout:) in async code")
    public func blockingRead(upTo maxCount: Int = NamedPipe.defaultReadSize, timeout: Duration? = nil) throws(InterprocessError) -> [UInt8] {
        try DescriptorIO.blocking(owner, deadline: Deadline(after: timeout)) { fd throws(InterprocessError) in try readAttempt(fd, maxCount) }
    }

    /// Reads what is there now (up to `maxCount` bytes); never waits.
    /// - Returns: the bytes; empty at end of stream; nil if nothing is there yet.
    public func tryRead(upTo maxCount: Int = NamedPipe.defaultReadSize) throws(InterprocessError) -> [UInt8]? {
        try DescriptorIO.once(owner) { fd throws(InterprocessError) in try readAttempt(fd, maxCount) }
    }

    private func readAttempt(_ fd: FileDescriptor, _ maxCount: Int) throws(InterprocessError) -> IOAttempt<[UInt8]> {
        guard direction == .reading else {
            throw InterprocessError(.invalidArgument, objectName: path, detail: "this is the writing end")
        }
        guard maxCount > 0 else { throw InterprocessError(.invalidArgument, objectName: path, detail: "a read of \(maxCount) bytes") }
        var buffer = [UInt8](repeating: 0, count: maxCount)
        let result = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) -> Int? in try fd.readAvailable(into: raw) }
        }
        let count: Int?
        do { count = try result.get() } catch { throw InterprocessError(.pipeRead, error, objectName: path) }
        guard let count else { return .wait(.readable) }
        if count == 0 {
            // End of file means "no writer": after writers came and went (a hang-up), or before any
            // came (then wait for one).
            return DescriptorWait.hasHangUp(fd) ? .done([]) : .wait(.readable)
        }
        buffer.removeLast(maxCount - count)
        return .done(buffer)
    }

    // MARK: Writing

    /// Writes all of `bytes`, suspending the task (no thread blocks) while the pipe is full, for at
    /// most `timeout` (nil: as long as it takes).
    /// - Throws: `disconnected` when no process has the pipe open for reading (no SIGPIPE);
    ///   `timedOut`, `cancelled` (some of the bytes may have been written: see ``tryWrite(_:)`` to
    ///   know how many).
    public func write(_ bytes: some Collection<UInt8>, timeout: Duration? = nil) async throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        var progress = WriteProgress(bytes)
        try await DescriptorIO.suspending(owner, deadline: deadline) { fd throws(InterprocessError) in try writeAttempt(fd, &progress) }
    }

    /// Writes all of `bytes`, blocking the calling thread while the pipe is full, for at most
    /// `timeout` (nil: as long as it takes). The blocking form of ``write(_:timeout:)``.
    @available(*, noasync, message: "use the async write(_:timeout:) in async code")
    public func blockingWrite(_ bytes: some Collection<UInt8>, timeout: Duration? = nil) throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        var progress = WriteProgress(bytes)
        try DescriptorIO.blocking(owner, deadline: deadline) { fd throws(InterprocessError) in try writeAttempt(fd, &progress) }
    }

    /// Writes what fits now; never waits. Up to 4096 bytes are written whole or not at all.
    /// - Returns: how many bytes were written (0 when the pipe is full).
    /// - Throws: `disconnected` when no process has the pipe open for reading.
    public func tryWrite(_ bytes: some Collection<UInt8>) throws(InterprocessError) -> Int {
        var progress = WriteProgress(bytes)
        _ = try DescriptorIO.once(owner) { fd throws(InterprocessError) in try writeAttempt(fd, &progress, once: true) }
        return progress.done
    }

    private struct WriteProgress {
        let bytes: [UInt8]
        var done = 0
        init(_ bytes: some Collection<UInt8>) { self.bytes = Array(bytes) }
    }

    private func writeAttempt(_ fd: FileDescriptor, _ progress: inout WriteProgress, once: Bool = false) throws(InterprocessError) -> IOAttempt<Void> {
        guard direction == .writing else {
            throw InterprocessError(.invalidArgument, objectName: path, detail: "this is the reading end")
        }
        while progress.done < progress.bytes.count {
            let done = progress.done
            let result = progress.bytes.withUnsafeBytes { raw in
                Result { () throws(Errno) -> Int? in try fd.writeAvailable(UnsafeRawBufferPointer(rebasing: raw[done...])) }
            }
            let count: Int?
            do { count = try result.get() } catch { throw InterprocessError(.pipeWrite, error, objectName: path) }
            guard let count else { return once ? .done(()) : .wait(.writable) }
            progress.done += count
        }
        return .done(())
    }

    /// Closes this end. Readers at the other end see end of stream once every writer has closed;
    /// writers see `disconnected` once every reader has. Idempotent; also done when the last reference
    /// goes away.
    public func close() { owner.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { owner.isClosed }
}
