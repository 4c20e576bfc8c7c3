import CInterprocess
import InterprocessSystem
import SystemPackage
import Synchronization

/// An open, registered handle on a named segment: the descriptor that carries this handle's
/// open-file-description locks, and the mapping of the whole file.
///
/// ## The lifetime protocol
/// Every holder keeps a *shared* lock on byte ``LockByte/live`` of the segment's file and a lock on
/// its holder slot's byte. The kernel drops both the instant the holder dies, however it dies.
/// - **create**: `shm_open(O_EXCL)` (so exactly one of two racing creators wins), then an *exclusive*
///   lock on the live byte while the header and payload are set up (state `initializing`), then the
///   state becomes `ready` and the lock is downgraded to shared. Openers wait on that lock, so nobody
///   ever sees a half-built segment.
/// - **open**: first an exclusive *try*-lock on the live byte. Success means nobody holds the segment:
///   a `.whileReferenced` segment is then abandoned (its last holder died without closing) and is
///   swept; the open reports `notFound`. Otherwise the opener takes a shared lock and registers.
/// - **close**: release the slot and the shared lock, then try the exclusive lock. Whoever gets it
///   while the state is `ready` is the last holder: it marks the header `removed` (so that an opener
///   that raced in retries) and unlinks the name. Two closers at once: each releases before trying,
///   so the last one to release always succeeds, or a sweeper holding the lock finishes the job.
/// - **unlink** always happens under an exclusive lock on ``LockByte/gate`` and only if the name
///   still refers to the same inode, so two cleaners never remove a newer segment of the same name.
///
/// What a process killed at any step leaves behind: before the exclusive lock of a create, an empty
/// file (swept by the next `create` of that name after a 2 s grace); during initialization, a file
/// whose first and only write so far is its header page in state `initializing`, with no lock (swept by the next open, create or `ipc gc`); while holding,
/// a slot with a dead pid (swept by the next open or close) and, if it was the last holder, an
/// abandoned segment (swept by the next open, create or `ipc gc`); between marking `removed` and
/// unlinking, a removed segment (swept the same way).
final class SegmentHandle: Sendable {
    let name: String
    let osName: String
    let kind: SegmentKind
    let lifetime: Lifetime
    let payloadSize: Int
    private let registration: Mutex<Registration?>

    struct Registration: Sendable {
        let fd: FileDescriptor
        let slot: Int?
        let mapping: MemoryMapping
    }

    /// How long an open waits for a creator that is still initializing, or a closer deciding.
    static let lockWait: Duration = .seconds(5)
    /// How old an uninitialized, unlocked object must be before it counts as abandoned.
    static let creationGrace: UInt64 = 2_000_000_000

    private init(name: String, osName: String, kind: SegmentKind, lifetime: Lifetime, payloadSize: Int, registration: Registration) {
        self.name = name
        self.osName = osName
        self.kind = kind
        self.lifetime = lifetime
        self.payloadSize = payloadSize
        self.registration = Mutex(registration)
    }

    deinit { close() }

    var isClosed: Bool { registration.withLock { $0 == nil } }

    /// The mapping, retained, or `closed`. Keep the returned reference while using the memory.
    func mapping() throws(InterprocessError) -> MemoryMapping {
        guard let mapping = registration.withLock({ $0?.mapping }) else {
            throw InterprocessError(.closed, objectName: name, detail: "the handle was closed")
        }
        return mapping
    }

    /// The holder slot of this handle, if the table had room.
    var slot: Int? { registration.withLock { $0?.slot } }

    /// Unregisters this holder; the last holder of a `.whileReferenced` segment removes its name.
    /// The mapping stays valid until the last reference to it (a borrow in flight, a primitive built
    /// on it) is released.
    func close() {
        guard let registration = registration.withLock({ state -> Registration? in
            defer { state = nil }
            return state
        }) else { return }
        let fd = registration.fd
        let header = SegmentHeader(registration.mapping.base)
        if let slot = registration.slot {
            header.slotPID(slot).pointee.store(0, ordering: .releasing)
            FileLock.unlock(fd, byte: LockByte.slotBase + Int64(slot))
        }
        Self.sweepDeadSlots(fd: fd, header: header, own: nil)
        FileLock.unlock(fd, byte: LockByte.live)
        if lifetime == .whileReferenced, (try? FileLock.tryLock(fd, byte: LockByte.live, .exclusive)) == true {
            if header.transition(from: .ready, to: .removed) {
                CrashPoint.reached("close.afterMarkRemoved")
                _ = Self.unlinkIfSame(fd: fd, osName: osName)
            }
            FileLock.unlock(fd, byte: LockByte.live)
        }
        try? fd.close()
    }
}

