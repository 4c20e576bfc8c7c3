// Files that local IPC names in the file system (FIFOs, socket files, lock files, the runtime
// directory), descriptor-level reads and writes that never raise SIGPIPE, and sealed anonymous
// memory files (memfd). Package access, like the rest of this target.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess

extension FileStatus {
    /// A named pipe (FIFO).
    package var isFIFO: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFIFO) }
    /// A Unix domain socket's file.
    package var isSocket: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFSOCK) }
    /// A symbolic link (only `lstat` reports one).
    package var isSymbolicLink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
}

/// Paths in the file system: status, creation and removal of FIFOs and directories, renames.
package enum LocalPath {
    /// The status of what `path` names, without following a final symbolic link.
    /// The corresponding C function is `lstat`.
    package static func status(_ path: String) throws(Errno) -> FileStatus {
        var st = stat()
        _ = try valueOrErrno { lstat(path, &st) }
        return fileStatus(st)
    }

    /// Creates a FIFO with exactly `permissions` (the umask is undone by a `chmod` that follows;
    /// until then the FIFO has at most the permissions asked for). The corresponding C function is
    /// `mkfifo`.
    package static func makeFIFO(_ path: String, permissions: FilePermissions) throws(Errno) {
        _ = try valueOrErrno { mkfifo(path, permissions.rawValue) }
        _ = try? valueOrErrno { chmod(path, permissions.rawValue) }
    }

    /// Creates a directory (at most `permissions`; the umask may remove bits). The corresponding C
    /// function is `mkdir`.
    package static func makeDirectory(_ path: String, permissions: FilePermissions) throws(Errno) {
        _ = try valueOrErrno { mkdir(path, permissions.rawValue) }
    }

    /// Sets a path's permission bits exactly. The corresponding C function is `chmod` (which follows
    /// links: callers check what the path is first).
    package static func setPermissions(_ path: String, _ permissions: FilePermissions) throws(Errno) {
        _ = try valueOrErrno { chmod(path, permissions.rawValue) }
    }

    /// Removes a name. The corresponding C function is `unlink`.
    package static func unlink(_ path: String) throws(Errno) {
        _ = try valueOrErrno { Glibc_unlink(path) }
    }

    /// Renames `source` to `destination`, atomically replacing what `destination` named.
    /// The corresponding C function is `rename`.
    package static func rename(_ source: String, to destination: String) throws(Errno) {
        _ = try valueOrErrno { Glibc_rename(source, destination) }
    }

    /// Opens `path` with `flags` (always close-on-exec, never making it the controlling terminal).
    /// The corresponding C function is `open`.
    package static func open(_ path: String, _ flags: CInt, permissions: FilePermissions = .ownerReadWrite) throws(Errno) -> FileDescriptor {
        let fd = try valueOrErrno { Glibc_open(path, flags | O_CLOEXEC | O_NOCTTY, permissions.rawValue) }
        return FileDescriptor(rawValue: fd)
    }

    /// Open flags, as the C library spells them.
    package static let readOnly = O_RDONLY
    package static let writeOnly = O_WRONLY
    package static let readWrite = O_RDWR
    package static let createFlag = O_CREAT
    package static let exclusiveFlag = O_EXCL
    package static let nonBlockingFlag = O_NONBLOCK
    package static let noFollowFlag = O_NOFOLLOW
    package static let directoryFlag = O_DIRECTORY

    /// The entries of a directory (without "." and ".."), names as bytes. Empty if it cannot be read.
    package static func entries(of directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
                let bytes = raw.bindMemory(to: UInt8.self)
                return Array(bytes[..<(bytes.firstIndex(of: 0) ?? bytes.count)])
            }
            guard let text = String(validating: name, as: UTF8.self), text != ".", text != ".." else { continue }
            names.append(text)
        }
        return names.sorted()
    }

    /// The calling process's working directory. The corresponding C function is `getcwd`.
    package static var currentDirectory: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// An environment variable. The corresponding C function is `getenv`.
    package static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// This process's real user id. The corresponding C function is `getuid`.
    package static var realUserID: UInt32 { UInt32(getuid()) }

    private static func fileStatus(_ st: stat) -> FileStatus {
        #if canImport(Darwin)
        let ctime = Int64(st.st_ctimespec.tv_sec) * 1_000_000_000 + Int64(st.st_ctimespec.tv_nsec)
        #else
        let ctime = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        #endif
        return FileStatus(
            size: Int64(st.st_size), mode: UInt32(st.st_mode), owner: UInt32(st.st_uid), group: UInt32(st.st_gid),
            linkCount: UInt64(st.st_nlink), device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
            changeTimeNanoseconds: ctime)
    }
}

