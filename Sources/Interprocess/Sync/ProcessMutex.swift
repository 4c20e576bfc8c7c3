public import SystemPackage
import CInterprocess
import InterprocessSystem
public import Synchronization

/// A mutual-exclusion lock shared between processes that survives its owner's death.
///
/// ```swift
/// let mutex = try ProcessMutex.create(name: "orders.lock")     // or .open(name:) in a peer
/// try mutex.withLock {
///     // … touch the shared data …
/// }
/// ```
///
/// **Owner death.** The lock word holds the owner's pid and (the low 32 bits of) its process start
/// time, written by one compare-and-swap, so a reused pid is never mistaken for the owner. A waiter
/// checks the owner's liveness every 25 ms while it waits; when the owner died holding the lock, the
/// waiter takes it over and learns it from ``Acquisition/previousOwnerDied`` — within about 25 ms
/// of starting to wait (bounded by 50 ms). The mutex then stays *inconsistent*, and every later
/// acquisition reports `previousOwnerDied`, until a holder repairs the data and calls
/// ``markConsistent()``. ``withLock(_:)`` throws `ownerDied` in that state (after releasing the lock),
/// ``withLock(onOwnerDied:_:)`` runs your repair first.
///
/// What a process killed at each step leaves behind: killed while owning, the word names a dead
/// process (taken over by the next waiter, as above); killed while parked, `waiters` stays one too
/// high, which only costs unlockers a spare wake-up call; killed between taking over and setting
/// `inconsistent`, the lock names the dead taker and is taken over again.
///
/// **Ownership is per process.** Threads of one process share one identity: another thread of the
/// owning process may unlock it; a thread that locks it twice deadlocks. Forking without exec is not
/// supported (the child would share the parent's identity).
///
/// Speed: uncontended lock + unlock is one compare-and-swap and one exchange in shared memory; no
/// system call unless a waiter is parked. Contended waits spin briefly (never on one CPU), then park
/// on a futex.
public final class ProcessMutex: @unchecked Sendable {
    // `@unchecked Sendable`: the state is 64 bytes of shared memory kept mapped by `storage`, and
    // touched only through atomics.

    /// How an acquisition went.
    public enum Acquisition: Sendable, Hashable {
        /// The lock was taken normally.
        case acquired
        /// The lock was taken, but a previous owner died holding it (now or earlier) and nobody has
        /// called ``ProcessMutex/markConsistent()`` since: the protected data may be half-updated.
        case previousOwnerDied
    }

    /// Bytes of shared state (place it at an 8-byte aligned offset; 64-byte alignment avoids sharing
    /// a cache line with other data).
    public static let stateSize = 64

    let storage: PrimitiveStorage
    // The fast paths are inlined into callers (a call across the module boundary costs as much as the
    // lock itself), so the words they touch are `@usableFromInline`.
    @usableFromInline let owner: UnsafeMutablePointer<Atomic<UInt64>>
    private let word: UnsafeMutableRawPointer
    private let waiters: UnsafeMutableRawPointer
    @usableFromInline let waiterCount: UnsafeMutablePointer<Atomic<UInt32>>
    @usableFromInline let inconsistent: UnsafeMutablePointer<Atomic<UInt32>>
    /// This process's lock word: pid | start-time epoch << 32.
    @usableFromInline let me: UInt64

    static let livenessInterval: UInt64 = 25_000_000

    private init(storage: PrimitiveStorage) {
        self.storage = storage
        owner = atomic64(storage.base)
        word = storage.base
        waiters = storage.base + 8
        waiterCount = atomic32(storage.base + 8)
        inconsistent = atomic32(storage.base + 12)
        me = Self.ownerWord(ProcessIdentity.current)
    }

