import CInterprocess
import InterprocessSystem
import Synchronization

/// Where the fields of the heap's shared structures are: every offset comes from the C definitions
/// in `CInterprocessHeap.h` (never a literal), plus the arithmetic of references, pointer words and
/// size classes. See ``SharedHeap`` for what the structures mean.
enum HeapLayout {
    static let granule = Int(CIPC_HEAP_GRANULE)
    static let minimumBlock = UInt32(CIPC_HEAP_MIN_BLOCK)
    static let quickLimit = UInt32(CIPC_HEAP_QUICK_LIMIT)
    static let classCount = Int(CIPC_HEAP_CLASSES)
    static let maximumStores = Int(CIPC_HEAP_MAX_STORES)
    static let clientCount = Int(CIPC_HEAP_CLIENTS)
    static let journalCapacity = Int(CIPC_HEAP_JOURNAL_CAPACITY)
    static let headerOffset = Int(CIPC_HEAP_HEADER_OFFSET)

    // MARK: Block header (`cipc_heap_block`, `cipc_heap_free_block`)
    static let blockPrevSize = offset(\cipc_heap_block.prev_size)
    static let blockSize = offset(\cipc_heap_block.size)
    static let blockState = offset(\cipc_heap_block.state)
    static let blockInfo = offset(\cipc_heap_block.info)
    static let blockHeaderSize = MemoryLayout<cipc_heap_block>.size
    static let freeNext = offset(\cipc_heap_free_block.next)
    static let freePrev = offset(\cipc_heap_free_block.prev)

    static let inUse = CIPC_HEAP_IN_USE
    static let free = CIPC_HEAP_FREE
    static let quick = CIPC_HEAP_QUICK
    static let end = CIPC_HEAP_END
    static let tagMask = CIPC_HEAP_TAG_MASK

    // MARK: Store header (`cipc_heap_store_header`)
    static let storeTag = offset(\cipc_heap_store_header.tag)
    static let storeIndex = offset(\cipc_heap_store_header.index)
    static let storeNonce = offset(\cipc_heap_store_header.nonce)
    static let storeSize = offset(\cipc_heap_store_header.size)
    static let storeFirstBlock = offset(\cipc_heap_store_header.first_block)
    static let storeEndBlock = offset(\cipc_heap_store_header.end_block)
    static let storeHeaderSize = MemoryLayout<cipc_heap_store_header>.size

    // MARK: Heap header (`cipc_heap_header`), relative to its start
    static let heapTag = offset(\cipc_heap_header.tag)
    static let heapVersion = offset(\cipc_heap_header.version)
    static let heapNonce = offset(\cipc_heap_header.nonce)
    static let heapMaximumCapacity = offset(\cipc_heap_header.maximum_capacity)
    static let heapCapacity = offset(\cipc_heap_header.capacity)
    static let heapStoreCount = offset(\cipc_heap_header.store_count)
    static let heapNextTag = offset(\cipc_heap_header.next_tag)
    static let heapGrowthSize = offset(\cipc_heap_header.growth_size)
    static let heapRecoveries = offset(\cipc_heap_header.recoveries)
    static let heapLock = offset(\cipc_heap_header.lock)
    static let heapClassBitmap = offset(\cipc_heap_header.class_bitmap)
    static let heapQuickHeads = offset(\cipc_heap_header.quick_heads)
    static let heapHeads = offset(\cipc_heap_header.heads)
    static let heapClients = offset(\cipc_heap_header.clients)
    static let heapJournal = offset(\cipc_heap_header.journal)
    static let heapHeaderSize = MemoryLayout<cipc_heap_header>.size

    static let clientStride = MemoryLayout<cipc_heap_client>.stride
    static let clientToken = offset(\cipc_heap_client.token)
    static let clientPID = offset(\cipc_heap_client.pid)

    static let journalCount = offset(\cipc_heap_journal.count)
    static let journalSequence = offset(\cipc_heap_journal.sequence)
    static let journalEntries = offset(\cipc_heap_journal.entries)
    static let entryStride = MemoryLayout<cipc_heap_journal_entry>.stride
    static let entryTarget = offset(\cipc_heap_journal_entry.target)
    static let entryOldValue = offset(\cipc_heap_journal_entry.old_value)
    static let widthShift = UInt64(CIPC_HEAP_JOURNAL_WIDTH_SHIFT)

    /// Where the first block of store 0 starts: after its store header and the heap header, on a
    /// cache line of its own.
    static let firstBlockOfBase = roundUp(headerOffset + heapHeaderSize, to: 64)
    /// Where the first block of any other store starts.
    static let firstBlockOfStore = storeHeaderSize

    /// The largest store: every block size (in granules) must fit the 32-bit size field, and every
    /// payload offset (in granules) the pointer word's 34 bits.
    static let maximumStoreSize = 1 << 35

    // MARK: References: store << 48 | offset

    static let refStoreShift = UInt64(CIPC_HEAP_REF_STORE_SHIFT)
    static let refOffsetMask = CIPC_HEAP_REF_OFFSET_MASK

    @inline(__always)
    static func ref(store: Int, offset: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: store) << refStoreShift | UInt64(truncatingIfNeeded: offset)
    }

    // MARK: Pointer words: tag << 40 | store << 34 | payload offset / 16

    static let pointerStoreShift = UInt64(CIPC_HEAP_POINTER_STORE_SHIFT)
    static let pointerTagShift = UInt64(CIPC_HEAP_POINTER_TAG_SHIFT)
    static let pointerGranuleMask: UInt64 = (1 << UInt64(CIPC_HEAP_POINTER_GRANULE_BITS)) - 1
    static let pointerStoreMask: UInt64 = (1 << (pointerTagShift - pointerStoreShift)) - 1

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

    private static func offset<Root>(_ field: PartialKeyPath<Root>) -> Int {
        guard let offset = MemoryLayout<Root>.offset(of: field) else {
            preconditionFailure("\(field) is not a stored field of \(Root.self)")
        }
        return offset
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
