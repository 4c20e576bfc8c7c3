public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// Publish / subscribe between processes: every subscriber receives every message published after
/// it subscribed, in order — plus, if it asks, the last few published before.
///
/// ```swift
/// struct Tick: Codable { var symbol: String; var price: Double }
///
/// let ticks = try Broadcast<Tick>.create(name: "ticks", capacity: 1024, policy: .dropOldest)
/// try await ticks.publish(Tick(symbol: "ACME", price: 12.5))
///
/// // In another process:
/// let subscription = try Broadcast<Tick>.open(name: "ticks").subscribe(history: 10)
/// for try await delivery in subscription.messages {
///     switch delivery {
///     case .message(let tick): print(tick)
///     case .missed(let count): print("fell behind: \(count) ticks overwritten before we read them")
///     }
/// }                                     // ends when the broadcast is closed and read to the end
/// ```
///
/// **Messages** travel as in a ``Channel``: `[UInt8]` as it is, `String` as UTF-8, a
/// `BitwiseCopyable` value as its raw bytes, any other `Codable` value as JSON; the creator records
/// the message type (its ``TypeFingerprint`` and the format) and opening as another type throws
/// `incompatible`. A message longer than `maxMessageSize` is refused (`invalidSize`) before
/// anything is published.
///
/// **A slow subscriber.** The ring holds the last `capacity` messages. What happens when a
/// subscriber has not read the oldest of them and a publisher needs its slot is chosen at creation
/// (``SlowSubscriberPolicy``):
/// - ``SlowSubscriberPolicy/blockPublisher``: the publisher waits until the slowest live
///   subscriber has read it. Nothing is ever lost for a subscriber, and the publisher goes at the
///   pace of the slowest one.
/// - ``SlowSubscriberPolicy/dropOldest``: the publisher never waits; it overwrites. A subscriber
///   that fell behind receives ``Delivery/missed(_:)`` with the exact number of messages it lost,
///   then the oldest message still there. A receive returns a ``Delivery``, not a message, so that
///   a program cannot miss that it missed something.
///
/// **Forms.** Publishing has an `async` form (``publish(_:timeout:)``), a blocking one
/// (``blockingPublish(_:timeout:)``) and a `try…` one (``tryPublish(_:)``); a ``Subscription``
/// receives the same three ways, and as ``Subscription/messages``. A `timeout` (nil: none) bounds
/// the wait (`timedOut`); a cancelled task publishes or receives nothing (`cancelled`).
///
/// **Subscriptions.** ``subscribe(history:)`` takes one of `maxSubscribers` places in the
/// broadcast; the ``Subscription`` gives it back when it is closed or goes away. Several threads
/// or tasks may receive from one subscription: each message goes to one of them. ``close()`` ends
/// the broadcast for everyone: publishing throws `closed`, subscribers read what is left and then
/// see the end (`closed`; ``Subscription/messages`` ends).
///
/// **Event loops.** An epoll, `poll` or SwiftNIO loop waits for a subscription without a thread of
/// its own on its ``Subscription/readinessDescriptor()`` (a ``ChannelReadiness``: when it is
/// readable, acknowledge, then ``Subscription/tryReceive()`` until nil).
///
/// ## How it works
/// A ring of `capacity` slots, each a sequence number, a length and the message, and a table of
/// subscriber places, each an owner word and a position (`cipc_broadcast` in
/// `CInterprocessBroadcast.h`, whose comments give the invariants). Publishers take turns (an owner
/// word holding the publishing process's token); the one whose turn it is marks the slot of the
/// next position p as being written (sequence 2p + 1), writes the length and the bytes, marks it
/// whole (2p + 2), advances `head` to p + 1, and wakes parked subscribers if there are any (a load
/// when there are none). Under `.blockPublisher`, before it overwrites position p − capacity it
/// checks that no live subscriber is still at it — against a cached slowest position, so that the
/// subscriber table is scanned about once per `capacity` messages, not per message. A subscriber
/// reads position q < `head` as a seqlock reader: sequence, bytes, sequence again; it advances its
/// own position with a compare-and-swap and wakes a parked publisher if there is one. No subscriber
/// writes anything another subscriber reads: their positions are on cache lines of their own.
///
/// **Owner tokens, not pids.** The turn and each subscriber place record the process's identity in
/// the segment's file, vouched for by a kernel lock that vanishes when the process dies (as
/// ``Channel`` and ``ProcessMutex`` record theirs): liveness is one `fcntl`, right across PID
/// namespaces, users and `hidepid`. A publisher waiting for its turn or for a slow subscriber
/// checks the owner every 50 ms (the `try…` form once).
///
/// ## What a process killed at each step leaves behind
/// - **A publisher** killed before it took the turn: nothing. Holding the turn, before it marked
///   the slot: the next publisher takes the turn over (within ~50 ms) and nothing was published.
///   While writing (slot marked 2p + 1): the message is **not** published; subscribers never see
///   it (it is at `head`, which they do not read), the next publisher writes position p again
///   (`abandonedPublishes`); the message it overwrote (p − capacity) is gone for a late subscriber's
///   history, which reports it missed. After marking it whole and before advancing `head`: the
///   message is whole, and the next publisher publishes it before its own (`completedPublishes`).
///   After advancing `head`: published; parked subscribers that it did not wake look again within
///   50 ms. So a message is either delivered whole to every subscriber or to none, and no
///   subscriber waits on a dead publisher (until another publisher comes, the broadcast is just
///   quiet).
/// - **A subscriber** killed at any step holds nothing that others need except its place: its
///   position is where it was. Under `.blockPublisher` a publisher that waits for it finds it dead
///   (within ~50 ms), clears its place (`departedSubscribers`) and goes on; a subscriber that joins
///   reuses the place. A subscriber killed mid-receive loses nothing for the others: reading
///   changes nothing but its own position.
/// - **Any waiter** killed while parked leaves its side's waiter count one too high: later
///   publishes (or reads) then make a spare wake-up call (~1 µs) while the count stays wrong.
///
/// **A late subscriber's history.** ``subscribe(history:)`` starts up to `history` messages back
/// (at most `capacity`). Those are what is still in the ring: a message that a publisher
/// overwrites while the subscriber joins, or one whose publisher died writing over it, is reported
/// as missed, under either policy. Messages published after `subscribe` returned are never missed
/// under `.blockPublisher`.
///
/// **Never trusting a peer.** Positions, sequence numbers, lengths and owners read from shared
/// memory are checked against each other before they are used: a subscriber position past `head`,
/// a sequence that names no position of its slot or one later than `head`, a length longer than a
/// slot, an owner that is not a token — the operation throws `corrupt` (a damaged message is
/// dropped, and counted), it never reads or writes outside the ring. A peer with write access can
/// still make the broadcast report `corrupt`, skip messages or wait.
///
/// **Handles.** ``close()`` closes the *broadcast*, for every process. A process that is done with
/// it calls ``detach()`` (or drops its last reference, and its subscriptions'): when the last
/// holder of a `.whileReferenced` broadcast detaches, the broadcast is removed.
public final class Broadcast<Message: Sendable>: @unchecked Sendable {
    // `@unchecked Sendable`: the shared state is reached through `ring`'s atomics; the rest is
    // immutable or atomic.

