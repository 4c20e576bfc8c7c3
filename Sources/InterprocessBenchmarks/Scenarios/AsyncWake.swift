import Foundation
import Interprocess
import InterprocessSystem
import Synchronization
import SystemPackage

/// Scenario: how long an `async` wait takes to run again after a wake, next to a thread parked in
/// `Futex.wait` (the blocking floor). One process; words in a shared memory segment.
///
/// - blocking: a thread parked in `Futex.wait`, woken by `Futex.wake`.
/// - async, 1 / 4 / 1,000 waits: tasks suspended in ``AsyncFutexWaiter``, each on its own word, woken
///   one at a time (the 1,000 each in turn, in a random order; spread over 8 worker threads).
/// - ProcessSemaphore: two tasks hand a turn back and forth through two semaphores with the async
///   `wait()` (the primitives' async path, registration included; not checked to be parked).
/// - pipe: the same through two pipes, each task waiting in ``AsyncDescriptorWaiter`` for its end to
///   be readable.
///
/// A sample is the time from just before the wake (or signal) to the first instruction of the woken
/// thread or task. Before each wake the waker makes sure the waiter is parked: every task waits again,
/// and every waiting thread (the blocking waiter, the async waiters' workers, armed with every wait)
/// sleeps in the kernel (state S in /proc/self/task/TID/stat) and has used no CPU for 200 µs. The
/// waker then parks until the woken side has stamped the time (a waker that kept one of two CPUs busy
/// would delay it). Each group of async waits has a waiter of its own, so that one wait is measured
/// alone; the 1,000 are started for their turn and stopped after it. The variants take turns round by
/// round, so that a change in the machine's load hits them alike.
///
/// An async wake-up is two hand-offs — a worker thread wakes, then a cooperative thread runs the
/// task — so it cannot match the floor. A wake among 1,000 waits costs more than a wake of one (a
/// worker parked on 127 words; more memory touched after each sleep) but the same order: the target
/// catches a return to polling (a wake among more than 127 waits took ~1 ms before the waiter scaled).
enum AsyncWakeBench: BenchScenario {
    static let id = "async-wake"
    static let title = "async wake-up: 1, 4 and 1,000 async waits vs a blocked thread"
    static let summary = "async waits (AsyncFutexWaiter: 1, 4, 1,000 at once; a semaphore; a pipe) vs a thread parked in Futex.wait"
    static let unit = "ns per wake-up"
    static let higherIsBetter = false
    static let baseline: String? = "blocking"
    static let targets = [
        BenchTarget("async: a wake among 1,000 waits / among 1", "async-many", over: "async-1", .atMost(10)),
    ]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let many = plan.asyncManyWaiters
        let perRound = plan.asyncWakeSamples / plan.asyncWakeRounds
        // Word 0: blocking; 1: async-1; 2–5: async-4; then the many; then two semaphores.
        let words = try BenchWords(count: 6 + many + 2)
        var finished = false
        // A variant that failed may leave a waiter behind on its words: keep them mapped then.
        defer { words.close(unmapping: finished) }
        let deadline = Deadline(after: plan.stepTimeout)
        let progress = WakeProgress(4 * plan.asyncWakeSamples)
        let blocking = BlockingWaiter(words[0], progress)
        // Each group of tasks waits in an async waiter of its own, so that a wait alone is measured
        // alone; the 1,000 wait only during their own turn.
        let one = AsyncWaiters(AsyncFutexWaiter(), words, 1..<2, progress)
        let four = AsyncWaiters(AsyncFutexWaiter(), words, 2..<6, progress)
        let crowd = AsyncWaiters(AsyncFutexWaiter(), words, 6..<(6 + many), progress)
        one.start()
        four.start()
        defer {
            blocking.stop()
            for group in [one, four, crowd] { group.stop() }
        }
        let ping = try ProcessSemaphore.create(in: words.segment, at: words.offset(of: 6 + many), value: 0)
        let pong = try ProcessSemaphore.create(in: words.segment, at: words.offset(of: 7 + many), value: 0)
        let pipes = try (there: BenchIO.pipe(), back: BenchIO.pipe())

