import CInterprocess
import InterprocessSystem

extension SharedHeap {
    /// What a heap holds, counted by walking every block under its lock.
    public struct Statistics: Sendable, Hashable, Codable {
        /// Bytes of all stores.
        public var capacity: Int
        /// Bytes the stores may grow to.
        public var maximumCapacity: Int
        /// Stores (segments) of the heap.
        public var stores: Int
        /// Bytes of the blocks in use, their headers included.
        public var usedBytes: Int
        /// Bytes their allocations asked for.
        public var requestedBytes: Int
        /// Bytes of the free blocks (merged, on quick lists, or in a thread's cache), their headers included.
        public var freeBytes: Int
        /// The largest payload one free block offers now to any process (without merging quick
        /// blocks or growing; blocks in threads' caches do not count).
        public var largestFreeBlock: Int
        /// Blocks in use.
        public var blocks: Int
        /// Free blocks (those in threads' caches included).
        public var freeBlocks: Int
        /// Free blocks that are in a thread's cache: free, but only for that thread (or, once its
        /// process ended, for whoever reclaims them).
        public var cachedBlocks: Int
        /// Their bytes, headers included (part of ``freeBytes``).
        public var cachedBytes: Int
        /// Bytes of the heap's own headers: store headers, the heap header, end markers, and the
        /// records of threads' caches.
        public var overheadBytes: Int
        /// Operations of processes that died holding the lock, undone by others.
        public var recoveries: Int
        /// Usage per process (per client record), for the records that hold blocks or a process.
        public var clients: [Client]

        /// One process's usage.
        public struct Client: Sendable, Hashable, Codable {
            /// The client record (0: named objects and their directory, which belong to their
            /// names, and blocks of processes that found no free record; ``endedProcesses``: the
            /// blocks of processes that ended and whose records were recycled).
            public var record: Int
            /// The process's pid as it saw it (0 for record 0).
            public var pid: Int32
            /// Whether the process still has the heap open (for record 0: false).
            public var isAlive: Bool
            /// Blocks it allocated that are still in use.
            public var blocks: Int
            /// Their bytes, headers included.
            public var bytes: Int
            /// Free blocks in the caches of its threads.
            public var cachedBlocks: Int

            /// The ``record`` that stands for every process that ended and whose client record was
            /// recycled for a process that opened the heap later (pid 0, not alive): which of them
            /// allocated a block is no longer known, but that its allocator ended is, so
            /// ``SharedHeap/reclaimBlocksOfEndedProcesses(dryRun:)`` frees these blocks too.
            public static let endedProcesses = Int(CIPC_HEAP_ENDED_CLIENT)

            /// Whether this stands for the ended processes whose records were recycled.
            public var isEndedProcesses: Bool { record == Self.endedProcesses }
        }

        /// 1 − largest free block ÷ free bytes: 0 when all free memory is one block.
        public var fragmentation: Double {
            freeBytes == 0 ? 0 : 1 - Double(largestFreeBlock + HeapLayout.blockHeaderSize) / Double(freeBytes)
        }
    }

    /// The result of ``check()``.
    public struct CheckReport: Sendable, Hashable {
        /// Every inconsistency found, in words (empty when the heap is sound).
        public var problems: [String]
        /// The statistics, when the walk got through every store.
        public var statistics: Statistics?
        /// Whether no problem was found.
        public var isConsistent: Bool { problems.isEmpty }
    }

    /// Counts blocks, bytes and per-process usage. Throws `corrupt` if the walk meets a damaged
    /// block (``check()`` tells everything that is wrong). Changes nothing: the caches of processes
    /// that ended are counted as they are.
    public func statistics() throws(InterprocessError) -> Statistics {
        try core.withLock(.claim) { (_: inout HeapOperation) throws(InterprocessError) in try core.statisticsLocked() }
    }

    /// Walks the whole heap under its lock — every block of every store, every free and quick list,
    /// the class bitmap, the journal — and reports every inconsistency it finds. A heap that only
    /// saw crashes (no scribbling) always checks clean.
    ///
    /// It repairs one thing first: the threads' caches of processes that ended (killed, or gone
    /// without closing the heap) go back to the free lists, as an allocation that finds no fit, or
    /// a process that opens the heap, would do anyway.
    public func check() throws(InterprocessError) -> CheckReport {
        try core.withLock(.claim) { (op: inout HeapOperation) throws(InterprocessError) in
            _ = try? core.reclaimDeadCaches(&op)
            op.commit()
            return core.checkLocked()
        }
    }
}

