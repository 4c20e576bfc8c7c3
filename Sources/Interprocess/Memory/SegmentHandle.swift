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
/// - **create**: the file is built with no name (`O_TMPFILE` in /dev/shm): header (state `ready`),
///   size, reserved pages, the payload's initial contents, the creator's locks and holder slot; only
///   then is it given its name, atomically, with `linkat` — which fails if the name exists, so of two
///   racing creators exactly one wins. Nobody can ever open a half-built segment.
/// - **open**: an exclusive *try*-lock on the live byte first. Success means nobody holds the
///   segment: a `.whileReferenced` segment is then abandoned (its last holder died without closing)
///   and is swept; the open reports `notFound`. Otherwise the opener takes a shared lock, checks that
///   the file still has a name (a file unlinked under it is retried), and registers.
/// - **close**: release the slot and the shared lock, then try the exclusive lock. Whoever gets it
///   is the last holder: it unlinks the name and only then marks the header `removed`. Two closers at
///   once: each releases before trying, so the last one to release always succeeds, or a sweeper
///   holding the lock finishes the job. Whoever else takes the live lock only to look — an open that
///   fails (another kind, a damaged header), a refused remove — releases it the same way and sweeps
///   if it turns out to be the last (``releaseLookingLock(fd:name:osName:)``).
/// - **unlink** always happens under an exclusive lock on ``LockByte/gate`` and only if the name
///   still refers to the same inode, so two cleaners never remove a newer segment of the same name;
///   nothing is marked before an unlink has succeeded (a refused unlink changes nothing).
///
/// What a process killed at any step leaves behind: before the `linkat` of a create, nothing (the
/// unnamed file vanishes with its last descriptor); while holding, a slot with a dead holder (swept
/// by the next open or close) and, if it was the last holder of a `.whileReferenced` segment, an
/// abandoned segment (swept by the next open, create or `ipc gc`); between unlinking and marking
/// `removed`, a nameless file that only its remaining holders see.
///
/// ## What is checked before anything is touched
/// /dev/shm is writable by every user, and any process that can write a segment's file can change or
/// truncate it. An open therefore accepts only a regular file (never blocks on a FIFO, never follows
/// a link) owned by a trusted user (``TrustedOwners``), reads and validates the header with `pread`
/// (no mapping yet, so a short file cannot raise SIGBUS), makes sure every page of the file exists
/// (`posix_fallocate`: a file that claims more than the file system can hold fails with
/// `outOfMemory`), and only then maps it. A header that is damaged — state, checksum, sizes — is
/// `corrupt`: it is reported, never swept. Close checks the file's size again before it touches the
/// header. What remains: a process with write access that truncates the file *while* others use it
/// makes their next access fault (SIGBUS); the kernel offers no way to stop that for a named file
/// (anonymous, sealed segments will).
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

    /// How long an open waits for a closer or sweeper deciding (holding the exclusive lock).
    static let lockWait: Duration = .seconds(5)

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

    /// This process's owner lease on the segment's file (see `OwnerLease`): the identity that the
    /// synchronization primitives placed in it record, vouched for by a kernel lock. The lease has
    /// its own description of the file, so it outlives this handle's `close()`; or `closed`.
    func ownerLease() throws(InterprocessError) -> OwnerLease {
        let osName = osName
        let result = registration.withLock { registration -> Result<OwnerLease, InterprocessError> in
            guard let fd = registration?.fd else {
                return .failure(InterprocessError(.closed, objectName: name, detail: "the handle was closed"))
            }
            return Result { () throws(InterprocessError) in
                try perform(.leaseSegment, name: name) { () throws(Errno) in
                    try OwnerLease.acquire(file: fd) { () throws(Errno) in
                        try SharedMemoryObject.open(osName, create: false, exclusive: false)
                    }
                }
            }
        }
        return try result.get()
    }

    /// The holder slot of this handle, if the table had room.
    var slot: Int? { registration.withLock { $0?.slot } }

    /// Throws `corrupt` if the file is now shorter than the mapping (another process truncated it):
    /// touching the missing pages would kill this process with SIGBUS.
    func checkFileSize() throws(InterprocessError) {
        guard let (fd, length) = registration.withLock({ $0.map { ($0.fd, $0.mapping.length) } }) else {
            throw InterprocessError(.closed, objectName: name, detail: "the handle was closed")
        }
        guard let status = try? fd.status(), status.size >= Int64(length) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "the file was truncated by another process")
        }
    }

    /// Unregisters this holder; the last holder of a `.whileReferenced` segment removes its name.
    /// The mapping stays valid until the last reference to it (a borrow in flight, a primitive built
    /// on it) is released.
    func close() {
        guard let registration = registration.withLock({ state -> Registration? in
            defer { state = nil }
            return state
        }) else { return }
        let fd = registration.fd
        if isAnonymous {
            // No name, no slot, no locks: the memory lives while any descriptor or mapping does.
            try? fd.close()
            return
        }
        // The header is touched only while the file still covers it (a peer may have truncated it).
        let intact = (try? fd.status()).map { $0.size >= Int64(SegmentHeader.size) } ?? false
        let header = SegmentHeader(registration.mapping.base)
        if let slot = registration.slot {
            if intact { header.slotPID(slot).pointee.store(0, ordering: .releasing) }
            FileLock.unlock(fd, byte: LockByte.slotBase + Int64(slot))
        }
        if intact { Self.sweepDeadSlots(fd: fd, header: header, own: nil) }
        FileLock.unlock(fd, byte: LockByte.live)
        if lifetime == .whileReferenced, (try? FileLock.tryLock(fd, byte: LockByte.live, .exclusive)) == true {
            if intact, header.state == SegmentState.ready.rawValue, Self.unlinkIfSame(fd: fd, osName: osName) == .unlinked {
                HotPath.crashPoint("close.afterUnlink")
                _ = header.transition(from: .ready, to: .removed)
            }
            FileLock.unlock(fd, byte: LockByte.live)
        }
        try? fd.close()
    }
}

