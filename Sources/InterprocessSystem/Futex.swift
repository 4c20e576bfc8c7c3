#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess
public import Synchronization

/// Wait on a 32-bit word in shared memory, wake N waiters: the one primitive under every
/// Interprocess wait. Linux futexes *without* FUTEX_PRIVATE_FLAG, so that processes that map the
/// same memory at different addresses wait on the same word.
package enum Futex {
    package enum WaitResult: Sendable, Equatable {
        /// Woken, or the word no longer held the expected value, or a signal interrupted: re-check.
        case retry
        /// The deadline passed.
        case timedOut
    }

    /// Parks the calling thread while `*word == expected`, until `deadline`, which the kernel takes
    /// as it is (absolute monotonic time: a wait that ends early and parks again waits only for what
    /// is left). Spurious returns are possible: callers re-check their condition.
    @inline(never)
    package static func wait(_ word: UnsafeMutableRawPointer, expected: UInt32, deadline: Deadline) -> WaitResult {
        let rc = cipc_futex_wait(word.assumingMemoryBound(to: UInt32.self), expected, deadline.kernelNanoseconds)
        if rc == -1 && errno == ETIMEDOUT { return .timedOut }
        return .retry
    }

    /// Wakes up to `count` threads parked on `word`, in any process.
    @inline(never)
    @discardableResult
    package static func wake(_ word: UnsafeMutableRawPointer, count: Int32) -> Int32 {
        cipc_futex_wake(word.assumingMemoryBound(to: UInt32.self), count)
    }

    /// Wakes every thread parked on `word`.
    @discardableResult
    package static func wakeAll(_ word: UnsafeMutableRawPointer) -> Int32 {
        wake(word, count: Int32.max)
    }
}