        var samples: [String: [Double]] = [:]
        var next = 0
        var restless = 0
        /// Wakes `word` (an index into `words`) of `group` (nil: the blocking waiter) once every waiter
        /// is parked — or, if its threads are registered but never stay asleep (a waiter that polls),
        /// after 50 ms of trying.
        func wake(_ word: Int, of group: AsyncWaiters?) throws -> Double {
            let patience = Deadline(after: .milliseconds(50))
            var threads: [Int32]?
            try waitUntil(deadline) {
                guard let blocking = blocking.parked(), let one = one.parked(), let four = four.parked(), let crowd = crowd.parked()
                else { return false }
                threads = blocking + one + four + crowd
                return ThreadState.asleep(threads!) || patience.hasPassed
            }
            if let threads, !ThreadState.asleep(threads) { restless += 1 }
            next += 1
            let start = group.map { $0.wake(word, next) } ?? blocking.wake(next)
            return try progress.latency(of: next - 1, since: start, deadline)
        }
        /// Waits until every waiter's thread sleeps (or 50 ms of trying).
        func settle() throws {
            let patience = Deadline(after: .milliseconds(50))
            let threads = [one, four, crowd].flatMap { $0.threads } + AsyncFutexWaiter.shared.census.threadIDs
            try waitUntil(deadline) { ThreadState.asleep(threads) || patience.hasPassed }
        }
        for _ in 0..<plan.asyncWakeRounds {
            for _ in 0..<perRound { samples["blocking", default: []].append(try wake(0, of: nil)) }
            for _ in 0..<perRound { samples["async-1", default: []].append(try wake(1, of: one)) }
            for index in 0..<perRound { samples["async-4", default: []].append(try wake(2 + index % 4, of: four)) }
            crowd.start()
            var order = (6..<(6 + many)).shuffled()
            for _ in 0..<perRound { samples["async-many", default: []].append(try wake(order.removeLast(), of: crowd)) }
            crowd.stop()
            try waitUntil(deadline) { crowd.stopped() }
            // The hand-offs start once the waiters' threads have settled (the crowd's workers re-arm as
            // its words leave).
            try settle()
            samples["semaphore-async", default: []] += try semaphoreHandOffs(ping, pong, perRound, deadline)
            try settle()
            samples["pipe-async", default: []] += try pipeHandOffs(pipes.there, pipes.back, perRound, deadline)
        }
        blocking.stop()
        for group in [one, four, crowd] { group.stop() }
        try waitUntil(deadline) { blocking.stopped() && [one, four, crowd].allSatisfy { $0.stopped() } }
        finished = true

        let rows = [
            ("blocking", "thread parked in Futex.wait, woken by Futex.wake"),
            ("async-1", "1 async wait (AsyncFutexWaiter)"),
            ("async-4", "4 async waits on distinct words, woken in turn"),
            ("async-many", "\(many) async waits on distinct words, each woken in turn"),
            ("semaphore-async", "ProcessSemaphore signal → async wait() of another task"),
            ("pipe-async", "pipe write → async wait for readable (AsyncDescriptorWaiter) of another task"),
        ]
        for (id, name) in rows {
            let summary = Summary(samples[id] ?? [])
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        if restless > 0 {
            scenario.notes.append("\(restless) wakes went out while a waiter's thread was not asleep (it kept running for 50 ms)")
        }
        scenario.notes.append(
            "time from the wake (or signal) to the woken side running; before each wake every waiter is parked; "
                + "\(plan.asyncWakeRounds) rounds in which the variants take turns, \(perRound) wakes each")
    }

    // MARK: Hand-offs

    /// Two tasks take turns through two ProcessSemaphores (async `wait()`): each signal's latency to
    /// the other task running.
    private static func semaphoreHandOffs(
        _ ping: ProcessSemaphore, _ pong: ProcessSemaphore, _ samples: Int, _ deadline: Deadline
    ) throws -> [Double] {
        try handOffs(samples, deadline) {
            try await ping.wait()
        } answer: {
            try pong.signal()
        } signal: {
            try ping.signal()
        } awaitAnswer: {
            try await pong.wait()
        }
    }

    /// Two tasks take turns through two pipes, each waiting for its end to be readable in the async
    /// descriptor waiter before it reads: each write's latency to the other task running.
    private static func pipeHandOffs(
        _ there: (read: BenchDescriptor, write: BenchDescriptor), _ back: (read: BenchDescriptor, write: BenchDescriptor),
        _ samples: Int, _ deadline: Deadline
    ) throws -> [Double] {
        let (thereRead, thereWrite, backRead, backWrite) = (there.read.fd, there.write.fd, back.read.fd, back.write.fd)
        return try handOffs(samples, deadline) {
            try await readByteAsync(thereRead)
        } answer: {
            try BenchIO.writeByte(backWrite)
        } signal: {
            try BenchIO.writeByte(thereWrite)
        } awaitAnswer: {
            try await readByteAsync(backRead)
        }
    }

