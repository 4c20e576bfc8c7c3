// The exclusive endpoints of a channel: one process sends (receives) alone, without claims. The
// ring's side of it is ChannelRing+Exclusive.swift; the shared protocol is "Exclusive endpoints"
// in CInterprocessChannel.h.

import InterprocessSystem
import Synchronization

extension Channel {
    /// Takes the channel's sender role for this process alone, and returns the endpoint that sends
    /// with it: the fastest way for one producer to feed a channel (no locked instruction per
    /// message). While it lives, every other send on the channel — from any process, this one's
    /// other handles included — waits until it is dropped (a `try…` send returns false).
    ///
    /// ```swift
    /// var sender = try channel.exclusiveSender()     // `var`: its sends are mutating
    /// for value in values { try sender.blockingSend(value) }
    /// // dropped here: the role goes back to the channel
    /// ```
    ///
    /// Taking the role waits (briefly) until sends that were under way finish, and repairs those of
    /// processes that died. See ``ExclusiveSender`` for what a process killed while it holds the
    /// role leaves behind.
    /// - Throws: `wouldBlock` if a live process (this one included) holds the sender role;
    ///   `closed` if this handle was detached; `corrupt` if the role word was damaged.
    public func exclusiveSender() throws(InterprocessError) -> ExclusiveSender<Message> {
        try checkAttached()
        try ring.takeExclusiveRole(.sender)
        return ExclusiveSender(channel: self)
    }

    /// Takes the channel's receiver role for this process alone, and returns the endpoint that
    /// receives with it (no locked instruction per message). While it lives, every other receive
    /// waits until it is dropped (a `try…` receive returns nil). See ``ExclusiveReceiver``.
    /// - Throws: `wouldBlock` if a live process (this one included) holds the receiver role;
    ///   `closed` if this handle was detached; `corrupt` if the role word was damaged.
    public func exclusiveReceiver() throws(InterprocessError) -> ExclusiveReceiver<Message> {
        try checkAttached()
        try ring.takeExclusiveRole(.receiver)
        return ExclusiveReceiver(channel: self)
    }
}

/// The sender role of a ``Channel``, held by this process alone (``Channel/exclusiveSender()``):
/// sends that take no claim, for one producer.
///
/// A send through a shared channel takes its slot and its position with two compare-and-swaps and
/// publishes with a sequentially consistent store, so that any number of processes can send at once
/// and a dead sender's slot names it. The holder of the role is the only sender: it writes the slot
/// and publishes it with release stores — no locked instruction, which on x86 also means no wait for
/// the store buffer to drain — and announces its position in a word of its own. Receivers that park
/// make the other half of the barrier (a `membarrier` system call, only when they park). The forms
/// and errors are ``Channel``'s: ``send(_:timeout:)-(Message,_)``, ``blockingSend(_:timeout:)-(Message,_)``,
/// ``trySend(_:)-(Message)``, with `Message` encoded as the channel encodes it, and a message longer
/// than a slot through the loan heap. A sender of bytes also sends loans without a copy
/// (``loan(byteCount:)``, ``send(_:timeout:)-(MessageLoan,_)``, ``blockingSend(_:timeout:)-(MessageLoan,_)``,
/// ``trySend(_:)-(MessageLoan)``), as ``Channel`` does.
///
/// **Raw values, in the caller's code.** For a `BitwiseCopyable` `Message` that fits a slot, a
/// send whose slot is free runs inlined where it is called — claim, copy, publish: no call into the
/// library, the steps (and what a process killed at each leaves) of the general path; waking a
/// parked receiver is one call, and only a full ring, a close or a detached handle takes the
/// general path. (A 64-byte round trip through two channels: 2.0–2.5× the spinning floor through
/// the general path, 1.5–1.85× inlined; see the package's `BENCHMARKS.md`.)
///
/// **One owner, checked by the compiler.** The endpoint is `~Copyable` and its sends are
/// `mutating`: it cannot be shared between tasks or threads, only moved, so two sends through it
/// never overlap. It gives the role back when it is dropped (`deinit`).
///
/// **What a process killed while it holds the role leaves behind.** The role word names a dead
/// process; whoever next needs the role — a sender or receiver waiting (within ~50 ms), or a
/// process taking the role — takes it over from the dead token with a compare-and-swap and repairs
/// from the slots: the messages it published are in and are received; a message it was writing
/// (killed after announcing its position, before publishing) is **not** sent, and is counted in
/// `abandonedSends`; the send position continues after its last published message. A repairer
/// killed while repairing leaves a dead token again, and the next one repairs the same way. A close
/// that happened while it held the role is completed.
public struct ExclusiveSender<Message: Sendable>: ~Copyable, Sendable {
    @usableFromInline let channel: Channel<Message>
    /// The channel's ring, and the size of the raw values that its inlined fast path sends (-1:
    /// none; see `ChannelRing+ExclusiveFastPath.swift`).
    @usableFromInline let ring: ChannelRing
    @usableFromInline let valueSize: Int