extension HeapCore {
    func statisticsLocked() throws(InterprocessError) -> SharedHeap.Statistics {
        var stats = SharedHeap.Statistics(
            capacity: Int(truncatingIfNeeded: load64(header + HeapLayout.heapCapacity)), maximumCapacity: maximumCapacity,
            stores: storeCount, usedBytes: 0, requestedBytes: 0, freeBytes: 0, largestFreeBlock: 0, blocks: 0, freeBlocks: 0,
            cachedBlocks: 0, cachedBytes: 0, overheadBytes: 0, recoveries: Int(truncatingIfNeeded: load64(header + HeapLayout.heapRecoveries)), clients: [])
        // Per client record, and last the ended processes whose records were recycled (the walk
        // checked every owner byte).
        var perClient = [(blocks: Int, bytes: Int, cached: Int)](repeating: (0, 0, 0), count: HeapLayout.clientCount + 1)
        @inline(__always) func slot(_ info: UInt32) -> Int { info & 0xFF == HeapLayout.endedClient ? HeapLayout.clientCount : Int(info & 0xFF) }
        var blockBytes = 0
        try walkBlocks { block, size, state in
            let bytes = Int(size) * HeapLayout.granule
            if state == HeapLayout.cacheRecord { return }  // overhead
            blockBytes += bytes
            if state == HeapLayout.cached {
                stats.freeBlocks += 1
                stats.freeBytes += bytes
                stats.cachedBlocks += 1
                stats.cachedBytes += bytes
                perClient[slot(block.info)].cached += 1
            } else if state & HeapLayout.inUse != 0 {
                stats.blocks += 1
                stats.usedBytes += bytes
                stats.requestedBytes += bytes - HeapLayout.blockHeaderSize - min(Int((block.info >> 8) & 0xFF), bytes - HeapLayout.blockHeaderSize)
                let client = slot(block.info)
                perClient[client].blocks += 1
                perClient[client].bytes += bytes
            } else {
                stats.freeBlocks += 1
                stats.freeBytes += bytes
                stats.largestFreeBlock = max(stats.largestFreeBlock, bytes - HeapLayout.blockHeaderSize)
            }
        }
        stats.overheadBytes = stats.capacity - blockBytes
        for index in 0..<HeapLayout.clientCount {
            let token = index == 0 ? 0 : load64(clientRecord(index) + HeapLayout.clientToken)
            let alive = token != 0 && lease.isAlive(token)
            guard perClient[index].blocks > 0 || perClient[index].cached > 0 || alive else { continue }
            stats.clients.append(.init(
                record: index, pid: index == 0 ? 0 : OwnerLease.displayPID(of: token), isAlive: alive,
                blocks: perClient[index].blocks, bytes: perClient[index].bytes, cachedBlocks: perClient[index].cached))
        }
        let ended = perClient[HeapLayout.clientCount]
        if ended.blocks > 0 {
            stats.clients.append(.init(
                record: SharedHeap.Statistics.Client.endedProcesses, pid: 0, isAlive: false, blocks: ended.blocks, bytes: ended.bytes, cachedBlocks: 0))
        }
        return stats
    }

    func clientRecord(_ index: Int) -> UnsafeMutableRawPointer {
        header + HeapLayout.heapClients + index * HeapLayout.clientStride
    }

