// Unix domain sockets: creation, addresses, connection, peer credentials, and messages with
// descriptors (SCM_RIGHTS) and credentials (SCM_CREDENTIALS). Every socket made here is
// close-on-exec and non-blocking from the start; the callers wait with ``DescriptorWait`` or
// ``AsyncDescriptorWaiter``.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess

/// The credentials of a process at the other end of a Unix domain socket, as the kernel reports them.
package struct SocketCredentials: Sendable, Hashable {
    package var pid: Int32
    package var uid: UInt32
    package var gid: UInt32

    package init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// The address of a Unix domain socket: a path, or (Linux) an abstract name, whose first byte is 0.
package struct SocketAddress: Sendable, Hashable {
    /// The bytes of `sun_path` that are used (no terminating NUL).
    package var bytes: [UInt8]

    package init(bytes: [UInt8]) { self.bytes = bytes }

    /// Whether it is an abstract address (Linux): no file in any file system.
    package var isAbstract: Bool { bytes.first == 0 }

    /// A path or `@name` for an abstract address.
    package var description: String {
        if isAbstract { return "@" + String(decoding: bytes.dropFirst(), as: UTF8.self) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// What one receive got.
package struct SocketReception: Sendable {
    /// Bytes received (for a datagram with `truncated`, its full length).
    package var count: Int
    /// Descriptors received (close-on-exec); the caller owns them.
    package var descriptors: [FileDescriptor]
    /// The sender's credentials, when the socket asked for them (SO_PASSCRED).
    package var credentials: SocketCredentials?
    /// The sender's address (datagrams), if it has one.
    package var sender: SocketAddress?
    /// The datagram was longer than the buffer (the rest is lost).
    package var truncated: Bool
    /// Descriptors or credentials did not fit the control buffer (the kernel closed the excess).
    package var controlTruncated: Bool
}

/// Unix domain sockets. The corresponding C functions are named on each call.
package enum UnixSocket {
    package enum Kind: Sendable {
        case stream, datagram

        var cType: CInt {
            #if canImport(Glibc)
            self == .stream ? CInt(SOCK_STREAM.rawValue) : CInt(SOCK_DGRAM.rawValue)
            #else
            self == .stream ? SOCK_STREAM : SOCK_DGRAM
            #endif
        }
    }

    /// Longest path a socket address holds, in bytes (`sun_path` less its terminating NUL).
    package static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// Most descriptors accepted in one message.
    package static let maximumDescriptors = 64

    /// A new socket, close-on-exec and non-blocking. The corresponding C function is `socket`.
    package static func make(_ kind: Kind) throws(Errno) -> FileDescriptor {
        #if os(Linux)
        let flags = CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue)
        let fd = try valueOrErrno { socket(AF_UNIX, kind.cType | flags, 0) }
        return FileDescriptor(rawValue: fd)
        #else
        let fd = FileDescriptor(rawValue: try valueOrErrno { socket(AF_UNIX, kind.cType, 0) })
        _ = cipc_fcntl_int(fd.rawValue, F_SETFD, FD_CLOEXEC)
        try fd.setNonBlocking()
        return fd
        #endif
    }

    /// A connected pair, both close-on-exec and non-blocking. The corresponding C function is
    /// `socketpair`.
    package static func pair(_ kind: Kind) throws(Errno) -> (FileDescriptor, FileDescriptor) {
        var fds: [CInt] = [-1, -1]
        #if os(Linux)
        let flags = CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue)
        _ = try valueOrErrno { socketpair(AF_UNIX, kind.cType | flags, 0, &fds) }
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        #else
        _ = try valueOrErrno { socketpair(AF_UNIX, kind.cType, 0, &fds) }
        let pair = (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
        for fd in [pair.0, pair.1] {
            _ = cipc_fcntl_int(fd.rawValue, F_SETFD, FD_CLOEXEC)
            try fd.setNonBlocking()
        }
        return pair
        #endif
    }

    /// Binds to a path (the file is created, with the permissions the umask leaves).
    /// The corresponding C function is `bind`.
    package static func bind(_ fd: FileDescriptor, to address: SocketAddress) throws(Errno) {
        _ = try withAddress(address) { pointer, length in systemBind(fd.rawValue, pointer, length) }
    }

    /// The corresponding C function is `listen`.
    package static func listen(_ fd: FileDescriptor, backlog: Int) throws(Errno) {
        _ = try valueOrErrno { systemListen(fd.rawValue, CInt(clamping: backlog)) }
    }

    /// Accepts one connection, close-on-exec and non-blocking; nil when none is waiting.
    /// The corresponding C function is `accept4`. Retries EINTR and ECONNABORTED.
    package static func accept(_ fd: FileDescriptor) throws(Errno) -> FileDescriptor? {
        while true {
            let accepted = cipc_accept_cloexec(fd.rawValue)
            if accepted >= 0 { return FileDescriptor(rawValue: accepted) }
            let error = currentErrno
            if error == .interrupted || error == .connectionAbort { continue }
            if error == .resourceTemporarilyUnavailable || error == .wouldBlock { return nil }
            throw error
        }
    }

    /// Connects (a Unix domain connect completes at once or fails; EAGAIN means the listener's
    /// backlog is full). The corresponding C function is `connect`.
    package static func connect(_ fd: FileDescriptor, to address: SocketAddress) throws(Errno) {
        _ = try withAddress(address) { pointer, length in systemConnect(fd.rawValue, pointer, length) }
    }

    /// The socket's own address (Linux fills in the abstract address an unbound socket was given).
    /// The corresponding C function is `getsockname`.
    package static func localAddress(_ fd: FileDescriptor) throws(Errno) -> SocketAddress {
        var storage = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &length) }
        }
        if rc != 0 { throw currentErrno }
        return address(from: &storage, length: length) ?? SocketAddress(bytes: [])
    }

    /// The credentials of the peer as of connect (or socketpair). The corresponding C call is
    /// `getsockopt(SO_PEERCRED)`.
    package static func peerCredentials(_ fd: FileDescriptor) throws(Errno) -> SocketCredentials {
        var credentials = cipc_credentials()
        _ = try valueOrErrno { cipc_peer_credentials(fd.rawValue, &credentials) }
        return SocketCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }

    /// Asks the kernel to attach the sender's credentials to every message received (and, on Linux,
    /// gives an unbound datagram socket an abstract address when it sends, so that it can be
    /// answered). The corresponding C call is `setsockopt(SO_PASSCRED)`.
    package static func setPassCredentials(_ fd: FileDescriptor) throws(Errno) {
        guard cipc_SO_PASSCRED >= 0 else { throw Errno.noFunction }
        var on: CInt = 1
        _ = try valueOrErrno { setsockopt(fd.rawValue, SOL_SOCKET, cipc_SO_PASSCRED, &on, socklen_t(MemoryLayout<CInt>.size)) }
    }

    /// Bytes waiting to be read. The corresponding C call is `ioctl(FIONREAD)`.
    package static func bytesAvailable(_ fd: FileDescriptor) -> Int {
        var count: CInt = 0
        return ioctl(fd.rawValue, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    /// Ends the sending direction: the peer reads end-of-file after what was sent.
    /// The corresponding C function is `shutdown`.
    package static func shutdownSending(_ fd: FileDescriptor) {
        _ = shutdown(fd.rawValue, CInt(SHUT_WR))
    }

    /// Ends both directions: the peer reads end-of-file and its writes fail; our blocked waits wake.
    package static func shutdownBoth(_ fd: FileDescriptor) {
        _ = shutdown(fd.rawValue, CInt(SHUT_RDWR))
    }

    /// Sends `bytes` (all or part, for a stream) with `descriptors` attached, to `destination` or the
    /// connected peer. Returns the count sent, or nil when nothing fits now (EAGAIN). `wait`: on a
    /// socket in blocking mode, wait in the kernel for room (else MSG_DONTWAIT: never wait). Never
    /// raises SIGPIPE (MSG_NOSIGNAL). The corresponding C function is `sendmsg`.
    package static func send(
        _ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor] = [],
        to destination: SocketAddress? = nil, wait: Bool = false
    ) throws(Errno) -> Int? {
        try send(fd, bytes, UnsafeRawBufferPointer(start: nil, count: 0), descriptors: descriptors, to: destination, wait: wait)
    }

    /// Sends `first` then `second` in one call (gathered: neither is copied here), as
    /// ``send(_:_:descriptors:to:wait:)``.
    package static func send(
        _ fd: FileDescriptor, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer, descriptors: [FileDescriptor] = [],
        to destination: SocketAddress? = nil, wait: Bool = false
    ) throws(Errno) -> Int? {
        let rights = descriptors.map(\.rawValue)
        let controlLength = rights.isEmpty ? 0 : cipc_CMSG_SPACE(rights.count * MemoryLayout<CInt>.size)
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: max(controlLength, 1), alignment: 16)
        defer { control.deallocate() }
        if controlLength > 0 { control.initializeMemory(as: UInt8.self, repeating: 0) }
        var storage = sockaddr_un()
        var storageLength: socklen_t = 0
        if let destination { storageLength = fill(&storage, destination) }
        var vectors = (
            iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count))
        let vectorCount = second.isEmpty ? 1 : 2
        return try withUnsafeMutablePointer(to: &vectors) { vectorsPointer throws(Errno) -> Int? in
            try withUnsafeMutablePointer(to: &storage) { storagePointer throws(Errno) -> Int? in
                var message = msghdr()
                message.msg_iov = UnsafeMutableRawPointer(vectorsPointer).assumingMemoryBound(to: iovec.self)
                message.msg_iovlen = numericCast(vectorCount)
                if destination != nil {
                    message.msg_name = UnsafeMutableRawPointer(storagePointer)
                    message.msg_namelen = storageLength
                }
                if !rights.isEmpty {
                    message.msg_control = control.baseAddress
                    message.msg_controllen = numericCast(controlLength)
                    let header = cipc_CMSG_FIRSTHDR(&message)!
                    header.pointee.cmsg_level = SOL_SOCKET
                    header.pointee.cmsg_type = cipc_SCM_RIGHTS
                    header.pointee.cmsg_len = numericCast(cipc_CMSG_LEN(rights.count * MemoryLayout<CInt>.size))
                    let data = UnsafeMutableRawPointer(cipc_CMSG_DATA(header)!)
                    rights.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                }
                while true {
                    let n = sendmsg(fd.rawValue, &message, cipc_MSG_NOSIGNAL | (wait ? 0 : CInt(MSG_DONTWAIT)))
                    if n >= 0 { return n }
                    let error = currentErrno
                    if error == .interrupted { continue }
                    if error == .resourceTemporarilyUnavailable || error == .wouldBlock { return nil }
                    throw error
                }
            }
        }
    }

    /// Receives into `buffer`, with up to ``maximumDescriptors`` descriptors (close-on-exec) and the
    /// sender's credentials if the socket asked for them. `peek` leaves the data queued (and takes no
    /// descriptors); `wholeLength` reports a datagram's full length even when the buffer is shorter.
    /// Returns nil when nothing is there (EAGAIN); a count of 0 on a stream is end-of-file. `wait`:
    /// on a socket in blocking mode, wait in the kernel for data (else MSG_DONTWAIT: never wait).
    /// The corresponding C function is `recvmsg`.
    package static func receive(
        _ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, peek: Bool = false, wholeLength: Bool = false,
        wait: Bool = false
    ) throws(Errno) -> SocketReception? {
        let controlLength = peek ? 0 : cipc_CMSG_SPACE(maximumDescriptors * MemoryLayout<CInt>.size) + cipc_CMSG_SPACE(max(cipc_credentials_size, 1))
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: max(controlLength, 1), alignment: 16)
        defer { control.deallocate() }
        var storage = sockaddr_un()
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return try withUnsafeMutablePointer(to: &vector) { vectorPointer throws(Errno) -> SocketReception? in
            try withUnsafeMutablePointer(to: &storage) { storagePointer throws(Errno) -> SocketReception? in
                var message = msghdr()
                var flags = cipc_MSG_CMSG_CLOEXEC
                if !wait { flags |= CInt(MSG_DONTWAIT) }
                if peek { flags |= CInt(MSG_PEEK) }
                if wholeLength { flags |= CInt(MSG_TRUNC) }
                var count = 0
                while true {
                    message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_name = UnsafeMutableRawPointer(storagePointer)
                    message.msg_namelen = socklen_t(MemoryLayout<sockaddr_un>.size)
                    if controlLength > 0 {
                        message.msg_control = control.baseAddress
                        message.msg_controllen = numericCast(controlLength)
                    }
                    let n = recvmsg(fd.rawValue, &message, flags)
                    if n >= 0 { count = n; break }
                    let error = currentErrno
                    if error == .interrupted { continue }
                    if error == .resourceTemporarilyUnavailable || error == .wouldBlock { return nil }
                    throw error
                }
                var reception = SocketReception(
                    count: count, descriptors: [], credentials: nil,
                    sender: address(from: storagePointer, length: message.msg_namelen),
                    truncated: Int32(message.msg_flags) & CInt(MSG_TRUNC) != 0,
                    controlTruncated: Int32(message.msg_flags) & CInt(MSG_CTRUNC) != 0)
                guard controlLength > 0, message.msg_controllen > 0 else { return reception }
                var header = cipc_CMSG_FIRSTHDR(&message)
                while let current = header {
                    let dataLength = Int(current.pointee.cmsg_len) - cipc_CMSG_LEN(0)
                    let data = UnsafeRawPointer(cipc_CMSG_DATA(current)!)
                    if current.pointee.cmsg_level == SOL_SOCKET, current.pointee.cmsg_type == cipc_SCM_RIGHTS, dataLength > 0 {
                        for index in 0..<(dataLength / MemoryLayout<CInt>.size) {
                            let raw = data.loadUnaligned(fromByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self)
                            reception.descriptors.append(FileDescriptor(rawValue: raw))
                        }
                    } else if current.pointee.cmsg_level == SOL_SOCKET, current.pointee.cmsg_type == cipc_SCM_CREDENTIALS,
                              dataLength >= cipc_credentials_size {
                        var credentials = cipc_credentials()
                        cipc_read_credentials(cipc_CMSG_DATA(current), &credentials)
                        reception.credentials = SocketCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
                    }
                    header = cipc_CMSG_NXTHDR(&message, current)
                }
                return reception
            }
        }
    }

    // MARK: Addresses

    /// The address for a path; nil if it is too long.
    package static func address(path: String) -> SocketAddress? {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength, !bytes.contains(0) else { return nil }
        return SocketAddress(bytes: bytes)
    }

    private static func fill(_ storage: inout sockaddr_un, _ address: SocketAddress) -> socklen_t {
        storage = sockaddr_un()
        storage.sun_family = sa_family_t(AF_UNIX)
        let count = min(address.bytes.count, maximumPathLength)
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            for index in 0..<count { raw[index] = address.bytes[index] }
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        // A path is NUL-terminated; an abstract address is exactly its bytes.
        return socklen_t(pathOffset + count + (address.isAbstract ? 0 : 1))
    }

    private static func withAddress(
        _ address: SocketAddress, _ body: (UnsafePointer<sockaddr>, socklen_t) -> CInt
    ) throws(Errno) -> CInt {
        var storage = sockaddr_un()
        let length = fill(&storage, address)
        return try withUnsafePointer(to: &storage) { pointer throws(Errno) -> CInt in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw throws(Errno) -> CInt in
                try valueOrErrno { body(raw, length) }
            }
        }
    }

    private static func address(from storage: UnsafePointer<sockaddr_un>, length: socklen_t) -> SocketAddress? {
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let count = Int(length) - pathOffset
        guard count > 0 else { return nil }
        let bytes = withUnsafeBytes(of: storage.pointee.sun_path) { raw -> [UInt8] in
            let used = Array(raw.prefix(min(count, raw.count)))
            if used.first == 0 { return used } // abstract: every byte counts
            return Array(used.prefix { $0 != 0 })
        }
        return bytes.isEmpty ? nil : SocketAddress(bytes: bytes)
    }

    private static func address(from storage: inout sockaddr_un, length: socklen_t) -> SocketAddress? {
        withUnsafePointer(to: &storage) { address(from: $0, length: length) }
    }
}

@inline(__always) private func systemBind(_ fd: CInt, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> CInt {
    bind(fd, address, length)
}
@inline(__always) private func systemListen(_ fd: CInt, _ backlog: CInt) -> CInt { listen(fd, backlog) }
@inline(__always) private func systemConnect(_ fd: CInt, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> CInt {
    connect(fd, address, length)
}
