import CInterprocess
import InterprocessSystem
import Synchronization

/// A slot that this process claimed for one send (state WRITING) or one receive (state READING),
/// between the claim and ``MessageQueueCore/publish(_:priority:bytes:)`` or
/// ``MessageQueueCore/finishReceive(_:_:)``.
@usableFromInline
struct MessageQueueClaim {
    let index: Int
    let slot: UnsafeMutableRawPointer
    /// For a receive: the message's priority.
    @usableFromInline let priority: UInt32
    /// Whether, right after this claim (under the lock), more was left of what it took: another
    /// message ready (a receive), another slot free (a send). A claim that came out of a park passes
    /// its wake-up on only then (see "Waking" in ``MessageQueueCore``).
    var more = false
}

/// The protocol of a ``MessageQueue`` on its shared memory: slots whose own `state` is the truth,
/// a binary heap of the ready slots and a stack of the free ones as caches, all changed under a
/// robust lock word; bytes are copied outside the lock. It moves bytes; what they mean is
/// ``MessageQueue``'s business, and where the memory comes from is ``SharedObjectStorage``'s.
///
/// The layout and the states are `cipc_mqueue` in `CInterprocessMessageQueue.h`; the steps, and what
/// a process killed at each leaves behind, are documented on ``MessageQueue``.
///
/// **The lock** is the robust lock of ``ProcessMutex`` on a word of the queue: the holder's owner
/// token (vouched for by a kernel lock that dies with the process), bit 31 *contended*, waiters
/// parked on its low half through ``WaitSite``, a dead holder taken over after a liveness check. It
/// is not a `ProcessMutex` instance (which owns a segment of its own) but the same protocol on the
/// queue's word. Whoever takes it from a dead holder rebuilds the caches from the slot states
/// (``rebuild(reason:)``), so there is nothing like an undo journal: a half-done change of the caches
/// is simply recomputed.
///
/// **Never trusting a peer.** Counts are checked against the capacity, every index read from the
/// heap or the stack is checked against the capacity and against the state of the slot it names, a
/// length against the slot size, a state against the four states. A cache that does not fit the
/// slots is rebuilt from them (safe: the slots are the truth); a slot in no valid state makes the
/// operation throw `corrupt`. Nothing read is used as an unchecked index or length.
///
/// `@unchecked Sendable`: the pointers point into a mapping that `storage` keeps alive; shared words
/// are atomics or touched only under the lock; the rest is immutable.
@usableFromInline
final class MessageQueueCore: @unchecked Sendable {
    let name: String?
    let capacity: Int
    @usableFromInline let maxMessageSize: Int
    let stride: Int

    private let slots: UnsafeMutableRawPointer
    private let ready: UnsafeMutablePointer<UInt32>
    private let free: UnsafeMutablePointer<UInt32>
    private let lockWord: UnsafeMutablePointer<Atomic<UInt64>>
    private let lockLow: UnsafeMutableRawPointer
    private let lockWaiters: UnsafeMutableRawPointer
    private let closedWord: UnsafeMutablePointer<Atomic<UInt32>>
    private let nextSequence: UnsafeMutablePointer<Atomic<UInt64>>
    private let readyCount: UnsafeMutablePointer<Atomic<UInt32>>
    private let freeCount: UnsafeMutablePointer<Atomic<UInt32>>
    private let sentCount: UnsafeMutablePointer<Atomic<UInt64>>
    private let receivedCount: UnsafeMutablePointer<Atomic<UInt64>>
    private let topPriority: UnsafeMutablePointer<Atomic<UInt32>>
    private let receiveSignal: UnsafeMutableRawPointer
    private let receiversWaiting: UnsafeMutableRawPointer
    private let sendSignal: UnsafeMutableRawPointer
    private let sendersWaiting: UnsafeMutableRawPointer
    private let rebuilds: UnsafeMutablePointer<Atomic<UInt64>>
    private let abandonedSends: UnsafeMutablePointer<Atomic<UInt64>>
    private let redeliveries: UnsafeMutablePointer<Atomic<UInt64>>
    private let droppedMessages: UnsafeMutablePointer<Atomic<UInt64>>

    /// `descriptors_armed` (readiness descriptors waiting for a message) and the table they are in
    /// (nil: a queue created without one); see ``ChannelParticipants``.
    private let descriptorsArmed: UnsafeMutablePointer<Atomic<UInt64>>
    let participants: ChannelParticipants?
    /// The roles this handle has acted in and recorded in the table (process-local).
    private let recordedRoles = Atomic<UInt32>(0)

    /// This process's identity in the file, and the descriptor that checks others'.
    private let lease: OwnerLease
    /// This process's token.
    private let me: UInt64
    /// Keeps the memory mapped.
    private let storage: SharedObjectStorage

    static let contended: UInt64 = OwnerLease.flagBit
    static let dataOffset = Int(CIPC_MQUEUE_SLOT_HEADER_SIZE)
    /// How often a waiting sender or receiver looks for slots of processes that died: 50 ms. The
    /// environment variable `INTERPROCESS_MQUEUE_RECOVERY_MS` sets another interval (read once); the
    /// tests set a long one in their children, so that a lost wake-up, which this periodic look
    /// would otherwise turn into a delay of one interval, makes a wait run into its timeout.
    static let recoveryInterval: UInt64 = LocalPath.environment("INTERPROCESS_MQUEUE_RECOVERY_MS")
        .flatMap { UInt64($0) }.map { max(1, min($0, 86_400_000)) &* 1_000_000 } ?? 50_000_000
    /// How often a lock waiter checks the holder's liveness.
    static let lockCheckInterval: UInt64 = 25_000_000

