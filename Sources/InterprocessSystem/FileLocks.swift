#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess

/// Byte-range locks that belong to an open file description (Linux `F_OFD_SETLK`).
///
/// Unlike classic POSIX record locks they are not per process: two descriptors opened separately in
/// one process hold separate locks that conflict with each other, and closing an unrelated descriptor
/// of the same file does not drop them. The kernel drops them the moment the last descriptor of the
/// description is closed — in particular when the holding process dies, however it dies. That is what
/// Interprocess uses to tell live holders from dead ones.
package enum FileLock {
    package enum Kind: Sendable {
        case shared, exclusive
        var cType: Int16 { self == .shared ? Int16(F_RDLCK) : Int16(F_WRLCK) }
    }

    /// Tries to take (or convert to) a lock on one byte; returns false when another description holds
    /// a conflicting lock. The corresponding C call is `fcntl(fd, F_OFD_SETLK, …)`.
    package static func tryLock(_ fd: FileDescriptor, byte: Int64, _ kind: Kind) throws(Errno) -> Bool {
        do {
            _ = try valueOrErrno { cipc_fcntl_lock(fd.rawValue, cipc_F_OFD_SETLK, kind.cType, byte, 1, nil) }
            return true
        } catch {
            if error == .resourceTemporarilyUnavailable || error == .permissionDenied { return false }
            throw error
        }
    }

    /// Takes a lock, polling until `deadline`. Returns false on timeout.
    package static func lock(
        _ fd: FileDescriptor, byte: Int64, _ kind: Kind, deadline: Deadline
    ) throws(Errno) -> Bool {
        var pause: UInt64 = 20_000
        while true {
            if try tryLock(fd, byte: byte, kind) { return true }
            if deadline.hasPassed { return false }
            Clock.sleep(nanoseconds: pause, before: deadline)
            pause = min(pause * 2, 2_000_000)
        }
    }

    /// Releases this description's lock on one byte.
    package static func unlock(_ fd: FileDescriptor, byte: Int64) {
        _ = cipc_fcntl_lock(fd.rawValue, cipc_F_OFD_SETLK, Int16(F_UNLCK), byte, 1, nil)
    }

    /// Whether any other open file description holds a lock on the byte that would conflict with
    /// `kind` (for `.exclusive`: any lock at all). Takes no lock. The C call is `F_OFD_GETLK`.
    package static func isLocked(_ fd: FileDescriptor, byte: Int64, against kind: Kind = .exclusive) throws(Errno) -> Bool {
        var type: Int16 = 0
        _ = try valueOrErrno { cipc_fcntl_lock(fd.rawValue, cipc_F_OFD_GETLK, kind.cType, byte, 1, &type) }
        return type != Int16(F_UNLCK)
    }
}
