import CInterprocess
import InterprocessSystem
import Synchronization

// MARK: - Thread caches
//
// Each thread of a process keeps a small cache of free blocks of the quick sizes (payloads up to 480
// bytes), so that its common allocations and frees take no lock and write no journal. See
// ``SharedHeap`` ("Thread caches") for the design and for what a kill at each step leaves behind.

/// One thread's cache as this process keeps it: process memory at a stable address, found through
/// the handle's thread-local slot (`cipc_thread_slot`, one load). Its record (the list heads) is in
/// shared memory; the counts and the tags are the thread's own.
struct CacheSlot {
    /// The handle it belongs to (``HeapCore/coreID``): a thread-local slot that still points at a
    /// slot of a handle that was closed (whose index another handle took) is told apart by it.
    let coreID: UInt64
    /// The most blocks of each size it holds (all 0 for a handle's "no cache" slot).
    let limits: UnsafeMutablePointer<UInt32>
    /// The record block (`CIPC_HEAP_CACHE_RECORD`), as this process addresses it.
    let record: HeapBlock
    /// The record's list heads (`cipc_heap_cache.heads`), in shared memory.
    let heads: UnsafeMutableRawPointer
    /// Cached blocks per size in granules (only the owning thread touches them).
    let counts: UnsafeMutablePointer<UInt32>
    /// This process's client index.
    let client: UInt32
    /// The next tag of the batch taken from the heap's counter, and how many of the batch are left.
    var tag: UInt32 = 0
    var tagsLeft: UInt32 = 0
    /// 1 while a thread owns the slot (or flushes it), 0 once its thread ended: atomic.
    var owned: UInt32 = 1
    /// 1 once its record was given back (the heap was closed): never used again.
    var retired: UInt32 = 0

    /// The place of the head of the list of `size` granules (for journaled writes).
    @inline(__always)
    func head(_ size: Int) -> HeapPlace {
        HeapPlace(pointer: heads + size &* 8, ref: record.ref &+ UInt64(HeapLayout.blockHeaderSize + HeapLayout.cacheHeads + size &* 8))
    }
}

/// A slot's address, to keep in the handle's list of slots.
///
/// `@unchecked Sendable`: the slot is process memory that is never freed; its thread-owned fields are
/// touched only by the thread that owns it (``CacheSlot/owned``, taken with a compare-and-swap), or
/// by whoever flushes it holding both the heap's lock and the ownership.
struct SlotAddress: @unchecked Sendable {
    let slot: UnsafeMutablePointer<CacheSlot>
}

/// The thread-local key's destructor: a thread that ends gives its slot back (the record and its
/// blocks stay, for the next thread of the process that needs a cache).
var releaseCacheSlot: @convention(c) (UnsafeMutableRawPointer?) -> Void { { raw in
    guard let raw else { return }
    let slot = raw.assumingMemoryBound(to: CacheSlot.self)
    withUnsafeMutablePointer(to: &slot.pointee.owned) { owned in
        atomic32(UnsafeMutableRawPointer(owned)).pointee.store(0, ordering: .releasing)
    }
} }

/// The thread-local slot indices (`cipc_thread_slot`) that handles hold, and handle identities.
enum CacheIndices {
    /// Bit i set: index i is taken.
    static let taken = Mutex<UInt64>(0)
    static let nextCoreID = Atomic<UInt64>(1)

    /// A free index, taken; nil if every one is (then the handle caches nothing).
    static func take() -> UInt32? {
        taken.withLock { bits in
            guard bits != ~0 else { return nil }
            let index = (~bits).trailingZeroBitCount
            bits |= 1 << UInt64(index)
            return UInt32(index)
        }
    }

    static func give(_ index: UInt32) {
        taken.withLock { $0 &= ~(1 << UInt64(index)) }
    }
}

extension HeapCore {
    /// Whether a heap of this maximum capacity gets thread caches: below 1 MB, each cache would be a
    /// noticeable share of it.
    static func cachesThreads(maximumCapacity: Int) -> Bool { maximumCapacity >= 1 << 20 }

    /// How many blocks of each quick size one thread's cache holds at most: a budget of 1/256 of
    /// the heap's maximum capacity (4 KB to 256 KB), an eighth of it per size, 1 to 32 blocks.
    static func cacheLimits(maximumCapacity: Int) -> UnsafeMutablePointer<UInt32> {
        let limits = UnsafeMutablePointer<UInt32>.allocate(capacity: Int(HeapLayout.quickLimit))
        let budget = min(max(maximumCapacity / 256, 4096), 256 * 1024)
        for size in 0..<Int(HeapLayout.quickLimit) {
            limits[size] = size < Int(HeapLayout.minimumBlock) ? 0 : UInt32(min(max(budget / (size * HeapLayout.granule) / 8, 1), 32))
        }
        return limits
    }