    /// The whole check, collecting problems rather than stopping at the first.
    func checkLocked() -> SharedHeap.CheckReport {
        var problems: [String] = []
        func problem(_ text: String) { problems.append(text) }

        // The header.
        if load32(header + HeapLayout.heapTag) != CIPC_TAG_HEAP { problem("the heap header's tag was overwritten") }
        if load32(header + HeapLayout.heapVersion) != CIPC_HEAP_VERSION { problem("the heap header's version was overwritten") }
        if load64(header + HeapLayout.heapNonce) != nonce { problem("the heap header's nonce changed") }
        let rawStores = Int(load32(storeCountWord))
        if rawStores < 1 || rawStores > HeapLayout.maximumStores { problem("the store count is \(rawStores)") }
        let journal = load32(journalCount)
        if journal != 0 { problem("the journal holds \(journal) records of an unfinished operation") }

        // Every block of every store.
        struct Free { var size: UInt32; var quick: Bool; var seen = false }
        var free: [UInt64: Free] = [:]
        var cachingClients = Set<Int>()
        var capacity = 0
        var walked = true
        for store in 0..<storeCount {
            let view: StoreView
            do { view = try self.view(store) } catch {
                problem("store \(store) cannot be mapped: \(error)")
                walked = false
                continue
            }
            capacity += view.size
            var block = HeapBlock(store: store, offset: view.first, pointer: view.base + view.first, limit: view.end)
            var previousFree: UInt32 = 0
            while !block.isEndMarker {
                let size = block.size
                let state = block.state
                let at = "block at \(block.offset) of store \(store)"
                guard size >= HeapLayout.minimumBlock, Int(size) <= (block.limit - block.offset) / HeapLayout.granule else {
                    problem("\(at) has size \(size): the rest of store \(store) cannot be walked")
                    walked = false
                    break
                }
                if block.prevSize != previousFree {
                    problem("\(at) records a free predecessor of \(block.prevSize) granules; it is \(previousFree)")
                }
                switch state {
                case HeapLayout.free:
                    if previousFree != 0 { problem("\(at) is free and so is the block before it: they were not merged") }
                    free[block.ref] = Free(size: size, quick: false)
                    previousFree = size
                case HeapLayout.quick:
                    free[block.ref] = Free(size: size, quick: true)
                    previousFree = 0
                case HeapLayout.cached:
                    let owner = Int(block.info & 0xFF)
                    if size >= HeapLayout.quickLimit { problem("\(at) is cached but has \(size) granules") }
                    if owner == 0 || owner >= HeapLayout.clientCount { problem("\(at) is cached by client \(owner)") }
                    else { cachingClients.insert(owner) }
                    previousFree = 0
                case HeapLayout.cacheRecord:
                    let owner = Int(block.info & 0xFF)
                    if size < HeapLayout.cacheRecordGranules { problem("\(at) is a cache record of \(size) granules") }
                    if owner == 0 || owner >= HeapLayout.clientCount || block.info >> 8 != 0 { problem("\(at) is a cache record with info 0x\(String(block.info, radix: 16))") }
                    else { cachingClients.insert(owner) }
                    previousFree = 0
                default:
                    if state & HeapLayout.inUse == 0 || state & HeapLayout.tagMask == 0 || state & ~(HeapLayout.inUse | HeapLayout.tagMask) != 0 {
                        problem("\(at) has state 0x\(String(state, radix: 16))")
                    } else {
                        let slack = Int((block.info >> 8) & 0xFF)
                        if slack > Int(size) * HeapLayout.granule - HeapLayout.blockHeaderSize { problem("\(at) records \(slack) unused bytes") }
                        if block.info >> 16 != 0 { problem("\(at) has info 0x\(String(block.info, radix: 16))") }
                        if !Self.isOwnerOfBlockInUse(block.info & 0xFF) { problem("\(at) is in use with owner \(block.info & 0xFF), neither a client record nor ended processes") }
                    }
                    previousFree = 0
                }
                block = block.advanced(by: size)
            }
            if block.isEndMarker {
                if block.state != HeapLayout.end { problem("the end marker of store \(store) was overwritten") }
                if block.prevSize != previousFree { problem("the end marker of store \(store) records a free predecessor of \(block.prevSize) granules; it is \(previousFree)") }
            }
        }
        for owner in cachingClients.sorted() where load32(clientCachesPlace(owner).pointer) == 0 {
            problem("client \(owner) has cached blocks or cache records but its record counts no cache")
        }
        let recorded = Int(truncatingIfNeeded: load64(header + HeapLayout.heapCapacity))
        if walked && recorded != capacity { problem("the capacity is recorded as \(recorded) bytes; the stores hold \(capacity)") }
        if recorded > maximumCapacity { problem("the capacity \(recorded) exceeds the maximum \(maximumCapacity)") }

        // The free lists and the bitmap.
        let limit = stepLimit
        for sizeClass in 0..<256 {
            let first = load64(heads + sizeClass * 8)
            let marked = sizeClass < HeapLayout.classCount && load64(bitmap + (sizeClass >> 6) * 8) & (1 << UInt64(sizeClass & 63)) != 0
            if (first != 0) != marked { problem("class \(sizeClass): the bitmap says \(marked ? "non-empty" : "empty"), the list head is \(first)") }
            var ref = first
            var previous: UInt64 = 0
            var steps = 0
            while ref != 0 {
                steps += 1
                guard steps <= limit else { problem("the free list of class \(sizeClass) has a cycle"); break }
                guard var entry = free[ref], !entry.quick else { problem("the free list of class \(sizeClass) leads to \(ref), which is not a free block"); break }
                if entry.seen { problem("free block \(ref) is on a list twice"); break }
                entry.seen = true
                free[ref] = entry
                if HeapLayout.sizeClass(entry.size) != sizeClass { problem("free block \(ref) of \(entry.size) granules is on the list of class \(sizeClass)") }
                guard let block = try? locate(ref) else { break }
                if block.prev != previous { problem("free block \(ref) links back to \(block.prev), not \(previous)") }
                previous = ref
                ref = block.next
            }
        }
        for size in 0..<Int(HeapLayout.quickLimit) {
            var ref = load64(quickHeads + size * 8)
            var steps = 0
            while ref != 0 {
                steps += 1
                guard steps <= limit else { problem("the quick list of \(size) granules has a cycle"); break }
                guard var entry = free[ref], entry.quick else { problem("the quick list of \(size) granules leads to \(ref), which is not a quick block"); break }
                if entry.seen { problem("quick block \(ref) is on a list twice"); break }
                entry.seen = true
                free[ref] = entry
                if entry.size != UInt32(size) { problem("quick block \(ref) of \(entry.size) granules is on the list of \(size)") }
                guard let block = try? locate(ref) else { break }
                ref = block.next
            }
        }
        if walked {
            let lost = free.filter { !$0.value.seen }
            if !lost.isEmpty {
                problem("\(lost.count) free block(s) on no list: \(lost.keys.sorted().prefix(8).map { String($0) }.joined(separator: ", "))")
            }
        }
        checkDirectory(problem)
        let statistics = problems.isEmpty ? try? statisticsLocked() : nil
        return SharedHeap.CheckReport(problems: problems, statistics: statistics)
    }
}
