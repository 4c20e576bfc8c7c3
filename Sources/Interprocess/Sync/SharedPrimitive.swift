import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

// MARK: - Scoped locking after an owner's death

/// The blocking scoped forms of the robust locks (`withBlockingLock`, `withBlockingReadLock`,
/// `withBlockingWriteLock`): runs `body` holding the lock that `acquisition` reports, then releases
/// it with `unlock` (also when `body` or `recover` throws). If a previous owner died and the data was
/// not marked consistent since, first runs `recover` and, if it returns, `markConsistent`. The forms
/// that refuse inconsistent data pass ``refuseInconsistentData(_:)`` as `recover`.
func runLocked<R>(
    _ acquisition: ProcessMutex.Acquisition, unlock: () throws(InterprocessError) -> Void,
    onOwnerDied recover: () throws -> Void, markConsistent: () -> Void, _ body: () throws -> R
) throws -> R {
    defer { try? unlock() }
    if acquisition == .previousOwnerDied {
        try recover()
        markConsistent()
    }
    return try body()
}

/// The `async` scoped forms of the robust locks (`withLock`, `withReadLock`, `withWriteLock`): as
/// ``runLocked(_:unlock:onOwnerDied:markConsistent:_:)``, with `recover` and `body` run in the
/// caller's isolation.
func runLocked<R>(
    isolation: isolated (any Actor)?,
    _ acquisition: ProcessMutex.Acquisition, unlock: () throws(InterprocessError) -> Void,
    onOwnerDied recover: () async throws -> Void, markConsistent: () -> Void, _ body: () async throws -> R
) async throws -> R {
    defer { try? unlock() }
    if acquisition == .previousOwnerDied {
        try await recover()
        markConsistent()
    }
    return try await body()
}

/// The `recover` of the scoped forms that do not repair: throws `ownerDied` (the lock is then
/// released and the body does not run).
func refuseInconsistentData(_ name: String?) -> () throws -> Void {
    { throw InterprocessError(.ownerDied, objectName: name, detail: "a previous owner died holding the lock; the data may be inconsistent") }
}

// MARK: - Waiting

/// What one attempt to acquire found.
enum WaitStep<Value> {
    /// Acquired.
    case done(Value)
    /// Not available: park while the futex word still holds `expected`.
    case park(expected: UInt32)
    /// Lost a race: try again at once.
    case retry
}

/// Where the waiters of one primitive park: the futex word, the word that counts them, and how
/// often a parked waiter re-checks something that no wake-up announces (a lock owner's liveness).
///
/// Its two drivers, ``blockingWait(until:whileSpinning:_:)`` and ``asyncWait(until:whileSpinning:_:)``,
/// are the one waiting loop of every primitive: a primitive writes one `attempt` closure per verb, and
/// each of its verbs — `async`, blocking (timed or not) — is a call to a driver with it (its `try…`
/// form calls the attempt itself).
struct WaitSite {
    let word: UnsafeMutableRawPointer
    let waiters: UnsafeMutableRawPointer
    let name: String?
    /// Nanoseconds between the periodic checks (`attempt(true)`); `.max`: none.
    var recheckEvery: UInt64 = .max
    /// Where a waiter also counts itself per process (a channel's participant entry); nil for
    /// every other primitive, which then pays one test of nil per park.
    var processTally: (any ProcessWaiterTally)? = nil