    init(channel: Channel<Message>) {
        self.channel = channel
        ring = channel.ring
        valueSize = channel.ring.fastValueSize(channel.codec.fixedSize)
    }

    deinit {
        channel.ring.giveUpExclusiveRole(.sender)
    }

    /// The channel it sends on.
    public var name: String { channel.name }

    /// Sends `message`, suspending the task while the channel is full, for at most `timeout` (nil:
    /// as long as it takes). ``Channel/send(_:timeout:)-(Message,_)``'s errors.
    @inlinable
    public mutating func send(_ message: Message, timeout: Duration? = nil) async throws(InterprocessError) {
        if valueSize == MemoryLayout<Message>.size, !Task.isCancelled, try ring.exclusiveSendNow(message) { return }
        try await channel.send(message, timeout: timeout, exclusive: true)
    }

    /// Sends `message`, blocking the calling thread while the channel is full, for at most
    /// `timeout` (nil: as long as it takes). ``Channel/blockingSend(_:timeout:)-(Message,_)``'s errors.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    @inlinable
    public mutating func blockingSend(_ message: Message, timeout: Duration? = nil) throws(InterprocessError) {
        if valueSize == MemoryLayout<Message>.size, try ring.exclusiveSendNow(message) { return }
        try channel.blockingSend(message, timeout: timeout, exclusive: true)
    }

    /// Sends `message` if there is room now; never waits. Returns false (having sent nothing) if the
    /// channel is full. ``Channel/trySend(_:)-(Message)``'s errors.
    @inlinable
    public mutating func trySend(_ message: Message) throws(InterprocessError) -> Bool {
        if valueSize == MemoryLayout<Message>.size, try ring.exclusiveSendNow(message) { return true }
        return try channel.trySend(message, exclusive: true)
    }
}

/// The receiver role of a ``Channel``, held by this process alone (``Channel/exclusiveReceiver()``):
/// receives that take no claim, for one consumer.
///
/// The holder is the only receiver: it copies the message out, frees the slot and advances the
/// receive position with release stores. Messages whose shared receiver died before the role was
/// taken are still delivered (redelivered first). The forms and errors are ``Channel``'s:
/// ``receive(timeout:)``, ``blockingReceive(timeout:)``, ``tryReceive()``; for a receiver of bytes,
/// ``receiveInPlace(timeout:)``, ``blockingReceiveInPlace(timeout:)`` and ``tryReceiveInPlace()``
/// (a large message read where its sender wrote it); and ``messages()``, the messages as an
/// `AsyncSequence` that holds the role while it is iterated. `~Copyable`, with `mutating`
/// receives, like ``ExclusiveSender``; like its sends, a receive of a raw value that is in runs
/// inlined in the caller's code, and a blocking receive spins a few pause rounds (~20, none on one
/// CPU) there for a value on its way before the general wait.
///
/// **What a process killed while it holds the role leaves behind.** As for the sender role, the
/// next process that needs the role takes it over from the dead token and repairs: killed while
/// copying a message out (before freeing its slot), the message is still in and is **received
/// again** by the next receiver; killed after freeing the slot and before advancing the receive
/// position, the message is lost with it (as for any message a process receives and then dies
/// before handling) and the receive position moves past it.
public struct ExclusiveReceiver<Message: Sendable>: ~Copyable, Sendable {
    @usableFromInline let channel: Channel<Message>
    /// The channel's ring, the size of the raw values that its inlined fast path receives (-1:
    /// none; see `ChannelRing+ExclusiveFastPath.swift`), and how many pause rounds a blocking
    /// receive spins on the fast path before it takes the general path (which spins, yields and parks).
    @usableFromInline let ring: ChannelRing
    @usableFromInline let valueSize: Int
    @usableFromInline let spinRounds: Int

