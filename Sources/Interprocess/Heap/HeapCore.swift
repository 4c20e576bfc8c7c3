import CInterprocess
import InterprocessSystem
import Synchronization

/// A block of the heap as this process addresses it: where it is, and the bounds of its store
/// (from the process's own view, never from shared memory).
struct HeapBlock {
    let store: Int
    let offset: Int
    let pointer: UnsafeMutableRawPointer
    /// The offset of the store's end marker: no block reaches past it.
    let limit: Int

    @inline(__always) var ref: UInt64 { HeapLayout.ref(store: store, offset: offset) }
    @inline(__always) var prevSize: UInt32 { load32(pointer + HeapLayout.blockPrevSize) }
    @inline(__always) var size: UInt32 { load32(pointer + HeapLayout.blockSize) }
    @inline(__always) var state: UInt32 { load32(pointer + HeapLayout.blockState) }
    @inline(__always) var info: UInt32 { load32(pointer + HeapLayout.blockInfo) }
    @inline(__always) var next: UInt64 { load64(pointer + HeapLayout.freeNext) }
    @inline(__always) var prev: UInt64 { load64(pointer + HeapLayout.freePrev) }
    @inline(__always) var isEndMarker: Bool { offset == limit }

    /// The field at `field` bytes into the block: its address and its reference.
    @inline(__always)
    func field(_ field: Int) -> HeapPlace { HeapPlace(pointer: pointer + field, ref: ref &+ UInt64(field)) }

    /// The block `granules` further on (the caller checked that it lies within the store).
    @inline(__always)
    func advanced(by granules: UInt32) -> HeapBlock {
        let distance = Int(granules) &* HeapLayout.granule
        return HeapBlock(store: store, offset: offset &+ distance, pointer: pointer + distance, limit: limit)
    }
}

/// A word of the heap's metadata: its address in this process and its reference (for the journal).
struct HeapPlace {
    let pointer: UnsafeMutableRawPointer
    let ref: UInt64
}

/// The steps of the heap's operations that a test can kill a process at: `INTERPROCESS_CRASH_POINT=
/// heap.LABEL#N` SIGKILLs the process right after the Nth journaled write of an operation of that
/// label, `heap.LABEL#end` after its last write, before the journal is cleared. The cache's
/// lock-free steps (`cache-allocate`, `cache-free`) count their plain writes instead, and have no end.
enum HeapStep: String, CaseIterable, Sendable {
    case allocate = "allocate"             // from a quick list
    case allocateSplit = "allocate-split"  // from the free lists, splitting the block
    case free = "free"                     // onto a quick list
    case freeMerge = "free-merge"          // merging with free neighbours
    case reallocate = "reallocate"         // in place
    case consolidate = "consolidate"       // one quick block merged back
    case grow = "grow"                     // a new store published
    case claim = "claim"                   // a client record taken
    case findOrCreate = "find-or-create"   // a named object created (HeapDirectory.swift)
    case destroy = "destroy"               // a named object destroyed
    case adopt = "adopt"                   // a block's owner recorded as the adopting process
    case cacheAllocate = "cache-allocate"  // from this thread's cache (no lock, no journal)
    case cacheFree = "cache-free"          // into this thread's cache (no lock, no journal)
    case cacheCreate = "cache-create"      // a cache record made
    case cacheFlush = "cache-flush"        // one cached block (or a record) given back
    case cacheReclaim = "cache-reclaim"    // one block of a dead process's cache given back
    case recycle = "recycle"               // client records of ended processes recycled (HeapRecycle.swift):
                                           // counts every write of the pass, re-tags then releases
}

/// The undo journal of the operation in progress (see `cipc_heap_journal`). Every write to the
/// heap's metadata goes through it: the old value is recorded, the count published, and only then
/// is the word written.
struct HeapOperation: ~Copyable {
    let entries: UnsafeMutableRawPointer
    let countWord: UnsafeMutableRawPointer
    var count = 0
    var step: HeapStep
    /// The label of an operation made of other operations' steps (a named object's creation
    /// allocates): crash points count all its writes under this label. Nil: `step`.
    var pinned: HeapStep? = nil
    /// The armed crash point of this process, parsed once (nil: none; the usual case).
    let crash: (step: HeapStep, write: Int?)?

    @inline(__always)
    mutating func set32(_ place: HeapPlace, _ value: UInt32) {
        let old = load32(place.pointer)
        if old == value { return }
        record(place.ref | 4 << HeapLayout.widthShift, UInt64(old))
        store32(place.pointer, value)
        if crash != nil { crashIfArmed(atEnd: false) }
    }

    @inline(__always)
    mutating func set64(_ place: HeapPlace, _ value: UInt64) {
        let old = load64(place.pointer)
        if old == value { return }
        record(place.ref | 8 << HeapLayout.widthShift, old)
        store64(place.pointer, value)
        if crash != nil { crashIfArmed(atEnd: false) }
    }

    /// Records the word at `place` so that an undo restores it, without changing it: for a word
    /// that a later write outside the journal changes (the link a block freed onto a quick list
    /// keeps in its payload), when undoing must bring its old value back.
    mutating func preserve64(_ place: HeapPlace) {
        record(place.ref | 8 << HeapLayout.widthShift, load64(place.pointer))
        if crash != nil { crashIfArmed(atEnd: false) }
    }