    let ring: BroadcastRing
    let state: BroadcastState
    let codec: ChannelCodec<Message>
    private let detached = Atomic<Bool>(false)

    /// What a publisher does when the ring is full of messages that a live subscriber has not read.
    public enum SlowSubscriberPolicy: Sendable, Hashable {
        /// The publisher waits until the slowest live subscriber has read the oldest message.
        case blockPublisher
        /// The publisher overwrites the oldest message; a subscriber that had not read it receives
        /// ``Delivery/missed(_:)``.
        case dropOldest

        var raw: UInt32 { self == .blockPublisher ? CIPC_BROADCAST_BLOCK_PUBLISHER : CIPC_BROADCAST_DROP_OLDEST }
    }

    /// What a subscription receives: the next message, or how many messages it missed (overwritten
    /// before it read them, under ``SlowSubscriberPolicy/dropOldest``; or gone from the ring before
    /// it read its history).
    public enum Delivery: Sendable {
        case message(Message)
        case missed(Int)

        /// The message, or nil for ``missed(_:)``.
        public var message: Message? {
            if case .message(let message) = self { return message }
            return nil
        }
    }

    init(state: BroadcastState, codec: ChannelCodec<Message>) throws(InterprocessError) {
        if let size = codec.fixedSize, size > state.ring.maxMessageSize {
            state.close()
            throw InterprocessError(.corrupt, objectName: state.name, detail: "its slots are smaller than one \(Message.self)")
        }
        self.state = state
        self.codec = codec
        ring = state.ring
    }

