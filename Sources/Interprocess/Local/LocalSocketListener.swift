public import SystemPackage
import InterprocessSystem

/// A listening Unix domain stream socket: a socket file that clients connect to with
/// ``LocalSocket/connect(path:timeout:)``, each connection becoming a ``LocalSocket``.
///
/// ```swift
/// let listener = try LocalSocketListener.listen(name: "render")   // …/interprocess/render.sock
/// defer { listener.close() }                                        // removes the socket file
/// while true {
///     let connection = try await listener.accept()
///     Task { try await serve(connection) }
/// }
/// ```
///
/// **The socket file.** It is created owner-only (0600) by default — only this user's processes can
/// connect; wider ``listen(path:backlog:permissions:)`` permissions are explicit — and is never, even
/// for an instant, wider than asked. Beside it a lock file (`PATH.lock`) records that a server is
/// alive: the kernel releases its lock the instant the server dies. So a socket file left behind by
/// a server that died (even by SIGKILL) is replaced by the next ``listen(path:backlog:permissions:)``,
/// while the socket file of a live server is never removed or replaced: listening there fails with
/// `alreadyExists`. Anything at the path that is not a socket is never replaced either. ``close()``
/// removes both files. The full protocol, and what a server killed at each step leaves behind, is
/// documented on `SocketFile`.
///
/// **Accepting** comes `async` (``accept(timeout:)``: parks no thread, honours cancellation),
/// blocking (``blockingAccept(timeout:)``: unavailable in async code) and ``tryAccept()`` (never
/// waits), with an optional timeout.
public final class LocalSocketListener: Sendable {
    /// The socket file's path.
    public let path: String
    private let owner: DescriptorOwner
    private let file: SocketFile

    private init(path: String, fd: FileDescriptor, file: SocketFile) {
        self.path = path
        owner = DescriptorOwner(fd, name: path)
        self.file = file
    }

    deinit { close() }

    /// Listens at `path`.
    /// - Parameters:
    ///   - path: at most 107 bytes (the kernel's limit for a socket address); its directory must
    ///     exist.
    ///   - backlog: connections the kernel queues before they are accepted.
    ///   - permissions: of the socket file; connecting needs write permission. Owner-only by default.
    /// - Throws: `alreadyExists` if a live server listens there (or something that is not a socket is
    ///   there); `invalidName` for a path too long; `notFound` (no such directory);
    ///   `permissionDenied` (also when something other than a regular file of this user — a link,
    ///   say — is at the lock file `PATH.lock`).
    public static func listen(path: String, backlog: Int = 128, permissions: FilePermissions = .ownerReadWrite) throws(InterprocessError) -> LocalSocketListener {
        let (file, fd) = try SocketFile.claim(path: path, kind: .stream, permissions: permissions) { fd throws(Errno) in
            try UnixSocket.listen(fd, backlog: backlog)
        }
        return LocalSocketListener(path: path, fd: fd, file: file)
    }

    /// Listens at the socket named `name` in the per-user runtime directory (`…/NAME.sock`, see
    /// ``LocalObjects``), owner-only.
    public static func listen(name: String, backlog: Int = 128) throws(InterprocessError) -> LocalSocketListener {
        try listen(path: path(forName: name), backlog: backlog)
    }

    /// The path of the socket named `name` in the per-user runtime directory.
    public static func path(forName name: String) throws(InterprocessError) -> String {
        try LocalDirectory.path(for: name, suffix: LocalDirectory.socketSuffix)
    }

    /// Accepts the next connection, suspending the task (no thread blocks) until one comes, for at
    /// most `timeout` (nil: as long as it takes).
    /// - Throws: `timedOut`, `cancelled` (nothing was accepted), `closed`.
    public func accept(timeout: Duration? = nil) async throws(InterprocessError) -> LocalSocket {
        try await DescriptorIO.suspending(owner, deadline: Deadline(after: timeout)) { fd throws(InterprocessError) in try acceptAttempt(fd) }
    }

    /// Accepts the next connection, blocking the calling thread, for at most `timeout` (nil: as long
    /// as it takes). The blocking form of ``accept(timeout:)``.
    @available(*, noasync, message: "use the async accept(timeout:) in async code")
    public func blockingAccept(timeout: Duration? = nil) throws(InterprocessError) -> LocalSocket {
        try DescriptorIO.blocking(owner, deadline: Deadline(after: timeout)) { fd throws(InterprocessError) in try acceptAttempt(fd) }
    }

    /// Accepts a connection if one is waiting; never waits.
    public func tryAccept() throws(InterprocessError) -> LocalSocket? {
        try DescriptorIO.once(owner) { fd throws(InterprocessError) in try acceptAttempt(fd) }
    }

    private func acceptAttempt(_ fd: FileDescriptor) throws(InterprocessError) -> IOAttempt<LocalSocket> {
        let accepted = try perform(.accept, name: path) { () throws(Errno) in try UnixSocket.accept(fd) }
        guard let accepted else { return .wait(.readable) }
        // Blocking mode: untimed calls wait in the kernel; the others pass MSG_DONTWAIT.
        try? accepted.setBlocking()
        return .done(LocalSocket(fd: accepted, name: path))
    }

    /// Stops listening and removes the socket file and its lock file (only if they are still this
    /// listener's). Connections already accepted go on. Waits in progress end with `closed`.
    /// Idempotent; also done when the last reference goes away.
    public func close() {
        file.release()
        owner.close { fd in UnixSocket.shutdownBoth(fd) }
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { owner.isClosed }
}