    @inline(__always)
    private mutating func record(_ target: UInt64, _ old: UInt64) {
        precondition(count < HeapLayout.journalCapacity, "a heap operation outgrew its journal")
        let entry = entries + count &* HeapLayout.entryStride
        store64(entry + HeapLayout.entryTarget, target)
        store64(entry + HeapLayout.entryOldValue, old)
        count &+= 1
        // The record before the count, the count before the write.
        atomic32(countWord).pointee.store(UInt32(truncatingIfNeeded: count), ordering: .releasing)
        atomicMemoryFence(ordering: .releasing)
    }

    /// Ends the operation: its writes stand.
    @inline(__always)
    mutating func commit() {
        guard count > 0 else { return }
        if crash != nil { crashIfArmed(atEnd: true) }
        atomic32(countWord).pointee.store(0, ordering: .releasing)
        count = 0
    }

    private func crashIfArmed(atEnd: Bool) {
        guard let crash, crash.step == (pinned ?? step) else { return }
        if atEnd ? crash.write == nil : crash.write == count { CrashPoint.crashNow() }
    }

    /// `heap.LABEL#N` / `heap.LABEL#end` from `INTERPROCESS_CRASH_POINT`.
    static let armedCrash: (step: HeapStep, write: Int?)? = {
        guard let name = CrashPoint.armedCrashName, name.hasPrefix("heap."), let hash = name.firstIndex(of: "#") else { return nil }
        guard let step = HeapStep(rawValue: String(name[name.index(name.startIndex, offsetBy: 5)..<hash])) else { return nil }
        let suffix = name[name.index(after: hash)...]
        if suffix == "end" { return (step, nil) }
        guard let write = Int(suffix), write > 0 else { return nil }
        return (step, write)
    }()
}

/// The allocator: everything the heap does to its shared memory, under its robust lock — but the
/// lock-free steps of the threads' caches (`HeapCache.swift`). It knows nothing of how stores are
/// created or found (``HeapStoreProvider``).
///
/// `@unchecked Sendable`: its pointers point into mappings that `table` and `provider` keep alive;
/// every shared word is read and written atomically, and changed only under `lock`.
final class HeapCore: @unchecked Sendable {
    let name: String
    let header: UnsafeMutableRawPointer
    let lock: ProcessMutex
    let lease: OwnerLease
    let table = StoreTable()
    let provider: any HeapStoreProvider
    let nonce: UInt64
    let maximumCapacity: Int
    let growthSize: Int
    /// Store 0, always mapped.
    let base: StoreView
    /// This process's client record (0 if it found none).
    private(set) var client: UInt32 = 0
    private let closedFlag = Atomic<Bool>(false)
    /// This handle's index among the thread-local slots (nil: no thread caches: the heap is too
    /// small for them, or the process has 64 handles that cache), its identity, and the
    /// thread-local key whose destructor gives a slot back when its thread ends.
    let cacheIndex: UInt32?
    let coreID: UInt64
    let cacheKey: ThreadLocalKey?
    /// What a thread that cannot have a cache with this handle finds in its thread-local slot.
    let noCache: UnsafeMutablePointer<CacheSlot>
    /// The most blocks of each quick size that one thread's cache holds.
    let cacheLimits: UnsafeMutablePointer<UInt32>
    /// Every thread cache of this handle.
    let cacheSlots = Mutex<[SlotAddress]>([])

    // Words of the heap header, computed once.
    let quickHeads: UnsafeMutableRawPointer
    let heads: UnsafeMutableRawPointer
    let bitmap: UnsafeMutableRawPointer
    let storeCountWord: UnsafeMutableRawPointer
    let nextTagWord: UnsafeMutableRawPointer
    let journalEntries: UnsafeMutableRawPointer
    let journalCount: UnsafeMutableRawPointer
    let crash = HeapOperation.armedCrash

    /// Builds the allocator on store 0 (mapped and validated by the caller) and claims a client
    /// record for this process.
    init(name: String, base: MappedStore, lock: ProcessMutex, lease: OwnerLease, provider: any HeapStoreProvider) throws(InterprocessError) {
        self.name = name
        self.base = base.view
        self.lock = lock
        self.lease = lease
        self.provider = provider
        header = base.view.base + HeapLayout.headerOffset
        nonce = load64(header + HeapLayout.heapNonce)
        maximumCapacity = Int(truncatingIfNeeded: load64(header + HeapLayout.heapMaximumCapacity))
        growthSize = Int(truncatingIfNeeded: load64(header + HeapLayout.heapGrowthSize))
        quickHeads = header + HeapLayout.heapQuickHeads
        heads = header + HeapLayout.heapHeads
        bitmap = header + HeapLayout.heapClassBitmap
        storeCountWord = header + HeapLayout.heapStoreCount
        nextTagWord = header + HeapLayout.heapNextTag
        journalEntries = header + HeapLayout.heapJournal + HeapLayout.journalEntries
        journalCount = header + HeapLayout.heapJournal + HeapLayout.journalCount
        coreID = CacheIndices.nextCoreID.wrappingAdd(1, ordering: .relaxed).oldValue
        let key = Self.cachesThreads(maximumCapacity: maximumCapacity) ? ThreadLocalKey.make(destructor: releaseCacheSlot) : nil
        let index = key == nil ? nil : CacheIndices.take()
        if index == nil { key?.delete() }
        cacheKey = index == nil ? nil : key
        cacheIndex = index
        cacheLimits = Self.cacheLimits(maximumCapacity: maximumCapacity)
        noCache = Self.makeEmptySlot(coreID: coreID, base: base.view)
        _ = try table.map(0) { () throws(InterprocessError) in base }
        client = try withLock(.claim) { (op: inout HeapOperation) throws(InterprocessError) in try claimClient(&op) }
    }

