public import SystemPackage
import InterprocessSystem
import Synchronization

/// A named segment of memory shared between processes.
///
/// ```swift
/// // Process A
/// let segment = try SharedMemory.create(name: "telemetry", size: 1 << 20)
/// try segment.store(Reading(celsius: 21.5))
///
/// // Process B
/// let segment = try SharedMemory.open(name: "telemetry")
/// let reading = try segment.load(Reading.self)
/// ```
///
/// New memory is zero-filled. By default a segment lives ``Lifetime/whileReferenced``: while any
/// process holds it open; the last ``close()`` (or the release of the last reference) removes its
/// name, and a holder that was killed does not keep it alive. ``Lifetime/persistent`` segments stay
/// until ``remove(name:)-(String)``.
///
/// **Keep the handle.** A `.whileReferenced` segment lives only as long as some handle on it:
/// `_ = try SharedMemory.create(name: "jobs", size: 4096)` creates the segment and removes it again
/// at once (the discarded handle was its last reference), so a process that only creates a segment
/// for others must hold on to what `create` returns — or create it ``Lifetime/persistent``.
///
/// Opening one name twice, in one process or several, gives independent handles: closing one leaves
/// the others working. A handle is `Sendable`; the bytes themselves are shared memory, which other
/// threads and processes may change at any time: synchronize access with the primitives of this
/// library, and never trust what another process wrote.
///
/// **Other users and hostile peers.** ``open(name:trusting:)-(String,_)`` accepts only a regular file owned by a
/// trusted user (by default: this process's user; see ``TrustedOwners``), validates the header
/// before mapping anything and makes every page of the file exist, so that a short or sparse file is
/// an error, not a crash. The stored-value accessors (``readBytes()``, ``load(_:)``, ``write(_:)-(String)``…; see ``store(_:)``) and ``close()`` check the file's size
/// before they touch it. What remains: a process that may write the file can truncate it *while*
/// you access the bytes (``withUnsafeBytes(_:)`` included), which faults with SIGBUS; named shared
/// memory offers no way to forbid that.
///
/// Layout of the file (documented for programs in other languages): a 4096-byte header
/// (`cipc_segment_header` in `CInterprocess.h`, magic `IPCSEGMT`) and then the payload of
/// ``size`` bytes at offset ``payloadOffset``.
public final class SharedMemory: Sendable {
    let handle: SegmentHandle
    /// The segment's table of placed objects and its lock, made on first use.
    let placementCache = Mutex<SegmentPlacements?>(nil)

    init(handle: SegmentHandle) { self.handle = handle }

    /// Where the payload starts in the object's file (4096: the header's size).
    public static let payloadOffset = Int(CIPC_HEADER_SIZE)

    /// Longest name in bytes.
    public static let maximumNameLength = 255

    /// The segment's name.
    public var name: String { handle.name }
    /// The name the operating system knows (`shm_open`'s name, with its leading slash), for programs
    /// in other languages, e.g. Python's `multiprocessing.shared_memory.SharedMemory(name:)`.
    public var osName: String { handle.osName }
    /// Usable bytes.
    public var size: Int { handle.payloadSize }
    /// When the name is removed.
    public var lifetime: Lifetime { handle.lifetime }
    /// Whether ``close()`` was called.
    public var isClosed: Bool { handle.isClosed }

    /// Creates a segment of `size` zero-filled bytes. Fails with `alreadyExists` if the name is taken:
    /// of two processes racing to create one name, exactly one succeeds.
    ///
    /// Keep the returned handle for as long as the segment should exist: a `.whileReferenced`
    /// segment is removed when its last handle goes, so `_ = try SharedMemory.create(…)` removes
    /// it at once. (That is why the result is not `@discardableResult`: the compiler warns about
    /// a result that is dropped unawares.)
    ///
    /// - Parameters:
    ///   - name: 1 to 255 bytes, no '/' and no NUL.
    ///   - size: usable bytes, at least 1. The memory is reserved now, so a segment bigger than the
    ///     shared memory file system can hold fails here with `outOfMemory` (it never succeeds and
    ///     then crashes with SIGBUS on first touch).
    ///   - permissions: owner-only by default; applied exactly, without the umask.
    ///   - group: the group the file belongs to (nil: this process's), for sharing with other users
    ///     who open it with ``TrustedOwners/group(_:)``; this process must be a member.
    ///   - lifetime: ``Lifetime/whileReferenced`` by default.
    public static func create(
        name: String, size: Int, permissions: FilePermissions = .ownerReadWrite, group: UInt32? = nil,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        SharedMemory(handle: try SegmentHandle.create(
            name: name, kind: .raw, payloadSize: size, permissions: permissions, group: group, lifetime: lifetime))
    }

