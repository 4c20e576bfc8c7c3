import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A bounded queue of messages with priorities between processes — like a POSIX message queue
/// (`mq_send` / `mq_receive`) or Boost's `message_queue`: each message goes to exactly one receiver,
/// the message of highest priority first and, within one priority, the one sent first.
///
/// ```swift
/// let alerts = try MessageQueue<String>.create(name: "alerts", capacity: 64)   // or .open(name:)
/// try await alerts.send("disk full", priority: 9)      // suspends while the queue is full
/// try await alerts.send("backup done")                 // priority 0
/// let first = try await alerts.receive()               // "disk full": higher priority first
/// let (text, priority) = try await alerts.receiveWithPriority()
/// for try await alert in alerts.messages { … }         // until the queue is closed and drained
/// alerts.close()                                       // senders get `closed`; receivers drain, then end
/// ```
///
/// **Messages** are those of ``Channel``: `[UInt8]` as it is, `String` as UTF-8, a
/// `BitwiseCopyable` value as its raw bytes, any other `Codable` value as JSON; each fits a slot of
/// `maxMessageSize` bytes (longer: `invalidSize`, nothing sent). The creator records the message
/// type (its ``TypeFingerprint`` and format); opening the queue as another type is `incompatible`.
/// A priority is `0...4_294_967_295` (`invalidArgument` otherwise); 0 unless given.
///
/// **Forms.** Every send and receive is `async` (``send(_:priority:timeout:)``,
/// ``receive(timeout:)``: the task suspends, cancellation ends the wait having sent or taken
/// nothing), blocking (``blockingSend(_:priority:timeout:)``, ``blockingReceive(timeout:)``:
/// unavailable in async code) or `try…` (never waits); a `timeout` (nil: none) makes a wait throw
/// `timedOut`. ``close()`` ends the queue for everyone: sends throw `closed`, receivers take what is
/// left (also messages whose send was under way) and then throw `closed`; ``messages`` ends.
///
/// ## How it works
/// `capacity` slots, each with its own *state* — free, being written (by the owner token of its
/// sender), ready (with its priority and a queue-wide publication number), being read (by the owner
/// token of its receiver) — plus two caches of those states: a binary heap of the ready slots
/// (priority, then publication number) and a stack of the free ones (`cipc_mqueue` in
/// `CInterprocessMessageQueue.h`). A robust lock word guards states and caches; it is held for a few
/// dozen memory operations and never while bytes are copied or anyone waits. A **send** takes a free
/// slot under the lock (state *writing*), copies the message in without the lock, then, under the
/// lock, gives it the next publication number and its priority, marks it *ready* and pushes it on the
/// heap. A **receive** pops the heap's top under the lock (state *reading*), copies the message out
/// without the lock, then frees the slot under the lock. Waiting receivers park on one futex word and
/// senders on another, counted; a publish into an empty queue (a release from a full one) bumps its
/// word and wakes one waiter if one is parked, and a waiter that was woken passes the wake-up on
/// when it leaves more behind, so that a stream makes one wake-up call per park, not one per message.
/// (Finishing a send or receive takes the lock even in `async` code: it is held so
/// briefly that waiting for it is spinning, and what was claimed must be finished.)
///
/// **Owner tokens, not pids.** The lock word and the slots being written or read hold the owner token
/// of a process: its identity in the segment's file, vouched for by a kernel lock that vanishes when
/// it dies (as ``ProcessMutex`` records its owner), so liveness is right across PID namespaces,
/// users and `hidepid`.
///
/// ## What a process killed at each step leaves behind
/// No undo journal: the slot states are the truth, and whoever takes the lock from a dead holder
/// rebuilds the heap and the free stack from them. Slots being written or read by a process that
/// died are repaired from their state by a waiting sender or receiver (at its first park, then every
/// ~50 ms), by a `try…` form that finds nothing (once), or by a receiver that finds the queue closed
/// and empty; the lock of a dead holder is taken over by the next process that waits for it (within
/// ~25 ms) or by a `try…` form.
///
/// | killed… | the message | repaired by |
/// | --- | --- | --- |
/// | sender, holding the lock to claim a slot | not sent; the slot is free again | the next locker rebuilds |
/// | sender, while writing (slot *writing*) | **not sent**: the slot is freed (`abandonedSends`) | a waiter's repair scan |
/// | sender, holding the lock to publish, before the slot is *ready* | not sent, as above | the next locker rebuilds |
/// | sender, holding the lock to publish, after the slot is *ready* | **sent**, in its place | the next locker rebuilds (heap) |
/// | receiver, holding the lock to claim | still there | the next locker rebuilds |
/// | receiver, while copying (slot *reading*) | **redelivered** once repaired, in its place by priority and age among what is queued then (`redeliveries`) | a waiter's repair scan |
/// | receiver, holding the lock to free the slot | gone with it (it was copied) | the next locker rebuilds |
/// | anyone, while parked | nothing; the waiter count stays one too high (spare wake-up calls) | — |
/// | a repairer, while repairing | the next repairer repairs the same way | — |
///
/// So a message is delivered whole or not at all, never twice to receives that returned, and the
/// queue keeps working for everyone else. `ipc inspect` shows the counts (`rebuilds`,
/// `abandonedSends`, `redeliveries`, `droppedMessages`).
///
/// **Never trusting a peer.** Every count, index, state and length read from the queue is checked:
/// a heap or stack entry that names no slot, or a slot in the wrong state, makes the queue rebuild
/// its caches from the slots (safe: they are the truth); a slot in no valid state throws `corrupt`;
/// a length longer than a slot drops the message (`corrupt`, counted). A scribbled priority can only
/// reorder messages. Nothing read is used unchecked as an index or a length.
///
/// **Handles.** ``close()`` closes the *queue*, for every process; ``detach()`` (or dropping the last
/// reference) is what one process calls when it is done: the last holder of a `.whileReferenced`
/// queue removes it.
public final class MessageQueue<Message: Sendable>: @unchecked Sendable {
    // `@unchecked Sendable`: the shared state is reached through `core` (atomics and its lock); the
    // rest is immutable or atomic.

