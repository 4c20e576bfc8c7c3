public import SystemPackage
import CInterprocess
import InterprocessSystem
package import Synchronization

/// A reader-writer lock shared between processes: many readers or one writer, and writers are not
/// starved.
///
/// ```swift
/// let lock = try ProcessRWLock.create(name: "catalog.lock")     // or .open(name:) in a peer
/// let price = try await lock.withReadLock { catalog.price(of: item) }   // no thread blocks
/// try await lock.withWriteLock { catalog.update(item, price: 12) }
/// try lock.withBlockingWriteLock { catalog.update(item, price: 13) }    // blocks (not in async code)
/// ```
///
/// Every acquisition comes `async` (``readLock(timeout:)``, ``writeLock(timeout:)``, the scoped
/// ``withReadLock(isolation:timeout:_:)`` and ``withWriteLock(isolation:timeout:_:)``), blocking
/// (the same names with `blocking`: ``blockingReadLock(timeout:)``, ``withBlockingWriteLock(timeout:_:)``…)
/// and `try…` (never waits).
///
/// **Writer preference.** A writer first *claims* the lock by writing its identity into the owner
/// word — from then on new readers wait — and then waits until the readers already inside have
/// left. So a stream of readers that keep overlapping cannot keep a writer out: it gets in as soon
/// as the readers that were inside when it arrived are done. (The other side of the trade: a
/// continuous stream of writers keeps readers out.)
///
/// **A writer's death** is recovered like ``ProcessMutex``'s: the owner word holds the writer's
/// *token* (its identity in the segment's file, vouched for by a kernel lock that dies with it — no
/// pids, no /proc: right across PID namespaces, users and `hidepid`), set by one compare-and-swap.
/// Waiters — readers and writers — check the writer's liveness when they are about to park, then
/// every 25 ms (``tryReadLock()`` and ``tryWriteLock()`` once); a writer takes a dead writer's lock over,
/// a reader clears it. When the dead writer was *inside* (past waiting for readers), the lock
/// becomes *inconsistent*: acquisitions report ``ProcessMutex/Acquisition/previousOwnerDied`` until
/// a writer repairs the data and calls ``markConsistent()``. ``withWriteLock(isolation:timeout:_:)``
/// and ``withReadLock(isolation:timeout:_:)`` throw `ownerDied` in that state (after releasing the
/// lock); ``withWriteLock(isolation:timeout:onOwnerDied:_:)`` runs your repair first (and so do
/// their blocking forms). A writer that died while still waiting
/// for readers never touched the data: clearing its claim leaves the lock consistent.
///
/// **A reader's death** is recovered too. Read locks are counted per process, in one of 32 reader
/// slots (the process's token and how many read locks it holds): a process's first read lock
/// claims a free slot, and the process keeps it (at 0 holds too) for as long as it lives. A writer
/// waiting for readers checks every 25 ms whether a slot with holds names a dead process, and frees
/// it: a reader killed holding read locks delays a writer by about 25 ms (bounded by 50 ms), and,
/// through writer preference, the readers behind that writer. A dead process's slot — holding locks
/// or not — is also reused by the next process that needs a slot. A process that finds all 32 slots
/// taken by live processes does not wait: it counts its read locks in a shared *overflow* count,
/// which is *not* recovered (see below); it looks for a dead process's slot again at most every
/// 25 ms.
///
/// What a process killed at each step leaves behind:
/// - a **writer** killed after claiming the owner word (waiting for readers, or inside): the word
///   names a dead process; the next waiter clears it or takes it over within ~25 ms (bounded by
///   50 ms); inside, the lock becomes inconsistent (above). Killed between taking over and marking
///   it inconsistent, the word names the dead taker, and the dead writer's `write_held` mark is
///   still there: the next waiter does both again.
/// - a **reader** killed while holding read locks, or while taking or releasing one (its slot's
///   holds then count the lock or not): its slot names a dead process; a waiting writer frees it
///   within ~25 ms (bounded by 50 ms), so its holds stop counting. Killed while claiming a slot:
///   the slot is free or names the dead process with no holds — harmless, reused later.
/// - a process killed while **freeing a dead process's slot**: the slot names the dead cleaner
///   (marked as cleaning) and is freed again by the next writer or claimer, like any dead slot.
/// - a reader in **overflow** (all 32 slots were taken by live processes when it took the lock)
///   killed holding a read lock: **not recovered** — the overflow count stays one too high, and
///   writers wait for a reader that will never leave (``writeLock(timeout:)`` times out and gives
///   its claim back; readers then go on). `ipc inspect` shows `overflowReaders`. Keep the number of
///   processes that read the lock at 32 or fewer (or let them exit: a dead process's slot is
///   reused) where readers may crash.
/// - any process killed while **parked** (or spinning) leaves nothing that lasts. Waiters for the
///   writer set bit 31 of the owner word (*contended*) before they park, and the writer's unlock
///   wakes them only if it is set: a killed waiter's bit costs that one unlock a spare wake-up call.
///   Only the writer holding the claim waits for readers to leave; whoever takes over a dead
///   writer's claim resets `drain_waiters`, which a writer killed while waiting there left one too
///   high (until then, readers leaving during a claim make a spare wake-up call each). The
///   `waiters` count that `ipc inspect` shows stays one too high; it only informs.
///
/// **Ownership is per process**, as for ``ProcessMutex``: threads and instances of one process share
/// one token per segment file and one reader slot; the token lives as long as some instance of the
/// process on that file does (keep one while you hold a lock). A thread that holds a read lock and
/// asks for the write lock deadlocks (no upgrades). ``readUnlock()`` releases one of this process's
/// read locks, and is refused (`notOwner`) when this process holds none (unless overflow readers
/// hold some: the overflow count is not per process).
///
/// Speed: an uncontended read lock is three loads (the owner word, the slot index this instance
/// cached, that slot's identity), one fetch-add on this process's slot and one load; its unlock
/// three loads, one compare-and-swap and one load. An uncontended write lock is one
/// compare-and-swap, 33 loads (the overflow count and the reader slots, on 9 cache lines) and one
/// store; its unlock one store and one exchange. No system call unless someone parked — except that
/// a writer waiting for readers checks the liveness of the processes whose slots hold read locks
/// every 25 ms (one `fcntl` each). A process's first read lock claims its slot (a short scan under a
/// process-wide mutex). Waits spin briefly (never on one CPU), then park on a futex.
public final class ProcessRWLock: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, touched only
    // through atomics; the instance's own state is atomic too.

    /// Bytes of shared state (place it at an 8-byte aligned offset; 64-byte alignment avoids sharing
    /// a cache line with other data): a `cipc_rwlock`, a 64-byte header and 32 reader slots of 16 bytes.
    public static let stateSize = MemoryLayout<cipc_rwlock>.size

    /// The number of reader slots (`validate` checks the state's `reader_capacity` against it).
    @inline(__always) static var readerCapacity: Int { Int(CIPC_RWLOCK_READERS) }
    /// Bit 31 of a token word (never part of a token, see `OwnerLease`): in a reader slot, marks it
    /// being freed (the cleaner's token with the bit set); in the owner word, says *contended* (a
    /// waiter parked on it, or is about to: the writer's unlock wakes them).
    @inline(__always) static var cleaning: UInt64 { 0x8000_0000 }
    @inline(__always) static var contended: UInt64 { 0x8000_0000 }

    let storage: SharedObjectStorage
    /// The writer's identity; its low half is the futex word everybody waiting for the writer parks on.
    private let owner: UnsafeMutablePointer<Atomic<UInt64>>
    private let ownerWord: UnsafeMutableRawPointer
    /// Bumped by readers leaving while a writer claims: the futex word a claiming writer parks on.
    private let drain: UnsafeMutablePointer<Atomic<UInt32>>
    private let drainWord: UnsafeMutableRawPointer
    private let waiters: UnsafeMutableRawPointer
    private let drainWaiters: UnsafeMutableRawPointer
    private let recoveries: UnsafeMutablePointer<Atomic<UInt64>>
    private let writeHeld: UnsafeMutablePointer<Atomic<UInt32>>
    private let inconsistent: UnsafeMutablePointer<Atomic<UInt32>>
    /// Read holds of processes that found no free slot.
    private let overflow: UnsafeMutablePointer<Atomic<UInt32>>
    private let readerRecoveries: UnsafeMutablePointer<Atomic<UInt64>>
    /// This process's identity in the file, and the descriptor that checks others'.
    private let lease: OwnerLease
    /// This process's token: the owner word while it claims the lock (without the contended bit),
    /// and its reader slot's identity.
    private let me: UInt64
    /// The index of this process's reader slot, as last found (-1: none yet); re-validated on use.
    private let cachedSlot = Atomic<Int>(-1)
    /// How many wake-up system calls this instance made giving a write claim back (tests check that
    /// an uncontended unlock makes none).
    package let unlockWakes = Atomic<Int>(0)
    /// When a process without a slot may next look for a dead process's slot (monotonic ns).
    private let nextReclaimScan = Atomic<UInt64>(0)

    /// Serializes this process's slot claims (rare), so that a process never claims two slots.
    private static let claiming = Mutex<Void>(())

    /// The first reader slot's `owner` and `holds`: slot i's are `cipc_rwlock_reader`'s stride × i
    /// further (the hot paths' only arithmetic).
    private let readerOwners: UnsafeMutableRawPointer
    private let readerHolds: UnsafeMutableRawPointer

    init(storage: SharedObjectStorage) {
        guard let lease = storage.lease else { preconditionFailure("a reader-writer lock's storage carries a lease") }
        let base = storage.base
        self.storage = storage
        owner = atomic64(base + fieldOffset(\cipc_rwlock.owner))
        ownerWord = base + fieldOffset(\cipc_rwlock.owner) // the owner word's low half (little-endian)
        drain = atomic32(base + fieldOffset(\cipc_rwlock.drain))
        drainWord = base + fieldOffset(\cipc_rwlock.drain)
        waiters = base + fieldOffset(\cipc_rwlock.waiters)
        drainWaiters = base + fieldOffset(\cipc_rwlock.drain_waiters)
        recoveries = atomic64(base + fieldOffset(\cipc_rwlock.recoveries))
        writeHeld = atomic32(base + fieldOffset(\cipc_rwlock.write_held))
        inconsistent = atomic32(base + fieldOffset(\cipc_rwlock.inconsistent))
        overflow = atomic32(base + fieldOffset(\cipc_rwlock.overflow))
        readerRecoveries = atomic64(base + fieldOffset(\cipc_rwlock.reader_recoveries))
        readerOwners = base + fieldOffset(\cipc_rwlock.readers) + fieldOffset(\cipc_rwlock_reader.owner)
        readerHolds = base + fieldOffset(\cipc_rwlock.readers) + fieldOffset(\cipc_rwlock_reader.holds)
        self.lease = lease
        me = lease.token
    }

    /// Creates a named reader-writer lock (a segment of kind `rwlock`), unlocked.
    public static func create(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.create(ProcessRWLock.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named reader-writer lock. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.open(ProcessRWLock.self, name: name, expecting: nil, trusting: trust)
    }

    /// Opens the named reader-writer lock, or creates it (unlocked); `created` says which. Of racing
    /// processes exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (lock: ProcessRWLock, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            ProcessRWLock.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named reader-writer lock `name` (`incompatible` if it is not one);
    /// processes that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ProcessRWLock.self, name: name)
    }

    /// Initializes a new, unlocked reader-writer lock at `offset` in `segment` (``stateSize`` bytes).
    public static func create(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.place(ProcessRWLock.self, in: segment, at: offset, parameters: ())
    }

    /// Uses the reader-writer lock that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.attach(ProcessRWLock.self, in: segment, at: offset, expecting: nil)
    }

    /// Places an unlocked reader-writer lock in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in
    /// the segment's table of placed objects (`outOfMemory` if no room is free). Peers find it with
    /// ``open(in:named:)``.
    public static func create(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.place(ProcessRWLock.self, in: segment, at: nil, named: name, parameters: ())
    }

    /// Uses the reader-writer lock placed in `segment` under `name` (`notFound` if nothing is, `incompatible`
    /// if it is of another kind).
    public static func open(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessRWLock {
        try SharedObjectStorage.attach(ProcessRWLock.self, in: segment, named: name, expecting: nil)
    }

    /// The name of a named reader-writer lock.
    public var name: String? { storage.name }

    /// Unregisters a named reader-writer lock (the last holder of a `.whileReferenced` one removes
    /// the name).
    public func close() { storage.close() }

    // MARK: Reading

    /// Where everybody waiting for the writer parks: the owner word's low half. Waiters check the
    /// writer's liveness when they are about to park, then every 25 ms.
    private var ownerSite: WaitSite { WaitSite(word: ownerWord, waiters: waiters, name: name, recheckEvery: ProcessMutex.livenessInterval) }

    /// Where a claiming writer waits for the readers inside to leave: the drain word. It checks the
    /// liveness of the processes that hold read locks when it is about to park, then every 25 ms.
    private var drainSite: WaitSite { WaitSite(word: drainWord, waiters: drainWaiters, name: name, recheckEvery: ProcessMutex.livenessInterval) }

    /// Takes a read lock, suspending the task (no thread blocks) while a writer holds or claims the
    /// lock, for at most `timeout` — nil: as long as it takes. A dead writer's claim is cleared.
    /// - Returns: ``ProcessMutex/Acquisition/previousOwnerDied`` while the lock is inconsistent (a
    ///   writer died inside and nobody repaired the data since).
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having acquired nothing.
    @discardableResult
    public func readLock(timeout: Duration? = nil) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        try await ownerSite.asyncWait(until: Deadline(after: timeout), whileSpinning: readSpinAttempt, readAttempt)
    }

    /// Takes a read lock, blocking the calling thread while a writer holds or claims the lock, for at
    /// most `timeout` — nil: as long as it takes. The blocking form of ``readLock(timeout:)``.
    @available(*, noasync, message: "use the async readLock(timeout:) in async code")
    @discardableResult
    @inline(__always)
    public func blockingReadLock(timeout: Duration? = nil) throws(InterprocessError) -> ProcessMutex.Acquisition {
        if owner.pointee.load(ordering: .relaxed) == 0 && enterRead(readCounter()) { return acquisition }
        return try ownerSite.blockingWait(until: Deadline(after: timeout), whileSpinning: readSpinAttempt, readAttempt)
    }

    /// Takes a read lock if no writer holds or claims it, or if the writer died (one kernel query:
    /// its claim is cleared); nil otherwise. Never blocks.
    public func tryReadLock() -> ProcessMutex.Acquisition? {
        for _ in 0..<2 {
            let current = owner.pointee.load(ordering: .relaxed)
            if current == 0 {
                if enterRead(readCounter()) { return acquisition }
                continue
            }
            guard !lease.isAlive(current) else { return nil }
            clearDeadWriter(current)
        }
        return nil
    }

    /// Releases one of this process's read locks. Throws `notOwner` (and releases nothing) if this
    /// process holds none (and no process in overflow holds one).
    public func readUnlock() throws(InterprocessError) {
        if let index = ownSlot(), Self.decrementIfPositive(slotHolds(index)) {
            leftRead()
            return
        }
        if Self.decrementIfPositive(overflow) {
            leftRead()
            return
        }
        throw InterprocessError(.notOwner, objectName: name, detail: "this process holds no read lock")
    }

    /// Runs `body` holding a read lock, then releases it (also when `body` throws). The lock is taken
    /// as ``readLock(timeout:)`` takes it (no thread blocks); `body` runs in the caller's isolation.
    /// If a writer died inside and the data was not repaired since, releases the lock and throws
    /// `ownerDied` without running `body`.
    public func withReadLock<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil, _ body: () async throws -> R
    ) async throws -> R {
        try await runLocked(
            isolation: isolation, try await readLock(timeout: timeout), unlock: readUnlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: {}, body)
    }

    /// The blocking form of ``withReadLock(isolation:timeout:_:)``: takes the lock as
    /// ``blockingReadLock(timeout:)``.
    @available(*, noasync, message: "use the async withReadLock(timeout:_:) in async code")
    public func withBlockingReadLock<R>(timeout: Duration? = nil, _ body: () throws -> R) throws -> R {
        try runLocked(
            try blockingReadLock(timeout: timeout), unlock: readUnlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: {}, body)
    }

    // MARK: Writing

    /// Takes the write lock, suspending the task (no thread blocks), for at most `timeout` — nil: as
    /// long as it takes: first for another writer (a dead one's lock is taken over), then for the
    /// readers inside to leave (new readers wait meanwhile).
    /// - Returns: ``ProcessMutex/Acquisition/previousOwnerDied`` if a writer died inside and nobody
    ///   repaired the data since.
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having acquired nothing (a claim already made is given back, so
    ///   that waiting readers go on).
    @discardableResult
    public func writeLock(timeout: Duration? = nil) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = Deadline(after: timeout)
        try await ownerSite.asyncWait(until: deadline, whileSpinning: claimSpinAttempt, claimAttempt)
        if readersInside() != 0 {
            do { try await drainSite.asyncWait(until: deadline, drainAttempt) } catch {
                giveClaimBack()
                throw error
            }
        }
        return enterWrite()
    }

    /// Takes the write lock, blocking the calling thread, for at most `timeout` — nil: as long as it
    /// takes. The blocking form of ``writeLock(timeout:)``.
    @available(*, noasync, message: "use the async writeLock(timeout:) in async code")
    @discardableResult
    @inline(__always)
    public func blockingWriteLock(timeout: Duration? = nil) throws(InterprocessError) -> ProcessMutex.Acquisition {
        let claimed = owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged
        if claimed && readersInside() == 0 { return enterWrite() }
        return try blockingWriteLockSlowly(timeout, claimed: claimed)
    }

    /// The write lock's waits: for the claim (unless `claimed` already), then for the readers inside
    /// to leave.
    @available(*, noasync)
    @inline(never)
    private func blockingWriteLockSlowly(_ timeout: Duration?, claimed: Bool) throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = Deadline(after: timeout)
        if !claimed {
            try ownerSite.blockingWait(until: deadline, whileSpinning: claimSpinAttempt, claimAttempt)
        }
        if readersInside() != 0 {
            do { try drainSite.blockingWait(until: deadline, drainAttempt) } catch {
                giveClaimBack()
                throw error
            }
        }
        return enterWrite()
    }

    /// Takes the write lock if nobody holds or claims it (or the writer died) and no reader is inside
    /// (the slots of dead readers are freed first); nil otherwise. Never blocks; liveness costs one
    /// kernel query per recorded process it checks.
    public func tryWriteLock() -> ProcessMutex.Acquisition? {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            guard owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else { return nil }
        } else {
            guard !lease.isAlive(current), takeOver(from: current) else { return nil }
        }
        if readersInside() != 0 && !(freeDeadReaders() && readersInside() == 0) {
            giveClaimBack()
            return nil
        }
        return enterWrite()
    }

    /// Releases the write lock. Throws `notOwner` (and releases nothing) if this process does not
    /// hold it.
    public func writeUnlock() throws(InterprocessError) {
        guard owner.pointee.load(ordering: .relaxed) & ~Self.contended == me, writeHeld.pointee.load(ordering: .relaxed) != 0 else {
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

    /// How many read locks are held now (a snapshot; includes readers killed while holding one whose
    /// slots no writer has freed yet).
    public var readerCount: Int { Int(readersInside()) }

    /// Runs `body` holding the write lock, then releases it (also when `body` throws). The lock is
    /// taken as ``writeLock(timeout:)`` takes it (no thread blocks); `body` runs in the caller's
    /// isolation. If a writer died inside and the data was not marked consistent, releases the lock
    /// and throws `ownerDied` without running `body`: use
    /// ``withWriteLock(isolation:timeout:onOwnerDied:_:)`` to repair.
    public func withWriteLock<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil, _ body: () async throws -> R
    ) async throws -> R {
        try await runLocked(
            isolation: isolation, try await writeLock(timeout: timeout), unlock: writeUnlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: markConsistent, body)
    }

    /// Runs `body` holding the write lock, as ``withWriteLock(isolation:timeout:_:)``; if a writer
    /// died inside, first runs `recover` (holding the lock) and, if it returns, marks the lock
    /// consistent.
    public func withWriteLock<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil,
        onOwnerDied recover: () async throws -> Void, _ body: () async throws -> R
    ) async throws -> R {
        try await runLocked(
            isolation: isolation, try await writeLock(timeout: timeout), unlock: writeUnlock,
            onOwnerDied: recover, markConsistent: markConsistent, body)
    }

    /// The blocking form of ``withWriteLock(isolation:timeout:_:)``: takes the lock as
    /// ``blockingWriteLock(timeout:)``.
    @available(*, noasync, message: "use the async withWriteLock(timeout:_:) in async code")
    public func withBlockingWriteLock<R>(timeout: Duration? = nil, _ body: () throws -> R) throws -> R {
        try runLocked(
            try blockingWriteLock(timeout: timeout), unlock: writeUnlock,
            onOwnerDied: refuseInconsistentData(name), markConsistent: markConsistent, body)
    }

    /// The blocking form of ``withWriteLock(isolation:timeout:onOwnerDied:_:)``.
    @available(*, noasync, message: "use the async withWriteLock(timeout:onOwnerDied:_:) in async code")
    public func withBlockingWriteLock<R>(
        timeout: Duration? = nil, onOwnerDied recover: () throws -> Void, _ body: () throws -> R
    ) throws -> R {
        try runLocked(
            try blockingWriteLock(timeout: timeout), unlock: writeUnlock, onOwnerDied: recover,
            markConsistent: markConsistent, body)
    }

    // MARK: Internals

    private var acquisition: ProcessMutex.Acquisition {
        inconsistent.pointee.load(ordering: .relaxed) == 0 ? .acquired : .previousOwnerDied
    }

    /// Counts this reader in (in `counter`: its slot's holds or the overflow count), then checks for
    /// a writer (both sequentially consistent, against the writer's claim-then-sum): either the reader
    /// sees the writer, or the writer sees the reader.
    @inline(__always)
    private func enterRead(_ counter: UnsafeMutablePointer<Atomic<UInt32>>) -> Bool {
        counter.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if owner.pointee.load(ordering: .sequentiallyConsistent) == 0 { return true }
        // A writer claimed the lock meanwhile: back off (and wake it).
        counter.pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        leftRead()
        return false
    }

    /// After a read hold was given back: if a writer claims the lock, bump the drain word and wake it.
    /// (The decrement comes before the owner load, the writer's claim before its sum: either the
    /// writer's sum sees the decrement, or we see the claim and bump the word it parks on.)
    @inline(__always)
    private func leftRead() {
        guard owner.pointee.load(ordering: .sequentiallyConsistent) != 0 else { return }
        nudgeWriter()
    }

    private func nudgeWriter() {
        drain.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if atomic32(drainWaiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wakeAll(drainWord)
        }
    }

    private static func decrementIfPositive(_ counter: UnsafeMutablePointer<Atomic<UInt32>>) -> Bool {
        var current = counter.pointee.load(ordering: .relaxed)
        while current != 0 {
            let (exchanged, original) = counter.pointee.compareExchange(
                expected: current, desired: current - 1, ordering: .sequentiallyConsistent)
            if exchanged { return true }
            current = original
        }
        return false
    }

    // MARK: Internals: reader slots

    // `assumingMemoryBound` directly: `atomic32`/`atomic64` live in another module and are not
    // inlined into these loops. The stride of an imported C struct is a compile-time constant.
    @inline(__always)
    private func slotOwner(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (readerOwners + index &* MemoryLayout<cipc_rwlock_reader>.stride).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always)
    private func slotHolds(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        (readerHolds + index &* MemoryLayout<cipc_rwlock_reader>.stride).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    /// Where this process counts a new read lock: its slot's holds (claiming a slot first if it has
    /// none), or the overflow count if every slot is taken by a live process.
    @inline(__always)
    private func readCounter() -> UnsafeMutablePointer<Atomic<UInt32>> {
        let index = cachedSlot.load(ordering: .relaxed)
        if index >= 0 && slotOwner(index).pointee.load(ordering: .relaxed) == me { return slotHolds(index) }
        let claimed = claimSlot()
        return claimed >= 0 ? slotHolds(claimed) : overflow
    }

    /// This process's slot, if it has one (never claims).
    private func ownSlot() -> Int? {
        let index = cachedSlot.load(ordering: .relaxed)
        if index >= 0 && slotOwner(index).pointee.load(ordering: .relaxed) == me { return index }
        for index in 0..<Self.readerCapacity where slotOwner(index).pointee.load(ordering: .relaxed) == me {
            cachedSlot.store(index, ordering: .relaxed)
            return index
        }
        return nil
    }

    /// Finds or claims this process's slot: one it already has (another instance may have claimed
    /// it), a free one, or — at most every 25 ms when none is free — a dead process's. -1 if every
    /// slot is taken by a live process.
    @inline(never)
    private func claimSlot() -> Int {
        Self.claiming.withLock { _ -> Int in
            if let index = ownSlot() { return index }
            for index in 0..<Self.readerCapacity where slotOwner(index).pointee.load(ordering: .relaxed) == 0 {
                if slotOwner(index).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
                    cachedSlot.store(index, ordering: .relaxed)
                    return index
                }
            }
            let now = Clock.monotonicNanoseconds()
            guard now >= nextReclaimScan.load(ordering: .relaxed) else { return -1 }
            nextReclaimScan.store(now &+ ProcessMutex.livenessInterval, ordering: .relaxed)
            for index in 0..<Self.readerCapacity {
                let holder = slotOwner(index).pointee.load(ordering: .relaxed)
                if holder == 0 {
                    if slotOwner(index).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
                        cachedSlot.store(index, ordering: .relaxed)
                        return index
                    }
                } else if !lease.isAlive(holder), free(index, holder: holder, keep: true) {
                    cachedSlot.store(index, ordering: .relaxed)
                    return index
                }
            }
            return -1
        }
    }

    /// Frees the slot of the dead process `holder`: marks it as being cleaned by us, drops its holds,
    /// then leaves it free (or ours, with `keep`: only under `claiming`). False if it changed meanwhile.
    private func free(_ index: Int, holder: UInt64, keep: Bool) -> Bool {
        guard slotOwner(index).pointee.compareExchange(
            expected: holder, desired: me | Self.cleaning, ordering: .sequentiallyConsistent).exchanged else { return false }
        let held = slotHolds(index).pointee.exchange(0, ordering: .sequentiallyConsistent)
        slotOwner(index).pointee.store(keep ? me : 0, ordering: .sequentiallyConsistent)
        if held != 0 {
            readerRecoveries.pointee.wrappingAdd(1, ordering: .relaxed)
            if !keep { return true }
            // A writer may wait for these holds.
            leftRead()
        }
        return true
    }

    /// A writer's check: frees the slots of dead processes (the holder's or the cleaner's token no
    /// longer locked: one `fcntl` per slot) that still count read holds. Whether it freed any.
    private func freeDeadReaders() -> Bool {
        var freed = false
        for index in 0..<Self.readerCapacity where slotHolds(index).pointee.load(ordering: .relaxed) != 0 {
            let holder = slotOwner(index).pointee.load(ordering: .relaxed)
            guard holder != 0 && holder & ~Self.cleaning != me else { continue }
            if !lease.isAlive(holder) && free(index, holder: holder, keep: false) {
                freed = true
            }
        }
        return freed
    }

    /// The read holds of all slots plus the overflow count.
    @inline(__always)
    private func readersInside() -> UInt32 {
        var sum = overflow.pointee.load(ordering: .sequentiallyConsistent)
        for index in 0..<Self.readerCapacity {
            sum &+= slotHolds(index).pointee.load(ordering: .sequentiallyConsistent)
        }
        return sum
    }

    /// A reader's attempt while spinning: never announces itself in the owner word.
    private func readSpinAttempt(_ checkOwner: Bool) -> WaitStep<ProcessMutex.Acquisition> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return enterRead(readCounter()) ? .done(acquisition) : .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// A reader's attempt before parking: clears a dead writer's claim when a check is due, and sets
    /// the contended bit before parking (the writer's unlock then wakes us).
    private func readAttempt(_ checkOwner: Bool) -> WaitStep<ProcessMutex.Acquisition> {
        var current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return enterRead(readCounter()) ? .done(acquisition) : .retry
        }
        if checkOwner && !lease.isAlive(current) {
            clearDeadWriter(current)
            return .retry
        }
        guard announce(&current) else { return .retry }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// A writer's claim attempt while spinning: claims a free lock without the contended bit.
    private func claimSpinAttempt(_ checkOwner: Bool) -> WaitStep<Void> {
        let current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return owner.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged ? .done(()) : .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// A writer's claim attempt before parking: claims a free lock *with* the contended bit (others
    /// may be parked too), takes a dead writer's claim over when a check is due, and otherwise sets
    /// the contended bit before parking.
    private func claimAttempt(_ checkOwner: Bool) -> WaitStep<Void> {
        var current = owner.pointee.load(ordering: .relaxed)
        if current == 0 {
            return owner.pointee.compareExchange(
                expected: 0, desired: me | Self.contended, ordering: .sequentiallyConsistent
            ).exchanged ? .done(()) : .retry
        }
        if checkOwner && !lease.isAlive(current) {
            return takeOver(from: current) ? .done(()) : .retry
        }
        guard announce(&current) else { return .retry }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// Sets the contended bit in the owner word `current` (a claim) before parking on it; false if
    /// the word changed meanwhile. The same word as the unlock's exchange: either the unlock sees the
    /// bit, or this fails.
    @inline(__always)
    private func announce(_ current: inout UInt64) -> Bool {
        guard current & Self.contended == 0 else { return true }
        guard owner.pointee.compareExchange(expected: current, desired: current | Self.contended, ordering: .relaxed).exchanged else {
            return false
        }
        current |= Self.contended
        return true
    }

    /// Reads the drain word before summing the holds: a reader that leaves after the sum bumps the
    /// word after, so the park returns at once. Every 25 ms, frees dead readers' slots.
    private func drainAttempt(_ checkReaders: Bool) -> WaitStep<Void> {
        let sequence = drain.pointee.load(ordering: .sequentiallyConsistent)
        if readersInside() == 0 { return .done(()) }
        if checkReaders && freeDeadReaders() { return .retry }
        return .park(expected: sequence)
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
        if owner.pointee.exchange(0, ordering: .sequentiallyConsistent) & Self.contended != 0 {
            unlockWakes.add(1, ordering: .relaxed)
            Futex.wakeAll(ownerWord)
        }
    }

    /// Takes the claim of the dead writer recorded as `dead` (keeping its contended bit: whoever
    /// parked behind it still waits); false if it changed meanwhile. If the dead writer was inside,
    /// the lock becomes inconsistent. Only the claimant ever waits for readers to drain, so the dead
    /// writer may be the only one counted in `drain_waiters`: the count starts again from 0.
    private func takeOver(from dead: UInt64) -> Bool {
        guard owner.pointee.compareExchange(
            expected: dead, desired: me | (dead & Self.contended), ordering: .sequentiallyConsistent
        ).exchanged else { return false }
        atomic32(drainWaiters).pointee.store(0, ordering: .sequentiallyConsistent)
        if writeHeld.pointee.load(ordering: .relaxed) != 0 {
            inconsistent.pointee.store(1, ordering: .relaxed)
        }
        recoveries.pointee.wrappingAdd(1, ordering: .relaxed)
        return true
    }

    /// A reader clears a dead writer's claim: takes it over (so that the repair has one owner), then
    /// gives it back.
    private func clearDeadWriter(_ dead: UInt64) {
        guard takeOver(from: dead) else { return }
        giveClaimBack()
    }

}

// MARK: - The shared object

extension ProcessRWLock: SharedObject, SharedObjectKind {
    static var segmentKind: SegmentKind { .rwLock }
    static var tag: UInt32 { CIPC_TAG_RWLOCK }
    static var tagOffset: Int { fieldOffset(\cipc_rwlock.tag) }
    static var kindName: String { "rwlock" }
    static var displayName: String { "reader-writer lock" }
    static var recordsOwners: Bool { true }
    static var minimumSize: Int { stateSize }

    /// Unlocked, no reader: zeros, and the sizes that `validate` checks.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with _: Void) {
        state.storeBytes(of: CIPC_RWLOCK_READERS, toByteOffset: fieldOffset(\cipc_rwlock.reader_capacity), as: UInt32.self)
        state.storeBytes(of: CIPC_RWLOCK_SIZE, toByteOffset: fieldOffset(\cipc_rwlock.state_size), as: UInt32.self)
    }

    /// The slot count and the state size (another layout version, or a peer's garbage).
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting _: Void?) throws(InterprocessError) {
        let capacity = state.load(fromByteOffset: fieldOffset(\cipc_rwlock.reader_capacity), as: UInt32.self)
        let size = state.load(fromByteOffset: fieldOffset(\cipc_rwlock.state_size), as: UInt32.self)
        guard capacity == CIPC_RWLOCK_READERS, size == CIPC_RWLOCK_SIZE else {
            throw InterprocessError(.corrupt, detail: "inconsistent reader-writer lock header: \(capacity) reader slots, \(size) bytes (another layout version?)")
        }
    }

    /// The writer, readers, reader slots, waiters, consistency and recoveries, read from a copy of
    /// the state.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        let headerSize = fieldOffset(\cipc_rwlock.readers)
        guard copy.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        func load<T>(_ field: KeyPath<cipc_rwlock, T>) -> T { copy.loadUnaligned(fromByteOffset: fieldOffset(field), as: T.self) }
        let word = load(\.owner)
        let pid = OwnerLease.displayPID(of: word)
        let inside = load(\.write_held) != 0
        let overflowHolds = load(\.overflow)
        let writerAlive = word == 0 || isAlive(word)
        var details = [
            "writer": word == 0 ? "-" : "\(pid)",
            "writerAlive": word == 0 ? "-" : (writerAlive ? "yes" : "no"),
            "contended": word & contended == 0 ? "no" : "yes",
            "writeLocked": word == 0 ? "no" : (inside ? "yes" : "claimed"),
            "waiters": "\(load(\.waiters))",
            "drainingWriters": "\(load(\.drain_waiters))",
            "consistent": load(\.inconsistent) == 0 ? "yes" : "no",
            "recoveries": "\(load(\.recoveries))",
            "overflowReaders": "\(overflowHolds)",
            "readerRecoveries": "\(load(\.reader_recoveries))",
        ]
        let writer = word == 0 ? "" : "\(inside ? "write-locked" : "claimed") by \(pid)\(writerAlive ? "" : " (dead)")"
        let capacity = Int(load(\.reader_capacity))
        guard capacity == readerCapacity, copy.count >= stateSize else {
            details["readers"] = "?"
            return SharedObjectDescription(details: details, summary: writer)
        }
        var live: UInt64 = UInt64(overflowHolds)
        var dead: UInt64 = 0
        var inUse = 0
        var deadSlots = 0
        let slots = UnsafeRawBufferPointer(rebasing: copy[headerSize...])
        for index in 0..<capacity {
            let reader = slots.loadUnaligned(fromByteOffset: index * MemoryLayout<cipc_rwlock_reader>.stride, as: cipc_rwlock_reader.self)
            guard reader.owner != 0 else { continue }
            inUse += 1
            if isAlive(reader.owner) {
                live += UInt64(reader.holds)
            } else {
                deadSlots += 1
                dead += UInt64(reader.holds)
            }
        }
        details["readers"] = "\(live)"
        details["deadReaders"] = "\(dead)"
        details["readerSlots"] = "\(capacity)"
        details["readerSlotsInUse"] = "\(inUse)"
        details["readerSlotsDead"] = "\(deadSlots)"
        let readers = live > 0 ? "\(live) read lock\(live == 1 ? "" : "s")" : ""
        let summary = [writer, readers, details["consistent"] == "no" ? "inconsistent" : ""].filter { !$0.isEmpty }
        return SharedObjectDescription(details: details, summary: summary.isEmpty ? "unlocked" : summary.joined(separator: ", "))
    }
}

extension SegmentKind {
    /// A named ``ProcessRWLock``.
    public static let rwLock = SegmentKind(rawValue: CIPC_KIND_RWLOCK)
}
