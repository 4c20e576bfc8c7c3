public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A reader-writer lock shared between processes: many readers or one writer, and writers are not
/// starved.
///
/// ```swift
/// let lock = try ProcessRWLock.create(name: "catalog.lock")     // or .open(name:) in a peer
/// let price = try lock.withReadLock { catalog.price(of: item) }
/// try lock.withWriteLock { catalog.update(item, price: 12) }
/// ```
///
/// **Writer preference.** A writer first *claims* the lock by writing its identity into the owner
/// word — from then on new readers wait — and then waits until the readers already inside have
/// left. So a stream of readers that keep overlapping cannot keep a writer out: it gets in as soon
/// as the readers that were inside when it arrived are done. (The other side of the trade: a
/// continuous stream of writers keeps readers out.)
///
/// **A writer's death** is recovered like ``ProcessMutex``'s: the owner word holds the writer's pid
/// and (the low 32 bits of) its process start time, set by one compare-and-swap. Waiters — readers
/// and writers — check the writer's liveness every 25 ms; a writer takes a dead writer's lock over,
/// a reader clears it. When the dead writer was *inside* (past waiting for readers), the lock
/// becomes *inconsistent*: acquisitions report ``ProcessMutex/Acquisition/previousOwnerDied`` until
/// a writer repairs the data and calls ``markConsistent()``. ``withWriteLock(_:)`` and
/// ``withReadLock(_:)`` throw `ownerDied` in that state (after releasing the lock);
/// ``withWriteLock(onOwnerDied:_:)`` runs your repair first. A writer that died while still waiting
/// for readers never touched the data: clearing its claim leaves the lock consistent.
///
/// What a process killed at each step leaves behind:
/// - a **writer** killed after claiming the owner word (waiting for readers, or inside): the word
///   names a dead process; the next waiter clears it or takes it over within ~25 ms (bounded by
///   50 ms); inside, the lock becomes inconsistent (above). Killed between taking over and marking
///   it inconsistent, the word names the dead taker, and the dead writer's `write_held` mark is
///   still there: the next waiter does both again.
/// - a **reader** killed while *holding* a read lock: **not recovered.** Readers are counted, not
///   recorded (the 64-byte state has no room for one slot per reader), so the count stays one too
///   high: readers still get in until a writer arrives, but from then on that writer waits for a
///   reader that will never leave — and, because of writer preference, so does every later reader.
///   Writers that use ``writeLock(timeout:)`` time out and give their claim back (readers then go
///   on); a writer waiting without a timeout waits forever. `ipc inspect` shows the count. Kill
///   readers only while they hold no lock, or use a ``ProcessMutex`` (which does recover) where
///   readers may crash. A reader killed *while taking* a read lock (between its increment and its
///   check) leaves the same one-too-high count.
/// - any process killed while **parked** leaves a waiter count one too high, which only costs
///   unlockers a spare wake-up call.
///
/// **Ownership is per process**, as for ``ProcessMutex``: threads of one process share one identity.
/// A thread that holds a read lock and asks for the write lock deadlocks (no upgrades). Read locks
/// are not recorded at all: ``readUnlock()`` from a process that holds none releases someone
/// else's, and is refused (`notOwner`) only when no reader holds the lock.
///
/// Speed: an uncontended read lock is one fetch-add and one load, its unlock one fetch-subtract; an
/// uncontended write lock one compare-and-swap, one load and one store. No system call unless
/// someone is parked. Waits spin briefly (never on one CPU), then park on a futex.
public final class ProcessRWLock: @unchecked Sendable {
    // `@unchecked Sendable`: the state is 64 bytes of shared memory kept mapped by `storage`, and
    // touched only through atomics.

    /// Bytes of shared state (place it at an 8-byte aligned offset; 64-byte alignment avoids sharing
    /// a cache line with other data).
    public static let stateSize = 64

