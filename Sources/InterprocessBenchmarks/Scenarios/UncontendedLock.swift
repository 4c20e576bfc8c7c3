import Interprocess
import InterprocessSystem
import Synchronization

/// Scenario 1: uncontended lock+unlock, in ns per pair. One process, no peer: ours (a
/// ``ProcessMutex`` placed in a ``SharedMemory`` segment), a pthread robust process-shared mutex in
/// the same segment, and Swift's in-process `Mutex`.
///
/// Each variant runs timed batches of `lockIterations` pairs; the variants take turns batch by
/// batch (so that a change in the machine's speed hits all of them alike), the first round is a
/// warm-up, and the row is the median batch. Batches are spread over `lockInstances` fresh
/// instances (a new segment, new locks): at a few nanoseconds per pair, where the lock and the
/// objects around it happen to sit in memory moves the result by up to 1.7× (measured here: the
/// same code gives ~4.6 or ~7.5 ns depending on the instance), and one instance would report
/// only its own luck.
enum UncontendedLockBench: BenchScenario {
    static let id = "uncontended-lock"
    static let title = "uncontended lock+unlock"
    static let summary = "ProcessMutex vs pthread robust mutex vs Swift Mutex"
    static let unit = "ns per lock+unlock"
    static let higherIsBetter = false
    static let baseline: String? = "swift-mutex"
    static let targets = [
        BenchTarget("ProcessMutex / Swift Mutex", "ours", over: "swift-mutex", .atMost(1.3)),
        BenchTarget("ProcessMutex / pthread robust mutex", "ours", over: "pthread-robust", .below(1)),
    ]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let iterations = plan.lockIterations
        var ours: [Double] = []
        var pthread: [Double] = []
        var swift: [Double] = []
        for _ in 0..<plan.lockInstances {
            let session = try BenchSession()
            defer { session.close() }
            let mutex = try ProcessMutex.create(in: session.segment, at: BenchLayout.processMutex)
            let swiftMutex = SwiftMutexBox()
            try session.withMemory { base in
                let robust = try RobustPthreadMutex.create(at: base + BenchLayout.pthreadMutex)
                for round in 0...plan.lockBatches {
                    let a = try timeProcessMutex(mutex, iterations)
                    let b = try timePthreadMutex(robust, iterations)
                    let c = timeSwiftMutex(swiftMutex, iterations)
                    guard round > 0 else { continue }  // warm-up
                    ours.append(Double(a) / Double(iterations))
                    pthread.append(Double(b) / Double(iterations))
                    swift.append(Double(c) / Double(iterations))
                }
            }
        }
        let rows: [(String, String, [Double])] = [
            ("ours", "ProcessMutex (in a SharedMemory segment)", ours),
            ("pthread-robust", "pthread mutex, robust + process-shared (in shared memory)", pthread),
            ("swift-mutex", "Swift Mutex (Synchronization, in-process)", swift),
        ]
        for (id, name, batches) in rows {
            let summary = Summary(batches)
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.notes.append(
            "median of \(plan.lockInstances * plan.lockBatches) batches of \(iterations) pairs per variant "
                + "(\(plan.lockInstances) fresh instance(s) × \(plan.lockBatches) batches, each after a warm-up batch)")
    }

    @inline(never)
    static func timeProcessMutex(_ mutex: ProcessMutex, _ iterations: Int) throws -> UInt64 {
        var inside = 0
        let start = BenchClock.now()
        for _ in 0..<iterations {
            try mutex.blockingLock()
            inside &+= 1
            try mutex.unlock()
        }
        let end = BenchClock.now()
        blackHole(inside)
        return end &- start
    }

    @inline(never)
    static func timePthreadMutex(_ mutex: RobustPthreadMutex, _ iterations: Int) throws -> UInt64 {
        var inside = 0
        let start = BenchClock.now()
        for _ in 0..<iterations {
            try mutex.lock()
            inside &+= 1
            mutex.unlock()
        }
        let end = BenchClock.now()
        blackHole(inside)
        return end &- start
    }

    @inline(never)
    static func timeSwiftMutex(_ box: SwiftMutexBox, _ iterations: Int) -> UInt64 {
        let start = BenchClock.now()
        for _ in 0..<iterations {
            box.mutex.withLock { $0 &+= 1 }
        }
        let end = BenchClock.now()
        blackHole(box.mutex.withLock { $0 })
        return end &- start
    }
}

extension BenchPlan {
    /// Iterations per timed batch; fresh instances, and batches per instance (after one warm-up
    /// batch).
    var lockIterations: Int { quick ? 100_000 : 1_000_000 }
    var lockInstances: Int { quick ? 1 : 5 }
    var lockBatches: Int { quick ? 5 : 4 }
}

/// Swift's in-process `Mutex`, in a class so that it lives in memory the optimizer cannot reason away.
final class SwiftMutexBox: Sendable {
    let mutex = Mutex<Int>(0)
}
