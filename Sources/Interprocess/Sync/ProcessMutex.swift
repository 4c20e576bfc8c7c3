public import SystemPackage
import CInterprocess
import InterprocessSystem
public import Synchronization

/// A mutual-exclusion lock shared between processes that survives its owner's death.
///
/// ```swift
/// let mutex = try ProcessMutex.create(name: "orders.lock")     // or .open(name:) in a peer
/// try await mutex.withLock {          // suspends the task (no thread blocks) while it waits
///     // … touch the shared data …
/// }
/// try mutex.withBlockingLock { … }    // the same, blocking the thread (not in async code)
/// ```
///
/// **Waiting.** Every acquisition comes in three forms: `async` (``lock(timeout:)``,
/// ``withLock(isolation:timeout:_:)``: the task suspends, no thread blocks, cancellation ends the
/// wait having acquired nothing), blocking (``blockingLock(timeout:)``,
/// ``withBlockingLock(timeout:_:)``: unavailable in async code) and ``tryLock()`` (never waits). A
/// `timeout` (nil: none) makes a wait throw `timedOut`.
///
/// **Owner death.** The lock word holds the owner's *token*: its identity in the segment's file, which
/// the owner vouches for with a kernel lock (an open-file-description lock on a byte of the file
/// that only it holds, dropped by the kernel the instant it dies). Liveness therefore comes from the
/// kernel, never from pids or /proc: it is right across PID namespaces (containers sharing
/// /dev/shm), for owners of other users and with /proc mounted `hidepid=2`. The token's high half is
/// the owner's pid as it saw it (shown by `ipc inspect`, never trusted). A waiter checks the owner's
/// liveness when it is about to park (after its brief spin), then every 25 ms while it waits
/// (``tryLock()`` checks it once); when the owner died holding the lock, the waiter takes it over and
/// learns it from ``Acquisition/previousOwnerDied`` — at once if the owner was dead when it started
/// to wait, else within about 25 ms of the death (bounded by 50 ms). The mutex then stays
/// *inconsistent*, and every later acquisition reports `previousOwnerDied`, until a holder repairs
/// the data and calls ``markConsistent()``. ``withLock(isolation:timeout:_:)`` throws `ownerDied` in
/// that state (after releasing the lock), ``withLock(isolation:timeout:onOwnerDied:_:)`` runs your
/// repair first (and so do their blocking forms).
///
/// **Waking.** Bit 31 of the lock word (never part of a token) says *contended*: a waiter sets it just
/// before it parks, an unlock exchanges the word with 0 and makes the wake-up system call only if the
/// bit was set, and a waiter that was parked takes the lock with the bit set (conservatively: others
/// may still be parked). So once nobody waits any more, at most one spare wake-up call is made and
/// the fast paths are system-call-free again — also after a waiter was killed while parked.
///
/// What a process killed at each step leaves behind:
/// - killed while **owning** (or between taking over and setting `inconsistent`): the word names a
///   dead token; the next waiter (or ``tryLock()``) takes it over, as above.
/// - killed while **parked** (or spinning): nothing that lasts. The contended bit it set costs the
///   next unlock one spare wake-up call, after which the lock is uncontended again. (The `waiters`
///   count that `ipc inspect` shows stays one too high; it only informs, nothing decides by it.)
///
/// **Ownership is per process.** Threads and instances of one process share one token per segment
/// file: another thread of the owning process may unlock it; a thread that locks it twice
/// deadlocks. The token lives as long as some primitive instance of the process on that file (a
/// mutex, reader-writer lock or shared variable, named or placed); keep the instance while you hold
/// the lock — with no instance left, the lock's owner looks dead and is taken over. Forking without
/// exec is not supported (the child would share the parent's identity).
///
/// Speed: uncontended lock + unlock is one compare-and-swap and one exchange in shared memory; no
/// system call unless a waiter parked. Contended waits spin briefly (never on one CPU), then park
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
    /// a cache line with other data): a `cipc_mutex`.
    public static let stateSize = MemoryLayout<cipc_mutex>.size

    let storage: SharedObjectStorage
    // The fast paths are inlined into callers (a call across the module boundary costs as much as the
    // lock itself), so the words they touch are `@usableFromInline`.
    @usableFromInline let owner: UnsafeMutablePointer<Atomic<UInt64>>
    private let word: UnsafeMutableRawPointer
    private let waiters: UnsafeMutableRawPointer
    @usableFromInline let inconsistent: UnsafeMutablePointer<Atomic<UInt32>>
    /// This process's identity in the file, and the descriptor that checks others'.
    private let lease: OwnerLease
    /// This process's token: what the lock word holds while this process owns it (without the
    /// contended bit).
    @usableFromInline let me: UInt64
    /// How many wake-up system calls this instance's unlocks made (tests check that an uncontended
    /// unlock makes none).
    package let unlockWakes = Atomic<Int>(0)

    /// Bit 31 of the lock word: a waiter parked (or is about to). Never part of a token.
    @inlinable static var contended: UInt64 { 0x8000_0000 }

    static let livenessInterval: UInt64 = 25_000_000

    init(storage: SharedObjectStorage) {
        guard let lease = storage.lease else { preconditionFailure("a mutex's storage carries a lease") }
        self.storage = storage
        owner = atomic64(storage.base + fieldOffset(\cipc_mutex.owner))
        word = storage.base + fieldOffset(\cipc_mutex.owner) // the owner word's low half (little-endian)
        waiters = storage.base + fieldOffset(\cipc_mutex.waiters)
        inconsistent = atomic32(storage.base + fieldOffset(\cipc_mutex.inconsistent))
        self.lease = lease
        me = lease.token
    }

    /// Creates a named mutex (a segment of kind `mutex`), unlocked.
    public static func create(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.create(ProcessMutex.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named mutex. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.open(ProcessMutex.self, name: name, expecting: nil, trusting: trust)
    }

    /// Opens the named mutex, or creates it (unlocked); `created` says which. Of racing processes
    /// exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (mutex: ProcessMutex, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            ProcessMutex.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named mutex `name` (`incompatible` if it is not a mutex); processes
    /// that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ProcessMutex.self, name: name)
    }

    /// Initializes a new, unlocked mutex at `offset` in `segment` (``stateSize`` bytes).
    public static func create(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.place(ProcessMutex.self, in: segment, at: offset, parameters: ())
    }

    /// Uses the mutex that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.attach(ProcessMutex.self, in: segment, at: offset, expecting: nil)
    }

    /// Places an unlocked mutex in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in
    /// the segment's table of placed objects (`outOfMemory` if no room is free). Peers find it with
    /// ``open(in:named:)``.
    public static func create(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.place(ProcessMutex.self, in: segment, at: nil, named: name, parameters: ())
    }

    /// Uses the mutex placed in `segment` under `name` (`notFound` if nothing is, `incompatible`
    /// if it is of another kind).
    public static func open(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessMutex {
        try SharedObjectStorage.attach(ProcessMutex.self, in: segment, named: name, expecting: nil)
    }

    /// The name of a named mutex.
    public var name: String? { storage.name }

    /// Unregisters a named mutex (the last holder of a `.whileReferenced` one removes the name).
    public func close() { storage.close() }

    // MARK: Locking

    /// Where waiters park: the owner word's low half. They check the owner's liveness when they are
    /// about to park, then every 25 ms.
    private var site: WaitSite { WaitSite(word: word, waiters: waiters, name: name, recheckEvery: Self.livenessInterval) }

    /// Acquires the lock, suspending the task (no thread blocks) for at most `timeout` — nil: as long
    /// as it takes. A dead owner's lock is taken over (see the type's documentation).
    ///
    /// - Returns: ``Acquisition/previousOwnerDied`` if a previous owner died holding the lock and the
    ///   data was not marked consistent since; ``Acquisition/acquired`` otherwise.
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having acquired nothing.
    @discardableResult
    public func lock(timeout: Duration? = nil) async throws(InterprocessError) -> Acquisition {
        try await site.asyncWait(until: Deadline(after: timeout), whileSpinning: spinAttempt, attempt)
    }

    /// Acquires the lock, blocking the calling thread for at most `timeout` — nil: as long as it
    /// takes. The blocking form of ``lock(timeout:)``: returns and throws the same, except
    /// `cancelled`. Uncontended, it is one compare-and-swap, inlined into the caller.
    @available(*, noasync, message: "use the async lock(timeout:) in async code")
    @discardableResult
    @inlinable
    public func blockingLock(timeout: Duration? = nil) throws(InterprocessError) -> Acquisition {
        if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
            return inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
        }
        return try blockingLockSlowly(timeout)
    }

    @available(*, noasync)
    @usableFromInline
    @inline(never)
    func blockingLockSlowly(_ timeout: Duration?) throws(InterprocessError) -> Acquisition {
        try site.blockingWait(until: Deadline(after: timeout), whileSpinning: spinAttempt, attempt)
    }

    /// Acquires the lock if it is free, or takes it over if its owner died (one kernel query); nil if
    /// a live process holds it. Never blocks.
    public func tryLock() throws(InterprocessError) -> Acquisition? {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
                return inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
            }
            return nil
        }
        return lease.isAlive(current) ? nil : takeOver(from: current)
    }

    /// Releases the lock. Throws `notOwner` (and releases nothing) if this process does not hold it.
    @inlinable
    public func unlock() throws(InterprocessError) {
        guard owner.pointee.load(ordering: .relaxed) & ~Self.contended == me else { throw notOwnerError() }
        // One exchange both releases the lock and tells whether anybody parked: no other word to
        // read, no race with a waiter announcing itself (it sets the bit in this very word).
        if owner.pointee.exchange(0, ordering: .releasing) & Self.contended != 0 { wakeOne() }
    }

    @usableFromInline
    @inline(never)
    func wakeOne() {
        unlockWakes.add(1, ordering: .relaxed)
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

    /// Runs `body` holding the lock, then releases it (also when `body` throws). The lock is taken as
    /// ``lock(timeout:)`` takes it (no thread blocks); `body` runs in the caller's isolation.
    ///
    /// If a previous owner died and the data was not marked consistent, releases the lock and throws
    /// `ownerDied` without running `body`: use ``withLock(isolation:timeout:onOwnerDied:_:)`` to repair.
    /// - Throws: what ``lock(timeout:)`` throws, `ownerDied`, or what `body` throws.
    public func withLock<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil, _ body: () async throws -> R
    ) async throws -> R {
        try await runLocked(
            isolation: isolation, try await lock(timeout: timeout), unlock: unlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: markConsistent, body)
    }

    /// Runs `body` holding the lock, as ``withLock(isolation:timeout:_:)``; if a previous owner died, first runs
    /// `recover` (holding the lock) and, if it returns, marks the mutex consistent.
    public func withLock<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil,
        onOwnerDied recover: () async throws -> Void, _ body: () async throws -> R
    ) async throws -> R {
        try await runLocked(
            isolation: isolation, try await lock(timeout: timeout), unlock: unlock,
            onOwnerDied: recover, markConsistent: markConsistent, body)
    }

    /// The blocking form of ``withLock(isolation:timeout:_:)``: takes the lock as
    /// ``blockingLock(timeout:)``.
    @available(*, noasync, message: "use the async withLock(timeout:_:) in async code")
    public func withBlockingLock<R>(timeout: Duration? = nil, _ body: () throws -> R) throws -> R {
        try runLocked(
            try blockingLock(timeout: timeout), unlock: unlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: markConsistent, body)
    }

    /// The blocking form of ``withLock(isolation:timeout:onOwnerDied:_:)``.
    @available(*, noasync, message: "use the async withLock(timeout:onOwnerDied:_:) in async code")
    public func withBlockingLock<R>(
        timeout: Duration? = nil, onOwnerDied recover: () throws -> Void, _ body: () throws -> R
    ) throws -> R {
        try runLocked(try blockingLock(timeout: timeout), unlock: unlock, onOwnerDied: recover, markConsistent: markConsistent, body)
    }

    // MARK: Internals

    /// An attempt while spinning: takes a free lock without the contended bit (nobody parked behind
    /// us that we know of), and never announces itself.
    private func spinAttempt(_ checkOwner: Bool) -> WaitStep<Acquisition> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            if owner.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged {
                return .done(inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied)
            }
            return .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// An attempt of a waiter that parks: takes a free lock *with* the contended bit (others may be
    /// parked too: our unlock must wake one), takes over a dead owner's lock when a liveness check is
    /// due, and otherwise sets the contended bit before parking on the word's low half.
    private func attempt(_ checkOwner: Bool) -> WaitStep<Acquisition> {
        var current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            if owner.pointee.compareExchange(expected: 0, desired: me | Self.contended, ordering: .acquiring).exchanged {
                return .done(inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied)
            }
            return .retry
        }
        if checkOwner && !lease.isAlive(current) {
            return takeOver(from: current).map { .done($0) } ?? .retry
        }
        if current & Self.contended == 0 {
            // The same word as the unlock's exchange: either the unlock sees the bit, or this fails.
            guard owner.pointee.compareExchange(expected: current, desired: current | Self.contended, ordering: .relaxed).exchanged else {
                return .retry
            }
            current |= Self.contended
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// Takes the lock from the dead owner recorded as `dead` (keeping its contended bit: whoever
    /// parked behind the dead owner still waits); nil if it changed meanwhile.
    private func takeOver(from dead: UInt64) -> Acquisition? {
        guard owner.pointee.compareExchange(
            expected: dead, desired: me | (dead & Self.contended), ordering: .acquiring
        ).exchanged else { return nil }
        inconsistent.pointee.store(1, ordering: .relaxed)
        atomic64(storage.base + fieldOffset(\cipc_mutex.recoveries)).pointee.wrappingAdd(1, ordering: .relaxed)
        return .previousOwnerDied
    }
}

