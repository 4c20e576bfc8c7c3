import CInterprocess
import InterprocessSystem
import Synchronization

// Readiness descriptors for broadcast subscriptions: the channel's ``ChannelReadiness`` (its socket,
// its protocol, its code), registered in the subscription's own place of the broadcast's subscriber
// table instead of a table of participants. The layout (`notifier`, `pokes`, `armed` in each
// `cipc_broadcast_subscriber`, `descriptors_armed` in the header) and the protocol are described
// in `CInterprocessBroadcast.h`.

/// The readiness fields of a broadcast's subscriber places and the header's `descriptors_armed`
/// word: arming a place, sending the datagrams after a publish, and clearing a place's fields
/// (removing a dead subscriber's socket file) when the place is freed.
///
/// **No lost wake-up.** Each side does one thing and then looks at what the other did, both
/// sequentially consistent:
/// - the subscriber (``arm(_:)``, from ``ChannelReadiness/acknowledge()``) stores its place's
///   `armed` = 1, *then* sets its bit in `descriptors_armed`, and only then reads `head` (its
///   `tryReceive` calls);
/// - the publisher advances `head` (``BroadcastRing/finishPublish(_:_:)``), *then* loads
///   `descriptors_armed`.
/// Take a publish, and the publisher's load of the word that follows its advance of `head`, in the
/// single order of these sequentially consistent operations; and the subscriber's last bit-setting
/// before that load, if any.
/// - None: the subscriber's next bit-setting comes after the load, and its receives, which follow
///   it, read a `head` that includes the message.
/// - Its bit is still in the word at the load: the publisher sees it and takes it (an exchange that
///   reads the bit, so it also sees the `armed` stored before the bit) and sends the datagram — or
///   another publisher took that `armed` first, and sent it.
/// - An earlier exchange took it: that publisher sent the datagram (as above), which the subscriber
///   has not acknowledged yet (an acknowledgement sets the bit again, and that would be a later
///   setting). The descriptor is readable; the receives after the acknowledgement follow a setting
///   that comes after the load, so they see the message.
/// A bit taken before the subscriber stored `armed` just costs a publisher a look at the place; a
/// bit left in the word when no place is armed costs the next publisher one scan. Neither loses a
/// wake-up.
///
/// **Never trusting the table.** Indices are below `max_subscribers` (validated at opening) by
/// construction; a socket path is never read from shared memory: it is built from this process's
/// own copy of the broadcast's name and the number (``ReadinessSocket``). A scribbled number names
/// no socket (or another registration of this broadcast: a spurious wake-up).
///
/// `@unchecked Sendable`: the fields are reached only through atomics; the rest is immutable.
final class BroadcastNotifiers: @unchecked Sendable {
    /// What the socket files' names start with (`bcready-<name hash>-<number>`).
    static let socketKind = "bcready"

    private let places: UnsafeMutableRawPointer
    private let maxSubscribers: Int
    /// The header's `descriptors_armed`: bit b, a place of index b mod 64 may be armed.
    let armedWord: UnsafeMutablePointer<Atomic<UInt64>>
    private let departed: UnsafeMutablePointer<Atomic<UInt64>>
    private let lease: OwnerLease
    private let me: UInt64
    /// `<runtime directory>/bcready-<name hash>-`, or nil for a broadcast without a name.
    let socketPrefix: String?

    init(base: UnsafeMutableRawPointer, maxSubscribers: Int, name: String?, lease: OwnerLease) {
        places = base + BroadcastLayout.headerSize
        self.maxSubscribers = maxSubscribers
        armedWord = atomic64(base + fieldOffset(\cipc_broadcast.descriptors_armed))
        departed = atomic64(base + fieldOffset(\cipc_broadcast.departed_subscribers))
        self.lease = lease
        me = lease.token
        socketPrefix = name.map { ReadinessSocket.prefix(kind: Self.socketKind, name: $0) }
    }

    // MARK: Fields

    private func place(_ index: Int) -> UnsafeMutableRawPointer { places + index * BroadcastLayout.subscriberSize }
    private func owner(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(place(index) + fieldOffset(\cipc_broadcast_subscriber.owner))
    }
    private func notifier(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(place(index) + fieldOffset(\cipc_broadcast_subscriber.notifier))
    }
    private func pokes(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(place(index) + fieldOffset(\cipc_broadcast_subscriber.pokes))
    }
    private func armed(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(place(index) + fieldOffset(\cipc_broadcast_subscriber.armed))
    }

    /// The socket file of the readiness descriptor numbered `number`.
    func socketPath(_ number: UInt64) -> String? { socketPrefix.map { $0 + ReadinessSocket.hex(number) } }

