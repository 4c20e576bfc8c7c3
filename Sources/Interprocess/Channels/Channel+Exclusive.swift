// The exclusive endpoints of a channel: one process sends (receives) alone, without claims. The
// ring's side of it is ChannelRing+Exclusive.swift; the shared protocol is "Exclusive endpoints"
// in CInterprocessChannel.h.

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
/// and errors are ``Channel``'s: ``send(_:timeout:)``, ``blockingSend(_:timeout:)``,
/// ``trySend(_:)``, with `Message` encoded as the channel encodes it, and a message longer than a
/// slot through the loan heap.
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

    init(channel: Channel<Message>) {
        self.channel = channel
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
        try await channel.send(message, timeout: timeout, exclusive: true)
    }

    /// Sends `message`, blocking the calling thread while the channel is full, for at most
    /// `timeout` (nil: as long as it takes). ``Channel/blockingSend(_:timeout:)-(Message,_)``'s errors.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    @inlinable
    public mutating func blockingSend(_ message: Message, timeout: Duration? = nil) throws(InterprocessError) {
        try channel.blockingSend(message, timeout: timeout, exclusive: true)
    }

    /// Sends `message` if there is room now; never waits. Returns false (having sent nothing) if the
    /// channel is full. ``Channel/trySend(_:)-(Message)``'s errors.
    @inlinable
    public mutating func trySend(_ message: Message) throws(InterprocessError) -> Bool {
        try channel.trySend(message, exclusive: true)
    }
}

/// The receiver role of a ``Channel``, held by this process alone (``Channel/exclusiveReceiver()``):
/// receives that take no claim, for one consumer.
///
/// The holder is the only receiver: it copies the message out, frees the slot and advances the
/// receive position with release stores. Messages whose shared receiver died before the role was
/// taken are still delivered (redelivered first). The forms and errors are ``Channel``'s:
/// ``receive(timeout:)``, ``blockingReceive(timeout:)``, ``tryReceive()``; `~Copyable`, with
/// `mutating` receives, like ``ExclusiveSender``.
///
/// **What a process killed while it holds the role leaves behind.** As for the sender role, the
/// next process that needs the role takes it over from the dead token and repairs: killed while
/// copying a message out (before freeing its slot), the message is still in and is **received
/// again** by the next receiver; killed after freeing the slot and before advancing the receive
/// position, the message is lost with it (as for any message a process receives and then dies
/// before handling) and the receive position moves past it.
public struct ExclusiveReceiver<Message: Sendable>: ~Copyable, Sendable {
    @usableFromInline let channel: Channel<Message>

    init(channel: Channel<Message>) {
        self.channel = channel
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
        try await channel.receive(timeout: timeout, exclusive: true)
    }

    /// Receives the next message, blocking the calling thread while the channel is empty, for at
    /// most `timeout` (nil: as long as it takes). ``Channel/blockingReceive(timeout:)``'s errors.
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    @inlinable
    public mutating func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> Message {
        try channel.blockingReceive(timeout: timeout, exclusive: true)
    }

    /// Receives the next message if there is one now; never waits. Returns nil if the channel is
    /// empty. ``Channel/tryReceive()``'s errors.
    @inlinable
    public mutating func tryReceive() throws(InterprocessError) -> Message? {
        try channel.tryReceive(exclusive: true)
    }
}