    deinit {
        if !isClosed {  // else closeCaches() did
            cacheKey?.delete()
            if let cacheIndex { CacheIndices.give(cacheIndex) }
        }
        cacheLimits.deallocate()
    }

    @inline(__always)
    var isClosed: Bool { closedFlag.load(ordering: .relaxed) }

    func markClosed() { closedFlag.store(true, ordering: .relaxed) }

    // MARK: Errors

    func corrupt(_ detail: String) -> InterprocessError {
        InterprocessError(.corrupt, objectName: name, detail: detail)
    }

    func invalidPointer(_ word: UInt64, _ detail: String) -> InterprocessError {
        InterprocessError(.invalidPointer, objectName: name, detail: "0x\(String(word, radix: 16)): \(detail)")
    }

    // MARK: Places in the heap header

    @inline(__always)
    func headerPlace(_ field: Int) -> HeapPlace {
        HeapPlace(pointer: header + field, ref: UInt64(HeapLayout.headerOffset + field))
    }

    @inline(__always) func quickHead(_ size: UInt32) -> HeapPlace { headerPlace(HeapLayout.heapQuickHeads + Int(size) * 8) }
    @inline(__always) func head(_ sizeClass: Int) -> HeapPlace { headerPlace(HeapLayout.heapHeads + sizeClass * 8) }
    @inline(__always) func bitmapWord(_ sizeClass: Int) -> HeapPlace { headerPlace(HeapLayout.heapClassBitmap + (sizeClass >> 6) * 8) }

    /// Published stores (at most ``HeapLayout/maximumStores``, whatever a peer wrote).
    @inline(__always)
    var storeCount: Int { min(Int(atomic32(storeCountWord).pointee.load(ordering: .acquiring)), HeapLayout.maximumStores) }

    // MARK: Locking

    /// Runs `body` holding the heap's lock, as one operation: if `body` throws, every write it made
    /// is undone before the lock is released. A dead holder's operation is undone first.
    @inline(__always)
    func withLock<R>(
        _ step: HeapStep, evenIfClosed: Bool = false, _ body: (inout HeapOperation) throws(InterprocessError) -> R
    ) throws(InterprocessError) -> R {
        if !evenIfClosed && closedFlag.load(ordering: .relaxed) {
            throw InterprocessError(.closed, objectName: name, detail: "the heap was closed")
        }
        if try lock.blockingLock() != .acquired { try recoverLocked() }
        var op = HeapOperation(entries: journalEntries, countWord: journalCount, step: step, crash: crash)
        do {
            let result = try body(&op)
            op.commit()
            try? lock.unlock()
            return result
        } catch {
            op.count = 0
            try? undoJournal()
            try? lock.unlock()
            throw error
        }
    }

    /// After a holder died: undoes its operation, counts the recovery and marks the lock consistent.
    /// If the journal is damaged the lock stays inconsistent and the error is thrown (to every later
    /// caller too): the heap is corrupt.
    private func recoverLocked() throws(InterprocessError) {
        do {
            try undoJournal()
        } catch {
            try? lock.unlock()
            throw error
        }
        atomic64(header + HeapLayout.heapRecoveries).pointee.wrappingAdd(1, ordering: .relaxed)
        lock.markConsistent()
    }

    /// Restores the values the journal recorded, newest first, and clears it. Every record is checked
    /// before any is applied: a damaged journal changes nothing and is `corrupt`.
    func undoJournal() throws(InterprocessError) {
        let count = Int(atomic32(journalCount).pointee.load(ordering: .acquiring))
        if count == 0 { return }
        guard count <= HeapLayout.journalCapacity else { throw corrupt("the journal claims \(count) records") }
        let stores = storeCount
        var writes: [(UnsafeMutableRawPointer, Int, UInt64)] = []
        writes.reserveCapacity(count)
        for index in 0..<count {
            let entry = journalEntries + index * HeapLayout.entryStride
            let target = load64(entry + HeapLayout.entryTarget)
            let old = load64(entry + HeapLayout.entryOldValue)
            let width = Int(target >> HeapLayout.widthShift)
            let ref = target & ((1 << HeapLayout.widthShift) - 1)
            let store = Int(ref >> HeapLayout.refStoreShift)
            let offset = Int(ref & HeapLayout.refOffsetMask)
            guard width == 4 || width == 8, offset % width == 0, store < stores, width == 8 || old <= UInt64(UInt32.max) else {
                throw corrupt("journal record \(index) is damaged (target 0x\(String(target, radix: 16)))")
            }
            let view = try self.view(store)
            guard offset + width <= view.size else { throw corrupt("journal record \(index) points past store \(store)") }
            writes.append((view.base + offset, width, old))
        }
        for (pointer, width, old) in writes.reversed() {
            if width == 8 { store64(pointer, old) } else { store32(pointer, UInt32(truncatingIfNeeded: old)) }
        }
        atomic32(journalCount).pointee.store(0, ordering: .releasing)
    }

    // MARK: Stores and blocks