@inline(__always) private func Glibc_unlink(_ path: String) -> CInt { unlink(path) }
@inline(__always) private func Glibc_rename(_ a: String, _ b: String) -> CInt { rename(a, b) }
@inline(__always) private func Glibc_open(_ path: String, _ flags: CInt, _ mode: mode_t) -> CInt { open(path, flags, mode) }

// MARK: - Descriptor I/O

extension FileDescriptor {
    /// Makes reads and writes on this open file description return EAGAIN instead of blocking.
    /// The corresponding C call is `fcntl(F_SETFL, … | O_NONBLOCK)`.
    package func setNonBlocking() throws(Errno) {
        let flags = try valueOrErrno { cipc_fcntl_int(rawValue, F_GETFL, 0) }
        if flags & O_NONBLOCK == 0 {
            _ = try valueOrErrno { cipc_fcntl_int(rawValue, F_SETFL, flags | O_NONBLOCK) }
        }
    }

    /// Makes reads and writes on this open file description wait (clears `O_NONBLOCK`); calls that
    /// must not wait then pass a per-call flag (`MSG_DONTWAIT`).
    package func setBlocking() throws(Errno) {
        let flags = try valueOrErrno { cipc_fcntl_int(rawValue, F_GETFL, 0) }
        if flags & O_NONBLOCK != 0 {
            _ = try valueOrErrno { cipc_fcntl_int(rawValue, F_SETFL, flags & ~O_NONBLOCK) }
        }
    }

    /// A new descriptor for the same open file description, close-on-exec.
    /// The corresponding C call is `fcntl(F_DUPFD_CLOEXEC)`.
    package func duplicateCloseOnExec() throws(Errno) -> FileDescriptor {
        FileDescriptor(rawValue: try valueOrErrno { cipc_fcntl_int(rawValue, F_DUPFD_CLOEXEC, 0) })
    }

