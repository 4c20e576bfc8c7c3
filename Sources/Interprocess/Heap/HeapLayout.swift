import CInterprocess
import InterprocessSystem
import Synchronization

/// Where the fields of the heap's shared structures are: every offset comes from the C definitions
/// in `CInterprocessHeap.h` (never a literal), plus the arithmetic of references, pointer words and
/// size classes. See ``SharedHeap`` for what the structures mean.
///
/// The hot paths use these on every operation, so they are computed properties that the optimizer
/// folds to constants: `MemoryLayout.offset(of:)` of a literal key path in this module (the
/// package-wide `fieldOffset`, across a module boundary, is a call that builds the key path — it
/// made a 64-byte allocate + free fifteen times slower), and no `static let` (a `swift_once` check
/// per access).
enum HeapLayout {
    @inline(__always) static var granule: Int { Int(CIPC_HEAP_GRANULE) }
    @inline(__always) static var minimumBlock: UInt32 { UInt32(CIPC_HEAP_MIN_BLOCK) }
    @inline(__always) static var quickLimit: UInt32 { UInt32(CIPC_HEAP_QUICK_LIMIT) }
    @inline(__always) static var classCount: Int { Int(CIPC_HEAP_CLASSES) }
    @inline(__always) static var maximumStores: Int { Int(CIPC_HEAP_MAX_STORES) }
    @inline(__always) static var clientCount: Int { Int(CIPC_HEAP_CLIENTS) }
    /// The owner of blocks whose process ended and whose client record was recycled.
    @inline(__always) static var endedClient: UInt32 { CIPC_HEAP_ENDED_CLIENT }
    @inline(__always) static var journalCapacity: Int { Int(CIPC_HEAP_JOURNAL_CAPACITY) }
    @inline(__always) static var headerOffset: Int { Int(CIPC_HEAP_HEADER_OFFSET) }

    // MARK: Block header (`cipc_heap_block`, `cipc_heap_free_block`)
    @inline(__always) static var blockPrevSize: Int { MemoryLayout<cipc_heap_block>.offset(of: \cipc_heap_block.prev_size)! }
    @inline(__always) static var blockSize: Int { MemoryLayout<cipc_heap_block>.offset(of: \cipc_heap_block.size)! }
    @inline(__always) static var blockState: Int { MemoryLayout<cipc_heap_block>.offset(of: \cipc_heap_block.state)! }
    @inline(__always) static var blockInfo: Int { MemoryLayout<cipc_heap_block>.offset(of: \cipc_heap_block.info)! }
    @inline(__always) static var blockHeaderSize: Int { MemoryLayout<cipc_heap_block>.size }
    @inline(__always) static var freeNext: Int { MemoryLayout<cipc_heap_free_block>.offset(of: \cipc_heap_free_block.next)! }
    @inline(__always) static var freePrev: Int { MemoryLayout<cipc_heap_free_block>.offset(of: \cipc_heap_free_block.prev)! }

    @inline(__always) static var inUse: UInt32 { CIPC_HEAP_IN_USE }
    @inline(__always) static var free: UInt32 { CIPC_HEAP_FREE }
    @inline(__always) static var quick: UInt32 { CIPC_HEAP_QUICK }
    @inline(__always) static var end: UInt32 { CIPC_HEAP_END }
    @inline(__always) static var cached: UInt32 { CIPC_HEAP_CACHED }
    @inline(__always) static var cacheRecord: UInt32 { CIPC_HEAP_CACHE_RECORD }
    @inline(__always) static var tagMask: UInt32 { CIPC_HEAP_TAG_MASK }

