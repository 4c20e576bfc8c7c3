import CInterprocess
import InterprocessSystem
import SystemPackage
import Synchronization

/// A channel's *loan heap*: the ``SharedHeap`` that carries its messages longer than a slot, named
/// after the channel (``heapName(forChannel:)``), created by the first process that needs it and
/// recorded in the channel's header (its nonce, `loan_heap_nonce`), removed with the channel. One per
/// ``Channel`` handle, which opens the heap on first need and keeps it.
///
/// **Who owns a block.** The heap records, per block, the client record of the process that owns it
/// (and the kernel tells whether that process still lives). A block is owned by its sender from
/// ``allocate(byteCount:)`` until a receiver takes it over (``take(_:byteCount:)``, which records the
/// receiver as its owner under the heap's lock *before* the receiver releases the slot); in between,
/// a published slot names it. So a block is garbage exactly when its owner has ended and no
/// published slot names it, and ``sweep(dryRun:)`` frees those: it learns which owners ended first,
/// then reads the ring, then walks the blocks, all under the heap's lock (a dead process publishes
/// nothing more; a block leaves a slot only by a live receiver taking it over, which needs the lock).
///
/// `@unchecked Sendable`: the heap handle is behind a mutex; the rest is immutable.
@usableFromInline
final class ChannelLoans: @unchecked Sendable {
    let ring: ChannelRing
    let storage: SharedObjectStorage
    let channelName: String
    private let opened = Mutex<SharedHeap?>(nil)

    /// The sizes a loan heap is created with unless ``Channel/prepareLoans(capacity:maximumCapacity:)`` said otherwise.
    static let defaultCapacity = 4 << 20
    static let defaultMaximumCapacity = 1 << 30
    /// Suffix of a loan heap's name.
    static let suffix = "~loans"

    init(ring: ChannelRing, storage: SharedObjectStorage) {
        self.ring = ring
        self.storage = storage
        channelName = storage.name ?? ""
    }

    /// The name of the loan heap of the channel `name`: `NAME~loans`, or, when that is longer than a
    /// heap name may be, the name cut at a character boundary plus a hash of the whole of it.
    static func heapName(forChannel name: String) -> String {
        let plain = name + suffix
        if plain.utf8.count <= SharedHeap.maximumNameLength { return plain }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let tail = "~" + String(hash, radix: 16) + suffix
        var head = ""
        for scalar in name.unicodeScalars {
            if head.utf8.count + String(scalar).utf8.count + tail.utf8.count > SharedHeap.maximumNameLength { break }
            head.unicodeScalars.append(scalar)
        }
        return head + tail
    }

    var heapName: String { Self.heapName(forChannel: channelName) }

    /// The heap, if this handle has opened it.
    var openedHeap: SharedHeap? { opened.withLock { $0 } }

    /// The loan heap, opened (or created, with `capacity` and `maximumCapacity`) on first need; a
    /// process that opens it sweeps it first (``sweep(dryRun:)``). `notFound` if the channel records
    /// a heap that is gone (removed with the channel, or by hand); `corrupt` if a heap of that name
    /// is another one than the channel recorded.
    func heap(
        capacity: Int = defaultCapacity, maximumCapacity: Int = defaultMaximumCapacity, sweeping: Bool = true
    ) throws(InterprocessError) -> (heap: SharedHeap, created: Bool) {
        let result = opened.withLock { current -> Result<(SharedHeap, Bool), InterprocessError> in
            if let current { return .success((current, false)) }
            return Result { () throws(InterprocessError) in
                let (heap, created) = try openHeap(capacity: capacity, maximumCapacity: maximumCapacity)
                if sweeping { _ = try? sweep(heap, dryRun: false) }
                try heap.core.claimClientIfNone()
                current = heap
                return (heap, created)
            }
        }
        return try result.get()
    }

