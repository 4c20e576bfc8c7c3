// Typed wrappers of the operating system calls that Interprocess needs.
//
// Three tiers, as in swift-system: a 1:1 call, a helper that turns -1 into a thrown `Errno` and retries
// EINTR, and the Swift-named function the library calls. This is the only target that imports the C
// library; everything here is `package`, so users of Interprocess never see it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess

/// The current `errno` as an `Errno`.
@inline(__always)
package var currentErrno: Errno { Errno(rawValue: errno) }

/// Runs `body` until it does not fail with EINTR; turns -1 into a thrown `Errno`.
@inline(__always)
package func valueOrErrno<I: FixedWidthInteger>(
    retryOnInterrupt: Bool = true, _ body: () -> I
) throws(Errno) -> I {
    while true {
        let value = body()
        if value != -1 { return value }
        let error = currentErrno
        if retryOnInterrupt && error == .interrupted { continue }
        throw error
    }
}

/// What `fstat` tells about an open file.
package struct FileStatus: Sendable, Equatable {
    package var size: Int64
    package var mode: UInt32
    package var owner: UInt32
    package var group: UInt32
    package var linkCount: UInt64
    package var device: UInt64
    package var inode: UInt64
    /// Last status change, nanoseconds since the epoch.
    package var changeTimeNanoseconds: Int64

    package var permissions: FilePermissions { FilePermissions(rawValue: CModeT(mode & 0o7777)) }
    package var isRegularFile: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    package var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
}

extension stat {
    fileprivate var fileStatus: FileStatus {
        #if canImport(Darwin)
        let ctime = Int64(st_ctimespec.tv_sec) * 1_000_000_000 + Int64(st_ctimespec.tv_nsec)
        #else
        let ctime = Int64(st_ctim.tv_sec) * 1_000_000_000 + Int64(st_ctim.tv_nsec)
        #endif
        return FileStatus(
            size: Int64(st_size), mode: UInt32(st_mode), owner: UInt32(st_uid), group: UInt32(st_gid),
            linkCount: UInt64(st_nlink), device: UInt64(st_dev), inode: UInt64(st_ino),
            changeTimeNanoseconds: ctime)
    }
}