    init(storage: SharedObjectStorage, geometry: MessageQueueGeometry, participants: ChannelParticipants? = nil) {
        guard let lease = storage.lease else { preconditionFailure("a message queue's storage carries a lease") }
        let base = storage.base
        self.storage = storage
        name = storage.name
        capacity = geometry.capacity
        maxMessageSize = geometry.maxMessageSize
        stride = geometry.stride
        slots = base + geometry.slotsOffset
        ready = (base + geometry.readyOffset).assumingMemoryBound(to: UInt32.self)
        free = (base + geometry.freeOffset).assumingMemoryBound(to: UInt32.self)
        lockWord = atomic64(base + fieldOffset(\cipc_mqueue.lock))
        lockLow = base + fieldOffset(\cipc_mqueue.lock) // the lock word's low half (little-endian)
        lockWaiters = base + fieldOffset(\cipc_mqueue.lock_waiters)
        closedWord = atomic32(base + fieldOffset(\cipc_mqueue.closed))
        nextSequence = atomic64(base + fieldOffset(\cipc_mqueue.next_sequence))
        readyCount = atomic32(base + fieldOffset(\cipc_mqueue.ready_count))
        freeCount = atomic32(base + fieldOffset(\cipc_mqueue.free_count))
        sentCount = atomic64(base + fieldOffset(\cipc_mqueue.sent))
        receivedCount = atomic64(base + fieldOffset(\cipc_mqueue.received))
        topPriority = atomic32(base + fieldOffset(\cipc_mqueue.top_priority))
        receiveSignal = base + fieldOffset(\cipc_mqueue.receive_signal)
        receiversWaiting = base + fieldOffset(\cipc_mqueue.receivers_waiting)
        sendSignal = base + fieldOffset(\cipc_mqueue.send_signal)
        sendersWaiting = base + fieldOffset(\cipc_mqueue.senders_waiting)
        rebuilds = atomic64(base + fieldOffset(\cipc_mqueue.rebuilds))
        abandonedSends = atomic64(base + fieldOffset(\cipc_mqueue.abandoned_sends))
        redeliveries = atomic64(base + fieldOffset(\cipc_mqueue.redeliveries))
        droppedMessages = atomic64(base + fieldOffset(\cipc_mqueue.dropped_messages))
        descriptorsArmed = atomic64(base + fieldOffset(\cipc_mqueue.descriptors_armed))
        self.participants = participants
        self.lease = lease
        me = lease.token
    }

    // MARK: Slots