    private func openHeap(capacity: Int, maximumCapacity: Int) throws(InterprocessError) -> (SharedHeap, Bool) {
        let (permissions, trust) = fileTerms()
        for _ in 0..<8 {
            let recorded = ring.loanHeapNonce.pointee.load(ordering: .acquiring)
            if recorded != 0 {
                let heap: SharedHeap
                do {
                    heap = try SharedHeap.open(name: heapName, trusting: trust)
                } catch where error.code == .notFound {
                    throw InterprocessError(.notFound, objectName: channelName,
                        detail: "its loan heap \(heapName) is gone (removed with the channel, or by hand): messages longer than a slot cannot travel")
                }
                guard heap.core.nonce == recorded else {
                    heap.close()
                    throw InterprocessError(.corrupt, objectName: channelName,
                        detail: "\(heapName) is not the loan heap the channel recorded (nonce \(String(heap.core.nonce, radix: 16)), not \(String(recorded, radix: 16)))")
                }
                return (heap, false)
            }
            let (heap, created) = try SharedHeap.openOrCreate(
                name: heapName, capacity: capacity, maximumCapacity: max(maximumCapacity, capacity), permissions: permissions,
                lifetime: .persistent, trusting: trust)
            let (exchanged, current) = ring.loanHeapNonce.pointee.compareExchange(
                expected: 0, desired: heap.core.nonce, ordering: .sequentiallyConsistent)
            if exchanged || current == heap.core.nonce { return (heap, created) }
            // Another process recorded another heap meanwhile: use that one.
            heap.close()
        }
        throw InterprocessError(.corrupt, objectName: channelName, detail: "its loan heap keeps changing")
    }

    /// The loan heap is created with the channel file's permissions, and trusted if its owner is
    /// the channel's owner (or one of its group, when the channel lets its group write).
    private func fileTerms() -> (FilePermissions, TrustedOwners) {
        var permissions = FilePermissions.ownerReadWrite
        var trust = TrustedOwners.currentUser
        if let fd = try? storage.segment?.duplicateDescriptor() {
            if let status = try? fd.status() {
                permissions = status.permissions
                trust = .users([status.owner])
                if status.permissions.contains(.groupWrite) { trust = trust.union(.group(status.group)) }
            }
            try? fd.close()
        }
        return (permissions, trust)
    }

    // MARK: Blocks

    /// A block of `byteCount` bytes for a message, owned by this process. When the heap has no
    /// room, it is swept (blocks of ended processes that no message names) and asked once more.
    func allocate(byteCount: Int) throws(InterprocessError) -> (heap: SharedHeap, word: UInt64, address: UnsafeMutableRawPointer) {
        guard byteCount >= 0, byteCount <= Int(CIPC_CHANNEL_MAX_LOAN_SIZE) else {
            throw InterprocessError(.invalidSize, objectName: channelName,
                detail: "a message of \(byteCount) bytes (a loan holds at most \(CIPC_CHANNEL_MAX_LOAN_SIZE))")
        }
        let heap = try heap().heap
        do {
            let (word, address) = try heap.core.allocate(byteCount: byteCount, alignment: 16)
            return (heap, word, address)
        } catch where error.code == .outOfMemory {
            guard try sweep(heap, dryRun: false).blocks > 0 else { throw error }
            let (word, address) = try heap.core.allocate(byteCount: byteCount, alignment: 16)
            return (heap, word, address)
        }
    }

    /// Takes over the block `word` that a slot names as a message of `byteCount` bytes (both read
    /// from the ring, so checked here): records this process as its owner, while the slot still
    /// names it. A word that names no live block of the loan heap, or a block too small, is `corrupt`.
    func take(_ word: UInt64, byteCount: Int) throws(InterprocessError) -> (heap: SharedHeap, address: UnsafeMutableRawPointer) {
        let heap = try heap().heap
        do {
            return (heap, try heap.core.adoptBlock(word, holding: byteCount))
        } catch where error.code == .invalidPointer || error.code == .corrupt {
            throw InterprocessError(.corrupt, objectName: channelName,
                detail: "a slot names a message of \(byteCount) bytes at 0x\(String(word, radix: 16)), which is no block of its loan heap (dropped): \(error.detail)")
        }
    }

