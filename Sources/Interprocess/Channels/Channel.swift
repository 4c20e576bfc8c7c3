public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A bounded queue of messages between processes — a work queue: each message goes to exactly one
/// receiver. Any number of processes (and threads) send and receive at once.
///
/// ```swift
/// struct Job: Codable { var id: Int; var path: String }
///
/// let jobs = try Channel<Job>.create(name: "jobs", capacity: 256)    // or .open(name:) in a peer
/// try await jobs.send(Job(id: 1, path: "/tmp/a"))    // suspends while the channel is full
/// let job = try await jobs.receive()                 // suspends while it is empty
/// for try await job in jobs.messages { … }           // until the channel is closed and drained
/// jobs.close()                                       // senders get `closed`; receivers drain, then end
/// ```
///
/// **Messages.** `Message` decides how a message travels: `[UInt8]` as it is, `String` as UTF-8, a
/// `BitwiseCopyable` value (numbers, structs of numbers — also when it is `Codable`) as its raw
/// bytes, any other `Codable` value as JSON. Each message lives in a slot of `maxMessageSize`
/// bytes (a raw value's size for raw values); a longer one travels through the channel's loan
/// heap instead, and the loan API sends one without a copy (`Channel+Loans.swift`: ``loan(byteCount:)``,
/// ``MessageLoan``, ``ReceivedMessage``, whose doc comment says what a crash leaves). The creator records the message type (its ``TypeFingerprint`` and the
/// format); opening the channel as another type
/// throws `incompatible`.
///
/// **Forms.** Every send and receive has three forms: the `async` one (``send(_:timeout:)-(Message,_)``,
/// ``receive(timeout:)``) suspends the task and never blocks a thread; the blocking one
/// (``blockingSend(_:timeout:)-(Message,_)``, ``blockingReceive(timeout:)``) blocks the calling thread and is
/// unavailable in async code; the `try…` one never waits. A `timeout` (nil: none) bounds the wait
/// (`timedOut`); a cancelled task sends or receives nothing (`cancelled`).
///
/// **Order and delivery.** Messages leave in the order their sends claimed places: the messages of
/// one sender (one thread, or sends that do not overlap) arrive in the order it sent them, and a
/// receiver that takes several of them takes them in that order. While no process dies, every
/// message sent is received exactly once. ``close()`` ends the channel for everyone: sends throw
/// `closed` from then on, receivers take what is left and then throw `closed` (``messages`` ends).
///
/// ## How it works
/// A ring of `capacity` slots, each a sequence number, an owner word, a length and the message
/// (`cipc_channel` in `CInterprocessChannel.h`, whose comments give the invariants). Every message
/// gets a position; position p lives in slot p mod capacity, whose sequence is 2p while the slot is
/// free for p and 2p + 1 while it holds p's message (Vyukov's bounded MPMC queue). A **send**
/// reads the send position p and checks that p's slot is free for p, records its process's token in
/// the slot's owner word (a compare-and-swap from 0), advances the send position from p to p + 1
/// (a compare-and-swap), writes the length and the bytes, publishes the sequence 2p + 1, clears the
/// owner word and, only if a receiver is parked and p is the receive position (the message it
/// waits for), bumps the receivers' futex word and wakes one. A
/// **receive** is the mirror image on the receive position: owner word, position, copy the bytes
/// out, set the sequence to 2(p + capacity) (free for the slot's next lap), clear the owner, wake a
/// parked sender if there is one and the send position waits for this slot. A full ring blocks
/// senders (they park until a receiver frees a slot), an empty one receivers. Waits spin briefly,
/// then park on a futex word; waiters are counted, and only the step a parked waiter waits for
/// wakes it (whoever takes the next place wakes the next waiter), so that nobody makes a system
/// call to wake nobody — nor one per message while a woken peer is on its way.
///
/// **Owner tokens, not pids.** The token a process records is its identity in the segment's file,
/// vouched for by a kernel lock that vanishes when the process dies (as ``ProcessMutex`` records its
/// owner): whether the owner of a slot is alive is one `fcntl`, right across PID namespaces, users
/// and `hidepid`. A process waiting for a slot checks its owner every 50 ms (a `try…` form once),
/// and a receiver waiting on an empty channel looks over the ring for slots of processes that died.
///
/// ## What a process killed at each step leaves behind
/// Who repairs it: whoever next needs the slot (a sender or receiver waiting for it), within about
/// 50 ms; or a receiver waiting on an empty channel, which looks over the ring at that pace; or a
/// receiver that finds the channel closed and empty, which looks over all of it before it reports
/// the end. Repairs are decided from the slot's own state (`CInterprocessChannel.h` has the table),
/// claimed with the same owner word, and counted (`ipc inspect` shows the counts).
/// - **A sender** killed before it claimed the position leaves a slot whose owner word names a dead
///   process: the next sender clears it; nothing was sent. Killed after claiming the position and
///   before publishing (while writing): the message is **not** sent — receivers would otherwise wait
///   for it forever, so the repairer publishes the slot as *skipped* and receivers pass over it
///   (`abandonedSends`). Killed after publishing (before clearing the owner word): the message is
///   whole and is delivered; the owner word is cleared. So a message is either delivered whole or
///   not at all, and a sender that died during its send may or may not have sent that one message.
/// - **A receiver** killed before it claimed the position: nothing was taken; the owner word is
///   cleared. Killed after claiming it and before releasing the slot (while copying): the message
///   is still whole in the slot, and is **redelivered** to the next receiver (`orphanedReceives`,
///   `redeliveries`) — later than messages sent after it. Killed after releasing the slot: the
///   message is lost with it, as is any message a process receives and dies before handling.
///   A receiver never gets a message that another receiver's receive returned: no duplicates.
/// - **Any waiter** killed while parked leaves its side's waiter count one too high: the next send
///   (or receive) that would wake it makes one wake-up call (~1 µs) that wakes nobody, and then
///   sweeps the entries of dead processes in the table of participants, which also count their
///   waiters: the dead one's count is taken out of the header's (`ipc inspect`'s
///   `receiversWaiting` / `sendersWaiting` drop back; "Waiters of a process" in
///   `CInterprocessChannel.h`). A waiter killed between its two counts on the way in or out
///   (`channel.wait.countedGlobally`, `channel.wait.uncountedEntry`), or whose process had no
///   entry (a full table), leaves the count one too high for good: a spare wake-up call per send
///   (receive) that would wake it, never a lost one.
/// - **A repairer** killed while repairing leaves a slot owned by a dead process again; the next
///   repairer does the same repair from the slot's state.
///
/// **Never trusting a peer.** Positions, sequence numbers, lengths and owners read from the ring are
/// checked against each other before they are used: a sequence that names no position of its slot
/// or lies more than one lap from the positions, a length longer than a slot, an owner that is not a
/// token — the operation throws `corrupt` (a damaged message is dropped, and counted), it never
/// reads or writes outside the ring. A peer with write access can still make the channel report
/// `corrupt`, or wait.
///
/// **Exclusive endpoints.** One producer (or one consumer) can hold the channel's sender (receiver)
/// role alone — ``exclusiveSender()``, ``exclusiveReceiver()`` — and then sends (receives) without
/// claims: no owner word, no compare-and-swap, no locked instruction per message. Other senders
/// (receivers) wait while the role is held; a holder that dies is taken over and repaired from the
/// slots (``ExclusiveSender`` and ``ExclusiveReceiver`` say what each step leaves behind).
///
/// **Handles.** ``close()`` closes the *channel*, for every process. A process that is done with it
/// calls ``detach()`` (or drops its last reference): when the last holder of a `.whileReferenced`
/// channel detaches, the channel is removed.
public final class Channel<Message: Sendable>: @unchecked Sendable {
    // `@unchecked Sendable`: the shared state is reached through `ring`'s atomics; the rest is
    // immutable or atomic.