    static func create(
        name: String, capacity: Int, maxMessageSize: Int, maxSubscribers: Int, policy: SlowSubscriberPolicy,
        codec: ChannelCodec<Message>, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> Broadcast {
        let parameters = BroadcastParameters(
            capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy.raw,
            messageType: codec.messageType)
        return try create(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime)
    }

    static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int, maxSubscribers: Int, policy: SlowSubscriberPolicy,
        codec: ChannelCodec<Message>, permissions: FilePermissions, lifetime: Lifetime, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        let parameters = BroadcastParameters(
            capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy.raw,
            messageType: codec.messageType)
        return try openOrCreate(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    // MARK: The broadcast

    /// The broadcast's name.
    public var name: String { state.name ?? "" }
    /// How many messages the ring holds (the most history a subscriber can ask for).
    public var capacity: Int { ring.capacity }
    /// The largest message, in bytes (for raw values, the value's size).
    public var maxMessageSize: Int { codec.fixedSize ?? ring.maxMessageSize }
    /// How many subscriptions it has room for.
    public var maxSubscribers: Int { ring.maxSubscribers }
    /// What a publisher does about a slow subscriber.
    public var policy: SlowSubscriberPolicy { ring.policy == CIPC_BROADCAST_DROP_OLDEST ? .dropOldest : .blockPublisher }
    /// Messages published so far, by every process (a snapshot).
    public var publishedCount: Int { Int(truncatingIfNeeded: ring.published) }
    /// Subscriptions held, in every process (a snapshot; a subscriber that died counts until a
    /// publisher or a new subscriber notices).
    public var subscriberCount: Int { ring.subscriberCount }
    /// Whether ``close()`` was called (by any process).
    public var isClosed: Bool { ring.isClosed }

    /// Closes the broadcast for every process: from now on publishing throws `closed`; subscribers
    /// read what was published, then their receives throw `closed` and ``Subscription/messages``
    /// ends. Closing twice does nothing more.
    public func close() {
        ring.close()
    }

    /// This process stops using the broadcast through this handle; the last holder of a
    /// `.whileReferenced` broadcast removes it. Later calls on this handle and its subscriptions
    /// throw `closed`. Idempotent; also done when the last reference goes away.
    public func detach() {
        detached.store(true, ordering: .relaxed)
        state.close()
    }

    /// Removes the name of the broadcast `name` (`incompatible` if it is not a broadcast);
    /// processes that have it open go on using it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(BroadcastState.self, name: name)
    }

    func checkAttached() throws(InterprocessError) {
        if detached.load(ordering: .relaxed) {
            throw InterprocessError(.closed, objectName: name, detail: "this handle was detached")
        }
    }

    // MARK: Publishing

    /// Publishes `message` to every subscriber, suspending the task (no thread blocks) while it
    /// has to wait — for its turn, or under ``SlowSubscriberPolicy/blockPublisher`` for the slowest
    /// live subscriber — for at most `timeout` (nil: as long as it takes).
    /// - Throws: `closed` if the broadcast is (or gets) closed; `invalidSize` for a message longer
    ///   than ``maxMessageSize``; `encodingFailed`; `timedOut`; `cancelled` if the task is
    ///   cancelled — in each case having published nothing; `corrupt` if the state was damaged.
    public func publish(_ message: Message, timeout: Duration? = nil) async throws(InterprocessError) {
        try checkAttached()
        if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
        let payload = try encode(message)
        let position = try await ring.claimToPublish(timeout: timeout)
        payload.withBytes { ring.finishPublish(position, $0) }
    }

    /// Publishes `message`, blocking the calling thread while it has to wait, for at most
    /// `timeout` — nil: as long as it takes. The blocking form of ``publish(_:timeout:)``, with its
    /// errors (but never `cancelled`).
    @available(*, noasync, message: "use the async publish(_:timeout:) in async code")
    public func blockingPublish(_ message: Message, timeout: Duration? = nil) throws(InterprocessError) {
        try checkAttached()
        let payload = try encode(message)
        let position = try ring.blockingClaimToPublish(timeout: timeout)
        payload.withBytes { ring.finishPublish(position, $0) }
    }

    /// Publishes `message` if it can now; never waits. Returns false (having published nothing)
    /// when it would have to wait: under ``SlowSubscriberPolicy/blockPublisher`` a live subscriber
    /// has not read the oldest message, or another process is publishing at this moment.
    /// - Throws: `closed`, `invalidSize`, `encodingFailed`, `corrupt`, as ``publish(_:timeout:)``.
    public func tryPublish(_ message: Message) throws(InterprocessError) -> Bool {
        try checkAttached()
        let payload = try encode(message)
        guard let position = try ring.tryClaimForPublishing() else { return false }
        payload.withBytes { ring.finishPublish(position, $0) }
        return true
    }

    private func encode(_ message: Message) throws(InterprocessError) -> ChannelPayload<Message> {
        let payload: ChannelPayload<Message>
        do throws(InterprocessError) {
            payload = try codec.encode(message)
        } catch {
            var error = error
            error.objectName = name
            throw error
        }
        guard payload.count <= ring.maxMessageSize else {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "a message of \(payload.count) bytes does not fit the broadcast's \(ring.maxMessageSize)-byte slots")
        }
        return payload
    }