// MARK: - Anonymous segments

extension SegmentHandle {
    /// Whether this handle is an anonymous segment (a sealed memory file with no name; see
    /// `SharedMemory+Anonymous.swift`).
    var isAnonymous: Bool { osName.isEmpty }

    /// A handle on an anonymous segment whose header the caller wrote or validated: it owns `fd`
    /// and `mapping`, has no name, no holder slot and no locks.
    static func anonymous(fd: FileDescriptor, payloadSize: Int, mapping: MemoryMapping) -> SegmentHandle {
        SegmentHandle(
            name: "", osName: "", kind: .raw, lifetime: .whileReferenced, payloadSize: payloadSize,
            registration: Registration(fd: fd, slot: nil, mapping: mapping))
    }

    /// A new descriptor (close-on-exec) for the segment's file, e.g. to pass it to another process.
    func duplicateDescriptor() throws(InterprocessError) -> FileDescriptor {
        let result = registration.withLock { state -> Result<FileDescriptor, InterprocessError> in
            guard let fd = state?.fd else { return .failure(InterprocessError(.closed, objectName: name, detail: "the handle was closed")) }
            return Result { () throws(InterprocessError) in
                try perform(.duplicate, name: name, detail: "could not duplicate its descriptor") { () throws(Errno) in try fd.duplicateCloseOnExec() }
            }
        }
        return try result.get()
    }
}

// MARK: - Create and open

extension SegmentHandle {
    static let maximumPayloadSize = Int(Int64.max) - SegmentHeader.size - 2 * systemPageSize

