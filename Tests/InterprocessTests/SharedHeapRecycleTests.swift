#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import CInterprocess

/// The client records of a heap are recycled: once every record is taken, a process that opens the
/// heap re-tags the blocks of ended processes to the shared "ended processes" owner and releases
/// their records, so that it (and the next ones) get records of their own and per-process usage
/// stays true. With real processes: more than 64 short-lived children each leaving blocks; a child
/// killed at every write of the recycling pass; scribbled owners and records.
@Suite("SharedHeap record recycling", .serialized, .timeLimit(.minutes(8)))
struct SharedHeapRecycleTests {
    static let endedProcesses = SharedHeap.Statistics.Client.endedProcesses
    static let payload = SharedMemory.payloadOffset
    static let header = payload + Int(CIPC_HEAP_HEADER_OFFSET)
    static func blockField(_ payloadOffset: Int, _ field: PartialKeyPath<cipc_heap_block>) -> Int {
        payload + payloadOffset - MemoryLayout<cipc_heap_block>.size + MemoryLayout<cipc_heap_block>.offset(of: field)!
    }
    static func clientField(_ index: Int, _ field: PartialKeyPath<cipc_heap_client>) -> Int {
        header + MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.clients)! + index * MemoryLayout<cipc_heap_client>.stride
            + MemoryLayout<cipc_heap_client>.offset(of: field)!
    }
    static func offset(_ pointer: SharedPointer<UInt8>) -> Int { Int(pointer.bitPattern & ((1 << 34) - 1)) * 16 }
    static func bytes<T>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    /// The 8 bytes at `offset` of the segment file of `name`.
    static func peek(_ name: String, at offset: Int) -> UInt64 {
        let fd = Glibc.open("/dev/shm/\(name)", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { Glibc.close(fd) }
        var word: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &word) { pread(fd, $0.baseAddress, 8, off_t(offset)) }
        return word
    }

    /// Runs `recycle-leave NAME BLOCKS` to its end; returns the record it said it had and the blocks
    /// the statistics counted against it.
    static func leave(_ name: String, blocks: Int) throws -> (record: Int, blocks: Int) {
        let (termination, output) = try Peer.run("recycle-leave", name, String(blocks), timeout: .seconds(60))
        #expect(termination == .exited(0), "\(String(describing: termination))")
        let words = output.split(separator: "\n").first?.split(separator: " ") ?? []
        #expect(words.count == 3 && words[0] == "record", "\(output)")
        return (words.count == 3 ? Int(words[1]) ?? -1 : -1, words.count == 3 ? Int(words[2]) ?? -1 : -1)
    }

    /// 70 short-lived children each leave blocks (and a thread cache) behind, more than the heap has
    /// records: every one gets a record of its own, nothing lands in record 0, the statistics count
    /// every block left exactly once (per record while it is not recycled, then against ended
    /// processes), and a process that opens the heap after them has its own record with exactly its
    /// blocks. `reclaimBlocksOfEndedProcesses` frees every block of the ended ones.
    @Test func moreShortLivedProcessesThanRecordsEachGetTheirOwn() throws {
        try withCleanNames("heaprecycle") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 8 << 20)
            let mine = try (0..<2).map { _ in try heap.unsafeAllocate(byteCount: 300) }
            var left = 0
            for index in 0..<70 {
                let count = 1 + index % 3
                let (record, blocks) = try Self.leave(name, blocks: count)
                #expect(record >= 1 && record < 64, "child \(index) got record \(record)")
                #expect(blocks == count, "child \(index): \(blocks) blocks counted against its record, it left \(count)")
                left += count
                let stats = try heap.statistics()
                #expect(stats.blocks == left + 2, "child \(index): \(stats.blocks) blocks in use")
                #expect(!stats.clients.contains { $0.record == 0 }, "nothing is owned by record 0: \(stats.clients)")
                let ended = stats.clients.filter { !$0.isAlive }
                #expect(ended.reduce(0) { $0 + $1.blocks } == left, "child \(index): \(ended)")
                #expect(ended.allSatisfy { $0.record == Self.endedProcesses || $0.blocks <= 3 }, "\(ended)")
            }
            try expectClean(heap)  // (gives the last child's cache back: the others' went when the next opened)
            var stats = try heap.statistics()
            #expect(stats.clients.contains { $0.record == Self.endedProcesses && $0.pid == 0 && !$0.isAlive && $0.blocks > 0 }, "\(stats.clients)")
            #expect(stats.cachedBlocks == 0, "the caches of the dead went back")
            #expect(stats.clients.filter { $0.isAlive }.map(\.blocks) == [2], "this process alone is alive: \(stats.clients)")
            // `ipc inspect` says so.
            let ipc = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
            let inspect = try ChildProcess.run(ipc, ["inspect", name], timeout: .seconds(60))
            let ended = stats.clients.first { $0.isEndedProcesses }?.blocks ?? 0
            #expect(inspect.standardOutput.contains("  ended processes (their records recycled)  \(ended) blocks"), "\(inspect.standardOutput)")
            #expect(!inspect.standardOutput.contains("record 0 ("), "\(inspect.standardOutput)")

            // A process that opens the heap now: its own record, exactly its blocks, alive.
            let holder = try Peer.spawn("recycle-leave", name, "5", "hold")
            defer { holder.stop() }
            let said = holder.readLine(timeout: .seconds(60))?.split(separator: " ") ?? []
            #expect(said.count == 3 && said[0] == "record" && (Int(said[1]) ?? 0) >= 1 && said[2] == "5", "\(said)")
            stats = try heap.statistics()
            let entry = stats.clients.first { $0.pid == holder.pid }
            #expect(entry?.isAlive == true && entry?.blocks == 5 && entry.map { String($0.record) } == said.dropFirst().first.map(String.init), "\(stats.clients)")
            holder.stop()

            // Reclaiming frees what every ended process left, the recycled ones' included.
            let reclaimed = try heap.reclaimBlocksOfEndedProcesses()
            #expect(reclaimed.blocks == left + 5 && reclaimed.processes.contains(holder.pid), "\(reclaimed)")
            try expectClean(heap)
            stats = try heap.statistics()
            #expect(stats.blocks == 2 && stats.clients.allSatisfy { $0.isAlive }, "\(stats.clients)")
            for block in mine { try heap.unsafeDeallocate(block) }
            try expectClean(heap)
        }
    }

    /// Every record taken: this process, and 62 that one filler child opened and closed in turn
    /// (each time a new token, so a new record), the first 3 leaving 2 blocks each.
    static func fillRecords(_ name: String, holding: Int = 3) {
        let (termination, output) = (try? Peer.run("recycle-fill", name, "62", String(holding), timeout: .seconds(120))) ?? (nil, "")
        #expect(termination == .exited(0) && output.hasPrefix("filled"), "\(String(describing: termination)) \(output)")
    }

    /// A child is SIGKILLed right after the 1st, 2nd, … write of a recycling pass (the re-tags of 6
    /// blocks of 3 ended records, then the release of 62 records) and after its last one: each time
    /// the heap checks clean, no block is lost or counted twice, nothing is owned by record 0, and
    /// the next process to open the heap finishes the job and gets a record of its own.
    @Test func aChildKilledAtEveryWriteOfRecyclingLeavesASoundHeap() throws {
        try withCleanNames("heaprecstep") { prefix in
            func run(_ write: String) throws -> Bool {
                let name = "\(prefix)-\(write)"
                let point = "heap.recycle#\(write)"
                let heap = try SharedHeap.create(name: name, capacity: 64 * 1024, maximumCapacity: 4 << 20)
                defer { heap.close() }
                Self.fillRecords(name)
                let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "heap-op", name, "claim")
                let outcome = child.wait(timeout: .seconds(60))
                child.closePipes()
                #expect(outcome == .exited(0) || outcome == .signaled(SIGKILL), "\(point): \(String(describing: outcome))")
                try expectClean(heap)
                var stats = try heap.statistics()
                #expect(stats.blocks == 6, "\(point): \(stats.blocks) blocks in use")
                #expect(stats.clients.filter { !$0.isAlive }.reduce(0) { $0 + $1.blocks } == 6, "\(point): \(stats.clients)")
                #expect(!stats.clients.contains { $0.record == 0 }, "\(point): \(stats.clients)")
                // The next opener recycles what is left to recycle and gets its own record.
                let (termination, output) = try Peer.run("recycle-open", name)
                #expect(termination == .exited(0) && output.hasPrefix("record ") && !output.hasPrefix("record 0"), "\(point): \(output)")
                stats = try heap.statistics()
                #expect(stats.clients.filter { !$0.isAlive }.map(\.record) == [Self.endedProcesses], "\(point): \(stats.clients)")
                #expect(try heap.reclaimBlocksOfEndedProcesses().blocks == 6)
                try expectClean(heap)
                return outcome == .exited(0)
            }
            var write = 1
            while try !run(String(write)) {
                write += 1
                guard write < 100 else { Issue.record("recycling never completed"); return }
            }
            #expect(write == 6 + 62 + 1, "recycling made \(write - 1) writes: 6 re-tags and 62 releases expected")
            #expect(try !run("end"), "killed after its last write")
        }
    }

    /// Scribbled owners are `corrupt`, never a crash (an owner byte beyond the records used to index
    /// past the end of an array when a process opened a heap with no free record); a scribbled
    /// token only makes its record look ended (it is recycled: nothing is lost, nothing crashes).
    @Test func scribbledOwnersAndRecordsAreCorruptNotACrash() throws {
        try withCleanNames("heaprecscrib") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024, maximumCapacity: 4 << 20)
            Self.fillRecords(name)
            let block = try heap.unsafeAllocate(byteCount: 100)
            let info = Self.blockField(Self.offset(block), \.info)
            // A free block whose last tag (the hint its `info` keeps) reads like the number of an
            // ended record: it names nobody, and the record is released all the same.
            let hint = try heap.unsafeAllocate(byteCount: 2000)
            try heap.unsafeDeallocate(hint)  // merged, FREE (too big for a cache)
            let endedRecord = 5
            #expect(Self.peek(name, at: Self.clientField(endedRecord, \.token)) != 0, "record \(endedRecord) names an ended filler")
            scribble(name, at: Self.blockField(Self.offset(hint), \.info), Self.bytes(UInt32(endedRecord)))
            scribble(name, at: info, Self.bytes(UInt32(200)))
            expectError(.corrupt) { _ = try heap.statistics() }
            #expect(try heap.check().problems.contains { $0.contains("owner 200") }, "check names the owner")
            let (_, refused) = try Peer.run("recycle-open", name)
            #expect(refused.hasPrefix("corrupt"), "\(refused)")
            // Owner 0 is a record: the opener recycles and gets a record of its own.
            scribble(name, at: info, Self.bytes(UInt32(0)))
            try expectClean(heap)
            let (_, opened) = try Peer.run("recycle-open", name)
            #expect(opened.hasPrefix("record ") && !opened.hasPrefix("record 0"), "\(opened)")
            let took = opened.hasPrefix("record \(endedRecord)\n")
            #expect(took || Self.peek(name, at: Self.clientField(endedRecord, \.token)) == 0, "record \(endedRecord) was released")
            // A token written over with garbage (and a wild count of caches): the record looks like an
            // ended process's; checking, opening and reclaiming go on.
            scribble(name, at: Self.clientField(5, \.token), Self.bytes(UInt64(0x1234_5678_9ABC_DEF0)))
            scribble(name, at: Self.clientField(5, \.caches), Self.bytes(UInt32(0xFFFF_FFFF)))
            try expectClean(heap)
            let (_, again) = try Peer.run("recycle-open", name)
            #expect(again.hasPrefix("record ") && !again.hasPrefix("record 0"), "\(again)")
            try heap.unsafeDeallocate(block)
            #expect(try heap.reclaimBlocksOfEndedProcesses().blocks == 6)
            try expectClean(heap)
        }
    }

    /// A dead process's cached block whose owner byte was scribbled beyond the records: giving the
    /// dead caches back (what `check()`, an opener and an allocation that finds no fit do) is
    /// `corrupt`, never a crash (the owner byte used to index past the end of an array), and
    /// `check()` names the block; put right, the cache goes back as usual.
    @Test func aScribbledOwnerOfACachedBlockIsCorruptNotACrash() throws {
        try withCleanNames("heapreccache") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024, maximumCapacity: 4 << 20)
            let blocks = try (0..<3).map { _ in try heap.unsafeAllocate(byteCount: 64) }
            // A peer frees them: into its thread's cache, under its record.
            let peer = try Peer.spawn("heap-peer", name)
            defer { peer.stop() }
            #expect(peer.readLine(timeout: .seconds(30)) == "ready")
            for block in blocks {
                peer.tell("free \(block.bitPattern)")
                #expect(peer.readLine(timeout: .seconds(30)) == "freed")
            }
            let stats = try heap.statistics()
            let record = try #require(stats.clients.first { $0.pid == peer.pid && $0.isAlive }, "\(stats.clients)").record
            #expect(stats.cachedBlocks == 3)
            peer.stop()
            let owner = Self.blockField(Self.offset(blocks[1]), \.info)
            scribble(name, at: owner, [200])
            #expect(try heap.check().problems.contains { $0.contains("cached by client 200") }, "check names the block")
            let (_, refused) = try Peer.run("recycle-open", name)
            #expect(refused.hasPrefix("corrupt"), "\(refused)")
            scribble(name, at: owner, [UInt8(record)])
            try expectClean(heap)
            #expect(try heap.statistics().cachedBlocks == 0, "the dead peer's cache went back")
        }
    }
}