    /// The waiting loop, blocking the thread: spin briefly (never on one CPU), then count ourselves
    /// in `waiters` and park on `word` until `attempt` succeeds or `deadline` passes (`timedOut`).
    ///
    /// `attempt(checkNow)` is told when a periodic check is due: at the first attempt that would
    /// park, then every `recheckEvery`. Wakers skip the system call when `waiters` is 0: the waiter
    /// increments it *before* its final attempt, and a waker changes the word *before* reading
    /// `waiters` (both sequentially consistent), so one of them always sees the other.
    ///
    /// With a ``processTally``, the waiter also counts itself in its process's own word after the
    /// shared one, and counts itself out of it before the shared one
    /// (``countWaiter(in:name:alsoIn:)``): what lets a sweeper of a dead process take back the
    /// counts it left.
    ///
    /// `whileSpinning`, if given, replaces `attempt` during the spin phase: the locks whose owner word
    /// carries a *contended* bit (``ProcessMutex``, ``ProcessRWLock``) announce themselves in it only
    /// when they are about to park, so that a waiter that gets the lock by spinning leaves no bit (and
    /// no spare wake-up call) behind. Such locks decide wakes by that bit, not by `waiters`, which is
    /// then only a count for `ipc inspect`.
    ///
    /// The closures are not optional (an optional closure escapes: its context would be allocated on
    /// the heap at every wait); ``blockingWait(until:_:)`` spins with `attempt` itself.
    @inline(never)
    func blockingWait<Value>(
        until deadline: Deadline,
        whileSpinning: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>,
        _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
    ) throws(InterprocessError) -> Value {
        if let value = try spin(rounds: SpinPolicy.spinRounds, yields: SpinPolicy.yieldRounds, whileSpinning) { return value }
        let own = try countWaiter(in: waiters, name: name, alsoIn: processTally)
        defer { uncountWaiter(in: waiters, alsoIn: own) }
        var check = PeriodicCheck(every: recheckEvery)
        while true {
            switch try attempt(check.isDue()) {
            case .done(let value): return value
            case .retry: continue
            case .park(let expected):
                // The kernel takes the deadline as it is: after a wake-up or EINTR, this parks again
                // for what is left.
                if Futex.wait(word, expected: expected, deadline: min(deadline, check.next)) == .timedOut, deadline.hasPassed {
                    return try lastAttempt(attempt)
                }
            }
        }
    }

    /// The `async` form of ``blockingWait(until:whileSpinning:_:)``: parks through the process-wide
    /// ``AsyncFutexWaiter`` (no cooperative thread blocks). Throws `cancelled` — having acquired
    /// nothing — if the task is cancelled before it starts or while it waits.
    func asyncWait<Value>(
        until deadline: Deadline,
        whileSpinning: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>,
        _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
    ) async throws(InterprocessError) -> Value {
        // A cancelled task acquires nothing, not even what is free.
        try throwIfCancelled()
        // A shorter spin, and no yields: this runs on a cooperative thread.
        if let value = try spin(rounds: SpinPolicy.spinRounds / 4, whileSpinning) { return value }
        let own = try countWaiter(in: waiters, name: name, alsoIn: processTally)
        defer { uncountWaiter(in: waiters, alsoIn: own) }
        var check = PeriodicCheck(every: recheckEvery)
        while true {
            try throwIfCancelled()
            switch try attempt(check.isDue()) {
            case .done(let value): return value
            case .retry: continue
            case .park(let expected):
                switch await AsyncFutexWaiter.shared.wait(on: word, expected: expected, deadline: min(deadline, check.next)) {
                case .cancelled:
                    throw cancelledError()
                case .timedOut where deadline.hasPassed:
                    return try lastAttempt(attempt)
                default:
                    break
                }
            }
        }
    }

    /// ``blockingWait(until:whileSpinning:_:)`` spinning with `attempt` itself.
    @inline(__always)
    func blockingWait<Value>(
        until deadline: Deadline, _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
    ) throws(InterprocessError) -> Value {
        try blockingWait(until: deadline, whileSpinning: attempt, attempt)
    }

    /// ``asyncWait(until:whileSpinning:_:)`` spinning with `attempt` itself.
    @inline(__always)
    func asyncWait<Value>(
        until deadline: Deadline, _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
    ) async throws(InterprocessError) -> Value {
        try await asyncWait(until: deadline, whileSpinning: attempt, attempt)
    }

    /// One last attempt when the time ran out (the state may have changed as it did), else `timedOut`.
    private func lastAttempt<Value>(
        _ attempt: (_ checkNow: Bool) throws(InterprocessError) -> WaitStep<Value>
    ) throws(InterprocessError) -> Value {
        if case .done(let value) = try attempt(false) { return value }
        throw InterprocessError(.timedOut, objectName: name, detail: "the wait timed out")
    }

    /// Throws `cancelled` if the current task is cancelled.
    @inline(__always)
    func throwIfCancelled() throws(InterprocessError) {
        if Task.isCancelled { throw cancelledError() }
    }