    let core: MessageQueueCore
    let state: MessageQueueState
    let codec: ChannelCodec<Message>
    private let detached = Atomic<Bool>(false)

    /// The highest priority a message can have.
    public static var maximumPriority: Int { Int(UInt32.max) }

    init(state: MessageQueueState, codec: ChannelCodec<Message>) throws(InterprocessError) {
        if let size = codec.fixedSize, size > state.core.maxMessageSize {
            state.close()
            throw InterprocessError(.corrupt, objectName: state.name, detail: "its slots are smaller than one \(Message.self)")
        }
        self.state = state
        self.codec = codec
        core = state.core
    }

    static func create(
        name: String, capacity: Int, maxMessageSize: Int, codec: ChannelCodec<Message>, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> MessageQueue {
        let parameters = MessageQueueParameters(capacity: capacity, maxMessageSize: maxMessageSize, messageType: codec.messageType)
        return try create(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime)
    }

    static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int, codec: ChannelCodec<Message>, permissions: FilePermissions,
        lifetime: Lifetime, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        let parameters = MessageQueueParameters(capacity: capacity, maxMessageSize: maxMessageSize, messageType: codec.messageType)
        return try openOrCreate(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    // MARK: The queue

    /// The queue's name.
    public var name: String { state.name ?? "" }
    /// How many messages it holds at most.
    public var capacity: Int { core.capacity }
    /// The largest message, in bytes (for raw values, the value's size).
    public var maxMessageSize: Int { codec.fixedSize ?? core.maxMessageSize }
    /// Messages ready to be received (a snapshot; not those being written or taken).
    public var count: Int { core.count }
    /// Whether ``close()`` was called (by any process).
    public var isClosed: Bool { core.isClosed }

    /// Closes the queue for every process: from now on every send throws `closed`; receivers take
    /// the messages that are in (and those whose send was under way), then their receives throw
    /// `closed` and ``messages`` ends. Closing twice does nothing more.
    public func close() {
        core.close()
    }

    /// This process stops using the queue through this handle; the last holder of a
    /// `.whileReferenced` queue removes it. Later calls on this handle throw `closed`. Idempotent;
    /// also done when the last reference goes away.
    public func detach() {
        detached.store(true, ordering: .relaxed)
        state.close()
    }

    /// Removes the name of the message queue `name` (`incompatible` if it is not a message queue);
    /// processes that have it open go on using it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(MessageQueueState.self, name: name)
    }

    func checkAttached() throws(InterprocessError) {
        if detached.load(ordering: .relaxed) {
            throw InterprocessError(.closed, objectName: name, detail: "this handle was detached")
        }
    }

    // MARK: Sending

    /// Sends `message` with `priority` (higher leaves first), suspending the task (no thread
    /// blocks) while the queue is full, for at most `timeout` — nil: as long as it takes.
    /// - Throws: `closed` if the queue is (or gets) closed; `invalidSize` for a message longer than
    ///   ``maxMessageSize``; `invalidArgument` for a priority outside `0...maximumPriority`;
    ///   `encodingFailed`; `timedOut`; `cancelled` if the task is cancelled — in each case having
    ///   sent nothing; `corrupt` if the queue was damaged.
    public func send(_ message: Message, priority: Int = 0, timeout: Duration? = nil) async throws(InterprocessError) {
        try checkAttached()
        if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
        let (payload, level) = try prepare(message, priority)
        let claim = try await core.claimToSend(timeout: timeout)
        try finishSend(claim, payload, level)
    }

    /// Sends `message` with `priority`, blocking the calling thread while the queue is full, for at
    /// most `timeout` — nil: as long as it takes. The blocking form of
    /// ``send(_:priority:timeout:)``, with its errors (but never `cancelled`).
    @available(*, noasync, message: "use the async send(_:priority:timeout:) in async code")
    public func blockingSend(_ message: Message, priority: Int = 0, timeout: Duration? = nil) throws(InterprocessError) {
        try checkAttached()
        let (payload, level) = try prepare(message, priority)
        let claim = try core.blockingClaimToSend(timeout: timeout)
        try finishSend(claim, payload, level)
    }

    /// Sends `message` with `priority` if there is room now; never waits. Returns false (having sent
    /// nothing) if the queue is full.
    /// - Throws: `closed`, `invalidSize`, `invalidArgument`, `encodingFailed`, `corrupt`, as
    ///   ``send(_:priority:timeout:)``.
    public func trySend(_ message: Message, priority: Int = 0) throws(InterprocessError) -> Bool {
        try checkAttached()
        let (payload, level) = try prepare(message, priority)
        guard let claim = try core.tryClaimForSending() else { return false }
        try finishSend(claim, payload, level)
        return true
    }

    /// The message as it is copied into a slot, and its priority; refused before anything is claimed.
    private func prepare(_ message: Message, _ priority: Int) throws(InterprocessError) -> (ChannelPayload<Message>, UInt32) {
        guard let level = UInt32(exactly: priority) else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "a priority must be in 0...\(Self.maximumPriority), not \(priority)")
        }
        let payload: ChannelPayload<Message>
        do throws(InterprocessError) {
            payload = try codec.encode(message)
        } catch {
            throw named(error)
        }
        guard payload.count <= core.maxMessageSize else {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "a message of \(payload.count) bytes does not fit the queue's \(core.maxMessageSize)-byte slots")
        }
        return (payload, level)
    }

    private func finishSend(_ claim: MessageQueueClaim, _ payload: ChannelPayload<Message>, _ priority: UInt32) throws(InterprocessError) {
        let core = core
        let outcome = payload.withBytes { bytes in
            Result { () throws(InterprocessError) in try core.publish(claim, priority: priority, bytes: bytes) }
        }
        try outcome.get()
    }

    private func named(_ error: InterprocessError) -> InterprocessError {
        var error = error
        error.objectName = name
        return error
    }

    // MARK: Receiving

    /// Receives the first message — highest priority, then oldest — suspending the task (no thread
    /// blocks) while the queue is empty, for at most `timeout` — nil: as long as it takes.
    /// - Throws: `closed` once the queue is closed and every message was received; `timedOut`;
    ///   `cancelled` if the task is cancelled — in both cases having taken nothing; `decodingFailed`
    ///   for a message that is not a valid `Message` (it was taken); `corrupt` if the queue was damaged.
    public func receive(timeout: Duration? = nil) async throws(InterprocessError) -> Message {
        try await receiveWithPriority(timeout: timeout).message
    }

    /// ``receive(timeout:)``, also returning the message's priority.
    public func receiveWithPriority(timeout: Duration? = nil) async throws(InterprocessError) -> (message: Message, priority: Int) {
        try checkAttached()
        if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
        return try take(try await core.claimToReceive(timeout: timeout))
    }

    /// Receives the first message, blocking the calling thread while the queue is empty, for at most
    /// `timeout` — nil: as long as it takes. The blocking form of ``receive(timeout:)``, with its
    /// errors (but never `cancelled`).
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    public func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> Message {
        try blockingReceiveWithPriority(timeout: timeout).message
    }

    /// ``blockingReceive(timeout:)``, also returning the message's priority.
    @available(*, noasync, message: "use the async receiveWithPriority(timeout:) in async code")
    public func blockingReceiveWithPriority(timeout: Duration? = nil) throws(InterprocessError) -> (message: Message, priority: Int) {
        try checkAttached()
        return try take(try core.blockingClaimToReceive(timeout: timeout))
    }

    /// Receives the first message if there is one now; never waits. Returns nil if the queue is
    /// empty (or a live process holds its lock at this instant).
    /// - Throws: `closed` once the queue is closed and every message was received;
    ///   `decodingFailed`, `corrupt`, as ``receive(timeout:)``.
    public func tryReceive() throws(InterprocessError) -> Message? {
        try tryReceiveWithPriority()?.message
    }

    /// ``tryReceive()``, also returning the message's priority.
    public func tryReceiveWithPriority() throws(InterprocessError) -> (message: Message, priority: Int)? {
        try checkAttached()
        guard let claim = try core.tryClaimForReceiving() else { return nil }
        return try take(claim)
    }

    /// Copies the claimed message out, frees its slot, and decodes it.
    private func take(_ claim: MessageQueueClaim) throws(InterprocessError) -> (message: Message, priority: Int) {
        let codec = codec
        var payload: ChannelPayload<Message>?
        do throws(InterprocessError) {
            try core.finishReceive(claim) { bytes throws(InterprocessError) in payload = try codec.copyOut(bytes) }
            guard let payload else { throw ChannelCodec<Message>.mismatch() }
            return (try codec.decode(payload), Int(claim.priority))
        } catch {
            throw named(error)
        }
    }

    // MARK: Messages as a sequence

    /// The messages as they arrive, highest priority first, as an `AsyncSequence`: each iteration
    /// receives one message (as ``receive(timeout:)`` does, so several iterators share the
    /// messages out). Ends when the queue is closed and drained; throws what a receive throws
    /// otherwise (`cancelled` when the iterating task is cancelled).
    public var messages: Messages { Messages(queue: self) }

    /// The messages of a queue as they arrive (see ``MessageQueue/messages``).
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = Message
        public typealias Failure = InterprocessError

        let queue: MessageQueue

        public func makeAsyncIterator() -> Iterator { Iterator(queue: queue) }

        /// Receives the next message on each call.
        public struct Iterator: AsyncIteratorProtocol {
            public typealias Element = Message
            public typealias Failure = InterprocessError

            let queue: MessageQueue
            private var finished = false

            init(queue: MessageQueue) { self.queue = queue }

            /// The next message, or nil once the queue is closed and drained.
            public mutating func next() async throws(InterprocessError) -> Message? {
                guard !finished else { return nil }
                do throws(InterprocessError) {
                    return try await queue.receive()
                } catch where error.code == .closed {
                    finished = true
                    return nil
                }
            }

            /// The next message, or nil once the queue is closed and drained.
            public mutating func next(isolation actor: isolated (any Actor)?) async throws(InterprocessError) -> Message? {
                guard !finished else { return nil }
                do throws(InterprocessError) {
                    return try await queue.receive()
                } catch where error.code == .closed {
                    finished = true
                    return nil
                }
            }
        }
    }
}

// MARK: - Any message type, as bytes (for `ipc send` / `ipc recv`)

extension MessageQueue where Message == [UInt8] {
    /// Opens a message queue whatever its message type, to send and receive its messages' bytes as
    /// they are. For the `ipc` tool, which knows the formats (``messageFormat``).
    package static func openAnyType(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try MessageQueue(state: SharedObjectStorage.open(MessageQueueState.self, name: name, expecting: nil, trusting: trust), codec: .bytes)
    }
}

extension MessageQueue {
    /// How the queue's messages are encoded, as its creator recorded it.
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
