import CInterprocess
import InterprocessSystem
public import Synchronization

/// A slot that this process claimed for one send or one receive (its owner word holds our token and
/// the position is ours), between the claim and ``ChannelRing/finishSend(_:_:)`` or
/// ``ChannelRing/finishReceive(_:_:)``.
@usableFromInline
struct ChannelClaim {
    let slot: UnsafeMutableRawPointer
    let position: UInt64
    /// A message whose first receiver died (an orphan), taken again.
    let redelivery: Bool
    /// Claimed by a waiter that parked (and was woken) on the way: a sender that passes the wake-up
    /// on once it published (see "Waking" in ``ChannelRing``).
    var woken = false
    /// Claimed by the holder of the side's exclusive role (``ChannelRing/exclusiveClaimForSending(checkNow:spinning:)``):
    /// no owner word to clear, plain release stores instead of sequentially consistent ones.
    var exclusive = false
}

/// A side of a channel that one process can hold alone (``ChannelRing/takeExclusiveRole(_:)``).
@usableFromInline
enum ChannelRole: Sendable {
    case sender, receiver
}

/// The protocol of a ``Channel`` on its shared memory: a bounded ring of fixed-size slots with a
/// sequence number each (Vyukov's MPMC queue), made safe against processes that die at any
/// instruction. It moves bytes; what the bytes mean is ``Channel``'s business, and where the memory
/// comes from is ``SharedObjectStorage``'s (``ChannelState``).
///
/// The layout is `cipc_channel` in `CInterprocessChannel.h`, which also states the invariants; the
/// steps, and what a process killed at each leaves behind, are documented on ``Channel``.
///
/// A send or receive is two calls: a *claim* (``claimForSending(checkNow:announce:spinning:)``,
/// ``claimForReceiving(checkNow:announce:spinning:)``, or their waiting and `try` forms), which takes
/// the slot's owner word and the position, and a *finish* (``finishSend(_:_:)``,
/// ``finishReceive(_:_:)``), which copies the bytes and publishes or releases the slot. The claim is
/// what may wait, and it is not generic: the wait drivers run it in their spin loops, where a
/// generic attempt (the message type's metadata looked up on every round) made the spin phase
/// several times longer, and the round trip through two channels ~3× slower than a semaphore's.
/// Between the two calls nothing can suspend or fail; a process killed there is a process killed
/// after claiming the position.
///
/// Every number read from the ring is checked before it is used: positions and sequence numbers must
/// fit each other (a slot's sequence names a position of that slot, within one lap of the ring's
/// positions), lengths must fit a slot, owners must be tokens. A value no correct peer writes makes
/// the operation throw `corrupt`; nothing read from the ring is ever used as an unchecked index or
/// length, and counters wrap instead of trapping.
///
/// `@unchecked Sendable`: the pointers point into a mapping that `storage` keeps alive, every shared
/// word is accessed atomically, and the rest is immutable (the scan cursor is an atomic).
@usableFromInline
final class ChannelRing: @unchecked Sendable {
    typealias Layout = cipc_channel

    let name: String?
    /// Validated copies of the fixed fields.
    @usableFromInline let capacity: Int
    @usableFromInline let maxMessageSize: Int
    @usableFromInline let stride: Int
    /// `capacity - 1` when the capacity is a power of 2 (a mask instead of a division), else 0.
    @usableFromInline let mask: UInt64

    @usableFromInline let slots: UnsafeMutableRawPointer
    @usableFromInline let sendPosition: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let receivePosition: UnsafeMutablePointer<Atomic<UInt64>>
    let receiveSignal: UnsafeMutableRawPointer
    let receiversWaiting: UnsafeMutableRawPointer
    let sendSignal: UnsafeMutableRawPointer
    let sendersWaiting: UnsafeMutableRawPointer
    /// `receivers_waiting` and `senders_waiting` as atomics (the exclusive endpoints' inlined paths).
    @usableFromInline let receiversWaitingCount: UnsafeMutablePointer<Atomic<UInt32>>
    @usableFromInline let sendersWaitingCount: UnsafeMutablePointer<Atomic<UInt32>>
    @usableFromInline let orphans: UnsafeMutablePointer<Atomic<UInt32>>
    let abandonedSends: UnsafeMutablePointer<Atomic<UInt64>>
    let orphanedReceives: UnsafeMutablePointer<Atomic<UInt64>>
    let redeliveries: UnsafeMutablePointer<Atomic<UInt64>>
    let clearedClaims: UnsafeMutablePointer<Atomic<UInt64>>
    let droppedMessages: UnsafeMutablePointer<Atomic<UInt64>>
    /// The nonce of the channel's loan heap (0: none recorded yet).
    let loanHeapNonce: UnsafeMutablePointer<Atomic<UInt64>>
    /// `descriptors_armed` (readiness descriptors waiting for a message) and the table they are in
    /// (nil: a ring without one, e.g. a service's request queue); see ``ChannelParticipants``.
    @usableFromInline let descriptorsArmed: UnsafeMutablePointer<Atomic<UInt64>>
    /// The role words (`exclusive_sender`, `exclusive_receiver`) and the exclusive sender's position.
    let exclusiveSender: UnsafeMutablePointer<Atomic<UInt64>>
    let exclusiveReceiver: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let exclusivePosition: UnsafeMutablePointer<Atomic<UInt64>>
    let participants: ChannelParticipants?
    /// The roles this handle has acted in and recorded in the table (process-local).
    let recordedRoles = Atomic<UInt32>(0)
    /// Set by ``Channel/detach()`` on the handle's ring (one ring per handle): its verbs then throw
    /// `closed` (``checkAttached()``).
    @usableFromInline let detached = Atomic<Bool>(false)

    /// This process's identity in the file, and the descriptor that checks others'.
    let lease: OwnerLease
    /// This process's token: what it records in a slot's `owner` while it works on the slot.
    let me: UInt64
    /// Keeps the memory mapped.
    let storage: SharedObjectStorage
    /// Where the next bounded scan of a waiting receiver starts, and when the last one started
    /// (process-local).
    let scanCursor = Atomic<Int>(0)
    let lastScan = Atomic<UInt64>(0)

    static let closedBit: UInt64 = CIPC_CHANNEL_CLOSED
    static let closingBit: UInt64 = CIPC_CHANNEL_CLOSING
    /// The bits of `send_position` that are not the position.
    @usableFromInline static let flagBits: UInt64 = CIPC_CHANNEL_CLOSED | CIPC_CHANNEL_CLOSING
    static let orphan: UInt64 = CIPC_CHANNEL_ORPHAN
    @usableFromInline static let skipped: UInt32 = CIPC_CHANNEL_SKIPPED
    static let loaned: UInt32 = CIPC_CHANNEL_LOANED
    static let contended: UInt64 = CIPC_TOKEN_FLAG
    @usableFromInline static let dataOffset = Int(CIPC_CHANNEL_SLOT_HEADER_SIZE)
    /// How often a parked sender or receiver looks for slots held by processes that died.
    static let recoveryInterval: UInt64 = 50_000_000
    /// The most slots a waiting receiver's periodic check looks at (the end-of-stream check looks at all).
    static let scanChunk = 4096
    /// How many lost races a `try…` form retries before it reports that it would wait.
    static let tryRetries = 10_000