/// How to wait before parking. Parking and waking a process costs ~70 µs on these machines while a
/// spinning peer sees a change in ~0.1 µs, so waits spin briefly first — but never on a single CPU,
/// where spinning only delays the process we wait for.
///
/// A wait pauses (``spinRounds``), then yields the CPU (up to ``yieldRounds``), then parks.
/// Yielding pays when the processes that get the CPU are our peers, which wait briefly too and hand
/// it back within microseconds (4 ping-pong pairs on 2 CPUs: 4–27× pipe throughput with yields,
/// 0.4× without). It costs a whole time slice (0.75–3 ms) when a CPU-bound process gets the CPU
/// instead: beside two CPU hogs, 1 putter and 4 takers of a `SharedVariable` were 3–10× slower
/// than POSIX semaphores (which park at once). So every yield is timed, and one that keeps us off
/// the CPU longer than ``longYield`` means that CPU-bound processes compete for the CPUs: the yield
/// phase ends, and for a while the process's waits do not yield and pause only
/// ``contendedSpinRounds`` times before parking (a peer that is not running cannot answer a spin,
/// and spinning spends the fair share that lets a parked waiter's wake-up run ahead of them). The
/// while is 10 ms, doubling (up to 320 ms) while long yields recur right after each backoff ends,
/// so that a lasting load costs about one time slice per 320 ms. On an idle machine no yield is
/// ever that long, and nothing changes.
///
/// Measured in `ipc bench` (BENCHMARKS.md). Also measured, and rejected: halving the pause phase
/// after each one that ran out, whatever the load — a ping-pong pair then settles into parking:
/// 21–440× the spinning floor where fixed pauses gave 0.7–46× in the same runs.
package enum SpinPolicy {
    /// Online processors, read once.
    package static let processorCount: Int = max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1)

    /// Pause-instruction rounds before yielding (0 on one CPU). ~5 µs on these machines.
    package static let spinRounds: Int = processorCount > 1 ? 200 : 0

    /// Pause rounds while yields are off (0 on one CPU): ~0.5 µs, enough to catch a peer that is
    /// running on another CPU right now. Longer spins, while CPU-bound processes compete for the CPUs,
    /// only spend the waiter's fair share: its wake-ups then wait behind them.
    package static let contendedSpinRounds: Int = min(20, spinRounds)

    /// `sched_yield` rounds after the pauses, before parking. When waiter and peer share a CPU (or
    /// more processes wait than there are CPUs), yielding hands the CPU to the peer instead of burning
    /// it; measured in `ipc bench`: without them, 4 ping-pong pairs on 2 CPUs fall to 0.4–0.7× pipe
    /// throughput in some runs; with them, 4.6–27× in every run, and the 2-process round trip stays
    /// at the spinning floor.
    package static let yieldRounds: Int = 10

    /// A yield that kept us off the CPU longer than this (ns) gave it to a process that does not
    /// hand it back soon: a peer that only checks and yields back takes a few µs.
    package static let longYield: UInt64 = 50_000

    /// How long waits stop yielding after a long yield (ns): at first, and at most.
    package static let firstYieldBackoff: UInt64 = 10_000_000
    package static let maximumYieldBackoff: UInt64 = 320_000_000

    /// Until when (monotonic ns) waits do not yield, and the backoff that set it.
    private static let yieldsOffUntil = Atomic<UInt64>(0)
    private static let yieldBackoff = Atomic<UInt64>(firstYieldBackoff)

    /// Whether waits may yield now (false for a while after a long yield).
    package static func mayYield() -> Bool {
        Clock.monotonicNanoseconds() >= yieldsOffUntil.load(ordering: .relaxed)
    }

    /// Set while yields are off (with `yieldsOffUntil`): a cheap first check for ``pauseRounds``.
    private static let backingOff = Atomic<Bool>(false)

    /// Pause rounds for a wait starting now: ``spinRounds``, or ``contendedSpinRounds`` while yields
    /// are off. One relaxed load unless the process is backing off.
    @inline(__always)
    package static var pauseRounds: Int {
        guard backingOff.load(ordering: .relaxed) else { return spinRounds }
        return pauseRoundsWhileBackingOff()
    }

    @inline(never)
    private static func pauseRoundsWhileBackingOff() -> Int {
        if Clock.monotonicNanoseconds() < yieldsOffUntil.load(ordering: .relaxed) { return contendedSpinRounds }
        backingOff.store(false, ordering: .relaxed)
        return spinRounds
    }

    /// Yields the CPU; false if the yield was long (see the type's documentation): the caller stops
    /// yielding, and so do the process's waits for the backoff.
    package static func yieldIfShort() -> Bool {
        let before = Clock.monotonicNanoseconds()
        sched_yield()
        let after = Clock.monotonicNanoseconds()
        guard after &- before > longYield else { return true }
        let offUntil = yieldsOffUntil.load(ordering: .relaxed)
        // Another thread of this process backed off meanwhile.
        guard offUntil <= before else { return false }
        let previous = yieldBackoff.load(ordering: .relaxed)
        // Long again within one backoff of the last backoff's end: the load persists, back off longer.
        let backoff = offUntil != 0 && before &- offUntil < previous
            ? min(previous &* 2, maximumYieldBackoff) : firstYieldBackoff
        yieldBackoff.store(backoff, ordering: .relaxed)
        yieldsOffUntil.store(after &+ backoff, ordering: .relaxed)
        backingOff.store(true, ordering: .relaxed)
        return false
    }

    /// One spin-loop hint (a call across the module boundary costs far less than the pause itself).
    @inline(__always)
    package static func pause() { cipc_cpu_relax() }

    /// Gives the CPU to another runnable thread.
    @inline(__always)
    package static func yield() { sched_yield() }
}

/// The pointer to an `Atomic<UInt32>` at `raw`. Inlinable: every primitive's hot path calls it
/// from another module.
@inlinable
package func atomic32(_ raw: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> {
    raw.assumingMemoryBound(to: Atomic<UInt32>.self)
}

/// The pointer to an `Atomic<UInt64>` at `raw` (8-byte aligned).
@inlinable
package func atomic64(_ raw: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> {
    raw.assumingMemoryBound(to: Atomic<UInt64>.self)
}
