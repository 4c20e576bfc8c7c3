#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import CInterprocess
import Dispatch
import Synchronization

/// The heap's thread caches (heaps of at least 1 MB): small blocks freed into the freeing thread's
/// cache and taken back from it without the lock; cross-process frees; a process killed holding
/// cached blocks, or at every step of a cache operation, leaves a heap that `check()` finds clean
/// once it has given the dead process's cache back; a scribbled cache is `corrupt`.
@Suite("SharedHeap caches", .serialized, .timeLimit(.minutes(5)))
struct SharedHeapCacheTests {
    /// Offsets in the segment file (the payload starts at 4096), from the C definitions.
    static let payload = SharedMemory.payloadOffset
    static func blockField(_ payloadOffset: Int, _ field: PartialKeyPath<cipc_heap_block>) -> Int {
        payload + payloadOffset - MemoryLayout<cipc_heap_block>.size + MemoryLayout<cipc_heap_block>.offset(of: field)!
    }
    static func offset(_ pointer: SharedPointer<UInt8>) -> Int { Int(pointer.bitPattern & ((1 << 34) - 1)) * 16 }
    static func bytes<T>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    @Test func smallBlocksAreCachedCountedAndReusedWithANewTag() throws {
        try withCleanNames("heapcache") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 4 << 20)
            let first = try heap.unsafeAllocate(byteCount: 64)
            try heap.unsafeDeallocate(first)
            var stats = try heap.statistics()
            #expect(stats.cachedBlocks == 1 && stats.blocks == 0, "\(stats)")
            #expect(stats.usedBytes + stats.freeBytes + stats.overheadBytes == stats.capacity)
            #expect(stats.clients.first { $0.pid == getpid() }?.cachedBlocks == 1)
            // A stale pointer to it is refused, also once the block is handed out again.
            #expect(!heap.contains(first))
            expectError(.invalidPointer) { try heap.unsafeDeallocate(first) }
            let second = try heap.unsafeAllocate(byteCount: 64)
            #expect(Self.offset(second) == Self.offset(first), "taken back from the cache")
            #expect(second.bitPattern != first.bitPattern, "with a new tag")
            expectError(.invalidPointer) { _ = try heap.byteCount(of: first) }
            #expect(try heap.byteCount(of: second) == 64)
            try expectClean(heap)
            // Other sizes, many at once: the cache holds up to its limit, the rest goes to the quick lists.
            var blocks: [SharedPointer<UInt8>] = []
            for size in [1, 16, 17, 100, 200, 480] {
                for _ in 0..<50 { blocks.append(try heap.unsafeAllocate(byteCount: size)) }
            }
            for block in blocks { try heap.unsafeDeallocate(block) }
            stats = try heap.statistics()
            #expect(stats.cachedBlocks > 6 && stats.cachedBlocks < blocks.count, "\(stats.cachedBlocks)")
            try expectClean(heap)
            try heap.unsafeDeallocate(second)
            // Closing gives the cache back: another handle sees no cached block and no record.
            let other = try SharedHeap.open(name: name)
            let before = try other.statistics()
            heap.close()
            let after = try other.statistics()
            #expect(after.cachedBlocks == 0 && after.blocks == 0, "\(after)")
            #expect(after.overheadBytes < before.overheadBytes, "the cache record went too")
            try expectClean(other)
            other.close()
        }
    }

    @Test func manyThreadsAllocateAndFreeEachWithTheirCache() throws {
        try withCleanNames("heapcachethreads") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 1 << 20)
            let failures = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                var live: [(SharedPointer<UInt8>, UInt8)] = []
                for step in 0..<20_000 {
                    if live.count < 40 && (live.isEmpty || step % 3 != 0) {
                        guard let block = try? heap.unsafeAllocate(byteCount: [8, 48, 64, 200, 480][step % 5]) else {
                            failures.add(1, ordering: .relaxed)
                            continue
                        }
                        let pattern = UInt8(truncatingIfNeeded: thread &* 37 &+ step)
                        _ = try? heap.withUnsafeMutableBytes(of: block) { _ = $0.initializeMemory(as: UInt8.self, repeating: pattern) }
                        live.append((block, pattern))
                    } else {
                        let (block, pattern) = live.remove(at: step % live.count)
                        let intact = (try? heap.withUnsafeMutableBytes(of: block) { $0.allSatisfy { $0 == pattern } }) ?? false
                        if !intact || (try? heap.unsafeDeallocate(block)) == nil { failures.add(1, ordering: .relaxed) }
                    }
                }
                for (block, _) in live where (try? heap.unsafeDeallocate(block)) == nil { failures.add(1, ordering: .relaxed) }
            }
            #expect(failures.load(ordering: .relaxed) == 0)
            try expectClean(heap)
            #expect(try heap.statistics().blocks == 0)
        }
    }

    /// An allocation that finds no fit flushes this thread's cache before it gives up: a cached
    /// block in the middle of the only store does not keep a block of more than half of it from
    /// fitting.
    @Test func anAllocationThatFindsNoFitFlushesThisThreadsCache() throws {
        try withCleanNames("heapcacheflush") { name in
            let heap = try SharedHeap.create(name: name, capacity: 1 << 20)
            var blocks: [SharedPointer<UInt8>] = []
            while let block = try allocateUnlessFull(heap, 64) { blocks.append(block) }
            try heap.unsafeDeallocate(blocks[blocks.count / 2])  // into the cache, mid-store
            for (index, block) in blocks.enumerated() where index != blocks.count / 2 { try heap.unsafeDeallocate(block) }
            #expect(try heap.statistics().cachedBlocks > 0)
            let big = try heap.unsafeAllocate(byteCount: 900 * 1024)
            #expect(try heap.statistics().cachedBlocks == 0)
            try heap.unsafeDeallocate(big)
            try expectClean(heap)
        }
    }

    /// A block allocated in one process is freed in another (into the freer's cache), and the
    /// other way round; a stale word is refused everywhere; the peer's cache goes back when it
    /// closes the heap.
    @Test func aBlockAllocatedInOneProcessIsFreedInAnother() throws {
        try withCleanNames("heapcachecross") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 4 << 20)
            let peer = try Peer.spawn("heap-peer", name)
            defer { peer.stop() }
            #expect(peer.readLine() == "ready")
            // Ours, freed there.
            let mine = try heap.unsafeAllocate(byteCount: 64)
            peer.tell("free \(mine.bitPattern)")
            #expect(peer.readLine() == "freed")
            #expect(!heap.contains(mine))
            expectError(.invalidPointer) { try heap.unsafeDeallocate(mine) }
            #expect(try heap.statistics().cachedBlocks == 1, "in the peer's cache")
            peer.tell("free \(mine.bitPattern)")
            #expect(peer.readLine() == "invalidPointer", "a double free there too")
            // The peer takes it back from its cache; our stale word stays refused.
            peer.tell("alloc 64")
            let theirs = SharedPointer<UInt8>(bitPattern: UInt64(peer.readLine() ?? "") ?? 0)
            #expect(Self.offset(theirs) == Self.offset(mine) && theirs.bitPattern != mine.bitPattern)
            #expect(try heap.byteCount(of: theirs) == 64)
            // Theirs, freed here (into this thread's cache), and taken back here.
            try heap.unsafeDeallocate(theirs)
            peer.tell("size \(theirs.bitPattern)")
            #expect(peer.readLine() == "invalidPointer")
            let again = try heap.unsafeAllocate(byteCount: 64)
            #expect(Self.offset(again) == Self.offset(mine))
            try heap.unsafeDeallocate(again)
            peer.tell("problems")
            #expect(peer.readLine() == "0")
            // Some blocks in the peer's cache: they go back when it closes the heap.
            let words = try (0..<4).map { _ in try heap.unsafeAllocate(byteCount: 100) }
            for word in words {
                peer.tell("free \(word.bitPattern)")
                #expect(peer.readLine() == "freed")
            }
            let peerRecord = { try heap.statistics().clients.first { $0.pid != getpid() } }
            #expect(try peerRecord()?.cachedBlocks == 4)
            peer.tell("quit")
            #expect(peer.readLine() == "bye")
            #expect(peer.wait(timeout: .seconds(30)) == .exited(0))
            #expect(try peerRecord()?.cachedBlocks ?? 0 == 0)
            try expectClean(heap)
        }
    }

    /// A process killed while its cache holds blocks: nobody else may take them while it lives;
    /// once it is dead, `check()` gives them back (and so would an allocation that finds no fit,
    /// or a process that opens the heap), and the check is clean.
    @Test func aProcessKilledHoldingCachedBlocksHasThemReclaimed() throws {
        try withCleanNames("heapcachekill") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 4 << 20)
            let child = try Peer.spawn("heap-cache-hold", name, "20")
            let line = child.readLine(timeout: .seconds(30)) ?? ""
            let held = Int(line.split(separator: " ").last ?? "") ?? 0
            #expect(line.hasPrefix("cached ") && held > 0, "\(line)")
            try expectClean(heap)
            #expect(try heap.statistics().cachedBlocks == held, "a live process keeps its cache")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            child.closePipes()
            #expect(try heap.statistics().cachedBlocks == held, "counted until reclaimed")
            try expectClean(heap)
            let stats = try heap.statistics()
            #expect(stats.cachedBlocks == 0 && stats.blocks == 0, "\(stats)")
            #expect(stats.clients.allSatisfy { $0.isAlive || ($0.blocks == 0 && $0.cachedBlocks == 0) }, "\(stats.clients)")
            // A second dead process, reclaimed this time by a process that opens the heap.
            let second = try Peer.spawn("heap-cache-hold", name, "10")
            #expect(second.readLine(timeout: .seconds(30))?.hasPrefix("cached ") == true)
            second.kill(signal: SIGKILL)
            #expect(second.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            second.closePipes()
            let opener = try SharedHeap.open(name: name)
            #expect(try opener.statistics().cachedBlocks == 0)
            opener.close()
            // A child that quits cleanly gives its cache back itself.
            let third = try Peer.spawn("heap-cache-hold", name, "10")
            #expect(third.readLine(timeout: .seconds(30))?.hasPrefix("cached ") == true)
            third.tell("quit")
            #expect(third.readLine(timeout: .seconds(30)) == "bye")
            #expect(third.wait(timeout: .seconds(30)) == .exited(0))
            #expect(try heap.statistics().cachedBlocks == 0)
            try expectClean(heap)
        }
    }

    /// A child is SIGKILLed right after the 1st, 2nd, … write of a cache step — the lock-free
    /// ones (cache-allocate, cache-free: plain writes, no journal) and the journaled ones (a record
    /// made, a cache flushed when the heap is closed, a dead process's cache reclaimed): each time
    /// the heap checks clean once the dead child's cache is given back, no cached block is left,
    /// the child holds at most the block it was working on, and the heap fills and empties again.
    @Test(arguments: ["cache-allocate", "cache-free", "cache-create", "cache-flush", "cache-reclaim"])
    func aChildKilledAtEveryWriteOfACacheStepLeavesASoundHeap(step: String) throws {
        try withCleanNames("heapcachestep") { prefix in
            let lockFree = step == "cache-allocate" || step == "cache-free"
            func run(_ write: String) throws -> Bool {
                let name = "\(prefix)-\(write)"
                let point = "heap.\(step)#\(write)"
                let heap = try SharedHeap.create(name: name, capacity: 64 * 1024, maximumCapacity: 1 << 20)
                if step == "cache-reclaim" {
                    // A dead process's cache for the armed child to reclaim when it opens the heap.
                    let holder = try Peer.spawn("heap-cache-hold", name, "8")
                    #expect(holder.readLine(timeout: .seconds(30))?.hasPrefix("cached ") == true)
                    holder.kill(signal: SIGKILL)
                    #expect(holder.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
                    holder.closePipes()
                }
                let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "heap-op", name, step)
                let outcome = child.wait(timeout: .seconds(60))
                child.closePipes()
                #expect(outcome == .exited(0) || outcome == .signaled(SIGKILL), "\(point): \(String(describing: outcome))")
                try expectClean(heap)
                let stats = try heap.statistics()
                #expect(stats.cachedBlocks == 0, "\(point): \(stats.cachedBlocks) cached blocks left")
                #expect(stats.blocks <= 1, "\(point): \(stats.blocks) blocks left in use")
                var blocks: [SharedPointer<UInt8>] = []
                while let block = try allocateUnlessFull(heap, 700) { blocks.append(block) }
                #expect(blocks.count > 1000, "\(point): \(blocks.count)")
                for block in blocks { try heap.unsafeDeallocate(block) }
                try expectClean(heap)
                heap.close()
                return outcome == .exited(0)
            }
            var write = 1
            while try !run(String(write)) {
                write += 1
                guard write < 64 else { Issue.record("\(step) never completed"); return }
            }
            #expect(write > 1, "\(step) makes no write")
            if lockFree {
                #expect(write == (step == "cache-allocate" ? 4 : 6), "\(step) completed at write \(write)")
            } else {
                #expect(try !run("end"), "killed after its last write")
            }
        }
    }

    /// A peer that writes over a cached block: taking it from the cache is `corrupt` (the cache's
    /// list of that size is dropped), the next allocation works, `check()` names the block.
    @Test func aScribbledCacheIsCorruptNotACrash() throws {
        try withCleanNames("heapcachescrib") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 4 << 20)
            let a = try heap.unsafeAllocate(byteCount: 64)
            let b = try heap.unsafeAllocate(byteCount: 64)
            try heap.unsafeDeallocate(a)
            try heap.unsafeDeallocate(b)  // the cache: b, then a
            scribble(name, at: Self.blockField(Self.offset(b), \.state), Self.bytes(UInt32(0x1234_5678)))
            expectError(.corrupt) { _ = try heap.unsafeAllocate(byteCount: 64) }
            let c = try heap.unsafeAllocate(byteCount: 64)
            #expect(Self.offset(c) != Self.offset(b))
            #expect(try heap.check().problems.contains { $0.contains("state") })
            // A cached block's link sent into the heap header: corrupt again, never a wild access.
            try heap.unsafeDeallocate(c)
            let d = try heap.unsafeAllocate(byteCount: 48)
            let e = try heap.unsafeAllocate(byteCount: 48)
            try heap.unsafeDeallocate(d)
            try heap.unsafeDeallocate(e)  // the cache of 4 granules: e, then d
            scribble(name, at: Self.payload + Self.offset(e), Self.bytes(UInt64(64)))
            _ = try heap.unsafeAllocate(byteCount: 48)  // e itself is sound
            expectError(.corrupt) { _ = try heap.unsafeAllocate(byteCount: 48) }
            _ = try heap.unsafeAllocate(byteCount: 48)
        }
    }
}