    // MARK: Subscribing

    /// Subscribes: the subscription receives every message published from now on and, with
    /// `history`, up to that many of the last messages published before (at most ``capacity``;
    /// fewer if fewer were published). Throws `outOfMemory` when all ``maxSubscribers`` places are
    /// held by live subscribers, `invalidArgument` for a negative history.
    public func subscribe(history: Int = 0) throws(InterprocessError) -> Subscription {
        try checkAttached()
        guard history >= 0 else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "a history of \(history) messages")
        }
        return Subscription(broadcast: self, place: try ring.join(history: history))
    }

    /// One subscriber of a broadcast: receives every message published after it subscribed (see
    /// ``Broadcast``). ``close()`` — or the last reference going away — unsubscribes; until then,
    /// under ``SlowSubscriberPolicy/blockPublisher``, publishers wait for it when it falls a ring
    /// behind, so a program that stops reading should close its subscription.
    ///
    /// `@unchecked Sendable`: its state is the broadcast's shared memory (atomics) and an atomic flag.
    public final class Subscription: @unchecked Sendable {
        let broadcast: Broadcast
        let place: Int
        private let closed = Atomic<Bool>(false)
        /// Its readiness descriptor, if one is open (``readinessDescriptor()``).
        let readinessLink = SubscriptionReadinessLink()

        init(broadcast: Broadcast, place: Int) {
            self.broadcast = broadcast
            self.place = place
        }

        deinit { close() }

        /// The broadcast it receives from.
        public var name: String { broadcast.name }

        /// Unsubscribes: publishers stop waiting for it, and its place is free for another
        /// subscriber; its readiness descriptor, if it has one, is closed. Later receives throw
        /// `closed`. Idempotent; also done when the last reference goes away.
        public func close() {
            guard !closed.exchange(true, ordering: .relaxed) else { return }
            readinessLink.release()
            broadcast.ring.leave(place)
        }

        /// Messages published that this subscription has not received yet (a snapshot, at most the
        /// capacity).
        public var backlog: Int { broadcast.ring.backlog(place) }

        /// Messages this subscription missed so far, in all (the sum of its ``Delivery/missed(_:)``).
        public var missedCount: Int { Int(truncatingIfNeeded: broadcast.ring.missedCount(place)) }

        func check() throws(InterprocessError) {
            if closed.load(ordering: .relaxed) {
                throw InterprocessError(.closed, objectName: name, detail: "the subscription was closed")
            }
            try broadcast.checkAttached()
        }

        /// Receives the next message — or hears how many it missed — suspending the task (no thread
        /// blocks) while there is none, for at most `timeout` (nil: as long as it takes).
        /// - Throws: `closed` once the broadcast is closed and everything was received (or this
        ///   subscription was closed); `timedOut`; `cancelled` if the task is cancelled — in both
        ///   cases having received nothing; `decodingFailed` for a message that is not a valid
        ///   `Message` (it was received); `corrupt` if the ring was damaged.
        public func receive(timeout: Duration? = nil) async throws(InterprocessError) -> Delivery {
            try check()
            if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
            let codec = broadcast.codec
            return try deliver(try await broadcast.ring.asyncRead(place, timeout: timeout) { bytes throws(InterprocessError) in try codec.copyOut(bytes) })
        }

        /// Receives the next message (or hears how many it missed), blocking the calling thread
        /// while there is none, for at most `timeout` — nil: as long as it takes. The blocking form
        /// of ``receive(timeout:)``, with its errors (but never `cancelled`).
        @available(*, noasync, message: "use the async receive(timeout:) in async code")
        public func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> Delivery {
            try check()
            let codec = broadcast.codec
            return try deliver(try broadcast.ring.blockingRead(place, timeout: timeout) { bytes throws(InterprocessError) in try codec.copyOut(bytes) })
        }

        /// Receives the next message (or hears how many it missed) if there is one now; never
        /// waits. Returns nil if this subscription received everything published.
        /// - Throws: as ``receive(timeout:)`` (but never `timedOut` or `cancelled`).
        public func tryReceive() throws(InterprocessError) -> Delivery? {
            try check()
            let codec = broadcast.codec
            guard let read = try broadcast.ring.tryRead(place, { bytes throws(InterprocessError) in try codec.copyOut(bytes) }) else {
                return nil
            }
            return try deliver(read)
        }

        private func deliver(_ read: BroadcastRead<ChannelPayload<Message>>) throws(InterprocessError) -> Delivery {
            switch read {
            case .missed(let count):
                return .missed(Int(truncatingIfNeeded: count))
            case .message(let payload):
                do throws(InterprocessError) {
                    return .message(try broadcast.codec.decode(payload))
                } catch {
                    var error = error
                    error.objectName = name
                    throw error
                }
            }
        }

        /// What arrives, as an `AsyncSequence` of ``Delivery``: each iteration receives as
        /// ``receive(timeout:)`` does. Ends when the broadcast is closed and everything was
        /// received; throws what a receive throws otherwise (`cancelled` when the iterating task is
        /// cancelled).
        public var messages: Deliveries { Deliveries(subscription: self) }

        /// What a subscription receives, as it arrives (see ``Subscription/messages``).
        public struct Deliveries: AsyncSequence, Sendable {
            public typealias Element = Delivery
            public typealias Failure = InterprocessError

            let subscription: Subscription

            public func makeAsyncIterator() -> Iterator { Iterator(subscription: subscription) }

            /// Receives the next delivery on each call.
            public struct Iterator: AsyncIteratorProtocol {
                public typealias Element = Delivery
                public typealias Failure = InterprocessError

                let subscription: Subscription
                private var finished = false

                init(subscription: Subscription) { self.subscription = subscription }

                /// The next delivery, or nil once the broadcast is closed and read to the end.
                public mutating func next() async throws(InterprocessError) -> Delivery? {
                    guard !finished else { return nil }
                    do throws(InterprocessError) {
                        return try await subscription.receive()
                    } catch where error.code == .closed {
                        finished = true
                        return nil
                    }
                }

                /// The next delivery, or nil once the broadcast is closed and read to the end.
                public mutating func next(isolation actor: isolated (any Actor)?) async throws(InterprocessError) -> Delivery? {
                    guard !finished else { return nil }
                    do throws(InterprocessError) {
                        return try await subscription.receive()
                    } catch where error.code == .closed {
                        finished = true
                        return nil
                    }
                }
            }
        }
    }
}