    @usableFromInline let ring: ChannelRing
    let state: ChannelState
    @usableFromInline let codec: ChannelCodec<Message>
    /// The loan heap, for messages longer than a slot (`Channel+Loans.swift`).
    @usableFromInline let loans: ChannelLoans

    /// A channel on `state`, whose messages `codec` encodes. (The storage checked the message type
    /// when it opened the state, if the opener expected one.)
    init(state: ChannelState, codec: ChannelCodec<Message>) throws(InterprocessError) {
        if let size = codec.fixedSize, size > state.ring.maxMessageSize {
            state.close()
            throw InterprocessError(.corrupt, objectName: state.name, detail: "its slots are smaller than one \(Message.self)")
        }
        self.state = state
        self.codec = codec
        ring = state.ring
        loans = ChannelLoans(ring: state.ring, storage: state.storage)
    }

    deinit {
        if !ring.detached.load(ordering: .relaxed) { loans.detach { state.close() } }
    }

    @usableFromInline
    static func create(
        name: String, capacity: Int, maxMessageSize: Int, codec: ChannelCodec<Message>, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> Channel {
        let parameters = ChannelParameters(capacity: capacity, maxMessageSize: maxMessageSize, messageType: codec.messageType)
        return try create(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime)
    }

    @usableFromInline
    static func open(name: String, codec: ChannelCodec<Message>, trusting trust: TrustedOwners) throws(InterprocessError) -> Channel {
        try open(name: name, codecs: codec, trusting: trust)
    }

    @usableFromInline
    static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int, codec: ChannelCodec<Message>, permissions: FilePermissions,
        lifetime: Lifetime, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        let parameters = ChannelParameters(capacity: capacity, maxMessageSize: maxMessageSize, messageType: codec.messageType)
        return try openOrCreate(name: name, parameters: parameters, codecs: codec, permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    // MARK: The channel

    /// The channel's name.
    public var name: String { state.name ?? "" }
    /// How many messages it holds at most.
    public var capacity: Int { ring.capacity }
    /// The largest message a slot holds, in bytes (for raw values, the value's size); longer ones
    /// travel through the loan heap.
    public var maxMessageSize: Int { codec.fixedSize ?? ring.maxMessageSize }
    /// Messages sent and not yet received (a snapshot; includes messages being written or taken).
    public var count: Int { ring.count }
    /// Whether ``close()`` was called (by any process).
    public var isClosed: Bool { ring.isClosed }

    /// Closes the channel for every process: from now on every send throws `closed`; receivers take
    /// the messages that are in (and those whose send was under way), then their receives throw
    /// `closed` and ``messages`` ends. Closing twice does nothing more.
    public func close() {
        ring.close()
    }

    /// This process stops using the channel through this handle; the last holder of a
    /// `.whileReferenced` channel removes it. Later calls on this handle throw `closed`. Idempotent;
    /// also done when the last reference goes away.
    public func detach() {
        guard !ring.detached.exchange(true, ordering: .relaxed) else { return }
        loans.detach { state.close() }
    }

    /// Removes the name of the channel `name` (`incompatible` if it is not a channel); processes that
    /// have it open go on using it. (Does not close it: do that first if its users should see the end.)
    public static func remove(name: String) throws(InterprocessError) {
        let nonce = (try? SharedMemory.info(name: name)).flatMap { $0.details["loanHeapNonce"] }.flatMap { UInt64($0, radix: 16) }
        try SharedObjectStorage.remove(ChannelState.self, name: name)
        if let nonce, nonce != 0 { ChannelLoans.removeHeap(of: name, nonce: nonce) }
    }

    @usableFromInline
    func checkAttached() throws(InterprocessError) {
        try ring.checkAttached()
    }

    // MARK: Sending
    //
    // The verbs are inlinable (with what they touch marked `@usableFromInline`): a program's
    // `Channel<Job>` then runs them specialized for `Job`. The waiting itself is not generic
    // (`ChannelRing` claims a slot; the message is copied in or out once it is claimed).

    /// Sends `message`, suspending the task (no thread blocks) while the channel is full, for at most
    /// `timeout` — nil: as long as it takes.
    /// A message longer than ``maxMessageSize`` is copied into a block of the channel's loan heap,
    /// and the slot carries a reference to it (``loan(byteCount:)`` avoids the copy).
    /// - Throws: `closed` if the channel is (or gets) closed; `encodingFailed`; `timedOut`;
    ///   `cancelled` if the task is cancelled — in each case having sent nothing; `outOfMemory` if
    ///   the loan heap has no room for a long message; `corrupt` if the ring was damaged.
    @inlinable
    public func send(_ message: Message, timeout: Duration? = nil) async throws(InterprocessError) {
        try await send(message, timeout: timeout, exclusive: false)
    }

    /// ``send(_:timeout:)-(Message,_)``, as the holder of the sender role (``ExclusiveSender``) or not.
    @inlinable
    func send(_ message: Message, timeout: Duration?, exclusive: Bool) async throws(InterprocessError) {
        try checkAttached()
        if Task.isCancelled { throw cancelledError() }
        if codec.fixedSize != nil {
            // A raw value: its own bytes go into the slot (no payload, no codec call).
            let claim = try await ring.claimToSend(timeout: timeout, exclusive: exclusive)
            withUnsafeBytes(of: message) { ring.finishSend(claim, $0) }
            return
        }
        let payload = try encode(message)
        if payload.count > ring.maxMessageSize {
            return try await sendLoan(try loanCopy(of: payload), timeout: timeout, exclusive: exclusive)
        }
        let claim = try await ring.claimToSend(timeout: timeout, exclusive: exclusive)
        payload.withBytes { ring.finishSend(claim, $0) }
    }

    /// Sends `message`, blocking the calling thread while the channel is full, for at most `timeout`
    /// — nil: as long as it takes. The blocking form of ``send(_:timeout:)-(Message,_)``, with its errors (but
    /// never `cancelled`).
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    @inlinable
    public func blockingSend(_ message: Message, timeout: Duration? = nil) throws(InterprocessError) {
        try blockingSend(message, timeout: timeout, exclusive: false)
    }

    /// ``blockingSend(_:timeout:)-(Message,_)``, as the holder of the sender role or not.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    @inlinable
    func blockingSend(_ message: Message, timeout: Duration?, exclusive: Bool) throws(InterprocessError) {
        if codec.fixedSize != nil {
            // A raw value: one call (which checks that the handle is attached).
            try withUnsafeBytes(of: message) { bytes throws(InterprocessError) in try ring.blockingSend(bytes, timeout: timeout, exclusive: exclusive) }
            return
        }
        try checkAttached()
        let payload = try encode(message)
        if payload.count > ring.maxMessageSize {
            return try blockingSendLoan(try loanCopy(of: payload), timeout: timeout, exclusive: exclusive)
        }
        let claim = try ring.blockingClaimToSend(timeout: timeout, exclusive: exclusive)
        payload.withBytes { ring.finishSend(claim, $0) }
    }

    /// Sends `message` if there is room now; never waits. Returns false (having sent nothing) if the
    /// channel is full.
    /// - Throws: `closed`, `encodingFailed`, `outOfMemory`, `corrupt`, as ``send(_:timeout:)-(Message,_)``.
    @inlinable
    public func trySend(_ message: Message) throws(InterprocessError) -> Bool {
        try trySend(message, exclusive: false)
    }

    /// ``trySend(_:)-(Message)``, as the holder of the sender role or not.
    @inlinable
    func trySend(_ message: Message, exclusive: Bool) throws(InterprocessError) -> Bool {
        try checkAttached()
        if codec.fixedSize != nil {
            guard let claim = try ring.tryClaimForSending(exclusive: exclusive) else { return false }
            withUnsafeBytes(of: message) { ring.finishSend(claim, $0) }
            return true
        }
        let payload = try encode(message)
        if payload.count > ring.maxMessageSize { return try trySendLoan(try loanCopy(of: payload), exclusive: exclusive) == nil }
        guard let claim = try ring.tryClaimForSending(exclusive: exclusive) else { return false }
        payload.withBytes { ring.finishSend(claim, $0) }
        return true
    }

    /// The message as it is sent: copied into a slot, or, when it is longer than a slot, into a
    /// block of the loan heap (``loanCopy(of:)``).
    @inlinable
    func encode(_ message: Message) throws(InterprocessError) -> ChannelPayload<Message> {
        do throws(InterprocessError) {
            return try codec.encode(message)
        } catch {
            throw named(error)
        }
    }

    @usableFromInline
    func named(_ error: InterprocessError) -> InterprocessError {
        var error = error
        error.objectName = name
        return error
    }

    // MARK: Receiving

    /// Receives the next message, suspending the task (no thread blocks) while the channel is empty,
    /// for at most `timeout` — nil: as long as it takes.
    /// - Throws: `closed` once the channel is closed and every message was received; `timedOut`;
    ///   `cancelled` if the task is cancelled — in both cases having taken nothing; `decodingFailed`
    ///   for a message that is not a valid `Message` (it was taken); `corrupt` if the ring was damaged.
    @inlinable
    public func receive(timeout: Duration? = nil) async throws(InterprocessError) -> Message {
        try await receive(timeout: timeout, exclusive: false)
    }

    /// ``receive(timeout:)``, as the holder of the receiver role (``ExclusiveReceiver``) or not.
    @inlinable
    func receive(timeout: Duration?, exclusive: Bool) async throws(InterprocessError) -> Message {
        try checkAttached()
        if Task.isCancelled { throw cancelledError() }
        return try take(try await ring.claimToReceive(timeout: timeout, exclusive: exclusive))
    }

    /// Receives the next message, blocking the calling thread while the channel is empty, for at
    /// most `timeout` — nil: as long as it takes. The blocking form of ``receive(timeout:)``, with its
    /// errors (but never `cancelled`).
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    @inlinable
    public func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> Message {
        try blockingReceive(timeout: timeout, exclusive: false)
    }

    /// ``blockingReceive(timeout:)``, as the holder of the receiver role or not.
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    @inlinable
    func blockingReceive(timeout: Duration?, exclusive: Bool) throws(InterprocessError) -> Message {
        if let size = codec.fixedSize {
            // A raw value: claimed, loaded and released in one call (which checks that the handle
            // is attached).
            var value: Message?
            let claim = try ring.blockingReceive(size: size, timeout: timeout, exclusive: exclusive) { value = $0.loadUnaligned(as: Message.self) }
            return try rawValue(value, leftClaimed: claim, size: size)
        }
        try checkAttached()
        return try take(try ring.blockingClaimToReceive(timeout: timeout, exclusive: exclusive))
    }

    /// Receives the next message if there is one now; never waits. Returns nil if the channel is
    /// empty (or its next message is still being written). A message whose receiver died is found by
    /// receivers and senders that wait (within ~50 ms), and by this call when the channel looks
    /// empty (at most one look per 50 ms in this process): an event loop that receives only through
    /// ``readinessDescriptor()`` should also call it on a timer, since nothing announces such a message.
    /// - Throws: `closed` once the channel is closed and every message was received;
    ///   `decodingFailed`, `corrupt`, as ``receive(timeout:)``.
    @inlinable
    public func tryReceive() throws(InterprocessError) -> Message? {
        try tryReceive(exclusive: false)
    }

    /// ``tryReceive()``, as the holder of the receiver role or not.
    @inlinable
    func tryReceive(exclusive: Bool) throws(InterprocessError) -> Message? {
        try checkAttached()
        guard let claim = try ring.tryClaimForReceiving(exclusive: exclusive) else { return nil }
        return try take(claim)
    }

    /// Copies the claimed message out, releases its slot, and decodes it.
    @inlinable
    func take(_ claim: ChannelClaim) throws(InterprocessError) -> Message {
        if let size = codec.fixedSize {
            // A raw value: loaded straight from the slot (one call, no payload, no codec).
            var value: Message?
            let taken = ring.finishRawReceive(claim, size: size) { value = $0.loadUnaligned(as: Message.self) }
            return try rawValue(value, leftClaimed: taken ? nil : claim, size: size)
        }
        let codec = codec
        let loans = loans
        var payload: ChannelPayload<Message>?
        var taken: TakenLoan?
        do throws(InterprocessError) {
            try ring.finishReceive(
                claim, { bytes throws(InterprocessError) in payload = try codec.copyOut(bytes) },
                takeLoan: { word, count throws(InterprocessError) in taken = try loans.takeLoan(word, byteCount: count) })
            if let taken { payload = try taken.copyOut(codec) }
            guard let payload else { throw ChannelCodec<Message>.mismatch() }
            return try codec.decode(payload)
        } catch {
            throw named(error)
        }
    }

    /// The end of a raw value's receive: the value the ring loaded (and whose slot it released), or,
    /// when the ring left the message claimed (it was not the value's length), ``takeValue(_:size:)``.
    @inlinable
    func rawValue(_ value: Message?, leftClaimed claim: ChannelClaim?, size: Int) throws(InterprocessError) -> Message {
        if let claim { return try takeValue(claim, size: size) }
        guard let value else { throw named(ChannelCodec<Message>.mismatch()) }
        return value
    }

    /// ``take(_:)`` for raw values that ``ChannelRing/finishRawReceive(_:size:_:)`` left claimed:
    /// a length that is not the value's is dropped and reported (`corrupt`); a loan in the slot
    /// (only a scribbling peer publishes one in a channel of raw values) is freed and reported.
    @inlinable
    func takeValue(_ claim: ChannelClaim, size: Int) throws(InterprocessError) -> Message {
        let loans = loans
        var value: Message?
        var taken: TakenLoan?
        do throws(InterprocessError) {
            try ring.finishReceive(
                claim,
                { bytes throws(InterprocessError) in
                    guard bytes.count == size else { throw ChannelCodec<Message>.wrongSize(bytes.count, size: size) }
                    value = bytes.loadUnaligned(as: Message.self)
                },
                takeLoan: { word, count throws(InterprocessError) in taken = try loans.takeLoan(word, byteCount: count) })
            if let taken { return try codec.decode(try taken.copyOut(codec)) }
            guard let value else { throw ChannelCodec<Message>.mismatch() }
            return value
        } catch {
            throw named(error)
        }
    }

    @usableFromInline
    func cancelledError() -> InterprocessError {
        InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled")
    }

    // MARK: Messages as a sequence

    /// The messages as they arrive, as an `AsyncSequence`: each iteration receives one message (as
    /// ``receive(timeout:)`` does, so several iterators, in this process or others, share the
    /// messages out). Ends when the channel is closed and drained; throws what a receive throws
    /// otherwise (`cancelled` when the iterating task is cancelled).
    public var messages: Messages { Messages(channel: self) }

    /// The messages of a channel as they arrive (see ``Channel/messages``).
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = Message
        public typealias Failure = InterprocessError

        let channel: Channel

        public func makeAsyncIterator() -> Iterator { Iterator(channel: channel) }

        /// Receives the next message on each call.
        public struct Iterator: AsyncIteratorProtocol {
            public typealias Element = Message
            public typealias Failure = InterprocessError

            let channel: Channel
            private var finished = false

            init(channel: Channel) { self.channel = channel }

            /// The next message, or nil once the channel is closed and drained.
            public mutating func next() async throws(InterprocessError) -> Message? {
                guard !finished else { return nil }
                do throws(InterprocessError) {
                    return try await channel.receive()
                } catch where error.code == .closed {
                    finished = true
                    return nil
                }
            }

            /// The next message, or nil once the channel is closed and drained.
            public mutating func next(isolation actor: isolated (any Actor)?) async throws(InterprocessError) -> Message? {
                guard !finished else { return nil }
                do throws(InterprocessError) {
                    return try await channel.receive()
                } catch where error.code == .closed {
                    finished = true
                    return nil
                }
            }
        }
    }
}

// MARK: - Any message type, as bytes (for `ipc send` / `ipc recv`)

/// How a channel's messages are encoded, as its creator recorded it.
package enum ChannelMessageFormat: Sendable, Hashable {
    /// Bytes as they are (`Channel<[UInt8]>`).
    case bytes
    /// The raw bytes of a fixed-size value.
    case rawValue
    /// A `Codable` value as JSON.
    case json
    /// A string as UTF-8.
    case text
}

extension Channel where Message == [UInt8] {
    /// Opens a channel whatever its message type, to send and receive its messages' bytes as they
    /// are. For the `ipc` tool, which knows the formats (``messageFormat``); programs open a channel
    /// as its type, which is what keeps them from misreading each other.
    package static func openAnyType(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try Channel(state: SharedObjectStorage.open(ChannelState.self, name: name, expecting: nil, trusting: trust), codec: .bytes)
    }
}

extension Channel {
    /// How the channel's messages are encoded, as its creator recorded it.
    package var messageFormat: ChannelMessageFormat {
        switch state.recordedFormat {
        case CIPC_CHANNEL_FORMAT_VALUE: .rawValue
        case CIPC_CHANNEL_FORMAT_JSON: .json
        case CIPC_CHANNEL_FORMAT_TEXT: .text
        default: .bytes
        }
    }

