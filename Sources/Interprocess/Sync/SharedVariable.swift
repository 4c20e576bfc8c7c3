public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A box shared between processes that is either empty or holds one value — Haskell's `MVar`.
///
/// ```swift
/// let jobs = try SharedVariable<Job>.create(name: "next-job")      // or .open(name:) in a peer
/// try await jobs.put(Job(id: 7))     // waits while full (the task suspends; no thread blocks)
/// let job = try await jobs.take()    // waits while empty; empties it
/// let peek = try await jobs.read()   // waits while empty; leaves the value there
/// let next = try jobs.blockingTake(timeout: .seconds(1))   // blocks the thread (not in async code)
/// ```
///
/// Every verb comes `async` (``take(timeout:)``, ``put(_:timeout:)``, ``read(timeout:)``,
/// ``swap(_:timeout:)``, ``modify(isolation:timeout:_:)``: cancellation ends the wait having changed nothing),
/// blocking (``blockingTake(timeout:)``, ``blockingPut(_:timeout:)``, ``blockingRead(timeout:)``,
/// ``blockingSwap(_:timeout:)``, ``blockingModify(timeout:_:)``: unavailable in async code) and
/// `try…` (``tryTake()``, ``tryPut(_:)``, ``tryRead()``, ``trySwap(_:)``: never wait); a `timeout`
/// (nil: none) makes a wait throw `timedOut`.
///
/// - ``take(timeout:)`` waits while it is empty and empties it; ``put(_:timeout:)`` waits while it is
///   full. One put releases exactly one taker (the others go on waiting for the next put).
/// - ``read(timeout:)`` waits while it is empty and leaves the value in place. **Every reader that was
///   waiting when a value is put sees that value, before any taker can take it** (like GHC's
///   `readMVar`): a put releases all waiting readers at once, and takers wait until each of them has
///   copied the value.
/// - ``swap(_:timeout:)`` takes the value and puts another in its place atomically (no put can slip
///   in between); ``modify(isolation:timeout:_:)`` does the same around a closure and, if the closure throws,
///   puts the original value back.
///
/// `Value` is copied byte for byte into shared memory, so it must be `BitwiseCopyable` and mean the
/// same in every process: plain numbers and structs or tuples of them — never pointers. The creator
/// records `Value`'s ``TypeFingerprint`` (its name, size, alignment, and a version you may give):
/// opening the variable as another type throws `incompatible`, even one of the same size (`Int64`
/// for `UInt64`), and so does another version of the same type. A peer can write any bytes into the
/// value: use a type for which every bit pattern is valid (not `Bool` or an enum) if peers are not
/// trusted.
///
/// ## How it works
/// The 64-bit state word holds *full* (bit 0), *readers pending* (bit 1) and a generation (bits
/// 2…63) that every put bumps; everybody parks on its low half. A **take** copies the value out
/// while the state says full and then empties it with one compare-and-swap on that exact state
/// (with the 62-bit generation, an old state never comes back), so a take has no intermediate step
/// at all. A **read** copies the value and checks that the state did not change meanwhile
/// (seqlock-style); it never writes. A **put** first claims the *putter* word with its process's
/// *token* (its identity in the segment's file, vouched for by a kernel lock that dies with it, as
/// ``ProcessMutex`` records an owner: no pids, so right across PID namespaces, users and
/// `hidepid`): only the claimant may fill the slot and turn the state from empty to full, so readers
/// and takers never see a half-written value.
///
/// The reader-before-taker order: a reader that finds the variable empty registers in one of 16
/// reader slots (its token and the generation it saw empty), then looks again. A put publishes
/// the new state with *readers pending* set, then scans the slots: if no registered reader waits
/// for an older generation, it clears the bit at once. Otherwise the bit stays until the last of
/// those readers, having copied the value, leaves its slot and clears it. Takers (and swaps) wait
/// while the bit is set. Both the reader's registration and the put's publication are sequentially
/// consistent and each then reads what the other wrote, so a reader either is seen by the put's
/// scan or sees the put itself. Beyond 16 waiting readers, the extra ones are still woken by the
/// put but are not waited for: one of them may miss a value that a taker empties first, and then
/// waits for the next.
///
/// ## What a process killed at each step leaves behind
/// - **put**, killed after claiming the putter word but before publishing: the state is still
///   empty and the slot half-written (nobody reads it while empty). The putter word names a dead
///   process: the next putter clears it within ~25 ms (bounded by 50 ms) and puts. Killed after
///   publishing but before releasing the word or settling *readers pending*: the value is in and
///   visible; the word is cleared as above, and a waiting taker settles the bit itself within 25 ms.
/// - **take**, killed before its compare-and-swap: nothing changed. After it: the value was taken
///   (and is gone with the taker, as with any consumer that dies holding what it consumed).
/// - **read**: reads change nothing. Killed while *waiting* in a reader slot: the slot names a dead
///   process; if a put comes, takers wait ~25 ms (``tryTake()`` checks at once), find the reader
///   dead, clear its slot and go on; a reader that needs a slot when all are taken clears dead
///   readers' slots too.
/// - **swap** / **modify**, killed after taking the value (holding the putter word, state empty):
///   the value is gone with it; the putter word is cleared by the next putter as for a put; the
///   variable is empty and works.
/// - any waiter killed while parked leaves the waiter count one too high, for good: every later put,
///   take, swap or release of the putter word then makes a wake-up system call (~1 µs) even when
///   nobody waits. (The state word has no spare bit for a self-healing *contended* flag like
///   ``ProcessMutex``'s; `ipc inspect` shows `waiters`.)
///
/// Ownership of the putter word is per process, like ``ProcessMutex``: threads and instances of one
/// process share one token per segment file, which lives as long as some instance of the process on
/// that file does. Do not use the variable from
/// inside a ``modify(isolation:timeout:_:)`` body: the variable is empty and the putter word held while it runs.
public final class SharedVariable<Value: BitwiseCopyable>: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, touched through
    // atomics; the value's bytes are only written by the holder of the putter word while the state
    // says empty, and copies of them are validated against the state.

    private typealias Layout = SharedVariableLayout

    /// Bytes of shared state for this `Value`: a 320-byte header, then the value (padded so that it
    /// is aligned), rounded up to 8.
    public static var stateSize: Int {
        Layout.size(valueSize: MemoryLayout<Value>.size, alignment: MemoryLayout<Value>.alignment)
    }

    let storage: SharedObjectStorage
    private let state: UnsafeMutablePointer<Atomic<UInt64>>
    private let stateWord: UnsafeMutableRawPointer
    private let waiters: UnsafeMutableRawPointer
    private let putter: UnsafeMutablePointer<Atomic<UInt64>>
    private let registered: UnsafeMutablePointer<Atomic<UInt32>>
    private let recoveries: UnsafeMutablePointer<Atomic<UInt64>>
    private let slot: UnsafeMutableRawPointer
    /// The first reader slot's `owner` and `since`: slot i's are `cipc_variable_reader`'s stride × i
    /// further.
    private let readerOwners: UnsafeMutableRawPointer
    private let readerSinces: UnsafeMutableRawPointer
    /// This process's identity in the file, and the descriptor that checks others'.
    private let lease: OwnerLease
    /// This process's token: the putter word while it fills the slot, and its reader slots' owner.
    private let me: UInt64

    init(storage: SharedObjectStorage) {
        guard let lease = storage.lease else { preconditionFailure("a shared variable's storage carries a lease") }
        let base = storage.base
        self.storage = storage
        state = atomic64(base + fieldOffset(\cipc_variable_header.state))
        stateWord = base + fieldOffset(\cipc_variable_header.state) // the state's low half (little-endian)
        waiters = base + fieldOffset(\cipc_variable_header.waiters)
        putter = atomic64(base + fieldOffset(\cipc_variable_header.putter))
        registered = atomic32(base + fieldOffset(\cipc_variable_header.registered_readers))
        recoveries = atomic64(base + fieldOffset(\cipc_variable_header.recoveries))
        slot = base + Layout.valueOffset(alignment: MemoryLayout<Value>.alignment)
        readerOwners = base + fieldOffset(\cipc_variable_header.readers) + fieldOffset(\cipc_variable_reader.owner)
        readerSinces = base + fieldOffset(\cipc_variable_header.readers) + fieldOffset(\cipc_variable_reader.since)
        self.lease = lease
        me = lease.token
    }

    // MARK: Creating and opening

    /// Creates a named variable (a segment of kind `variable`), empty or holding `initialValue`.
    /// - Parameters:
    ///   - name: 1 to 255 bytes, no '/' and no NUL.
    ///   - initialValue: the value it starts with; nil: empty.
    ///   - type: what it records as its value type: by default `Value`'s name, size and
    ///     alignment (version 0); give a ``TypeFingerprint`` with a version when `Value`'s layout
    ///     changes, or explicitly for peers in other languages. Its size and alignment must be
    ///     `Value`'s (`invalidArgument` otherwise).
    ///   - permissions: owner-only by default.
    ///   - lifetime: ``Lifetime/whileReferenced`` by default.
    public static func create(
        name: String, initialValue: Value? = nil, type: TypeFingerprint = TypeFingerprint(of: Value.self),
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.create(
            SharedVariable.self, name: name, parameters: parameters(type, initialValue, name: name), permissions: permissions,
            lifetime: lifetime)
    }

    /// Opens a named variable. Throws `incompatible` if it records another value type than `type`
    /// (by default `Value`'s fingerprint: another type of the same size is incompatible too; see
    /// ``TypeFingerprint``) or is not a variable, `corrupt` if what it records is damaged,
    /// `permissionDenied` if its owner is not trusted (by default only this process's user is; see
    /// ``TrustedOwners``).
    public static func open(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.open(SharedVariable.self, name: name, expecting: parameters(type, nil, name: name), trusting: trust)
    }

    /// Opens the named variable (which keeps its value; `incompatible` if it records another value
    /// type than `type`), or creates it, empty or holding `initialValue`; `created` says which. Of
    /// racing processes exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, initialValue: Value? = nil, type: TypeFingerprint = TypeFingerprint(of: Value.self),
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (variable: SharedVariable, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            SharedVariable.self, name: name, parameters: parameters(type, initialValue, name: name), permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named variable `name` (`incompatible` if it is not a variable);
    /// processes that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(SharedVariable.self, name: name)
    }

    /// Initializes a variable at `offset` in `segment` (``stateSize`` bytes, at an offset that is a
    /// multiple of 8 and of `Value`'s alignment), empty or holding `initialValue`, recording `type`
    /// (see ``create(name:initialValue:type:permissions:lifetime:)``).
    public static func create(
        in segment: SharedMemory, at offset: Int, initialValue: Value? = nil, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.place(
            SharedVariable.self, in: segment, at: offset, parameters: parameters(type, initialValue, name: segment.name))
    }

    /// Uses the variable that another process created at `offset` in `segment` (`incompatible` if it
    /// records another value type than `type`).
    public static func open(
        in segment: SharedMemory, at offset: Int, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.attach(
            SharedVariable.self, in: segment, at: offset, expecting: parameters(type, nil, name: segment.name))
    }

    /// Places a variable in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in the
    /// segment's table of placed objects (`outOfMemory` if no room is free), empty or holding
    /// `initialValue`. Peers find it with ``open(in:named:type:)``.
    public static func create(
        in segment: SharedMemory, named name: String, initialValue: Value? = nil, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.place(
            SharedVariable.self, in: segment, at: nil, named: name, parameters: parameters(type, initialValue, name: segment.name))
    }

    /// Uses the variable placed in `segment` under `name` (`notFound` if nothing is, `incompatible`
    /// if it is of another kind or records another value type than `type`).
    public static func open(
        in segment: SharedMemory, named name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedVariable {
        try SharedObjectStorage.attach(
            SharedVariable.self, in: segment, named: name, expecting: parameters(type, nil, name: segment.name))
    }

    /// The name of a named variable.
    public var name: String? { storage.name }

    /// Unregisters a named variable (the last holder of a `.whileReferenced` one removes the name).
    public func close() { storage.close() }

    /// Whether the variable is empty now (a snapshot).
    public var isEmpty: Bool { state.pointee.load(ordering: .acquiring) & Layout.full == 0 }

    // MARK: Taking

    /// Where everybody waits: the state word's low half. Putters and takers check the liveness of
    /// the putter and of the readers that hold them back when they are about to park, then every
    /// 25 ms.
    private var site: WaitSite { WaitSite(word: stateWord, waiters: waiters, name: name, recheckEvery: ProcessMutex.livenessInterval) }

    /// Readers wait on the same word without periodic checks.
    private var readSite: WaitSite { WaitSite(word: stateWord, waiters: waiters, name: name) }

    /// Takes the value, suspending the task (no thread blocks) while the variable is empty — or while
    /// readers that were waiting when it was put have not copied it yet — for at most `timeout` (nil:
    /// as long as it takes).
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having taken nothing.
    public func take(timeout: Duration? = nil) async throws(InterprocessError) -> Value {
        try await site.asyncWait(until: Deadline(after: timeout), takeAttempt)
    }

    /// Takes the value, blocking the calling thread while the variable is empty, for at most
    /// `timeout` (nil: as long as it takes). The blocking form of ``take(timeout:)``.
    @available(*, noasync, message: "use the async take(timeout:) in async code")
    public func blockingTake(timeout: Duration? = nil) throws(InterprocessError) -> Value {
        try site.blockingWait(until: Deadline(after: timeout), takeAttempt)
    }

    /// Takes the value if there is one that no waiting reader still has to see; nil otherwise.
    /// Never blocks.
    public func tryTake() -> Value? {
        var settled = false
        while true {
            switch takeAttempt(false) {
            case .done(let value): return value
            case .retry: continue
            case .park(let expected):
                // Held back by readers: clear the slots of readers that died, once.
                guard !settled, UInt64(expected) & Layout.pending != 0 else { return nil }
                settled = true
                guard settle(.dead) else { return nil }
                wakeWaiters()
            }
        }
    }

    // MARK: Putting

    /// Puts `value`, suspending the task (no thread blocks) while the variable is full, for at most
    /// `timeout` (nil: as long as it takes).
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having put nothing.
    public func put(_ value: Value, timeout: Duration? = nil) async throws(InterprocessError) {
        try await site.asyncWait(until: Deadline(after: timeout)) { check in putAttempt(value, check) }
    }

    /// Puts `value`, blocking the calling thread while the variable is full, for at most `timeout`
    /// (nil: as long as it takes). The blocking form of ``put(_:timeout:)``.
    @available(*, noasync, message: "use the async put(_:timeout:) in async code")
    public func blockingPut(_ value: Value, timeout: Duration? = nil) throws(InterprocessError) {
        try site.blockingWait(until: Deadline(after: timeout)) { check in putAttempt(value, check) }
    }

    /// Puts `value` if the variable is empty and no other put is in progress; returns whether it did.
    /// Never blocks.
    public func tryPut(_ value: Value) -> Bool {
        var recovered = false
        while true {
            switch putAttempt(value, false) {
            case .done: return true
            case .retry: continue
            case .park(let expected):
                // Empty but claimed by a putter that died: clear its claim, once.
                let holder = putter.pointee.load(ordering: .relaxed)
                guard !recovered, UInt64(expected) & Layout.full == 0, holder != 0, !lease.isAlive(holder) else { return false }
                recovered = true
                recoverPutter(holder)
            }
        }
    }

    // MARK: Reading

    /// Returns the value without taking it, suspending the task (no thread blocks) while the variable
    /// is empty, for at most `timeout` (nil: as long as it takes). A reader that waits gets the very
    /// next value put, before any taker can take it.
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled.
    public func read(timeout: Duration? = nil) async throws(InterprocessError) -> Value {
        try readSite.throwIfCancelled()
        if let value = tryRead() { return value }
        var registration = Registration()
        defer { leave(registration) }
        return try await readSite.asyncWait(until: Deadline(after: timeout)) { _ in readAttempt(&registration) }
    }

    /// Returns the value without taking it, blocking the calling thread while the variable is empty,
    /// for at most `timeout` (nil: as long as it takes). The blocking form of ``read(timeout:)``.
    @available(*, noasync, message: "use the async read(timeout:) in async code")
    public func blockingRead(timeout: Duration? = nil) throws(InterprocessError) -> Value {
        if let value = tryRead() { return value }
        var registration = Registration()
        defer { leave(registration) }
        return try readSite.blockingWait(until: Deadline(after: timeout)) { _ in readAttempt(&registration) }
    }

    /// The value if the variable is full; nil if it is empty. Never blocks.
    public func tryRead() -> Value? {
        for _ in 0..<64 {
            let current = state.pointee.load(ordering: .sequentiallyConsistent)
            guard current & Layout.full != 0 else { return nil }
            if let value = copyIfUnchanged(current) { return value }
        }
        return nil
    }

    // MARK: Exchanging

    /// Takes the value and puts `newValue` in its place, with no put in between; returns the old
    /// value. Suspends the task (no thread blocks) while the variable is empty, for at most `timeout`
    /// (nil: as long as it takes).
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled — in both cases
    ///   having changed nothing.
    public func swap(_ newValue: Value, timeout: Duration? = nil) async throws(InterprocessError) -> Value {
        let old = try await beginExchange(Deadline(after: timeout))
        finishExchange(newValue)
        return old
    }

    /// Takes the value and puts `newValue` in its place, blocking the calling thread while the
    /// variable is empty, for at most `timeout` (nil: as long as it takes). The blocking form of
    /// ``swap(_:timeout:)``.
    @available(*, noasync, message: "use the async swap(_:timeout:) in async code")
    public func blockingSwap(_ newValue: Value, timeout: Duration? = nil) throws(InterprocessError) -> Value {
        let old = try beginBlockingExchange(Deadline(after: timeout))
        finishExchange(newValue)
        return old
    }

    /// Swaps if the variable is full (and no waiting reader still has to see its value): returns
    /// the old value, or nil without changing anything. Never blocks.
    public func trySwap(_ newValue: Value) -> Value? {
        var yields = 0
        while true {
            switch exchangeAttempt(false, &yields) {
            case .done(let old):
                finishExchange(newValue)
                return old
            case .retry: continue
            case .park: return nil
            }
        }
    }

    /// Takes the value, lets `body` change it, and puts the result back, with no put in between.
    /// Suspends the task (no thread blocks) while the variable is empty, for at most `timeout` (nil:
    /// as long as it takes); `body` itself runs synchronously, in the caller's isolation. If `body`
    /// throws, puts the original
    /// value back and rethrows. While `body` runs the variable is empty: readers and takers wait, and
    /// so do putters. A process killed inside `body` takes the value with it (the variable stays
    /// empty and usable).
    /// - Throws: `timedOut` after `timeout`, `cancelled` if the task is cancelled — in both cases
    ///   having changed nothing and without running `body`; or what `body` throws.
    public func modify<R>(
        isolation: isolated (any Actor)? = #isolation, timeout: Duration? = nil, _ body: (inout Value) throws -> R
    ) async throws -> R {
        try exchange(original: try await beginExchange(Deadline(after: timeout)), body)
    }

    /// The blocking form of ``modify(isolation:timeout:_:)``: blocks the calling thread while the variable is
    /// empty.
    @available(*, noasync, message: "use the async modify(timeout:_:) in async code")
    public func blockingModify<R>(timeout: Duration? = nil, _ body: (inout Value) throws -> R) throws -> R {
        try exchange(original: try beginBlockingExchange(Deadline(after: timeout)), body)
    }

    private func exchange<R>(original: Value, _ body: (inout Value) throws -> R) throws -> R {
        var value = original
        do {
            let result = try body(&value)
            finishExchange(value)
            return result
        } catch {
            finishExchange(original)
            throw error
        }
    }

    // MARK: Internals: attempts

    private func takeAttempt(_ check: Bool) -> WaitStep<Value> {
        let current = state.pointee.load(ordering: .sequentiallyConsistent)
        guard current & Layout.full != 0 else { return .park(expected: Layout.futexValue(current)) }
        if current & Layout.pending != 0 {
            if check && settle(.dead) {
                wakeWaiters()
                return .retry
            }
            return .park(expected: Layout.futexValue(current))
        }
        return withCopy { copy -> WaitStep<Value> in
            // Unchanged state ⇒ nobody took it, so nobody refilled the slot: the copy is the value.
            guard state.pointee.compareExchange(
                expected: current, desired: current & ~(Layout.full | Layout.pending), ordering: .acquiringAndReleasing
            ).exchanged else { return .retry }
            wakeWaiters()
            return .done(copy.load(as: Value.self))
        }
    }

    private func putAttempt(_ value: Value, _ check: Bool) -> WaitStep<Void> {
        let current = state.pointee.load(ordering: .sequentiallyConsistent)
        if current & Layout.full != 0 { return .park(expected: Layout.futexValue(current)) }
        let holder = putter.pointee.load(ordering: .sequentiallyConsistent)
        if holder != 0 {
            if check && !lease.isAlive(holder) {
                recoverPutter(holder)
                return .retry
            }
            // Another put (or swap) is filling it: the state changes when it is done.
            return .park(expected: Layout.futexValue(current))
        }
        guard putter.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else { return .retry }
        HotPath.crashPoint("variable.put.afterClaim")
        let now = state.pointee.load(ordering: .sequentiallyConsistent)
        guard now & Layout.full == 0 else {
            releasePutter()
            return .retry
        }
        slot.storeBytes(of: value, as: Value.self)
        publish(from: now)
        return .done(())
    }

    /// Where a waiting reader stands: its slot (if it got one) and the generation it saw empty.
    private struct Registration {
        var slot: Int?
        var since: UInt64 = 0
        var tried = false
    }

    private func readAttempt(_ registration: inout Registration) -> WaitStep<Value> {
        let current = state.pointee.load(ordering: .sequentiallyConsistent)
        if current & Layout.full != 0 {
            if let value = copyIfUnchanged(current) { return .done(value) }
            return .retry
        }
        let generation = current >> 2
        if let index = registration.slot {
            if registration.since != generation {
                readerSince(index).pointee.store(generation, ordering: .sequentiallyConsistent)
                registration.since = generation
                return .retry // look again after registering
            }
            return .park(expected: Layout.futexValue(current))
        }
        if !registration.tried {
            registration.tried = true
            if let index = claimReaderSlot(since: generation) {
                registration.slot = index
                registration.since = generation
                return .retry // look again after registering
            }
        }
        return .park(expected: Layout.futexValue(current))
    }

    /// Waits until the variable is full (and no reader is pending), claims the putter word and takes
    /// the value, leaving the variable empty and the putter word held: ``finishExchange(_:)`` next.
    private func beginExchange(_ deadline: Deadline) async throws(InterprocessError) -> Value {
        var yields = 0
        return try await site.asyncWait(until: deadline) { check in exchangeAttempt(check, &yields) }
    }

    /// The blocking form of ``beginExchange(_:)``.
    @available(*, noasync)
    private func beginBlockingExchange(_ deadline: Deadline) throws(InterprocessError) -> Value {
        var yields = 0
        return try site.blockingWait(until: deadline) { check in exchangeAttempt(check, &yields) }
    }

    private func exchangeAttempt(_ check: Bool, _ yields: inout Int) -> WaitStep<Value> {
        let current = state.pointee.load(ordering: .sequentiallyConsistent)
        guard current & Layout.full != 0 else { return .park(expected: Layout.futexValue(current)) }
        if current & Layout.pending != 0 {
            if check && settle(.dead) {
                wakeWaiters()
                return .retry
            }
            return .park(expected: Layout.futexValue(current))
        }
        let holder = putter.pointee.load(ordering: .sequentiallyConsistent)
        if holder != 0 {
            if check && !lease.isAlive(holder) {
                recoverPutter(holder)
                return .retry
            }
            // Full and claimed: a putter between publishing and releasing, or one that found it full
            // and is letting go — a few instructions. Give it the CPU; park if it takes long.
            if yields < 64 {
                yields += 1
                SpinPolicy.yield()
                return .retry
            }
            return .park(expected: Layout.futexValue(current))
        }
        guard putter.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else { return .retry }
        let now = state.pointee.load(ordering: .sequentiallyConsistent)
        guard now & (Layout.full | Layout.pending) == Layout.full else {
            releasePutter()
            return .retry
        }
        return withCopy { copy -> WaitStep<Value> in
            guard state.pointee.compareExchange(
                expected: now, desired: now & ~Layout.full, ordering: .acquiringAndReleasing
            ).exchanged else {
                releasePutter()
                return .retry
            }
            HotPath.crashPoint("variable.exchange.afterTake")
            return .done(copy.load(as: Value.self))
        }
    }

    /// Fills the slot we hold the putter word for (state empty) and publishes it.
    private func finishExchange(_ value: Value) {
        let current = state.pointee.load(ordering: .sequentiallyConsistent)
        slot.storeBytes(of: value, as: Value.self)
        publish(from: current)
    }

    // MARK: Internals: protocol steps

    /// Publishes the value just written into the slot (state `empty` at generation g → full at g+1,
    /// readers pending), releases the putter word, clears *pending* if no registered reader waits
    /// for it, and wakes everybody.
    private func publish(from empty: UInt64) {
        let next = ((empty & ~(Layout.full | Layout.pending)) &+ Layout.generationUnit) | Layout.full | Layout.pending
        state.pointee.store(next, ordering: .sequentiallyConsistent)
        HotPath.crashPoint("variable.put.afterPublish")
        putter.pointee.store(0, ordering: .sequentiallyConsistent)
        _ = settle(.never)
        wakeWaiters()
    }

    private func releasePutter() {
        putter.pointee.store(0, ordering: .sequentiallyConsistent)
        wakeWaiters()
    }

    /// Clears the putter word of a dead putter (nothing to repair: it either never published, and
    /// the state is still empty, or did, and the value is complete).
    private func recoverPutter(_ dead: UInt64) {
        guard putter.pointee.compareExchange(expected: dead, desired: 0, ordering: .sequentiallyConsistent).exchanged else { return }
        recoveries.pointee.wrappingAdd(1, ordering: .relaxed)
        _ = settle(.never)
        wakeWaiters()
    }

    private enum Liveness {
        /// Every registered reader counts.
        case never
        /// Readers that died (their token no longer locked: one `fcntl` each) are cleared.
        case dead
    }

    /// If the state is full with *readers pending*, and no registered reader still waits for an
    /// older generation (clearing dead ones as `liveness` says), clears the bit. Returns whether it
    /// cleared it (the caller wakes the waiters).
    private func settle(_ liveness: Liveness) -> Bool {
        while true {
            let current = state.pointee.load(ordering: .sequentiallyConsistent)
            guard current & (Layout.full | Layout.pending) == Layout.full | Layout.pending else { return false }
            let generation = current >> 2
            if registered.pointee.load(ordering: .sequentiallyConsistent) != 0 {
                for index in 0..<Layout.readerCapacity {
                    let owner = readerOwner(index).pointee.load(ordering: .sequentiallyConsistent)
                    guard owner != 0, readerSince(index).pointee.load(ordering: .sequentiallyConsistent) < generation else { continue }
                    let dead = switch liveness {
                    case .never: false
                    case .dead: !lease.isAlive(owner)
                    }
                    guard dead else { return false }
                    recoverReader(index, dead: owner)
                }
            }
            if state.pointee.compareExchange(
                expected: current, desired: current & ~Layout.pending, ordering: .sequentiallyConsistent
            ).exchanged { return true }
        }
    }

    /// Registers a waiting reader: counts it, claims a free slot and records the generation it saw
    /// empty. Nil when all slots are taken by live readers.
    private func claimReaderSlot(since generation: UInt64) -> Int? {
        registered.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        for pass in 0..<2 {
            for index in 0..<Layout.readerCapacity where readerOwner(index).pointee.load(ordering: .relaxed) == 0 {
                if readerOwner(index).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
                    readerSince(index).pointee.store(generation, ordering: .sequentiallyConsistent)
                    return index
                }
            }
            guard pass == 0 else { break }
            // All taken: free the slots of readers that died, and try once more.
            for index in 0..<Layout.readerCapacity {
                let owner = readerOwner(index).pointee.load(ordering: .relaxed)
                if owner != 0 && !lease.isAlive(owner) { recoverReader(index, dead: owner) }
            }
        }
        registered.pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        return nil
    }

    /// A reader is done (returned, timed out or cancelled): frees its slot and, if it was the last
    /// one a put waited for, lets takers go.
    private func leave(_ registration: Registration) {
        guard let index = registration.slot else { return }
        readerSince(index).pointee.store(Layout.noGeneration, ordering: .relaxed)
        readerOwner(index).pointee.store(0, ordering: .sequentiallyConsistent)
        registered.pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        if settle(.never) { wakeWaiters() }
    }

    /// Frees the slot of the dead reader `dead` (claiming it first, so that one process repairs it).
    private func recoverReader(_ index: Int, dead: UInt64) {
        guard readerOwner(index).pointee.compareExchange(expected: dead, desired: me, ordering: .sequentiallyConsistent).exchanged else { return }
        readerSince(index).pointee.store(Layout.noGeneration, ordering: .relaxed)
        readerOwner(index).pointee.store(0, ordering: .sequentiallyConsistent)
        registered.pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        recoveries.pointee.wrappingAdd(1, ordering: .relaxed)
    }

    @inline(__always)
    private func wakeWaiters() {
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wakeAll(stateWord)
        }
    }

    /// Copies the slot into a temporary buffer and calls `body` with it (the copy is only turned
    /// into a `Value` once it is known to be whole).
    @inline(__always)
    private func withCopy<R>(_ body: (UnsafeRawPointer) -> R) -> R {
        withUnsafeTemporaryAllocation(
            byteCount: Swift.max(MemoryLayout<Value>.size, 1), alignment: MemoryLayout<Value>.alignment
        ) { buffer in
            buffer.baseAddress!.copyMemory(from: slot, byteCount: MemoryLayout<Value>.size)
            return body(UnsafeRawPointer(buffer.baseAddress!))
        }
    }

    /// The value, if the state still says full at the generation of `observed` after copying it.
    private func copyIfUnchanged(_ observed: UInt64) -> Value? {
        withCopy { copy -> Value? in
            atomicMemoryFence(ordering: .acquiring)
            let now = state.pointee.load(ordering: .relaxed)
            guard now | Layout.pending == observed | Layout.pending else { return nil }
            return copy.load(as: Value.self)
        }
    }

    private func readerOwner(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(readerOwners + index * MemoryLayout<cipc_variable_reader>.stride)
    }

    private func readerSince(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(readerSinces + index * MemoryLayout<cipc_variable_reader>.stride)
    }
}