    private func cancelledError() -> InterprocessError {
        InterprocessError(.cancelled, objectName: name, detail: "the waiting task was cancelled")
    }
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
                HotPath.pause()
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

/// When the next periodic check (e.g. of a lock owner's liveness) is due, for both wait drivers: at
/// the first attempt that would park (what spinning could not get may be held by a dead process),
/// then every `interval`.
private struct PeriodicCheck {
    let interval: UInt64
    /// ``Deadline/never`` when there are no checks.
    private(set) var next: Deadline

    init(every interval: UInt64) {
        self.interval = interval
        next = interval == .max ? .never : Deadline(nanoseconds: 0)
    }

    /// Whether a check is due now; if so, schedules the next one.
    mutating func isDue() -> Bool {
        guard !next.isNever else { return false }
        let now = Deadline.now
        guard now >= next else { return false }
        next = now.advanced(byNanoseconds: interval)
        return true
    }
}

/// The most threads that can be counted in a waiter word: more than any machine runs (Linux's pid_max,
/// which bounds threads too, is at most 2^22), far from the 32-bit limit.
let maximumWaiters: UInt32 = 0x7FFF_FFFF

/// Counts the calling thread in the waiter word `waiters` before it parks (sequentially consistent:
/// see ``WaitSite/blockingWait(until:whileSpinning:_:)``). A count above ``maximumWaiters`` is
/// impossible — a peer wrote it — and counting on from it would wrap to 0 and make wakers skip their
/// wake-up: the increment is undone and the wait throws `corrupt` (DESIGN §3).
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

/// A process's own count of its threads parked at a ``WaitSite``, beside the shared count: a
/// channel's participant entry (`receivers_waiting` / `senders_waiting` in
/// `cipc_channel_participant`), so that whoever sweeps a process that died parked subtracts what
/// it left in the shared count. The site counts in the shared word first and in this one second,
/// and out in the reverse order, so that this one never holds more than its process contributes
/// to the shared one: subtracting it can leave an over-count (spare wake-ups), never an
/// under-count (a lost one).
protocol ProcessWaiterTally: AnyObject, Sendable {
    /// Counts the calling thread in its process's own word, after it counted itself in the shared
    /// one; returns that word (to count out of), or nil when the process has none (no entry).
    func countWaiter() -> UnsafeMutablePointer<Atomic<UInt32>>?
    /// Runs after the thread counted itself out of its own word and before the shared one (a
    /// crash point of the kind).
    func countedOut()
}

/// ``countWaiter(in:name:)``, then, if there is a `tally`, the same thread in its process's own
/// word; that word, to give back to ``uncountWaiter(in:alsoIn:)``.
@inline(__always)
func countWaiter(
    in waiters: UnsafeMutableRawPointer, name: String?, alsoIn tally: (any ProcessWaiterTally)?
) throws(InterprocessError) -> (word: UnsafeMutablePointer<Atomic<UInt32>>, tally: any ProcessWaiterTally)? {
    try countWaiter(in: waiters, name: name)
    guard let tally, let word = tally.countWaiter() else { return nil }
    return (word, tally)
}

/// Counts the calling thread out of its process's own word (never below 0: a word zeroed since,
/// its entry freed and claimed again, keeps 0), then out of `waiters` (``uncountWaiter(in:)``).
@inline(__always)
func uncountWaiter(in waiters: UnsafeMutableRawPointer, alsoIn own: (word: UnsafeMutablePointer<Atomic<UInt32>>, tally: any ProcessWaiterTally)?) {
    if let own {
        subtractWithoutWrapping(1, from: own.word)
        own.tally.countedOut()
    }
    uncountWaiter(in: waiters)
}

/// Subtracts `amount` from the count at `word`, stopping at 0 (a compare-and-swap loop): for counts
/// that another process may have lowered or zeroed meanwhile. Returns what it subtracted.
@discardableResult
func subtractWithoutWrapping(_ amount: UInt32, from word: UnsafeMutablePointer<Atomic<UInt32>>) -> UInt32 {
    guard amount != 0 else { return 0 }
    var current = word.pointee.load(ordering: .relaxed)
    while current != 0 {
        let taken = min(current, amount)
        let (exchanged, original) = word.pointee.compareExchange(expected: current, desired: current - taken, ordering: .sequentiallyConsistent)
        if exchanged { return taken }
        current = original
    }
    return 0
}
