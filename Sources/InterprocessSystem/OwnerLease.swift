#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess
import Synchronization

/// This process's identity in one segment file, vouched for by the kernel: the word that the
/// synchronization primitives record as an owner (a mutex owner, a writer, a reader slot, a putter).
///
/// A **token** is a 64-bit word: the high 32 bits are the pid as this process sees it (for display
/// only — never used to decide anything), the low 32 bits are random, non-zero, with bit 31 clear
/// (bit 31 of the low half is a flag in the words that hold tokens: *contended* in a lock's owner
/// word, *cleaning* in a reader slot). While it may own anything in the file, the process holds an
/// open-file-description lock on byte ``lockByte(of:)`` of the file, on a description of its own.
/// A token is **alive** exactly while some description holds a lock on that byte
/// (``isAlive(_:)``: one `F_OFD_GETLK`). The kernel drops the lock the instant the process dies,
/// however it dies, so liveness needs no pid and no /proc: it is right across PID namespaces
/// (containers that share /dev/shm), across users and with /proc mounted `hidepid=2`. Two
/// processes never hold the same token in one file: a token is only taken with the try-lock that
/// proves nobody else holds its byte.
///
/// **One lease per process and file.** ``acquire(file:reopenByName:)`` hands every caller in the
/// process the same lease for the same file (device and inode), so that threads and instances of
/// one process share one identity. The lease keeps its own open file description (the segment's
/// file reopened through `/proc/self/fd`, which works after the name was removed too), so it does
/// not depend on the handle it came from staying open. When the last reference goes away, the
/// description is closed and the lock dropped: from then on the process's old token looks dead.
///
/// `Sendable`: immutable after init.
package final class OwnerLease: Sendable {
    /// This process's token in the file.
    package let token: UInt64
    /// The lease's own description of the file: carries the token's lock, and serves the liveness
    /// checks (a description never conflicts with its own lock, and we never check ourselves).
    package let descriptor: FileDescriptor
    private let key: FileKey

    /// Bit 31 of a token word: a flag, never part of a token.
    package static let flagBit: UInt64 = CIPC_TOKEN_FLAG
    /// Where the token bytes start in the file: far beyond any segment's data and its other locks.
    package static let lockBase = Int64(CIPC_TOKEN_LOCK_BASE)

    private init(token: UInt64, descriptor: FileDescriptor, key: FileKey) {
        self.token = token
        self.descriptor = descriptor
        self.key = key
    }

    deinit {
        try? descriptor.close() // drops the token's lock
        let key = key
        Self.registry.withLock { leases in
            // A lease for the same file made after this one started to go away stays.
            if leases[key]?.lease == nil { leases[key] = nil }
        }
    }

    /// The byte whose lock vouches for the token in `word` (flag bit 31 ignored): `2^62 + (word mod
    /// 2^62)`, so every token maps to a distinct byte within a file's 63-bit offset range.
    @inline(__always)
    package static func lockByte(of word: UInt64) -> Int64 {
        lockBase + Int64(word & ~flagBit & (UInt64(CIPC_TOKEN_LOCK_BASE) - 1))
    }

    /// Whether the process whose token is in `word` (flag bit 31 ignored) is alive: someone holds the
    /// lock on the token's byte. This process's own token is alive. 0 is nobody (not alive). When
    /// the kernel cannot answer, alive (never take over on a doubt).
    package func isAlive(_ word: UInt64) -> Bool {
        let candidate = word & ~Self.flagBit
        if candidate == 0 { return false }
        if candidate == token { return true }
        return Self.isAlive(candidate, checkingWith: descriptor)
    }

    /// Whether the token in `word` is alive, checked through any descriptor of the file (`ipc
    /// inspect` uses its own). A token of the process that holds `descriptor`'s description itself
    /// is not seen: a description never conflicts with its own lock.
    package static func isAlive(_ word: UInt64, checkingWith descriptor: FileDescriptor) -> Bool {
        let candidate = word & ~flagBit
        if candidate == 0 { return false }
        return (try? FileLock.isLocked(descriptor, byte: lockByte(of: candidate))) ?? true
    }

    /// The pid a token word records (what the owner saw as its pid; display only).
    @inline(__always)
    package static func displayPID(of word: UInt64) -> Int32 {
        Int32(bitPattern: UInt32(truncatingIfNeeded: word >> 32))
    }

    // MARK: The process-wide registry

    private struct FileKey: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    private struct WeakLease: Sendable {
        weak var lease: OwnerLease?
    }

    private static let registry = Mutex<[FileKey: WeakLease]>([:])

    /// This process's lease on the file open as `file`: the existing one, or a new one (a new
    /// description and a fresh token). `reopenByName` opens the file another way where
    /// `/proc/self/fd` is not available (the result is used only if it is the same file).
    package static func acquire(
        file: FileDescriptor, reopenByName: () throws(Errno) -> FileDescriptor
    ) throws(Errno) -> OwnerLease {
        let status = try file.status()
        let key = FileKey(device: status.device, inode: status.inode)
        return try registry.withLock { leases throws(Errno) -> OwnerLease in
            if let lease = leases[key]?.lease { return lease }
            let lease = try make(file: file, key: key, reopenByName: reopenByName)
            leases[key] = WeakLease(lease: lease)
            return lease
        }
    }

    private static func make(
        file: FileDescriptor, key: FileKey, reopenByName: () throws(Errno) -> FileDescriptor
    ) throws(Errno) -> OwnerLease {
        let (descriptor, writable) = try reopen(file, key: key, reopenByName: reopenByName)
        do throws(Errno) {
            let pid = UInt64(UInt32(bitPattern: getpid()))
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<64 {
                let token = pid << 32 | UInt64(UInt32.random(in: 1...0x7FFF_FFFF, using: &generator))
                if try lockToken(token, on: descriptor, writable: writable) {
                    return OwnerLease(token: token, descriptor: descriptor, key: key)
                }
            }
            throw Errno.resourceBusy
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    /// Takes the lock of `token`, proving that nobody else holds it: an exclusive try-lock, or, on a
    /// description that is not writable, a shared lock and a check that no other description holds
    /// one too (two processes that race for one token both see the other and both give up).
    private static func lockToken(_ token: UInt64, on descriptor: FileDescriptor, writable: Bool) throws(Errno) -> Bool {
        let byte = lockByte(of: token)
        if writable { return try FileLock.tryLock(descriptor, byte: byte, .exclusive) }
        guard try FileLock.tryLock(descriptor, byte: byte, .shared) else { return false }
        if try FileLock.isLocked(descriptor, byte: byte) {
            FileLock.unlock(descriptor, byte: byte)
            return false
        }
        return true
    }

    /// A new open file description of the file open as `file`: `/proc/self/fd/N` (read-write, or
    /// read-only where the file's mode no longer lets us write), else `reopenByName` if it is the
    /// same file, else — no /proc, name gone, mode refusing us — a duplicate of `file` (the same
    /// description: it stays open, and so keeps the token's lock, after `file` is closed; its owner
    /// only ever unlocks its own bytes). Returns the descriptor and whether it is writable.
    private static func reopen(
        _ file: FileDescriptor, key: FileKey, reopenByName: () throws(Errno) -> FileDescriptor
    ) throws(Errno) -> (FileDescriptor, Bool) {
        let path = "/proc/self/fd/\(file.rawValue)"
        var firstError = Errno.noSuchFileOrDirectory
        for writable in [true, false] {
            let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
            if fd >= 0 {
                let descriptor = FileDescriptor(rawValue: fd)
                if let status = try? descriptor.status(), status.device == key.device, status.inode == key.inode {
                    return (descriptor, writable)
                }
                try? descriptor.close()
                break
            }
            let error = currentErrno
            if writable { firstError = error }
            if error != .permissionDenied { break }
        }
        // No /proc (or a foreign one): open the name again, if it still names this file.
        if let descriptor = try? reopenByName() {
            if let status = try? descriptor.status(), status.device == key.device, status.inode == key.inode {
                return (descriptor, true)
            }
            try? descriptor.close()
        }
        let duplicate = fcntl(file.rawValue, F_DUPFD_CLOEXEC, 0)
        guard duplicate >= 0 else { throw firstError }
        return (FileDescriptor(rawValue: duplicate), fcntl(file.rawValue, F_GETFL) & O_ACCMODE == O_RDWR)
    }
}