// MARK: - The shared object

extension SharedVariable: SharedObject {
    typealias Kind = SharedVariableLayout

    /// What a variable is created with, and what an opener expects of one.
    struct Parameters {
        /// The value type it records (checked against `Value`'s layout).
        var type: TypeFingerprint
        /// Its first value (creating only).
        var initialValue: Value?
    }

    static var recordsOwners: Bool { true }
    static var alignment: Int { Swift.max(MemoryLayout<Value>.alignment, 8) }
    static var minimumSize: Int { Layout.headerSize }

    /// Checks a fingerprint given for `Value` (`invalidArgument` if it cannot describe it).
    fileprivate static func parameters(_ type: TypeFingerprint, _ initialValue: Value?, name: String) throws(InterprocessError) -> Parameters {
        if let problem = type.problem {
            throw InterprocessError(.invalidArgument, objectName: name, detail: problem)
        }
        guard type.size == MemoryLayout<Value>.size, type.alignment == MemoryLayout<Value>.alignment else {
            throw InterprocessError(.invalidArgument, objectName: name,
                detail: "the type fingerprint \(type) does not describe \(Value.self) (\(MemoryLayout<Value>.size) bytes, aligned to \(MemoryLayout<Value>.alignment))")
        }
        return Parameters(type: type, initialValue: initialValue)
    }