    /// This process's view of store `index` (mapped on first use; the store must be published).
    @inline(__always)
    func view(_ index: Int) throws(InterprocessError) -> StoreView {
        if index == 0 { return base }
        if let view = table.view(index) { return view }
        return try mapStore(index)
    }

    @inline(never)
    private func mapStore(_ index: Int) throws(InterprocessError) -> StoreView {
        guard index < storeCount else { throw corrupt("a reference to store \(index); the heap has \(storeCount)") }
        return try table.map(index) { () throws(InterprocessError) in try provider.mapStore(index) }
    }

    /// The block at `ref`, checked to lie within its store; its fields are not checked yet.
    @inline(__always)
    func locate(_ ref: UInt64) throws(InterprocessError) -> HeapBlock {
        let store = Int(ref >> HeapLayout.refStoreShift)
        let offset = Int(ref & HeapLayout.refOffsetMask)
        guard store < HeapLayout.maximumStores else { throw corrupt("a reference to store \(store)") }
        let view = try view(store)
        guard offset >= view.first, offset < view.end, offset & (HeapLayout.granule - 1) == 0 else {
            throw corrupt("a reference to offset \(offset) of store \(store), outside its blocks")
        }
        return HeapBlock(store: store, offset: offset, pointer: view.base + offset, limit: view.end)
    }

    /// The size of `block`, checked: at least the minimum, and within its store.
    @inline(__always)
    func checkedSize(_ block: HeapBlock) throws(InterprocessError) -> UInt32 {
        let size = block.size
        guard size >= HeapLayout.minimumBlock, Int(size) <= (block.limit &- block.offset) / HeapLayout.granule else {
            throw corrupt("block at \(block.offset) of store \(block.store) has size \(size)")
        }
        return size
    }

    /// The size of a FREE block on a list, checked (state, size, and no free block before it).
    @inline(__always)
    func freeSize(_ block: HeapBlock) throws(InterprocessError) -> UInt32 {
        guard block.state == HeapLayout.free, block.prevSize == 0 else {
            throw corrupt("block at \(block.offset) of store \(block.store) is on a free list but not a merged free block")
        }
        return try checkedSize(block)
    }

    /// The block after `block` (of `size` granules, checked): a block or the end marker.
    @inline(__always)
    func following(_ block: HeapBlock, size: UInt32) throws(InterprocessError) -> HeapBlock {
        let next = block.advanced(by: size)
        if next.isEndMarker {
            guard next.state == HeapLayout.end else { throw corrupt("the end marker of store \(block.store) was overwritten") }
        }
        return next
    }

    // MARK: Free lists

    /// Takes `block` (FREE, `size` granules) off its class's list.
    func unlinkFree(_ block: HeapBlock, size: UInt32, _ op: inout HeapOperation) throws(InterprocessError) {
        let sizeClass = HeapLayout.sizeClass(size)
        let next = block.next
        let prev = block.prev
        if prev == 0 {
            guard load64(head(sizeClass).pointer) == block.ref else {
                throw corrupt("free block at \(block.offset) of store \(block.store) has no predecessor but does not head its list")
            }
            op.set64(head(sizeClass), next)
            if next == 0 {
                let word = bitmapWord(sizeClass)
                op.set64(word, load64(word.pointer) & ~(1 << UInt64(sizeClass & 63)))
            }
        } else {
            let before = try locate(prev)
            guard try freeSize(before) >= 0, HeapLayout.sizeClass(before.size) == sizeClass, before.next == block.ref else {
                throw corrupt("the free list of class \(sizeClass) is broken at \(before.offset) of store \(before.store)")
            }
            op.set64(before.field(HeapLayout.freeNext), next)
        }
        if next != 0 {
            let after = try locate(next)
            guard try freeSize(after) >= 0, HeapLayout.sizeClass(after.size) == sizeClass, after.prev == block.ref else {
                throw corrupt("the free list of class \(sizeClass) is broken at \(after.offset) of store \(after.store)")
            }
            op.set64(after.field(HeapLayout.freePrev), prev)
        }
    }

    /// Puts `block` (its header already FREE with `size` granules) at the head of its class's list.
    func pushFree(_ block: HeapBlock, size: UInt32, _ op: inout HeapOperation) throws(InterprocessError) {
        let sizeClass = HeapLayout.sizeClass(size)
        let place = head(sizeClass)
        let first = load64(place.pointer)
        if first != 0 {
            let old = try locate(first)
            guard old.state == HeapLayout.free, old.prev == 0 else {
                throw corrupt("the head of the free list of class \(sizeClass) is not a free block")
            }
            op.set64(old.field(HeapLayout.freePrev), block.ref)
        } else {
            let word = bitmapWord(sizeClass)
            op.set64(word, load64(word.pointer) | 1 << UInt64(sizeClass & 63))
        }
        op.set64(block.field(HeapLayout.freeNext), first)
        op.set64(block.field(HeapLayout.freePrev), 0)
        op.set64(place, block.ref)
    }

    /// The first class at or above `from` whose list is not empty.
    @inline(__always)
    func firstNonEmptyClass(from: Int) -> Int? {
        guard from < HeapLayout.classCount else { return nil }
        var word = from >> 6
        var bits = load64(bitmap + word * 8) & (~0 << UInt64(from & 63))
        while true {
            if bits != 0 {
                let found = word * 64 + bits.trailingZeroBitCount
                return found < HeapLayout.classCount ? found : nil
            }
            word += 1
            if word == 4 { return nil }
            bits = load64(bitmap + word * 8)
        }
    }