    /// Reads what is there, up to `buffer.count` bytes: the count (0 at end of file), or nil when
    /// nothing is there yet (EAGAIN on a non-blocking descriptor). Retries EINTR.
    package func readAvailable(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int? {
        while true {
            let n = Glibc_read(rawValue, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let error = currentErrno
            if error == .interrupted { continue }
            if error == .resourceTemporarilyUnavailable || error == .wouldBlock { return nil }
            throw error
        }
    }

    /// Writes what fits, up to all of `bytes`: the count, or nil when nothing fits now (EAGAIN).
    /// Never raises SIGPIPE: a write to a pipe or FIFO that no process reads any more throws
    /// `brokenPipe` instead of ending the process (see ``SignalMask/withoutBrokenPipeSignal(_:)``).
    package func writeAvailable(_ bytes: UnsafeRawBufferPointer) throws(Errno) -> Int? {
        try SignalMask.withoutBrokenPipeSignal { () throws(Errno) -> Int? in
            while true {
                let n = Glibc_write(rawValue, bytes.baseAddress, bytes.count)
                if n >= 0 { return n }
                let error = currentErrno
                if error == .interrupted { continue }
                if error == .resourceTemporarilyUnavailable || error == .wouldBlock { return nil }
                throw error
            }
        }
    }
}

@inline(__always) private func Glibc_read(_ fd: CInt, _ p: UnsafeMutableRawPointer?, _ n: Int) -> Int { read(fd, p, n) }
@inline(__always) private func Glibc_write(_ fd: CInt, _ p: UnsafeRawPointer?, _ n: Int) -> Int { write(fd, p, n) }

/// SIGPIPE, which a write to a pipe without readers raises (and which ends the process by default).
package enum SignalMask {
    /// Runs `body` with SIGPIPE blocked in this thread; a SIGPIPE that `body` raised is consumed
    /// before the mask is restored, so the write that raised it just fails with EPIPE. Thread-local
    /// (a write's SIGPIPE is sent to the writing thread): other threads and the process's
    /// disposition of SIGPIPE are not touched.
    package static func withoutBrokenPipeSignal<R>(_ body: () throws(Errno) -> R) throws(Errno) -> R {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        do {
            return try body()
        } catch {
            if error == .brokenPipe, sigismember(&previous, SIGPIPE) == 0 {
                // Consume the SIGPIPE this thread just raised (it is pending while blocked).
                var zero = timespec(tv_sec: 0, tv_nsec: 0)
                while sigtimedwait(&pipeSignal, nil, &zero) == SIGPIPE {}
            }
            throw error
        }
    }
}

// MARK: - Waiting for a descriptor (blocking)

/// What a wait on a descriptor waits for.
package enum DescriptorEvent: Sendable, Hashable {
    case readable, writable

    var pollEvents: Int16 { self == .readable ? Int16(POLLIN) : Int16(POLLOUT) }
}

/// Blocking waits on one descriptor, for the blocking and timed forms of local IPC calls.
package enum DescriptorWait {
    /// Waits until `fd` is ready for `event` (or reports an error or hang-up, which the next
    /// operation then reports), or `deadline` passes. Returns false on timeout.
    /// The corresponding C function is `poll`, whose timeout is relative: what is left of `deadline`
    /// is computed right before each call, so that after EINTR only what is left is waited.
    package static func wait(_ fd: FileDescriptor, for event: DescriptorEvent, deadline: Deadline) -> Bool {
        var entry = pollfd(fd: fd.rawValue, events: event.pollEvents, revents: 0)
        while true {
            let left = deadline.pollMilliseconds
            if pollOnce(&entry, timeout: left) { return true }
            if left == 0 || deadline.hasPassed { return false }
        }
    }

    /// Whether `fd` has a hang-up pending (the other end of a pipe or socket is gone), without
    /// waiting.
    package static func hasHangUp(_ fd: FileDescriptor) -> Bool {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLHUP) != 0
    }

    private static func pollOnce(_ entry: inout pollfd, timeout: CInt) -> Bool {
        entry.revents = 0
        let rc = poll(&entry, 1, timeout)
        return rc > 0
    }
}

// MARK: - Sealed anonymous memory

/// Anonymous memory files (Linux `memfd_create`): no name in any file system, shared by passing the
/// descriptor, and sealable so that no holder can shrink them under another's mapping.
package enum MemoryFile {
    /// Whether the platform has them.
    package static var isSupported: Bool {
        #if os(Linux)
        return true
        #else
        return false
        #endif
    }

    /// Creates an empty, sealable memory file, close-on-exec. `label` only shows in /proc.
    /// The corresponding C function is `memfd_create`.
    package static func create(label: String) throws(Errno) -> FileDescriptor {
        let fd = try valueOrErrno { cipc_memfd_create(label, cipc_MFD_CLOEXEC | cipc_MFD_ALLOW_SEALING) }
        return FileDescriptor(rawValue: fd)
    }

    /// Seals of a memory file.
    package struct Seals: OptionSet, Sendable {
        package let rawValue: CInt
        package init(rawValue: CInt) { self.rawValue = rawValue }
        /// No more seals can be added.
        package static let seal = Seals(rawValue: cipc_F_SEAL_SEAL)
        /// The size can no longer shrink (no SIGBUS for other holders' mappings).
        package static let shrink = Seals(rawValue: cipc_F_SEAL_SHRINK)
        /// The size can no longer grow.
        package static let grow = Seals(rawValue: cipc_F_SEAL_GROW)
        /// The contents can no longer change.
        package static let write = Seals(rawValue: cipc_F_SEAL_WRITE)
    }

    /// Adds seals. The corresponding C call is `fcntl(F_ADD_SEALS)`.
    package static func addSeals(_ fd: FileDescriptor, _ seals: Seals) throws(Errno) {
        _ = try valueOrErrno { cipc_fcntl_int(fd.rawValue, cipc_F_ADD_SEALS, seals.rawValue) }
    }

    /// The seals in force; throws EINVAL for a file that cannot be sealed (not a memory file).
    /// The corresponding C call is `fcntl(F_GET_SEALS)`.
    package static func seals(_ fd: FileDescriptor) throws(Errno) -> Seals {
        Seals(rawValue: try valueOrErrno { cipc_fcntl_int(fd.rawValue, cipc_F_GET_SEALS, 0) })
    }
}
