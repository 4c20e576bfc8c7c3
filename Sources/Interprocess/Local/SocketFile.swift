import InterprocessSystem
import SystemPackage
import Synchronization

/// The file of a listening (or bound datagram) socket, and the lock that says its server is alive.
///
/// ## The protocol
/// Beside the socket file `PATH` lies a lock file `PATH.lock` (owner-only). A server holds an
/// exclusive open-file-description lock on its byte 0 for as long as it serves; the kernel drops the
/// lock the instant the server dies, however it dies. So:
/// - **claim** (listen / bind): take the lock (busy → `alreadyExists`: a live server); check that
///   the lock file still has its name (a closing server may have just removed it; then retry). Then
///   look at `PATH`: nothing, or a socket that nobody answers (connect → ECONNREFUSED: a file left by
///   a dead server, or by another program), may be replaced; a socket that answers is a live server
///   that does not use our lock (→ `alreadyExists`, never removed); anything that is not a socket is
///   never replaced. A stale file is removed and the new socket bound at `PATH`. Its permissions are
///   set on the socket before the bind (Linux gives the new file the socket's mode less the umask,
///   so it is never wider than asked) and exactly after it; a stream socket listens only then, so a
///   client that connects earlier is refused, never let in. The server's pid is written into the
///   lock file, for `ipc ls`.
/// - **release** (close): under the lock, remove `PATH` if it still names our socket (compared by
///   device and inode), remove the lock file, drop the lock.
/// - **a server killed at any step** leaves at most `PATH` and `PATH.lock` with no lock held, which
///   the next claim replaces and `ipc gc` removes; a claim that fails removes what it made.
final class SocketFile: Sendable {
    let path: String
    let lockPath: String
    private let lockFD: FileDescriptor
    private let device: UInt64
    private let inode: UInt64
    private let released = Atomic<Bool>(false)

    private init(path: String, lockFD: FileDescriptor, device: UInt64, inode: UInt64) {
        self.path = path
        self.lockPath = path + LocalDirectory.lockSuffix
        self.lockFD = lockFD
        self.device = device
        self.inode = inode
    }

    /// Claims `path` for a new server of `kind` and returns the bound socket (non-blocking,
    /// close-on-exec), after `prepare` (e.g. `listen`) ran on it and before anyone could connect.
    static func claim(
        path: String, kind: UnixSocket.Kind, permissions: FilePermissions,
        prepare: (FileDescriptor) throws(Errno) -> Void
    ) throws(InterprocessError) -> (SocketFile, FileDescriptor) {
        guard UnixSocket.address(path: path) != nil else {
            throw InterprocessError(.invalidName, objectName: path.replacingNulls,
                detail: "a socket path has 1 to \(UnixSocket.maximumPathLength) bytes and no NUL")
        }
        let lockFD = try takeLock(path: path)
        do throws(InterprocessError) {
            try checkExisting(path: path, kind: kind)
            let (socket, status) = try bind(path, kind: kind, permissions: permissions, prepare: prepare)
            writeOwner(lockFD)
            return (SocketFile(path: path, lockFD: lockFD, device: status.device, inode: status.inode), socket)
        } catch {
            removeLockFile(lockFD, path + LocalDirectory.lockSuffix)
            try? lockFD.close()
            throw error
        }
    }