    /// How many steps a walk along a list may take before it must have met a cycle.
    var stepLimit: Int { Int(truncatingIfNeeded: load64(header + HeapLayout.heapCapacity)) / (Int(HeapLayout.minimumBlock) * HeapLayout.granule) + 1 }

    /// Takes a FREE block of at least `want` granules off the lists; nil if there is none.
    func takeFree(_ want: UInt32, _ op: inout HeapOperation) throws(InterprocessError) -> (HeapBlock, UInt32)? {
        if let sizeClass = firstNonEmptyClass(from: HeapLayout.searchClass(want)) {
            let first = load64(head(sizeClass).pointer)
            guard first != 0 else { throw corrupt("class \(sizeClass) is marked non-empty but its list is empty") }
            let block = try locate(first)
            let size = try freeSize(block)
            guard HeapLayout.sizeClass(size) == sizeClass, size >= want else {
                throw corrupt("a block of \(size) granules heads the list of class \(sizeClass)")
            }
            try unlinkFree(block, size: size, &op)
            return (block, size)
        }
        // The class that contains `want` holds blocks both smaller and larger: look for one that fits.
        let sizeClass = HeapLayout.sizeClass(want)
        guard want >= HeapLayout.quickLimit, load64(bitmapWord(sizeClass).pointer) & (1 << UInt64(sizeClass & 63)) != 0 else { return nil }
        var ref = load64(head(sizeClass).pointer)
        var steps = 0
        let limit = stepLimit
        while ref != 0 {
            steps += 1
            guard steps <= limit else { throw corrupt("the free list of class \(sizeClass) has a cycle") }
            let block = try locate(ref)
            let size = try freeSize(block)
            guard HeapLayout.sizeClass(size) == sizeClass else { throw corrupt("a block of \(size) granules is on the list of class \(sizeClass)") }
            if size >= want {
                try unlinkFree(block, size: size, &op)
                return (block, size)
            }
            ref = block.next
        }
        return nil
    }

    // MARK: Allocation

    /// The tag of the next allocation: the hint in the header, never 0 and never `previous`.
    @inline(__always)
    func nextTag(avoiding previous: UInt32) -> UInt32 {
        var tag = load32(nextTagWord) & HeapLayout.tagMask
        while tag == 0 || tag == previous & HeapLayout.tagMask { tag = (tag &+ 1) & HeapLayout.tagMask }
        store32(nextTagWord, tag &+ 1) // a hint: not journaled
        return tag
    }

    /// Marks `block` in use by this process, with `slack` unused bytes; returns its pointer word.
    @inline(__always)
    func markInUse(_ block: HeapBlock, slack: UInt32, _ op: inout HeapOperation) -> UInt64 {
        let tag = nextTag(avoiding: block.info)
        op.set32(block.field(HeapLayout.blockState), HeapLayout.inUse | tag)
        op.set32(block.field(HeapLayout.blockInfo), client | slack << 8)
        return HeapLayout.pointerWord(store: block.store, blockOffset: block.offset, tag: tag)
    }

    /// Takes the head of the quick list of `size` granules, if any.
    @inline(__always)
    func popQuick(_ size: UInt32, _ op: inout HeapOperation) throws(InterprocessError) -> HeapBlock? {
        let place = quickHead(size)
        let first = load64(place.pointer)
        if first == 0 { return nil }
        let block = try locate(first)
        guard block.state == HeapLayout.quick, block.size == size, Int(size) <= (block.limit - block.offset) / HeapLayout.granule else {
            throw corrupt("the quick list of \(size) granules holds a block that is not a quick block of that size")
        }
        let next = block.next
        if next != 0 { _ = try locate(next) }
        op.set64(place, next)
        return block
    }

    /// Allocates `granules` (with `slack` unused bytes) aligned to `alignment`, under the lock:
    /// quick list, free lists, then after consolidating, then after growing. Nil when the heap is
    /// at its maximum.
    func allocateLocked(granules: UInt32, slack: UInt32, alignment: Int, _ op: inout HeapOperation) throws(InterprocessError) -> (UInt64, HeapBlock)? {
        if alignment <= HeapLayout.granule && granules < HeapLayout.quickLimit, let block = try popQuick(granules, &op) {
            return (markInUse(block, slack: slack, &op), block)
        }
        if let result = try allocateFromLists(granules: granules, slack: slack, alignment: alignment, &op) { return result }
        op.commit()
        // Caches first (the dead processes', then this thread's and the process's ended threads'),
        // then the quick lists, then growth.
        let reclaimed = try reclaimDeadCaches(&op)
        let flushed = try flushOwnCaches(&op)
        if reclaimed || flushed {
            if alignment <= HeapLayout.granule && granules < HeapLayout.quickLimit, let block = try popQuick(granules, &op) {
                op.step = .allocate
                return (markInUse(block, slack: slack, &op), block)
            }
            if let result = try allocateFromLists(granules: granules, slack: slack, alignment: alignment, &op) { return result }
        }
        if try consolidate(&op), let result = try allocateFromLists(granules: granules, slack: slack, alignment: alignment, &op) {
            return result
        }
        while try grow(toFit: granules, alignment: alignment, &op) {
            if let result = try allocateFromLists(granules: granules, slack: slack, alignment: alignment, &op) { return result }
        }
        return nil
    }

