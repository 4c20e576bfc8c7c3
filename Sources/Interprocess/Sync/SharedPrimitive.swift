import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

// MARK: - Scoped locking after an owner's death

/// Runs `body` between `lock` and `unlock`. If the lock reports that a previous owner died and the
/// data was not marked consistent since, releases it and throws `ownerDied` without running `body`.
/// The `withLock` / `withReadLock` / `withWriteLock` of the robust locks.
func withLockRefusingInconsistentData<R>(
    lock: () throws(InterprocessError) -> ProcessMutex.Acquisition, unlock: () throws(InterprocessError) -> Void,
    name: String?, _ body: () throws -> R
) throws -> R {
    if try lock() == .previousOwnerDied {
        try unlock()
        throw InterprocessError(.ownerDied, objectName: name, detail: "a previous owner died holding the lock; the data may be inconsistent")
    }
    defer { try? unlock() }
    return try body()
}

/// Runs `body` between `lock` and `unlock`; if a previous owner died, first runs `recover` (holding
/// the lock) and, if it returns, `markConsistent`. The `withLock(onOwnerDied:_:)` of the robust locks.
func withLockRecovering<R>(
    lock: () throws(InterprocessError) -> ProcessMutex.Acquisition, unlock: () throws(InterprocessError) -> Void,
    markConsistent: () -> Void, recover: () throws -> Void, _ body: () throws -> R
) throws -> R {
    let acquisition = try lock()
    defer { try? unlock() }
    if acquisition == .previousOwnerDied {
        try recover()
        markConsistent()
    }
    return try body()
}

// MARK: - Waiting

/// A primitive whose waits all follow one shape: try without blocking, then spin and park on one
/// futex word until `waitAttempt` succeeds (``ProcessSemaphore``, ``ProcessEvent``). The blocking and
/// async waits live here once; the types keep only their public, documented entry points.
protocol FutexWaitable: AnyObject {
    var waitWord: UnsafeMutableRawPointer { get }
    var waiterWord: UnsafeMutableRawPointer { get }
    var name: String? { get }
    func tryWait() -> Bool
    func waitAttempt(_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Void>
}

extension FutexWaitable {
    @available(*, noasync)
    func waitBlocking(deadline: UInt64) throws(InterprocessError) {
        if tryWait() { return }
        try blockingWait(word: waitWord, waiters: waiterWord, deadline: deadline, name: name, waitAttempt)
    }

    func waitAsync(deadline: UInt64) async throws(InterprocessError) {
        try throwIfCancelled(name)
        if tryWait() { return }
        try await asyncWait(word: waitWord, waiters: waiterWord, deadline: deadline, name: name, waitAttempt)
    }
}

/// What one attempt to acquire found.
enum WaitStep<Value> {
    /// Acquired.
    case done(Value)
    /// Not available: park while the futex word still holds `expected`.
    case park(expected: UInt32)
    /// Lost a race: try again at once.
    case retry
}

/// Calls `attempt` up to `rounds` times with a pause instruction between failures, then up to
/// `yields` times with a `sched_yield` between failures; the value if one attempt succeeded. The spin
/// phase of both wait drivers. While yields hand the CPU to CPU-bound processes
/// (``SpinPolicy/yieldIfShort()``), it does not yield and pauses only
/// ``SpinPolicy/contendedSpinRounds`` times. The policy's state is read after the first failure.
@inline(__always)
private func spin<Value>(
    rounds: Int, yields: Int = 0, _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
) throws(InterprocessError) -> Value? {
    var rounds = rounds
    var yields = yields
    var yielding = false
    var started = false
    while true {
        switch try attempt(false) {
        case .done(let value): return value
        case .retry: continue
        case .park:
            if !started {
                started = true
                rounds = min(rounds, SpinPolicy.pauseRounds)
            }
            if rounds > 0 {
                rounds -= 1
                SpinPolicy.pause()
                continue
            }
            guard yields > 0 else { return nil }
            if !yielding {
                yielding = true
                if !SpinPolicy.mayYield() { return nil }
            }
            yields -= 1
            if !SpinPolicy.yieldIfShort() { return nil }
        }
    }
}

/// When the next periodic check (e.g. of a lock owner's liveness) is due, for both wait drivers.
private struct PeriodicCheck {
    let interval: UInt64
    private(set) var next: UInt64

    init(every interval: UInt64) {
        self.interval = interval
        next = interval == .max ? .max : Clock.monotonicNanoseconds() &+ interval
    }