    static func create(
        name: String, kind: SegmentKind, payloadSize: Int, permissions: FilePermissions, group: UInt32? = nil,
        lifetime: Lifetime, initialize: (UnsafeMutableRawBufferPointer) throws(InterprocessError) -> Void = { _ in }
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
        let fd = try perform(.createSegment, name: name) { () throws(Errno) in
            try SharedMemoryObject.createUnnamed(permissions: permissions)
        }
        let handle: SegmentHandle
        do throws(InterprocessError) {
            handle = try build(
                fd: fd, name: name, osName: osName, kind: kind, payloadSize: payloadSize, total: total,
                permissions: permissions, group: group, lifetime: lifetime, initialize: initialize)
        } catch {
            try? fd.close() // the file has no name yet: it vanishes with its descriptor
            throw error
        }
        // Give it its name: exactly one of several racing creators succeeds.
        for _ in 0..<16 {
            do {
                try SharedMemoryObject.link(fd, as: osName)
                HotPath.crashPoint("create.afterLink")
                return handle
            } catch {
                if error == .fileExists, try sweepIfAbandoned(name: name, osName: osName) { continue }
                handle.discardUnnamed()
                throw InterprocessError(.linkSegment, error, objectName: name)
            }
        }
        handle.discardUnnamed()
        throw InterprocessError(.alreadyExists, objectName: name, detail: "other processes kept creating and removing it")
    }

    /// Drops a handle whose file never got a name (nothing to unlink, nobody else holds it).
    private func discardUnnamed() {
        guard let registration = registration.withLock({ state -> Registration? in
            defer { state = nil }
            return state
        }) else { return }
        try? registration.fd.close()
    }

