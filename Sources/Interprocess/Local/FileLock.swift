public import SystemPackage
import InterprocessSystem
import Synchronization

/// A lock on a file that any process can name: shared (many holders) or exclusive (one), released by
/// the kernel the moment its holder dies, however it dies.
///
/// ```swift
/// let lock = try FileLock(path: "/var/tmp/myapp.lock")
/// try await lock.withLock {                            // exclusive by default; parks no thread
///     try updateTheCache()
/// }
/// if try lock.tryLock(.shared) { defer { lock.unlock() }; readTheCache() }
/// try await lock.lock(.shared, timeout: .seconds(2))   // throws .timedOut; honours cancellation
/// try lock.blockingLock()                              // blocks the thread (not in async code)
/// ```
///
/// It is an open-file-description lock on the whole file (Linux `fcntl(F_OFD_SETLK)`), not a
/// classic POSIX record lock, so:
/// - it belongs to this `FileLock` (its own open of the file), not to the process: two `FileLock`s
///   on one file exclude each other within one process exactly as across processes, and closing some
///   other descriptor of the file does not drop it;
/// - a process that dies holding it — `exit`, a crash, SIGKILL — leaves nothing behind: the kernel
///   drops the lock with the process's last descriptor of it, and the next waiter gets it. There is no
///   stale lock to clean up and no pid to check;
/// - it is advisory: it excludes other lockers, not readers or writers of the file that do not lock.
///
/// The file is created (owner-only by default) if it does not exist, and is never removed or
/// changed by the lock: its contents are yours. Locking a file on a network file system depends on
/// that file system's lock support.
///
/// A lock held through one `FileLock` is held once: locking while holding converts between shared
/// and exclusive (a conversion to exclusive waits for the other shared holders), and one
/// ``unlock()`` releases it. Waits come `async` (``lock(_:timeout:)``,
/// ``withLock(_:isolation:timeout:_:)``), blocking (``blockingLock(_:timeout:)``,
/// ``withBlockingLock(_:timeout:_:)``: unavailable in async code) and ``tryLock(_:)``, with an
/// optional timeout. The untimed blocking form waits in the kernel, which wakes it as soon as the
/// lock is free; the timed and `async` forms poll with a growing pause (up to 10 ms), because the
/// kernel offers no way to wait for a lock with a deadline or from an event loop: they may therefore
/// lose a race against an untimed blocking waiter.
public final class FileLock: Sendable {
    /// How a lock is held.
    public enum Mode: Sendable, Hashable, CustomStringConvertible {
        /// Any number of shared holders at once, and no exclusive holder.
        case shared
        /// One holder, and nobody else.
        case exclusive

        /// "shared" or "exclusive".
        public var description: String { self == .shared ? "shared" : "exclusive" }

        var kind: InterprocessSystem.FileLock.Kind { self == .shared ? .shared : .exclusive }
    }

    /// The path of the locked file, as given.
    public let path: String
    private let owner: DescriptorOwner
    private let held = Mutex<Mode?>(nil)

    /// Opens (and, if `create`, creates) the file at `path` for locking. Takes no lock.
    ///
    /// - Parameters:
    ///   - path: any file you may open; a symbolic link as the last component is refused
    ///     (`permissionDenied`), so that a link planted in a shared directory cannot redirect it.
    ///   - create: create the file if it does not exist (`notFound` otherwise).
    ///   - permissions: of a file this creates (owner-only by default).
    /// - Throws: `notFound`, `permissionDenied`, `incompatible` (a directory, FIFO, socket or device:
    ///   only regular files are locked).
    public init(path: String, create: Bool = true, permissions: FilePermissions = .ownerReadWrite) throws(InterprocessError) {
        self.path = path
        guard !path.isEmpty, !path.utf8.contains(0) else {
            throw InterprocessError(.invalidName, objectName: path, detail: "a path is not empty and contains no NUL")
        }
        var flags = LocalPath.nonBlockingFlag | LocalPath.noFollowFlag
        if create { flags |= LocalPath.createFlag }
        let fd: FileDescriptor
        do throws(Errno) {
            // Read-write, so that exclusive locks work; read-only where only that is allowed (shared
            // locks then still work, and an exclusive one reports permissionDenied).
            do throws(Errno) { fd = try LocalPath.open(path, flags | LocalPath.readWrite, permissions: permissions) } catch {
                guard error == .permissionDenied || error == .readOnlyFileSystem else { throw error }
                fd = try LocalPath.open(path, (flags & ~LocalPath.createFlag) | LocalPath.readOnly)
            }
        } catch {
            throw InterprocessError(.openFileLock, error, objectName: path)
        }
        do throws(InterprocessError) {
            guard try perform(.status, name: path, { () throws(Errno) in try fd.status() }).isRegularFile else {
                throw InterprocessError(.incompatible, objectName: path, detail: "not a regular file (only regular files are locked)")
            }
        } catch {
            try? fd.close()
            throw error
        }
        owner = DescriptorOwner(fd, name: path)
    }

    deinit { close() }

    /// How this `FileLock` holds the lock now, or nil.
    public var mode: Mode? { held.withLock { $0 } }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { owner.isClosed }

