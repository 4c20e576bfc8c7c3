public import SystemPackage
import InterprocessSystem
import Synchronization

/// A Unix domain datagram socket: each ``send(_:descriptors:to:timeout:)`` is one message that arrives whole
/// (or not at all), with its descriptors and — always — the sender's pid, uid and gid as the kernel
/// vouches for them (`SCM_CREDENTIALS`).
///
/// ```swift
/// // Server: bound to a socket file; answers whoever wrote.
/// let server = try LocalDatagramSocket.bind(name: "metrics")
/// let message = try await server.receive()
/// print(message.sender!)                                  // pid, uid, gid of the sending process
/// try await server.send(Array("ok".utf8), to: message.senderAddress!)
///
/// // Client (another process): sends to the server by default, and can be answered.
/// let client = try LocalDatagramSocket.connect(name: "metrics")
/// try client.blockingSend(Array("cpu 0.93".utf8))          // blocking forms: not in async code
/// let reply = try client.blockingReceive(timeout: .seconds(1))
/// ```
///
/// A client needs no file of its own: on Linux the kernel gives it an abstract address (no file in
/// any file system) when it first sends, which is the ``LocalMessage/senderAddress`` the server
/// answers. The server's socket file follows the rules of ``LocalSocketListener`` (owner-only by
/// default, a stale file replaced, a live server's never).
///
/// A datagram is limited in size by the socket buffers (about 200 KB on Linux; `invalidSize` beyond).
/// Sends and receives come `async` (``receive(timeout:)``: parks no thread, honours cancellation),
/// blocking (``blockingReceive(timeout:)``: unavailable in async code) and `try…` (never waits), with
/// an optional timeout; a send waits while the receiver's queue is full.
public final class LocalDatagramSocket: Sendable {
    /// The socket file this socket is bound to (a server), or nil.
    public let path: String?
    private let owner: DescriptorOwner
    private let file: SocketFile?
    /// A receive is between its peek and its read (perhaps waiting in the kernel).
    private let receiving = Atomic<Bool>(false)

    private init(fd: FileDescriptor, path: String?, file: SocketFile?) {
        // Blocking mode: untimed calls wait in the kernel; the others pass MSG_DONTWAIT.
        try? fd.setBlocking()
        self.path = path
        owner = DescriptorOwner(fd, name: path)
        self.file = file
    }

    deinit { close() }

    /// Binds a socket to the file at `path`, to receive datagrams sent there.
    /// - Throws: as ``LocalSocketListener/listen(path:backlog:permissions:)``.
    public static func bind(path: String, permissions: FilePermissions = .ownerReadWrite) throws(InterprocessError) -> LocalDatagramSocket {
        let (file, fd) = try SocketFile.claim(path: path, kind: .datagram, permissions: permissions) { fd throws(Errno) in
            try UnixSocket.setPassCredentials(fd)
        }
        return LocalDatagramSocket(fd: fd, path: path, file: file)
    }

    /// Binds a socket named `name` in the per-user runtime directory (`…/NAME.sock`).
    public static func bind(name: String) throws(InterprocessError) -> LocalDatagramSocket {
        try bind(path: LocalSocketListener.path(forName: name))
    }

    /// A socket whose datagrams go to the socket bound at `path` (unless ``send(_:descriptors:to:timeout:)``
    /// names another address), and which receives the answers.
    /// - Throws: `notFound`, `connectionRefused` (a socket file nobody is bound to any more),
    ///   `incompatible` (a stream socket), `permissionDenied`.
    public static func connect(path: String) throws(InterprocessError) -> LocalDatagramSocket {
        guard let address = UnixSocket.address(path: path) else {
            throw InterprocessError(.invalidName, objectName: path.replacingNulls, detail: "a socket path has 1 to \(UnixSocket.maximumPathLength) bytes and no NUL")
        }
        let fd = try perform(.socket, name: path) { () throws(Errno) in try UnixSocket.make(.datagram) }
        do throws(InterprocessError) {
            try perform(.socket, name: path) { () throws(Errno) in try UnixSocket.setPassCredentials(fd) }
            try perform(.connectDatagram, name: path) { () throws(Errno) in try UnixSocket.connect(fd, to: address) }
        } catch {
            try? fd.close()
            throw error
        }
        return LocalDatagramSocket(fd: fd, path: nil, file: nil)
    }