    /// Builds the complete segment in the unnamed file `fd`: permissions, header (ready), size,
    /// reserved pages, payload, this creator's locks and holder slot.
    private static func build(
        fd: FileDescriptor, name: String, osName: String, kind: SegmentKind, payloadSize: Int, total: Int,
        permissions: FilePermissions, group: UInt32?, lifetime: Lifetime,
        initialize: (UnsafeMutableRawBufferPointer) throws(InterprocessError) -> Void
    ) throws(InterprocessError) -> SegmentHandle {
        HotPath.crashPoint("create.afterOpen")
        if let group {
            try perform(.setGroup, name: name, detail: "could not give the segment to group \(group)") { () throws(Errno) in try fd.setGroup(group) }
        }
        try perform(.setPermissions, name: name) { () throws(Errno) in try fd.setPermissions(permissions) }
        let locked = try perform(.lockSegment, name: name, otherwise: .createFailed) { () throws(Errno) in
            try FileLock.tryLock(fd, byte: LockByte.live, .shared)
        }
        guard locked else {
            throw InterprocessError(.createFailed, objectName: name, detail: "could not lock its own new file (another process holds a lock on an unnamed file)")
        }
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: SegmentHeader.size, alignment: 64)
        defer { page.deallocate() }
        let header = SegmentHeader(page.baseAddress!)
        header.initialize(name: name, kind: kind, lifetime: lifetime, payloadSize: payloadSize)
        header.stateWord.pointee.store(SegmentState.ready.rawValue, ordering: .relaxed)
        try perform(.writeHeader, name: name) { () throws(Errno) in try fd.write(UnsafeRawBufferPointer(page), at: 0) }
        HotPath.crashPoint("create.afterHeader")
        try perform(.resize, name: name, detail: "\(total) bytes") { () throws(Errno) in try fd.truncate(to: Int64(total)) }
        // tmpfs overcommits: reserve the pages now, so that a segment too big for the machine
        // fails here with ENOSPC instead of killing the process with SIGBUS on first touch.
        try perform(.reserve, name: name, detail: "could not reserve \(total) bytes", otherwise: .createFailed) { () throws(Errno) in
            try fd.reserve(bytes: Int64(total))
        }
        HotPath.crashPoint("create.afterReserve")
        let mapping = try perform(.map, name: name, detail: "could not map \(total) bytes", otherwise: .createFailed) { () throws(Errno) in
            try MemoryMapping(fd: fd, length: total)
        }
        try initialize(UnsafeMutableRawBufferPointer(start: mapping.base + SegmentHeader.size, count: payloadSize))
        let slot = claimSlot(fd: fd, header: SegmentHeader(mapping.base))
        HotPath.crashPoint("create.beforeLink")
        return SegmentHandle(
            name: name, osName: osName, kind: kind, lifetime: lifetime, payloadSize: payloadSize,
            registration: Registration(fd: fd, slot: slot, mapping: mapping))
    }

    static func open(name: String, kind: SegmentKind?, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> SegmentHandle {
        let osName = try SharedMemory.osName(for: name)
        let deadline = Deadline(after: lockWait)
        var pause: UInt64 = 50_000
        while true {
            let fd = try openChecked(name: name, osName: osName, trusting: trust)
            let attachment: Attachment
            do {
                attachment = try attach(fd: fd, name: name, osName: osName, kind: kind, trust: trust, deadline: deadline)
            } catch {
                // A failed open must not hold the segment, nor leave it behind: it may have held the
                // shared lock while the last holder closed (see ``releaseLookingLock(fd:name:osName:)``).
                HotPath.crashPoint("open.refusing")
                releaseLookingLock(fd: fd, name: name, osName: osName)
                try? fd.close()
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
                if deadline.hasPassed {
                    throw InterprocessError(.openFailed, objectName: name, detail: "it kept being removed for \(lockWait)")
                }
                Clock.sleep(nanoseconds: pause)
                pause = min(pause * 2, 10_000_000)
            }
        }
    }

    /// Opens the file at `osName` read-write: a regular file (never a FIFO, a link or a device),
    /// owned by someone `trust` accepts.
    static func openChecked(
        name: String, osName: String, trusting trust: TrustedOwners, readOnly: Bool = false
    ) throws(InterprocessError) -> FileDescriptor {
        let fd = try perform(.openSegment, name: name) { () throws(Errno) in
            try SharedMemoryObject.open(osName, create: false, exclusive: false, readOnly: readOnly)
        }
        do throws(InterprocessError) {
            let status = try perform(.status, name: name) { () throws(Errno) in try fd.status() }
            try trust.check(status, name: name)
            return fd
        } catch {
            try? fd.close()
            throw error
        }
    }

    private enum Attachment {
        case attached(SegmentHandle)
        case swept
        case retry
    }

    private static func attach(
        fd: FileDescriptor, name: String, osName: String, kind: SegmentKind?, trust: TrustedOwners, deadline: Deadline
    ) throws(InterprocessError) -> Attachment {
        if try perform(.lockSegment, name: name, { () throws(Errno) in try FileLock.tryLock(fd, byte: LockByte.live, .exclusive) }) {
            // Nobody else holds it. Decide under the exclusive lock.
            if try examineUnheld(fd: fd, name: name) == .abandoned {
                sweep(fd: fd, osName: osName)
                FileLock.unlock(fd, byte: LockByte.live)
                return .swept
            }
            _ = try perform(.lockSegment, name: name) { () throws(Errno) in try FileLock.tryLock(fd, byte: LockByte.live, .shared) } // downgrade
        } else if !(try perform(.lockSegment, name: name, { () throws(Errno) in try FileLock.lock(fd, byte: LockByte.live, .shared, deadline: deadline) })) {
            throw InterprocessError(.openFailed, objectName: name, detail: "another process held it exclusively for \(lockWait)")
        }
        // From here on we hold a shared lock: nobody sweeps or removes-as-last-holder under us.
        let checked = try readHeader(fd: fd, name: name)
        if checked.status.linkCount == 0 {
            // Removed (unlinked) after we opened it: a fresh open finds the next one, or none.
            FileLock.unlock(fd, byte: LockByte.live)
            return .retry
        }
        let header = SegmentHeader(checked.page.baseAddress!)
        try header.validate(fileSize: checked.status.size, name: name, kind: kind)
        guard header.state == SegmentState.ready.rawValue else {
            // A remover unlinks first and marks the header afterwards, so `removed` after our status
            // check means it was unlinked meanwhile: look again.
            if let again = try? fd.status(), again.linkCount == 0 {
                FileLock.unlock(fd, byte: LockByte.live)
                return .retry
            }
            throw InterprocessError(.corrupt, objectName: name, detail: "the header's state is \(header.state) on a named segment (only 'ready' is valid)")
        }
        let size = checked.status.size
        guard size <= Int64(Int.max) else { throw InterprocessError(.corrupt, objectName: name, detail: "size \(size)") }
        // Every page must exist before the mapping is touched: a sparse file that claims more than
        // the file system holds would otherwise raise SIGBUS on first use.
        try perform(.reserve, name: name, detail: "could not reserve its \(size) bytes") { () throws(Errno) in try fd.reserve(bytes: size) }
        let mapping = try perform(.map, name: name, detail: "could not map \(size) bytes") { () throws(Errno) in
            try MemoryMapping(fd: fd, length: Int(size))
        }
        // From the validated copy (a peer may rewrite the mapped header at any time); checked anyway.
        guard let lifetime = Lifetime(code: header.pointer.pointee.lifetime) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "unknown lifetime code")
        }
        let payloadSize = Int(header.pointer.pointee.payload_size)
        let segmentKind = SegmentKind(rawValue: header.pointer.pointee.kind)
        let mapped = SegmentHeader(mapping.base)
        let slot = claimSlot(fd: fd, header: mapped)
        sweepDeadSlots(fd: fd, header: mapped, own: slot)
        return .attached(SegmentHandle(
            name: name, osName: osName, kind: segmentKind, lifetime: lifetime, payloadSize: payloadSize,
            registration: Registration(fd: fd, slot: slot, mapping: mapping)))
    }

    /// A copy of the header page, read with `pread` (never a mapping: a short file cannot fault),
    /// and the file's status. Throws `incompatible` for an empty file or one without our magic,
    /// `corrupt` for one shorter than a header.
    static func readHeader(fd: FileDescriptor, name: String) throws(InterprocessError) -> (page: HeaderCopy, status: FileStatus) {
        let status = try perform(.status, name: name) { () throws(Errno) in try fd.status() }
        if status.size == 0 {
            throw InterprocessError(.incompatible, objectName: name, detail: "an empty file, not an Interprocess segment (Interprocess never leaves one: it names a segment only when it is complete)")
        }
        let bytes = try perform(.readHeader, name: name) { () throws(Errno) in try fd.read(count: SegmentHeader.size, at: 0) }
        guard bytes.count >= 8, bytes.withUnsafeBytes({ $0.loadUnaligned(as: UInt64.self) }) == CIPC_SEGMENT_MAGIC else {
            throw InterprocessError(.incompatible, objectName: name, detail: "not an Interprocess segment (no IPCSEGMT magic)")
        }
        guard bytes.count == SegmentHeader.size else {
            throw InterprocessError(.corrupt, objectName: name, detail: "the file has \(status.size) bytes, less than the \(SegmentHeader.size)-byte header")
        }
        return (HeaderCopy(bytes), status)
    }
}

