import CInterprocess
import InterprocessSystem
import Synchronization

/// One store as this process maps it. Its bounds were validated when it was mapped and are never read
/// from shared memory again, so a peer that rewrites the store header cannot move them.
///
/// `@unchecked Sendable`: `base` points into a mapping that the heap keeps alive while it exists.
struct StoreView: @unchecked Sendable {
    /// The start of the store's payload (page-aligned).
    let base: UnsafeMutableRawPointer
    /// Payload bytes.
    let size: Int
    /// Offset of the first block.
    let first: Int
    /// Offset of the end marker.
    let end: Int
}

/// A store just mapped: its view and what keeps the mapping alive.
struct MappedStore: @unchecked Sendable {
    // `@unchecked Sendable`: `owner` is a `MemoryMapping`, which is Sendable; the view's pointer
    // points into it.
    let view: StoreView
    let owner: AnyObject
}

/// How a heap's stores come to exist and to be mapped: the only part of the heap that knows they
/// are named segments (``HeapSegments`` today; the shared-objects framework's storage later).
protocol HeapStoreProvider: AnyObject, Sendable {
    /// Maps store `index`, which the heap has published, and checks its store header.
    func mapStore(_ index: Int) throws(InterprocessError) -> MappedStore
    /// Makes store `index`, not published yet, of exactly `byteCount` payload bytes, initialized as
    /// one free block (``HeapInitializer/initializeStore``); takes over a leftover of a grower that
    /// died before publishing it.
    func createStore(_ index: Int, byteCount: Int) throws(InterprocessError) -> MappedStore
}

/// The stores this process has mapped, by index: written once each (under a process-local lock),
/// read without a lock.
final class StoreTable: @unchecked Sendable {
    // `@unchecked Sendable`: `views[i]` is written once, before `bases[i]` is published with a
    // releasing store; readers load `bases[i]` acquiring before they read `views[i]`.
    private let bases: UnsafeMutablePointer<Atomic<Int>>
    private let views: UnsafeMutablePointer<StoreView>
    /// What keeps each mapping alive, by index.
    private let owners = Mutex<[Int: AnyObject]>([:])

    init() {
        bases = .allocate(capacity: HeapLayout.maximumStores)
        views = .allocate(capacity: HeapLayout.maximumStores)
        for index in 0..<HeapLayout.maximumStores {
            (bases + index).initialize(to: Atomic(0))
            (views + index).initialize(to: StoreView(base: UnsafeMutableRawPointer(bitPattern: 1)!, size: 0, first: 0, end: 0))
        }
    }

    deinit {
        views.deinitialize(count: HeapLayout.maximumStores)
        views.deallocate()
        bases.deinitialize(count: HeapLayout.maximumStores)
        bases.deallocate()
    }

    /// The view of store `index` if this process mapped it.
    @inline(__always)
    func view(_ index: Int) -> StoreView? {
        guard bases[index].load(ordering: .acquiring) != 0 else { return nil }
        return views[index]
    }

    /// Maps store `index` with `make` unless another thread already did.
    func map(_ index: Int, _ make: () throws(InterprocessError) -> MappedStore) throws(InterprocessError) -> StoreView {
        try owners.withLock { owners throws(InterprocessError) -> StoreView in
            if let view = view(index) { return view }
            let mapped = try make()
            owners[index] = mapped.owner
            views[index] = mapped.view
            bases[index].store(Int(bitPattern: mapped.view.base), ordering: .releasing)
            return mapped.view
        }
    }
}

/// Writes the initial contents of stores and of the heap header: plain stores into memory that no
/// other process sees yet (an unnamed segment being built, or a store not yet published).
enum HeapInitializer {
    /// Writes store `index`'s header and one free block spanning it, followed by the end marker. The
    /// free block's links are 0: the caller puts it on a list. Returns the view's bounds.
    static func initializeStore(_ payload: UnsafeMutableRawPointer, size: Int, index: Int, nonce: UInt64) -> (first: Int, end: Int) {
        let first = index == 0 ? HeapLayout.firstBlockOfBase : HeapLayout.firstBlockOfStore
        let end = size - HeapLayout.blockHeaderSize
        precondition(size % HeapLayout.granule == 0 && end - first >= Int(HeapLayout.minimumBlock) * HeapLayout.granule)
        payload.initializeMemory(as: UInt8.self, repeating: 0, count: HeapLayout.storeHeaderSize)
        store32(payload + HeapLayout.storeTag, CIPC_TAG_HEAP_STORE)
        store32(payload + HeapLayout.storeIndex, UInt32(index))
        store64(payload + HeapLayout.storeNonce, nonce)
        store64(payload + HeapLayout.storeSize, UInt64(size))
        store64(payload + HeapLayout.storeFirstBlock, UInt64(first))
        store64(payload + HeapLayout.storeEndBlock, UInt64(end))
        let granules = UInt32((end - first) / HeapLayout.granule)
        let block = payload + first
        block.initializeMemory(as: UInt8.self, repeating: 0, count: Int(HeapLayout.minimumBlock) * HeapLayout.granule)
        store32(block + HeapLayout.blockSize, granules)
        store32(block + HeapLayout.blockState, HeapLayout.free)
        let marker = payload + end
        marker.initializeMemory(as: UInt8.self, repeating: 0, count: HeapLayout.blockHeaderSize)
        store32(marker + HeapLayout.blockPrevSize, granules)
        store32(marker + HeapLayout.blockSize, 1)
        store32(marker + HeapLayout.blockState, HeapLayout.end)
        return (first, end)
    }

    /// Writes store 0 of a new heap: its store header, the heap header (with an unlocked mutex), and
    /// the one free block on its list — all but the heap's tag, which the shared-objects storage
    /// publishes last.
    static func initializeHeap(
        _ payload: UnsafeMutableRawPointer, size: Int, nonce: UInt64, maximumCapacity: Int, growthSize: Int, firstTag: UInt32
    ) {
        let (first, _) = initializeStore(payload, size: size, index: 0, nonce: nonce)
        let header = payload + HeapLayout.headerOffset
        header.initializeMemory(as: UInt8.self, repeating: 0, count: HeapLayout.heapHeaderSize)
        store32(header + HeapLayout.heapVersion, CIPC_HEAP_VERSION)
        store64(header + HeapLayout.heapNonce, nonce)
        store64(header + HeapLayout.heapMaximumCapacity, UInt64(maximumCapacity))
        store64(header + HeapLayout.heapCapacity, UInt64(size))
        store32(header + HeapLayout.heapStoreCount, 1)
        store32(header + HeapLayout.heapNextTag, firstTag)
        store64(header + HeapLayout.heapGrowthSize, UInt64(growthSize))
        // The mutex: zero (unlocked), with its tag, as `ProcessMutex.create(in:at:)` leaves it.
        let mutex = header + HeapLayout.heapLock
        mutex.storeBytes(of: CIPC_TAG_MUTEX, toByteOffset: fieldOffset(\cipc_mutex.tag), as: UInt32.self)
        // The free block goes on its class's list.
        let granules = load32(payload + first + HeapLayout.blockSize)
        let sizeClass = HeapLayout.sizeClass(granules)
        store64(header + HeapLayout.heapHeads + sizeClass * 8, HeapLayout.ref(store: 0, offset: first))
        store64(header + HeapLayout.heapClassBitmap + (sizeClass >> 6) * 8, 1 << UInt64(sizeClass & 63))
    }
}
