import CInterprocess
import InterprocessSystem
import Synchronization

/// What one read of a subscription found: a message, or how many messages it missed (they were
/// overwritten before it read them).

enum BroadcastRead<Payload> {
    case message(Payload)
    case missed(UInt64)
}

/// The protocol of a ``Broadcast`` on its shared memory: a ring of `capacity` slots that publishers
/// write in turn and every subscriber reads at its own position (a seqlock per slot), a table of
/// subscriber places, and the slow-subscriber policy. It moves bytes; what they mean is
/// ``Broadcast``'s business, and where the memory comes from is ``SharedObjectStorage``'s
/// (``BroadcastState``).
///
/// The layout is `cipc_broadcast` in `CInterprocessBroadcast.h`, which also states the invariants;
/// the steps, and what a process killed at each leaves behind, are documented on ``Broadcast``.
///
/// Owners are recorded as a channel's are: the process's token in the segment's file
/// (``OwnerLease``), whose liveness the kernel vouches for — for the publishing turn and for each
/// subscriber place.
///
/// Every number read from shared memory is checked before it is used: a subscriber's position
/// must not pass `head`; a slot's sequence must name a position of that slot no later than `head`;
/// a length must fit a slot; owners must be tokens. A value no correct peer writes makes the
/// operation throw `corrupt`; counters wrap instead of trapping.
///
/// `@unchecked Sendable`: the pointers point into a mapping that `storage` keeps alive, every shared
/// word is accessed atomically, and the rest is immutable (the publisher's cache is atomics touched
/// only while this process holds the publishing turn).

final class BroadcastRing: @unchecked Sendable {
    let name: String?
    /// Validated copies of the fixed fields.
    let capacity: Int
    let maxMessageSize: Int
    let stride: Int
    let maxSubscribers: Int
    let policy: UInt32
    private let blocksPublisher: Bool
    private let indexMask: UInt64?

    private let slots: UnsafeMutableRawPointer
    private let places: UnsafeMutableRawPointer
    private let head: UnsafeMutablePointer<Atomic<UInt64>>
    private let publisher: UnsafeMutablePointer<Atomic<UInt64>>
    private let publishSignal: UnsafeMutableRawPointer
    private let subscribersWaiting: UnsafeMutableRawPointer
    private let spaceSignal: UnsafeMutableRawPointer
    private let publishersWaiting: UnsafeMutableRawPointer
    private let generation: UnsafeMutablePointer<Atomic<UInt64>>
    private let departed: UnsafeMutablePointer<Atomic<UInt64>>
    private let completedPublishes: UnsafeMutablePointer<Atomic<UInt64>>
    private let abandonedPublishes: UnsafeMutablePointer<Atomic<UInt64>>
    private let droppedMessages: UnsafeMutablePointer<Atomic<UInt64>>
    /// The header's `descriptors_armed`: a publisher loads it after advancing `head` (its one extra
    /// load while no subscriber waits by descriptor) and lets ``notifiers`` send the datagrams.
    private let descriptorsArmed: UnsafeMutablePointer<Atomic<UInt64>>
    /// The subscriber places' readiness fields (``BroadcastReadiness.swift``).
    let notifiers: BroadcastNotifiers

    private let lease: OwnerLease
    private let me: UInt64
    private let storage: SharedObjectStorage

    /// The slowest subscriber position the last scan found, and the subscribers' generation it
    /// saw: a publisher rescans only when it must overwrite a position at or past that one, or a
    /// subscriber joined since. Touched only while this process holds the publishing turn.
    private let cachedGeneration = Atomic<UInt64>(.max)
    private let cachedSlowest = Atomic<UInt64>(0)

    static let closedBit: UInt64 = CIPC_BROADCAST_CLOSED
    static let flag: UInt64 = OwnerLease.flagBit
    static let dataOffset = Int(CIPC_BROADCAST_SLOT_HEADER_SIZE)
    /// How often a parked publisher looks for dead subscribers and a dead publisher, and a parked
    /// subscriber looks again (a publisher that died between publishing and waking it).
    static let recoveryInterval: UInt64 = 50_000_000
    /// How many lost races a `try…` form retries before it reports that it would wait.
    static let tryRetries = 10_000