    /// The message type its creator recorded ("Swift.String as UTF-8 text (16 bytes, aligned to 8)").
    package var messageTypeDescription: String { state.recordedType }
}

// MARK: - Creating and opening, by message type

extension Channel where Message == [UInt8] {
    /// Creates a channel of byte messages of up to `maxMessageSize` bytes that holds up to
    /// `capacity` of them. Throws `alreadyExists` if the name is taken, `invalidArgument` for a
    /// capacity outside 1...1,048,576 or a size outside 1...16 MiB.
    @inlinable
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Channel {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .bytes, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a channel of byte messages (`incompatible` if its messages are of another type). Only
    /// a channel of a trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    @inlinable
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try open(name: name, codec: .bytes, trusting: trust)
    }

    /// Opens the channel, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    @inlinable
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .bytes, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }
}

extension Channel where Message == String {
    /// Creates a channel of strings (sent as UTF-8) of up to `maxMessageSize` bytes that holds up to
    /// `capacity` of them. Throws `alreadyExists` if the name is taken, `invalidArgument` for a
    /// capacity outside 1...1,048,576 or a size outside 1...16 MiB.
    @inlinable
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Channel {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .text, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a channel of strings (`incompatible` if its messages are of another type). Only a
    /// channel of a trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    @inlinable
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try open(name: name, codec: .text, trusting: trust)
    }