extension Broadcast.Delivery: Equatable where Message: Equatable {}
extension Broadcast.Delivery: Hashable where Message: Hashable {}

// MARK: - Any message type, as bytes (for `ipc publish` / `ipc subscribe`)

extension Broadcast where Message == [UInt8] {
    /// Opens a broadcast whatever its message type, to publish and receive its messages' bytes as
    /// they are. For the `ipc` tool, which knows the formats (``messageFormat``).
    package static func openAnyType(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try Broadcast(state: SharedObjectStorage.open(BroadcastState.self, name: name, expecting: nil, trusting: trust), codec: .bytes)
    }
}

extension Broadcast {
    /// How the broadcast's messages are encoded, as its creator recorded it.
    package var messageFormat: ChannelMessageFormat {
        switch state.recordedFormat {
        case CIPC_CHANNEL_FORMAT_VALUE: .rawValue
        case CIPC_CHANNEL_FORMAT_JSON: .json
        case CIPC_CHANNEL_FORMAT_TEXT: .text
        default: .bytes
        }
    }

    /// The message type its creator recorded.
    package var messageTypeDescription: String { state.recordedType }
}

// MARK: - Creating and opening, by message type

extension Broadcast where Message == [UInt8] {
    /// Creates a broadcast of byte messages of up to `maxMessageSize` bytes whose ring holds the
    /// last `capacity` of them, with room for `maxSubscribers` subscriptions. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576, a size outside 1...16 MiB or a number of subscribers outside 1...4096.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Broadcast {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                   codec: .bytes, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a broadcast of byte messages (`incompatible` if its messages are of another type).
    /// Only a broadcast of a trusted owner opens (by default: this process's user).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try open(name: name, codecs: .bytes, trusting: trust)
    }

    /// Opens the broadcast, or creates it as `create(name:capacity:maxMessageSize:maxSubscribers:policy:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                         codec: .bytes, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Broadcast where Message == String {
    /// Creates a broadcast of strings (sent as UTF-8) of up to `maxMessageSize` bytes whose ring
    /// holds the last `capacity` of them, with room for `maxSubscribers` subscriptions. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for parameters out of range.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Broadcast {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                   codec: .text, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a broadcast of strings (`incompatible` if its messages are of another type). Only a
    /// broadcast of a trusted owner opens (by default: this process's user).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try open(name: name, codecs: .text, trusting: trust)
    }

    /// Opens the broadcast, or creates it as `create(name:capacity:maxMessageSize:maxSubscribers:policy:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                         codec: .text, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Broadcast where Message: Codable {
    /// Creates a broadcast of `Message` values sent as JSON, of up to `maxMessageSize` bytes each,
    /// whose ring holds the last `capacity` of them, with room for `maxSubscribers` subscriptions.
    /// Throws `alreadyExists` if the name is taken, `invalidArgument` for parameters out of range.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Broadcast {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                   codec: .json, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a broadcast of `Message` values sent as JSON (`incompatible` if its messages are of
    /// another type). Only a broadcast of a trusted owner opens (by default: this process's user).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try open(name: name, codecs: .json, trusting: trust)
    }

    /// Opens the broadcast, or creates it as `create(name:capacity:maxMessageSize:maxSubscribers:policy:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxMessageSize: maxMessageSize, maxSubscribers: maxSubscribers, policy: policy,
                         codec: .json, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Broadcast where Message: BitwiseCopyable {
    /// Creates a broadcast of `Message` values copied byte for byte (every process must agree on
    /// the type's layout) whose ring holds the last `capacity` of them, with room for
    /// `maxSubscribers` subscriptions. Throws `alreadyExists` if the name is taken,
    /// `invalidArgument` for parameters out of range.
    public static func create(
        name: String, capacity: Int, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Broadcast {
        try create(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), maxSubscribers: maxSubscribers,
                   policy: policy, codec: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a broadcast of raw `Message` values (`incompatible` if its messages are of another
    /// type, even one of the same size). Only a broadcast of a trusted owner opens.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try open(name: name, codecs: .raw, trusting: trust)
    }

    /// Opens the broadcast, or creates it as `create(name:capacity:maxSubscribers:policy:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), maxSubscribers: maxSubscribers,
                         policy: policy, codec: .raw, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Broadcast where Message: BitwiseCopyable & Codable {
    /// Creates a broadcast of `Message` values copied byte for byte (a type that is both
    /// `BitwiseCopyable` and `Codable` travels raw) whose ring holds the last `capacity` of them.
    /// Throws `alreadyExists` if the name is taken, `invalidArgument` for parameters out of range.
    public static func create(
        name: String, capacity: Int, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Broadcast {
        try create(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), maxSubscribers: maxSubscribers,
                   policy: policy, codec: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a broadcast of raw `Message` values (`incompatible` if its messages are of another type).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Broadcast {
        try open(name: name, codecs: .raw, trusting: trust)
    }

    /// Opens the broadcast, or creates it as `create(name:capacity:maxSubscribers:policy:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxSubscribers: Int = 64, policy: SlowSubscriberPolicy = .blockPublisher,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (broadcast: Broadcast, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), maxSubscribers: maxSubscribers,
                         policy: policy, codec: .raw, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}