// MARK: - The shared object

extension ProcessMutex: SharedObject, SharedObjectKind {
    static var segmentKind: SegmentKind { .mutex }
    static var tag: UInt32 { CIPC_TAG_MUTEX }
    static var tagOffset: Int { fieldOffset(\cipc_mutex.tag) }
    static var kindName: String { "mutex" }
    static var recordsOwners: Bool { true }
    static var minimumSize: Int { stateSize }

    /// Unlocked: all zeros.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with _: Void) {}

    /// The owner (pid as it saw it, and whether its token is alive: `isAlive`), contention, waiters,
    /// consistency and recoveries, read from a copy of the state.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= MemoryLayout<cipc_mutex>.size else { return SharedObjectDescription(details: [:]) }
        let state = copy.loadUnaligned(as: cipc_mutex.self)
        let word = state.owner
        let waiting = state.waiters > 0 ? ", \(state.waiters) waiting" : ""
        let inconsistent = state.inconsistent == 0 ? "" : ", inconsistent"
        let dead = word != 0 && !isAlive(word)
        return SharedObjectDescription(
            details: [
                "locked": word == 0 ? "no" : "yes",
                "ownerPID": word == 0 ? "-" : "\(OwnerLease.displayPID(of: word))",
                "ownerAlive": word == 0 ? "-" : (dead ? "no" : "yes"),
                "contended": word & contended == 0 ? "no" : "yes",
                "waiters": "\(state.waiters)",
                "consistent": state.inconsistent == 0 ? "yes" : "no",
                "recoveries": "\(state.recoveries)",
            ],
            summary: word == 0
                ? "unlocked" + waiting + inconsistent
                : "locked by \(OwnerLease.displayPID(of: word))\(dead ? " (dead)" : "")" + waiting + inconsistent)
    }
}

extension SegmentKind {
    /// A named ``ProcessMutex``.
    public static let mutex = SegmentKind(rawValue: CIPC_KIND_MUTEX)
}