    /// A socket whose datagrams go to the socket named `name` in the per-user runtime directory.
    public static func connect(name: String) throws(InterprocessError) -> LocalDatagramSocket {
        try connect(path: LocalSocketListener.path(forName: name))
    }

    /// A connected pair of datagram sockets in this process (e.g. to hand one to a child).
    public static func pair() throws(InterprocessError) -> (LocalDatagramSocket, LocalDatagramSocket) {
        let (a, b) = try perform(.socket, name: nil) { () throws(Errno) in try UnixSocket.pair(.datagram) }
        // Owned from here on: closed by their deinit if the credentials option fails.
        let pair = (LocalDatagramSocket(fd: a, path: nil, file: nil), LocalDatagramSocket(fd: b, path: nil, file: nil))
        try perform(.socket, name: nil) { () throws(Errno) in
            try UnixSocket.setPassCredentials(a)
            try UnixSocket.setPassCredentials(b)
        }
        return pair
    }

    /// This socket's own address: its file, or the abstract address the kernel gave it (nil before
    /// a client's first send).
    public var address: LocalSocketAddress? {
        guard let fd = try? owner.begin() else { return nil }
        defer { owner.end() }
        guard let raw = try? UnixSocket.localAddress(fd), !raw.bytes.isEmpty else { return nil }
        return LocalSocketAddress(raw)
    }

    // MARK: Sending

