import Foundation
import Interprocess
import InterprocessSystem
import Synchronization

/// Scenario: how long an `async` wait takes to run again after a wake, next to a thread parked in
/// `Futex.wait` (the blocking floor). One process; words in a shared memory segment.
///
/// - blocking: a thread parked in `Futex.wait`, woken by `Futex.wake`.
/// - async, 1 / 4 / 1,000 waits: tasks suspended in ``AsyncFutexWaiter`` on distinct words, woken
///   one at a time in a random order (1,000 waits spread over 8 worker threads).
/// - ProcessSemaphore: two tasks hand a turn back and forth through two semaphores with the async
///   `wait()` (the primitives' async path, registration included; not checked to be parked).
///
/// A sample is the time from just before the wake (or signal) to the first instruction of the woken
/// thread or task. Before each wake the waker makes sure the waiter is parked: the waiter has said so,
/// and the parked threads (the waiter thread, or the async waiter's workers, armed with every wait)
/// sleep in the kernel (state S in /proc/self/task/TID/stat). An async wake-up is two hand-offs —
/// the worker wakes, then a cooperative thread runs the task — so it cannot match the floor; what
/// matters is that 1,000 waits cost no more per wake than one.
enum AsyncWakeBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.asyncWake.rawValue, title: BenchScenarioID.asyncWake.title,
            unit: "ns per wake-up", higherIsBetter: false, baseline: "blocking")
    }

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        // Word 0: blocking; 1: async-1; 2–5: async-4; then the many; then two semaphores.
        let words = try BenchWords(count: 6 + plan.asyncManyWaiters + 2)
        var finished = false
        // A variant that failed may leave a waiter behind on its words: keep them mapped then.
        defer { words.close(unmapping: finished) }
        let deadline = Clock.deadline(after: plan.stepTimeout)
        let samples = plan.asyncWakeSamples
        var rows: [(String, String, [Double])] = []
        rows.append(("blocking", "thread parked in Futex.wait, woken by Futex.wake", try blockingWakes(words, at: 0, samples, deadline)))
        rows.append(("async-1", "1 async wait (AsyncFutexWaiter)", try asyncWakes(words, at: 1, waits: 1, rounds: samples, deadline)))
        rows.append(("async-4", "4 async waits on distinct words, woken in turn", try asyncWakes(words, at: 2, waits: 4, rounds: samples / 4, deadline)))
        rows.append((
            "async-many", "\(plan.asyncManyWaiters) async waits on distinct words, woken in turn",
            try asyncWakes(words, at: 6, waits: plan.asyncManyWaiters, rounds: 1, deadline)))
        rows.append((
            "semaphore-async", "ProcessSemaphore signal → async wait() of another task",
            try semaphoreHandOffs(words, at: 6 + plan.asyncManyWaiters, samples, deadline)))
        finished = true
        for (id, name, values) in rows {
            let summary = Summary(values)
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.computeRatios()
        let one = scenario.row("async-1")!.median
        scenario.target("async, \(plan.asyncManyWaiters) waits / 1 wait", scenario.row("async-many")!.median / one, atMost: 2)
        scenario.notes.append(
            "time from the wake (or signal) to the woken side running; before each wake, the waiter is parked "
                + "(its threads sleep in the kernel); \(plan.asyncManyWaiters) waits: one round, in a random order")
    }

    // MARK: Variants

    /// A thread parked in `Futex.wait` on one word; the word counts the wakes.
    private static func blockingWakes(_ words: BenchWords, at index: Int, _ samples: Int, _ deadline: UInt64) throws -> [Double] {
        let word = words[index]
        let progress = WakeProgress(samples)
        Thread.detachNewThread {
            progress.threadID.store(ProcessIdentity.currentThreadID, ordering: .releasing)
            for sample in 0..<samples {
                progress.parked.store(sample + 1, ordering: .releasing)
                while true {
                    let value = atomic32(word.pointer).pointee.load(ordering: .acquiring)
                    if value > sample { break }
                    _ = Futex.wait(word.pointer, expected: value, deadline: .max)
                }
                progress.record(sample)
            }
        }
        var latencies: [Double] = []
        for sample in 0..<samples {
            try waitUntil(deadline) {
                progress.parked.load(ordering: .acquiring) == sample + 1
                    && ThreadState.sleeping(progress.threadID.load(ordering: .acquiring))
            }
            let start = BenchClock.now()
            atomic32(word.pointer).pointee.store(UInt32(sample + 1), ordering: .releasing)
            Futex.wake(word.pointer, count: 1)
            latencies.append(try progress.latency(of: sample, since: start, deadline))
        }
        return latencies
    }

    /// `waits` tasks, each suspended in the async waiter on its own word (from `first` on), woken one
    /// at a time in a random order, `rounds` times.
    private static func asyncWakes(_ words: BenchWords, at first: Int, waits: Int, rounds: Int, _ deadline: UInt64) throws -> [Double] {
        let waiter = AsyncFutexWaiter.shared
        let progress = WakeProgress(waits * rounds)
        for task in 0..<waits {
            let word = words[first + task]
            Task.detached {
                for round in 0..<rounds {
                    while true {
                        let value = atomic32(word.pointer).pointee.load(ordering: .acquiring)
                        if value > round { break }
                        _ = await waiter.wait(on: word.pointer, expected: value, deadline: .max)
                    }
                    progress.record(round * waits + task)
                }
            }
        }
        var latencies: [Double] = []
        for round in 0..<rounds {
            for task in (0..<waits).shuffled() {
                // Every task not yet woken in this round is suspended (the woken ones wait again for the
                // next round), and every worker sleeps, armed with all of them.
                let suspended = round < rounds - 1 ? waits : waits - latencies.count % waits
                try waitUntil(deadline) {
                    let census = waiter.census
                    return census.waits == suspended && census.armed && census.threadIDs.allSatisfy(ThreadState.sleeping)
                }
                let word = words[first + task]
                let start = BenchClock.now()
                atomic32(word.pointer).pointee.store(UInt32(round + 1), ordering: .releasing)
                Futex.wake(word.pointer, count: 1)
                latencies.append(try progress.latency(of: round * waits + task, since: start, deadline))
            }
        }
        return latencies
    }

    /// Two tasks take turns through two ProcessSemaphores (async `wait()`, placed at words `first` and
    /// `first + 1`): each signal's latency to the other task running.
    private static func semaphoreHandOffs(_ words: BenchWords, at first: Int, _ samples: Int, _ deadline: UInt64) throws -> [Double] {
        let ping = try ProcessSemaphore.create(in: words.segment, at: words.offset(of: first), value: 0)
        let pong = try ProcessSemaphore.create(in: words.segment, at: words.offset(of: first + 1), value: 0)
        let woken = WakeProgress(samples)
        let signalled = WakeProgress(samples)
        let outcome = TaskOutcomes()
        Task.detached {
            await outcome.run {
                for sample in 0..<samples {
                    try await ping.wait()
                    woken.record(sample)
                    try pong.signal()
                }
            }
        }
        Task.detached {
            await outcome.run {
                for sample in 0..<samples {
                    signalled.record(sample)
                    try ping.signal()
                    try await pong.wait()
                }
            }
        }
        try waitUntil(deadline) { outcome.finished == 2 }
        if let error = outcome.failure { throw error }
        return (0..<samples).map { Double(woken.stamp($0) &- signalled.stamp($0)) }
    }

    /// Polls `condition` (yielding the CPU in between) until it holds; throws at `deadline`.
    private static func waitUntil(_ deadline: UInt64, _ condition: () -> Bool) throws {
        while !condition() {
            if Clock.monotonicNanoseconds() >= deadline { throw BenchAsyncWakeError.stuck }
            sched_yield()
        }
    }
}