    /// Takes the lock in `mode`, suspending the task (no thread blocks) while others hold it in a
    /// conflicting mode, for at most `timeout` (nil: as long as it takes). While holding, converts
    /// the lock to `mode`. Polls with a growing pause (up to 10 ms): the kernel offers no way to wait
    /// for a lock from an event loop.
    /// - Throws: `timedOut` when it is still held by others after `timeout`; `cancelled` when the
    ///   task is cancelled (the lock is then not held).
    public func lock(_ mode: Mode = .exclusive, timeout: Duration? = nil) async throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff()
        if Task.isCancelled { throw InterprocessError(.cancelled, objectName: path, detail: "the task was cancelled") }
        let fd = try owner.begin()
        defer { owner.end() }
        while try !lockAttempt(fd, mode, deadline: deadline, timeout: timeout) {
            try await backoff.sleepAsync(before: deadline, name: path)
        }
    }

    /// Takes the lock in `mode`, blocking the calling thread, for at most `timeout` (nil: as long as
    /// it takes — the kernel then wakes this thread the moment the lock is free or its holder dies).
    /// The blocking form of ``lock(_:timeout:)``.
    @available(*, noasync, message: "use the async lock(_:timeout:) in async code, or tryLock")
    public func blockingLock(_ mode: Mode = .exclusive, timeout: Duration? = nil) throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        try owner.withDescriptor { fd throws(InterprocessError) in
            if deadline.isNever {
                _ = try perform(.lockFile, name: path) { () throws(Errno) in try InterprocessSystem.FileLock.lockWholeFile(fd, mode.kind, wait: true) }
                held.withLock { $0 = mode }
                return
            }
            var backoff = Backoff()
            while try !lockAttempt(fd, mode, deadline: deadline, timeout: timeout) {
                backoff.sleep(before: deadline)
            }
        }
    }

    /// Takes the lock if nobody holds it in a conflicting mode; never waits.
    /// - Returns: whether it is now held in `mode`.
    public func tryLock(_ mode: Mode = .exclusive) throws(InterprocessError) -> Bool {
        try owner.withDescriptor { fd throws(InterprocessError) -> Bool in
            try attempt(fd, mode)
        }
    }

    /// One round of a timed or `async` wait: whether the lock was taken; `timedOut` once `deadline`
    /// has passed, `closed` if the lock was closed meanwhile.
    private func lockAttempt(_ fd: FileDescriptor, _ mode: Mode, deadline: Deadline, timeout: Duration?) throws(InterprocessError) -> Bool {
        if try attempt(fd, mode) { return true }
        if owner.isClosed { throw owner.closedError() }
        if deadline.hasPassed {
            throw InterprocessError(.timedOut, objectName: path, detail: "another holder kept the lock for \(timeout ?? .zero)")
        }
        return false
    }

    /// Releases the lock (if held).
    public func unlock() {
        guard let fd = try? owner.begin() else { return }
        defer { owner.end() }
        held.withLock { held in
            InterprocessSystem.FileLock.unlockWholeFile(fd)
            held = nil
        }
    }

    /// Runs `body` holding the lock in `mode`, taken as ``lock(_:timeout:)`` takes it (no thread
    /// blocks), then releases it (also when `body` throws). `body` runs in the caller's isolation.
    public func withLock<R>(
        _ mode: Mode = .exclusive, isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil,
        _ body: () async throws -> R
    ) async throws -> R {
        try await lock(mode, timeout: timeout)
        defer { unlock() }
        return try await body()
    }

    /// The blocking form of ``withLock(_:isolation:timeout:_:)``: takes the lock as
    /// ``blockingLock(_:timeout:)``.
    @available(*, noasync, message: "use the async withLock(_:timeout:_:) in async code")
    public func withBlockingLock<R>(_ mode: Mode = .exclusive, timeout: Duration? = nil, _ body: () throws -> R) throws -> R {
        try blockingLock(mode, timeout: timeout)
        defer { unlock() }
        return try body()
    }

    /// Releases the lock and closes the file. Idempotent; also done when the last reference goes away.
    public func close() {
        owner.close { fd in InterprocessSystem.FileLock.unlockWholeFile(fd) }
        held.withLock { $0 = nil }
    }

    /// Whether some other `FileLock` (in any process) holds the file's lock in a way that conflicts
    /// with `mode` — for `.exclusive`, whether anyone holds it at all. Takes no lock; the answer may
    /// be out of date as soon as it returns.
    public func isHeldByOthers(against mode: Mode = .exclusive) throws(InterprocessError) -> Bool {
        try owner.withDescriptor { fd throws(InterprocessError) -> Bool in
            try perform(.lockFile, name: path) { () throws(Errno) in try InterprocessSystem.FileLock.wholeFileConflict(fd, with: mode.kind) } != nil
        }
    }

    private func attempt(_ fd: FileDescriptor, _ mode: Mode) throws(InterprocessError) -> Bool {
        guard try perform(.lockFile, name: path, { () throws(Errno) in try InterprocessSystem.FileLock.lockWholeFile(fd, mode.kind, wait: false) }) else {
            return false
        }
        held.withLock { $0 = mode }
        return true
    }
}

// MARK: - The byte locks of segment files

/// The byte-range locks that the library keeps on its own segment files (see `SegmentHandle`):
/// the same kernel mechanism as the public lock, one byte at a time. These forward to the system
/// layer, so that the memory layer's calls read `FileLock.tryLock(fd, byte:, .shared)`.
extension FileLock {
    static func tryLock(_ fd: FileDescriptor, byte: Int64, _ mode: Mode) throws(Errno) -> Bool {
        try InterprocessSystem.FileLock.tryLock(fd, byte: byte, mode.kind)
    }

    static func lock(_ fd: FileDescriptor, byte: Int64, _ mode: Mode, deadline: Deadline) throws(Errno) -> Bool {
        try InterprocessSystem.FileLock.lock(fd, byte: byte, mode.kind, deadline: deadline)
    }

    static func unlock(_ fd: FileDescriptor, byte: Int64) {
        InterprocessSystem.FileLock.unlock(fd, byte: byte)
    }

    static func isLocked(_ fd: FileDescriptor, byte: Int64, against mode: Mode = .exclusive) throws(Errno) -> Bool {
        try InterprocessSystem.FileLock.isLocked(fd, byte: byte, against: mode.kind)
    }
}
