#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import Interprocess
import InterprocessSystem
import Synchronization

/// The process-wide async waiter at scale: thousands of waits on distinct words in shared memory,
/// spread over several worker threads, each resolved exactly once and exactly right. Each test uses a
/// waiter of its own, so that other tests' waits never touch its threads.
@Suite("AsyncFutexWaiter", .serialized, .timeLimit(.minutes(3)))
struct AsyncFutexWaiterTests {
    typealias Outcome = AsyncFutexWaiter.Outcome

    @Test func thousandsOfDistinctWordsEachWokenInRandomOrder() async throws {
        try await withWords("awrand", count: 3_000) { words in
            let waiter = AsyncFutexWaiter()
            let outcomes = Outcomes(words.count)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<words.count {
                    group.addTask { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: .never) }
                }
                #expect(await eventually { waiter.census.waits == words.count }, "\(waiter.census.waits) registered")
                let census = waiter.census
                #expect(census.words == words.count, "one word each")
                #expect(census.workers == (words.count + AsyncFutexWaiter.batch - 1) / AsyncFutexWaiter.batch, "workers filled in turn")

                var order = Array(0..<words.count).shuffled()
                // Half of them, one word at a time: exactly those resume.
                let firstHalf = Set(order.prefix(words.count / 2))
                for index in order.prefix(words.count / 2) { words.change(index) }
                #expect(await eventually { outcomes.resolved == firstHalf.count }, "\(outcomes.resolved) resumed")
                #expect(Set(outcomes.indices(where: { $0 != nil })) == firstHalf, "exactly the woken ones resumed")
                #expect(waiter.census.waits == words.count - firstHalf.count)
                // The rest.
                order.removeFirst(words.count / 2)
                for index in order { words.change(index) }
                try await group.waitForAll()
            }
            #expect(outcomes.all.allSatisfy { $0 == .changed })
            #expect(waiter.census.waits == 0 && waiter.census.words == 0)
        }
    }

    @Test func cancellationsAndTimeoutsAmongThousandsResolveExactly() async throws {
        try await withWords("awmix", count: 2_000) { words in
            let waiter = AsyncFutexWaiter()
            let outcomes = Outcomes(words.count)
            // By index modulo 4: 0 cancelled, 1 woken, 2 timed out, 3 left waiting until the end.
            // All but the timed ones carry a far deadline, so that the workers' heaps are full of them.
            let far = Deadline(after: .seconds(3_600))
            var tasks: [Int: Task<Void, Never>] = [:]
            for index in 0..<words.count where index % 4 != 2 {
                tasks[index] = Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: index % 4 == 1 ? .never : far) }
            }
            let untimed = tasks.count
            #expect(await eventually { waiter.census.waits == untimed })
            let near = Deadline(after: .milliseconds(200))
            for index in 0..<words.count where index % 4 == 2 {
                tasks[index] = Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: near) }
            }
            for index in 0..<words.count where index % 4 == 0 { tasks[index]!.cancel() }
            for index in (0..<words.count).shuffled() where index % 4 == 1 { words.change(index) }
            #expect(await eventually { outcomes.resolved == words.count / 4 * 3 }, "\(outcomes.resolved) resumed")
            for index in 0..<words.count {
                let expected: Outcome? = switch index % 4 {
                case 0: .cancelled
                case 1: .changed
                case 2: .timedOut
                default: nil
                }
                #expect(outcomes[index] == expected, "wait \(index): \(String(describing: outcomes[index]))")
            }
            #expect(waiter.census.waits == words.count / 4, "only the untouched ones are left")
            #expect(waiter.census.words == words.count / 4, "the others' words are gone")
            for index in 0..<words.count where index % 4 == 3 { words.change(index) }
            for task in tasks.values { await task.value }
            #expect((0..<words.count).filter { $0 % 4 == 3 }.allSatisfy { outcomes[$0] == .changed })
            #expect(waiter.census.waits == 0 && waiter.census.words == 0)
        }
    }

    @Test func manyWaitsOnOneWordShareOneEntry() async throws {
        try await withWords("awone", count: 2) { words in
            let waiter = AsyncFutexWaiter()
            let outcomes = Outcomes(1_000)
            var tasks: [Task<Void, Never>] = []
            for index in 0..<outcomes.count {
                tasks.append(Task { outcomes[index] = await waiter.wait(on: words[0], expected: 0, deadline: .never) })
            }
            #expect(await eventually { waiter.census.waits == outcomes.count })
            #expect(waiter.census.words == 1 && waiter.census.workers == 1)
            // A tenth cancelled: they leave, the word stays.
            for index in stride(from: 0, to: outcomes.count, by: 10) { tasks[index].cancel() }
            #expect(await eventually { outcomes.resolved == outcomes.count / 10 })
            #expect(waiter.census.waits == outcomes.count - outcomes.count / 10 && waiter.census.words == 1)
            // One wake resumes all the others.
            atomic32(words[0]).pointee.store(1, ordering: .sequentiallyConsistent)
            Futex.wake(words[0], count: 1)
            for task in tasks { await task.value }
            for index in 0..<outcomes.count {
                #expect(outcomes[index] == (index % 10 == 0 ? .cancelled : .changed), "wait \(index)")
            }
            #expect(waiter.census.waits == 0 && waiter.census.words == 0)
        }
    }

    @Test func wakesOnWordsNobodyWaitsForResumeNothing() async throws {
        try await withWords("awnobody", count: 300) { words in
            let waiter = AsyncFutexWaiter()
            let outcomes = Outcomes(words.count)
            // Words 0..<200 are waited on (two workers); 200..<300 are not. Word 199's wait is cancelled.
            var tasks: [Task<Void, Never>] = []
            for index in 0..<200 {
                tasks.append(Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: .never) })
            }
            #expect(await eventually { waiter.census.waits == 200 })
            #expect(waiter.census.workers == 2)
            tasks[199].cancel()
            #expect(await eventually { outcomes[199] == .cancelled })
            for index in 199..<300 {
                if index % 2 == 0 { atomic32(words[index]).pointee.store(1, ordering: .sequentiallyConsistent) }
                Futex.wake(words[index], count: Int32.max)
            }
            // Then one watched word on each worker: once both resumed, the workers have long been past
            // the stray wakes.
            words.change(0)
            words.change(198)
            #expect(await eventually { outcomes[0] != nil && outcomes[198] != nil })
            #expect(outcomes.resolved == 3 && waiter.census.waits == 197, "stray wakes resumed nothing")
            for index in 1..<198 { words.change(index) }
            for task in tasks { await task.value }
            #expect((0..<199).allSatisfy { outcomes[$0] == .changed })
        }
    }

    /// With 1,000 waits parked and nothing happening, the workers sleep: no wake-ups (a 1 ms poll
    /// would make hundreds over the interval) and next to no CPU time. The bounds are generous; a busy
    /// machine only makes a polling waiter look better, never a parked one worse.
    @Test func parkedWaitsDoNotPoll() async throws {
        try await withWords("awidle", count: 1_000) { words in
            let waiter = AsyncFutexWaiter()
            let outcomes = Outcomes(words.count)
            var tasks: [Task<Void, Never>] = []
            for index in 0..<words.count {
                tasks.append(Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: .never) })
            }
            #expect(await eventually { waiter.census.waits == words.count && !waiter.census.threadIDs.contains(0) })
            let threads = waiter.census.threadIDs
            #expect(threads.count == 8)
            // Every worker asleep in the kernel, then a quiet interval.
            #expect(await eventually { threads.allSatisfy { ThreadStatistics(threadID: $0)?.state == "S" } })
            let before = threads.compactMap(ThreadStatistics.init(threadID:))
            let start = Clock.monotonicNanoseconds()
            try await Task.sleep(for: .milliseconds(500))
            let after = threads.compactMap(ThreadStatistics.init(threadID:))
            let elapsed = Double(Clock.monotonicNanoseconds() - start) / 1e9
            #expect(before.count == threads.count && after.count == threads.count)
            let switches = zip(before, after).map { $1.contextSwitches - $0.contextSwitches }.reduce(0, +)
            let cpu = zip(before, after).map { $1.cpuSeconds - $0.cpuSeconds }.reduce(0, +)
            #expect(switches <= 20, "the workers woke \(switches) times in \(elapsed) s")
            #expect(cpu < 0.2 * elapsed, "the workers used \(cpu) s of CPU in \(elapsed) s")
            for index in 0..<words.count { words.change(index) }
            for task in tasks { await task.value }
            #expect(outcomes.all.allSatisfy { $0 == .changed })
        }
    }

    /// Where the kernel has no `futex_waitv`, the workers poll their words; everything still resolves
    /// exactly.
    @Test func theFallbackWithoutFutexWaitvResolvesExactly() async throws {
        try await withWords("awfallback", count: 400) { words in
            let waiter = AsyncFutexWaiter(futexWaitv: false)
            let outcomes = Outcomes(words.count)
            // By index modulo 3: 0 woken, 1 cancelled, 2 timed out (registered last).
            var tasks: [Int: Task<Void, Never>] = [:]
            for index in 0..<words.count where index % 3 != 2 {
                tasks[index] = Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: .never) }
            }
            let untimed = tasks.count
            #expect(await eventually { waiter.census.waits == untimed })
            #expect(waiter.census.workers == 3)
            let near = Deadline(after: .milliseconds(300))
            for index in 0..<words.count where index % 3 == 2 {
                tasks[index] = Task { outcomes[index] = await waiter.wait(on: words[index], expected: 0, deadline: near) }
            }
            for index in 0..<words.count where index % 3 == 1 { tasks[index]!.cancel() }
            for index in (0..<words.count).shuffled() where index % 3 == 0 { words.change(index) }
            for task in tasks.values { await task.value }
            for index in 0..<words.count {
                #expect(outcomes[index] == [Outcome.changed, .cancelled, .timedOut][index % 3], "wait \(index)")
            }
            #expect(waiter.census.waits == 0 && waiter.census.words == 0)
        }
    }

    @Test func aCancelledTaskNeverParks() async throws {
        try await withWords("awearly", count: 1) { words in
            let waiter = AsyncFutexWaiter()
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return await waiter.wait(on: words[0], expected: 0, deadline: .never)
            }
            #expect(await task.value == .cancelled)
            #expect(waiter.census.waits == 0)
        }
    }
}