    /// Opens the channel, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    @inlinable
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .text, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }
}

extension Channel where Message: Codable {
    /// Creates a channel of `Message` values sent as JSON, of up to `maxMessageSize` bytes each, that
    /// holds up to `capacity` of them. Throws `alreadyExists` if the name is taken,
    /// `invalidArgument` for a capacity outside 1...1,048,576 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Channel {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .json, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a channel of `Message` values sent as JSON (`incompatible` if its messages are of
    /// another type). Only a channel of a trusted owner opens (by default: this process's user).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try open(name: name, codec: .json, trusting: trust)
    }

    /// Opens the channel, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .json, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }
}

extension Channel where Message: BitwiseCopyable {
    /// Creates a channel of `Message` values copied byte for byte (every process must agree on the
    /// type's layout) that holds up to `capacity` of them. Throws `alreadyExists` if the name is
    /// taken, `invalidArgument` for a capacity outside 1...1,048,576.
    @inlinable
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Channel {
        try create(name: name, capacity: capacity, maxMessageSize: rawSlotSize, codec: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a channel of raw `Message` values (`incompatible` if its messages are of another type,
    /// even one of the same size). Only a channel of a trusted owner opens (by default: this
    /// process's user; see ``TrustedOwners``).
    @inlinable
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try open(name: name, codec: .raw, trusting: trust)
    }

    /// Opens the channel, or creates it as `create(name:capacity:permissions:lifetime:)` does if
    /// there is none; `created` says which. Of racing processes exactly one creates it.
    @inlinable
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: rawSlotSize, codec: .raw, permissions: permissions, lifetime: lifetime,
            trusting: trust)
    }

    /// A slot holds at least one byte, even for an empty type.
    @inlinable
    static var rawSlotSize: Int { max(MemoryLayout<Message>.size, 1) }
}

extension Channel where Message: BitwiseCopyable & Codable {
    /// Creates a channel of `Message` values copied byte for byte (a type that is both
    /// `BitwiseCopyable` and `Codable` travels raw: every process must agree on its layout) that
    /// holds up to `capacity` of them. Throws `alreadyExists` if the name is taken,
    /// `invalidArgument` for a capacity outside 1...1,048,576.
    @inlinable
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Channel {
        try create(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw,
                   permissions: permissions, lifetime: lifetime)
    }

    /// Opens a channel of raw `Message` values (`incompatible` if its messages are of another type).
    /// Only a channel of a trusted owner opens (by default: this process's user).
    @inlinable
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Channel {
        try open(name: name, codec: .raw, trusting: trust)
    }

    /// Opens the channel, or creates it as `create(name:capacity:permissions:lifetime:)` does if
    /// there is none; `created` says which. Of racing processes exactly one creates it.
    @inlinable
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (channel: Channel, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw,
            permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}
