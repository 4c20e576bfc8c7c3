import Interprocess
import InterprocessSystem

/// Heap scenario 1: 64-byte allocate + free in one process, in ns per pair: ours (a ``SharedHeap``,
/// through its pointer words and through ``SharedAllocation``) against glibc's `malloc` + `free`
/// measured in the same run.
///
/// The target is on the pointer words (what the C ABI's malloc and free are built on: no block is
/// resolved, as `malloc`'s caller writes through the address it got); glibc's blocks get one byte
/// written (so that the compiler cannot drop the pair), and so do ``SharedAllocation``'s, whose
/// row also pays for retaining and releasing the heap (two atomic reference-count operations).
///
/// Each variant runs timed batches of `heapPairIterations` pairs; the variants take turns batch by batch, the
/// first round is a warm-up, and the row is the median batch. Batches are spread over
/// `heapInstances` fresh heaps (where a heap's header and first blocks sit moves a few-nanosecond
/// figure, as for the uncontended lock).
enum HeapAllocateFreeBench: BenchScenario {
    static let id = "heap-alloc-free"
    static let title = "64-byte allocate + free in one process"
    static let summary = "SharedHeap vs glibc malloc + free"
    static let unit = "ns per allocate+free"
    static let higherIsBetter = false
    static let baseline: String? = "glibc"
    static let targets = [
        BenchTarget("SharedHeap / glibc malloc", "ours", over: "glibc", .atMost(2)),
    ]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let iterations = plan.heapPairIterations
        var ours: [Double] = []
        var owned: [Double] = []
        var glibc: [Double] = []
        var sound = true
        for instance in 0..<plan.heapInstances {
            let name = SharedObjectName.unique(prefix: "bench").description + "-h\(instance)"
            let heap = try SharedHeap.create(name: name, capacity: 1 << 20)
            defer { heap.close() }
            for round in 0...plan.heapPairBatches {
                let a = try timeWords(heap, iterations)
                let b = try timeAllocations(heap, iterations)
                let c = timeMalloc(iterations)
                guard round > 0 else { continue }  // warm-up
                ours.append(Double(a) / Double(iterations))
                owned.append(Double(b) / Double(iterations))
                glibc.append(Double(c) / Double(iterations))
            }
            let empty = try heap.statistics().blocks == 0
            let consistent = try heap.check().isConsistent
            sound = sound && empty && consistent
        }
        let rows: [(String, String, [Double])] = [
            ("ours", "SharedHeap unsafeAllocate + unsafeDeallocate (pointer words)", ours),
            ("owned", "SharedHeap allocate + deallocate (SharedAllocation, ~Copyable)", owned),
            ("glibc", "glibc malloc + free (in-process)", glibc),
        ]
        for (id, name, batches) in rows {
            let summary = Summary(batches)
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count,
                correct: id == "glibc" ? nil : sound, min: summary.min, max: summary.max))
        }
        scenario.correctness("every block freed and check() clean after every instance", sound)
        scenario.notes.append(
            "median of \(plan.heapInstances * plan.heapPairBatches) batches of \(iterations) pairs per variant "
                + "(\(plan.heapInstances) fresh heap(s) × \(plan.heapPairBatches) batches, each after a warm-up batch)")
    }

    @inline(never)
    static func timeWords(_ heap: SharedHeap, _ iterations: Int) throws -> UInt64 {
        let start = BenchClock.now()
        var sink: UInt64 = 0
        for _ in 0..<iterations {
            let pointer = try heap.unsafeAllocate(byteCount: 64)
            sink ^= pointer.bitPattern
            try heap.unsafeDeallocate(pointer)
        }
        let end = BenchClock.now()
        blackHole(sink)
        return end &- start
    }

    @inline(never)
    static func timeAllocations(_ heap: SharedHeap, _ iterations: Int) throws -> UInt64 {
        let start = BenchClock.now()
        for index in 0..<iterations {
            let allocation = try heap.allocate(byteCount: 64)
            allocation[0] = UInt8(truncatingIfNeeded: index)
            try allocation.deallocate()
        }
        return BenchClock.now() &- start
    }

    @inline(never)
    static func timeMalloc(_ iterations: Int) -> UInt64 {
        // The address escapes into memory the optimizer cannot see through, so that it cannot drop
        // the pair (it does drop a malloc whose block is only written and freed).
        let holder = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
        defer { holder.deallocate() }
        blackHole(holder)
        let start = BenchClock.now()
        for index in 0..<iterations {
            let pointer = SystemAllocator.allocate(64)
            pointer.storeBytes(of: UInt8(truncatingIfNeeded: index), as: UInt8.self)
            holder.pointee = pointer
            SystemAllocator.deallocate(pointer)
        }
        return BenchClock.now() &- start
    }
}

extension BenchPlan {
    /// Pairs per timed batch; fresh heaps, and batches per heap (after one warm-up batch).
    var heapPairIterations: Int { quick ? 50_000 : 500_000 }
    var heapInstances: Int { quick ? 1 : 4 }
    var heapPairBatches: Int { quick ? 3 : 5 }
}