/// `count` 32-bit words in a fresh shared memory segment, zero (unchanged) until ``change(_:)``.
private struct Words: @unchecked Sendable {
    // `@unchecked Sendable`: the base address of a segment that stays open (and mapped) for as long
    // as this value is used; the words are only accessed atomically.
    let base: UnsafeMutableRawPointer
    let count: Int

    subscript(index: Int) -> UnsafeMutableRawPointer { base + 4 * index }

    /// Changes word `index` and wakes its waiters, as a primitive's release does.
    func change(_ index: Int) {
        atomic32(self[index]).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        Futex.wake(self[index], count: Int32.max)
    }
}

private func withWords(_ tag: String, count: Int, _ body: (Words) async throws -> Void) async throws {
    let name = TestNames.make(tag)
    let segment = try SharedMemory.create(name: name, size: 4 * count)
    defer {
        segment.close()
        #expect(TestNames.leftovers(name).isEmpty)
    }
    let base = try segment.withUnsafeMutableBytes { $0.baseAddress! }
    try await body(Words(base: base, count: count))
}

/// Each wait's outcome, set once by its task.
private final class Outcomes: Sendable {
    private let outcomes: Mutex<[AsyncFutexWaiter.Outcome?]>
    let count: Int

    init(_ count: Int) {
        self.count = count
        outcomes = Mutex(Array(repeating: nil, count: count))
    }