// MARK: - Create and open

extension SegmentHandle {
    static let maximumPayloadSize = Int(Int64.max) - SegmentHeader.size - 2 * systemPageSize

    static func create(
        name: String, kind: SegmentKind, payloadSize: Int, permissions: FilePermissions, lifetime: Lifetime,
        initialize: (UnsafeMutableRawBufferPointer) throws(InterprocessError) -> Void = { _ in }
    ) throws(InterprocessError) -> SegmentHandle {
        let osName = try SharedMemory.osName(for: name)
        guard payloadSize > 0 else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "a segment holds at least 1 byte, not \(payloadSize)")
        }
        guard payloadSize <= maximumPayloadSize else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "\(payloadSize) bytes is more than a file can hold")
        }
        let total = SegmentHeader.size + payloadSize
        if let free = SharedMemoryObject.availableBytes(), UInt64(total) > free {
            throw InterprocessError(.outOfMemory, objectName: name, detail: "needs \(total) bytes; the shared memory file system has \(free) free")
        }
        for _ in 0..<16 {
            let fd: FileDescriptor
            do {
                fd = try SharedMemoryObject.open(osName, create: true, exclusive: true, permissions: permissions)
            } catch {
                if error == .fileExists {
                    if try sweepIfAbandoned(name: name, osName: osName, includingEmpty: true) { continue }
                    throw InterprocessError(.alreadyExists, objectName: name, systemError: error)
                }
                throw systemFailure(error, name: name, default: .createFailed)
            }
            return try initializeNew(
                fd: fd, name: name, osName: osName, kind: kind, payloadSize: payloadSize, total: total,
                permissions: permissions, lifetime: lifetime, initialize: initialize)
        }
        throw InterprocessError(.alreadyExists, objectName: name, detail: "other processes kept creating and removing it")
    }

    private static func initializeNew(
        fd: FileDescriptor, name: String, osName: String, kind: SegmentKind, payloadSize: Int, total: Int,
        permissions: FilePermissions, lifetime: Lifetime,
        initialize: (UnsafeMutableRawBufferPointer) throws(InterprocessError) -> Void
    ) throws(InterprocessError) -> SegmentHandle {
        var locked = false
        do {
            CrashPoint.reached("create.afterOpen")
            locked = try FileLock.lock(fd, byte: LockByte.live, .exclusive, deadline: Clock.deadline(after: lockWait))
            guard locked else { throw Errno.resourceTemporarilyUnavailable }
            try fd.setPermissions(permissions)
            // The first write to the new file is the whole header page (state `initializing`) in
            // one pwrite: killed at any point, the file is either empty or recognisably ours.
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: SegmentHeader.size, alignment: 64)
            defer { page.deallocate() }
            SegmentHeader(page.baseAddress!).initialize(name: name, kind: kind, lifetime: lifetime, payloadSize: payloadSize)
            try fd.write(UnsafeRawBufferPointer(page), at: 0)
            CrashPoint.reached("create.afterHeader")
            try fd.truncate(to: Int64(total))
            // tmpfs overcommits: reserve the pages now, so that a segment too big for the machine
            // fails here with ENOSPC instead of killing the process with SIGBUS on first touch.
            try fd.reserve(bytes: Int64(total))
            CrashPoint.reached("create.afterReserve")
            let mapping = try MemoryMapping(fd: fd, length: total)
            let header = SegmentHeader(mapping.base)
            try initialize(UnsafeMutableRawBufferPointer(start: mapping.base + SegmentHeader.size, count: payloadSize))
            let slot = claimSlot(fd: fd, header: header)
            CrashPoint.reached("create.beforeReady")
            _ = header.transition(from: .initializing, to: .ready)
            _ = try FileLock.tryLock(fd, byte: LockByte.live, .shared) // downgrade: always succeeds
            return SegmentHandle(
                name: name, osName: osName, kind: kind, lifetime: lifetime, payloadSize: payloadSize,
                registration: Registration(fd: fd, slot: slot, mapping: mapping))
        } catch {
            if locked { _ = unlinkIfSame(fd: fd, osName: osName) } else { try? SharedMemoryObject.unlink(osName) }
            try? fd.close()
            switch error {
            case let error as InterprocessError: throw error
            case let errno as Errno:
                if errno == .noSpace || errno == .noMemory {
                    throw InterprocessError(.outOfMemory, objectName: name, systemError: errno, detail: "could not reserve \(total) bytes")
                }
                if errno == .fileTooLarge || errno == .invalidArgument {
                    throw InterprocessError(.invalidSize, objectName: name, systemError: errno, detail: "\(total) bytes")
                }
                if errno == .resourceTemporarilyUnavailable {
                    throw InterprocessError(.createFailed, objectName: name, detail: "could not lock the new segment")
                }
                throw systemFailure(errno, name: name, default: .createFailed)
            default:
                throw InterprocessError(.createFailed, objectName: name, detail: "\(error)")
            }
        }
    }

    static func open(name: String, kind: SegmentKind?) throws(InterprocessError) -> SegmentHandle {
        let osName = try SharedMemory.osName(for: name)
        let deadline = Clock.deadline(after: lockWait)
        var pause: UInt64 = 50_000
        while true {
            let fd: FileDescriptor
            do {
                fd = try SharedMemoryObject.open(osName, create: false, exclusive: false)
            } catch {
                throw systemFailure(error, name: name, default: .openFailed)
            }
            let attachment: Attachment
            do {
                attachment = try attach(fd: fd, name: name, osName: osName, kind: kind, deadline: deadline)
            } catch {
                try? fd.close() // drops this descriptor's locks: a failed open must not hold the segment
                throw error
            }
            switch attachment {
            case .attached(let handle):
                return handle
            case .swept:
                try? fd.close()
                throw InterprocessError(.notFound, objectName: name, detail: "its last holder died without closing it; the segment was swept")
            case .retry:
                try? fd.close()
                if Clock.monotonicNanoseconds() >= deadline {
                    throw InterprocessError(.openFailed, objectName: name, detail: "it stayed uninitialized or kept being removed for \(lockWait)")
                }
                Clock.sleep(nanoseconds: pause)
                pause = min(pause * 2, 10_000_000)
            }
        }
    }

    private enum Attachment {
        case attached(SegmentHandle)
        case swept
        case retry
    }

    private static func attach(
        fd: FileDescriptor, name: String, osName: String, kind: SegmentKind?, deadline: UInt64
    ) throws(InterprocessError) -> Attachment {
        do {
            if try FileLock.tryLock(fd, byte: LockByte.live, .exclusive) {
                // Nobody else holds it. Decide under the exclusive lock.
                switch try examineUnheld(fd: fd, name: name, includingEmpty: false) {
                case .abandoned:
                    sweep(fd: fd, osName: osName)
                    FileLock.unlock(fd, byte: LockByte.live)
                    return .swept
                case .tooYoung:
                    FileLock.unlock(fd, byte: LockByte.live)
                    return .retry
                case .inUse:
                    _ = try FileLock.tryLock(fd, byte: LockByte.live, .shared) // downgrade
                }
            } else if !(try FileLock.lock(fd, byte: LockByte.live, .shared, deadline: deadline)) {
                throw InterprocessError(.openFailed, objectName: name, detail: "another process held it exclusively for \(lockWait)")
            }
        } catch let error as Errno {
            throw systemFailure(error, name: name, default: .openFailed)
        } catch {
            throw error as! InterprocessError
        }

        let status: FileStatus
        do { status = try fd.status() } catch {
            throw InterprocessError(.statFailed, objectName: name, systemError: error)
        }
        if status.size == 0 {
            // Not initialized yet: a creator between `shm_open` and its exclusive lock (we may even
            // hold our shared lock before it gets there), or one that died in that window.
            FileLock.unlock(fd, byte: LockByte.live)
            if UInt64(clamping: Int64(Clock.realtimeNanoseconds()) - status.changeTimeNanoseconds) < creationGrace { return .retry }
            throw InterprocessError(.notFound, objectName: name, detail: "only an empty object is there (its creator died before writing to it); create replaces it")
        }
        guard status.size >= Int64(SegmentHeader.size) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "the file has \(status.size) bytes, less than the \(SegmentHeader.size)-byte header")
        }
        guard status.size <= Int64(Int.max) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "size \(status.size)")
        }
        let mapping: MemoryMapping
        do { mapping = try MemoryMapping(fd: fd, length: Int(status.size)) } catch {
            if error == .noMemory { throw InterprocessError(.outOfMemory, objectName: name, systemError: error, detail: "could not map \(status.size) bytes") }
            throw systemFailure(error, name: name, default: .openFailed)
        }
        let header = SegmentHeader(mapping.base)
        guard header.pointer.pointee.magic == CIPC_SEGMENT_MAGIC, header.pointer.pointee.version == CIPC_LAYOUT_VERSION else {
            try header.validate(fileSize: status.size, name: name, kind: kind) // throws `incompatible`
            throw InterprocessError(.incompatible, objectName: name)
        }
        switch SegmentState(rawValue: header.state) {
        case .removed?, .initializing?:
            // Being removed (a fresh open finds the next one, or none), or its creator died
            // before finishing (the next round's exclusive lock sweeps it).
            FileLock.unlock(fd, byte: LockByte.live)
            return .retry
        default:
            break
        }
        try header.validate(fileSize: status.size, name: name, kind: kind)
        // What `validate` checked may change under us (a peer can write the header at any time): use
        // the file's size, not the header's payload size, and never force a re-read field into shape.
        guard let lifetime = Lifetime(code: header.pointer.pointee.lifetime) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "the lifetime code changed while opening")
        }
        let slot = claimSlot(fd: fd, header: header)
        sweepDeadSlots(fd: fd, header: header, own: slot)
        return .attached(SegmentHandle(
            name: name, osName: osName, kind: SegmentKind(rawValue: header.pointer.pointee.kind), lifetime: lifetime,
            payloadSize: Int(status.size) - SegmentHeader.size,
            registration: Registration(fd: fd, slot: slot, mapping: mapping)))
    }
}