    static func size(for _: Parameters) throws(InterprocessError) -> Int {
        guard MemoryLayout<Value>.alignment <= 4096, MemoryLayout<Value>.size <= Int(UInt32.max) - 8192 else {
            throw InterprocessError(.invalidArgument,
                detail: "\(Value.self) (\(MemoryLayout<Value>.size) bytes, aligned to \(MemoryLayout<Value>.alignment)) is too big for a shared variable")
        }
        return stateSize
    }

    static func initialize(_ base: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        let alignment = MemoryLayout<Value>.alignment
        func store(_ value: UInt32, _ field: KeyPath<cipc_variable_header, UInt32>) {
            base.storeBytes(of: value, toByteOffset: fieldOffset(field), as: UInt32.self)
        }
        store(UInt32(MemoryLayout<Value>.size), \.value_size)
        store(UInt32(alignment), \.value_alignment)
        store(CIPC_VARIABLE_READERS, \.reader_capacity)
        store(UInt32(Layout.valueOffset(alignment: alignment)), \.value_offset)
        base.storeBytes(of: parameters.type.shared, toByteOffset: fieldOffset(\cipc_variable_header.value_type), as: cipc_type_fingerprint.self)
        let readers = base + fieldOffset(\cipc_variable_header.readers)
        for index in 0..<Layout.readerCapacity {
            let reader = readers + index * MemoryLayout<cipc_variable_reader>.stride
            atomic64(reader + fieldOffset(\cipc_variable_reader.owner)).initialize(to: Atomic(0))
            atomic64(reader + fieldOffset(\cipc_variable_reader.since)).initialize(to: Atomic(Layout.noGeneration))
        }
        var initialState: UInt64 = 0
        if let initialValue = parameters.initialValue {
            (base + Layout.valueOffset(alignment: alignment)).storeBytes(of: initialValue, as: Value.self)
            initialState = Layout.generationUnit | Layout.full
        }
        atomic64(base + fieldOffset(\cipc_variable_header.state)).initialize(to: Atomic(initialState))
    }