    /// Removes the socket file (if it is still ours) and the lock file, and drops the lock.
    /// Idempotent.
    func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let status = try? LocalPath.status(path), status.device == device, status.inode == inode {
            try? LocalPath.unlink(path)
        }
        Self.removeLockFile(lockFD, lockPath)
        try? lockFD.close()
    }

    /// Removes the lock file if its name still refers to the file open as `fd` (whose lock the
    /// caller holds).
    private static func removeLockFile(_ fd: FileDescriptor, _ lockPath: String) {
        if let mine = try? fd.status(), let named = try? LocalPath.status(lockPath),
           named.device == mine.device, named.inode == mine.inode {
            try? LocalPath.unlink(lockPath)
        }
    }

    deinit { release() }

    // MARK: Steps of a claim

    private static func takeLock(path: String) throws(InterprocessError) -> FileDescriptor {
        let lockPath = path + LocalDirectory.lockSuffix
        for _ in 0..<32 {
            let fd = try perform(.openLockFile, name: lockPath, detail: "could not open the socket's lock file") { () throws(Errno) in
                try LocalPath.open(lockPath, LocalPath.readWrite | LocalPath.createFlag | LocalPath.noFollowFlag | LocalPath.nonBlockingFlag)
            }
            do throws(InterprocessError) {
                let status = try perform(.status, name: lockPath) { () throws(Errno) in try fd.status() }
                guard status.isRegularFile, status.owner == ProcessIdentity.effectiveUserID else {
                    throw InterprocessError(.permissionDenied, objectName: lockPath, detail: "the socket's lock file is not a regular file of this user")
                }
                let locked = try perform(.lockFile, name: lockPath) { () throws(Errno) in
                    try InterprocessSystem.FileLock.tryLock(fd, byte: 0, .exclusive)
                }
                guard locked else {
                    let owner = ownerPID(fd)
                    throw InterprocessError(.alreadyExists, objectName: path,
                        detail: "a live server\(owner.map { " (pid \($0))" } ?? "") listens there")
                }
                // The lock file may have been removed (by a closing server) after we opened it.
                if let named = try? LocalPath.status(lockPath), named.device == status.device, named.inode == status.inode {
                    return fd
                }
                try? fd.close()
            } catch {
                try? fd.close()
                throw error
            }
        }
        throw InterprocessError(.createFailed, objectName: path, detail: "its lock file kept being removed and re-created")
    }

    private static func checkExisting(path: String, kind: UnixSocket.Kind) throws(InterprocessError) {
        let status: FileStatus
        do { status = try LocalPath.status(path) } catch {
            if error == .noSuchFileOrDirectory { return }
            throw InterprocessError(.statPath, error, objectName: path)
        }
        guard status.isSocket else {
            throw InterprocessError(.alreadyExists, objectName: path, detail: "something that is not a socket is there; it is never replaced")
        }
        switch probe(path: path, kind: kind) {
        case .gone: return
        case .refused:
            // Stale: a file left by a server that is gone.
            do { try LocalPath.unlink(path) } catch {
                if error != .noSuchFileOrDirectory { throw InterprocessError(.unlinkPath, error, objectName: path, detail: "could not remove a stale socket file") }
            }
        case .answered:
            throw InterprocessError(.alreadyExists, objectName: path, detail: "a live server listens there")
        case .unknown(let operation, let error):
            throw InterprocessError(operation, error, objectName: path, detail: "could not tell whether a server listens there")
        }
    }

    private static func bind(
        _ path: String, kind: UnixSocket.Kind, permissions: FilePermissions, prepare: (FileDescriptor) throws(Errno) -> Void
    ) throws(InterprocessError) -> (FileDescriptor, FileStatus) {
        let socket = try perform(.socket, name: path) { () throws(Errno) in try UnixSocket.make(kind) }
        // Linux creates the file with the socket's mode less the umask: never wider than asked.
        try? socket.setPermissions(permissions)
        do throws(Errno) {
            try UnixSocket.bind(socket, to: UnixSocket.address(path: path)!)
        } catch {
            try? socket.close()
            throw InterprocessError(.bind, error, objectName: path)
        }
        do throws(InterprocessError) {
            let status = try perform(.statPath, name: path, otherwise: .createFailed) { () throws(Errno) in try LocalPath.status(path) }
            try perform(.setPermissions, name: path) { () throws(Errno) in try LocalPath.setPermissions(path, permissions) }
            try perform(.listen, name: path) { () throws(Errno) in try prepare(socket) }
            return (socket, status)
        } catch {
            if let status = try? LocalPath.status(path), status.isSocket { try? LocalPath.unlink(path) }
            try? socket.close()
            throw error
        }
    }

    private static func writeOwner(_ fd: FileDescriptor) {
        let text = Array("\(ProcessIdentity.currentPID)\n".utf8)
        _ = try? fd.truncate(to: 0)
        text.withUnsafeBytes { _ = try? fd.write($0, at: 0) }
    }

    // MARK: Looking at a socket file from outside

    /// What a connect to a socket file tells.
    enum Probe {
        /// A server accepted (or its queue is full, or it is of another type): alive.
        case answered
        /// Nobody is bound to the file any more: stale.
        case refused
        /// No file.
        case gone
        /// Cannot tell (e.g. no permission, or no descriptor left for the probing socket): the
        /// operation that failed, and its errno.
        case unknown(SystemOperation, Errno)
    }

    /// Connects to `path` and hangs up at once. A live server sees a connection that ends at once.
    static func probe(path: String, kind: UnixSocket.Kind) -> Probe {
        guard let address = UnixSocket.address(path: path) else { return .unknown(.connectStream, .invalidArgument) } // an invalid path
        let fd: FileDescriptor
        do { fd = try UnixSocket.make(kind) } catch { return .unknown(.socket, error) }
        defer { try? fd.close() }
        do throws(Errno) {
            try UnixSocket.connect(fd, to: address)
            return .answered
        } catch {
            switch error {
            case Errno.connectionRefused: return .refused
            case Errno.noSuchFileOrDirectory: return .gone
            case Errno.resourceTemporarilyUnavailable, Errno.protocolWrongTypeForSocket, Errno.nowInProgress: return .answered
            default: return .unknown(.connectStream, error)
            }
        }
    }

    /// What the lock file beside a socket file says: whether a server holds it (alive, by the
    /// kernel's word), and the pid it wrote. Nil if there is no readable lock file.
    static func lockStatus(path: String) -> (held: Bool, pid: Int32?)? {
        let lockPath = path + LocalDirectory.lockSuffix
        guard let fd = try? LocalPath.open(lockPath, LocalPath.readOnly | LocalPath.noFollowFlag | LocalPath.nonBlockingFlag) else { return nil }
        defer { try? fd.close() }
        guard (try? fd.status())?.isRegularFile == true else { return nil }
        let held = (try? InterprocessSystem.FileLock.isLocked(fd, byte: 0)) ?? true
        return (held, ownerPID(fd))
    }

    /// Removes the socket file at `path` and its lock file if no server is alive: the lock is free
    /// (taken here while deciding) and a connect is refused. Returns whether it removed the socket
    /// file. Never removes anything that is not a socket.
    static func removeIfStale(path: String) -> Bool {
        guard let status = try? LocalPath.status(path), status.isSocket else { return false }
        let lockPath = path + LocalDirectory.lockSuffix
        var lockFD: FileDescriptor?
        if (try? LocalPath.status(lockPath)) != nil {
            guard let fd = try? LocalPath.open(lockPath, LocalPath.readWrite | LocalPath.noFollowFlag | LocalPath.nonBlockingFlag) else { return false }
            guard (try? InterprocessSystem.FileLock.tryLock(fd, byte: 0, .exclusive)) == true else {
                try? fd.close()
                return false // a live server
            }
            lockFD = fd
        }
        defer { try? lockFD?.close() }
        // Nobody answers, whatever the socket's type (a live server of the other type says EPROTOTYPE).
        guard case .refused = probe(path: path, kind: .stream), case .refused = probe(path: path, kind: .datagram) else { return false }
        // Still the same file? (A server may have replaced it meanwhile; it would hold the lock.)
        guard let now = try? LocalPath.status(path), now.inode == status.inode, now.device == status.device else { return false }
        guard (try? LocalPath.unlink(path)) != nil else { return false }
        if let lockFD, let mine = try? lockFD.status(), let named = try? LocalPath.status(lockPath),
           named.inode == mine.inode, named.device == mine.device {
            try? LocalPath.unlink(lockPath)
        }
        return true
    }

    private static func ownerPID(_ fd: FileDescriptor) -> Int32? {
        guard let bytes = try? fd.read(count: 32, at: 0) else { return nil }
        let text = String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        return Int32(text)
    }

}