    /// A ring on the validated channel state at `base` (default: the storage's state; a ``Service``
    /// embeds one as its request queue).
    init(
        storage: SharedObjectStorage, base: UnsafeMutableRawPointer? = nil, capacity: Int, maxMessageSize: Int, stride: Int,
        participants: ChannelParticipants? = nil
    ) throws(InterprocessError) {
        guard let lease = storage.lease else { preconditionFailure("a channel's storage carries a lease") }
        let base = base ?? storage.base
        self.storage = storage
        name = storage.name
        self.capacity = capacity
        self.maxMessageSize = maxMessageSize
        self.stride = stride
        mask = capacity.nonzeroBitCount == 1 ? UInt64(capacity - 1) : 0
        slots = base + Int(CIPC_CHANNEL_HEADER_SIZE)
        sendPosition = atomic64(base + fieldOffset(\cipc_channel.send_position))
        receivePosition = atomic64(base + fieldOffset(\cipc_channel.receive_position))
        receiveSignal = base + fieldOffset(\cipc_channel.receive_signal)
        receiversWaiting = base + fieldOffset(\cipc_channel.receivers_waiting)
        sendSignal = base + fieldOffset(\cipc_channel.send_signal)
        sendersWaiting = base + fieldOffset(\cipc_channel.senders_waiting)
        receiversWaitingCount = atomic32(receiversWaiting)
        sendersWaitingCount = atomic32(sendersWaiting)
        orphans = atomic32(base + fieldOffset(\cipc_channel.orphans))
        abandonedSends = atomic64(base + fieldOffset(\cipc_channel.abandoned_sends))
        orphanedReceives = atomic64(base + fieldOffset(\cipc_channel.orphaned_receives))
        redeliveries = atomic64(base + fieldOffset(\cipc_channel.redeliveries))
        clearedClaims = atomic64(base + fieldOffset(\cipc_channel.cleared_claims))
        droppedMessages = atomic64(base + fieldOffset(\cipc_channel.dropped_messages))
        loanHeapNonce = atomic64(base + fieldOffset(\cipc_channel.loan_heap_nonce))
        descriptorsArmed = atomic64(base + fieldOffset(\cipc_channel.descriptors_armed))
        exclusiveSender = atomic64(base + fieldOffset(\cipc_channel.exclusive_sender))
        exclusiveReceiver = atomic64(base + fieldOffset(\cipc_channel.exclusive_receiver))
        exclusivePosition = atomic64(base + fieldOffset(\cipc_channel.exclusive_position))
        self.participants = participants
        self.lease = lease
        me = lease.token
    }

    // MARK: Slots

    /// The slot of `position` (inlinable: the exclusive endpoints' fast paths run in the caller's module).
    @inlinable @inline(__always)
    func slot(at position: UInt64) -> UnsafeMutableRawPointer {
        let index = mask != 0 ? position & mask : position % UInt64(truncatingIfNeeded: capacity)
        return slots + Int(truncatingIfNeeded: index) &* stride
    }

    @inline(__always)
    func index(of slot: UnsafeMutableRawPointer) -> Int { (slot - slots) / stride }