    // MARK: Store header (`cipc_heap_store_header`)
    @inline(__always) static var storeTag: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.tag)! }
    @inline(__always) static var storeIndex: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.index)! }
    @inline(__always) static var storeNonce: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.nonce)! }
    @inline(__always) static var storeSize: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.size)! }
    @inline(__always) static var storeFirstBlock: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.first_block)! }
    @inline(__always) static var storeEndBlock: Int { MemoryLayout<cipc_heap_store_header>.offset(of: \cipc_heap_store_header.end_block)! }
    @inline(__always) static var storeHeaderSize: Int { MemoryLayout<cipc_heap_store_header>.size }

    // MARK: Heap header (`cipc_heap_header`), relative to its start
    @inline(__always) static var heapTag: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.tag)! }
    @inline(__always) static var heapVersion: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.version)! }
    @inline(__always) static var heapNonce: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.nonce)! }
    @inline(__always) static var heapMaximumCapacity: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.maximum_capacity)! }
    @inline(__always) static var heapCapacity: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.capacity)! }
    @inline(__always) static var heapStoreCount: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.store_count)! }
    @inline(__always) static var heapNextTag: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.next_tag)! }
    @inline(__always) static var heapGrowthSize: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.growth_size)! }
    @inline(__always) static var heapRecoveries: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.recoveries)! }
    @inline(__always) static var heapLock: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.lock)! }
    @inline(__always) static var heapClassBitmap: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.class_bitmap)! }
    @inline(__always) static var heapQuickHeads: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.quick_heads)! }
    @inline(__always) static var heapHeads: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.heads)! }
    @inline(__always) static var heapClients: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.clients)! }
    @inline(__always) static var heapJournal: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.journal)! }
    @inline(__always) static var heapHeaderSize: Int { MemoryLayout<cipc_heap_header>.size }

    @inline(__always) static var clientStride: Int { MemoryLayout<cipc_heap_client>.stride }
    @inline(__always) static var clientToken: Int { MemoryLayout<cipc_heap_client>.offset(of: \cipc_heap_client.token)! }
    @inline(__always) static var clientPID: Int { MemoryLayout<cipc_heap_client>.offset(of: \cipc_heap_client.pid)! }
    @inline(__always) static var clientCaches: Int { MemoryLayout<cipc_heap_client>.offset(of: \cipc_heap_client.caches)! }

    // MARK: Cache records (`cipc_heap_cache`)
    @inline(__always) static var cacheHeads: Int { MemoryLayout<cipc_heap_cache>.offset(of: \cipc_heap_cache.heads)! }
    /// The granules of a cache record block.
    @inline(__always) static var cacheRecordGranules: UInt32 { UInt32((blockHeaderSize + MemoryLayout<cipc_heap_cache>.size + granule - 1) / granule) }
    /// The largest payload a thread's cache holds blocks for: every quick size.
    @inline(__always) static var cacheablePayload: Int { Int(quickLimit - 1) * granule - blockHeaderSize }

    @inline(__always) static var journalCount: Int { MemoryLayout<cipc_heap_journal>.offset(of: \cipc_heap_journal.count)! }
    @inline(__always) static var journalSequence: Int { MemoryLayout<cipc_heap_journal>.offset(of: \cipc_heap_journal.sequence)! }
    @inline(__always) static var journalEntries: Int { MemoryLayout<cipc_heap_journal>.offset(of: \cipc_heap_journal.entries)! }
    @inline(__always) static var entryStride: Int { MemoryLayout<cipc_heap_journal_entry>.stride }
    @inline(__always) static var entryTarget: Int { MemoryLayout<cipc_heap_journal_entry>.offset(of: \cipc_heap_journal_entry.target)! }
    @inline(__always) static var entryOldValue: Int { MemoryLayout<cipc_heap_journal_entry>.offset(of: \cipc_heap_journal_entry.old_value)! }
    @inline(__always) static var widthShift: UInt64 { UInt64(CIPC_HEAP_JOURNAL_WIDTH_SHIFT) }

    /// Where the first block of store 0 starts: after its store header and the heap header, on a
    /// cache line of its own.
    @inline(__always) static var firstBlockOfBase: Int { roundUp(headerOffset + heapHeaderSize, to: 64) }
    /// Where the first block of any other store starts.
    @inline(__always) static var firstBlockOfStore: Int { storeHeaderSize }

    /// The largest store: every block size (in granules) must fit the 32-bit size field, and every
    /// payload offset (in granules) the pointer word's 34 bits.
    @inline(__always) static var maximumStoreSize: Int { 1 << 35 }

    // MARK: References: store << 48 | offset

    @inline(__always) static var refStoreShift: UInt64 { UInt64(CIPC_HEAP_REF_STORE_SHIFT) }
    @inline(__always) static var refOffsetMask: UInt64 { CIPC_HEAP_REF_OFFSET_MASK }

    @inline(__always)
    static func ref(store: Int, offset: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: store) << refStoreShift | UInt64(truncatingIfNeeded: offset)
    }

    // MARK: Pointer words: tag << 40 | store << 34 | payload offset / 16

    @inline(__always) static var pointerStoreShift: UInt64 { UInt64(CIPC_HEAP_POINTER_STORE_SHIFT) }
    @inline(__always) static var pointerTagShift: UInt64 { UInt64(CIPC_HEAP_POINTER_TAG_SHIFT) }
    @inline(__always) static var pointerGranuleMask: UInt64 { (1 << UInt64(CIPC_HEAP_POINTER_GRANULE_BITS)) - 1 }
    @inline(__always) static var pointerStoreMask: UInt64 { (1 << (pointerTagShift - pointerStoreShift)) - 1 }

    @inline(__always)
    static func pointerWord(store: Int, blockOffset: Int, tag: UInt32) -> UInt64 {
        UInt64(tag) << pointerTagShift | UInt64(store) << pointerStoreShift
            | UInt64((blockOffset + blockHeaderSize) / granule)
    }

    // MARK: Size classes

    /// The free-list class of a block of `size` granules (at least 2): the size itself below 32,
    /// then 8 classes per power of two.
    @inline(__always)
    static func sizeClass(_ size: UInt32) -> Int {
        if size < quickLimit { return Int(size) }
        let log = 31 - size.leadingZeroBitCount
        let sub = Int((size >> UInt32(log - 3)) & 7)
        return Int(quickLimit) + (log - 5) * 8 + sub
    }

    /// The first class whose every block holds `size` granules (maybe `classCount`: none).
    @inline(__always)
    static func searchClass(_ size: UInt32) -> Int {
        let exact = sizeClass(size)
        if size < quickLimit { return exact }
        let log = 31 - size.leadingZeroBitCount
        return size & ((1 << UInt32(log - 3)) - 1) == 0 ? exact : exact + 1
    }

    /// The granules of a block whose payload holds `byteCount` bytes (nil if that cannot fit a store).
    @inline(__always)
    static func granules(forPayload byteCount: Int) -> UInt32? {
        guard byteCount >= 0, byteCount <= maximumStoreSize else { return nil }
        return max(minimumBlock, UInt32((byteCount + blockHeaderSize + granule - 1) / granule))
    }

    static func roundUp(_ value: Int, to alignment: Int) -> Int {
        (value + alignment - 1) / alignment * alignment
    }
}

// MARK: - Relaxed access to shared words

@inline(__always)
func load32(_ raw: UnsafeMutableRawPointer) -> UInt32 { atomic32(raw).pointee.load(ordering: .relaxed) }

@inline(__always)
func load64(_ raw: UnsafeMutableRawPointer) -> UInt64 { atomic64(raw).pointee.load(ordering: .relaxed) }

@inline(__always)
func store32(_ raw: UnsafeMutableRawPointer, _ value: UInt32) { atomic32(raw).pointee.store(value, ordering: .relaxed) }

@inline(__always)
func store64(_ raw: UnsafeMutableRawPointer, _ value: UInt64) { atomic64(raw).pointee.store(value, ordering: .relaxed) }