    init(storage: SharedObjectStorage, geometry: BroadcastLayout.Geometry) {
        guard let lease = storage.lease else { preconditionFailure("a broadcast's storage carries a lease") }
        let base = storage.base
        self.storage = storage
        name = storage.name
        capacity = geometry.capacity
        maxMessageSize = geometry.maxMessageSize
        stride = geometry.stride
        maxSubscribers = geometry.maxSubscribers
        policy = geometry.policy
        blocksPublisher = geometry.policy == CIPC_BROADCAST_BLOCK_PUBLISHER
        indexMask = capacity.nonzeroBitCount == 1 ? UInt64(capacity - 1) : nil
        slots = base + geometry.slotsOffset
        places = base + BroadcastLayout.headerSize
        head = atomic64(base + fieldOffset(\cipc_broadcast.head))
        publisher = atomic64(base + fieldOffset(\cipc_broadcast.publisher))
        publishSignal = base + fieldOffset(\cipc_broadcast.publish_signal)
        subscribersWaiting = base + fieldOffset(\cipc_broadcast.subscribers_waiting)
        spaceSignal = base + fieldOffset(\cipc_broadcast.space_signal)
        publishersWaiting = base + fieldOffset(\cipc_broadcast.publishers_waiting)
        generation = atomic64(base + fieldOffset(\cipc_broadcast.subscribers_generation))
        departed = atomic64(base + fieldOffset(\cipc_broadcast.departed_subscribers))
        completedPublishes = atomic64(base + fieldOffset(\cipc_broadcast.completed_publishes))
        abandonedPublishes = atomic64(base + fieldOffset(\cipc_broadcast.abandoned_publishes))
        droppedMessages = atomic64(base + fieldOffset(\cipc_broadcast.dropped_messages))
        notifiers = BroadcastNotifiers(base: base, maxSubscribers: geometry.maxSubscribers, name: storage.name, lease: lease)
        descriptorsArmed = notifiers.armedWord
        self.lease = lease
        me = lease.token
    }

    // MARK: Slots and places

    @inline(__always)
    private func slot(at position: UInt64) -> UnsafeMutableRawPointer {
        let index = indexMask.map { position & $0 } ?? position % UInt64(capacity)
        return slots + Int(index) &* stride
    }