    // MARK: The fast paths: no lock, no journal

    /// This thread's cache slot, made on first use; nil if this handle has no caches. (A thread
    /// that could not get one has the handle's ``noCache`` slot: nothing in it, no room in it.)
    @inline(__always)
    func threadSlot() -> UnsafeMutablePointer<CacheSlot>? {
        guard let index = cacheIndex else { return nil }
        if let raw = cipc_thread_slot(index) {
            let slot = raw.assumingMemoryBound(to: CacheSlot.self)
            if slot.pointee.coreID == coreID { return slot }
        }
        return acquireSlot(index)
    }

    /// Kills this process if the armed crash point is the `write`th write of a cache `step`.
    @inline(__always)
    func cacheCrashPoint(_ step: HeapStep, _ write: Int) {
        if let crash, crash.step == step, crash.write == write { CrashPoint.crashNow() }
    }

    /// Takes a block of `size` granules (`slack` unused bytes) from this thread's cache; nil if its
    /// list is empty. `corrupt` if the list leads to anything but a block this process cached (the
    /// list is dropped then: its blocks stay cached until the process ends).
    @inline(__always)
    func cachedAllocate(_ slot: UnsafeMutablePointer<CacheSlot>, size: UInt32, slack: UInt32) throws(InterprocessError) -> (UInt64, UnsafeMutableRawPointer)? {
        let count = slot.pointee.counts[Int(size)]
        if count == 0 { return nil }
        let head = slot.pointee.heads + Int(size) &* 8
        let ref = load64(head)
        let client = slot.pointee.client
        // The block, checked: within its store, CACHED by this process, of the list's size.
        let store = Int(truncatingIfNeeded: ref >> HeapLayout.refStoreShift)
        let offset = Int(truncatingIfNeeded: ref & HeapLayout.refOffsetMask)
        guard store < HeapLayout.maximumStores, let view = store == 0 ? base : table.view(store),
              offset >= view.first, offset < view.end, offset & (HeapLayout.granule - 1) == 0
        else { throw dropCacheList(slot, size) }
        let pointer = view.base + offset
        let info = load32(pointer + HeapLayout.blockInfo)
        guard load32(pointer + HeapLayout.blockState) == HeapLayout.cached, load32(pointer + HeapLayout.blockSize) == size,
              info & 0xFF == client, Int(size) <= (view.end &- offset) / HeapLayout.granule
        else { throw dropCacheList(slot, size) }
        // 1: off the list; 2: its info (still CACHED, still ours); 3: in use.
        store64(head, load64(pointer + HeapLayout.freeNext))
        slot.pointee.counts[Int(size)] = count &- 1
        if crash != nil { cacheCrashPoint(.cacheAllocate, 1) }
        store32(pointer + HeapLayout.blockInfo, client | slack << 8)
        if crash != nil { cacheCrashPoint(.cacheAllocate, 2) }
        let tag = cacheTag(slot, avoiding: info >> 8)
        store32(pointer + HeapLayout.blockState, HeapLayout.inUse | tag)
        if crash != nil { cacheCrashPoint(.cacheAllocate, 3) }
        return (HeapLayout.pointerWord(store: store, blockOffset: offset, tag: tag), pointer + HeapLayout.blockHeaderSize)
    }

