import CInterprocess
import InterprocessSystem

// MARK: - Reclaiming what ended processes left

/// What a heap can and cannot take back from processes that ended.
///
/// **Stores.** A heap's stores added by growth are persistent segments (`NAME~NONCE-i`). The last
/// holder of a `.whileReferenced` heap removes them when it closes; if that holder was killed, the
/// heap (store 0) is *abandoned* and swept by the next open, create or `ipc gc`, and its stores are
/// *orphans*. ``collectOrphanStores(dryRun:prefix:trusting:)`` (and `ipc gc`) removes every store
/// whose heap is gone — no segment of that name, another kind, or a heap of another nonce — that no
/// process holds (a process that still holds a heap removed by name keeps its stores).
///
/// **Blocks.** Every block in use records the client record of the process that allocated it (or
/// adopted it last, ``adopt(_:)``), and the kernel tells whether that process still has the heap
/// open (its owner token's lock). ``statistics()`` shows the blocks per process, alive or not. What
/// cannot be known is whether another process still uses a block whose allocator ended: a pointer
/// handed over without ``adopt(_:)`` (stored in shared memory, in a ``SharedVariable``, sent through a
/// pipe, or a C program's `malloc`) looks exactly like a block nobody needs. So blocks are never
/// freed behind the application's back: ``reclaimBlocksOfEndedProcesses(dryRun:)`` frees them on
/// request, for applications whose processes own what they allocate (or adopt). It never frees the
/// blocks of client record 0: named objects and their directory, which belong to their names (they
/// are recorded there when they are created), and blocks of processes that found no free record
/// (owner unknown: only while 63 processes have the heap open at once, since a process that finds
/// no free record recycles those of ended processes, `HeapRecycle.swift`). The blocks of ended
/// processes whose records were recycled are owned by "ended processes"
/// (``Statistics/Client/endedProcesses``), and freed here like those of any ended process. An
/// operation a process was killed in the middle of needs no reclaiming: the next process that takes
/// the lock undoes it.
extension SharedHeap {
    /// What ``reclaimBlocksOfEndedProcesses(dryRun:)`` freed (or would free).
    public struct Reclamation: Sendable, Hashable, Codable {
        /// Blocks freed.
        public var blocks: Int
        /// Their bytes, headers included.
        public var bytes: Int
        /// The processes (pids as they saw themselves) whose blocks they were — but for the blocks
        /// of ended processes whose records were recycled, which name no process (see
        /// ``Statistics/Client/endedProcesses``).
        public var processes: [Int32]
    }

    /// Frees every block whose allocating (or last adopting) process has closed the heap or died —
    /// those of ended processes whose records were recycled too — except named objects and their
    /// directory, and blocks whose owner is unknown (client record 0). **Only call it if your
    /// processes never share a block they did not adopt**: a block whose pointer an ended process
    /// handed over without ``adopt(_:)`` is freed too, and its users then get `invalidPointer`
    /// (never a wild access). Each block is freed in an operation of its own, so a kill in the
    /// middle leaves some freed and the rest as they were.
    /// - Parameter dryRun: only count what would be freed.
    public func reclaimBlocksOfEndedProcesses(dryRun: Bool = false) throws(InterprocessError) -> Reclamation {
        try core.withLock(.free) { (op: inout HeapOperation) throws(InterprocessError) in try core.reclaimLocked(dryRun: dryRun, &op) }
    }

