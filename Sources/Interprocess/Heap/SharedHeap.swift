public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A heap in shared memory: many processes, and many threads in each, allocate and free blocks of
/// it at once; a ``SharedPointer`` names the same block in each of them; a process killed in the
/// middle of an allocation harms nobody else.
///
/// ```swift
/// let heap = try SharedHeap.create(name: "scene", capacity: 1 << 20, maximumCapacity: 64 << 20)
/// let node = try heap.allocate(Node(value: 42))         // a SharedAllocation<Node>: freed exactly once
/// let word = node.relinquish()                          // hand it over: a SharedPointer<Node>, one UInt64
///
/// // Another process, given `word` (through shared memory, a SharedVariable, a pipe…):
/// let heap = try SharedHeap.open(name: "scene")
/// let value = try heap.load(word)                       // a stale or forged word is .invalidPointer
/// try heap.adopt(word).deallocate()
/// ```
///
/// ## Layout
/// A heap is up to 64 *stores*: store 0 is the segment named like the heap; stores added by growth are
/// segments named `NAME~NONCE-i` (the heap's random nonce in hex), so heap names have at most
/// ``maximumNameLength`` bytes. Each process maps each store wherever it likes, so the heap never holds
/// a pointer: a location is a *reference* (store index << 48 | byte offset in the store). Every store's
/// payload starts with `cipc_heap_store_header`; store 0 continues with `cipc_heap_header`: the robust
/// lock, the free lists, the client records and the journal. Then come the blocks, each with a 16-byte
/// header (`cipc_heap_block`: the size of the free block before it, its own size, its state, and
/// owner or tag), and an end marker. All of it is defined in `CInterprocessHeap.h`, with
/// `_Static_assert`s; Swift reaches every field through those definitions.
///
/// ## Allocation
/// Sizes are counted in 16-byte granules, and every payload is 16-byte aligned (more on request, up
/// to 4096, by splitting a free fragment off the front). Free blocks are kept in a two-level
/// segregated fit (as TLSF): 248 doubly-linked lists — one per exact size below 32 granules, then 8
/// per power of two — and a bitmap of the non-empty ones, so finding a block that fits takes a few
/// bit operations. A block that is split leaves its tail on the lists; a block that is freed merges
/// with a free neighbour on either side (the header's `prev_size` is the free predecessor's size,
/// the "boundary tag"), so no two free blocks are ever adjacent. Small blocks (below 32 granules,
/// payloads up to 480 bytes) are freed onto *quick lists*, one per exact size, without merging: the
/// next allocation of that size takes one back at once. When an allocation finds no fit, the quick
/// blocks are merged back into the free lists first, then the heap grows: so allocate-all,
/// free-all, allocate-all again never grows the heap.
///
/// **Growth** adds a store of at least the heap's current capacity (so the number of stores stays
/// small), up to `maximumCapacity`; beyond it, allocation throws `outOfMemory` and the heap goes on
/// working. Every process sees a new store at once: the store count in the heap header says it
/// exists, and a process maps it the first time a reference or pointer leads there.
///
/// ## Concurrency
/// Every change is made under one robust lock in the heap header, a ``ProcessMutex`` (its lock word
/// logic unchanged: one compare-and-swap to lock, one exchange to unlock, spinning then a futex when
/// contended). An operation holds it for tens of nanoseconds; the common ones — an allocation from a
/// quick list, a free onto one — write three words. Resolving a pointer takes no lock, and neither do
/// the allocations and frees that a thread's cache serves.
///
/// ## Thread caches
/// In a heap whose maximum capacity is at least 1 MB, each thread of each process keeps a cache of
/// free blocks of the quick sizes (payloads up to 480 bytes): a *cache record* (a block of the heap,
/// state `CIPC_HEAP_CACHE_RECORD`, `cipc_heap_cache`: one list head per size) and, on its lists,
/// blocks whose state is `CIPC_HEAP_CACHED` and whose `info` names the process's client record. A
/// free of such a block by a thread whose cache has room puts it there; an allocation of such a size
/// takes one back: no lock, no journal, a handful of plain writes to the block's header and the
/// record, all in memory only that thread writes (the lock path never touches a cached block: it
/// merges only with FREE neighbours and writes only their `prev_size`). A cache holds at most 1 to
/// 32 blocks of each size, about 1/256 of the heap's maximum capacity in all. A block freed by
/// another process than the one that allocated it goes into the freeing thread's cache (as in glibc's
/// tcache): a block belongs to whoever frees it. The record is found through a thread-local slot
/// (`cipc_thread_slot`: one load); a thread that ends leaves its slot, record and blocks to the
/// next thread of its process that needs a cache. Tags come from the heap's counter in batches of 64.
///
/// Statistics count cached blocks as free (``Statistics/cachedBlocks``: free, but for one thread
/// only; never in ``Statistics/largestFreeBlock``) and records as overhead. The caches go back to the
/// free lists: the calling thread's (and its process's ended threads') when an allocation finds no
/// fit, before the quick lists are merged; a handle's all when it is closed; a process's that ended
/// (killed, or gone without closing) when an allocation finds no fit, when a process opens the heap,
/// and when ``check()`` runs — found by their state and owner, never through the dead cache's lists.
/// Closing a handle while another thread of the process still allocates through it is a race (it
/// was before the caches too): the thread may write into a record already given back.
///
/// What a thread SIGKILLed at each step of a cache operation leaves behind (the crash points
/// `heap.cache-allocate#N` and `heap.cache-free#N` are after the Nth write):
/// - **taking a block** (1: the list head moves past it; 2: its `info` becomes the allocation's,
///   still CACHED; 3: its state becomes in use with a new tag): after 1 or 2, a CACHED block of the
///   dead process on no list — reclaimed by its state; after 3, an allocated block of the dead
///   process (as when the lock path is killed before the caller stored the pointer).
/// - **putting one back** (1: its `info` names the freeing process, still in use; 2: CACHED; 3: its
///   last tag kept in `info`; 4: its link to the list; 5: the list head): after 1, an allocated
///   block of the dead process (the block being freed is lost, as the lock path allows); after 2
///   to 5, a CACHED block of the dead process — reclaimed by its state.
/// - **making a record, flushing, reclaiming**: journaled operations under the lock, like every
///   other (`heap.cache-create#N`, `heap.cache-flush#N`, `heap.cache-reclaim#N`): undone if killed;
///   a flush or a reclaim is one operation per block, and what a killed one left is reclaimed later.
/// At no step does another process see a block both cached and anything else: each step is one
/// aligned 32- or 64-bit store, and every intermediate state is an in-use or a CACHED block of one
/// process. A scribbled cache is `corrupt` for the thread that meets it (it drops that list; its
/// blocks stay with its process until the process ends), never a wild access: every block taken is
/// checked (within its store, CACHED, of the list's size, of this process). A double free that two
/// threads race is caught when one of them takes the block from its cache (`corrupt`), not before.
///
/// ## Crash safety
/// Before each write to the heap's metadata, the holder of the lock records the word's old value in
/// the journal (`cipc_heap_journal`), then publishes the record count, then writes; the operation
/// ends by setting the count to 0. What a process SIGKILLed at each step leaves behind, and who
/// repairs it:
/// - **holding the lock, before its first write**: nothing. The lock names a dead owner; the next
///   process that wants it takes it over (``ProcessMutex``: within ~25 ms of waiting) and finds an
///   empty journal.
/// - **between writes** (any number of them done, a record written but not counted, a record
///   counted but the word not yet written): the process that takes the lock over restores every
///   counted record's old value, newest first, before it does anything else — the operation never
///   happened. The allocating process is dead, so its allocation is simply not made; a block it was
///   freeing stays allocated, recorded as its (the block is lost, as the issue allows). A restore
///   that is itself killed is repeated by the next process: restoring is idempotent.
/// - **after its last write, before clearing the journal**: the operation is undone all the same.
/// - **after the operation, before the caller stored the pointer it got**: the block stays in use,
///   recorded as the dead process's (its client record says which process held it).
/// - **while growing, after creating a store and before publishing it**: a store segment that nobody
///   uses; the next growth takes it over (same name) instead of creating another.
/// - **while holding no lock**: nothing that belongs to the heap.
/// So a kill never corrupts the heap and never wedges the others; ``check()`` finds nothing wrong
/// afterwards (once it has given a dead process's caches back: see "Thread caches"), and at most
/// the block being allocated or freed (two while reallocating by moving) is lost. ``statistics()`` tells, per client record, which process holds how much, and whether it is
/// alive.
///
/// ## Client records
/// Each process that opens the heap takes one of 63 client records (`cipc_heap_client`: its owner
/// token, its pid for display, how many cache records it made) and keeps it; the record's number
/// is the owner byte of every block it allocates or adopts and of its threads' cached blocks, which
/// is how ``statistics()`` counts usage per process. Record 0 stands for named objects and for a
/// process that found no record. A record and its blocks keep naming a process that ended (died,
/// or closed its last handle) until a process opens the heap and finds no free record; that opener
/// *recycles* the records of every ended process at once, under the lock (`HeapRecycle.swift`):
/// 1. the caches of the dead go back to the free lists (as on every open);
/// 2. one walk over every block re-tags each block in use of an ended record to the shared owner
///    `CIPC_HEAP_ENDED_CLIENT` ("ended processes", ``Statistics/Client/endedProcesses``, freed by
///    ``reclaimBlocksOfEndedProcesses(dryRun:)`` like the blocks of any ended process): one
///    compare-and-swap of the block's `info`, not journaled — both owners are true of the block,
///    and a live process putting it into its thread's cache meanwhile (without the lock, writing
///    its own number first) wins and owns it;
/// 3. each such record is released (its token set to 0) in a journaled operation of its own (a
///    record whose dead process still has cached blocks in the heap is kept);
/// then the opener takes a record. **Cost**: a liveness check per record, one walk of the block
/// headers, a compare-and-swap per block of an ended record, a journaled write per record — only in
/// an open that finds no free record and some ended one, never in an allocation or a free. The next
/// opens find the freed records without walking; at worst (62 processes that stay, short-lived ones
/// one after another) every open walks, as opening did before. Only when 63 processes have the heap
/// open at once does an opener get record 0.
///
/// What a process SIGKILLed while recycling leaves (crash points `heap.recycle#N`, counting every
/// write of the pass, re-tags then releases, and `heap.recycle#end` after its last):
/// - **between re-tags**: some blocks of ended records owned by "ended processes", the others still
///   by their records — both true, nothing lost; the next opener that finds no free record
///   recycles the rest.
/// - **while releasing a record**: undone by the next lock taker (the record still names its ended
///   process, and holds no block); the next recycling releases it.
/// - **after releasing, before taking one**: free records.
/// A scribbled owner byte (neither a client record nor ended processes) is `corrupt` for every
/// walk of the blocks, never an index out of bounds; a scribbled token makes its record look ended.
///
/// ## Never trust a peer
/// Any process that can write the heap can write anything into it. Every reference, size and link
/// read from it is checked before it is followed: a reference must lie within its store's blocks (the
/// bounds come from this process's own view of the store, checked once when it was mapped), a size
/// must keep a block within its store, a list's links must agree in both directions, a walk is
/// bounded by the number of blocks that could exist. A violation is `corrupt` (the operation changes
/// nothing: its writes are undone), never a crash or an access outside the heap's memory. A
/// ``SharedPointer`` carries a 24-bit tag that its block's header repeats while the block lives:
/// resolving a pointer to a freed block, to the middle of a block, to another heap, or to garbage is
/// `invalidPointer`.
///
/// ## Lifetimes
/// Store 0 has the heap's ``Lifetime``. Stores added by growth are persistent segments tied to it:
/// the last process to close a `.whileReferenced` heap removes them with it, ``remove(name:)``
/// removes them with a persistent one, and creating or opening a heap name removes the stores that
/// earlier heaps of that name left behind (their last holder was killed). `ipc rm` removes a heap
/// with its stores.
///
/// ## Named objects and reclaiming
/// ``findOrCreate(name:initialValue:type:)``, ``find(name:as:type:)`` and ``destroy(name:)`` give
/// blocks well-known, typed names (`SharedHeap+Names.swift`, `HeapDirectory.swift`: what a kill at
/// each of their steps leaves behind). What ended processes leave — orphan stores, blocks of dead
/// allocators — and what can be reclaimed is written down in `HeapReclaim.swift`
/// (``collectOrphanStores(dryRun:prefix:trusting:)``, ``reclaimBlocksOfEndedProcesses(dryRun:)``).
///
/// A heap is one kind of shared object (`SharedHeap+Object.swift`): store 0 is created, opened and
/// removed by the shared-objects storage, which checks its segment kind, tag and header before the
/// heap is built, and `ipc ls` / `ipc inspect` describe heaps and their stores. Stores added by
/// growth are the heap's own (`HeapSegments`).
public final class SharedHeap: Sendable {
    let core: HeapCore
    let segments: HeapSegments
    let handle: SegmentHandle
    /// The base file's identity, to tell after closing whether the name still refers to it.
    private let baseFile: (device: UInt64, inode: UInt64)?