    /// Creates a segment named by a ``SharedObjectName``.
    public static func create(
        name: SharedObjectName, size: Int, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        try create(name: name.description, size: size, permissions: permissions, lifetime: lifetime)
    }

    /// Opens an existing segment. Fails with `notFound` if there is none (or its last holder died and
    /// it was swept), `incompatible` if the object is not an Interprocess segment of this version (or
    /// not a regular file), `corrupt` if its header is inconsistent, `outOfMemory` if its file claims
    /// more than the shared memory file system can hold, `permissionDenied` if the kernel refuses or
    /// its owner is not trusted (see ``TrustedOwners``: by default only this user's segments open).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> SharedMemory {
        SharedMemory(handle: try SegmentHandle.open(name: name, kind: .raw, trusting: trust))
    }

    /// Opens a segment named by a ``SharedObjectName``.
    public static func open(name: SharedObjectName, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> SharedMemory {
        try open(name: name.description, trusting: trust)
    }

    /// Opens the segment if it exists, or creates it. `created` tells which happened. An existing
    /// segment smaller than `size` is an `invalidSize` error.
    public static func openOrCreate(
        name: String, size: Int, permissions: FilePermissions = .ownerReadWrite, group: UInt32? = nil,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (segment: SharedMemory, created: Bool) {
        for _ in 0..<64 {
            do throws(InterprocessError) {
                return (try create(name: name, size: size, permissions: permissions, group: group, lifetime: lifetime), true)
            } catch where error.code == .alreadyExists {}
            do throws(InterprocessError) {
                let segment = try open(name: name, trusting: trust)
                guard segment.size >= size else {
                    throw InterprocessError(.invalidSize, objectName: name, detail: "it exists with \(segment.size) bytes, fewer than \(size)")
                }
                return (segment, false)
            } catch where error.code == .notFound {}
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }

    /// Unregisters this handle. The last holder of a ``Lifetime/whileReferenced`` segment removes its
    /// name. Idempotent; also done when the last reference goes away. Afterwards the bytes can no
    /// longer be accessed through this handle (`closed`).
    public func close() { handle.close() }

    /// Removes a segment's name. Processes that hold it keep their memory until they close it; new
    /// opens fail with `notFound`. Refuses (`incompatible`) to remove an object that is not an
    /// Interprocess segment (nor anything that is not a regular file). When the kernel refuses the
    /// unlink (another user's segment in the sticky /dev/shm), the error is `permissionDenied` and the
    /// segment is left exactly as it was. The owner of a segment it cannot even open (mode 000)
    /// removes it all the same.
    public static func remove(name: String) throws(InterprocessError) {
        try remove(name: name, kind: nil)
    }

    /// Removes a segment's name, if it is of `kind` (any kind if nil; `incompatible` otherwise).
    static func remove(name: String, kind: SegmentKind?) throws(InterprocessError) {
        let osName = try osName(for: name)
        let fd: FileDescriptor
        do { fd = try SharedMemoryObject.open(osName, create: false, exclusive: false) } catch {
            // (Only when any kind will do: what such a file holds cannot be read.)
            if error == .permissionDenied, kind == nil, let status = try? SharedMemoryObject.status(ofName: osName),
               status.isRegularFile, status.owner == ProcessIdentity.effectiveUserID {
                // Our own file, with permissions that keep even us out: the owner may remove it.
                try perform(.unlinkSegment, name: name) { () throws(Errno) in try SharedMemoryObject.unlink(osName) }
                return
            }
            throw InterprocessError(.openSegment, error, objectName: name)
        }
        defer { try? fd.close() }
        // Wait for a closer or sweeper that is deciding (holding the lock exclusively).
        let locked = try perform(.lockSegment, name: name) { () throws(Errno) in
            try FileLock.lock(fd, byte: LockByte.live, .shared, deadline: Deadline(after: SegmentHandle.lockWait))
        }
        guard locked else {
            throw InterprocessError(.openFailed, objectName: name, detail: "another process held it exclusively")
        }
        // A refused remove held the lock only to look: release it as a closer would (the last
        // holder may have closed meanwhile, unable to take the exclusive lock because of ours).
        var refused = true
        defer {
            if refused {
                HotPath.crashPoint("remove.refusing")
                SegmentHandle.releaseLookingLock(fd: fd, name: name, osName: osName)
            } else {
                FileLock.unlock(fd, byte: LockByte.live)
            }
        }
        let checked = try SegmentHandle.readHeader(fd: fd, name: name) // `incompatible` unless it is ours
        if let kind, SegmentHeader(checked.page.baseAddress!).pointer.pointee.kind != kind.rawValue {
            let found = SegmentKind(rawValue: SegmentHeader(checked.page.baseAddress!).pointer.pointee.kind)
            throw InterprocessError(.incompatible, objectName: name, detail: "it is a \(found) segment, not \(kind)")
        }
        refused = false
        // Unlink first; mark it removed (for the holders) only once that succeeded.
        switch SegmentHandle.unlinkIfSame(fd: fd, osName: osName) {
        case .unlinked:
            if let page = try? MemoryMapping(fd: fd, length: SegmentHeader.size), (try? fd.status())?.size ?? 0 >= Int64(SegmentHeader.size) {
                _ = SegmentHeader(page.base).transition(from: .ready, to: .removed)
            }
        case .gone:
            throw InterprocessError(.notFound, objectName: name, detail: "another process removed it first")
        case .busy:
            throw InterprocessError(.systemError, objectName: name, detail: "another process kept it locked for \(SegmentHandle.lockWait) while removing or sweeping it")
        case .failed(let error):
            throw InterprocessError(.unlinkSegment, error, objectName: name)
        }
    }

    /// Removes a segment named by a ``SharedObjectName``.
    public static func remove(name: SharedObjectName) throws(InterprocessError) {
        try remove(name: name.description)
    }

    /// Whether a usable segment of this name exists (ready, and for ``Lifetime/whileReferenced``,
    /// held by a live process). Does not open or sweep it.
    public static func exists(name: String) -> Bool {
        guard let info = try? SegmentInfo.read(osName: osName(for: name), name: name) else { return false }
        return info.problem == nil && info.state == "ready" && !info.isAbandoned
    }

    /// Calls `body` with the segment's bytes. The pointer must not escape `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let mapping = try handle.mapping()
        return try withExtendedLifetime(mapping) {
            try body(UnsafeRawBufferPointer(start: mapping.base + SegmentHeader.size, count: size))
        }
    }

    /// Calls `body` with the segment's bytes, writable. The pointer must not escape `body`.
    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let mapping = try handle.mapping()
        return try withExtendedLifetime(mapping) {
            try body(UnsafeMutableRawBufferPointer(start: mapping.base + SegmentHeader.size, count: size))
        }
    }

    // MARK: Names

    /// Why `name` is not a valid segment name, or nil if it is.
    static func validationProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "the name is empty" }
        if bytes.count > maximumNameLength { return "the name has \(bytes.count) bytes; at most \(maximumNameLength) are allowed" }
        if bytes.contains(0) { return "the name contains a NUL byte" }
        if bytes.contains(UInt8(ascii: "/")) { return "the name contains '/'" }
        if name == "." || name == ".." { return "'\(name)' is not a valid name" }
        return nil
    }

    /// The operating system's name for `name`, after checking it.
    static func osName(for name: String) throws(InterprocessError) -> String {
        if let problem = validationProblem(name) {
            throw InterprocessError(.invalidName, objectName: name.replacingNulls, detail: problem)
        }
        #if canImport(Darwin)
        // macOS allows 31 bytes (PSHMNAMLEN) including the slash: longer names map to a stable hash;
        // the real name is kept (and checked) in the header.
        if name.utf8.count > 30 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return "/" + name.prefix(12) + "~" + String(hash, radix: 36)
        }
        #endif
        return "/" + name
    }
}

import CInterprocess
let CInterprocessMagic = CIPC_SEGMENT_MAGIC

extension String {
    var replacingNulls: String { String(decoding: utf8.map { $0 == 0 ? UInt8(ascii: "?") : $0 }, as: UTF8.self) }
}