    // MARK: A subscriber's own place

    /// Records `number` as place `index`'s socket if it has none (false: it has one).
    func claimNotifier(_ index: Int, _ number: UInt64) -> Bool {
        notifier(index).pointee.compareExchange(expected: 0, desired: number, ordering: .sequentiallyConsistent).exchanged
    }

    func setNotifier(_ index: Int, _ number: UInt64) {
        notifier(index).pointee.store(number, ordering: .sequentiallyConsistent)
    }

    /// Asks for a datagram at the next publish: `armed` first, then the bit (see the type's comment).
    func arm(_ index: Int) {
        armed(index).pointee.store(1, ordering: .sequentiallyConsistent)
        armedWord.pointee.bitwiseOr(UInt64(1) << UInt64(index & 63), ordering: .sequentiallyConsistent)
    }

    /// Stops asking. The bit stays for the next publisher to take (it may cover other places).
    func disarm(_ index: Int) {
        armed(index).pointee.store(0, ordering: .sequentiallyConsistent)
    }

    func pokeCount(_ index: Int) -> UInt64 { pokes(index).pointee.load(ordering: .relaxed) }

    /// Clears place `index`'s readiness fields, removing the socket file its number names if it is
    /// a dead registration's (this user's socket, nobody bound). Only the place's owner — a
    /// subscriber leaving, or whoever took a dead subscriber's place over — calls this.
    func clearReadiness(_ index: Int) {
        armed(index).pointee.store(0, ordering: .sequentiallyConsistent)
        let number = notifier(index).pointee.load(ordering: .acquiring)
        if number != 0, let path = socketPath(number) { ReadinessSocket.removeIfDead(path) }
        pokes(index).pointee.store(0, ordering: .relaxed)
        notifier(index).pointee.store(0, ordering: .releasing)
    }

    /// Frees place `index` if its owner is still `dead`: takes it (our token with the flag bit, as a
    /// joining subscriber would: it holds no publisher back), clears its readiness fields, counts it
    /// departed and frees it. A sweeper killed in between leaves the place to a dead token with the
    /// flag bit, which the next subscriber to join takes over in turn. False if the owner changed.
    @discardableResult
    func sweep(_ index: Int, dead: UInt64) -> Bool {
        guard dead != 0, owner(index).pointee.compareExchange(
            expected: dead, desired: me | OwnerLease.flagBit, ordering: .sequentiallyConsistent
        ).exchanged else { return false }
        HotPath.crashPoint("broadcast.readiness.sweep.taken")
        clearReadiness(index)
        departed.pointee.wrappingAdd(1, ordering: .relaxed)
        owner(index).pointee.store(0, ordering: .sequentiallyConsistent)
        return true
    }

    // MARK: Publishers

    /// Sends one datagram to every armed place, taking their bits and flags (each asks again when
    /// it has been emptied). A datagram refused because the socket is gone, from a place whose
    /// owner is dead, sweeps the place. Called by a publisher that advanced `head` (or closed the
    /// broadcast) and found `descriptors_armed` not 0.
    @inline(never)
    func poke() {
        var bits = armedWord.pointee.exchange(0, ordering: .sequentiallyConsistent)
        while bits != 0 {
            var index = bits.trailingZeroBitCount
            bits &= bits &- 1
            while index < maxSubscribers {
                // The exchange on the word read the subscriber's bit, stored after its `armed`:
                // this load sees that store (or a later one).
                if armed(index).pointee.load(ordering: .relaxed) != 0,
                   armed(index).pointee.exchange(0, ordering: .sequentiallyConsistent) != 0 {
                    send(index)
                }
                index += 64
            }
        }
    }

    private func send(_ index: Int) {
        let word = owner(index).pointee.load(ordering: .acquiring)
        let number = notifier(index).pointee.load(ordering: .acquiring)
        guard word >> 32 != 0, word & OwnerLease.flagBit == 0, number != 0, let path = socketPath(number),
              let sent = ReadinessSocket.poke(path)
        else { return }
        switch sent {
        case .success:
            pokes(index).pointee.wrappingAdd(1, ordering: .relaxed)
        case .failure(let error):
            if ReadinessSocket.isGone(error), word != me, !lease.isAlive(word) { sweep(index, dead: word) }
        }
    }
}

/// What a subscription and its readiness descriptor share: whether the subscription still holds its
/// place (the descriptor's changes to the place are made under this lock, so that none lands after
/// the place was given back), and the descriptor, so that closing the subscription closes it.
///
/// `@unchecked Sendable`: its state is behind the mutex (a weak reference is not `Sendable` by itself).
final class SubscriptionReadinessLink: @unchecked Sendable {
    private struct State {
        var placeHeld = true
        weak var descriptor: ChannelReadiness?
    }
    private let state = Mutex(State())