    /// Whether a check is due now; if so, schedules the next one.
    mutating func isDue() -> Bool {
        guard next != .max else { return false }
        let now = Clock.monotonicNanoseconds()
        guard now >= next else { return false }
        next = now &+ interval
        return true
    }
}

/// The waiting loop shared by every primitive: spin briefly (never on one CPU), then count ourselves
/// in `waiters` and park on `word` until `attempt` succeeds or `deadline` passes.
///
/// `attempt(checkNow)` is told when a periodic check (`recheckEvery`, e.g. a lock owner's liveness)
/// is due. Wakers skip the system call when `waiters` is 0: the waiter increments it *before* its
/// final attempt, and a waker changes the word *before* reading `waiters` (both sequentially
/// consistent), so one of them always sees the other.
///
/// `whileSpinning`, if given, replaces `attempt` during the spin phase: the locks whose owner word
/// carries a *contended* bit (``ProcessMutex``, ``ProcessRWLock``) announce themselves in it only
/// when they are about to park, so that a waiter that gets the lock by spinning leaves no bit (and
/// no spare wake-up call) behind. Such locks decide wakes by that bit, not by `waiters`, which is
/// then only a count for `ipc inspect`.
@inline(never)
func blockingWait<Value>(
    word: UnsafeMutableRawPointer, waiters: UnsafeMutableRawPointer, deadline: UInt64,
    recheckEvery: UInt64 = .max, name: String?,
    whileSpinning: ((_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>)? = nil,
    _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
) throws(InterprocessError) -> Value {
    if let whileSpinning {
        if let value = try spin(rounds: SpinPolicy.spinRounds, yields: SpinPolicy.yieldRounds, whileSpinning) { return value }
    } else {
        if let value = try spin(rounds: SpinPolicy.spinRounds, yields: SpinPolicy.yieldRounds, attempt) { return value }
    }
    try countWaiter(in: waiters, name: name)
    defer { uncountWaiter(in: waiters) }
    var check = PeriodicCheck(every: recheckEvery)
    while true {
        switch try attempt(check.isDue()) {
        case .done(let value): return value
        case .retry: continue
        case .park(let expected):
            if Futex.wait(word, expected: expected, deadline: min(deadline, check.next)) == .timedOut,
               Clock.monotonicNanoseconds() >= deadline {
                // One last attempt: the state may have changed as the time ran out.
                if case .done(let value) = try attempt(false) { return value }
                throw InterprocessError(.timedOut, objectName: name, detail: "the wait timed out")
            }
        }
    }
}

/// The most threads that can be counted in a waiter word: more than any machine runs (Linux's pid_max,
/// which bounds threads too, is at most 2^22), far from the 32-bit limit.
let maximumWaiters: UInt32 = 0x7FFF_FFFF

/// Counts the calling thread in the waiter word `waiters` before it parks (sequentially consistent:
/// see ``blockingWait``). A count above ``maximumWaiters`` is impossible — a peer wrote it — and
/// counting on from it would wrap to 0 and make wakers skip their wake-up: the increment is undone
/// and the wait throws `corrupt` (DESIGN §3).
func countWaiter(in waiters: UnsafeMutableRawPointer, name: String?) throws(InterprocessError) {
    let previous = atomic32(waiters).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
    guard previous < maximumWaiters else {
        atomic32(waiters).pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        throw InterprocessError(.corrupt, objectName: name, detail: "impossible waiter count \(previous) in the shared state")
    }
}

/// Counts the calling thread out of `waiters` after it parked. Wraps: a count that a peer zeroed
/// meanwhile becomes impossible, which the next waiter reports (``countWaiter(in:name:)``).
func uncountWaiter(in waiters: UnsafeMutableRawPointer) {
    atomic32(waiters).pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
}

/// Throws `cancelled` if the current task is cancelled. Every `async` acquisition starts with it, so
/// that a cancelled task never acquires anything — not even a lock that happens to be free.
@inline(__always)
func throwIfCancelled(_ name: String?) throws(InterprocessError) {
    if Task.isCancelled {
        throw InterprocessError(.cancelled, objectName: name, detail: "the waiting task was cancelled")
    }
}

/// The `async` form of ``blockingWait``: parks through the process-wide ``AsyncFutexWaiter`` (no
/// cooperative thread blocks) and throws `cancelled` — having consumed nothing — when the task is
/// cancelled.
func asyncWait<Value>(
    word: UnsafeMutableRawPointer, waiters: UnsafeMutableRawPointer, deadline: UInt64,
    recheckEvery: UInt64 = .max, name: String?,
    whileSpinning: ((_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>)? = nil,
    _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
) async throws(InterprocessError) -> Value {
    // A shorter spin: this runs on a cooperative thread.
    if let whileSpinning {
        if let value = try spin(rounds: SpinPolicy.spinRounds / 4, whileSpinning) { return value }
    } else {
        if let value = try spin(rounds: SpinPolicy.spinRounds / 4, attempt) { return value }
    }
    try countWaiter(in: waiters, name: name)
    defer { uncountWaiter(in: waiters) }
    var check = PeriodicCheck(every: recheckEvery)
    while true {
        if Task.isCancelled {
            throw InterprocessError(.cancelled, objectName: name, detail: "the waiting task was cancelled")
        }
        switch try attempt(check.isDue()) {
        case .done(let value): return value
        case .retry: continue
        case .park(let expected):
            let outcome = await AsyncFutexWaiter.shared.wait(on: word, expected: expected, deadline: min(deadline, check.next))
            switch outcome {
            case .cancelled:
                throw InterprocessError(.cancelled, objectName: name, detail: "the waiting task was cancelled")
            case .timedOut where Clock.monotonicNanoseconds() >= deadline:
                if case .done(let value) = try attempt(false) { return value }
                throw InterprocessError(.timedOut, objectName: name, detail: "the wait timed out")
            default:
                break
            }
        }
    }
}