    /// Removes the stores (`NAME~NONCE-i`, i > 0) of heaps that are gone: whose name no longer
    /// names a heap with their nonce (it was swept, removed, or re-created), and that no process
    /// holds. With `dryRun`, a store whose heap is abandoned (and so would be swept) counts as an
    /// orphan too. Only stores of trusted owners are considered.
    /// - Returns: what was (or would be) removed.
    @discardableResult
    public static func collectOrphanStores(dryRun: Bool = false, prefix: String = "", trusting trust: TrustedOwners = .currentUser) -> [SegmentInfo] {
        var removed: [SegmentInfo] = []
        for name in SharedMemoryObject.listNames() where name.hasPrefix(prefix) {
            guard let (heap, nonce, index) = HeapSegments.parseStoreName(name) else { continue }
            guard let info = try? SharedMemory.info(name: name), info.kind == SegmentKind.heap.description,
                  info.problem == nil, info.state == "ready", info.details["store"] == String(index), !info.isHeld,
                  trust.trusts(owner: info.owner, group: info.group)
            else { continue }
            do {
                if try HeapSegments.nonce(ofHeap: heap, trusting: trust) == nonce {
                    // Its heap is there: keep the store, unless a dry run counts the heap as swept.
                    guard dryRun, (try? SharedMemory.info(name: heap))?.isAbandoned == true else { continue }
                }
            } catch where error.code == .notFound || error.code == .incompatible {
                // No heap of that name, or a segment that is not a heap: the store's heap is gone.
            } catch {
                continue // cannot tell (not trusted, half-made…): keep it
            }
            if dryRun {
                removed.append(info)
            } else if (try? SharedMemory.remove(name: name)) != nil {
                removed.append(info)
            }
        }
        return removed
    }
}

extension HeapSegments {
    /// The heap, nonce and index of a store name (`NAME~NONCE-i`, exactly as ``storeName(heap:nonce:index:)``
    /// writes it, i > 0), or nil.
    static func parseStoreName(_ name: String) -> (heap: String, nonce: UInt64, index: Int)? {
        guard let dash = name.lastIndex(of: "-"), let index = Int(name[name.index(after: dash)...]), index > 0,
              let hexStart = name.index(dash, offsetBy: -16, limitedBy: name.startIndex), hexStart > name.startIndex,
              let nonce = UInt64(name[hexStart..<dash], radix: 16)
        else { return nil }
        let tilde = name.index(before: hexStart)
        guard name[tilde] == "~" else { return nil }
        let heap = String(name[..<tilde])
        guard !heap.isEmpty, storeName(heap: heap, nonce: nonce, index: index) == name else { return nil }
        return (heap, nonce, index)
    }
}

extension HeapCore {
    /// Records this process as the owner of the live block `word` (what ``SharedHeap/adopt(_:)``
    /// does), keeping its unused-bytes count: one journaled write.
    func recordOwner(_ word: UInt64) throws(InterprocessError) {
        try withLock(.adopt) { (op: inout HeapOperation) throws(InterprocessError) in
            let (block, _, _) = try liveBlock(word)
            op.set32(block.field(HeapLayout.blockInfo), (block.info & ~0xFF) | client)
        }
    }

    /// Frees (or counts) the blocks of client records whose process ended, but not the directory's.
    func reclaimLocked(dryRun: Bool, _ op: inout HeapOperation) throws(InterprocessError) -> SharedHeap.Reclamation {
        var ended = [Bool](repeating: false, count: HeapLayout.clientCount)
        var pids = [Int32](repeating: 0, count: HeapLayout.clientCount)
        for index in 1..<HeapLayout.clientCount {
            let token = load64(clientRecord(index) + HeapLayout.clientToken)
            ended[index] = token != 0 && !lease.isAlive(token)
            pids[index] = OwnerLease.displayPID(of: token)
        }
        let named = directoryBlocks(try walkDirectory())
        var victims: [UInt64] = []
        var result = SharedHeap.Reclamation(blocks: 0, bytes: 0, processes: [])
        var owners = Set<Int>()
        try walkBlocks { block, size, state in
            guard state & HeapLayout.inUse != 0 else { return }
            let owner = Int(block.info & 0xFF)
            guard owner == Int(HeapLayout.endedClient) || (owner < HeapLayout.clientCount && ended[owner]), !named.contains(block.ref) else { return }
            victims.append(HeapLayout.pointerWord(store: block.store, blockOffset: block.offset, tag: state & HeapLayout.tagMask))
            result.blocks += 1
            result.bytes += Int(size) * HeapLayout.granule
            owners.insert(owner)
        }
        result.processes = owners.sorted().filter { $0 < HeapLayout.clientCount }.map { pids[$0] }
        if dryRun { return result }
        for word in victims {
            op.commit()
            try freeLocked(word, &op)
        }
        return result
    }
}
