import Foundation
import Interprocess
import InterprocessSystem

/// Heap scenario 3: a mix of sizes (16 B to 64 KB, log-uniform) with random lifetimes, in one
/// process, for a few seconds: ours (a ``SharedHeap`` that starts at 4 MB and may grow to 256 MB)
/// against glibc's `malloc` + `free`, both running the very same sequence of operations.
///
/// A table of `heapMixSlots` slots: each step picks a slot at random and frees its block if it holds
/// one, else allocates a block of a random size into it (so lifetimes are random, about half the
/// slots are live, and sizes are mixed). The variants take turns chunk by chunk, each continuing its
/// own table; the row is the median chunk's operations per second. Reported besides: the heap's
/// fragmentation at the end (largest free block ÷ free bytes: 1 when all free memory is one block),
/// and how far it grew.
enum HeapMixedSizesBench: BenchScenario {
    static let id = "heap-mixed"
    static let title = "mixed sizes (16 B – 64 KB) with random lifetimes, one process"
    static let summary = "SharedHeap vs glibc malloc + free on a random mix of sizes and lifetimes, and fragmentation"
    static let unit = "allocations or frees/s"
    static let higherIsBetter = true
    static let baseline: String? = "glibc"

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let name = SharedObjectName.unique(prefix: "bench").description + "-mix"
        let heap = try SharedHeap.create(name: name, capacity: 4 << 20, maximumCapacity: 256 << 20)
        defer { heap.close() }
        let slots = plan.heapMixSlots
        var ours = [SharedPointer<UInt8>](repeating: .null, count: slots)
        var theirs = [UnsafeMutableRawPointer?](repeating: nil, count: slots)
        var oursRates: [Double] = []
        var glibcRates: [Double] = []
        // The same operations for both: each variant replays the generator from the same state.
        var seed: UInt64 = 0x5EED_0F_4EA9
        var liveBytes = 0
        var peakLive = 0
        for round in 0...plan.heapMixRounds {
            let chunkSeed = seed
            let (glibcTime, _) = timeMalloc(&theirs, seed: chunkSeed, steps: plan.heapMixSteps)
            let (oursTime, live) = try timeHeap(heap, &ours, seed: chunkSeed, steps: plan.heapMixSteps, live: liveBytes)
            liveBytes = live.current
            peakLive = max(peakLive, live.peak)
            var advance = SplitMix(seed)
            seed = advance.next()
            guard round > 0 else { continue }  // warm-up
            glibcRates.append(Double(plan.heapMixSteps) / (Double(glibcTime) / 1e9))
            oursRates.append(Double(plan.heapMixSteps) / (Double(oursTime) / 1e9))
        }
        let statistics = try heap.statistics()
        let sound = try heap.check().isConsistent
        for pointer in ours where !pointer.isNull { try heap.unsafeDeallocate(pointer) }
        for pointer in theirs { if let pointer { SystemAllocator.deallocate(pointer) } }
        let empty = try heap.statistics().blocks == 0
        for (id, rowName, rates) in [("ours", "SharedHeap (4 MB, may grow to 256 MB)", oursRates), ("glibc", "glibc malloc + free", glibcRates)] {
            let summary = Summary(rates)
            scenario.rows.append(BenchRow(
                id: id, name: rowName, median: summary.median, samples: summary.count,
                correct: id == "ours" ? sound && empty : nil, min: summary.min, max: summary.max))
        }
        scenario.correctness("check() clean with the blocks live, every block freed at the end", sound && empty)
        let ratio = statistics.freeBytes == 0 ? 1 : Double(statistics.largestFreeBlock) / Double(statistics.freeBytes)
        scenario.notes.append(
            "fragmentation at the end (\(statistics.blocks) blocks live, \(mb(statistics.usedBytes)) used): largest free block ÷ free bytes = "
                + String(format: "%.2f", ratio) + " (\(mb(statistics.largestFreeBlock)) of \(mb(statistics.freeBytes)) free)")
        scenario.notes.append(
            "the heap grew to \(mb(statistics.capacity)) in \(statistics.stores) store(s) for at most \(mb(peakLive)) requested at once")
        scenario.notes.append(
            "\(slots) slots; median of \(plan.heapMixRounds) chunks of \(plan.heapMixSteps) operations per variant (after a warm-up chunk)")
    }

    static func mb(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_048_576) }

    /// A size from 16 B to 64 KB, log-uniform: 2^(4 + 12 × u).
    @inline(__always)
    static func size(_ random: UInt64) -> Int {
        let exponent = 4 + 12 * Double(random >> 11) / Double(1 << 53)
        return Int(exp2(exponent))
    }

    @inline(never)
    static func timeHeap(
        _ heap: SharedHeap, _ table: inout [SharedPointer<UInt8>], seed: UInt64, steps: Int, live: Int
    ) throws -> (UInt64, (current: Int, peak: Int)) {
        var generator = SplitMix(seed)
        var sizes = [Int](repeating: 0, count: table.count)
        var current = live
        var peak = live
        // Sizes of what is live, for the peak: read back from the heap before timing.
        for index in table.indices where !table[index].isNull { sizes[index] = try heap.byteCount(of: table[index]) }
        let start = BenchClock.now()
        for _ in 0..<steps {
            let random = generator.next()
            let index = Int(truncatingIfNeeded: random % UInt64(table.count))
            if table[index].isNull {
                let byteCount = size(generator.next())
                table[index] = try heap.unsafeAllocate(byteCount: byteCount)
                sizes[index] = byteCount
                current += byteCount
                peak = max(peak, current)
            } else {
                try heap.unsafeDeallocate(table[index])
                table[index] = .null
                current -= sizes[index]
            }
        }
        return (BenchClock.now() &- start, (current, peak))
    }

    @inline(never)
    static func timeMalloc(_ table: inout [UnsafeMutableRawPointer?], seed: UInt64, steps: Int) -> (UInt64, Int) {
        var generator = SplitMix(seed)
        let start = BenchClock.now()
        for _ in 0..<steps {
            let random = generator.next()
            let index = Int(truncatingIfNeeded: random % UInt64(table.count))
            if let pointer = table[index] {
                SystemAllocator.deallocate(pointer)
                table[index] = nil
            } else {
                table[index] = SystemAllocator.allocate(size(generator.next()))
            }
        }
        return (BenchClock.now() &- start, 0)
    }
}

/// SplitMix64: a small, fast generator whose sequence a seed fixes (both variants replay it).
struct SplitMix {
    var state: UInt64

    init(_ seed: UInt64) { state = seed }

    @inline(__always)
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension BenchPlan {
    /// Slots of the table, operations per chunk, and chunks per variant (after a warm-up chunk).
    var heapMixSlots: Int { 2048 }
    var heapMixSteps: Int { quick ? 20_000 : 250_000 }
    var heapMixRounds: Int { quick ? 2 : 10 }
}