    @inline(__always)
    func sequence(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot) }

    @inline(__always)
    func owner(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot + 8) }

    @inline(__always)
    func length(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(slot + 16) }

    @inline(__always)
    func loan(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot + 24) }

    /// The sequence of a slot free for position `p`, and of one holding its message.
    @usableFromInline @inline(__always) static func free(_ p: UInt64) -> UInt64 { p &* 2 }
    @usableFromInline @inline(__always) static func full(_ p: UInt64) -> UInt64 { p &* 2 &+ 1 }

    /// How far ahead of `from` the position `to` is, if it is within one lap (`0...capacity`).
    @inline(__always)
    func lead(of to: UInt64, over from: UInt64) -> Int? {
        let difference = to &- from
        return difference <= UInt64(capacity) ? Int(difference) : nil
    }

    // MARK: Sending

    /// One attempt to claim the next position for a send: the slot (its owner word) and then the
    /// position. `checkNow`: look whether a process that holds what we wait for died (a system
    /// call); `announce`: mark a slot owner we are about to park behind as contended; `spinning`:
    /// the wait driver's spin phase, which only needs to know whether to try. Not generic and
    /// cheap, because the wait drivers call it in their spin loops; the bytes are written by
    /// ``finishSend(_:_:)``.
    func claimForSending(checkNow: Bool, announce: Bool, spinning: Bool = false, woken: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        if spinning {
            // While a wait driver spins: two loads, and the full attempt only once the slot is free
            // (or the channel closed). The spin phase ignores the expected value.
            let position = sendPosition.pointee.load(ordering: .relaxed)
            if position & Self.flagBits == 0,
               sequence(slot(at: position)).pointee.load(ordering: .relaxed) != Self.free(position)
                || exclusiveSender.pointee.load(ordering: .relaxed) != 0 {
                return .park(expected: 0)
            }
        }
        // Read before looking at the ring (see `blockingWait`): a change after this read is a wake-up.
        let signal = atomic32(sendSignal).pointee.load(ordering: .sequentiallyConsistent)
        let position = sendPosition.pointee.load(ordering: .acquiring)
        if position & Self.flagBits != 0 { throw closedError() }
        // A process holds the sender role alone: wait until it gives it up (or died).
        if exclusiveSender.pointee.load(ordering: .acquiring) != 0 {
            return try waitForRole(.sender, checkNow: checkNow, signal: signal)
        }
        let slot = slot(at: position)
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        let distance = Int64(bitPattern: observed &- Self.free(position))
        if distance == 0 {
            // Free for our position: claim the slot, then the position.
            let holder = owner(slot).pointee.load(ordering: .relaxed)
            if holder != 0 {
                return try waitBehind(
                    holder, of: slot, observed: observed, position: sendPosition, at: position,
                    checkNow: checkNow, announce: announce, signal: signal)
            }
            guard owner(slot).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else {
                return .retry
            }
            HotPath.crashPoint("channel.send.afterOwner")
            // After the owner word, before the position (both sequentially consistent): a process
            // that takes the sender role meanwhile sees our claim and waits for it, or we see the role.
            if exclusiveSender.pointee.load(ordering: .sequentiallyConsistent) != 0 {
                releaseOwner(slot)
                return .retry
            }
            guard sequence(slot).pointee.load(ordering: .acquiring) == observed,
                  sendPosition.pointee.compareExchange(expected: position, desired: position &+ 1, ordering: .sequentiallyConsistent).exchanged
            else {
                // Another sender took the position, or the channel was closed: look again.
                releaseOwner(slot)
                return .retry
            }
            return .done(ChannelClaim(slot: slot, position: position, redelivery: false, woken: woken))
        }
        let lap = 2 * Int64(capacity)
        if distance == -lap || distance == -lap + 1 {
            // The ring is full: the slot still serves the position one lap back (its message is
            // being written, waits for a receiver, or is being received).
            if checkNow, try recoverIfDead(slot) { return .retry }
            if checkNow, try recoverRoleIfDead(.receiver) { return .retry }
            return .park(expected: signal)
        }
        return try staleOrCorrupt(sendPosition, was: position, slot: slot, sequence: observed)
    }

    /// Writes `bytes` (at most ``maxMessageSize``: the caller checked) into the claimed slot,
    /// publishes it, lets the slot go and wakes a parked receiver if there is one.
    @usableFromInline @inline(__always)
    func finishSend(_ claim: ChannelClaim, _ bytes: UnsafeRawBufferPointer) {
        finishSend(claim, byteCount: bytes.count) { data in
            if let source = bytes.baseAddress, bytes.count > 0 { data.copyMemory(from: source, byteCount: bytes.count) }
        }
    }

    /// ``finishSend(_:_:)`` of a message of `byteCount` bytes (at most ``maxMessageSize``: the
    /// caller checked) that `write` writes into the slot's data (a ``Service``'s request: its
    /// header, then its bytes, with no copy in between).
    @inline(__always)
    func finishSend(_ claim: ChannelClaim, byteCount: Int, _ write: (UnsafeMutableRawPointer) -> Void) {
        let slot = claim.slot
        HotPath.crashPoint("channel.send.afterClaim")
        length(slot).pointee.store(UInt32(byteCount), ordering: .relaxed)
        write(slot + Self.dataOffset)
        HotPath.crashPoint("channel.send.afterWrite")
        publish(claim)
        HotPath.crashPoint("channel.send.afterPublish")
        if !claim.exclusive { releaseOwner(slot) }
        afterPublishing(claim)
    }

    /// Publishes the claimed slot's message: its sequence becomes 2p + 1 (release: the bytes before
    /// the sequence). A shared claim's store is sequentially consistent, before it reads
    /// `receivers_waiting` in `wakeReceiver`; the exclusive sender's is a plain release store, and
    /// a parking receiver's asymmetric fence stands in for the other half (see "Exclusive
    /// endpoints" in `CInterprocessChannel.h`).
    @inline(__always)
    func publish(_ claim: ChannelClaim) {
        if claim.exclusive {
            sequence(claim.slot).pointee.store(Self.full(claim.position), ordering: .releasing)
            HotPath.lightFence()
        } else {
            sequence(claim.slot).pointee.store(Self.full(claim.position), ordering: .sequentiallyConsistent)
        }
    }

    /// What every send does once its slot is published and let go: wakes a receiver parked for
    /// this message, the readiness descriptors that are armed, and — if this sender was woken —
    /// the next parked sender if the next slot is free already (a sender parked on a full ring,
    /// woken for a slot that another sender took, would otherwise miss it); records this process's
    /// role once per handle.
    @inline(__always)
    func afterPublishing(_ claim: ChannelClaim) {
        wakeReceiver(for: claim.position)
        // Readiness descriptors (one load while there are none; ``ChannelParticipants``).
        if descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 { participants?.poke() }
        if recordedRoles.load(ordering: .relaxed) & ChannelParticipants.senderRole == 0 { record(ChannelParticipants.senderRole) }
        if claim.woken, atomic32(sendersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0,
           sequence(self.slot(at: claim.position &+ 1)).pointee.load(ordering: .sequentiallyConsistent) == Self.free(claim.position &+ 1) {
            wake(sendSignal)
        }
    }

    /// Publishes the claimed slot as a loan: the message is the `byteCount` bytes of the loan
    /// heap's block `word` (the caller allocated and filled it; the slot names it from now on). Then
    /// as ``finishSend(_:_:)``.
    func finishSendLoan(_ claim: ChannelClaim, word: UInt64, byteCount: Int) {
        let slot = claim.slot
        HotPath.crashPoint("channel.send.afterClaim")
        loan(slot).pointee.store(word, ordering: .relaxed)
        length(slot).pointee.store(Self.loaned | UInt32(byteCount), ordering: .relaxed)
        HotPath.crashPoint("channel.loan.afterWrite")
        publish(claim)
        HotPath.crashPoint("channel.loan.afterPublish")
        if !claim.exclusive { releaseOwner(slot) }
        afterPublishing(claim)
    }

    /// The pointer words that published slots name as loans now: every slot whose sequence says it
    /// holds a message (odd) and whose length is a loan's. What a loan heap's sweep must keep.
    func publishedLoans() -> Set<UInt64> {
        var words = Set<UInt64>()
        for index in 0..<capacity {
            let slot = slots + index &* stride
            guard sequence(slot).pointee.load(ordering: .acquiring) & 1 == 1 else { continue }
            let count = length(slot).pointee.load(ordering: .acquiring)
            guard count & Self.loaned != 0, count != Self.skipped else { continue }
            words.insert(loan(slot).pointee.load(ordering: .acquiring))
        }
        return words
    }

    /// Claims a position for a send without waiting: nil if the ring is full (or a slot it needs is
    /// held by a live process). Checks once whether a process holding that slot died.
    @usableFromInline
    func tryClaimForSending(exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim? {
        if exclusive { return try tryExclusiveClaimForSending() }
        var checked = false
        for _ in 0..<Self.tryRetries {
            switch try claimForSending(checkNow: false, announce: false) {
            case .done(let claim): return claim
            case .retry: continue
            case .park:
                // The slot we need is held by a process that died: repair it and try again (once).
                if !checked {
                    checked = true
                    if try recoverIfDead(slot(at: sendPosition.pointee.load(ordering: .acquiring))) { continue }
                    if try recoverRoleIfDead(.sender) { continue }
                }
                // Another process holds the sender role: would wait.
                if exclusiveSender.pointee.load(ordering: .acquiring) != 0 { return nil }
                // Full: would wait. A free slot that a live process holds for a moment (another
                // sender claiming it) is worth a few more tries.
                guard hasFreeSlot() else { return nil }
                HotPath.pause()
            }
        }
        return nil
    }

    /// Whether the slot at the send position is free for it (a snapshot).
    func hasFreeSlot() -> Bool {
        let position = sendPosition.pointee.load(ordering: .acquiring)
        return position & Self.flagBits != 0 || sequence(slot(at: position)).pointee.load(ordering: .acquiring) == Self.free(position)
    }

    /// Whether the message at the receive position is in (a snapshot).
    func hasMessage() -> Bool {
        let position = receivePosition.pointee.load(ordering: .acquiring)
        return sequence(slot(at: position)).pointee.load(ordering: .acquiring) == Self.full(position)
    }

    // MARK: Receiving

    /// One attempt to claim the next message: a message whose receiver died, if there is one, else
    /// the slot (its owner word) and then the position. Skips slots published as skipped. Throws
    /// `closed` when the channel is closed and every message was taken. Not generic and cheap,
    /// because the wait drivers call it in their spin loops; the message is copied out by
    /// ``finishReceive(_:_:)``.
    func claimForReceiving(checkNow: Bool, announce: Bool, spinning: Bool = false, woken: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        if spinning {
            // While a wait driver spins: a few loads, and the full attempt only once a message is in
            // (or an orphan waits). The spin phase ignores the expected value.
            let position = receivePosition.pointee.load(ordering: .relaxed)
            if sequence(slot(at: position)).pointee.load(ordering: .relaxed) != Self.full(position),
               orphans.pointee.load(ordering: .relaxed) == 0
                || exclusiveReceiver.pointee.load(ordering: .relaxed) != 0 {
                return .park(expected: 0)
            }
        }
        let signal = atomic32(receiveSignal).pointee.load(ordering: .sequentiallyConsistent)
        // A process holds the receiver role alone: wait until it gives it up (or died).
        if exclusiveReceiver.pointee.load(ordering: .acquiring) != 0 {
            return try waitForRole(.receiver, checkNow: checkNow, signal: signal)
        }
        if orphans.pointee.load(ordering: .relaxed) != 0, let claim = try claimOrphan() {
            return .done(claim)
        }
        let position = receivePosition.pointee.load(ordering: .acquiring)
        let slot = slot(at: position)
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        if observed == Self.full(position) {
            // The message of our position is in: claim the slot, then the position.
            let holder = owner(slot).pointee.load(ordering: .relaxed)
            if holder != 0 {
                return try waitBehind(
                    holder, of: slot, observed: observed, position: receivePosition, at: position,
                    checkNow: checkNow, announce: announce, signal: signal)
            }
            guard owner(slot).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else {
                return .retry
            }
            HotPath.crashPoint("channel.receive.afterOwner")
            // As for senders: the role's taker sees our claim, or we see the role.
            if exclusiveReceiver.pointee.load(ordering: .sequentiallyConsistent) != 0 {
                releaseOwner(slot)
                return .retry
            }
            guard sequence(slot).pointee.load(ordering: .acquiring) == observed,
                  receivePosition.pointee.compareExchange(expected: position, desired: position &+ 1, ordering: .sequentiallyConsistent).exchanged
            else {
                releaseOwner(slot)
                return .retry
            }
            HotPath.crashPoint("channel.receive.afterClaim")
            // A receiver woken for a message that another receiver took would otherwise miss the
            // next one, which may be in already: a woken receiver passes the wake-up on.
            if woken, atomic32(receiversWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0,
               sequence(self.slot(at: position &+ 1)).pointee.load(ordering: .sequentiallyConsistent) == Self.full(position &+ 1) {
                wake(receiveSignal)
            }
            if length(slot).pointee.load(ordering: .relaxed) == Self.skipped {
                release(slot, position: position)
                return .retry
            }
            return .done(ChannelClaim(slot: slot, position: position, redelivery: false))
        }
        return try notIn(slot: slot, position: position, observed: observed, checkNow: checkNow, signal: signal)
    }

    /// A receiver's position whose slot does not hold its message (shared and exclusive receivers
    /// alike): not written yet (``notInYet(slot:position:observed:checkNow:signal:)``), or the slot
    /// still holds the message one lap back, or a sequence that fits neither.
    func notIn(
        slot: UnsafeMutableRawPointer, position: UInt64, observed: UInt64, checkNow: Bool, signal: UInt32
    ) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        let distance = Int64(bitPattern: observed &- Self.full(position))
        if distance == -1 {
            return try notInYet(slot: slot, position: position, observed: observed, checkNow: checkNow, signal: signal)
        }
        if distance == -2 * Int64(capacity) {
            // The slot still holds the message one lap back, which its receiver has not released.
            if checkNow, try recoverIfDead(slot) { return .retry }
            return .park(expected: signal)
        }
        return try staleOrCorrupt(receivePosition, was: position, slot: slot, sequence: observed)
    }

    /// A receiver's position whose message is not in (its slot is free for it): either nobody
    /// claimed the position (empty; the end, once the channel is closed), or its sender is writing it.
    func notInYet(
        slot: UnsafeMutableRawPointer, position: UInt64, observed: UInt64, checkNow: Bool, signal: UInt32
    ) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        // Not in yet: either nobody claimed our position (empty), or its sender is writing it.
        let (claimed, sent) = claimedSends()
        if claimed == position {
            if sent & Self.closedBit != 0 {
                // Closed, and every claimed position was taken: the end, unless a receiver that
                // died left a message behind.
                if try scan(all: true) { return .retry }
                throw InterprocessError(.closed, objectName: name, detail: "the channel was closed and every message was received")
            }
            if checkNow, scanIsDue(), try scan(all: false) { return .retry }
            if checkNow, try recoverRoleIfDead(.sender) { return .retry }
            return .park(expected: signal)
        }
        if let ahead = lead(of: claimed, over: position), ahead > 0 {
            if checkNow, try recoverIfDead(slot) { return .retry }
            if checkNow, try recoverRoleIfDead(.sender) { return .retry }
            return .park(expected: signal)
        }
        if claimedSends().position != claimed { return .retry }
        return try staleOrCorrupt(receivePosition, was: position, slot: slot, sequence: observed)
    }

    /// Claims the next message without waiting: nil if there is none now. Throws `closed` when the
    /// channel is closed and drained. When there is none, repairs the slot it needs if its holder
    /// died, and at most once per ``recoveryInterval`` in this process scans for messages whose
    /// receiver died (redelivering them).
    @usableFromInline
    func tryClaimForReceiving(exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim? {
        if exclusive { return try tryExclusiveClaimForReceiving() }
        var checked = false
        for _ in 0..<Self.tryRetries {
            switch try claimForReceiving(checkNow: false, announce: false) {
            case .done(let claim): return claim
            case .retry: continue
            case .park:
                // The slot we need is held by a process that died: repair it and try again (once).
                // And, at most once per `recoveryInterval` in this process, look for messages whose
                // receiver died (a parked receiver does it while it waits; a loop that only tries,
                // on a readiness descriptor, never parks, and nothing announces such a message).
                if !checked {
                    checked = true
                    if try recoverIfDead(slot(at: receivePosition.pointee.load(ordering: .acquiring))) { continue }
                    if scanIsDue(), try scan(all: false) { continue }
                    if try recoverRoleIfDead(.receiver) { continue }
                }
                // Another process holds the receiver role: would wait.
                if exclusiveReceiver.pointee.load(ordering: .acquiring) != 0 { return nil }
                // Empty (or its next message not written yet): would wait. A message that a live
                // process holds for a moment (its sender finishing, another receiver claiming it)
                // is worth a few more tries.
                guard hasMessage() else { return nil }
                HotPath.pause()
            }
        }
        return nil
    }

    /// Copies the claimed message out of its slot with `copy` (which runs while this process holds
    /// the slot and must not keep the buffer), releases the slot for the position one lap on, lets
    /// it go and wakes a parked sender if one waits for this slot. A length that does not fit a slot is
    /// `corrupt` (the message is dropped).
    ///
    /// A slot whose message is a loan (`CIPC_CHANNEL_LOANED`) goes to `takeLoan` instead, with the
    /// slot's pointer word and length, unchecked, while the slot is held; if it throws, the message
    /// is dropped (and counted).
    @usableFromInline
    func finishReceive(
        _ claim: ChannelClaim, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Void,
        takeLoan: (UInt64, Int) throws(InterprocessError) -> Void
    ) throws(InterprocessError) {
        let slot = claim.slot
        let count = length(slot).pointee.load(ordering: .relaxed)
        var failure: InterprocessError?
        if Int(count) > maxMessageSize {
            if count & Self.loaned != 0, count != Self.skipped {
                // The message is a block of the loan heap: `takeLoan` makes it this process's (the
                // word and length are checked there) while the slot still names it.
                do throws(InterprocessError) {
                    try takeLoan(loan(slot).pointee.load(ordering: .relaxed), Int(count & ~Self.loaned))
                } catch {
                    droppedMessages.pointee.wrappingAdd(1, ordering: .relaxed)
                    failure = error
                }
                HotPath.crashPoint("channel.loan.afterAdopt")
            } else {
                droppedMessages.pointee.wrappingAdd(1, ordering: .relaxed)
                failure = InterprocessError(.corrupt, objectName: name,
                    detail: "a message of \(count) bytes in a channel of at most \(maxMessageSize)-byte messages (dropped)")
            }
        } else {
            do throws(InterprocessError) {
                try copy(UnsafeRawBufferPointer(start: slot + Self.dataOffset, count: Int(count)))
            } catch {
                failure = error
            }
        }
        HotPath.crashPoint("channel.receive.afterCopy")
        releaseClaim(claim)
        if let failure { throw failure }
    }

    /// ``finishReceive(_:_:takeLoan:)`` for a raw value of `size` bytes, the hot path of channels of
    /// `BitwiseCopyable` values: if the claimed slot holds `size` bytes, gives them to `load` (which
    /// must not keep the pointer) and releases the slot; true. Any other message (a loan, another
    /// length: only a scribbling peer writes them in such a channel) is left claimed: false, and the
    /// caller finishes it the general way, which reports it.
    @usableFromInline @inline(__always)
    func finishRawReceive(_ claim: ChannelClaim, size: Int, _ load: (UnsafeRawPointer) -> Void) -> Bool {
        let slot = claim.slot
        guard size <= maxMessageSize, length(slot).pointee.load(ordering: .relaxed) == UInt32(truncatingIfNeeded: size) else { return false }
        load(UnsafeRawPointer(slot + Self.dataOffset))
        HotPath.crashPoint("channel.receive.afterCopy")
        releaseClaim(claim)
        return true
    }

    /// The end of every receive, once the message was copied out: releases the slot (a shared
    /// claim's owner word with it), counts a redelivered orphan, records the receiver role.
    @inline(__always)
    func releaseClaim(_ claim: ChannelClaim) {
        if claim.exclusive {
            releaseExclusively(claim.slot, position: claim.position)
        } else {
            release(claim.slot, position: claim.position)
        }
        if claim.redelivery { decrementOrphans() }
        if recordedRoles.load(ordering: .relaxed) & ChannelParticipants.receiverRole == 0 { record(ChannelParticipants.receiverRole) }
    }

    /// ``finishReceive(_:_:takeLoan:)`` for a ring whose messages are never loans (a ``Service``'s
    /// requests): a slot that claims to hold one is `corrupt`, and dropped.
    func finishReceive(_ claim: ChannelClaim, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Void) throws(InterprocessError) {
        try finishReceive(claim, copy, takeLoan: { _, count throws(InterprocessError) in
            throw InterprocessError(.corrupt, objectName: name, detail: "a slot claims to hold a loan of \(count) bytes, in a ring without loans (dropped)")
        })
    }

    /// Frees `slot` (whose message of `position` this process took) for the position one lap on,
    /// lets it go and wakes a parked sender if one waits for this slot.
    func release(_ slot: UnsafeMutableRawPointer, position: UInt64) {
        sequence(slot).pointee.store(Self.free(position &+ UInt64(capacity)), ordering: .sequentiallyConsistent)
        HotPath.crashPoint("channel.receive.afterRelease")
        releaseOwner(slot)
        wakeSender(forSlotOf: position)
    }

    /// The exclusive receiver's ``release(_:position:)``: frees the slot (release stores, no owner
    /// word), then advances the receive position (which only it writes while it holds the role).
    @inline(__always)
    func releaseExclusively(_ slot: UnsafeMutableRawPointer, position: UInt64) {
        sequence(slot).pointee.store(Self.free(position &+ UInt64(capacity)), ordering: .releasing)
        HotPath.crashPoint("channel.receive.afterRelease")
        receivePosition.pointee.store(position &+ 1, ordering: .releasing)
        HotPath.lightFence()
        wakeSender(forSlotOf: position)
    }

    // MARK: Waiting for a claim

    /// Claims a position to send to, blocking the thread while the ring is full, for at most
    /// `timeout` (nil: as long as it takes). `exclusive`: as the holder of the sender role.
    @usableFromInline @inline(__always)
    func blockingClaimToSend(timeout: Duration?, exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim {
        if case .done(let claim) = try sendAttempt(exclusive: exclusive, checkNow: false, attempt: 0) { return claim }
        return try waitToSend(timeout: timeout, exclusive: exclusive)
    }

    /// A whole blocking send of `bytes` (at most ``maxMessageSize``: the caller checked): the
    /// claim (``blockingClaimToSend(timeout:exclusive:)``) and ``finishSend(_:_:)`` in one call, the
    /// hot path of raw values.
    @usableFromInline
    func blockingSend(_ bytes: UnsafeRawBufferPointer, timeout: Duration?, exclusive: Bool) throws(InterprocessError) {
        try checkAttached()
        finishSend(try blockingClaimToSend(timeout: timeout, exclusive: exclusive), bytes)
    }

    /// Throws `closed` if the handle of this ring was detached (``Channel/detach()``).
    @inline(__always)
    func checkAttached() throws(InterprocessError) {
        if detached.load(ordering: .relaxed) { throw detachedError() }
    }

    @inline(never)
    func detachedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "this handle was detached")
    }

    /// The rest of ``blockingClaimToSend(timeout:exclusive:)`` when its first attempt did not claim: the wait.
    @inline(never)
    func waitToSend(timeout: Duration?, exclusive: Bool) throws(InterprocessError) -> ChannelClaim {
        var attempts = 0
        do throws(InterprocessError) {
            return try WaitSite(word: sendSignal, waiters: sendersWaiting, name: name, recheckEvery: Self.recoveryInterval, processTally: participants?.senderTally).blockingWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.sendAttempt(exclusive: exclusive, checkNow: false, attempt: 0, spinning: true) },
                { check throws(InterprocessError) in
                    attempts += 1
                    return try self.sendAttempt(exclusive: exclusive, checkNow: check, attempt: attempts)
                })
        } catch {
            passOnSenderWake()
            throw error
        }
    }

    /// Claims a position to send to, suspending the task while the ring is full, for at most
    /// `timeout` (nil: as long as it takes); `cancelled` (having claimed nothing) if the task is cancelled.
    @usableFromInline @inline(__always)
    func claimToSend(timeout: Duration?, exclusive: Bool = false) async throws(InterprocessError) -> ChannelClaim {
        if case .done(let claim) = try sendAttempt(exclusive: exclusive, checkNow: false, attempt: 0) { return claim }
        return try await waitAsyncToSend(timeout: timeout, exclusive: exclusive)
    }

    /// The rest of ``claimToSend(timeout:exclusive:)`` when its first attempt did not claim: the wait.
    @inline(never)
    func waitAsyncToSend(timeout: Duration?, exclusive: Bool) async throws(InterprocessError) -> ChannelClaim {
        var attempts = 0
        do throws(InterprocessError) {
            return try await WaitSite(word: sendSignal, waiters: sendersWaiting, name: name, recheckEvery: Self.recoveryInterval, processTally: participants?.senderTally).asyncWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.sendAttempt(exclusive: exclusive, checkNow: false, attempt: 0, spinning: true) },
                { check throws(InterprocessError) in
                    attempts += 1
                    return try self.sendAttempt(exclusive: exclusive, checkNow: check, attempt: attempts)
                })
        } catch {
            passOnSenderWake()
            throw error
        }
    }

    /// One attempt of a waiting send. `attempt` 0: before counting ourselves as a waiter (a first
    /// try, or the spin phase); 1: the last look before parking, which the drivers make right after
    /// counting us (and which first makes the asymmetric fence if the receiver role is held: its
    /// holder reads `senders_waiting` with a plain load); later ones follow a park (a woken claim).
    @inline(__always)
    func sendAttempt(exclusive: Bool, checkNow: Bool, attempt: Int, spinning: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        if attempt == 1 { fenceBeforeParking(behind: exclusiveReceiver) }
        if exclusive { return try exclusiveClaimForSending(checkNow: checkNow, spinning: spinning) }
        return try claimForSending(checkNow: checkNow, announce: attempt > 0, spinning: spinning, woken: attempt > 1)
    }

    /// Claims the next message, blocking the thread while the ring is empty, for at most `timeout`
    /// (nil: as long as it takes). `exclusive`: as the holder of the receiver role.
    @usableFromInline @inline(__always)
    func blockingClaimToReceive(timeout: Duration?, exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim {
        if case .done(let claim) = try receiveAttempt(exclusive: exclusive, checkNow: false, attempt: 0) { return claim }
        return try waitToReceive(timeout: timeout, exclusive: exclusive)
    }

    /// A whole blocking receive of a raw value of `size` bytes: the claim
    /// (``blockingClaimToReceive(timeout:exclusive:)``) and ``finishRawReceive(_:size:_:)`` in one
    /// call, the hot path of raw values. Nil once `load` had the value; a claim that the caller
    /// finishes the general way if the slot held something else.
    @usableFromInline
    func blockingReceive(size: Int, timeout: Duration?, exclusive: Bool, _ load: (UnsafeRawPointer) -> Void) throws(InterprocessError) -> ChannelClaim? {
        try checkAttached()
        let claim = try blockingClaimToReceive(timeout: timeout, exclusive: exclusive)
        return finishRawReceive(claim, size: size, load) ? nil : claim
    }

    /// The rest of ``blockingClaimToReceive(timeout:exclusive:)`` when its first attempt did not claim: the wait.
    @inline(never)
    func waitToReceive(timeout: Duration?, exclusive: Bool) throws(InterprocessError) -> ChannelClaim {
        var attempts = 0
        do throws(InterprocessError) {
            return try WaitSite(word: receiveSignal, waiters: receiversWaiting, name: name, recheckEvery: Self.recoveryInterval, processTally: participants?.receiverTally).blockingWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.receiveAttempt(exclusive: exclusive, checkNow: false, attempt: 0, spinning: true) },
                { check throws(InterprocessError) in
                    attempts += 1
                    return try self.receiveAttempt(exclusive: exclusive, checkNow: check, attempt: attempts)
                })
        } catch {
            passOnReceiverWake()
            throw error
        }
    }

    /// Claims the next message, suspending the task while the ring is empty, for at most `timeout`
    /// (nil: as long as it takes); `cancelled` (having claimed nothing) if the task is cancelled.
    @usableFromInline @inline(__always)
    func claimToReceive(timeout: Duration?, exclusive: Bool = false) async throws(InterprocessError) -> ChannelClaim {
        if case .done(let claim) = try receiveAttempt(exclusive: exclusive, checkNow: false, attempt: 0) { return claim }
        return try await waitAsyncToReceive(timeout: timeout, exclusive: exclusive)
    }

    /// The rest of ``claimToReceive(timeout:exclusive:)`` when its first attempt did not claim: the wait.
    @inline(never)
    func waitAsyncToReceive(timeout: Duration?, exclusive: Bool) async throws(InterprocessError) -> ChannelClaim {
        var attempts = 0
        do throws(InterprocessError) {
            return try await WaitSite(word: receiveSignal, waiters: receiversWaiting, name: name, recheckEvery: Self.recoveryInterval, processTally: participants?.receiverTally).asyncWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.receiveAttempt(exclusive: exclusive, checkNow: false, attempt: 0, spinning: true) },
                { check throws(InterprocessError) in
                    attempts += 1
                    return try self.receiveAttempt(exclusive: exclusive, checkNow: check, attempt: attempts)
                })
        } catch {
            passOnReceiverWake()
            throw error
        }
    }

    /// One attempt of a waiting receive (the attempts are numbered as ``sendAttempt(exclusive:checkNow:attempt:spinning:)``'s;
    /// the fence is made when the sender role is held).
    @inline(__always)
    func receiveAttempt(exclusive: Bool, checkNow: Bool, attempt: Int, spinning: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        if attempt == 1 { fenceBeforeParking(behind: exclusiveSender) }
        if exclusive { return try exclusiveClaimForReceiving(checkNow: checkNow, spinning: spinning, quick: attempt == 0) }
        return try claimForReceiving(checkNow: checkNow, announce: attempt > 0, spinning: spinning, woken: attempt > 1)
    }

    // MARK: Closing

    /// Closes the channel: no send succeeds from now on; receivers take what is in and then see the end.
    ///
    /// In two steps, for an exclusive sender (which checks CLOSING with a plain load after it
    /// announced its position): CLOSING; then, if the sender role is held, an asymmetric fence, after
    /// which that sender either saw CLOSING or its announced position is visible; then CLOSED, which
    /// receivers go by. Where the fence is refused, the exclusive sender sets CLOSED itself at its
    /// next send or when it gives up the role.
    func close() {
        sendPosition.pointee.bitwiseOr(Self.closingBit, ordering: .sequentiallyConsistent)
        if exclusiveSender.pointee.load(ordering: .sequentiallyConsistent) == 0 || AsymmetricFence.heavy() {
            sendPosition.pointee.bitwiseOr(Self.closedBit, ordering: .sequentiallyConsistent)
        }
        wakeEveryone()
        participants?.poke()
    }

    /// Records once per handle that this process acted in `role` (``ChannelParticipants``).
    @inline(never)
    func record(_ role: UInt32) {
        recordedRoles.bitwiseOr(role, ordering: .relaxed)
        participants?.mark(role)
    }

    var isClosed: Bool { sendPosition.pointee.load(ordering: .acquiring) & Self.flagBits != 0 }

    /// Messages sent and not yet received (a snapshot; includes messages being written or taken).
    var count: Int {
        let received = receivePosition.pointee.load(ordering: .acquiring)
        return lead(of: claimedSends().position, over: received) ?? 0
    }

    // MARK: Waking

    // Wakes only on a transition: a receiver parks only when the message at the receive position is
    // not in, so the send that publishes *that* position wakes one (the receive position cannot pass
    // a position before it is published); a message published behind others that are waiting to be
    // taken wakes nobody: a receiver that was woken (it parked) and takes a message wakes the next
    // receiver if the next message is in (`claimForReceiving`). Likewise a sender parks only when
    // the slot of the send position is not free, so the receive that frees that slot wakes one, and
    // a sender that was woken wakes the next sender, once it published, if the next slot is free
    // (`afterPublishing`). Both checks are sequentially consistent loads after sequentially
    // consistent stores, so one side always sees the other. Why this loses no wake-up: a waiter
    // that parked is woken by the transition it waits for or by a woken peer that got there first
    // (which passes the wake on); a peer that never parked passes nothing on, and needs not: it
    // took a slot (message) that no parked waiter was woken for, or one whose waiter, woken, finds
    // the next. Without this, a parked peer that was woken but is not running yet (microseconds to
    // a time slice on a busy machine) is still counted, and every send (receive) meanwhile made a
    // futex system call: streaming through a channel ran at system-call speed. (Passing on from
    // every send, not only a woken one, made 8 producers on 2 CPUs call futex once per 1–2 messages.)

    /// Wakes a parked receiver if there is one and the message just published at `position` is the
    /// one the receive position waits for.
    @inline(__always)
    func wakeReceiver(for position: UInt64) {
        if atomic32(receiversWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0,
           receivePosition.pointee.load(ordering: .sequentiallyConsistent) == position {
            wake(receiveSignal)
        }
    }

    /// Wakes a parked sender if there is one and the slot just freed (of `position`, now free for
    /// `position + capacity`) is the one the send position waits for.
    @inline(__always)
    func wakeSender(forSlotOf position: UInt64) {
        if atomic32(sendersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0,
           claimedSends().position == position &+ UInt64(capacity) {
            wake(sendSignal)
        }
    }

    /// Bumps `signal` (so that a waiter about to park with its old value does not) and wakes one waiter.
    /// A call that woke nobody while a waiter was counted may mean that a waiter was killed while
    /// parked: the table's sweep for dead waiters, at most every 50 ms
    /// (``ChannelParticipants/sweepDeadWaitersIfDue()``), takes back what it left in the count.
    @inline(never)
    func wake(_ signal: UnsafeMutableRawPointer, all: Bool = false) {
        atomic32(signal).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if Futex.wake(signal, count: all ? Int32.max : 1) == 0 { participants?.sweepDeadWaitersIfDue() }
    }

    /// Wakes every parked sender and receiver (close, a contended slot released, a recovery).
    func wakeEveryone() {
        if atomic32(receiversWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(receiveSignal, all: true) }
        if atomic32(sendersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(sendSignal, all: true) }
    }

    /// Clears this process's claim on `slot`, waking whoever parked behind it.
    @inline(__always)
    func releaseOwner(_ slot: UnsafeMutableRawPointer) {
        if owner(slot).pointee.exchange(0, ordering: .sequentiallyConsistent) & Self.contended != 0 { wakeEveryone() }
    }

    /// A receiver that leaves a wait without a message (timed out, cancelled) may have been the one
    /// woken for a message that is there: passes the wake-up on.
    func passOnReceiverWake() {
        guard atomic32(receiversWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 else { return }
        if hasMessage() || orphans.pointee.load(ordering: .relaxed) != 0 || isClosed {
            wake(receiveSignal)
        }
    }

    /// The same for a sender that leaves a wait without sending.
    func passOnSenderWake() {
        guard atomic32(sendersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 else { return }
        if hasFreeSlot() { wake(sendSignal) }
    }

    // MARK: Owned slots

    /// We need `slot`, which `holder` (not 0) owns: a process finishing with it, a process claiming
    /// it, or one that died doing so. Checks the holder's liveness when `checkNow`, and marks the
    /// slot contended before parking when `announce`.
    func waitBehind<T>(
        _ holder: UInt64, of slot: UnsafeMutableRawPointer, observed: UInt64,
        position word: UnsafeMutablePointer<Atomic<UInt64>>, at position: UInt64,
        checkNow: Bool, announce: Bool, signal: UInt32
    ) throws(InterprocessError) -> WaitStep<T> {
        let token = holder & ~Self.contended
        guard token >= 1 << 32 else {
            // Not a token. An orphan is only ever marked on a slot whose position was received
            // already, never on the slot a sender or receiver needs next — unless the slot or the
            // position moved on since we looked (a receiver took it and died meanwhile).
            if sequence(slot).pointee.load(ordering: .acquiring) != observed || word.pointee.load(ordering: .acquiring) != position {
                return .retry
            }
            throw InterprocessError(.corrupt, objectName: name,
                detail: "slot \(index(of: slot)) is owned by \(token == Self.orphan ? "no process (an orphan mark)" : "\(token), not a process token") while it is needed")
        }
        if checkNow && !lease.isAlive(token) {
            try recover(slot, deadOwner: holder)
            return .retry
        }
        if announce && holder & Self.contended == 0 {
            // The same word as the holder's releasing exchange: either it sees the bit, or this fails.
            guard owner(slot).pointee.compareExchange(expected: holder, desired: holder | Self.contended, ordering: .sequentiallyConsistent).exchanged else {
                return .retry
            }
        }
        return .park(expected: signal)
    }

    /// Recovers `slot` if a process that died owns it; whether it did (or the owner changed meanwhile).
    func recoverIfDead(_ slot: UnsafeMutableRawPointer) throws(InterprocessError) -> Bool {
        let holder = owner(slot).pointee.load(ordering: .acquiring)
        let token = holder & ~Self.contended
        guard token >= 1 << 32, token != me, !lease.isAlive(token) else { return false }
        try recover(slot, deadOwner: holder)
        return true
    }

    /// Repairs `slot`, whose owner `dead` (as read, with its contended bit) died, from the slot's own
    /// state (the table in `CInterprocessChannel.h`). Claims the slot first, so that one process
    /// repairs it; a repairer that dies leaves a dead owner again, and the next one repairs the same
    /// way. Throws `corrupt` if the state fits no step of the protocol.
    func recover(_ slot: UnsafeMutableRawPointer, deadOwner dead: UInt64) throws(InterprocessError) {
        guard owner(slot).pointee.compareExchange(
            expected: dead, desired: me | (dead & Self.contended), ordering: .sequentiallyConsistent
        ).exchanged else { return }
        HotPath.crashPoint("channel.recover.afterClaim")
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        let position = observed / 2
        guard Int(position % UInt64(capacity)) == index(of: slot) else {
            releaseOwner(slot)
            throw corruptSlot(slot, observed)
        }
        if observed & 1 == 0 {
            // Free for `position`, or being written for it.
            let sent = sendPosition.pointee.load(ordering: .acquiring) & ~Self.flagBits
            if lead(of: position, over: sent) != nil {
                // Not claimed: the dead process only held the slot.
                clearedClaims.pointee.wrappingAdd(1, ordering: .relaxed)
            } else if let behind = lead(of: sent, over: position), behind > 0 {
                // Its sender died writing: publish the slot as skipped.
                length(slot).pointee.store(Self.skipped, ordering: .relaxed)
                sequence(slot).pointee.store(Self.full(position), ordering: .sequentiallyConsistent)
                abandonedSends.pointee.wrappingAdd(1, ordering: .relaxed)
            } else {
                releaseOwner(slot)
                throw corruptSlot(slot, observed)
            }
        } else {
            // Holds the message of `position`.
            let received = receivePosition.pointee.load(ordering: .acquiring)
            if lead(of: position, over: received) != nil {
                // Not taken: its sender died after publishing, or a receiver before claiming.
                clearedClaims.pointee.wrappingAdd(1, ordering: .relaxed)
            } else if let behind = lead(of: received, over: position), behind > 0 {
                // Its receiver died before releasing it: the message is whole, and goes to the next
                // receiver. Mark first, count second (a count too high heals; see `redeliver`).
                owner(slot).pointee.store(Self.orphan, ordering: .sequentiallyConsistent)
                orphans.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
                orphanedReceives.pointee.wrappingAdd(1, ordering: .relaxed)
                wakeEveryone()
                return
            } else {
                releaseOwner(slot)
                throw corruptSlot(slot, observed)
            }
        }
        owner(slot).pointee.store(0, ordering: .sequentiallyConsistent)
        wakeEveryone()
    }

    /// Claims a message whose receiver died (an orphan), if there is one: nil if none is left (and
    /// then resets the hint that sent us looking). Skipped slots among them are released at once.
    func claimOrphan() throws(InterprocessError) -> ChannelClaim? {
        let hint = orphans.pointee.load(ordering: .sequentiallyConsistent)
        for index in 0..<capacity {
            let slot = slots + index &* stride
            let holder = owner(slot).pointee.load(ordering: .relaxed)
            guard holder & ~Self.contended == Self.orphan,
                  owner(slot).pointee.compareExchange(expected: holder, desired: me | (holder & Self.contended), ordering: .sequentiallyConsistent).exchanged
            else { continue }
            let observed = sequence(slot).pointee.load(ordering: .acquiring)
            let position = observed / 2
            let received = receivePosition.pointee.load(ordering: .acquiring)
            guard observed & 1 == 1, Int(position % UInt64(capacity)) == index,
                  let behind = lead(of: received, over: position), behind > 0
            else {
                releaseOwner(slot)
                throw corruptSlot(slot, observed)
            }
            redeliveries.pointee.wrappingAdd(1, ordering: .relaxed)
            if length(slot).pointee.load(ordering: .relaxed) == Self.skipped {
                release(slot, position: position)
                decrementOrphans()
                continue
            }
            return ChannelClaim(slot: slot, position: position, redelivery: true)
        }
        // None found: the hint is stale (a redeliverer died before counting down). A recoverer marks
        // a slot before it counts it, so if the count changed since we read it, one may be new.
        _ = orphans.pointee.compareExchange(expected: hint, desired: 0, ordering: .sequentiallyConsistent)
        return nil
    }

    /// Whether a waiting receiver of this process should look over the ring now: at most once per
    /// ``recoveryInterval`` in the process (a wait checks at its first park, where a scan of a large
    /// ring on every park would cost more than the wait).
    func scanIsDue() -> Bool {
        let now = Clock.monotonicNanoseconds()
        let last = lastScan.load(ordering: .relaxed)
        guard now &- last >= Self.recoveryInterval else { return false }
        return lastScan.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
    }

    func decrementOrphans() {
        subtractWithoutWrapping(1, from: orphans)
    }

    /// Looks for slots held by processes that died, and for orphans nobody counted: all slots
    /// (`all`), or the next ``scanChunk`` of them. Recovers what it finds; returns whether it found
    /// anything (the caller looks again).
    func scan(all: Bool) throws(InterprocessError) -> Bool {
        let count = all ? capacity : min(capacity, Self.scanChunk)
        let start = all ? 0 : scanCursor.load(ordering: .relaxed) % capacity
        if !all { scanCursor.store((start + count) % capacity, ordering: .relaxed) }
        var found = false
        for step in 0..<count {
            let slot = slots + ((start + step) % capacity) &* stride
            let holder = owner(slot).pointee.load(ordering: .acquiring)
            let token = holder & ~Self.contended
            if token == Self.orphan {
                if orphans.pointee.load(ordering: .sequentiallyConsistent) == 0 {
                    orphans.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
                }
                found = true
            } else if try recoverIfDead(slot) {
                found = true
            }
        }
        return found
    }

    // MARK: Errors

    /// The position we read (`was`) and the sequence of its slot do not fit. If the position moved
    /// on meanwhile, we read an old one: look again. Otherwise the ring is damaged.
    func staleOrCorrupt<T>(
        _ word: UnsafeMutablePointer<Atomic<UInt64>>, was position: UInt64, slot: UnsafeMutableRawPointer, sequence observed: UInt64
    ) throws(InterprocessError) -> WaitStep<T> {
        if word.pointee.load(ordering: .acquiring) != position { return .retry }
        let which = word == sendPosition ? "send" : "receive"
        throw InterprocessError(.corrupt, objectName: name,
            detail: "slot \(index(of: slot)) has sequence \(observed), which does not fit \(which) position \(position & ~Self.flagBits)")
    }

    func corruptSlot(_ slot: UnsafeMutableRawPointer, _ observed: UInt64) -> InterprocessError {
        InterprocessError(.corrupt, objectName: name,
            detail: "slot \(index(of: slot)) has sequence \(observed), which no step of the protocol leaves (send position \(sendPosition.pointee.load(ordering: .relaxed) & ~Self.flagBits), receive position \(receivePosition.pointee.load(ordering: .relaxed)))")
    }

    func closedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "the channel was closed")
    }
}