    /// Runs `body` if the subscription still holds its place.
    func ifHeld<T>(_ body: () -> T) -> T? {
        state.withLock { $0.placeHeld ? body() : nil }
    }

    func register(_ descriptor: ChannelReadiness) {
        state.withLock { $0.descriptor = descriptor }
    }

    /// Closes the descriptor (if one is open), then marks the place as given up: call before
    /// leaving the place.
    func release() {
        let descriptor = state.withLock { state -> ChannelReadiness? in
            defer { state.descriptor = nil }
            return state.descriptor
        }
        descriptor?.close()
        state.withLock { $0.placeHeld = false }
    }
}

/// A subscription's place, as the table a ``ChannelReadiness`` registers in: the entry is the place
/// itself (already held), so joining and leaving do nothing but check; every change goes through
/// the link, so that none is made after the subscription gave its place back. Keeps the
/// subscription alive (`keepAlive`) while the descriptor is open.
final class SubscriptionReadinessTable: ReadinessTable {
    private let notifiers: BroadcastNotifiers
    private let place: Int
    private let link: SubscriptionReadinessLink
    private let keepAlive: any Sendable

    init(notifiers: BroadcastNotifiers, place: Int, link: SubscriptionReadinessLink, keepAlive: any Sendable) {
        self.notifiers = notifiers
        self.place = place
        self.link = link
        self.keepAlive = keepAlive
    }

    func join() -> Int? { link.ifHeld { place } }
    func leave() {}
    func claimNotifier(_ index: Int, _ number: UInt64) -> Bool { link.ifHeld { notifiers.claimNotifier(index, number) } ?? false }
    func setNotifier(_ index: Int, _ number: UInt64) { link.ifHeld { notifiers.setNotifier(index, number) } }
    func socketPath(_ number: UInt64) -> String? { notifiers.socketPath(number) }
    func arm(_ index: Int) { link.ifHeld { notifiers.arm(index) } }
    func disarm(_ index: Int) { link.ifHeld { notifiers.disarm(index) } }
    func pokeCount(_ index: Int) -> UInt64 { notifiers.pokeCount(index) }
    var crashPoints: ReadinessCrashPoints { .broadcast }

    func noEntryError(name: String) -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "the subscription was closed")
    }

    func duplicateError(name: String) -> InterprocessError {
        InterprocessError(.alreadyExists, objectName: name, detail: "this subscription already has a readiness descriptor: share that one")
    }
}

extension Broadcast.Subscription {
    /// A descriptor that becomes readable when a message is published after this subscription
    /// asked for a wake-up, for an event loop (epoll, `poll`, SwiftNIO): the same
    /// ``ChannelReadiness`` a channel gives, with the same protocol — whenever it is readable, call
    /// ``ChannelReadiness/acknowledge()``, then ``tryReceive()`` until nil (a ``Broadcast/Delivery``
    /// may be ``Broadcast/Delivery/missed(_:)``). Right after creating it, receive until nil once:
    /// messages already published do not make it readable. ``Broadcast/close()`` makes it readable
    /// too (the receives then drain what is left and throw `closed`).
    ///
    /// One per subscription at a time; close it (or drop it) when done. Closing the subscription
    /// closes its descriptor; the descriptor keeps the subscription alive while it is open.
    /// Socket files are named `bcready-…` in the runtime directory; a subscriber killed with its
    /// descriptor armed is swept by the next publish (its place freed, its socket file removed).
    /// - Throws: `alreadyExists` if this subscription has one open; `incompatible` for a broadcast
    ///   without a name (placed in a segment); `closed` on a closed subscription or a detached
    ///   handle; `permissionDenied` if the runtime directory is not this user's own; `systemError`
    ///   if the socket cannot be made.
    public func readinessDescriptor() throws(InterprocessError) -> ChannelReadiness {
        try check()
        let notifiers = broadcast.ring.notifiers
        guard notifiers.socketPrefix != nil else {
            throw InterprocessError(.incompatible, objectName: name,
                detail: "this broadcast has no name (placed in a segment): its subscriptions have no readiness descriptors")
        }
        let table = SubscriptionReadinessTable(notifiers: notifiers, place: place, link: readinessLink, keepAlive: self)
        let descriptor = try ChannelReadiness(participants: table, name: name)
        readinessLink.register(descriptor)
        return descriptor
    }
}