enum BenchAsyncWakeError: Error, CustomStringConvertible {
    case stuck
    var description: String { "a wake-up did not arrive within the step timeout" }
}

extension BenchPlan {
    /// Async wake-ups: samples per variant, and the waits of the large variant.
    var asyncWakeSamples: Int { quick ? 200 : 2_000 }
    var asyncManyWaiters: Int { 1_000 }
}

/// Words on cache lines of their own, in a shared memory segment.
private final class BenchWords: Sendable {
    struct Word: @unchecked Sendable {
        // `@unchecked Sendable`: a word of the segment, which stays mapped until every waiter is done
        // (or for good, after a failure); only accessed atomically.
        let pointer: UnsafeMutableRawPointer
    }

    private let name: SharedObjectName
    let segment: SharedMemory
    private let base: Word

    init(count: Int) throws {
        name = SharedObjectName.unique(prefix: "bench")
        segment = try SharedMemory.create(name: name, size: 64 * count)
        base = Word(pointer: try segment.withUnsafeMutableBytes { $0.baseAddress! })
    }

    func offset(of index: Int) -> Int { 64 * index }
    subscript(index: Int) -> Word { Word(pointer: base.pointer + offset(of: index)) }

    /// Removes the segment's name; unmaps it too unless a waiter may still be on it.
    func close(unmapping: Bool) {
        if unmapping { segment.close() }
        if SharedMemory.exists(name: name.description) { try? SharedMemory.remove(name: name) }
    }
}