// MARK: - Sweeping and unlinking

extension SegmentHandle {
    enum Verdict {
        case inUse, abandoned, tooYoung
    }

    /// Decides what an object that nobody holds is. The caller holds the exclusive live lock.
    /// - `abandoned`: ours, and nobody will ever use it again (a `.whileReferenced` segment with no
    ///   holder, a creation whose creator died, a removal whose remover died).
    /// - `tooYoung`: not initialized yet and younger than the grace period (a creator between
    ///   `shm_open` and its lock).
    /// - `inUse`: anything else (a `.persistent` segment, a file that is not ours, a corrupt one);
    ///   the caller goes on and validates it.
    static func examineUnheld(fd: FileDescriptor, name: String, includingEmpty: Bool) throws(InterprocessError) -> Verdict {
        let status: FileStatus
        do { status = try fd.status() } catch {
            throw InterprocessError(.statFailed, objectName: name, systemError: error)
        }
        let age = UInt64(clamping: Int64(Clock.realtimeNanoseconds()) - status.changeTimeNanoseconds)
        if status.size == 0 {
            if age < creationGrace { return .tooYoung }
            return includingEmpty ? .abandoned : .inUse
        }
        guard status.size >= Int64(SegmentHeader.size),
              let page = try? MemoryMapping(fd: fd, length: SegmentHeader.size)
        else { return .inUse }
        let header = SegmentHeader(page.base)
        guard header.pointer.pointee.magic == CIPC_SEGMENT_MAGIC, header.pointer.pointee.version == CIPC_LAYOUT_VERSION else { return .inUse }
        switch SegmentState(rawValue: header.state) {
        case .initializing?, .removed?:
            return .abandoned
        case .ready?:
            return header.pointer.pointee.lifetime == Lifetime.whileReferenced.rawCode ? .abandoned : .inUse
        case nil:
            return .inUse
        }
    }