    /// Two tasks take `samples` turns: one signals and awaits the answer, the other awaits the signal
    /// and answers. Returns each signal's latency to the other task running.
    private static func handOffs(
        _ samples: Int, _ deadline: Deadline,
        awaitSignal: @escaping @Sendable () async throws -> Void, answer: @escaping @Sendable () throws -> Void,
        signal: @escaping @Sendable () throws -> Void, awaitAnswer: @escaping @Sendable () async throws -> Void
    ) throws -> [Double] {
        let woken = WakeProgress(samples)
        let signalled = WakeProgress(samples)
        let outcome = TaskOutcomes()
        Task.detached {
            await outcome.run {
                for sample in 0..<samples {
                    try await awaitSignal()
                    woken.record(sample, notify: false)
                    try answer()
                }
            }
        }
        Task.detached {
            await outcome.run {
                for sample in 0..<samples {
                    signalled.record(sample, notify: false)
                    try signal()
                    try await awaitAnswer()
                }
            }
        }
        try waitUntil(deadline) { outcome.finished == 2 }
        if let error = outcome.failure { throw error }
        return (0..<samples).map { Double(woken.stamp($0) &- signalled.stamp($0)) }
    }

    /// Waits in the async descriptor waiter until `fd` is readable, then reads one byte.
    private static func readByteAsync(_ fd: Int32) async throws {
        _ = await AsyncDescriptorWaiter.shared.wait(for: FileDescriptor(rawValue: fd), .readable, deadline: .never)
        guard try BenchIO.readByte(fd) else { throw BenchAsyncWakeError.closed }
    }

    /// Polls `condition` (yielding the CPU in between) until it holds; throws at `deadline`.
    private static func waitUntil(_ deadline: Deadline, _ condition: () -> Bool) throws {
        while !condition() {
            if deadline.hasPassed { throw BenchAsyncWakeError.stuck }
            SpinPolicy.yield()
        }
    }
}

enum BenchAsyncWakeError: Error, CustomStringConvertible {
    case stuck, closed

    var description: String {
        switch self {
        case .stuck: "a wake-up did not arrive within the step timeout"
        case .closed: "a pipe was closed"
        }
    }
}

extension BenchPlan {
    /// Async wake-ups: samples per variant, rounds they are spread over, and the waits of the large
    /// variant.
    var asyncWakeSamples: Int { quick ? 200 : 2_000 }
    var asyncWakeRounds: Int { quick ? 2 : 10 }
    var asyncManyWaiters: Int { 1_000 }
}

/// A thread parked in `Futex.wait` on one word. A wake writes the sample's number + 1 into the word;
/// the thread stamps that sample and parks again, until the word reads `UInt32.max`.
private final class BlockingWaiter: Sendable {
    private let word: BenchWords.Word
    private let threadID = Atomic<Int32>(0)
    private let done = Atomic<Bool>(false)

    init(_ word: BenchWords.Word, _ progress: WakeProgress) {
        self.word = word
        Thread.detachNewThread { [self] in
            threadID.store(ProcessIdentity.currentThreadID, ordering: .releasing)
            var seen: UInt32 = 0
            while word.stampNewValues(after: &seen, progress) {
                _ = Futex.wait(word.pointer, expected: seen, deadline: .never)
            }
            done.store(true, ordering: .releasing)
        }
    }

    /// The thread to check for sleep, once it runs.
    func parked() -> [Int32]? {
        let id = threadID.load(ordering: .acquiring)
        return id == 0 ? nil : [id]
    }

    /// Wakes the thread for `sample` (counted from 1); returns the time just before the wake.
    func wake(_ sample: Int) -> UInt64 { word.post(UInt32(sample)) }

    func stop() { _ = word.post(.max) }

    func stopped() -> Bool { done.load(ordering: .acquiring) }
}

/// A task per word of `range`, each suspended in `waiter` on its word, from ``start()`` to ``stop()``.
/// A wake writes the sample's number + 1 into the word; the task stamps that sample and waits again,
/// until the word reads `UInt32.max`.
private final class AsyncWaiters: Sendable {
    private let waiter: AsyncFutexWaiter
    private let words: BenchWords
    private let range: Range<Int>
    private let progress: WakeProgress
    private let running = Atomic<Bool>(false)
    private let done = Atomic<Int>(0)

    init(_ waiter: AsyncFutexWaiter, _ words: BenchWords, _ range: Range<Int>, _ progress: WakeProgress) {
        self.waiter = waiter
        self.words = words
        self.range = range
        self.progress = progress
    }

    /// Starts the tasks (after a ``stop()``, once ``stopped()``).
    func start() {
        done.store(0, ordering: .relaxed)
        running.store(true, ordering: .relaxed)
        for index in range {
            let word = words[index]
            atomic32(word.pointer).pointee.store(0, ordering: .relaxed)
            Task.detached { [self] in
                var seen: UInt32 = 0
                while word.stampNewValues(after: &seen, progress) {
                    _ = await waiter.wait(on: word.pointer, expected: seen, deadline: .never)
                }
                done.add(1, ordering: .releasing)
            }
        }
    }

    /// The worker threads to check for sleep, once every task waits and every worker is armed with
    /// all of them (none while the tasks are not running).
    func parked() -> [Int32]? {
        guard running.load(ordering: .relaxed) else { return [] }
        let census = waiter.census
        return census.waits == range.count && census.armed ? census.threadIDs : nil
    }