    static func ownerWord(_ identity: ProcessIdentity) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: identity.startTime)) << 32 | UInt64(UInt32(bitPattern: identity.pid))
    }

    private static func initialize(_ base: UnsafeMutableRawPointer) {
        atomic64(base).initialize(to: Atomic(0))
    }

    /// Creates a named mutex (a segment of kind `mutex`), unlocked.
    public static func create(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessMutex {
        ProcessMutex(storage: try PrimitiveStorage.create(
            name: name, kind: .mutex, tag: CIPC_TAG_MUTEX, permissions: permissions, lifetime: lifetime,
            initialize: initialize))
    }

    /// Opens a named mutex.
    public static func open(name: String) throws(InterprocessError) -> ProcessMutex {
        ProcessMutex(storage: try PrimitiveStorage.open(name: name, kind: .mutex, tag: CIPC_TAG_MUTEX))
    }

    /// Initializes a new, unlocked mutex at `offset` in `segment` (``stateSize`` bytes).
    public static func create(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessMutex {
        ProcessMutex(storage: try PrimitiveStorage.place(in: segment, at: offset, tag: CIPC_TAG_MUTEX, what: "mutex", initialize: initialize))
    }

    /// Uses the mutex that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessMutex {
        ProcessMutex(storage: try PrimitiveStorage.place(in: segment, at: offset, tag: CIPC_TAG_MUTEX, what: "mutex", initialize: nil))
    }

    /// The name of a named mutex.
    public var name: String? { storage.name }

    /// Unregisters a named mutex (the last holder of a `.whileReferenced` one removes the name).
    public func close() { storage.close() }

    // MARK: Locking

    /// Acquires the lock, waiting as long as it takes. A dead owner's lock is taken over within
    /// ~25 ms (see the type's documentation).
    @available(*, noasync, message: "use the async lock() in async code")
    @discardableResult
    @inlinable
    public func lock() throws(InterprocessError) -> Acquisition {
        if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
            return inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
        }
        return try lockSlowly()
    }

    @available(*, noasync)
    @usableFromInline
    @inline(never)
    func lockSlowly() throws(InterprocessError) -> Acquisition {
        try blockingWait(word: word, waiters: waiters, deadline: .max, recheckEvery: Self.livenessInterval, name: name, attempt)
    }

    /// Acquires the lock, or throws `timedOut` after `timeout`.
    @available(*, noasync, message: "use the async lock(timeout:) in async code")
    @discardableResult
    public func lock(timeout: Duration) throws(InterprocessError) -> Acquisition {
        if let acquisition = try tryLock() { return acquisition }
        return try blockingWait(
            word: word, waiters: waiters, deadline: Clock.deadline(after: timeout), recheckEvery: Self.livenessInterval,
            name: name, attempt)
    }

    /// Acquires the lock without blocking a thread; throws `cancelled` (having acquired nothing)
    /// if the task is cancelled.
    @discardableResult
    public func lock() async throws(InterprocessError) -> Acquisition {
        try await lock(deadline: .max)
    }

    /// Acquires the lock without blocking a thread; throws `cancelled` (having acquired nothing)
    /// if the task is cancelled, `timedOut` after `timeout`.
    @discardableResult
    public func lock(timeout: Duration) async throws(InterprocessError) -> Acquisition {
        try await lock(deadline: Clock.deadline(after: timeout))
    }

    private func lock(deadline: UInt64) async throws(InterprocessError) -> Acquisition {
        try throwIfCancelled(name)
        if let acquisition = try tryLock() { return acquisition }
        return try await asyncWait(
            word: word, waiters: waiters, deadline: deadline, recheckEvery: Self.livenessInterval, name: name, attempt)
    }

    /// Acquires the lock if it is free, or if its owner is gone (dead pid); nil if someone holds it.
    /// Never blocks. (A blocking or timed lock also catches an owner whose pid was reused.)
    public func tryLock() throws(InterprocessError) -> Acquisition? {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
                return inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
            }
            return nil
        }
        let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: current))
        if pid <= 0 || !ProcessIdentity.pidExists(pid) { return takeOver(from: current) }
        return nil
    }

    /// Releases the lock. Throws `notOwner` (and releases nothing) if this process does not hold it.
    @inlinable
    public func unlock() throws(InterprocessError) {
        guard owner.pointee.load(ordering: .relaxed) == me else { throw notOwnerError() }
        owner.pointee.store(0, ordering: .sequentiallyConsistent)
        if waiterCount.pointee.load(ordering: .sequentiallyConsistent) != 0 { wakeOne() }
    }

    @usableFromInline
    @inline(never)
    func wakeOne() {
        Futex.wake(word, count: 1)
    }

    @usableFromInline
    func notOwnerError() -> InterprocessError {
        InterprocessError(.notOwner, objectName: name, detail: "this process does not hold the mutex")
    }

    /// Declares the protected data repaired after a ``Acquisition/previousOwnerDied`` acquisition.
    /// Call it while holding the lock.
    public func markConsistent() {
        inconsistent.pointee.store(0, ordering: .releasing)
    }

    /// Whether no owner died since the last ``markConsistent()``.
    public var isConsistent: Bool { inconsistent.pointee.load(ordering: .acquiring) == 0 }

    /// Whether some process holds the lock now.
    public var isLocked: Bool { owner.pointee.load(ordering: .relaxed) != 0 }

    /// Runs `body` holding the lock. If a previous owner died and the data was not marked consistent,
    /// releases the lock and throws `ownerDied` without running `body`: use
    /// ``withLock(onOwnerDied:_:)`` to repair.
    @available(*, noasync, message: "use lock() async / unlock() in async code")
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try withLockRefusingInconsistentData(lock: { () throws(InterprocessError) in try lock() }, unlock: unlock, name: name, body)
    }

    /// Runs `body` holding the lock; if a previous owner died, first runs `recover` (holding the lock)
    /// and, if it returns, marks the mutex consistent.
    @available(*, noasync, message: "use lock() async / unlock() in async code")
    public func withLock<R>(onOwnerDied recover: () throws -> Void, _ body: () throws -> R) throws -> R {
        try withLockRecovering(
            lock: { () throws(InterprocessError) in try lock() }, unlock: unlock, markConsistent: markConsistent,
            recover: recover, body)
    }

    // MARK: Internals

    private func attempt(_ checkOwner: Bool) -> WaitStep<Acquisition> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
                return .done(inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied)
            }
            return .retry
        }
        if checkOwner && !Self.isAlive(ownerWord: current) {
            return takeOver(from: current).map { .done($0) } ?? .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// Takes the lock from the dead owner recorded as `dead`; nil if it changed meanwhile.
    private func takeOver(from dead: UInt64) -> Acquisition? {
        guard owner.pointee.compareExchange(expected: dead, desired: me, ordering: .acquiring).exchanged else { return nil }
        inconsistent.pointee.store(1, ordering: .relaxed)
        atomic64(storage.base + 24).pointee.wrappingAdd(1, ordering: .relaxed)
        return .previousOwnerDied
    }

    /// Whether the process recorded in a lock word is alive: same pid *and* same start time.
    static func isAlive(ownerWord: UInt64) -> Bool {
        let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: ownerWord))
        let epoch = UInt32(truncatingIfNeeded: ownerWord >> 32)
        guard pid > 0, let startTime = ProcessIdentity.startTime(of: pid) else { return false }
        if epoch != 0 && UInt32(truncatingIfNeeded: startTime) != epoch { return false }
        return ProcessIdentity(pid: pid, startTime: startTime).isAlive
    }

    /// The owner's pid, waiters, consistency and recoveries, read from a copy of the state.
    static func describe(_ state: UnsafeRawBufferPointer) -> [String: String] {
        guard state.count >= 32 else { return [:] }
        let word = state.load(as: UInt64.self)
        let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: word))
        return [
            "locked": word == 0 ? "no" : "yes",
            "ownerPID": word == 0 ? "-" : "\(pid)",
            "ownerAlive": word == 0 ? "-" : (isAlive(ownerWord: word) ? "yes" : "no"),
            "waiters": "\(state.load(fromByteOffset: 8, as: UInt32.self))",
            "consistent": state.load(fromByteOffset: 12, as: UInt32.self) == 0 ? "yes" : "no",
            "recoveries": "\(state.load(fromByteOffset: 24, as: UInt64.self))",
        ]
    }
}