    /// Marks an abandoned object removed and unlinks its name. The caller holds the exclusive live lock.
    static func sweep(fd: FileDescriptor, osName: String) {
        if let status = try? fd.status(), status.size >= Int64(SegmentHeader.size),
           let page = try? MemoryMapping(fd: fd, length: SegmentHeader.size) {
            SegmentHeader(page.base).stateWord.pointee.store(SegmentState.removed.rawValue, ordering: .releasing)
        }
        _ = unlinkIfSame(fd: fd, osName: osName)
    }

    /// Opens `osName` and sweeps it if it is abandoned. Returns whether it swept.
    static func sweepIfAbandoned(name: String, osName: String, includingEmpty: Bool) throws(InterprocessError) -> Bool {
        guard let fd = try? SharedMemoryObject.open(osName, create: false, exclusive: false) else { return false }
        defer { try? fd.close() }
        guard (try? FileLock.tryLock(fd, byte: LockByte.live, .exclusive)) == true else { return false }
        defer { FileLock.unlock(fd, byte: LockByte.live) }
        guard try examineUnheld(fd: fd, name: name, includingEmpty: includingEmpty) == .abandoned else { return false }
        sweep(fd: fd, osName: osName)
        return true
    }

    /// Unlinks `osName` if it still names the file open as `fd`. Serialized by the gate lock, so that
    /// of several cleaners exactly one unlinks, and never a newer object of the same name.
    @discardableResult
    static func unlinkIfSame(fd: FileDescriptor, osName: String) -> Bool {
        guard (try? FileLock.lock(fd, byte: LockByte.gate, .exclusive, deadline: Clock.deadline(after: lockWait))) == true else {
            return false
        }
        defer { FileLock.unlock(fd, byte: LockByte.gate) }
        guard let mine = try? fd.status(), mine.linkCount > 0,
              let named = try? SharedMemoryObject.status(ofName: osName),
              named.inode == mine.inode, named.device == mine.device
        else { return false }
        return (try? SharedMemoryObject.unlink(osName)) != nil
    }