    /// Sends one datagram to `destination` (nil: the socket this one connected to), suspending the
    /// task (no thread blocks) while the receiver's queue is full, for at most `timeout` (nil: as
    /// long as it takes).
    /// - Throws: `disconnected` (nobody is bound at the destination any more), `invalidSize` (too big
    ///   for a datagram), `notFound`, `timedOut`, `cancelled` (nothing was sent).
    public func send(
        _ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], to destination: LocalSocketAddress? = nil,
        timeout: Duration? = nil
    ) async throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        let data = Array(bytes)
        try await DescriptorIO.suspending(owner, deadline: deadline) { fd throws(InterprocessError) in try sendAttempt(fd, data, descriptors, destination) }
    }

    /// Sends one datagram, blocking the calling thread while the receiver's queue is full, for at
    /// most `timeout` (nil: as long as it takes). The blocking form of
    /// ``send(_:descriptors:to:timeout:)``.
    @available(*, noasync, message: "use the async send(_:descriptors:to:timeout:) in async code")
    public func blockingSend(
        _ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], to destination: LocalSocketAddress? = nil,
        timeout: Duration? = nil
    ) throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        let data = Array(bytes)
        try DescriptorIO.blockingSocket(owner, deadline: deadline) { fd, wait throws(InterprocessError) in
            try sendAttempt(fd, data, descriptors, destination, wait: wait)
        }
    }

    /// Sends one datagram if the receiver's queue takes it now; never waits.
    /// - Returns: whether it was sent.
    public func trySend(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], to destination: LocalSocketAddress? = nil) throws(InterprocessError) -> Bool {
        let data = Array(bytes)
        return try DescriptorIO.once(owner) { fd throws(InterprocessError) in try sendAttempt(fd, data, descriptors, destination) } != nil
    }

    private func sendAttempt(
        _ fd: FileDescriptor, _ data: [UInt8], _ descriptors: [FileDescriptor], _ destination: LocalSocketAddress?, wait: Bool = false
    ) throws(InterprocessError) -> IOAttempt<Void> {
        guard descriptors.count <= UnixSocket.maximumDescriptors else {
            throw InterprocessError(.invalidSize, objectName: path, detail: "\(descriptors.count) descriptors; a message carries at most \(UnixSocket.maximumDescriptors)")
        }
        let result = data.withUnsafeBytes { raw in
            Result { () throws(Errno) -> Int? in try UnixSocket.send(fd, raw, descriptors: descriptors, to: destination?.raw, wait: wait) }
        }
        do {
            guard try result.get() != nil else { return .wait(.writable) }
            return .done(())
        } catch {
            throw InterprocessError(.sendDatagram, error, objectName: destination?.description ?? path, detail: "sending \(data.count) bytes")
        }
    }

    // MARK: Receiving

    /// Receives the next datagram, suspending the task (no thread blocks) until one arrives, for at
    /// most `timeout` (nil: as long as it takes).
    /// - Throws: `timedOut`, `cancelled` (nothing was received).
    public func receive(timeout: Duration? = nil) async throws(InterprocessError) -> LocalMessage {
        try await DescriptorIO.suspending(owner, deadline: Deadline(after: timeout)) { fd throws(InterprocessError) in try receiveAttempt(fd) }
    }

    /// Receives the next datagram, blocking the calling thread, for at most `timeout` (nil: as long
    /// as it takes). The blocking form of ``receive(timeout:)``.
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    public func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> LocalMessage {
        try DescriptorIO.blockingSocket(owner, deadline: Deadline(after: timeout)) { fd, wait throws(InterprocessError) in
            try receiveAttempt(fd, wait: wait)
        }
    }

    /// Receives a datagram if one is there; never waits.
    public func tryReceive() throws(InterprocessError) -> LocalMessage? {
        try DescriptorIO.once(owner) { fd throws(InterprocessError) in try receiveAttempt(fd) }
    }

    private func receiveAttempt(_ fd: FileDescriptor, wait: Bool = false) throws(InterprocessError) -> IOAttempt<LocalMessage> {
        // Peek at the length, then take the whole datagram into a buffer of that size. Receivers in
        // this process take turns, so that the datagram peeked at is the one taken; a receiver that
        // finds another one at it is told to try again shortly.
        guard receiving.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return .busy }
        defer { receiving.store(false, ordering: .releasing) }
        let result = Result { () throws(Errno) -> (SocketReception, [UInt8])? in
            var probe: UInt8 = 0
            let peeked = try withUnsafeMutableBytes(of: &probe) { raw in
                Result { () throws(Errno) -> SocketReception? in try UnixSocket.receive(fd, into: raw, peek: true, wholeLength: true, wait: wait) }
            }.get()
            guard let peeked else { return nil }
            var buffer = [UInt8](repeating: 0, count: max(peeked.count, 1))
            let reception = try buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> SocketReception? in try UnixSocket.receive(fd, into: raw, wholeLength: true) }
            }.get()
            guard let reception else { return nil }
            buffer.removeLast(buffer.count - min(reception.count, buffer.count))
            return (reception, buffer)
        }
        // A receive waiting in the kernel is ended by close() (a shutdown), which reads as an empty
        // datagram.
        if owner.isClosed {
            if case .success(let got?) = result { for fd in got.0.descriptors { try? fd.close() } }
            throw owner.closedError()
        }
        let received: (SocketReception, [UInt8])?
        do { received = try result.get() } catch { throw InterprocessError(.receive, error, objectName: path) }
        guard let (reception, bytes) = received else { return .wait(.readable) }
        if reception.truncated || reception.controlTruncated {
            for fd in reception.descriptors { try? fd.close() }
            throw InterprocessError(.corrupt, objectName: path, detail: "a datagram (or its descriptors) did not fit and was cut; it was dropped")
        }
        return .done(LocalMessage(
            bytes: bytes, descriptors: reception.descriptors, sender: reception.credentials.map(PeerCredentials.init),
            senderAddress: reception.sender.map(LocalSocketAddress.init)))
    }

    /// Closes the socket; a bound socket's file and lock file are removed (if still its own).
    /// Idempotent; also done when the last reference goes away.
    public func close() {
        file?.release()
        owner.close { fd in UnixSocket.shutdownBoth(fd) }
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { owner.isClosed }
}
