import CInterprocess
import InterprocessSystem
import Synchronization

// MARK: - Recycling the client records of ended processes
//
// A heap has 63 client records for its processes (record 0 stands for "no process in particular").
// A process that opens the heap takes one and keeps it; when the process ends (dies, or closes its
// last handle) the record still names it, and every block it allocated still records the record's
// number. A process that opens the heap and finds no free record *recycles*: every block in use
// whose owner is the record of an ended process is re-tagged to the shared owner
// CIPC_HEAP_ENDED_CLIENT ("ended processes": still listed by `statistics()`, still freed by
// `reclaimBlocksOfEndedProcesses`), and every such record is released, so that this opener and the
// next ones each get a record of their own. ``SharedHeap`` ("Client records") says what it costs
// and what a kill at each step leaves.

extension HeapCore {
    /// The client record an owner byte names, if it is one (1...63): nil for record 0, for the
    /// shared owner of ended processes, and for anything else a peer may have written there.
    @inline(__always)
    static func clientIndex(_ info: UInt32) -> Int? {
        let owner = Int(info & 0xFF)
        return owner >= 1 && owner < HeapLayout.clientCount ? owner : nil
    }

    /// Whether `owner` may be the owner byte of a block in use: a client record (0 included) or the
    /// shared owner of ended processes.
    @inline(__always)
    static func isOwnerOfBlockInUse(_ owner: UInt32) -> Bool {
        owner < UInt32(HeapLayout.clientCount) || owner == HeapLayout.endedClient
    }

    /// Recycles the records of ended processes, under the lock (the caches of the dead were given
    /// back just before): one walk of every block, re-tagging each in-use block of those records to
    /// the shared owner of ended processes, then each record released (its token 0) in a journaled
    /// operation of its own. A record whose process still has cached blocks or a cache record in
    /// the heap (its cache could not be given back) stays as it is. Returns how many records it
    /// released; 0, without walking, when no record belongs to an ended process.
    ///
    /// The re-tags are not journaled: each is one compare-and-swap of a block's `info` from "owned
    /// by that record" to "owned by ended processes" — as true after a kill as before it — that
    /// loses to a live process putting the block into its thread's cache meanwhile (without the
    /// lock: it writes its own number there first, and the block is then its own).
    func recycleEndedRecords(_ op: inout HeapOperation) throws(InterprocessError) -> Int {
        var ended = [Bool](repeating: false, count: HeapLayout.clientCount)
        var endedCount = 0
        for index in 1..<HeapLayout.clientCount {
            let token = load64(clientRecord(index) + HeapLayout.clientToken)
            if token != 0 && !lease.isAlive(token) {
                ended[index] = true
                endedCount += 1
            }
        }
        guard endedCount > 0 else { return 0 }
        op.commit()
        var writes = 0
        var keep = [Bool](repeating: false, count: HeapLayout.clientCount)
        let endedOwner = HeapLayout.endedClient
        try walkBlocks { block, _, state in
            let info = block.info
            // (The `info` of a free or quick block is its last tag, a hint that names nobody.)
            guard state & HeapLayout.inUse != 0 || state == HeapLayout.cached || state == HeapLayout.cacheRecord,
                  let owner = Self.clientIndex(info), ended[owner] else { return }
            guard state & HeapLayout.inUse != 0 else {
                if !keep[owner] { endedCount -= 1 }
                keep[owner] = true  // cached, or a cache record, that could not be given back
                return
            }
            let word = atomic32(block.pointer + HeapLayout.blockInfo)
            if word.pointee.compareExchange(expected: info, desired: (info & ~0xFF) | endedOwner, ordering: .relaxed).exchanged {
                writes += 1
                if crash != nil { recycleCrashPoint(writes) }
            }
        }
        var released = 0
        for index in 1..<HeapLayout.clientCount where ended[index] && !keep[index] {
            // An operation of its own, after the caller's was committed: its crash points are the
            // pass's (`heap.recycle#N` counts every write of the pass), not an operation's.
            var release = HeapOperation(entries: journalEntries, countWord: journalCount, step: .recycle, crash: nil)
            release.set64(headerPlace(HeapLayout.heapClients + index * HeapLayout.clientStride + HeapLayout.clientToken), 0)
            writes += 1
            if crash != nil { recycleCrashPoint(writes) }
            release.set32(clientCachesPlace(index), 0)  // 0 already: the dead's caches were given back
            store32(clientRecord(index) + HeapLayout.clientPID, 0)  // display only
            released += 1
            if crash != nil && released == endedCount { recycleCrashPoint(nil) }
            release.commit()
        }
        return released
    }

    /// Kills this process if the armed crash point is `heap.recycle#write` (nil: `heap.recycle#end`,
    /// after the last write of the pass, before its journal is cleared).
    func recycleCrashPoint(_ write: Int?) {
        if let crash, crash.step == .recycle, crash.write == write { CrashPoint.crashNow() }
    }
}