    /// Allocates from the free lists: takes a block that fits, splits off a front fragment for
    /// alignment and a tail that is not needed, both back onto the lists.
    func allocateFromLists(granules wanted: UInt32, slack: UInt32, alignment: Int, _ op: inout HeapOperation) throws(InterprocessError) -> (UInt64, HeapBlock)? {
        op.step = .allocateSplit
        let extra = alignment > HeapLayout.granule ? UInt32(2 * alignment / HeapLayout.granule) : 0
        guard let (found, foundSize) = try takeFree(wanted &+ extra, &op) else { return nil }
        let after = try following(found, size: foundSize)
        var start = found
        var size = foundSize
        if alignment > HeapLayout.granule {
            var gap = (alignment - (found.offset + HeapLayout.blockHeaderSize) % alignment) % alignment
            if gap != 0 && gap < Int(HeapLayout.minimumBlock) * HeapLayout.granule { gap += alignment }
            if gap > 0 {
                let front = UInt32(gap / HeapLayout.granule)
                op.set32(found.field(HeapLayout.blockSize), front)
                try pushFree(found, size: front, &op)
                start = found.advanced(by: front)
                op.set32(start.field(HeapLayout.blockPrevSize), front)
                size -= front
            }
        }
        guard size >= wanted else { throw corrupt("a free block shrank while it was being split") }
        var slack = slack
        let rest = size - wanted
        if rest >= HeapLayout.minimumBlock {
            let tail = start.advanced(by: wanted)
            op.set32(tail.field(HeapLayout.blockPrevSize), 0)
            op.set32(tail.field(HeapLayout.blockSize), rest)
            op.set32(tail.field(HeapLayout.blockState), HeapLayout.free)
            op.set32(tail.field(HeapLayout.blockInfo), 0)
            try pushFree(tail, size: rest, &op)
            op.set32(after.field(HeapLayout.blockPrevSize), rest)
            size = wanted
        } else {
            op.set32(after.field(HeapLayout.blockPrevSize), 0)
            slack += rest * UInt32(HeapLayout.granule)
        }
        op.set32(start.field(HeapLayout.blockSize), size)
        return (markInUse(start, slack: slack, &op), start)
    }

    // MARK: Freeing

    /// The live block that `word` points at, checked against its header: `invalidPointer` unless it
    /// is in use with the word's tag; `corrupt` if its header is inconsistent.
    @inline(__always)
    func liveBlock(_ word: UInt64) throws(InterprocessError) -> (block: HeapBlock, size: UInt32, tag: UInt32) {
        let tag = UInt32(truncatingIfNeeded: word >> HeapLayout.pointerTagShift)
        let store = Int((word >> HeapLayout.pointerStoreShift) & HeapLayout.pointerStoreMask)
        let payload = Int(word & HeapLayout.pointerGranuleMask) &* HeapLayout.granule
        guard tag != 0 else { throw invalidPointer(word, "not a pointer to a block (no tag)") }
        guard store < storeCount else { throw invalidPointer(word, "store \(store) does not exist in this heap") }
        let view = try view(store)
        let offset = payload &- HeapLayout.blockHeaderSize
        guard offset >= view.first, offset < view.end else { throw invalidPointer(word, "outside the blocks of store \(store)") }
        let block = HeapBlock(store: store, offset: offset, pointer: view.base + offset, limit: view.end)
        guard block.state == HeapLayout.inUse | tag else {
            throw invalidPointer(word, "no live block of this heap is there (freed, stale, forged, or another heap's)")
        }
        let size = try checkedSize(block)
        return (block, size, tag)
    }

    /// Frees the live block that `word` points at, under the lock.
    func freeLocked(_ word: UInt64, _ op: inout HeapOperation) throws(InterprocessError) {
        let (block, size, tag) = try liveBlock(word)
        if size < HeapLayout.quickLimit {
            op.step = .free
            let place = quickHead(size)
            // The link lives in the payload of the block being freed: not journaled (undone, the
            // block is still in use by whoever was freeing it, who no longer wants its bytes).
            store64(block.pointer + HeapLayout.freeNext, load64(place.pointer))
            op.set32(block.field(HeapLayout.blockState), HeapLayout.quick)
            op.set32(block.field(HeapLayout.blockInfo), tag)
            op.set64(place, block.ref)
        } else {
            op.step = .freeMerge
            try release(block, size: size, lastTag: tag, &op)
        }
    }

    /// Makes `block` (in use or quick, `size` granules, off every list) a FREE block merged with
    /// its free neighbours, on its list.
    func release(_ block: HeapBlock, size: UInt32, lastTag: UInt32, _ op: inout HeapOperation) throws(InterprocessError) {
        var start = block
        var total = size
        let prevSize = block.prevSize
        if prevSize != 0 {
            guard prevSize >= HeapLayout.minimumBlock, Int(prevSize) <= (block.offset - (try view(block.store)).first) / HeapLayout.granule else {
                throw corrupt("block at \(block.offset) of store \(block.store) claims a free predecessor of \(prevSize) granules")
            }
            let before = try locate(block.ref - UInt64(prevSize) * UInt64(HeapLayout.granule))
            guard try freeSize(before) == prevSize else {
                throw corrupt("block at \(block.offset) of store \(block.store): its predecessor is not the free block it records")
            }
            try unlinkFree(before, size: prevSize, &op)
            // The block's own header ends up inside the merged free block: it must not read as
            // live any more, or a stale pointer to it would still resolve (and a second free of it
            // would look like damage instead of an invalid pointer).
            op.set32(block.field(HeapLayout.blockState), HeapLayout.free)
            start = before
            total += prevSize
        }
        var after = try following(block, size: size)
        if !after.isEndMarker && after.state == HeapLayout.free {
            let afterSize = try freeSize(after)
            try unlinkFree(after, size: afterSize, &op)
            total += afterSize
            after = try following(after, size: afterSize)
        }
        op.set32(start.field(HeapLayout.blockSize), total)
        op.set32(start.field(HeapLayout.blockState), HeapLayout.free)
        if start.offset == block.offset { op.set32(start.field(HeapLayout.blockInfo), lastTag & HeapLayout.tagMask) }
        try pushFree(start, size: total, &op)
        op.set32(after.field(HeapLayout.blockPrevSize), total)
    }