    @inline(__always)
    private func slot(_ index: Int) -> UnsafeMutableRawPointer { slots + index &* stride }
    @inline(__always)
    private func state(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(slot) }
    @inline(__always)
    private func length(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(slot + 4) }
    @inline(__always)
    private func owner(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot + 8) }
    @inline(__always)
    private func sequence(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot + 16) }
    @inline(__always)
    private func priority(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(slot + 24) }

    private static let free = CIPC_MQUEUE_FREE
    private static let writing = CIPC_MQUEUE_WRITING
    private static let readyState = CIPC_MQUEUE_READY
    private static let reading = CIPC_MQUEUE_READING

    // MARK: The lock

    /// Why the caches are rebuilt (for the error a rebuild may throw).
    private enum RebuildReason { case ownerDied, damagedCache, repair }

    /// A cache (heap, stack, a count) does not fit the slots: rebuild and look again.
    private struct Inconsistent: Error {}

    /// An attempt of a lock waiter that spins: takes a free lock without the contended bit.
    private func lockSpinAttempt(_: Bool) -> WaitStep<Bool> {
        let current = lockWord.pointee.load(ordering: .relaxed)
        if current == 0 {
            return lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged ? .done(false) : .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    /// An attempt of a lock waiter that parks (``ProcessMutex``'s protocol): takes a free lock with
    /// the contended bit, takes a dead holder's lock over when a check is due (`.done(true)`: the
    /// caller rebuilds), else marks the word contended and parks on its low half.
    private func lockAttempt(_ checkOwner: Bool) -> WaitStep<Bool> {
        var current = lockWord.pointee.load(ordering: .relaxed)
        if current == 0 {
            return lockWord.pointee.compareExchange(expected: 0, desired: me | Self.contended, ordering: .acquiring).exchanged ? .done(false) : .retry
        }
        if checkOwner && !lease.isAlive(current) {
            return takeOver(from: current) ? .done(true) : .retry
        }
        if current & Self.contended == 0 {
            guard lockWord.pointee.compareExchange(expected: current, desired: current | Self.contended, ordering: .relaxed).exchanged else {
                return .retry
            }
            current |= Self.contended
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    private func takeOver(from dead: UInt64) -> Bool {
        lockWord.pointee.compareExchange(expected: dead, desired: me | (dead & Self.contended), ordering: .acquiring).exchanged
    }

    private var lockSite: WaitSite { WaitSite(word: lockLow, waiters: lockWaiters, name: name, recheckEvery: Self.lockCheckInterval) }

    /// Takes the lock without waiting for a live holder: nil if one holds it. A dead holder's lock
    /// is taken over (one liveness check) and the caches rebuilt.
    private func tryLock() throws(InterprocessError) -> Bool {
        let current = lockWord.pointee.load(ordering: .relaxed)
        if current == 0 {
            if lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return true }
        }
        // The lock is held for a few dozen memory operations: a short spin is worth it.
        for _ in 0..<64 {
            HotPath.pause()
            if lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return true }
        }
        let holder = lockWord.pointee.load(ordering: .relaxed)
        if holder != 0, !lease.isAlive(holder), takeOver(from: holder) {
            try rebuildHolding(.ownerDied)
            return true
        }
        return false
    }

    @available(*, noasync)
    private func blockingLock(_ deadline: Deadline) throws(InterprocessError) {
        if lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return }
        if try lockSite.blockingWait(until: deadline, whileSpinning: lockSpinAttempt, lockAttempt) {
            try rebuildHolding(.ownerDied)
        }
    }

    private func asyncLock(_ deadline: Deadline) async throws(InterprocessError) {
        if lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return }
        if try await lockSite.asyncWait(until: deadline, whileSpinning: lockSpinAttempt, lockAttempt) {
            try rebuildHolding(.ownerDied)
        }
    }

    private func unlock() {
        if lockWord.pointee.exchange(0, ordering: .releasing) & Self.contended != 0 {
            Futex.wake(lockLow, count: 1)
        }
    }

    /// Rebuilds holding the lock; releases it if the rebuild throws.
    private func rebuildHolding(_ reason: RebuildReason) throws(InterprocessError) {
        do throws(InterprocessError) {
            try rebuild(reason: reason)
        } catch {
            unlock()
            throw error
        }
    }

    // MARK: Rebuilding from the slots

    /// Recomputes the heap, the free stack, the counts and the next sequence number from the slot
    /// states, and repairs the slots of processes that died: WRITING → FREE (not sent), READING →
    /// READY (redelivered). Holding the lock. Throws `corrupt` for a slot in no valid state (the
    /// caches are then left as they are). Returns how many slots it repaired.
    @discardableResult
    private func rebuild(reason: RebuildReason) throws(InterprocessError) -> Int {
        var readyEntries = 0
        var freeEntries = 0
        var repaired = 0
        var highest: UInt64 = 0
        var seenReady = false
        for index in 0..<capacity {
            let slot = slot(index)
            var current = state(slot).pointee.load(ordering: .relaxed)
            if current == Self.writing || current == Self.reading {
                let holder = owner(slot).pointee.load(ordering: .relaxed)
                if !lease.isAlive(holder) {
                    HotPath.crashPoint("mqueue.repair.beforeState")
                    if current == Self.writing {
                        state(slot).pointee.store(Self.free, ordering: .relaxed)
                        abandonedSends.pointee.wrappingAdd(1, ordering: .relaxed)
                        current = Self.free
                    } else {
                        state(slot).pointee.store(Self.readyState, ordering: .relaxed)
                        redeliveries.pointee.wrappingAdd(1, ordering: .relaxed)
                        current = Self.readyState
                    }
                    owner(slot).pointee.store(0, ordering: .relaxed)
                    repaired += 1
                }
            }
            switch current {
            case Self.free:
                free[freeEntries] = UInt32(index)
                freeEntries += 1
            case Self.readyState:
                ready[readyEntries] = UInt32(index)
                readyEntries += 1
                let number = sequence(slot).pointee.load(ordering: .relaxed)
                if !seenReady || number > highest { highest = number }
                seenReady = true
            case Self.writing, Self.reading:
                break
            default:
                throw InterprocessError(.corrupt, objectName: name, detail: "slot \(index) is in state \(current), which no step of the protocol leaves")
            }
        }
        // Heapify: every entry is a checked index of a READY slot.
        if readyEntries > 1 {
            var node = readyEntries / 2
            while node > 0 {
                node -= 1
                // Cannot fail: every entry was just written as a slot index.
                try? siftDown(node, count: readyEntries)
            }
        }
        readyCount.pointee.store(UInt32(readyEntries), ordering: .relaxed)
        freeCount.pointee.store(UInt32(freeEntries), ordering: .relaxed)
        noteTop(count: readyEntries)
        if seenReady && nextSequence.pointee.load(ordering: .relaxed) <= highest {
            nextSequence.pointee.store(highest &+ 1, ordering: .relaxed)
        }
        if reason != .repair || repaired > 0 {
            rebuilds.pointee.wrappingAdd(1, ordering: .relaxed)
        }
        return repaired
    }

    /// Whether a slot of a process that died is WRITING or READING (holding the lock). A scan with
    /// a liveness check per slot in flight.
    private func hasDeadClaims() -> Bool {
        let inFlight = capacity - Int(readyCount.pointee.load(ordering: .relaxed)) - Int(freeCount.pointee.load(ordering: .relaxed))
        guard inFlight != 0 else { return false }
        for index in 0..<capacity {
            let slot = slot(index)
            let current = state(slot).pointee.load(ordering: .relaxed)
            if (current == Self.writing || current == Self.reading) && !lease.isAlive(owner(slot).pointee.load(ordering: .relaxed)) {
                return true
            }
        }
        return false
    }

    /// Whether a live sender is writing a message (holding the lock; a scan).
    private func hasWriters() -> Bool {
        for index in 0..<capacity where state(slot(index)).pointee.load(ordering: .relaxed) == Self.writing { return true }
        return false
    }

    // MARK: The heap (holding the lock)

    /// The checked slot index of heap entry `position`; throws ``Inconsistent`` for an entry that
    /// is no slot.
    @inline(__always)
    private func entry(_ position: Int) throws(Inconsistent) -> Int {
        let index = Int(ready[position])
        guard index < capacity else { throw Inconsistent() }
        return index
    }

    /// Whether the message in slot `a` leaves before the one in slot `b`: higher priority first,
    /// then lower sequence number.
    @inline(__always)
    private func before(_ a: Int, _ b: Int) -> Bool {
        let pa = priority(slot(a)).pointee.load(ordering: .relaxed)
        let pb = priority(slot(b)).pointee.load(ordering: .relaxed)
        if pa != pb { return pa > pb }
        return sequence(slot(a)).pointee.load(ordering: .relaxed) < sequence(slot(b)).pointee.load(ordering: .relaxed)
    }

    /// Sifts entry `start` down among the first `count`; every entry it follows is checked
    /// (``Inconsistent``: the heap is left half-sifted, and rebuilt).
    private func siftDown(_ start: Int, count: Int) throws(Inconsistent) {
        var position = start
        while true {
            let left = 2 * position + 1
            guard left < count else { return }
            var best = left
            let right = left + 1
            if right < count, before(try entry(right), try entry(left)) { best = right }
            guard before(try entry(best), try entry(position)) else { return }
            swapEntries(position, best)
            position = best
        }
    }

    @inline(__always)
    private func swapEntries(_ a: Int, _ b: Int) {
        let entry = ready[a]
        ready[a] = ready[b]
        ready[b] = entry
    }

    /// Pushes slot `index` on the heap of `count` entries (fewer than the capacity: checked by the
    /// caller); every entry it follows is checked.
    private func push(_ index: Int, count: Int) throws(Inconsistent) {
        var position = count
        ready[position] = UInt32(index)
        while position > 0 {
            let parent = (position - 1) / 2
            guard before(try entry(position), try entry(parent)) else { break }
            swapEntries(position, parent)
            position = parent
        }
        readyCount.pointee.store(UInt32(count + 1), ordering: .relaxed)
        noteTop(count: count + 1)
    }

    /// Records the priority of the heap's top (for `ipc inspect`), whose entry is checked.
    @inline(__always)
    private func noteTop(count: Int) {
        guard count > 0, Int(ready[0]) < capacity else { return }
        topPriority.pointee.store(priority(slot(Int(ready[0]))).pointee.load(ordering: .relaxed), ordering: .relaxed)
    }

    /// The counts, checked: each within the capacity, together too.
    private func counts() throws(Inconsistent) -> (ready: Int, free: Int) {
        let readyEntries = Int(readyCount.pointee.load(ordering: .relaxed))
        let freeEntries = Int(freeCount.pointee.load(ordering: .relaxed))
        guard readyEntries <= capacity, freeEntries <= capacity, readyEntries + freeEntries <= capacity else { throw Inconsistent() }
        return (readyEntries, freeEntries)
    }

    // MARK: Claiming (holding the lock)

    /// What one attempt under the lock found.
    private enum Outcome {
        case claimed(MessageQueueClaim)
        /// Nothing to take (or no room): wait for the side's signal.
        case wait
    }

    /// Runs `body` holding the lock (taken by `lock`), rebuilding the caches and running it again
    /// when it finds them inconsistent; releases the lock.
    ///
    /// `body` throws ``Inconsistent`` or an `InterprocessError` (nothing else).
    @inline(__always)
    private func underLock<R>(_ body: () throws -> R?) throws(InterprocessError) -> R? {
        defer { unlock() }
        for _ in 0..<2 {
            do {
                return try body()
            } catch let error as InterprocessError {
                throw error
            } catch {
                try rebuild(reason: .damagedCache)
            }
        }
        throw InterprocessError(.corrupt, objectName: name, detail: "the ready heap or free stack stays inconsistent after a rebuild")
    }

    /// Under the lock: claims a free slot for a send, or nil if there is none. Throws `closed` once
    /// the queue is closed. `repair`: look for dead processes' slots first.
    private func claimFree(repair: Bool) throws(InterprocessError) -> MessageQueueClaim? {
        try underLock { () throws -> MessageQueueClaim? in
            if closedWord.pointee.load(ordering: .relaxed) != 0 { throw closedError() }
            if repair, hasDeadClaims() { try repairHolding() }
            let (_, freeEntries) = try counts()
            guard freeEntries > 0 else { return nil }
            let index = Int(free[freeEntries - 1])
            guard index < capacity else { throw Inconsistent() }
            let slot = slot(index)
            guard state(slot).pointee.load(ordering: .relaxed) == Self.free else { throw Inconsistent() }
            owner(slot).pointee.store(me, ordering: .relaxed)
            state(slot).pointee.store(Self.writing, ordering: .relaxed)
            HotPath.crashPoint("mqueue.send.lockedClaim")
            freeCount.pointee.store(UInt32(freeEntries - 1), ordering: .relaxed)
            return MessageQueueClaim(index: index, slot: slot, priority: 0, more: freeEntries > 1)
        }
    }

    /// Under the lock: claims the first message (highest priority, oldest) for a receive, or nil
    /// if there is none. Throws `closed` when the queue is closed, empty and nobody is writing.
    private func claimReady(repair: Bool) throws(InterprocessError) -> MessageQueueClaim? {
        try underLock { () throws -> MessageQueueClaim? in
            if repair, hasDeadClaims() { try repairHolding() }
            let (readyEntries, _) = try counts()
            guard readyEntries > 0 else {
                guard closedWord.pointee.load(ordering: .relaxed) != 0 else { return nil }
                // Closed: the end, unless a live sender is still writing (a dead one's slot is
                // freed, a dead receiver's message made ready again).
                if hasDeadClaims() { try repairHolding() }
                if try counts().ready > 0 { return try popReady() }
                if hasWriters() { return nil }
                throw closedError()
            }
            return try popReady()
        }
    }

    /// Pops the heap's top and marks its slot READING (holding the lock; counts checked).
    private func popReady() throws -> MessageQueueClaim {
        let readyEntries = try counts().ready
        let index = try entry(0)
        let slot = slot(index)
        guard state(slot).pointee.load(ordering: .relaxed) == Self.readyState else { throw Inconsistent() }
        let last = readyEntries - 1
        ready[0] = ready[last]
        try siftDown(0, count: last)
        owner(slot).pointee.store(me, ordering: .relaxed)
        state(slot).pointee.store(Self.reading, ordering: .relaxed)
        HotPath.crashPoint("mqueue.receive.lockedClaim")
        readyCount.pointee.store(UInt32(last), ordering: .relaxed)
        noteTop(count: last)
        return MessageQueueClaim(index: index, slot: slot, priority: priority(slot).pointee.load(ordering: .relaxed), more: last > 0)
    }

    /// Repairs dead processes' slots (holding the lock), waking everyone if it did.
    private func repairHolding() throws(InterprocessError) {
        if try rebuild(reason: .repair) > 0 {
            bump(receiveSignal, wakeAll: true, waiters: receiversWaiting)
            bump(sendSignal, wakeAll: true, waiters: sendersWaiting)
        }
    }

    // MARK: Sending

    /// Claims a slot for a send without waiting: nil if the queue is full (after repairing slots of
    /// processes that died, if any are in flight) or a live process holds the lock.
    @usableFromInline
    func tryClaimForSending() throws(InterprocessError) -> MessageQueueClaim? {
        guard try tryLock() else { return nil }
        if let claim = try claimFree(repair: false) { return claim }
        guard try tryLock() else { return nil }
        return try claimFree(repair: true)
    }

    /// Claims a slot for a send, blocking while the queue is full, until `deadline`.
    @available(*, noasync)
    @usableFromInline
    func blockingClaimToSend(timeout: Duration?) throws(InterprocessError) -> MessageQueueClaim {
        let deadline = Deadline(after: timeout)
        // nil until the first failure, which looks for dead processes' slots before it parks.
        var nextRepair: Deadline?
        // Whether this call parked: only then does its claim pass the wake-up on ("Waking"), and
        // so does its leaving without one (timed out, cancelled, closed).
        var woken = false
        var claimed = false
        defer { if woken && !claimed { passOnWake(sendSignal, waiters: sendersWaiting) } }
        while true {
            let observed = atomic32(sendSignal).pointee.load(ordering: .sequentiallyConsistent)
            try blockingLock(deadline)
            let repair = nextRepair?.hasPassed ?? false
            if repair { nextRepair = Deadline.after(nanoseconds: Self.recoveryInterval) }
            if let claim = try claimFree(repair: repair) {
                claimed = true
                if woken && claim.more { passOnWake(sendSignal, waiters: sendersWaiting) }
                return claim
            }
            guard let due = nextRepair else {
                nextRepair = Deadline.now
                continue
            }
            try blockingPark(on: sendSignal, waiters: sendersWaiting, observed: observed, deadline: deadline, nextRepair: due)
            woken = true
        }
    }

    /// Claims a slot for a send, suspending the task while the queue is full, until `deadline`;
    /// `cancelled` (having claimed nothing) if the task is cancelled.
    @usableFromInline
    func claimToSend(timeout: Duration?) async throws(InterprocessError) -> MessageQueueClaim {
        let deadline = Deadline(after: timeout)
        // nil until the first failure, which looks for dead processes' slots before it parks.
        var nextRepair: Deadline?
        // Whether this call parked: only then does its claim pass the wake-up on ("Waking"), and
        // so does its leaving without one (timed out, cancelled, closed).
        var woken = false
        var claimed = false
        defer { if woken && !claimed { passOnWake(sendSignal, waiters: sendersWaiting) } }
        while true {
            if Task.isCancelled { throw cancelledError() }
            let observed = atomic32(sendSignal).pointee.load(ordering: .sequentiallyConsistent)
            try await asyncLock(deadline)
            let repair = nextRepair?.hasPassed ?? false
            if repair { nextRepair = Deadline.after(nanoseconds: Self.recoveryInterval) }
            if let claim = try claimFree(repair: repair) {
                claimed = true
                if woken && claim.more { passOnWake(sendSignal, waiters: sendersWaiting) }
                return claim
            }
            guard let due = nextRepair else {
                nextRepair = Deadline.now
                continue
            }
            try await asyncPark(on: sendSignal, waiters: sendersWaiting, observed: observed, deadline: deadline, nextRepair: due)
            woken = true
        }
    }

    /// Copies `bytes` (at most ``maxMessageSize``: the caller checked) into the claimed slot, then
    /// publishes it under the lock with `priority` and, if the queue was empty, wakes a parked
    /// receiver if there is one ("Waking").
    /// Throws `corrupt` if the slot was taken from us meanwhile (a peer scribbled it).
    @usableFromInline
    func publish(_ claim: MessageQueueClaim, priority messagePriority: UInt32, bytes: UnsafeRawBufferPointer) throws(InterprocessError) {
        let slot = claim.slot
        HotPath.crashPoint("mqueue.send.afterClaim")
        length(slot).pointee.store(UInt32(bytes.count), ordering: .relaxed)
        if let source = bytes.baseAddress, bytes.count > 0 {
            (slot + Self.dataOffset).copyMemory(from: source, byteCount: bytes.count)
        }
        HotPath.crashPoint("mqueue.send.afterWrite")
        lockForFinishing()
        let wasEmpty = try underLock { () throws -> Bool? in
            guard state(slot).pointee.load(ordering: .relaxed) == Self.writing, owner(slot).pointee.load(ordering: .relaxed) == me else {
                throw InterprocessError(.corrupt, objectName: name, detail: "slot \(claim.index) was taken from its sender (message lost)")
            }
            let (readyEntries, freeEntries) = try counts()
            // Our slot is counted in neither: a full count is a damaged one.
            guard readyEntries + freeEntries < capacity else { throw Inconsistent() }
            let number = nextSequence.pointee.load(ordering: .relaxed)
            nextSequence.pointee.store(number &+ 1, ordering: .relaxed)
            sequence(slot).pointee.store(number, ordering: .relaxed)
            priority(slot).pointee.store(messagePriority, ordering: .relaxed)
            owner(slot).pointee.store(0, ordering: .relaxed)
            // The step that sends it: READY is what a rebuild finds.
            state(slot).pointee.store(Self.readyState, ordering: .relaxed)
            HotPath.crashPoint("mqueue.send.lockedPublish")
            try push(claim.index, count: readyEntries)
            sentCount.pointee.wrappingAdd(1, ordering: .relaxed)
            return readyEntries == 0
        }
        // A receiver parks only on an empty queue: the message that ends the emptiness wakes one
        // ("Waking"); one published behind others wakes nobody.
        if wasEmpty == true { bump(receiveSignal, wakeAll: false, waiters: receiversWaiting) }
        // Readiness descriptors (one load while there are none; ``ChannelParticipants``). The
        // message was published under the lock, which a receiver takes after it armed its bit.
        if descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 { participants?.poke() }
        if recordedRoles.load(ordering: .relaxed) & ChannelParticipants.senderRole == 0 { record(ChannelParticipants.senderRole) }
    }

    /// Takes the lock to finish a claim: nothing can time out or be cancelled here (what we claimed
    /// must be published or released), so it waits as long as a live holder holds it.
    private func lockForFinishing() {
        while true {
            do throws(InterprocessError) {
                if lockWord.pointee.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return }
                if try lockSite.blockingWait(until: .never, whileSpinning: lockSpinAttempt, lockAttempt) {
                    // Taken from a dead holder: the caches are rebuilt by `underLock` if they do not
                    // fit; rebuild now to repair what the holder left.
                    try rebuild(reason: .ownerDied)
                }
                return
            } catch {
                // A rebuild that found a damaged slot: the lock is ours, `underLock` reports it.
                if lockWord.pointee.load(ordering: .relaxed) & ~Self.contended == me { return }
                // The wait itself failed (a waiter count a peer scribbled): take a dead holder's
                // lock over without it, else yield until the live holder lets go.
                let holder = lockWord.pointee.load(ordering: .relaxed)
                if holder != 0, !lease.isAlive(holder), takeOver(from: holder) {
                    _ = try? rebuild(reason: .ownerDied)
                    return
                }
                SpinPolicy.yield()
            }
        }
    }

    // MARK: Receiving

    /// Claims the first message without waiting: nil if there is none (after repairing slots of
    /// processes that died, if any are in flight) or a live process holds the lock. Throws `closed`
    /// when the queue is closed and drained.
    @usableFromInline
    func tryClaimForReceiving() throws(InterprocessError) -> MessageQueueClaim? {
        guard try tryLock() else { return nil }
        if let claim = try claimReady(repair: false) { return claim }
        guard try tryLock() else { return nil }
        return try claimReady(repair: true)
    }

    /// Claims the first message, blocking while the queue is empty, until `timeout`.
    @available(*, noasync)
    @usableFromInline
    func blockingClaimToReceive(timeout: Duration?) throws(InterprocessError) -> MessageQueueClaim {
        let deadline = Deadline(after: timeout)
        // nil until the first failure, which looks for dead processes' slots before it parks.
        var nextRepair: Deadline?
        // Whether this call parked: only then does its claim pass the wake-up on ("Waking"), and
        // so does its leaving without one (timed out, cancelled, closed).
        var woken = false
        var claimed = false
        defer { if woken && !claimed { passOnWake(receiveSignal, waiters: receiversWaiting) } }
        while true {
            let observed = atomic32(receiveSignal).pointee.load(ordering: .sequentiallyConsistent)
            try blockingLock(deadline)
            let repair = nextRepair?.hasPassed ?? false
            if repair { nextRepair = Deadline.after(nanoseconds: Self.recoveryInterval) }
            if let claim = try claimReady(repair: repair) {
                claimed = true
                if woken && claim.more { passOnWake(receiveSignal, waiters: receiversWaiting) }
                return claim
            }
            guard let due = nextRepair else {
                nextRepair = Deadline.now
                continue
            }
            try blockingPark(on: receiveSignal, waiters: receiversWaiting, observed: observed, deadline: deadline, nextRepair: due)
            woken = true
        }
    }

    /// Claims the first message, suspending the task while the queue is empty, until `timeout`;
    /// `cancelled` (having claimed nothing) if the task is cancelled.
    @usableFromInline
    func claimToReceive(timeout: Duration?) async throws(InterprocessError) -> MessageQueueClaim {
        let deadline = Deadline(after: timeout)
        // nil until the first failure, which looks for dead processes' slots before it parks.
        var nextRepair: Deadline?
        // Whether this call parked: only then does its claim pass the wake-up on ("Waking"), and
        // so does its leaving without one (timed out, cancelled, closed).
        var woken = false
        var claimed = false
        defer { if woken && !claimed { passOnWake(receiveSignal, waiters: receiversWaiting) } }
        while true {
            if Task.isCancelled { throw cancelledError() }
            let observed = atomic32(receiveSignal).pointee.load(ordering: .sequentiallyConsistent)
            try await asyncLock(deadline)
            let repair = nextRepair?.hasPassed ?? false
            if repair { nextRepair = Deadline.after(nanoseconds: Self.recoveryInterval) }
            if let claim = try claimReady(repair: repair) {
                claimed = true
                if woken && claim.more { passOnWake(receiveSignal, waiters: receiversWaiting) }
                return claim
            }
            guard let due = nextRepair else {
                nextRepair = Deadline.now
                continue
            }
            try await asyncPark(on: receiveSignal, waiters: receiversWaiting, observed: observed, deadline: deadline, nextRepair: due)
            woken = true
        }
    }

    /// Copies the claimed message out through `body` (which must not keep the buffer), then frees
    /// the slot under the lock and, if the queue was full, wakes a parked sender if there is one
    /// ("Waking"). A length longer than a slot (a peer scribbled it) drops the message (`corrupt`).
    @usableFromInline
    func finishReceive(_ claim: MessageQueueClaim, _ body: (UnsafeRawBufferPointer) throws(InterprocessError) -> Void) throws(InterprocessError) {
        let slot = claim.slot
        HotPath.crashPoint("mqueue.receive.afterClaim")
        let count = Int(length(slot).pointee.load(ordering: .relaxed))
        var failure: InterprocessError?
        if count <= maxMessageSize {
            do throws(InterprocessError) {
                try body(UnsafeRawBufferPointer(start: slot + Self.dataOffset, count: count))
            } catch {
                failure = error
            }
        } else {
            droppedMessages.pointee.wrappingAdd(1, ordering: .relaxed)
            failure = InterprocessError(.corrupt, objectName: name,
                detail: "slot \(claim.index) holds a message of \(count) bytes in \(maxMessageSize)-byte slots (dropped)")
        }
        HotPath.crashPoint("mqueue.receive.afterCopy")
        lockForFinishing()
        let wasFull = try underLock { () throws -> Bool? in
            guard state(slot).pointee.load(ordering: .relaxed) == Self.reading, owner(slot).pointee.load(ordering: .relaxed) == me else {
                throw InterprocessError(.corrupt, objectName: name, detail: "slot \(claim.index) was taken from its receiver")
            }
            let (readyEntries, freeEntries) = try counts()
            guard readyEntries + freeEntries < capacity else { throw Inconsistent() }
            owner(slot).pointee.store(0, ordering: .relaxed)
            state(slot).pointee.store(Self.free, ordering: .relaxed)
            HotPath.crashPoint("mqueue.receive.lockedRelease")
            free[freeEntries] = UInt32(claim.index)
            freeCount.pointee.store(UInt32(freeEntries + 1), ordering: .relaxed)
            receivedCount.pointee.wrappingAdd(1, ordering: .relaxed)
            return freeEntries == 0
        }
        // A sender parks only on a full queue: the slot that ends the fullness wakes one ("Waking").
        if wasFull == true { bump(sendSignal, wakeAll: false, waiters: sendersWaiting) }
        if recordedRoles.load(ordering: .relaxed) & ChannelParticipants.receiverRole == 0 { record(ChannelParticipants.receiverRole) }
        if let failure { throw failure }
    }

    // MARK: Waiting for a signal

    // Waking. A receiver parks only after it found the queue empty under the lock (having read the
    // receive signal before it took the lock), and a sender only after it found no free slot. So a
    // publish wakes a parked receiver only when it ends the emptiness (the heap had no entry before
    // its push), a release wakes a parked sender only when it ends the fullness (the free stack had
    // none), and a claim that came out of a park (`woken`) passes the wake-up on — bumps the signal
    // and wakes one more if one is counted — when it left more behind (`MessageQueueClaim.more`:
    // another message ready, another slot free), as does such a call that leaves without a claim
    // (timed out, cancelled, closed: the `defer` in the four waiting loops; a failed park passes on
    // by itself). Why no wake-up is lost (receivers; senders likewise with free slots for messages):
    // let R be parked — asleep in the kernel — while a message is ready and nothing else happens.
    // R found the queue empty under the lock at some time t; let P be the last publish that found
    // the heap empty (the queue is not empty now, so there is one after t, and the queue has not
    // been empty since P). P bumped the signal after t, so R, asleep, checked the signal before that
    // bump: R counted itself (sequentially consistent) before P loaded the count (sequentially
    // consistent, after its bump), P saw a waiter and woke one sleeper — not R, so another receiver
    // W1, which is now `woken`. W1 takes the lock after P: the queue has not been empty since, so W1
    // claims a message; the queue is still not empty after it (it is not empty now and no publish
    // after P found it empty), so W1 passes the wake-up on, sees R still counted and wakes one more
    // sleeper W2 ≠ R, and so on; each woken receiver takes a message or leaves passing the wake-up
    // on, and the sleepers other than R are finitely many: the chain reaches R (a contradiction) or
    // empties the queue (a contradiction). A receiver that never parked passes nothing on, and needs
    // not: it took a message no sleeper was woken for, or one whose woken receiver then finds the
    // next. A woken process killed before it claims takes its wake-up with it: the others find the
    // message at their next periodic look (``recoveryInterval``), as they find slots of the dead.
    // A waiter's repair and `close()` wake everyone; what a rebuild after a dead lock holder frees is
    // found by the same periodic look (as before). Before this, every publish made a futex
    // system call while any receiver was counted — and a woken receiver stays counted until it runs:
    // with 4 producer processes and one consumer on 2 CPUs, 1.7 futex calls per message.

    /// Parks until `signal` differs from `observed` (a publish or release since we looked), the
    /// next repair is due, or `deadline` (`timedOut`). Counted in `waiters` while parked.
    @available(*, noasync)
    private func blockingPark(
        on signal: UnsafeMutableRawPointer, waiters: UnsafeMutableRawPointer, observed: UInt32, deadline: Deadline, nextRepair: Deadline
    ) throws(InterprocessError) {
        do throws(InterprocessError) {
            try WaitSite(word: signal, waiters: waiters, name: name).blockingWait(until: min(deadline, nextRepair)) { _ in
                atomic32(signal).pointee.load(ordering: .sequentiallyConsistent) != observed ? .done(()) : .park(expected: observed)
            }
        } catch where error.code == .timedOut && !deadline.hasPassed {
            return // a repair is due
        } catch {
            passOnWake(signal, waiters: waiters)
            throw error
        }
    }

    /// The `async` form of ``blockingPark(on:waiters:observed:deadline:nextRepair:)``: `cancelled`
    /// when the task is cancelled.
    private func asyncPark(
        on signal: UnsafeMutableRawPointer, waiters: UnsafeMutableRawPointer, observed: UInt32, deadline: Deadline, nextRepair: Deadline
    ) async throws(InterprocessError) {
        do throws(InterprocessError) {
            try await WaitSite(word: signal, waiters: waiters, name: name).asyncWait(until: min(deadline, nextRepair)) { _ in
                atomic32(signal).pointee.load(ordering: .sequentiallyConsistent) != observed ? .done(()) : .park(expected: observed)
            }
        } catch where error.code == .timedOut && !deadline.hasPassed {
            return
        } catch {
            passOnWake(signal, waiters: waiters)
            throw error
        }
    }

    /// A waiter that leaves without a message or a slot (timed out, cancelled) may have been the one
    /// woken for it: passes the wake-up on to another waiter, if one is parked.
    private func passOnWake(_ signal: UnsafeMutableRawPointer, waiters: UnsafeMutableRawPointer) {
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            bump(signal, wakeAll: false, waiters: waiters)
        }
    }

    /// Bumps `signal` (always: a waiter compares it with what it saw before it looked) and wakes one
    /// (or every) parked waiter if `waiters` says one is parked.
    @inline(__always)
    private func bump(_ signal: UnsafeMutableRawPointer, wakeAll: Bool, waiters: UnsafeMutableRawPointer) {
        atomic32(signal).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wake(signal, count: wakeAll ? Int32.max : 1)
        }
    }

    // MARK: Closing and counting

    /// Closes the queue: no send succeeds from now on; receivers take what is in and then see the end.
    func close() {
        closedWord.pointee.store(1, ordering: .sequentiallyConsistent)
        bump(receiveSignal, wakeAll: true, waiters: receiversWaiting)
        bump(sendSignal, wakeAll: true, waiters: sendersWaiting)
        participants?.poke()
    }

    /// Records once per handle that this process acted in `role` (``ChannelParticipants``).
    @inline(never)
    private func record(_ role: UInt32) {
        recordedRoles.bitwiseOr(role, ordering: .relaxed)
        participants?.mark(role)
    }

    var isClosed: Bool { closedWord.pointee.load(ordering: .acquiring) != 0 }

    /// Messages ready to be received (a snapshot).
    var count: Int { min(Int(readyCount.pointee.load(ordering: .acquiring)), capacity) }

    // MARK: Errors

    private func closedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "the message queue was closed")
    }

    private func cancelledError() -> InterprocessError {
        InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled")
    }
}