    init(channel: Channel<Message>) {
        self.channel = channel
        ring = channel.ring
        valueSize = channel.ring.fastValueSize(channel.codec.fixedSize)
        spinRounds = HotPath.spinRounds
    }

    deinit {
        channel.ring.giveUpExclusiveRole(.receiver)
    }

    /// The channel it receives from.
    public var name: String { channel.name }

    /// Receives the next message, suspending the task while the channel is empty, for at most
    /// `timeout` (nil: as long as it takes). ``Channel/receive(timeout:)``'s errors.
    @inlinable
    public mutating func receive(timeout: Duration? = nil) async throws(InterprocessError) -> Message {
        if valueSize == MemoryLayout<Message>.size, !Task.isCancelled, case .value(let value) = ring.exclusiveReceiveNow(Message.self) {
            return value
        }
        return try await channel.receive(timeout: timeout, exclusive: true)
    }

    /// Receives the next message, blocking the calling thread while the channel is empty, for at
    /// most `timeout` (nil: as long as it takes). ``Channel/blockingReceive(timeout:)``'s errors.
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    @inlinable
    public mutating func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> Message {
        if valueSize == MemoryLayout<Message>.size {
            // A few pause rounds here catch a message that is on its way (a round trip's answer)
            // without the general path's calls; the general path spins on, then yields and parks.
            var rounds = spinRounds
            spinning: while true {
                switch ring.exclusiveReceiveNow(Message.self) {
                case .value(let value): return value
                case .general: break spinning
                case .notIn:
                    guard rounds > 0 else { break spinning }
                    rounds &-= 1
                    HotPath.pause()
                }
            }
        }
        return try channel.blockingReceive(timeout: timeout, exclusive: true)
    }

    /// Receives the next message if there is one now; never waits. Returns nil if the channel is
    /// empty. ``Channel/tryReceive()``'s errors.
    @inlinable
    public mutating func tryReceive() throws(InterprocessError) -> Message? {
        if valueSize == MemoryLayout<Message>.size, case .value(let value) = ring.exclusiveReceiveNow(Message.self) { return value }
        return try channel.tryReceive(exclusive: true)
    }
}

// MARK: - The messages of an exclusive receiver, as a sequence

extension ExclusiveReceiver {
    /// The messages as they arrive, as an `AsyncSequence` that holds the receiver role for as long
    /// as it is iterated: ``Channel/messages``, through this endpoint. Each iteration receives one
    /// message as ``receive(timeout:)`` does (no claim, no locked instruction); the sequence ends
    /// when the channel is closed and drained, and throws what a receive throws otherwise
    /// (`cancelled` when the iterating task is cancelled: a cancelled iteration takes no message,
    /// and the iterator still holds the role, so a later `next()` goes on from the same message).
    ///
    /// ```swift
    /// let receiver = try channel.exclusiveReceiver()
    /// for try await message in receiver.messages() { print(message) }   // the role, held throughout
    /// // the loop ended (closed and drained, an error, or `break`): the role went back
    /// ```
    ///
    /// The endpoint is consumed: the role passes to the sequence and then to its iterator, and goes
    /// back to the channel when the iteration ends — at once when the channel is closed and
    /// drained, else when the iterator (and every copy of it) is dropped — or, if the sequence is
    /// never iterated, when the sequence is dropped. One iterator per sequence: a second one
    /// throws `wouldBlock` (as taking a held role does). Copies of that one iterator share the
    /// role and must not overlap their `next()` calls (a precondition: they would receive at once).
    ///
    /// **A process killed while iterating** leaves what a holder of the role killed in a receive
    /// leaves (see ``ExclusiveReceiver``): the role is taken over from it and repaired; the message
    /// it was copying out is received again; one whose slot it had freed is lost with it.
    public consuming func messages() -> ExclusiveMessages<Message> {
        ExclusiveMessages(self)
    }
}

