#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess

extension FileLock {
    /// Takes (or converts to) a lock on the whole file, `[0, ∞)`: at once (`wait` false; returns
    /// false when another open file description holds a conflicting lock) or waiting in the kernel
    /// until it is granted (`wait` true; an interrupted wait is resumed). The corresponding C call is
    /// `fcntl(fd, F_OFD_SETLK / F_OFD_SETLKW, …)`.
    package static func lockWholeFile(_ fd: FileDescriptor, _ kind: Kind, wait: Bool) throws(Errno) -> Bool {
        do {
            _ = try valueOrErrno {
                cipc_fcntl_lock(fd.rawValue, wait ? cipc_F_OFD_SETLKW : cipc_F_OFD_SETLK, kind.cType, 0, 0, nil)
            }
            return true
        } catch {
            if !wait && (error == .resourceTemporarilyUnavailable || error == .permissionDenied) { return false }
            throw error
        }
    }

    /// Releases this open file description's lock on the whole file.
    package static func unlockWholeFile(_ fd: FileDescriptor) {
        _ = cipc_fcntl_lock(fd.rawValue, cipc_F_OFD_SETLK, Int16(F_UNLCK), 0, 0, nil)
    }

    /// What another open file description holds on the whole file that would conflict with `kind`:
    /// nil if nothing, else the kind of lock found. Takes no lock. The C call is `F_OFD_GETLK`.
    package static func wholeFileConflict(_ fd: FileDescriptor, with kind: Kind) throws(Errno) -> Kind? {
        var type: Int16 = 0
        _ = try valueOrErrno { cipc_fcntl_lock(fd.rawValue, cipc_F_OFD_GETLK, kind.cType, 0, 0, &type) }
        if type == Int16(F_UNLCK) { return nil }
        return type == Int16(F_RDLCK) ? .shared : .exclusive
    }
}