    /// Puts the live block of `word` into this thread's cache if it is of a cached size and the
    /// cache has room for it; false otherwise (and for anything that is not a live block of this
    /// heap: the locked path then says what is wrong with it).
    @inline(__always)
    func cachedFree(_ slot: UnsafeMutablePointer<CacheSlot>, _ word: UInt64) -> Bool {
        let tag = UInt32(truncatingIfNeeded: word >> HeapLayout.pointerTagShift)
        let store = Int((word >> HeapLayout.pointerStoreShift) & HeapLayout.pointerStoreMask)
        let offset = Int(word & HeapLayout.pointerGranuleMask) &* HeapLayout.granule &- HeapLayout.blockHeaderSize
        guard tag != 0, let view = store == 0 ? base : table.view(store), offset >= view.first, offset < view.end else { return false }
        let pointer = view.base + offset
        let size = load32(pointer + HeapLayout.blockSize)
        guard load32(pointer + HeapLayout.blockState) == HeapLayout.inUse | tag, size < HeapLayout.quickLimit,
              size >= HeapLayout.minimumBlock, Int(size) <= (view.end &- offset) / HeapLayout.granule
        else { return false }
        let count = slot.pointee.counts[Int(size)]
        guard count < slot.pointee.limits[Int(size)] else { return false }
        let client = slot.pointee.client
        let head = slot.pointee.heads + Int(size) &* 8
        // 1: ours (still in use); 2: CACHED; 3: its last tag kept; 4: linked; 5: on the list.
        store32(pointer + HeapLayout.blockInfo, client | (load32(pointer + HeapLayout.blockInfo) & 0xFF00))
        if crash != nil { cacheCrashPoint(.cacheFree, 1) }
        store32(pointer + HeapLayout.blockState, HeapLayout.cached)
        if crash != nil { cacheCrashPoint(.cacheFree, 2) }
        store32(pointer + HeapLayout.blockInfo, client | tag << 8)
        if crash != nil { cacheCrashPoint(.cacheFree, 3) }
        store64(pointer + HeapLayout.freeNext, load64(head))
        if crash != nil { cacheCrashPoint(.cacheFree, 4) }
        store64(head, HeapLayout.ref(store: store, offset: offset))
        slot.pointee.counts[Int(size)] = count &+ 1
        if crash != nil { cacheCrashPoint(.cacheFree, 5) }
        return true
    }

    /// The next tag of this thread: batches of 64 taken from the heap's counter (one shared write
    /// per 64 allocations), never 0 and never `previous`.
    @inline(__always)
    func cacheTag(_ slot: UnsafeMutablePointer<CacheSlot>, avoiding previous: UInt32) -> UInt32 {
        while true {
            if slot.pointee.tagsLeft == 0 {
                slot.pointee.tag = atomic32(nextTagWord).pointee.wrappingAdd(64, ordering: .relaxed).oldValue
                slot.pointee.tagsLeft = 64
            }
            let tag = slot.pointee.tag & HeapLayout.tagMask
            slot.pointee.tag &+= 1
            slot.pointee.tagsLeft &-= 1
            if tag != 0 && tag != previous & HeapLayout.tagMask { return tag }
        }
    }

    /// Empties this thread's list of `size` granules after it led somewhere wrong (a peer wrote
    /// over the record or a block): its blocks stay cached, attributed to this process, until it ends.
    @inline(never)
    func dropCacheList(_ slot: UnsafeMutablePointer<CacheSlot>, _ size: UInt32) -> InterprocessError {
        store64(slot.pointee.heads + Int(size) * 8, 0)
        slot.pointee.counts[Int(size)] = 0
        return corrupt("the cache of \(size)-granule blocks of this process leads to something that is not a block it cached; the cache list was dropped")
    }

    // MARK: Slots

