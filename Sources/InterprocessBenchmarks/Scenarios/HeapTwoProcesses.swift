import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Heap scenario 2: processes allocating and freeing 64-byte blocks of one ``SharedHeap`` at once.
/// Each peer keeps a ring of `heapRing` live blocks: every step frees the oldest and allocates a new
/// one (so blocks are not merely handed back and forth). The rows are throughput: one peer alone,
/// and two peers at once (both processes' operations over the time from the first start to the
/// last end, after a spinning start barrier so that they overlap). Runs alternate one / two;
/// the row is the median run. The target: two processes together do at least as much as one. The
/// same with glibc's `malloc` + `free` in each process (nothing shared at all) is the control: what
/// two processes get from this machine at that moment.
enum HeapTwoProcessesBench: BenchScenario {
    static let id = "heap-two-processes"
    static let title = "two processes allocating and freeing 64-byte blocks of one heap at once"
    static let summary = "SharedHeap throughput, two processes at once vs one alone"
    static let unit = "allocate+free pairs/s, all processes together"
    static let higherIsBetter = true
    static let baseline: String? = "one"
    static let targets = [
        BenchTarget("two processes / one process", "two", over: "one", .atLeast(1)),
    ]
    static let roles: [BenchRole] = [.heapChurn, .heapChurnGlibc]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let heap = try SharedHeap.create(name: heapName(session.name.description), capacity: 1 << 20, maximumCapacity: 16 << 20)
        defer { heap.close() }
        var rates: [String: [Double]] = [:]
        var correct = true
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.heapChurnRuns {
                for (id, role, processes) in [("one", BenchRole.heapChurn, 1), ("two", .heapChurn, 2), ("glibc-one", .heapChurnGlibc, 1), ("glibc-two", .heapChurnGlibc, 2)] {
                    let (rate, ok) = try run(role, processes, session, control, plan)
                    rates[id, default: []].append(rate)
                    correct = correct && ok
                }
            }
        }
        let empty = try heap.statistics().blocks == 0
        let sound = try empty && heap.check().isConsistent
        for (id, name) in [
            ("one", "one process alone"), ("two", "two processes at once"),
            ("glibc-one", "control: glibc malloc + free, one process alone"), ("glibc-two", "control: glibc malloc + free, two processes at once"),
        ] {
            let summary = Summary(rates[id] ?? [])
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count, correct: id.hasPrefix("glibc") ? nil : correct && sound,
                min: summary.min, max: summary.max))
        }
        scenario.correctness("every peer did its count, every block was freed, check() clean", correct && sound)
        scenario.notes.append(
            "\(plan.heapChurnIterations) allocate+free pairs per process (a ring of \(heapRing) live 64-byte blocks), "
                + "median of \(plan.heapChurnRuns) run(s); throughput = all pairs / (last end − first start)")
    }

    /// Live blocks per peer.
    static let heapRing = 16

    static func heapName(_ session: String) -> String { session + "-heap" }

    /// One run of `processes` peers: ready, go, wait for all, then their counts and times.
    private static func run(
        _ role: BenchRole, _ processes: Int, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan
    ) throws -> (rate: Double, correct: Bool) {
        control.clear()
        defer { session.peers.killAll() }
        for slot in 0..<processes {
            try session.peers.spawn(
                role, segment: session.name,
                ["--slot", "\(slot)", "--count", "\(plan.heapChurnIterations)", "--parties", "\(processes)"])
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try session.peers.awaitReady(control, count: processes, deadline: deadline)
        control.sayGo()
        try session.peers.finish(deadline: deadline)
        let results = (0..<processes).map { control.result(slot: $0) }
        let total = results.reduce(0) { $0 + $1.count }
        let first = results.map(\.start).min()!
        let last = results.map(\.end).max()!
        guard last > first, total > 0 else { throw ToolError("\(role.name): the peers recorded no work") }
        return (Double(total) / (Double(last - first) / 1e9), total == UInt64(processes * plan.heapChurnIterations))
    }
}

extension BenchPlan {
    /// Allocate+free pairs per process, and runs per variant.
    var heapChurnIterations: Int { quick ? 100_000 : 2_000_000 }
    var heapChurnRuns: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let heapChurn = BenchRole.inSegment("heap-churn") { work in
        let heap = try SharedHeap.open(name: HeapTwoProcessesBench.heapName(work.memory.name))
        defer { heap.close() }
        try work.contend { () throws -> UInt64 in try PeerWork.churn(heap, work.count) }
    }
    static let heapChurnGlibc = BenchRole.inSegment("heap-churn-glibc") { work in
        try work.contend { () -> UInt64 in PeerWork.churnGlibc(work.count) }
    }
}

// MARK: - The churning side (`ipc bench-peer heap-churn`)

extension PeerWork {
    /// `count` steps of: free the oldest block of the ring, allocate a new one in its place; then
    /// frees the ring. Returns the pairs done.
    @inline(never)
    static func churn(_ heap: SharedHeap, _ count: Int) throws -> UInt64 {
        var ring = [SharedPointer<UInt8>](repeating: .null, count: HeapTwoProcessesBench.heapRing)
        for index in ring.indices { ring[index] = try heap.unsafeAllocate(byteCount: 64) }
        var next = 0
        for _ in 0..<count {
            try heap.unsafeDeallocate(ring[next])
            ring[next] = try heap.unsafeAllocate(byteCount: 64)
            next = next + 1 == ring.count ? 0 : next + 1
        }
        for pointer in ring { try heap.unsafeDeallocate(pointer) }
        return UInt64(count)
    }

    /// The same ring with glibc's `malloc` and `free`.
    @inline(never)
    static func churnGlibc(_ count: Int) -> UInt64 {
        let ring = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: HeapTwoProcessesBench.heapRing)
        defer { ring.deallocate() }
        for index in 0..<HeapTwoProcessesBench.heapRing { ring[index] = SystemAllocator.allocate(64) }
        var next = 0
        for _ in 0..<count {
            SystemAllocator.deallocate(ring[next])
            ring[next] = SystemAllocator.allocate(64)
            next = next + 1 == HeapTwoProcessesBench.heapRing ? 0 : next + 1
        }
        for index in 0..<HeapTwoProcessesBench.heapRing { SystemAllocator.deallocate(ring[index]) }
        return UInt64(count)
    }
}