    /// Checks what a peer wrote before trusting it: the value type (`incompatible` if it is not the
    /// expected one, `corrupt` if it is garbage), then the value's size, alignment and offset, the
    /// reader slots, and a layout that fits the `available` bytes.
    static func validate(_ base: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError) {
        let header = base.load(as: cipc_variable_header.self) // a copy: a peer may write meanwhile
        let expected = parameters?.type ?? TypeFingerprint(of: Value.self)
        guard try expected.matches(header.value_type) else {
            throw InterprocessError(.incompatible, detail: "it holds \(TypeFingerprint.text(of: header.value_type)), not \(expected)")
        }
        let size = Int(header.value_size)
        let alignment = Int(header.value_alignment)
        guard size == Int(header.value_type.size), alignment == Int(header.value_type.alignment),
              header.reader_capacity == CIPC_VARIABLE_READERS,
              Int(header.value_offset) == Layout.valueOffset(alignment: alignment),
              Layout.size(valueSize: size, alignment: alignment) <= available
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent shared variable header")
        }
    }
}

/// The shared layout of a ``SharedVariable`` (`cipc_variable_header` in `CInterprocess.h`),
/// independent of its `Value`: the variables' kind.
enum SharedVariableLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .variable }
    static var tag: UInt32 { CIPC_TAG_VARIABLE }
    static var tagOffset: Int { fieldOffset(\cipc_variable_header.tag) }
    static var retiredTags: [UInt32] { [CIPC_TAG_VARIABLE_V1] }
    static var kindName: String { "variable" }
    static var displayName: String { "shared variable" }

    static let headerSize = MemoryLayout<cipc_variable_header>.size
    static let readerCapacity = Int(CIPC_VARIABLE_READERS)

    /// State bits: full, readers pending; the generation counts from bit 2.
    static let full: UInt64 = 1
    static let pending: UInt64 = 2
    static let generationUnit: UInt64 = 4
    /// A free reader slot's `since`: later than every generation.
    static let noGeneration = UInt64.max

    /// The futex word's value for a state (its low half).
    @inline(__always)
    static func futexValue(_ state: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: state) }

    static func valueOffset(alignment: Int) -> Int {
        let unit = max(alignment, 8)
        return (headerSize + unit - 1) / unit * unit
    }

    static func size(valueSize: Int, alignment: Int) -> Int {
        valueOffset(alignment: alignment) + (valueSize + 7) / 8 * 8
    }

    /// Full or empty, generation, pending readers, waiting readers, the putter (pid as it saw it, and
    /// whether its token is alive: `isAlive`), the value type, read from a copy of the state.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = copy.loadUnaligned(as: cipc_variable_header.self)
        let word = header.state
        let putter = header.putter
        let slots = UnsafeRawBufferPointer(rebasing: copy[fieldOffset(\cipc_variable_header.readers)...])
        var blocked = 0
        for index in 0..<readerCapacity
        where slots.loadUnaligned(fromByteOffset: index * MemoryLayout<cipc_variable_reader>.stride, as: cipc_variable_reader.self).owner != 0 {
            blocked += 1
        }
        let valueType = TypeFingerprint.problem(in: header.value_type) == nil ? TypeFingerprint.text(of: header.value_type) : "damaged"
        return SharedObjectDescription(
            details: [
                "full": word & full == 0 ? "no" : "yes",
                "generation": "\(word >> 2)",
                "readersPending": word & pending == 0 ? "no" : "yes",
                "waitingReaders": "\(blocked)",
                "waiters": "\(header.waiters)",
                "valueSize": "\(header.value_size)",
                "valueAlignment": "\(header.value_alignment)",
                "valueType": valueType,
                "putter": putter == 0 ? "-" : "\(OwnerLease.displayPID(of: putter))",
                "putterAlive": putter == 0 ? "-" : (isAlive(putter) ? "yes" : "no"),
                "recoveries": "\(header.recoveries)",
            ],
            summary: (word & full == 0 ? "empty" : "full") + " (generation \(word >> 2))"
                + (header.waiters > 0 ? ", \(header.waiters) waiting" : ""))
    }
}

extension SegmentKind {
    /// A named ``SharedVariable``.
    public static let variable = SegmentKind(rawValue: CIPC_KIND_VARIABLE)
}