/// A heap copy of a header page, 64-byte aligned, freed on deinit.
final class HeaderCopy {
    let buffer: UnsafeMutableRawBufferPointer
    var baseAddress: UnsafeMutableRawPointer? { buffer.baseAddress }

    init(_ bytes: [UInt8]) {
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SegmentHeader.size, alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: min($0.count, buffer.count)) }
    }

    deinit { buffer.deallocate() }
}

// MARK: - Sweeping and unlinking

extension SegmentHandle {
    enum Verdict {
        case inUse, abandoned
    }

    /// Decides what an object that nobody holds is. The caller holds the exclusive live lock and has
    /// checked the owner. `abandoned` only for a provably complete, undamaged `.whileReferenced`
    /// segment of ours in state `ready` with no holder left; anything else — a `.persistent` segment,
    /// a file that is not ours, a damaged one — is `inUse`, and the caller goes on and reports it.
    static func examineUnheld(fd: FileDescriptor, name: String) throws(InterprocessError) -> Verdict {
        guard let checked = try? readHeader(fd: fd, name: name), checked.status.linkCount > 0 else { return .inUse }
        let header = SegmentHeader(checked.page.baseAddress!)
        guard (try? header.validate(fileSize: checked.status.size, name: name, kind: nil)) != nil,
              header.state == SegmentState.ready.rawValue,
              header.pointer.pointee.lifetime == Lifetime.whileReferenced.rawCode
        else { return .inUse }
        return .abandoned
    }