    /// Merges every quick block back into the free lists, one journaled operation per block.
    /// Returns whether there was any.
    func consolidate(_ op: inout HeapOperation) throws(InterprocessError) -> Bool {
        op.commit()
        let saved = op.step
        op.step = .consolidate
        defer { op.step = saved }
        var any = false
        let limit = stepLimit
        for size in HeapLayout.minimumBlock..<HeapLayout.quickLimit {
            var steps = 0
            while let block = try popQuick(size, &op) {
                steps += 1
                guard steps <= limit else { throw corrupt("the quick list of \(size) granules has a cycle") }
                try release(block, size: size, lastTag: block.info, &op)
                op.commit()
                any = true
            }
        }
        return any
    }

    // MARK: Reallocation

    enum Reallocation {
        case inPlace(UInt64, HeapBlock)
        /// The block cannot grow where it is: it holds this many bytes to copy.
        case move(Int)
    }

    /// Resizes the live block of `word` in place if it can (shrinking always can; growing can into
    /// a free successor), under the lock.
    func reallocateLocked(_ word: UInt64, granules wanted: UInt32, slack: UInt32, alignment: Int, _ op: inout HeapOperation) throws(InterprocessError) -> Reallocation {
        let (block, size, _) = try liveBlock(word)
        op.step = .reallocate
        let info = block.info
        let oldSlack = (info >> 8) & 0xFF
        let oldBytes = Int(size) * HeapLayout.granule - HeapLayout.blockHeaderSize - Int(oldSlack)
        guard oldBytes >= 0 else { throw corrupt("block at \(block.offset) of store \(block.store) records \(oldSlack) unused bytes") }
        if alignment > HeapLayout.granule && (block.offset + HeapLayout.blockHeaderSize) % alignment != 0 { return .move(oldBytes) }
        let owner = info & 0xFF
        var slack = slack
        let after = try following(block, size: size)
        if wanted <= size {
            let rest = size - wanted
            if rest >= HeapLayout.minimumBlock {
                var tailSize = rest
                var beyond = after
                if !after.isEndMarker && after.state == HeapLayout.free {
                    let afterSize = try freeSize(after)
                    try unlinkFree(after, size: afterSize, &op)
                    tailSize += afterSize
                    beyond = try following(after, size: afterSize)
                }
                let tail = block.advanced(by: wanted)
                op.set32(tail.field(HeapLayout.blockPrevSize), 0)
                op.set32(tail.field(HeapLayout.blockSize), tailSize)
                op.set32(tail.field(HeapLayout.blockState), HeapLayout.free)
                op.set32(tail.field(HeapLayout.blockInfo), 0)
                try pushFree(tail, size: tailSize, &op)
                op.set32(beyond.field(HeapLayout.blockPrevSize), tailSize)
                op.set32(block.field(HeapLayout.blockSize), wanted)
            } else {
                slack += rest * UInt32(HeapLayout.granule)
            }
            op.set32(block.field(HeapLayout.blockInfo), owner | slack << 8)
            return .inPlace(word, block)
        }
        guard !after.isEndMarker, after.state == HeapLayout.free else { return .move(oldBytes) }
        let afterSize = try freeSize(after)
        guard size + afterSize >= wanted else { return .move(oldBytes) }
        try unlinkFree(after, size: afterSize, &op)
        let beyond = try following(after, size: afterSize)
        let rest = size + afterSize - wanted
        if rest >= HeapLayout.minimumBlock {
            let tail = block.advanced(by: wanted)
            op.set32(tail.field(HeapLayout.blockPrevSize), 0)
            op.set32(tail.field(HeapLayout.blockSize), rest)
            op.set32(tail.field(HeapLayout.blockState), HeapLayout.free)
            op.set32(tail.field(HeapLayout.blockInfo), 0)
            try pushFree(tail, size: rest, &op)
            op.set32(beyond.field(HeapLayout.blockPrevSize), rest)
            op.set32(block.field(HeapLayout.blockSize), wanted)
        } else {
            op.set32(beyond.field(HeapLayout.blockPrevSize), 0)
            op.set32(block.field(HeapLayout.blockSize), size + afterSize)
            slack += rest * UInt32(HeapLayout.granule)
        }
        op.set32(block.field(HeapLayout.blockInfo), owner | slack << 8)
        return .inPlace(word, block)
    }

    // MARK: Growth