    /// The heap's name.
    public var name: String { handle.name }
    /// When store 0's name is removed (stores added by growth go with it).
    public var lifetime: Lifetime { handle.lifetime }

    /// Longest heap name in bytes: a store's name adds a suffix (`~NONCE-i`) to it.
    public static let maximumNameLength = SharedMemory.maximumNameLength - HeapSegments.storeSuffixLength

    /// The largest alignment ``allocate(byteCount:alignment:)`` accepts.
    public static let maximumAlignment = 4096

    /// The smallest capacity a heap is created with (its header and a few blocks).
    public static let minimumCapacity = HeapLayout.roundUp(HeapLayout.firstBlockOfBase + 1024, to: 4096)

    /// A heap on the state the shared-objects framework checked (``validate(_:available:expecting:)``):
    /// store 0 of a named segment of kind `heap`.
    init(storage: SharedObjectStorage) throws(InterprocessError) {
        guard let handle = storage.segment, let lease = storage.lease else {
            throw InterprocessError(.invalidArgument, detail: "a heap is a named object of its own")
        }
        let header = storage.base + HeapLayout.headerOffset
        let nonce = load64(header + HeapLayout.heapNonce)
        let base = MappedStore(
            view: StoreView(
                base: storage.base, size: storage.available, first: HeapLayout.firstBlockOfBase,
                end: storage.available - HeapLayout.blockHeaderSize),
            owner: storage.mapping)
        let lock = try ProcessMutex.open(in: SharedMemory(handle: handle), at: HeapLayout.headerOffset + HeapLayout.heapLock)
        // Stores are created like store 0 (its permissions and group), and trusted if their owner is
        // store 0's owner or, when store 0 lets its group write, one of that group (who may grow it).
        var permissions = FilePermissions.ownerReadWrite
        var group: UInt32?
        var trust = TrustedOwners.currentUser
        var file: (device: UInt64, inode: UInt64)?
        if let fd = try? handle.duplicateDescriptor() {
            if let status = try? fd.status() {
                permissions = status.permissions
                group = status.group
                trust = .users([status.owner])
                if status.permissions.contains(.groupWrite) { trust = trust.union(.group(status.group)) }
                file = (status.device, status.inode)
            }
            try? fd.close()
        }
        baseFile = file
        segments = HeapSegments(heapName: handle.name, nonce: nonce, trust: trust, permissions: permissions, group: group)
        core = try HeapCore(name: handle.name, base: base, lock: lock, lease: lease, provider: segments)
        self.handle = handle
    }