/// POSIX shared memory objects and the files behind them.
package enum SharedMemoryObject {
    /// The directory where the system keeps shared memory objects, where there is one.
    package static var directory: String? {
        #if os(Linux)
        return "/dev/shm"
        #else
        return nil
        #endif
    }

    /// Opens a shared memory object. The corresponding C function is `shm_open`; on Linux the file
    /// in /dev/shm is opened directly, so that nothing another user put at the name can block or
    /// redirect the open: `O_NONBLOCK` (a FIFO never blocks), `O_NOFOLLOW` (no symbolic links),
    /// `O_NOCTTY`. Only a regular file is returned: anything else (a FIFO, a directory, a device)
    /// throws ``notRegularFile``, whatever appeared under the name.
    /// - Parameter osName: the name with its leading slash.
    package static func open(
        _ osName: String, create: Bool, exclusive: Bool, readOnly: Bool = false,
        permissions: FilePermissions = .ownerReadWrite
    ) throws(Errno) -> FileDescriptor {
        var flags = readOnly ? O_RDONLY : O_RDWR
        if create { flags |= O_CREAT }
        if exclusive { flags |= O_EXCL }
        let fd = try valueOrErrno { () -> CInt in
            #if canImport(Darwin)
            return osName.withCString { shm_open_shim($0, flags, permissions.rawValue) }
            #else
            return Glibc.open(directory! + osName, flags | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY, permissions.rawValue)
            #endif
        }
        return try regularFile(FileDescriptor(rawValue: fd))
    }

    /// `fd` if it is a regular file; otherwise closes it and throws ``notRegularFile``.
    private static func regularFile(_ fd: FileDescriptor) throws(Errno) -> FileDescriptor {
        do throws(Errno) {
            guard try fd.status().isRegularFile else { throw notRegularFile }
        } catch {
            try? fd.close()
            throw error
        }
        return fd
    }

    /// What ``open(_:create:exclusive:readOnly:permissions:)`` throws for an object that is not a
    /// regular file (a FIFO, a directory, a device node, a socket, a symbolic link).
    package static let notRegularFile = Errno.notSupported

    /// Whether unnamed creation (``createUnnamed(permissions:)`` then ``link(_:as:)``) is available.
    package static var canCreateUnnamed: Bool {
        #if os(Linux)
        return true
        #else
        return false
        #endif
    }

    /// Creates a shared memory file with no name (Linux `O_TMPFILE` in /dev/shm): nobody can open
    /// it until ``link(_:as:)`` gives it one, so a creator killed before that leaves nothing behind.
    package static func createUnnamed(permissions: FilePermissions) throws(Errno) -> FileDescriptor {
        #if os(Linux)
        let fd = try valueOrErrno { Glibc.open(directory!, cipc_O_TMPFILE | O_RDWR | O_CLOEXEC, permissions.rawValue) }
        return FileDescriptor(rawValue: fd)
        #else
        throw Errno.notSupported
        #endif
    }

    /// Gives the unnamed file open as `fd` the name `osName`, atomically; throws `fileExists` if the
    /// name is taken (of two processes linking one name, exactly one succeeds).
    /// The corresponding C function is `linkat` (through /proc/self/fd, which needs no privilege).
    package static func link(_ fd: FileDescriptor, as osName: String) throws(Errno) {
        #if os(Linux)
        _ = try valueOrErrno { linkat(AT_FDCWD, "/proc/self/fd/\(fd.rawValue)", AT_FDCWD, directory! + osName, AT_SYMLINK_FOLLOW) }
        #else
        throw Errno.notSupported
        #endif
    }

    /// Removes a shared memory object's name. The corresponding C function is `shm_unlink`.
    package static func unlink(_ osName: String) throws(Errno) {
        _ = try valueOrErrno { shm_unlink(osName) }
    }

    /// The names (without slash) of the regular files in the shared memory directory whose names
    /// are valid UTF-8 (see ``listNonUTF8Names()`` for the others).
    package static func listNames() -> [String] {
        rawNames().compactMap { String(validating: $0, as: UTF8.self) }.sorted()
    }

    /// The names of the regular files in the shared memory directory that are not valid UTF-8, as
    /// bytes (no Interprocess object has one; other programs may make them).
    package static func listNonUTF8Names() -> [[UInt8]] {
        rawNames().filter { String(validating: $0, as: UTF8.self) == nil }
    }

    private static func rawNames() -> [[UInt8]] {
        guard let directory, let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
                let bytes = raw.bindMemory(to: UInt8.self)
                return Array(bytes[..<(bytes.firstIndex(of: 0) ?? bytes.count)])
            }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            if entry.pointee.d_type != UInt8(DT_REG) && entry.pointee.d_type != UInt8(DT_UNKNOWN) { continue }
            names.append(name)
        }
        return names
    }

    /// `raw` as text: valid UTF-8 as is, every other byte as `\xHH`.
    package static func escaped(_ raw: [UInt8]) -> String {
        var text = ""
        var index = 0
        while index < raw.count {
            // The longest valid UTF-8 sequence starting here (1–4 bytes), else one escaped byte.
            var taken = false
            for length in (1...min(4, raw.count - index)).reversed() {
                if let piece = String(validating: raw[index..<(index + length)], as: UTF8.self), piece.unicodeScalars.count == 1 {
                    text += piece
                    index += length
                    taken = true
                    break
                }
            }
            if !taken {
                text += "\\x" + String(raw[index], radix: 16, uppercase: true).leftPadded(to: 2)
                index += 1
            }
        }
        return text
    }

    /// Opens the object whose file name is `rawName` (bytes, no slash) read-only, with the same
    /// checks as ``open(_:create:exclusive:readOnly:permissions:)``.
    package static func open(rawName: [UInt8]) throws(Errno) -> FileDescriptor {
        guard let directory else { throw Errno.noFunction }
        let path = Array(directory.utf8) + [0x2F] + rawName + [0]
        let fd = try valueOrErrno { () -> CInt in
            path.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { Glibc.open($0.baseAddress!, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY) }
            }
        }
        return try regularFile(FileDescriptor(rawValue: fd))
    }

    /// Bytes still free in the file system that holds shared memory objects, if it can be told.
    package static func availableBytes() -> UInt64? {
        guard let directory else { return nil }
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) &* UInt64(info.f_frsize)
    }

    /// The status of the object a name refers to now, without opening it (a symbolic link is not
    /// followed). The corresponding C function is `lstat`.
    package static func status(ofName osName: String) throws(Errno) -> FileStatus {
        guard let directory else { throw Errno.noFunction }
        var st = stat()
        _ = try valueOrErrno { lstat(directory + osName, &st) }
        return st.fileStatus
    }
}