    /// Frees (or counts) the blocks of the loan heap whose owner ended and that no published slot
    /// names.
    func sweep(_ heap: SharedHeap, dryRun: Bool) throws(InterprocessError) -> SharedHeap.Reclamation {
        let ring = ring
        return try heap.core.withLock(.free) { (op: inout HeapOperation) throws(InterprocessError) in
            try heap.core.reclaimLocked(dryRun: dryRun, keeping: { ring.publishedLoans() }, &op)
        }
    }

    // MARK: Lifetime

    /// Lets go of the channel (`close` closes its storage) and, if that removed the channel's name
    /// (the last holder of a `.whileReferenced` channel), removes the loan heap it recorded.
    func detach(_ close: () -> Void) {
        let recorded = ring.loanHeapNonce.pointee.load(ordering: .acquiring)
        // Dropped, not closed: loans and received messages of this process keep the heap open.
        opened.withLock { $0 = nil }
        guard recorded != 0, let segment = storage.segment else {
            close()
            return
        }
        let osName = segment.osName
        var file: (UInt64, UInt64)?
        if let fd = try? segment.duplicateDescriptor() {
            if let status = try? fd.status() { file = (status.device, status.inode) }
            try? fd.close()
        }
        close()
        guard let file else { return }
        let named = try? SharedMemoryObject.status(ofName: osName)
        if named == nil || named!.device != file.0 || named!.inode != file.1 {
            Self.removeHeap(of: channelName, nonce: recorded)
        }
    }

    /// Removes the loan heap of the channel `name` if it is the heap of `nonce`.
    static func removeHeap(of name: String, nonce: UInt64) {
        let heapName = heapName(forChannel: name)
        guard let current = try? HeapSegments.nonce(ofHeap: heapName, trusting: .currentUser), current == nonce else { return }
        try? SharedHeap.remove(name: heapName)
    }

    /// The loan heap nonce recorded in a channel's state, read from a copy (`describe`).
    static func recordedNonce(in state: UnsafeRawBufferPointer) -> UInt64 {
        let offset = fieldOffset(\cipc_channel.loan_heap_nonce)
        guard state.count >= offset + 8 else { return 0 }
        return state.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
    }
}

// MARK: - Loan heaps whose channel is gone (`ipc gc`)

/// Finds the loan heaps of channels that are gone, for `ipc gc`.
package enum ChannelLoanHeaps {
    /// The channel whose loan heap `name` is (`NAME~loans`), or nil for any other name. (A loan heap
    /// of a very long channel name, which ends in a hash, does not tell its channel: nil too.)
    package static func channel(ofLoanHeap name: String) -> String? {
        guard name.hasSuffix(ChannelLoans.suffix) else { return nil }
        let channel = String(name.dropLast(ChannelLoans.suffix.count))
        guard !channel.isEmpty, ChannelLoans.heapName(forChannel: channel) == name else { return nil }
        return channel
    }

    /// Removes (or, with `dryRun`, lists) the loan heaps of trusted owners whose channel is gone:
    /// no segment of the channel's name, a segment of another kind, or a channel that recorded
    /// another loan heap. A channel that recorded none yet keeps a heap of its loan heap's name (a
    /// process may be about to record it).
    package static func collectOrphans(dryRun: Bool, prefix: String, trusting trust: TrustedOwners) -> [SegmentInfo] {
        var removed: [SegmentInfo] = []
        for info in SharedMemory.list() where info.name.hasPrefix(prefix) {
            guard info.kind == SegmentKind.heap.description, info.details["store"] == nil, info.problem == nil,
                  let channel = channel(ofLoanHeap: info.name), trust.trusts(owner: info.owner, group: info.group),
                  let nonce = info.details["nonce"].flatMap({ UInt64($0, radix: 16) })
            else { continue }
            if let owner = try? SharedMemory.info(name: channel) {
                guard owner.kind == SegmentKind.channel.description else {
                    if dryRun || (try? SharedHeap.remove(name: info.name)) != nil { removed.append(info) }
                    continue
                }
                let recorded = owner.details["loanHeapNonce"].flatMap { UInt64($0, radix: 16) } ?? 0
                if recorded == 0 || recorded == nonce { continue }
            }
            if dryRun || (try? SharedHeap.remove(name: info.name)) != nil { removed.append(info) }
        }
        return removed
    }
}