    deinit { close() }

    // MARK: Creating and opening

    /// Creates a heap. Fails with `alreadyExists` if the name is taken.
    ///
    /// - Parameters:
    ///   - name: 1 to ``maximumNameLength`` bytes, no '/' and no NUL.
    ///   - capacity: bytes of store 0 (rounded up to whole pages), reserved now; at least
    ///     ``minimumCapacity``. Its headers take about 4.4 KB of it.
    ///   - maximumCapacity: how far the heap may grow, in bytes of all its stores; nil: never grows.
    ///   - permissions: of every store, as for ``SharedMemory/create(name:size:permissions:group:lifetime:)``.
    ///   - lifetime: ``Lifetime/whileReferenced`` by default.
    public static func create(
        name: String, capacity: Int, maximumCapacity: Int? = nil, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedHeap {
        try checkName(name)
        let heap = try SharedObjectStorage.create(
            SharedHeap.self, name: name, parameters: Parameters(capacity: capacity, maximumCapacity: maximumCapacity),
            permissions: permissions, lifetime: lifetime)
        HeapSegments.removeOrphanStores(heap: name, keeping: heap.core.nonce, trusting: .currentUser)
        return heap
    }

    /// Opens a heap that another process created. Fails with `notFound` if there is none (its stores
    /// left by a heap whose holders all died are removed then), `incompatible` if the segment is not a
    /// heap, `corrupt` if its header is inconsistent, `permissionDenied` if its owner is not trusted.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> SharedHeap {
        do {
            return try openWithoutSweeping(name: name, trusting: trust)
        } catch where error.code == .notFound {
            HeapSegments.removeOrphanStores(heap: name, keeping: nil, trusting: trust)
            throw error
        }
    }