/// When each sample's waiter ran (monotonic ns; 0: not yet).
///
/// `@unchecked Sendable`: `stamps` is allocated in `init`, freed in `deinit`, and only accessed
/// atomically in between.
private final class WakeProgress: @unchecked Sendable {
    let parked = Atomic<Int>(0)
    let threadID = Atomic<Int32>(0)
    private let stamps: UnsafeMutablePointer<Atomic<UInt64>>
    private let count: Int

    init(_ samples: Int) {
        count = samples
        stamps = .allocate(capacity: samples)
        for index in 0..<samples { (stamps + index).initialize(to: Atomic(0)) }
    }

    deinit {
        stamps.deinitialize(count: count)
        stamps.deallocate()
    }

    func record(_ sample: Int) { stamps[sample].store(BenchClock.now(), ordering: .releasing) }
    func done(_ sample: Int) -> Bool { stamps[sample].load(ordering: .acquiring) != 0 }
    func stamp(_ sample: Int) -> UInt64 { stamps[sample].load(ordering: .acquiring) }

    /// Waits for `sample` to run and returns its latency since `start`. Yields while it waits: on
    /// two CPUs, a waker that kept one busy would delay the woken side.
    func latency(of sample: Int, since start: UInt64, _ deadline: UInt64) throws -> Double {
        while !done(sample) {
            if Clock.monotonicNanoseconds() >= deadline { throw BenchAsyncWakeError.stuck }
            sched_yield()
        }
        return Double(stamp(sample) &- start)
    }
}

/// How the tasks of a variant ended: how many finished, and the first error.
private final class TaskOutcomes: Sendable {
    private let state = Mutex<(finished: Int, failure: (any Error)?)>((0, nil))

    var finished: Int { state.withLock { $0.finished } }
    var failure: (any Error)? { state.withLock { $0.failure } }

    func run(_ body: () async throws -> Void) async {
        var failure: (any Error)?
        do { try await body() } catch { failure = error }
        state.withLock {
            $0.finished += 1
            if $0.failure == nil { $0.failure = failure }
        }
    }
}

/// A thread's scheduler state, from /proc/self/task/TID/stat.
private enum ThreadState {
    /// Whether thread `id` is asleep (state S: parked in the kernel, e.g. in a futex wait).
    static func sleeping(_ id: Int32) -> Bool {
        guard id != 0, let stat = try? String(contentsOfFile: "/proc/self/task/\(id)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].split(separator: " ").first == "S"
    }
}