    let storage: PrimitiveStorage
    /// The writer's identity; its low half (offset 0) is the futex word everybody waiting for the
    /// writer parks on.
    private let owner: UnsafeMutablePointer<Atomic<UInt64>>
    private let ownerWord: UnsafeMutableRawPointer
    /// Read holders: the futex word a claiming writer parks on until it drops to 0.
    private let readers: UnsafeMutablePointer<Atomic<UInt32>>
    private let readersWord: UnsafeMutableRawPointer
    private let waiters: UnsafeMutableRawPointer
    private let drainWaiters: UnsafeMutableRawPointer
    private let recoveries: UnsafeMutablePointer<Atomic<UInt64>>
    private let writeHeld: UnsafeMutablePointer<Atomic<UInt32>>
    private let inconsistent: UnsafeMutablePointer<Atomic<UInt32>>
    /// This process's owner word: pid | start-time epoch << 32.
    private let me: UInt64

    private init(storage: PrimitiveStorage) {
        self.storage = storage
        let base = storage.base
        owner = atomic64(base)
        ownerWord = base
        readers = atomic32(base + 8)
        readersWord = base + 8
        waiters = base + 12
        drainWaiters = base + 16
        recoveries = atomic64(base + 24)
        writeHeld = atomic32(base + 32)
        inconsistent = atomic32(base + 36)
        me = ProcessMutex.ownerWord(ProcessIdentity.current)
    }

    private static func initialize(_ base: UnsafeMutableRawPointer) {
        atomic64(base).initialize(to: Atomic(0))
    }

    /// Creates a named reader-writer lock (a segment of kind `rwlock`), unlocked.
    public static func create(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessRWLock {
        ProcessRWLock(storage: try PrimitiveStorage.create(
            name: name, kind: .rwLock, tag: CIPC_TAG_RWLOCK, permissions: permissions, lifetime: lifetime,
            initialize: initialize))
    }

    /// Opens a named reader-writer lock.
    public static func open(name: String) throws(InterprocessError) -> ProcessRWLock {
        ProcessRWLock(storage: try PrimitiveStorage.open(name: name, kind: .rwLock, tag: CIPC_TAG_RWLOCK))
    }

    /// Initializes a new, unlocked reader-writer lock at `offset` in `segment` (``stateSize`` bytes).
    public static func create(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessRWLock {
        ProcessRWLock(storage: try PrimitiveStorage.place(
            in: segment, at: offset, tag: CIPC_TAG_RWLOCK, what: "reader-writer lock", initialize: initialize))
    }

    /// Uses the reader-writer lock that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessRWLock {
        ProcessRWLock(storage: try PrimitiveStorage.place(
            in: segment, at: offset, tag: CIPC_TAG_RWLOCK, what: "reader-writer lock", initialize: nil))
    }

    /// The name of a named reader-writer lock.
    public var name: String? { storage.name }

    /// Unregisters a named reader-writer lock (the last holder of a `.whileReferenced` one removes
    /// the name).
    public func close() { storage.close() }

    // MARK: Reading

    /// Takes a read lock, waiting as long as a writer holds or claims the lock. A dead writer's
    /// claim is cleared within ~25 ms. Returns ``ProcessMutex/Acquisition/previousOwnerDied`` while
    /// the lock is inconsistent (a writer died inside and nobody repaired the data since).
    @available(*, noasync, message: "use the async readLock() in async code")
    @discardableResult
    @inline(__always)
    public func readLock() throws(InterprocessError) -> ProcessMutex.Acquisition {
        if owner.pointee.load(ordering: .relaxed) == 0 && enterRead() { return acquisition }
        return try blockingWait(
            word: ownerWord, waiters: waiters, deadline: .max, recheckEvery: ProcessMutex.livenessInterval, name: name, readAttempt)
    }

    /// Takes a read lock, or throws `timedOut` after `timeout`.
    @available(*, noasync, message: "use the async readLock(timeout:) in async code")
    @discardableResult
    public func readLock(timeout: Duration) throws(InterprocessError) -> ProcessMutex.Acquisition {
        if let acquisition = tryReadLock() { return acquisition }
        return try blockingWait(
            word: ownerWord, waiters: waiters, deadline: Clock.deadline(after: timeout),
            recheckEvery: ProcessMutex.livenessInterval, name: name, readAttempt)
    }

    /// Takes a read lock without blocking a thread; throws `cancelled` (having acquired nothing) if
    /// the task is cancelled.
    @discardableResult
    public func readLock() async throws(InterprocessError) -> ProcessMutex.Acquisition {
        try await readLock(deadline: .max)
    }

    /// Takes a read lock without blocking a thread; throws `cancelled` (having acquired nothing) if
    /// the task is cancelled, `timedOut` after `timeout`.
    @discardableResult
    public func readLock(timeout: Duration) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        try await readLock(deadline: Clock.deadline(after: timeout))
    }