    /// Gives this thread a slot: one whose thread ended, or a new one with a new record; the
    /// handle's ``noCache`` slot if it cannot (then the thread uses the lock for everything).
    @inline(never)
    func acquireSlot(_ index: UInt32) -> UnsafeMutablePointer<CacheSlot>? {
        if isClosed { return nil }
        guard client != 0, let key = cacheKey else {
            cipc_set_thread_slot(index, UnsafeMutableRawPointer(noCache))
            return noCache
        }
        let reused = cacheSlots.withLock { slots -> SlotAddress? in
            for address in slots where address.slot.pointee.retired == 0
                && ownedWord(address.slot).pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
                return address
            }
            return nil
        }?.slot
        if let reused {
            key.set(UnsafeMutableRawPointer(reused))
            cipc_set_thread_slot(index, UnsafeMutableRawPointer(reused))
            return reused
        }
        let record: HeapBlock?
        do {
            record = try withLock(.cacheCreate) { (op: inout HeapOperation) throws(InterprocessError) in try createCacheRecord(&op) }
        } catch {
            record = nil
        }
        guard let record else {
            cipc_set_thread_slot(index, UnsafeMutableRawPointer(noCache))
            return noCache
        }
        let slot = Self.makeSlot(coreID: coreID, limits: cacheLimits, record: record, client: client)
        let kept = cacheSlots.withLock { slots -> Bool in
            if isClosed { return false }
            slots.append(SlotAddress(slot: slot))
            return true
        }
        guard kept else {
            // Closed meanwhile: its record goes back at once.
            _ = try? withLock(.cacheFlush, evenIfClosed: true) { (op: inout HeapOperation) throws(InterprocessError) in try flushCache(slot, releasingRecord: true, &op) }
            return nil
        }
        key.set(UnsafeMutableRawPointer(slot))
        cipc_set_thread_slot(index, UnsafeMutableRawPointer(slot))
        return slot
    }

    /// A new slot (never freed: see ``closeCaches()``).
    static func makeSlot(coreID: UInt64, limits: UnsafeMutablePointer<UInt32>, record: HeapBlock, client: UInt32) -> UnsafeMutablePointer<CacheSlot> {
        let slot = UnsafeMutablePointer<CacheSlot>.allocate(capacity: 1)
        let counts = UnsafeMutablePointer<UInt32>.allocate(capacity: Int(HeapLayout.quickLimit))
        counts.initialize(repeating: 0, count: Int(HeapLayout.quickLimit))
        slot.initialize(to: CacheSlot(
            coreID: coreID, limits: limits, record: record, heads: record.pointer + HeapLayout.blockHeaderSize + HeapLayout.cacheHeads,
            counts: counts, client: client))
        return slot
    }

    /// A handle's "no cache" slot: empty, no room, no record (its record field names store 0's
    /// first byte, never used).
    static func makeEmptySlot(coreID: UInt64, base: StoreView) -> UnsafeMutablePointer<CacheSlot> {
        let limits = UnsafeMutablePointer<UInt32>.allocate(capacity: Int(HeapLayout.quickLimit))
        limits.initialize(repeating: 0, count: Int(HeapLayout.quickLimit))
        let slot = makeSlot(coreID: coreID, limits: limits, record: HeapBlock(store: 0, offset: 0, pointer: base.base, limit: 0), client: 0)
        slot.pointee.retired = 1
        return slot
    }

    func ownedWord(_ slot: UnsafeMutablePointer<CacheSlot>) -> UnsafeMutablePointer<Atomic<UInt32>> {
        atomic32(UnsafeMutableRawPointer(slot) + MemoryLayout<CacheSlot>.offset(of: \CacheSlot.owned)!)
    }

    /// Allocates a cache record for this process (under the lock): a block marked
    /// `CIPC_HEAP_CACHE_RECORD`, its lists empty, counted in the client record. Nil if there is no room.
    func createCacheRecord(_ op: inout HeapOperation) throws(InterprocessError) -> HeapBlock? {
        op.pinned = .cacheCreate
        defer { op.pinned = nil }
        guard let (_, block) = try allocateLocked(granules: HeapLayout.cacheRecordGranules, slack: 0, alignment: HeapLayout.granule, &op) else {
            return nil
        }
        op.step = .cacheCreate
        op.set32(block.field(HeapLayout.blockState), HeapLayout.cacheRecord)
        op.set32(block.field(HeapLayout.blockInfo), client)
        // The heads of sizes 0 and 1 (no block is that small) overlap a free block's links, which
        // the journal restores if this is undone; the others are payload nobody reads until then.
        let heads = block.pointer + HeapLayout.blockHeaderSize + HeapLayout.cacheHeads
        for size in Int(HeapLayout.minimumBlock)..<Int(HeapLayout.quickLimit) { store64(heads + size * 8, 0) }
        let caches = clientCachesPlace(Int(client))
        op.set32(caches, load32(caches.pointer) &+ 1)
        return block
    }

    @inline(__always)
    func clientCachesPlace(_ index: Int) -> HeapPlace {
        headerPlace(HeapLayout.heapClients + index * HeapLayout.clientStride + HeapLayout.clientCaches)
    }

    // MARK: Flushing and reclaiming (under the lock, journaled)

    /// Returns every block of `slot`'s lists to the free lists (merged), one journaled operation per
    /// block, and with `releasingRecord` the record too. A list that leads somewhere wrong is dropped
    /// (its blocks stay cached, attributed to this process). Returns whether any block went back.
    @discardableResult
    func flushCache(_ slot: UnsafeMutablePointer<CacheSlot>, releasingRecord: Bool, _ op: inout HeapOperation) throws(InterprocessError) -> Bool {
        op.commit()
        let saved = op.step
        op.step = .cacheFlush
        defer { op.step = saved }
        var any = false
        let limit = stepLimit
        let client = slot.pointee.client
        for size in Int(HeapLayout.minimumBlock)..<Int(HeapLayout.quickLimit) {
            let head = slot.pointee.head(size)
            var steps = 0
            while true {
                let ref = load64(head.pointer)
                if ref == 0 { break }
                steps += 1
                guard steps <= limit, let block = try? locate(ref), block.state == HeapLayout.cached, block.size == UInt32(size),
                      block.info & 0xFF == client
                else {
                    op.set64(head, 0)
                    op.commit()
                    break
                }
                op.set64(head, block.next)
                try release(block, size: UInt32(size), lastTag: block.info >> 8, &op)
                op.commit()
                any = true
            }
            slot.pointee.counts[size] = 0
        }
        if releasingRecord {
            let record = slot.pointee.record
            if record.state == HeapLayout.cacheRecord && record.info & 0xFF == client {
                try release(record, size: try checkedSize(record), lastTag: 0, &op)
                let caches = clientCachesPlace(Int(client))
                let count = load32(caches.pointer)
                op.set32(caches, count == 0 ? 0 : count - 1)
            }
            op.commit()
            slot.pointee.retired = 1
        }
        return any
    }

    /// Flushes the calling thread's cache and those of the process's ended threads (under the
    /// lock): what an allocation that finds no fit does before it consolidates. The caches of the
    /// process's other live threads are theirs alone.
    func flushOwnCaches(_ op: inout HeapOperation) throws(InterprocessError) -> Bool {
        guard let index = cacheIndex else { return false }
        var any = false
        if let raw = cipc_thread_slot(index) {
            let slot = raw.assumingMemoryBound(to: CacheSlot.self)
            if slot.pointee.coreID == coreID && slot.pointee.retired == 0 { any = try flushCache(slot, releasingRecord: false, &op) }
        }
        let idle = cacheSlots.withLock { slots in
            slots.filter { $0.slot.pointee.retired == 0 && ownedWord($0.slot).pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged }
        }.map(\.slot)
        defer { for slot in idle { ownedWord(slot).pointee.store(0, ordering: .releasing) } }
        for slot in idle where try flushCache(slot, releasingRecord: false, &op) { any = true }
        return any
    }

    /// Returns the cached blocks and cache records of processes that ended to the free lists (under
    /// the lock): found by their state and client, never through the dead caches' lists. One
    /// journaled operation per block; if one fails (`corrupt`), it is undone and the error thrown.
    /// Returns whether any block went back.
    @discardableResult
    func reclaimDeadCaches(_ op: inout HeapOperation) throws(InterprocessError) -> Bool {
        var dead = [Bool](repeating: false, count: HeapLayout.clientCount)
        var anyDead = false
        for index in 1..<HeapLayout.clientCount where load32(clientCachesPlace(index).pointer) != 0 {
            let token = load64(clientRecord(index) + HeapLayout.clientToken)
            if token == 0 || !lease.isAlive(token) {
                dead[index] = true
                anyDead = true
            }
        }
        guard anyDead else { return false }
        op.commit()
        let saved = op.step
        op.step = .cacheReclaim
        defer { op.step = saved }
        var found: [UInt64] = []
        try walkBlocks { block, _, state in
            // (The walk checked that a cached block's or a record's owner is a client record.)
            if (state == HeapLayout.cached || state == HeapLayout.cacheRecord) && dead[Int(block.info & 0xFF)] { found.append(block.ref) }
        }
        do throws(InterprocessError) {
            for ref in found {
                let block = try locate(ref)
                let state = block.state
                guard state == HeapLayout.cached || state == HeapLayout.cacheRecord, let owner = Self.clientIndex(block.info), dead[owner] else { continue }
                try release(block, size: try checkedSize(block), lastTag: state == HeapLayout.cached ? block.info >> 8 : 0, &op)
                op.commit()
            }
            for index in 1..<HeapLayout.clientCount where dead[index] { op.set32(clientCachesPlace(index), 0) }
            op.commit()
        } catch {
            try? undoJournal()
            op.count = 0
            throw error
        }
        return !found.isEmpty
    }

    /// Gives back every cache of this handle (``SharedHeap/close()``): its blocks and records return
    /// to the free lists, the thread-local key and slot index go.
    func closeCaches() {
        guard let index = cacheIndex else { return }
        let slots = cacheSlots.withLock { slots in
            defer { slots = [] }
            return slots
        }.map(\.slot)
        for slot in slots {
            _ = try? withLock(.cacheFlush, evenIfClosed: true) { (op: inout HeapOperation) throws(InterprocessError) in
                try flushCache(slot, releasingRecord: true, &op)
            }
            slot.pointee.retired = 1
        }
        // The slots themselves stay allocated: a thread that ends later may still run the key's
        // destructor on one, and a thread-local slot may still point at one (it tells by the
        // coreID): a few dozen bytes per thread that used this handle.
        cacheKey?.delete()
        CacheIndices.give(index)
    }
}