    // MARK: Holder slots

    /// Claims a free slot (or one whose holder died) by locking its byte. Nil if all are held.
    static func claimSlot(fd: FileDescriptor, header: SegmentHeader) -> Int? {
        let free = (0..<SegmentHeader.holderCapacity).filter { header.slotPID($0).pointee.load(ordering: .relaxed) == 0 }
        let taken = (0..<SegmentHeader.holderCapacity).filter { header.slotPID($0).pointee.load(ordering: .relaxed) != 0 }
        let identity = ProcessIdentity.current
        for index in free + taken where (try? FileLock.tryLock(fd, byte: LockByte.slotBase + Int64(index), .exclusive)) == true {
            header.slot(index).pointee.start_time = identity.startTime
            header.slot(index).pointee.opened_ns = Clock.realtimeNanoseconds()
            header.slotPID(index).pointee.store(UInt32(bitPattern: identity.pid), ordering: .releasing)
            return index
        }
        return nil
    }

    /// Frees the slots of holders that died (no lock on their byte any more).
    static func sweepDeadSlots(fd: FileDescriptor, header: SegmentHeader, own: Int?) {
        for index in 0..<SegmentHeader.holderCapacity where index != own {
            let pid = header.slotPID(index).pointee.load(ordering: .acquiring)
            guard pid != 0 else { continue }
            if (try? FileLock.isLocked(fd, byte: LockByte.slotBase + Int64(index))) == false {
                _ = header.slotPID(index).pointee.compareExchange(expected: pid, desired: 0, ordering: .acquiringAndReleasing)
            }
        }
    }

    /// Maps an errno from opening or creating `name` to a typed error.
    static func systemFailure(_ errno: Errno, name: String, default code: InterprocessError.Code) -> InterprocessError {
        switch errno {
        case Errno.noSuchFileOrDirectory: InterprocessError(.notFound, objectName: name, systemError: errno)
        case Errno.permissionDenied, Errno.notPermitted: InterprocessError(.permissionDenied, objectName: name, systemError: errno)
        case Errno.fileNameTooLong, Errno.invalidArgument: InterprocessError(.invalidName, objectName: name, systemError: errno)
        case Errno.noSpace, Errno.noMemory: InterprocessError(.outOfMemory, objectName: name, systemError: errno)
        case Errno.fileExists: InterprocessError(.alreadyExists, objectName: name, systemError: errno)
        default: InterprocessError(code, objectName: name, systemError: errno)
        }
    }
}