    /// The waiter's worker threads.
    var threads: [Int32] { waiter.census.threadIDs }

    /// Wakes the task on word `index` for `sample` (counted from 1); returns the time just before the wake.
    func wake(_ index: Int, _ sample: Int) -> UInt64 { words[index].post(UInt32(sample)) }

    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        for index in range { _ = words[index].post(.max) }
    }

    func stopped() -> Bool { done.load(ordering: .acquiring) == range.count }
}

/// Words on cache lines of their own, in a shared memory segment.
private final class BenchWords: Sendable {
    struct Word: @unchecked Sendable {
        // `@unchecked Sendable`: a word of the segment, which stays mapped until every waiter is done
        // (or for good, after a failure); only accessed atomically.
        let pointer: UnsafeMutableRawPointer

        /// Stores `value` (a sample's number + 1, or `UInt32.max`: stop) and wakes the word's waiter;
        /// returns the time just before.
        func post(_ value: UInt32) -> UInt64 {
            let start = BenchClock.now()
            atomic32(pointer).pointee.store(value, ordering: .releasing)
            Futex.wake(pointer, count: 1)
            return start
        }

        /// What a waiter on the word does when it runs: stamps the sample of each value it has not
        /// seen; false once the word says stop, true when the waiter must wait again (while the word
        /// holds `seen`).
        func stampNewValues(after seen: inout UInt32, _ progress: WakeProgress) -> Bool {
            while true {
                let value = atomic32(pointer).pointee.load(ordering: .acquiring)
                if value == .max { return false }
                if value == seen { return true }
                progress.record(Int(value) - 1)
                seen = value
            }
        }
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

/// When each sample's waiter ran (monotonic ns; 0: not yet), and a word that counts the samples
/// recorded, for the waker to park on.
///
/// `@unchecked Sendable`: `stamps` and `recorded` are allocated in `init`, freed in `deinit`, and only
/// accessed atomically in between.
private final class WakeProgress: @unchecked Sendable {
    private let stamps: UnsafeMutablePointer<Atomic<UInt64>>
    private let count: Int
    private let recorded: UnsafeMutableRawPointer

    init(_ samples: Int) {
        count = samples
        stamps = .allocate(capacity: samples)
        for index in 0..<samples { (stamps + index).initialize(to: Atomic(0)) }
        recorded = .allocate(byteCount: 64, alignment: 64)
        atomic32(recorded).initialize(to: Atomic(0))
    }

    deinit {
        stamps.deinitialize(count: count)
        stamps.deallocate()
        recorded.deallocate()
    }

    /// Stamps `sample`; `notify` wakes a waker parked in ``latency(of:since:_:)`` (after the stamp).
    func record(_ sample: Int, notify: Bool = true) {
        stamps[sample].store(BenchClock.now(), ordering: .releasing)
        guard notify else { return }
        atomic32(recorded).pointee.wrappingAdd(1, ordering: .releasing)
        Futex.wake(recorded, count: 1)
    }

    func done(_ sample: Int) -> Bool { stamps[sample].load(ordering: .acquiring) != 0 }
    func stamp(_ sample: Int) -> UInt64 { stamps[sample].load(ordering: .acquiring) }

    /// Waits for `sample` to run and returns its latency since `start`. Parks while it waits: a waker
    /// that kept a CPU busy (two here) would delay the woken side.
    func latency(of sample: Int, since start: UInt64, _ deadline: Deadline) throws -> Double {
        while true {
            let seen = atomic32(recorded).pointee.load(ordering: .acquiring)
            if done(sample) { break }
            if Futex.wait(recorded, expected: seen, deadline: deadline) == .timedOut { throw BenchAsyncWakeError.stuck }
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
    /// Whether every thread of `ids` sleeps in the kernel and stays asleep: state S, and no CPU time
    /// over a short interval. (State S alone is not enough: `futex_waitv` sets it before it queues its
    /// words, which takes tens of µs with 128 of them.)
    static func asleep(_ ids: [Int32]) -> Bool {
        guard let before = runTimes(ids) else { return false }
        Clock.sleep(nanoseconds: 200_000)
        return runTimes(ids) == before
    }

    /// The CPU time of each thread (schedstat), if every one is in state S.
    private static func runTimes(_ ids: [Int32]) -> [Substring]? {
        var times: [Substring] = []
        for id in ids {
            guard id != 0, let stat = try? String(contentsOfFile: "/proc/self/task/\(id)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")"),
                  stat[stat.index(after: close)...].split(separator: " ").first == "S",
                  let schedstat = try? String(contentsOfFile: "/proc/self/task/\(id)/schedstat", encoding: .utf8),
                  let time = schedstat.split(separator: " ").first
            else { return nil }
            times.append(time)
        }
        return times
    }
}