    /// Adds a store big enough for `granules` at `alignment`, if the maximum allows; publishes it
    /// with its one free block on the lists. Returns whether it grew.
    func grow(toFit granules: UInt32, alignment: Int, _ op: inout HeapOperation) throws(InterprocessError) -> Bool {
        op.commit()
        let count = storeCount
        guard count < HeapLayout.maximumStores else { return false }
        let capacityPlace = headerPlace(HeapLayout.heapCapacity)
        let capacity = Int(truncatingIfNeeded: load64(capacityPlace.pointer))
        guard capacity >= 0, capacity <= maximumCapacity else { throw corrupt("capacity \(capacity) beyond the maximum \(maximumCapacity)") }
        let extra = alignment > HeapLayout.granule ? 2 * alignment : 0
        let need = HeapLayout.roundUp(
            HeapLayout.firstBlockOfStore + Int(granules) * HeapLayout.granule + extra + HeapLayout.blockHeaderSize, to: systemPageSize)
        let room = min(maximumCapacity - capacity, HeapLayout.maximumStoreSize)
        guard need <= room else { return false }
        var size = max(need, growthSize, capacity)
        size = min(size, room) / systemPageSize * systemPageSize
        size = max(size, need)
        let mapped = try provider.createStore(count, byteCount: size)
        HotPath.crashPoint("heap.grow.afterCreate")
        let view = try table.map(count) { () throws(InterprocessError) in mapped }
        guard view.size <= maximumCapacity - capacity else {
            throw corrupt("store \(count) has \(view.size) bytes, more than the \(maximumCapacity - capacity) the maximum leaves")
        }
        let saved = op.step
        op.step = .grow
        defer { op.step = saved }
        op.set64(capacityPlace, UInt64(capacity + view.size))
        op.set32(headerPlace(HeapLayout.heapStoreCount), UInt32(count + 1))
        let block = HeapBlock(store: count, offset: view.first, pointer: view.base + view.first, limit: view.end)
        try pushFree(block, size: try checkedSize(block), &op)
        op.commit()
        return true
    }

    // MARK: Clients

    /// Claims a client record now if this handle found none when it opened (every record was held
    /// by a live process): after blocks of ended processes were freed,
    /// their records can be taken. Call it before the handle is shared with other threads.
    func claimClientIfNone() throws(InterprocessError) {
        guard client == 0 else { return }
        client = try withLock(.claim) { (op: inout HeapOperation) throws(InterprocessError) in try claimClient(&op) }
    }

    /// Finds or takes this process's client record: its own (the same token), a free one, or — when
    /// none is free — one that recycling the records of ended processes freed; 0 if none (every
    /// record belongs to a live process).
    func claimClient(_ op: inout HeapOperation) throws(InterprocessError) -> UInt32 {
        let token = lease.token
        let clients = header + HeapLayout.heapClients
        func tokenPlace(_ index: Int) -> HeapPlace {
            headerPlace(HeapLayout.heapClients + index * HeapLayout.clientStride + HeapLayout.clientToken)
        }
        func take(_ index: Int) -> UInt32 {
            op.set64(tokenPlace(index), token)
            op.set32(clientCachesPlace(index), 0)
            store32(clients + index * HeapLayout.clientStride + HeapLayout.clientPID, UInt32(truncatingIfNeeded: OwnerLease.displayPID(of: token)))
            return UInt32(index)
        }
        // The caches of processes that ended go back first (their records may then be taken).
        try reclaimDeadCaches(&op)
        for index in 1..<HeapLayout.clientCount where load64(tokenPlace(index).pointer) == token { return UInt32(index) }
        for index in 1..<HeapLayout.clientCount where load64(tokenPlace(index).pointer) == 0 { return take(index) }
        // None free: recycle those of ended processes (HeapRecycle.swift), all at once.
        if try recycleEndedRecords(&op) > 0 {
            for index in 1..<HeapLayout.clientCount where load64(tokenPlace(index).pointer) == 0 { return take(index) }
        }
        return 0
    }

    /// Calls `visit` with every block of every published store, in address order, checking each
    /// header's size, state and owner on the way (`corrupt` at the first bad one): a block in use
    /// is owned by a client record or by ended processes, a cached block or a cache record by a
    /// client record other than 0.
    func walkBlocks(_ visit: (HeapBlock, UInt32, UInt32) throws(InterprocessError) -> Void) throws(InterprocessError) {
        for store in 0..<storeCount {
            let view = try view(store)
            var block = HeapBlock(store: store, offset: view.first, pointer: view.base + view.first, limit: view.end)
            while !block.isEndMarker {
                let size = try checkedSize(block)
                let state = block.state
                guard state == HeapLayout.free || state == HeapLayout.quick || state == HeapLayout.cached || state == HeapLayout.cacheRecord
                    || (state & HeapLayout.inUse != 0 && state & HeapLayout.tagMask != 0 && state & ~(HeapLayout.inUse | HeapLayout.tagMask) == 0) else {
                    throw corrupt("block at \(block.offset) of store \(store) has state 0x\(String(state, radix: 16))")
                }
                let info = block.info
                guard state & HeapLayout.inUse != 0 ? Self.isOwnerOfBlockInUse(info & 0xFF)
                    : (state != HeapLayout.cached && state != HeapLayout.cacheRecord) || Self.clientIndex(info) != nil else {
                    throw corrupt("block at \(block.offset) of store \(store) has owner \(info & 0xFF)")
                }
                try visit(block, size, state)
                block = block.advanced(by: size)
            }
            guard block.state == HeapLayout.end else { throw corrupt("the end marker of store \(store) was overwritten") }
        }
    }
}