    @inline(__always)
    private func sequence(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot) }

    @inline(__always)
    private func length(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(slot + 8) }

    /// The sequence of a slot whose message of position `p` is being written, and once it is whole.
    @inline(__always) private static func writing(_ p: UInt64) -> UInt64 { p &* 2 &+ 1 }
    @inline(__always) private static func complete(_ p: UInt64) -> UInt64 { p &* 2 &+ 2 }

    @inline(__always)
    private func place(_ index: Int) -> UnsafeMutableRawPointer { places + index &* BroadcastLayout.subscriberSize }
    @inline(__always)
    private func owner(_ place: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(place) }
    @inline(__always)
    private func position(_ place: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(place + 8) }
    @inline(__always)
    private func missed(_ place: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(place + 16) }
    @inline(__always)
    private func received(_ place: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(place + 24) }

    // MARK: Publishing

    /// One attempt to claim the next position for a publish: the publishing turn (taken over from
    /// a publisher that died, when `checkNow`), then, under `.blockPublisher`, room: no live
    /// subscriber still needs the message the publish overwrites (a subscriber that died holding
    /// it back is removed, when `checkNow`). Returns the position, holding the turn; the bytes are
    /// written by ``finishPublish(_:_:)``. Not generic: the wait drivers call it in their loops.
    func claimForPublishing(checkNow: Bool, announce: Bool) throws(InterprocessError) -> WaitStep<UInt64> {
        // Read before looking: a change after this read is a wake-up.
        let signal = atomic32(spaceSignal).pointee.load(ordering: .sequentiallyConsistent)
        if head.pointee.load(ordering: .acquiring) & Self.closedBit != 0 { throw closedError() }
        let holder = publisher.pointee.load(ordering: .acquiring)
        if holder != 0 {
            let token = holder & ~Self.flag
            guard token >= 1 << 32 else {
                throw InterprocessError(.corrupt, objectName: name, detail: "the publishing turn is held by \(holder), not a process token")
            }
            if checkNow, token != me, !lease.isAlive(token) {
                // Its publisher died: take the turn over (keeping the mark of those parked behind
                // it) and finish or drop what it left.
                guard publisher.pointee.compareExchange(
                    expected: holder, desired: me | (holder & Self.flag), ordering: .sequentiallyConsistent
                ).exchanged else {
                    return .retry
                }
                repairAfterDeadPublisher()
            } else {
                if announce && holder & Self.flag == 0 {
                    // Parking behind a live holder: mark the turn contended, so that its release
                    // wakes us (the same word as its releasing exchange: either it sees the mark
                    // or this fails).
                    guard publisher.pointee.compareExchange(expected: holder, desired: holder | Self.flag, ordering: .sequentiallyConsistent).exchanged else {
                        return .retry
                    }
                }
                return .park(expected: signal)
            }
        } else {
            guard publisher.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else {
                return .retry
            }
        }
        HotPath.crashPoint("broadcast.publish.afterTurn")
        let current = head.pointee.load(ordering: .acquiring)
        if current & Self.closedBit != 0 {
            releaseTurn()
            throw closedError()
        }
        if blocksPublisher && current >= UInt64(capacity) {
            let hasRoom: Bool
            do throws(InterprocessError) {
                hasRoom = try roomToOverwrite(before: current &- UInt64(capacity) &+ 1, head: current, checkNow: checkNow)
            } catch {
                releaseTurn()
                throw error
            }
            if !hasRoom {
                // Publishers parked behind our turn would find no room either; a subscriber that
                // makes room wakes every parked publisher. So the turn goes back without a wake-up
                // (which would also wake this waiter, parked on the same word, again and again).
                releaseTurn(waking: false)
                return .park(expected: signal)
            }
        }
        return .done(current)
    }

    /// Whether every live subscriber is at `needed` or later (so that the slot of `needed - 1` may
    /// be overwritten). Rescans the places only when the cache cannot tell; removes the places of
    /// dead subscribers that hold the publisher back when `checkNow`.
    private func roomToOverwrite(before needed: UInt64, head current: UInt64, checkNow: Bool) throws(InterprocessError) -> Bool {
        let joined = generation.pointee.load(ordering: .sequentiallyConsistent)
        if joined == cachedGeneration.load(ordering: .relaxed), cachedSlowest.load(ordering: .relaxed) >= needed {
            return true
        }
        var slowest = current
        var blocked = false
        for index in 0..<maxSubscribers {
            let place = place(index)
            let holder = owner(place).pointee.load(ordering: .acquiring)
            // Free, or joining (its guaranteed start is later than anything this turn overwrites).
            if holder == 0 || holder & Self.flag != 0 { continue }
            guard holder >= 1 << 32 else {
                throw InterprocessError(.corrupt, objectName: name, detail: "subscriber place \(index) is owned by \(holder), not a process token")
            }
            let at = position(place).pointee.load(ordering: .acquiring)
            guard at <= current else {
                throw InterprocessError(.corrupt, objectName: name,
                    detail: "subscriber place \(index) is at position \(at), past the \(current) messages published")
            }
            if at < needed {
                if checkNow, holder != me, !lease.isAlive(holder), notifiers.sweep(index, dead: holder) {
                    continue
                }
                blocked = true
            }
            slowest = min(slowest, at)
        }
        cachedGeneration.store(joined, ordering: .relaxed)
        cachedSlowest.store(slowest, ordering: .relaxed)
        return !blocked
    }

    /// Writes `bytes` (at most ``maxMessageSize``: the caller checked) as the message of `position`
    /// (claimed: this process holds the turn), publishes it, wakes parked subscribers if there are
    /// any, and gives the turn back.
    func finishPublish(_ position: UInt64, _ bytes: UnsafeRawBufferPointer) {
        let slot = slot(at: position)
        // Odd: readers of the message this one overwrites see that it is going.
        sequence(slot).pointee.store(Self.writing(position), ordering: .sequentiallyConsistent)
        HotPath.crashPoint("broadcast.publish.afterMark")
        length(slot).pointee.store(UInt32(bytes.count), ordering: .relaxed)
        if let source = bytes.baseAddress, bytes.count > 0 {
            (slot + Self.dataOffset).copyMemory(from: source, byteCount: bytes.count)
        }
        HotPath.crashPoint("broadcast.publish.afterWrite")
        sequence(slot).pointee.store(Self.complete(position), ordering: .releasing)
        HotPath.crashPoint("broadcast.publish.afterComplete")
        // Adds (rather than stores), so that a concurrent close keeps its bit.
        head.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        // After `head` (see BroadcastNotifiers: a subscriber sets its bit before it reads `head`):
        // `descriptors_armed`, 16 bytes after `head` on its line (pinned by the header's
        // _Static_asserts), addressed from `head`'s pointer — the one extra load of a publish while
        // no subscriber waits by descriptor. The datagrams go after the turn is given back.
        let armed = atomic64(UnsafeMutableRawPointer(head) + 16).pointee.load(ordering: .sequentiallyConsistent)
        HotPath.crashPoint("broadcast.publish.afterHead")
        wakeSubscribers()
        releaseTurn()
        if armed != 0 { notifiers.poke() }
    }

    /// The turn was taken over from a publisher that died: a message it wrote whole is published;
    /// one it died writing is counted (the slot is written again by the next publish).
    private func repairAfterDeadPublisher() {
        let current = head.pointee.load(ordering: .acquiring) & ~Self.closedBit
        let observed = sequence(slot(at: current)).pointee.load(ordering: .acquiring)
        if observed == Self.complete(current) {
            head.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            completedPublishes.pointee.wrappingAdd(1, ordering: .relaxed)
            wakeSubscribers()
            if descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 { notifiers.poke() }
        } else if observed == Self.writing(current) {
            abandonedPublishes.pointee.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// Gives the publishing turn back, waking the publishers parked behind it (if `waking`, and
    /// one marked it contended).
    @inline(__always)
    private func releaseTurn(waking: Bool = true) {
        if publisher.pointee.exchange(0, ordering: .sequentiallyConsistent) & Self.flag != 0, waking { wake(spaceSignal) }
    }

    /// Claims the next position without waiting: nil if the ring is full of messages a live
    /// subscriber has not read (`.blockPublisher`), or another process is publishing. Checks once
    /// whether a process that holds the turn or a subscriber place died.
    func tryClaimForPublishing() throws(InterprocessError) -> UInt64? {
        var checked = false
        for _ in 0..<Self.tryRetries {
            switch try claimForPublishing(checkNow: false, announce: false) {
            case .done(let position): return position
            case .retry: continue
            case .park:
                if !checked {
                    checked = true
                    if case .done(let position) = try claimForPublishing(checkNow: true, announce: false) { return position }
                }
                // Another publisher's turn is short: worth a few more tries; a full ring is not.
                guard publisher.pointee.load(ordering: .relaxed) != 0 else { return nil }
                HotPath.pause()
            }
        }
        return nil
    }

    /// Claims the next position, blocking the thread while it has to wait, for at most `timeout`.
    func blockingClaimToPublish(timeout: Duration?) throws(InterprocessError) -> UInt64 {
        if case .done(let position) = try claimForPublishing(checkNow: false, announce: false) { return position }
        do throws(InterprocessError) {
            return try publishSite.blockingWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.claimForPublishing(checkNow: false, announce: false) },
                { check throws(InterprocessError) in try self.claimForPublishing(checkNow: check, announce: true) })
        } catch {
            passOnPublisherWake()
            throw error
        }
    }

    /// Claims the next position, suspending the task while it has to wait, for at most `timeout`;
    /// `cancelled` (having claimed nothing) if the task is cancelled.
    func claimToPublish(timeout: Duration?) async throws(InterprocessError) -> UInt64 {
        if case .done(let position) = try claimForPublishing(checkNow: false, announce: false) { return position }
        do throws(InterprocessError) {
            return try await publishSite.asyncWait(
                until: Deadline(after: timeout),
                whileSpinning: { _ throws(InterprocessError) in try self.claimForPublishing(checkNow: false, announce: false) },
                { check throws(InterprocessError) in try self.claimForPublishing(checkNow: check, announce: true) })
        } catch {
            passOnPublisherWake()
            throw error
        }
    }

    private var publishSite: WaitSite {
        WaitSite(word: spaceSignal, waiters: publishersWaiting, name: name, recheckEvery: Self.recoveryInterval)
    }

    private var receiveSite: WaitSite {
        WaitSite(word: publishSignal, waiters: subscribersWaiting, name: name, recheckEvery: Self.recoveryInterval)
    }

    /// A publisher that leaves a wait without publishing may have been woken for room it did not
    /// use: passes the wake-up on.
    private func passOnPublisherWake() {
        if atomic32(publishersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(spaceSignal) }
    }

    // MARK: Subscribing

    /// Takes a free subscriber place for this process, starting `history` messages (at most the
    /// capacity) before the next one published. A place whose subscriber died is reused. Returns
    /// the place's index. Throws `outOfMemory` when every place is held by a live subscriber.
    func join(history: Int) throws(InterprocessError) -> Int {
        for pass in 0..<2 {
            for index in 0..<maxSubscribers {
                let place = place(index)
                let holder = owner(place).pointee.load(ordering: .acquiring)
                if holder != 0 {
                    // The second pass reuses the places of subscribers that died (taken over
                    // directly as joining, so that nobody else frees it meanwhile).
                    let token = holder & ~Self.flag
                    guard pass == 1, token >= 1 << 32, token != me, !lease.isAlive(token),
                          owner(place).pointee.compareExchange(expected: holder, desired: me | Self.flag, ordering: .sequentiallyConsistent).exchanged
                    else { continue }
                    departed.pointee.wrappingAdd(1, ordering: .relaxed)
                } else {
                    guard owner(place).pointee.compareExchange(expected: 0, desired: me | Self.flag, ordering: .sequentiallyConsistent).exchanged else {
                        continue
                    }
                }
                HotPath.crashPoint("broadcast.subscribe.afterOwner")
                // A dead subscriber's descriptor: its socket file goes, its fields are zeroed.
                notifiers.clearReadiness(index)
                let current = head.pointee.load(ordering: .acquiring) & ~Self.closedBit
                let back = UInt64(min(max(history, 0), capacity))
                position(place).pointee.store(current >= back ? current - back : 0, ordering: .sequentiallyConsistent)
                missed(place).pointee.store(0, ordering: .relaxed)
                received(place).pointee.store(0, ordering: .relaxed)
                owner(place).pointee.store(me, ordering: .sequentiallyConsistent)
                generation.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
                return index
            }
        }
        throw InterprocessError(.outOfMemory, objectName: name,
            detail: "all \(maxSubscribers) subscriber places are taken by live subscribers")
    }

    /// Gives the place back (if it is still this process's), waking a publisher that waits for it.
    func leave(_ index: Int) {
        let place = place(index)
        if owner(place).pointee.load(ordering: .acquiring) == me { notifiers.clearReadiness(index) }
        if owner(place).pointee.compareExchange(expected: me, desired: 0, ordering: .sequentiallyConsistent).exchanged {
            if atomic32(publishersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(spaceSignal) }
        }
    }

    // MARK: Receiving

    /// One attempt to read the next message of the subscriber at place `index`: the message (copied
    /// out with `copy`, which must not keep the buffer and may run on bytes that are being
    /// overwritten: its result is used only if the slot did not change), how many messages it
    /// missed, or `.park` when it has read everything published. Throws `closed` once the broadcast
    /// is closed and everything was read.
    func read<Payload>(
        _ index: Int, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Payload
    ) throws(InterprocessError) -> WaitStep<BroadcastRead<Payload>> {
        switch try locate(index) {
        case .park(let expected): return .park(expected: expected)
        case .retry: return .retry
        case .done(let found):
            switch found {
            case .missed(let count): return .done(.missed(count))
            case .message(let position):
                let bytes = messageBytes(position)
                let payload: Payload
                do throws(InterprocessError) {
                    payload = try copy(bytes)
                } catch {
                    // A copy of bytes that were being overwritten is not the message's fault.
                    if !isUnchanged(position) { return .retry }
                    try drop(index, at: position)
                    throw error
                }
                return try commit(index, at: position) ? .done(.message(payload)) : .retry
            }
        }
    }

    /// Finds what the subscriber at `index` reads next: `.message(position)` when its message is in
    /// (and its length checked), or `.missed(count)` after moving the subscriber past messages that
    /// were overwritten.
    func locate(_ index: Int) throws(InterprocessError) -> WaitStep<BroadcastRead<UInt64>> {
        let place = place(index)
        let signal = atomic32(publishSignal).pointee.load(ordering: .sequentiallyConsistent)
        guard owner(place).pointee.load(ordering: .relaxed) == me else {
            throw InterprocessError(.corrupt, objectName: name, detail: "this subscription's place \(index) was taken by another process")
        }
        let at = position(place).pointee.load(ordering: .acquiring)
        let observedHead = head.pointee.load(ordering: .acquiring)
        let published = observedHead & ~Self.closedBit
        guard at <= published else {
            throw InterprocessError(.corrupt, objectName: name,
                detail: "subscriber place \(index) is at position \(at), past the \(published) messages published")
        }
        if at == published {
            if observedHead & Self.closedBit != 0 {
                throw InterprocessError(.closed, objectName: name, detail: "the broadcast was closed and every message was received")
            }
            return .park(expected: signal)
        }
        if published - at > UInt64(capacity) {
            // More than a ring behind: what is older than the ring is gone.
            return try skip(index, from: at, to: published - UInt64(capacity))
        }
        let slot = slot(at: at)
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        if observed == Self.complete(at) {
            guard Int(length(slot).pointee.load(ordering: .relaxed)) <= maxMessageSize else {
                if !isUnchanged(at) { return .retry }
                try drop(index, at: at)
                throw InterprocessError(.corrupt, objectName: name,
                    detail: "a message of \(length(slot).pointee.load(ordering: .relaxed)) bytes in a broadcast of at most \(maxMessageSize)-byte messages (dropped)")
            }
            return .done(.message(at))
        }
        // The slot does not hold our message: it was overwritten (by a later position of this
        // slot), or the ring is damaged.
        let holds = observed & 1 == 1 ? (observed &- 1) / 2 : (observed &- 2) / 2
        let freshHead = head.pointee.load(ordering: .acquiring) & ~Self.closedBit
        if observed != 0, holds > at, holds <= freshHead, holds % UInt64(capacity) == at % UInt64(capacity) {
            // Publishing `holds` overwrote `holds - capacity`, and everything before it.
            return try skip(index, from: at, to: holds - UInt64(capacity) + 1)
        }
        throw InterprocessError(.corrupt, objectName: name,
            detail: "slot \(at % UInt64(capacity)) has sequence \(observed), which does not fit position \(at) of \(freshHead) published")
    }

    /// The bytes of the message of `position` (its length checked by ``locate(_:)``; they
    /// may be overwritten while the caller copies them).
    func messageBytes(_ position: UInt64) -> UnsafeRawBufferPointer {
        let slot = slot(at: position)
        let count = min(Int(length(slot).pointee.load(ordering: .relaxed)), maxMessageSize)
        return UnsafeRawBufferPointer(start: slot + Self.dataOffset, count: count)
    }

    /// Whether the slot of `position` still holds its message, after its bytes were copied.
    func isUnchanged(_ position: UInt64) -> Bool {
        atomicMemoryFence(ordering: .acquiring)
        return sequence(slot(at: position)).pointee.load(ordering: .relaxed) == Self.complete(position)
    }

    /// Moves the subscriber from `position` to the next one once its message was copied whole;
    /// false if the copy is stale (overwritten meanwhile, or another thread of this subscription
    /// took the message): look again.
    func commit(_ index: Int, at position: UInt64) throws(InterprocessError) -> Bool {
        guard isUnchanged(position) else { return false }
        let place = place(index)
        guard self.position(place).pointee.compareExchange(expected: position, desired: position &+ 1, ordering: .sequentiallyConsistent).exchanged else {
            return false
        }
        HotPath.crashPoint("broadcast.receive.afterAdvance")
        received(place).pointee.wrappingAdd(1, ordering: .relaxed)
        wakePublisherIfWaiting()
        return true
    }

    /// Moves the subscriber past a damaged message (counted).
    private func drop(_ index: Int, at position: UInt64) throws(InterprocessError) {
        if self.position(place(index)).pointee.compareExchange(expected: position, desired: position &+ 1, ordering: .sequentiallyConsistent).exchanged {
            droppedMessages.pointee.wrappingAdd(1, ordering: .relaxed)
            wakePublisherIfWaiting()
        }
    }

    /// Moves the subscriber from `from` to `to` over messages that were overwritten.
    private func skip(_ index: Int, from: UInt64, to: UInt64) throws(InterprocessError) -> WaitStep<BroadcastRead<UInt64>> {
        let place = place(index)
        guard position(place).pointee.compareExchange(expected: from, desired: to, ordering: .sequentiallyConsistent).exchanged else {
            return .retry
        }
        missed(place).pointee.wrappingAdd(to &- from, ordering: .relaxed)
        wakePublisherIfWaiting()
        return .done(.missed(to &- from))
    }

    @inline(__always)
    private func wakePublisherIfWaiting() {
        if blocksPublisher, atomic32(publishersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(spaceSignal) }
    }

    /// Reads the next message without waiting: nil if the subscriber read everything published.
    func tryRead<Payload>(
        _ index: Int, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Payload
    ) throws(InterprocessError) -> BroadcastRead<Payload>? {
        for _ in 0..<Self.tryRetries {
            switch try read(index, copy) {
            case .done(let found): return found
            case .retry: continue
            case .park: return nil
            }
        }
        return nil
    }

    /// Reads the next message, blocking the thread while there is none, for at most `timeout`.
    func blockingRead<Payload>(
        _ index: Int, timeout: Duration?, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Payload
    ) throws(InterprocessError) -> BroadcastRead<Payload> {
        if case .done(let found) = try read(index, copy) { return found }
        return try receiveSite.blockingWait(until: Deadline(after: timeout)) { _ throws(InterprocessError) in try self.read(index, copy) }
    }

    /// Reads the next message, suspending the task while there is none, for at most `timeout`;
    /// `cancelled` (having read nothing) if the task is cancelled.
    func asyncRead<Payload>(
        _ index: Int, timeout: Duration?, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Payload
    ) async throws(InterprocessError) -> BroadcastRead<Payload> {
        if case .done(let found) = try read(index, copy) { return found }
        return try await receiveSite.asyncWait(until: Deadline(after: timeout)) { _ throws(InterprocessError) in try self.read(index, copy) }
    }

    // MARK: Closing and counts

    /// Closes the broadcast: no publish succeeds from now on; subscribers read what is in and then
    /// see the end.
    func close() {
        head.pointee.bitwiseOr(Self.closedBit, ordering: .sequentiallyConsistent)
        if descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 { notifiers.poke() }
        if atomic32(subscribersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(publishSignal, all: true) }
        if atomic32(publishersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(spaceSignal, all: true) }
    }

    var isClosed: Bool { head.pointee.load(ordering: .acquiring) & Self.closedBit != 0 }

    /// Messages published so far.
    var published: UInt64 { head.pointee.load(ordering: .acquiring) & ~Self.closedBit }

    /// Subscriber places held (a snapshot; includes subscribers that died and were not noticed yet).
    var subscriberCount: Int {
        (0..<maxSubscribers).reduce(0) { $0 + (owner(place($1)).pointee.load(ordering: .relaxed) != 0 ? 1 : 0) }
    }

    /// Messages the subscriber at `index` missed, and has not read yet.
    func missedCount(_ index: Int) -> UInt64 { missed(place(index)).pointee.load(ordering: .relaxed) }

    func backlog(_ index: Int) -> Int {
        let behind = published &- position(place(index)).pointee.load(ordering: .relaxed)
        return behind <= UInt64(capacity) ? Int(behind) : capacity
    }

    // MARK: Waking

    @inline(__always)
    private func wakeSubscribers() {
        if atomic32(subscribersWaiting).pointee.load(ordering: .sequentiallyConsistent) != 0 { wake(publishSignal, all: true) }
    }

    /// Bumps `signal` (so that a waiter about to park with its old value does not) and wakes one
    /// waiter, or all.
    @inline(never)
    private func wake(_ signal: UnsafeMutableRawPointer, all: Bool = true) {
        atomic32(signal).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        Futex.wake(signal, count: all ? Int32.max : 1)
    }

    private func closedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "the broadcast was closed")
    }
}