    private func readLock(deadline: UInt64) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        if let acquisition = tryReadLock() { return acquisition }
        return try await asyncWait(
            word: ownerWord, waiters: waiters, deadline: deadline,
            recheckEvery: ProcessMutex.livenessInterval, name: name, readAttempt)
    }

    /// Takes a read lock if no writer holds or claims it, or if the writer is gone (dead pid); nil
    /// otherwise. Never blocks. (A blocking or timed lock also catches a writer whose pid was reused.)
    public func tryReadLock() -> ProcessMutex.Acquisition? {
        for _ in 0..<2 {
            let current = owner.pointee.load(ordering: .relaxed)
            if current == 0 {
                if enterRead() { return acquisition }
                continue
            }
            let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: current))
            guard pid <= 0 || !ProcessIdentity.pidExists(pid) else { return nil }
            clearDeadWriter(current)
        }
        return nil
    }

    /// Releases a read lock. Throws `notOwner` (and releases nothing) if no reader holds the lock.
    public func readUnlock() throws(InterprocessError) {
        var current = readers.pointee.load(ordering: .relaxed)
        while true {
            guard current != 0 else {
                throw InterprocessError(.notOwner, objectName: name, detail: "no reader holds the lock")
            }
            let (exchanged, original) = readers.pointee.compareExchange(
                expected: current, desired: current - 1, ordering: .sequentiallyConsistent)
            if exchanged { break }
            current = original
        }
        if current == 1 { wakeDrainingWriter() }
    }

    /// Runs `body` holding a read lock. If a writer died inside and the data was not repaired since,
    /// releases the lock and throws `ownerDied` without running `body`.
    @available(*, noasync, message: "use readLock() async / readUnlock() in async code")
    public func withReadLock<R>(_ body: () throws -> R) throws -> R {
        if try readLock() == .previousOwnerDied {
            try readUnlock()
            throw InterprocessError(.ownerDied, objectName: name, detail: "a writer died holding the lock; the data may be inconsistent")
        }
        defer { try? readUnlock() }
        return try body()
    }

    // MARK: Writing

    /// Takes the write lock, waiting as long as it takes: first for another writer (a dead one's
    /// lock is taken over within ~25 ms), then for the readers inside to leave (new readers wait
    /// meanwhile).
    @available(*, noasync, message: "use the async writeLock() in async code")
    @discardableResult
    @inline(__always)
    public func writeLock() throws(InterprocessError) -> ProcessMutex.Acquisition {
        if !owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
            try blockingWait(
                word: ownerWord, waiters: waiters, deadline: .max, recheckEvery: ProcessMutex.livenessInterval, name: name, claimAttempt)
        }
        if readers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            try blockingWait(word: readersWord, waiters: drainWaiters, deadline: .max, name: name, drainAttempt)
        }
        return enterWrite()
    }

    /// Takes the write lock, or throws `timedOut` after `timeout` — having given its claim back, so
    /// that waiting readers go on.
    @available(*, noasync, message: "use the async writeLock(timeout:) in async code")
    @discardableResult
    public func writeLock(timeout: Duration) throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = Clock.deadline(after: timeout)
        if !owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
            try blockingWait(
                word: ownerWord, waiters: waiters, deadline: deadline, recheckEvery: ProcessMutex.livenessInterval,
                name: name, claimAttempt)
        }
        if readers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            do {
                try blockingWait(word: readersWord, waiters: drainWaiters, deadline: deadline, name: name, drainAttempt)
            } catch {
                giveClaimBack()
                throw error
            }
        }
        return enterWrite()
    }

    /// Takes the write lock without blocking a thread. Throws `cancelled` having
    /// acquired nothing (a claim already made is given back).
    @discardableResult
    public func writeLock() async throws(InterprocessError) -> ProcessMutex.Acquisition {
        try await writeLock(deadline: .max)
    }

    /// Takes the write lock without blocking a thread. Throws `cancelled` or `timedOut` having
    /// acquired nothing (a claim already made is given back).
    @discardableResult
    public func writeLock(timeout: Duration) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        try await writeLock(deadline: Clock.deadline(after: timeout))
    }

    private func writeLock(deadline: UInt64) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = deadline
        if !owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
            try await asyncWait(
                word: ownerWord, waiters: waiters, deadline: deadline, recheckEvery: ProcessMutex.livenessInterval,
                name: name, claimAttempt)
        }
        if readers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            do {
                try await asyncWait(word: readersWord, waiters: drainWaiters, deadline: deadline, name: name, drainAttempt)
            } catch {
                giveClaimBack()
                throw error
            }
        }
        return enterWrite()
    }

    /// Takes the write lock if nobody holds or claims it (or the writer is gone: dead pid) and no
    /// reader is inside; nil otherwise. Never blocks.
    public func tryWriteLock() -> ProcessMutex.Acquisition? {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            guard owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else { return nil }
        } else {
            let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: current))
            guard pid <= 0 || !ProcessIdentity.pidExists(pid), takeOver(from: current) else { return nil }
        }
        if readers.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            giveClaimBack()
            return nil
        }
        return enterWrite()
    }

    /// Releases the write lock. Throws `notOwner` (and releases nothing) if this process does not
    /// hold it.
    public func writeUnlock() throws(InterprocessError) {
        guard owner.pointee.load(ordering: .relaxed) == me, writeHeld.pointee.load(ordering: .relaxed) != 0 else {
            throw InterprocessError(.notOwner, objectName: name, detail: "this process does not hold the write lock")
        }
        giveClaimBack()
    }

    /// Declares the protected data repaired after a ``ProcessMutex/Acquisition/previousOwnerDied``
    /// acquisition. Call it while holding the write lock.
    public func markConsistent() {
        inconsistent.pointee.store(0, ordering: .releasing)
    }

    /// Whether no writer died inside since the last ``markConsistent()``.
    public var isConsistent: Bool { inconsistent.pointee.load(ordering: .acquiring) == 0 }

    /// Whether a writer holds or claims the lock now (a snapshot).
    public var isWriteLocked: Bool { owner.pointee.load(ordering: .relaxed) != 0 }

    /// How many read locks are held now (a snapshot; includes readers killed while holding one).
    public var readerCount: Int { Int(readers.pointee.load(ordering: .relaxed)) }

    /// Runs `body` holding the write lock. If a writer died inside and the data was not marked
    /// consistent, releases the lock and throws `ownerDied` without running `body`: use
    /// ``withWriteLock(onOwnerDied:_:)`` to repair.
    @available(*, noasync, message: "use writeLock() async / writeUnlock() in async code")
    public func withWriteLock<R>(_ body: () throws -> R) throws -> R {
        if try writeLock() == .previousOwnerDied {
            try writeUnlock()
            throw InterprocessError(.ownerDied, objectName: name, detail: "a writer died holding the lock; the data may be inconsistent")
        }
        defer { try? writeUnlock() }
        return try body()
    }

    /// Runs `body` holding the write lock; if a writer died inside, first runs `recover` (holding the
    /// lock) and, if it returns, marks the lock consistent.
    @available(*, noasync, message: "use writeLock() async / writeUnlock() in async code")
    public func withWriteLock<R>(onOwnerDied recover: () throws -> Void, _ body: () throws -> R) throws -> R {
        let acquisition = try writeLock()
        defer { try? writeUnlock() }
        if acquisition == .previousOwnerDied {
            try recover()
            markConsistent()
        }
        return try body()
    }

    // MARK: Internals

    private var acquisition: ProcessMutex.Acquisition {
        inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
    }

    /// Counts this reader in, then checks for a writer (both sequentially consistent, against the
    /// writer's claim-then-count): either the reader sees the writer, or the writer sees the reader.
    @inline(__always)
    private func enterRead() -> Bool {
        readers.pointee.add(1, ordering: .sequentiallyConsistent)
        if owner.pointee.load(ordering: .sequentiallyConsistent) == 0 { return true }
        // A writer claimed the lock meanwhile: back off (and wake it if we were the last reader).
        if readers.pointee.subtract(1, ordering: .sequentiallyConsistent).newValue == 0 { wakeDrainingWriter() }
        return false
    }

    @inline(__always)
    private func wakeDrainingWriter() {
        if atomic32(drainWaiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wakeAll(readersWord)
        }
    }

    private func readAttempt(_ checkOwner: Bool) -> WaitStep<ProcessMutex.Acquisition> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return enterRead() ? .done(acquisition) : .retry
        }
        if checkOwner && !ProcessMutex.isAlive(ownerWord: current) {
            clearDeadWriter(current)
            return .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    private func claimAttempt(_ checkOwner: Bool) -> WaitStep<Void> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged ? .done(()) : .retry
        }
        if checkOwner && !ProcessMutex.isAlive(ownerWord: current) {
            return takeOver(from: current) ? .done(()) : .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    private func drainAttempt(_: Bool) -> WaitStep<Void> {
        let count = readers.pointee.load(ordering: .sequentiallyConsistent)
        return count == 0 ? .done(()) : .park(expected: count)
    }

    /// Claimed and drained: mark ourselves inside before the caller touches the data.
    @inline(__always)
    private func enterWrite() -> ProcessMutex.Acquisition {
        writeHeld.pointee.store(1, ordering: .relaxed)
        // Keep the caller's writes to the protected data after the mark (a writer killed inside
        // must be seen as inside).
        atomicMemoryFence(ordering: .acquiringAndReleasing)
        return acquisition
    }

    /// Releases our claim (unlock, or a claim abandoned on timeout or cancellation) and wakes waiters.
    private func giveClaimBack() {
        writeHeld.pointee.store(0, ordering: .releasing)
        owner.pointee.store(0, ordering: .sequentiallyConsistent)
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wakeAll(ownerWord)
        }
    }

    /// Takes the claim of the dead writer recorded as `dead`; false if it changed meanwhile. If the
    /// dead writer was inside, the lock becomes inconsistent.
    private func takeOver(from dead: UInt64) -> Bool {
        guard owner.pointee.compareExchange(expected: dead, desired: me, ordering: .sequentiallyConsistent).exchanged else { return false }
        if writeHeld.pointee.load(ordering: .relaxed) != 0 {
            inconsistent.pointee.store(1, ordering: .relaxed)
        }
        recoveries.pointee.add(1, ordering: .relaxed)
        return true
    }

    /// A reader clears a dead writer's claim: takes it over (so that the repair has one owner), then
    /// gives it back.
    private func clearDeadWriter(_ dead: UInt64) {
        guard takeOver(from: dead) else { return }
        giveClaimBack()
    }

    /// The writer, readers, waiters, consistency and recoveries, read from a copy of the state.
    static func describe(_ state: UnsafeRawBufferPointer) -> [String: String] {
        guard state.count >= 40 else { return [:] }
        let word = state.load(as: UInt64.self)
        let pid = Int32(bitPattern: UInt32(truncatingIfNeeded: word))
        let inside = state.load(fromByteOffset: 32, as: UInt32.self) != 0
        return [
            "writer": word == 0 ? "-" : "\(pid)",
            "writerAlive": word == 0 ? "-" : (ProcessMutex.isAlive(ownerWord: word) ? "yes" : "no"),
            "writeLocked": word == 0 ? "no" : (inside ? "yes" : "claimed"),
            "readers": "\(state.load(fromByteOffset: 8, as: UInt32.self))",
            "waiters": "\(state.load(fromByteOffset: 12, as: UInt32.self))",
            "drainingWriters": "\(state.load(fromByteOffset: 16, as: UInt32.self))",
            "consistent": state.load(fromByteOffset: 36, as: UInt32.self) == 0 ? "yes" : "no",
            "recoveries": "\(state.load(fromByteOffset: 24, as: UInt64.self))",
        ]
    }
}