#if canImport(Darwin)
@_silgen_name("shm_open")
private func shm_open_shim(_ name: UnsafePointer<CChar>, _ oflag: CInt, _ mode: mode_t) -> CInt
#endif

extension FileDescriptor {
    /// The corresponding C function is `fstat`.
    package func status() throws(Errno) -> FileStatus {
        try statusOfDescriptor(rawValue)
    }

    /// Sets the file's size. The corresponding C function is `ftruncate`.
    package func truncate(to size: Int64) throws(Errno) {
        _ = try valueOrErrno { ftruncate(rawValue, off_t(size)) }
    }

    /// Reserves the file's blocks so that later writes cannot fail for lack of space.
    /// The corresponding C function is `posix_fallocate` (on Linux; a no-op elsewhere).
    package func reserve(bytes: Int64) throws(Errno) {
        #if os(Linux)
        while true {
            let rc = posix_fallocate(rawValue, 0, off_t(bytes))
            if rc == 0 { return }
            if rc == EINTR { continue }
            throw Errno(rawValue: rc)
        }
        #endif
    }

    /// Gives the file to `group` (the owner stays). The corresponding C function is `fchown`.
    package func setGroup(_ group: UInt32) throws(Errno) {
        _ = try valueOrErrno { fchown(rawValue, uid_t(bitPattern: -1), gid_t(group)) }
    }

    /// Sets the permission bits exactly (no umask). The corresponding C function is `fchmod`.
    package func setPermissions(_ permissions: FilePermissions) throws(Errno) {
        _ = try valueOrErrno { fchmod(rawValue, permissions.rawValue) }
    }

    /// Writes all of `bytes` at `offset`. The corresponding C function is `pwrite`.
    package func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(Errno) {
        var done = 0
        while done < bytes.count {
            done += try valueOrErrno { writeAt(rawValue, bytes.baseAddress! + done, bytes.count - done, offset + Int64(done)) }
        }
    }

    /// Reads exactly `count` bytes at `offset`, or fewer at the end of the file.
    /// The corresponding C function is `pread`.
    package func read(count: Int, at offset: Int64) throws(Errno) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> Int in
                    try valueOrErrno { readAt(rawValue, raw.baseAddress! + done, count - done, offset + Int64(done)) }
                }
            }
            let n = try result.get()
            if n == 0 { break }
            done += n
        }
        buffer.removeLast(count - done)
        return buffer
    }
}

private func statusOfDescriptor(_ fd: CInt) throws(Errno) -> FileStatus {
    var st = stat()
    _ = try valueOrErrno { fstat(fd, &st) }
    return st.fileStatus
}

private func writeAt(_ fd: CInt, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: Int64) -> Int {
    pwrite(fd, buffer, count, off_t(offset))
}

private func readAt(_ fd: CInt, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: Int64) -> Int {
    pread(fd, buffer, count, off_t(offset))
}

/// A memory mapping of a whole file, unmapped on deinit.
///
/// `@unchecked Sendable`: the mapping is immutable after init (base and length never change) and
/// the memory it points to is shared memory, which every user accesses through atomics or under
/// its own synchronization; unmapping happens only in deinit, when no reference is left.
package final class MemoryMapping: @unchecked Sendable {
    package let base: UnsafeMutableRawPointer
    package let length: Int

    /// Maps `length` bytes of `fd` shared and read-write. The corresponding C function is `mmap`.
    package init(fd: FileDescriptor, length: Int, writable: Bool = true) throws(Errno) {
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let pointer = mmap(nil, length, protection, MAP_SHARED, fd.rawValue, 0),
              pointer != MAP_FAILED
        else { throw currentErrno }
        self.base = pointer
        self.length = length
    }

    deinit { munmap(base, length) }

    package var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base, count: length)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// The system's memory page size.
package let systemPageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