    /// ``open(name:trusting:)`` without removing orphan stores when there is no heap (the waits of
    /// ``openWhenCreated(name:trusting:timeout:)`` poll it).
    private static func openWithoutSweeping(name: String, trusting trust: TrustedOwners) throws(InterprocessError) -> SharedHeap {
        do {
            return try SharedObjectStorage.open(SharedHeap.self, name: name, expecting: nil, trusting: trust)
        } catch where error.code == .corrupt {
            if let (index, _, _) = try? HeapSegments.peek(name, trusting: trust), index > 0 {
                throw InterprocessError(.incompatible, objectName: name, detail: "store \(index) of a heap, not a heap")
            }
            throw error
        }
    }

    /// Opens the heap `name`, suspending the task (no thread blocks) until a process has created it,
    /// for at most `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``: never a half-created heap, the
    /// checks of ``open(name:trusting:)``, `timedOut` and `cancelled` having opened nothing.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> SharedHeap {
        try await CreatorWait.open(name: name, what: "heap", timeout: timeout) { () throws(InterprocessError) in
            try openWithoutSweeping(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> SharedHeap {
        try CreatorWait.blockingOpen(name: name, what: "heap", timeout: timeout) { () throws(InterprocessError) in
            try openWithoutSweeping(name: name, trusting: trust)
        }
    }

    /// Opens the heap if it exists, or creates it; `created` tells which happened. An existing heap
    /// is used whatever its capacity.
    public static func openOrCreate(
        name: String, capacity: Int, maximumCapacity: Int? = nil, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (heap: SharedHeap, created: Bool) {
        try checkName(name)
        let (heap, created) = try SharedObjectStorage.openOrCreate(
            SharedHeap.self, name: name, parameters: Parameters(capacity: capacity, maximumCapacity: maximumCapacity),
            permissions: permissions, lifetime: lifetime, trusting: trust)
        if created { HeapSegments.removeOrphanStores(heap: name, keeping: heap.core.nonce, trusting: trust) }
        return (heap, created)
    }

    /// Removes a heap's name and its stores. Processes that hold it keep the stores they mapped;
    /// new opens fail with `notFound`. A segment that is not a heap is `incompatible` (and stays).
    public static func remove(name: String) throws(InterprocessError) {
        let nonce = try HeapSegments.nonce(ofHeap: name, trusting: .currentUser)
        try SharedObjectStorage.remove(SharedHeap.self, name: name)
        HeapSegments.removeStores(heap: name, nonce: nonce)
    }

    private static func checkName(_ name: String) throws(InterprocessError) {
        _ = try SharedMemory.osName(for: name)
        guard name.utf8.count <= maximumNameLength else {
            throw InterprocessError(.invalidName, objectName: name, detail: "a heap's name has at most \(maximumNameLength) bytes (its stores' names are longer)")
        }
    }

    /// Unregisters this process from the heap. The last holder of a `.whileReferenced` heap removes
    /// its name and its stores. Allocations made through this handle keep their memory mapped (their
    /// bytes stay accessible) but can no longer be freed through it. Idempotent; also done when the
    /// last reference goes away.
    public func close() {
        guard !core.isClosed else { return }
        core.markClosed()
        core.closeCaches()
        segments.closeAll()
        let lifetime = handle.lifetime
        let osName = handle.osName
        handle.close()
        guard lifetime == .whileReferenced, let baseFile else { return }
        // Whoever removed the name last removes the stores: the name is gone, or names another file.
        let named = try? SharedMemoryObject.status(ofName: osName)
        if named == nil || named!.inode != baseFile.inode || named!.device != baseFile.device {
            HeapSegments.removeStores(heap: segments.heapName, nonce: segments.nonce)
        }
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    /// Bytes of all stores now (store 0 and those growth added).
    public var capacity: Int { Int(truncatingIfNeeded: load64(core.header + HeapLayout.heapCapacity)) }

    /// Bytes the stores may grow to.
    public var maximumCapacity: Int { core.maximumCapacity }
}

// MARK: - Allocating

extension SharedHeap {
    /// Allocates `byteCount` bytes aligned to `alignment` (a power of two up to
    /// ``maximumAlignment``; every block is at least 16-byte aligned). Throws `outOfMemory` when no
    /// block fits and the heap is at its maximum capacity; the heap keeps working.
    public func allocate(byteCount: Int, alignment: Int = 16) throws(InterprocessError) -> SharedAllocation<UInt8> {
        let (word, address) = try core.allocate(byteCount: byteCount, alignment: alignment)
        return SharedAllocation(heap: self, word: word, address: address, byteCount: byteCount)
    }

    /// Allocates `byteCount` bytes set to zero (calloc).
    public func allocateZeroed(byteCount: Int, alignment: Int = 16) throws(InterprocessError) -> SharedAllocation<UInt8> {
        let (word, address) = try core.allocate(byteCount: byteCount, alignment: alignment)
        address.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        return SharedAllocation(heap: self, word: word, address: address, byteCount: byteCount)
    }

    /// Allocates room for one `T` and stores `value` in it.
    public func allocate<T: BitwiseCopyable>(_ value: T) throws(InterprocessError) -> SharedAllocation<T> {
        let byteCount = MemoryLayout<T>.size
        let (word, address) = try core.allocate(byteCount: byteCount, alignment: max(16, MemoryLayout<T>.alignment))
        address.storeBytes(of: value, as: T.self)
        return SharedAllocation(heap: self, word: word, address: address, byteCount: byteCount)
    }

    /// Allocates room for `count` values of `T`, each set to `value`.
    public func allocate<T: BitwiseCopyable>(repeating value: T, count: Int) throws(InterprocessError) -> SharedAllocation<T> {
        guard count >= 0, count <= HeapLayout.maximumStoreSize / max(MemoryLayout<T>.stride, 1) else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "\(count) values of \(T.self)")
        }
        let byteCount = count * MemoryLayout<T>.stride
        let (word, address) = try core.allocate(byteCount: byteCount, alignment: max(16, MemoryLayout<T>.alignment))
        address.initializeMemory(as: T.self, repeating: value, count: count)
        return SharedAllocation(heap: self, word: word, address: address, byteCount: byteCount)
    }

    /// Resizes `allocation` to `byteCount` bytes, keeping the first min(old, new) bytes: in place when
    /// it can (shrinking always can; growing can into a free neighbour), else by moving it. A nil
    /// `allocation` is allocated. If it throws, `allocation` is unchanged.
    public func reallocate<T>(_ allocation: inout SharedAllocation<T>?, byteCount: Int, alignment: Int = 16) throws(InterprocessError) {
        guard var current = allocation.take() else {
            let (word, address) = try core.allocate(byteCount: byteCount, alignment: alignment)
            allocation = SharedAllocation(heap: self, word: word, address: address, byteCount: byteCount)
            return
        }
        do throws(InterprocessError) {
            try current.reallocate(byteCount: byteCount, alignment: alignment)
            allocation = consume current
        } catch {
            allocation = consume current
            throw error
        }
    }

    /// Frees `allocation`; nil does nothing.
    public func deallocate<T>(_ allocation: consuming SharedAllocation<T>?) throws(InterprocessError) {
        guard let allocation = allocation.take() else { return }
        try allocation.deallocate()
    }

    /// Takes ownership of the block that `pointer` points at (a pointer another process handed over
    /// with ``SharedAllocation/relinquish()``). Throws `invalidPointer` unless it is a live block of
    /// this heap big enough for a `T`. The block is recorded as this process's from then on (in
    /// ``statistics()``, and for ``reclaimBlocksOfEndedProcesses(dryRun:)``).
    public func adopt<T>(_ pointer: SharedPointer<T>) throws(InterprocessError) -> SharedAllocation<T> {
        let (address, byteCount) = try core.resolve(pointer.bitPattern, minimumBytes: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        try core.recordOwner(pointer.bitPattern)
        return SharedAllocation(heap: self, word: pointer.bitPattern, address: address, byteCount: byteCount)
    }

    // MARK: Pointer words (the C-style layer)

    /// Allocates like ``allocate(byteCount:alignment:)`` but returns the bare pointer word, which
    /// nothing frees for you: free it exactly once with ``unsafeDeallocate(_:)`` (or ``adopt(_:)`` it).
    /// What the C ABI's malloc is built on.
    public func unsafeAllocate(byteCount: Int, alignment: Int = 16) throws(InterprocessError) -> SharedPointer<UInt8> {
        SharedPointer(bitPattern: try core.allocate(byteCount: byteCount, alignment: alignment).0)
    }

    /// Resizes the block of `pointer` like ``reallocate(_:byteCount:alignment:)`` (a null pointer
    /// allocates) and returns its new word; the old word must not be used again. If it throws, the
    /// old block is unchanged.
    public func unsafeReallocate<T>(_ pointer: SharedPointer<T>, byteCount: Int, alignment: Int = 16) throws(InterprocessError) -> SharedPointer<T> {
        SharedPointer(bitPattern: try core.reallocate(pointer.bitPattern, byteCount: byteCount, alignment: alignment).0)
    }

    /// Frees the block of `pointer`; a null pointer does nothing. Throws `invalidPointer` if it is not
    /// a live block of this heap (freed already, forged, another heap's): nothing is freed then.
    public func unsafeDeallocate<T>(_ pointer: SharedPointer<T>) throws(InterprocessError) {
        try core.free(pointer.bitPattern)
    }
}

// MARK: - Reaching the pointee

extension SharedHeap {
    /// The bytes the block of `pointer` holds (what its allocation asked for). Throws
    /// `invalidPointer` unless `pointer` is a live block of this heap.
    public func byteCount<T>(of pointer: SharedPointer<T>) throws(InterprocessError) -> Int {
        try core.resolve(pointer.bitPattern, minimumBytes: 0, alignment: 1).byteCount
    }

    /// Whether `pointer` points at a live block of this heap now.
    public func contains<T>(_ pointer: SharedPointer<T>) -> Bool {
        (try? core.resolve(pointer.bitPattern, minimumBytes: 0, alignment: 1)) != nil
    }

    /// The value `pointer` points at. Throws `invalidPointer` unless it is a live block of this heap
    /// that holds a `T`.
    public func load<T: BitwiseCopyable>(_ pointer: SharedPointer<T>) throws(InterprocessError) -> T {
        try core.resolve(pointer.bitPattern, minimumBytes: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment).address.load(as: T.self)
    }

    /// Stores `value` where `pointer` points. Throws `invalidPointer` unless it is a live block of
    /// this heap that holds a `T`.
    public func store<T: BitwiseCopyable>(_ value: T, at pointer: SharedPointer<T>) throws(InterprocessError) {
        try core.resolve(pointer.bitPattern, minimumBytes: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment).address.storeBytes(of: value, as: T.self)
    }

    /// Calls `body` with the bytes of the block `pointer` points at. Throws `invalidPointer` unless
    /// it is a live block of this heap. The buffer must not escape `body`; other processes may
    /// change the bytes at any time.
    public func withUnsafeMutableBytes<T, R>(of pointer: SharedPointer<T>, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let (address, byteCount) = try core.resolve(pointer.bitPattern, minimumBytes: 0, alignment: 1)
        return try withExtendedLifetime(self) { try body(UnsafeMutableRawBufferPointer(start: address, count: byteCount)) }
    }

    /// Calls `body` with the `T` that `pointer` points at. Throws `invalidPointer` unless it is a live
    /// block of this heap that holds a `T`. The pointer must not escape `body`.
    public func withUnsafeMutablePointer<T: BitwiseCopyable, R>(to pointer: SharedPointer<T>, _ body: (UnsafeMutablePointer<T>) throws -> R) throws -> R {
        let (address, _) = try core.resolve(pointer.bitPattern, minimumBytes: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        return try withExtendedLifetime(self) { try body(address.assumingMemoryBound(to: T.self)) }
    }
}

// MARK: - The allocator's entry points

extension HeapCore {
    func checkAlignment(_ alignment: Int) throws(InterprocessError) {
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment <= SharedHeap.maximumAlignment else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "alignment \(alignment) is not a power of two up to \(SharedHeap.maximumAlignment)")
        }
    }

    /// The granules and unused bytes of a block for `byteCount` bytes.
    @inline(__always)
    func blockSize(forPayload byteCount: Int) throws(InterprocessError) -> (UInt32, UInt32) {
        guard byteCount >= 0 else { throw InterprocessError(.invalidSize, objectName: name, detail: "\(byteCount) bytes") }
        guard let granules = HeapLayout.granules(forPayload: byteCount), byteCount <= maximumCapacity else {
            throw InterprocessError(.outOfMemory, objectName: name, detail: "\(byteCount) bytes is more than the heap can ever hold")
        }
        return (granules, UInt32(Int(granules) * HeapLayout.granule - HeapLayout.blockHeaderSize - byteCount))
    }

    func outOfMemory(_ byteCount: Int) -> InterprocessError {
        InterprocessError(.outOfMemory, objectName: name, detail: "no free block of \(byteCount) bytes, and the heap is at its maximum capacity of \(maximumCapacity) bytes")
    }

    @inline(__always)
    func allocate(byteCount: Int, alignment: Int) throws(InterprocessError) -> (UInt64, UnsafeMutableRawPointer) {
        if alignment == HeapLayout.granule && byteCount >= 0 && byteCount <= HeapLayout.cacheablePayload && !isClosed,
           let slot = threadSlot() {
            let granules = max(HeapLayout.minimumBlock, UInt32(truncatingIfNeeded: (byteCount &+ HeapLayout.blockHeaderSize &+ HeapLayout.granule &- 1) / HeapLayout.granule))
            let slack = UInt32(truncatingIfNeeded: Int(granules) &* HeapLayout.granule &- HeapLayout.blockHeaderSize &- byteCount)
            if let result = try cachedAllocate(slot, size: granules, slack: slack) { return result }
        }
        if alignment != HeapLayout.granule { try checkAlignment(alignment) }
        let (granules, slack) = try blockSize(forPayload: byteCount)
        let result = try withLock(.allocate) { (op: inout HeapOperation) throws(InterprocessError) in
            try allocateLocked(granules: granules, slack: slack, alignment: alignment, &op)
        }
        guard let (word, block) = result else { throw outOfMemory(byteCount) }
        return (word, block.pointer + HeapLayout.blockHeaderSize)
    }

    @inline(__always)
    func free(_ word: UInt64) throws(InterprocessError) {
        if word == 0 { return }
        if !isClosed, let slot = threadSlot(), cachedFree(slot, word) { return }
        try withLock(.free) { (op: inout HeapOperation) throws(InterprocessError) in try freeLocked(word, &op) }
    }

    func reallocate(_ word: UInt64, byteCount: Int, alignment: Int) throws(InterprocessError) -> (UInt64, UnsafeMutableRawPointer) {
        if word == 0 { return try allocate(byteCount: byteCount, alignment: alignment) }
        try checkAlignment(alignment)
        let (granules, slack) = try blockSize(forPayload: byteCount)
        let outcome = try withLock(.reallocate) { (op: inout HeapOperation) throws(InterprocessError) in
            try reallocateLocked(word, granules: granules, slack: slack, alignment: alignment, &op)
        }
        switch outcome {
        case .inPlace(let word, let block):
            return (word, block.pointer + HeapLayout.blockHeaderSize)
        case .move(let oldBytes):
            let (newWord, newAddress) = try allocate(byteCount: byteCount, alignment: alignment)
            do throws(InterprocessError) {
                let (old, _, _) = try liveBlock(word)
                newAddress.copyMemory(from: old.pointer + HeapLayout.blockHeaderSize, byteCount: min(oldBytes, byteCount))
                try free(word)
            } catch {
                try? free(newWord)
                throw error
            }
            return (newWord, newAddress)
        }
    }

    /// The address and byte count of the live block `word` points at, checked to hold
    /// `minimumBytes` at `alignment`; no lock.
    @inline(__always)
    func resolve(_ word: UInt64, minimumBytes: Int, alignment: Int) throws(InterprocessError) -> (address: UnsafeMutableRawPointer, byteCount: Int) {
        let (block, size, _) = try liveBlock(word)
        let slack = Int((block.info >> 8) & 0xFF)
        let usable = Int(size) * HeapLayout.granule - HeapLayout.blockHeaderSize
        guard slack <= usable else { throw corrupt("block at \(block.offset) of store \(block.store) records \(slack) unused bytes") }
        let address = block.pointer + HeapLayout.blockHeaderSize
        guard usable - slack >= minimumBytes, Int(bitPattern: address) % alignment == 0 else {
            throw invalidPointer(word, "the block holds \(usable - slack) bytes, not a \(minimumBytes)-byte value at \(alignment)-byte alignment")
        }
        return (address, usable - slack)
    }
}