    subscript(index: Int) -> AsyncFutexWaiter.Outcome? {
        get { outcomes.withLock { $0[index] } }
        set { outcomes.withLock { $0[index] = newValue } }
    }

    var resolved: Int { outcomes.withLock { $0.count { $0 != nil } } }
    var all: [AsyncFutexWaiter.Outcome?] { outcomes.withLock { $0 } }

    func indices(where predicate: (AsyncFutexWaiter.Outcome?) -> Bool) -> [Int] {
        outcomes.withLock { outcomes in outcomes.indices.filter { predicate(outcomes[$0]) } }
    }
}

/// One thread's state, CPU time and context switches, from /proc/self/task/TID.
private struct ThreadStatistics {
    let state: String
    let cpuSeconds: Double
    let contextSwitches: Int

    init?(threadID: Int32) {
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(threadID)/stat", encoding: .utf8),
              let status = try? String(contentsOfFile: "/proc/self/task/\(threadID)/status", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)": state is field 3, utime and stime fields 14 and 15 (clock ticks).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        state = String(fields[0])
        cpuSeconds = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        contextSwitches = status.split(separator: "\n")
            .filter { $0.hasPrefix("voluntary_ctxt_switches:") || $0.hasPrefix("nonvoluntary_ctxt_switches:") }
            .compactMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
            .reduce(0, +)
    }
}