    /// Releases a shared lock on the live byte that was taken only to look at the segment (an open
    /// that then failed — another kind, a damaged header — or a refused remove), then does what a
    /// closer does after releasing: tries the exclusive lock and, if that shows nobody holds an
    /// undamaged `.whileReferenced` segment, sweeps it. Without this, a last holder that closed while
    /// our lock was held could not take the exclusive lock, and nobody would remove the segment: the
    /// last one to release the live byte must always be the one to decide. A no-op lock release if
    /// this descriptor held no lock.
    static func releaseLookingLock(fd: FileDescriptor, name: String, osName: String) {
        FileLock.unlock(fd, byte: LockByte.live)
        guard (try? FileLock.tryLock(fd, byte: LockByte.live, .exclusive)) == true else { return }
        defer { FileLock.unlock(fd, byte: LockByte.live) }
        if (try? examineUnheld(fd: fd, name: name)) == .abandoned { sweep(fd: fd, osName: osName) }
    }

    /// Unlinks an abandoned segment's name, then marks it removed. The caller holds the exclusive
    /// live lock.
    static func sweep(fd: FileDescriptor, osName: String) {
        guard unlinkIfSame(fd: fd, osName: osName) == .unlinked else { return }
        if let status = try? fd.status(), status.size >= Int64(SegmentHeader.size),
           let page = try? MemoryMapping(fd: fd, length: SegmentHeader.size) {
            _ = SegmentHeader(page.base).transition(from: .ready, to: .removed)
        }
    }

    /// Opens `osName` and sweeps it if it is an abandoned segment of a trusted owner. Returns whether
    /// it swept.
    static func sweepIfAbandoned(name: String, osName: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Bool {
        guard let fd = try? openChecked(name: name, osName: osName, trusting: trust) else { return false }
        defer { try? fd.close() }
        guard (try? FileLock.tryLock(fd, byte: LockByte.live, .exclusive)) == true else { return false }
        defer { FileLock.unlock(fd, byte: LockByte.live) }
        guard try examineUnheld(fd: fd, name: name) == .abandoned else { return false }
        sweep(fd: fd, osName: osName)
        return true
    }

    enum UnlinkOutcome: Equatable {
        case unlinked
        /// The name is gone or names another file now.
        case gone
        /// Another cleaner kept the gate lock for ``lockWait``.
        case busy
        case failed(Errno)
    }

    /// Unlinks `osName` if it still names the file open as `fd`. Serialized by the gate lock, so that
    /// of several cleaners exactly one unlinks, and never a newer object of the same name.
    @discardableResult
    static func unlinkIfSame(fd: FileDescriptor, osName: String) -> UnlinkOutcome {
        guard (try? FileLock.lock(fd, byte: LockByte.gate, .exclusive, deadline: Deadline(after: lockWait))) == true else {
            return .busy
        }
        defer { FileLock.unlock(fd, byte: LockByte.gate) }
        guard let mine = try? fd.status(), mine.linkCount > 0,
              let named = try? SharedMemoryObject.status(ofName: osName),
              named.inode == mine.inode, named.device == mine.device
        else { return .gone }
        do {
            try SharedMemoryObject.unlink(osName)
            return .unlinked
        } catch {
            return error == .noSuchFileOrDirectory ? .gone : .failed(error)
        }
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
}