/// The messages of a channel as they arrive through its receiver role (``ExclusiveReceiver/messages()``):
/// an `AsyncSequence` whose one iterator holds the role until it is done with it.
///
/// `Sendable`: the role waits in a lock until an iterator takes it out; the channel handle is `Sendable`.
public struct ExclusiveMessages<Message: Sendable>: AsyncSequence, Sendable {
    public typealias Element = Message
    public typealias Failure = InterprocessError

    let channel: Channel<Message>
    let role: RoleInWaiting

    init(_ receiver: consuming ExclusiveReceiver<Message>) {
        channel = receiver.channel
        role = RoleInWaiting(receiver)
    }

    /// The iterator that receives with the role (the first made; any later one throws `wouldBlock`).
    public func makeAsyncIterator() -> Iterator {
        switch role.take() {
        case .some(let receiver): Iterator(channel: channel, holder: RoleHolder(receiver))
        case .none: Iterator(channel: channel, holder: nil)
        }
    }

    /// The receiver role until an iterator takes it (given back with this object if none does).
    final class RoleInWaiting: Sendable {
        let receiver: Mutex<ExclusiveReceiver<Message>?>

        init(_ receiver: consuming ExclusiveReceiver<Message>) {
            self.receiver = Mutex(Optional(receiver))
        }

        func take() -> ExclusiveReceiver<Message>? {
            receiver.withLock { $0.take() }
        }
    }

    /// The role as an iterator holds it: given back when the channel ends or when the last copy of
    /// the iterator goes away. Not `Sendable`: the iterator is used in one isolation domain, so
    /// `receiving` is a plain flag.
    final class RoleHolder {
        var receiver: ExclusiveReceiver<Message>?
        var receiving = false

        init(_ receiver: consuming ExclusiveReceiver<Message>) {
            self.receiver = Optional(receiver)
        }
    }

    /// Receives the next message on each call, as the holder of the receiver role.
    public struct Iterator: AsyncIteratorProtocol {
        public typealias Element = Message
        public typealias Failure = InterprocessError

        let channel: Channel<Message>
        let holder: RoleHolder?

        init(channel: Channel<Message>, holder: RoleHolder?) {
            self.channel = channel
            self.holder = holder
        }

        /// The next message, or nil once the channel is closed and drained (the role is then given back).
        public mutating func next() async throws(InterprocessError) -> Message? {
            try await next(isolation: nil)
        }

        /// The next message, or nil once the channel is closed and drained (the role is then given back).
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(InterprocessError) -> Message? {
            let holder = try start()
            guard let holder else { return nil }
            defer { holder.receiving = false }
            do throws(InterprocessError) {
                return try await channel.receive(timeout: nil, exclusive: true)
            } catch where error.code == .closed {
                holder.receiver = nil
                return nil
            }
        }

        /// The role's holder, marked receiving; nil once the sequence ended.
        private func start() throws(InterprocessError) -> RoleHolder? {
            guard let holder else {
                throw InterprocessError(.wouldBlock, objectName: channel.name,
                    detail: "the receiver role went to the first iterator of these messages")
            }
            guard holder.receiver != nil else { return nil }
            precondition(!holder.receiving, "next() of an exclusive receiver's messages while another is under way")
            holder.receiving = true
            return holder
        }
    }
}
