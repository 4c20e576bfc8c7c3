public import SystemPackage
import InterprocessSystem

/// Who is at the other end of a local socket, as the kernel vouches (not as the peer claims):
/// Linux `SO_PEERCRED` for a connection, `SCM_CREDENTIALS` for each datagram.
///
/// The pid is the peer's pid in *this* process's PID namespace (0 when the peer's namespace is not
/// visible from here); the user and group ids are its effective ids at the time it connected (or
/// sent the datagram).
public struct PeerCredentials: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The peer's process id (0 if it lives in a PID namespace this process cannot see).
    public var pid: Int32
    /// The peer's effective user id.
    public var uid: UInt32
    /// The peer's effective group id.
    public var gid: UInt32

    /// Credentials with these ids.
    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    init(_ credentials: SocketCredentials) {
        self.init(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }

    /// "pid P, uid U, gid G".
    public var description: String { "pid \(pid), uid \(uid), gid \(gid)" }
}

/// The address of a local datagram socket, to answer the sender of a ``LocalMessage``: a path,
/// or (Linux) an abstract address that the kernel gave an unnamed sender, shown as `@…`.
public struct LocalSocketAddress: Sendable, Hashable, CustomStringConvertible {
    let raw: SocketAddress

    init(_ raw: SocketAddress) { self.raw = raw }

    /// The address of the socket file at `path`; nil if the path is empty or longer than a socket
    /// address holds (107 bytes on Linux).
    public init?(path: String) {
        guard let raw = UnixSocket.address(path: path) else { return nil }
        self.raw = raw
    }

    /// The path, or `@` and the abstract name.
    public var description: String { raw.description }

    /// The path, if the address is a path.
    public var path: String? { raw.isAbstract ? nil : raw.description }
}

/// A message received from a local socket: its bytes, the descriptors that came with it, and who
/// sent it.
///
/// **The descriptors are yours**: they are new descriptors in this process (close-on-exec), for the
/// same open files as the sender's; close each one you do not keep (``closeDescriptors()``), or
/// adopt it (e.g. ``SharedMemory/adopt(_:)``).
public struct LocalMessage: Sendable {
    /// The message's bytes.
    public var bytes: [UInt8]
    /// Descriptors that came with it (the receiver owns them).
    public var descriptors: [FileDescriptor]
    /// Who sent it, as the kernel vouches: the connection's peer (stream sockets) or the datagram's
    /// sender (datagram sockets).
    public var sender: PeerCredentials?
    /// Where a datagram came from (to answer it with ``LocalDatagramSocket/send(_:descriptors:to:timeout:)``);
    /// nil on a connection, or when the sender has no address.
    public var senderAddress: LocalSocketAddress?

    /// A message with these parts.
    public init(bytes: [UInt8], descriptors: [FileDescriptor] = [], sender: PeerCredentials? = nil, senderAddress: LocalSocketAddress? = nil) {
        self.bytes = bytes
        self.descriptors = descriptors
        self.sender = sender
        self.senderAddress = senderAddress
    }

    /// The bytes as UTF-8 text, or nil if they are not valid UTF-8.
    public var string: String? { String(validating: bytes, as: UTF8.self) }

    /// Closes every descriptor that came with the message.
    public func closeDescriptors() {
        for fd in descriptors { try? fd.close() }
    }
}
