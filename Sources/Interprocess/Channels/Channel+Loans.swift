import SystemPackage
import CInterprocess
import InterprocessSystem

// MARK: - Large messages, zero copy: loans

/// A buffer of a channel's loan heap, lent to this process to fill and then send without a copy
/// (``Channel/loan(byteCount:)``, then ``Channel/send(_:timeout:)-(MessageLoan,_)``): the receiver
/// reads the same bytes in place (``ReceivedMessage``). It cannot be copied, sending consumes it, and
/// a loan that is never sent is given back when it goes away — so a buffer is sent at most once,
/// and never used after it was sent.
///
/// ```swift
/// let frames = try Channel<[UInt8]>.openOrCreate(name: "frames", capacity: 8).channel
/// let loan = try frames.loan(byteCount: 1 << 20)          // 1 MB in the channel's loan heap
/// loan.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 7) }
/// try frames.blockingSend(loan)                           // the receiver gets these bytes, uncopied
/// frames.detach()
/// ```
///
/// ## What a process killed at each step leaves behind
/// The message's block belongs, in the heap's records, to one process at a time (its *owner*, whose
/// liveness the kernel vouches for), and a slot of the ring names it between the send and the
/// receive. A block is garbage once its owner has ended and no published slot names it; the loan
/// heap is *swept* for such blocks (freed, under the heap's lock) whenever a process opens it, when
/// an allocation finds no room, and by ``Channel/reclaimLoans(dryRun:)`` (`ipc gc --reclaim`).
/// - **A sender killed holding a loan it has not sent**: the block is the dead sender's and no slot
///   names it: freed by the next sweep. Nothing was sent.
/// - **Killed while sending** (after claiming a slot, before publishing it): the slot is published
///   as skipped by the process that repairs it (see ``Channel``); the block is then named by no
///   slot and freed by the next sweep. The message is not sent.
/// - **Killed after publishing** (the message is in the ring): the slot names the block, so no
///   sweep frees it; the receiver takes it over and gets the message whole.
/// - **A receiver killed after claiming the slot, before taking the block over**: the message is
///   redelivered (see ``Channel``), the block unchanged.
/// - **Killed after taking the block over, before releasing the slot**: the block is the dead
///   receiver's, but the slot still names it: the message is redelivered to the next receiver,
///   which takes the block over in turn.
/// - **A receiver killed holding a ``ReceivedMessage``** (after releasing the slot): the block is
///   the dead receiver's and no slot names it: freed by the next sweep. The message is lost with
///   the receiver, as any message a process receives and dies before handling.
/// - **The channel closed with loans in flight**: receivers drain them as any message. **Removed**
///   (the last holder detached, ``Channel/remove(name:)``, `ipc rm`): the loan heap's name goes with
///   it; a process that holds a ``MessageLoan`` or a ``ReceivedMessage`` keeps the heap mapped and
///   can still use and give back its buffer; the blocks of messages never received go with the heap.
///   If the last holder was killed, the channel is swept as abandoned and its loan heap, whose
///   channel is gone, is removed by `ipc gc` (or reused, and swept, by the next channel of that name).
///
/// So repeated crashes leak nothing for long: every block of an ended process is freed by the next
/// sweep unless a message in the ring still needs it. The one exception: a process that opened the
/// loan heap while all of its 63 client records were held by live processes (or by ended ones with
/// blocks left even after a sweep) shares record 0, whose blocks no sweep frees (their owner is
/// unknown).
///
/// `@unchecked Sendable`: the buffer lies in a mapping that the heap (retained) keeps alive; the
/// value is `~Copyable`, so one owner at a time uses it.
public struct MessageLoan: ~Copyable, @unchecked Sendable {
    let heap: Unmanaged<SharedHeap>
    let word: UInt64
    let address: UnsafeMutableRawPointer
    let loans: Unmanaged<ChannelLoans>
    /// The bytes that will be sent (at most what was loaned: see ``truncate(to:)``).
    public private(set) var byteCount: Int

    init(heap: SharedHeap, word: UInt64, address: UnsafeMutableRawPointer, byteCount: Int, loans: ChannelLoans) {
        self.heap = .passRetained(heap)
        self.word = word
        self.address = address
        self.byteCount = byteCount
        self.loans = .passRetained(loans)
    }

    deinit {
        try? heap.takeUnretainedValue().core.free(word)
        heap.release()
        loans.release()
    }

    /// Calls `body` with the buffer, to fill it. The buffer must not escape `body`.
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: address, count: byteCount))
    }

    /// Calls `body` with the buffer, to read it. The buffer must not escape `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: address, count: byteCount))
    }

    /// Sends only the first `byteCount` bytes (at most what the loan holds now): for a message whose
    /// length is known only once it is written.
    public mutating func truncate(to byteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= self.byteCount, "a loan of \(self.byteCount) bytes cannot send \(byteCount)")
        self.byteCount = byteCount
    }

    /// Gives the buffer back without sending it (what dropping the loan does), reporting an error.
    public consuming func giveBack() throws(InterprocessError) {
        let (heap, word, loans) = (heap, word, loans)
        discard self
        defer { heap.release(); loans.release() }
        try heap.takeUnretainedValue().core.free(word)
    }

    /// Ends the loan without freeing the block: the ring names it from now on.
    consuming func handOver() -> (word: UInt64, byteCount: Int) {
        let result = (word, byteCount)
        let (heap, loans) = (heap, loans)
        discard self
        heap.release()
        loans.release()
        return result
    }
}

/// A message received in place (``Channel/receiveInPlace(timeout:)``): a message that came through
/// the loan heap is read where its sender wrote it; a short one (that travelled in a slot) is a copy.
/// It cannot be copied; its buffer is given back when it goes away (or by ``release()``).
/// What a receiver killed while it holds one leaves behind is written down on ``MessageLoan``.
///
/// `@unchecked Sendable`: the bytes lie in a mapping the heap (retained) keeps alive, or in memory
/// this value owns; the value is `~Copyable`, so one owner at a time uses it.
public struct ReceivedMessage: ~Copyable, @unchecked Sendable {
    let heap: Unmanaged<SharedHeap>?
    let word: UInt64
    let address: UnsafeMutableRawPointer?
    /// The message's length in bytes.
    public let byteCount: Int

    init(heap: SharedHeap, word: UInt64, address: UnsafeMutableRawPointer, byteCount: Int) {
        self.heap = .passRetained(heap)
        self.word = word
        self.address = address
        self.byteCount = byteCount
    }

    init(copying bytes: UnsafeRawBufferPointer) {
        heap = nil
        word = 0
        byteCount = bytes.count
        if bytes.isEmpty {
            address = nil
        } else {
            let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 16)
            copy.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            address = copy
        }
    }

    deinit {
        if let heap {
            try? heap.takeUnretainedValue().core.free(word)
            heap.release()
        } else {
            address?.deallocate()
        }
    }

    /// Whether the message was read in place from the channel's loan heap (else it is a copy of a
    /// message short enough for a slot).
    public var isInPlace: Bool { heap != nil }

    /// Calls `body` with the message's bytes. The buffer must not escape `body`. (A peer that
    /// can write the heap could still change them: a hostile sender can change a message it sent.)
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: address, count: byteCount))
    }

    /// A copy of the message's bytes.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Gives the buffer back now (what dropping the message does), reporting an error.
    public consuming func release() throws(InterprocessError) {
        let (heap, word, address) = (heap, word, address)
        discard self
        if let heap {
            defer { heap.release() }
            try heap.takeUnretainedValue().core.free(word)
        } else {
            address?.deallocate()
        }
    }
}

/// A block a receive took over (`ChannelLoans.takeLoan`), before it became a value.
@usableFromInline
struct TakenLoan {
    let heap: SharedHeap
    let word: UInt64
    let address: UnsafeMutableRawPointer
    let byteCount: Int

    /// Copies the message out through `codec` and gives the block back.
    @usableFromInline
    func copyOut<Message>(_ codec: ChannelCodec<Message>) throws(InterprocessError) -> ChannelPayload<Message> {
        defer { try? heap.core.free(word) }
        return try codec.copyOut(UnsafeRawBufferPointer(start: address, count: byteCount))
    }
}

extension ChannelLoans {
    /// What a receive's `takeLoan` does: takes the block over (see ``take(_:byteCount:)``).
    @usableFromInline
    func takeLoan(_ word: UInt64, byteCount: Int) throws(InterprocessError) -> TakenLoan {
        let (heap, address) = try take(word, byteCount: byteCount)
        return TakenLoan(heap: heap, word: word, address: address, byteCount: byteCount)
    }
}

extension Channel {
    /// A block of the loan heap holding `payload`, for a message longer than a slot.
    @usableFromInline
    func loanCopy(of payload: ChannelPayload<Message>) throws(InterprocessError) -> MessageLoan {
        let loan = try makeLoan(byteCount: payload.count)
        payload.withBytes { bytes in
            loan.withUnsafeMutableBytes { target in
                if let source = bytes.baseAddress, bytes.count > 0 { target.baseAddress!.copyMemory(from: source, byteCount: bytes.count) }
            }
        }
        return loan
    }

    func makeLoan(byteCount: Int) throws(InterprocessError) -> MessageLoan {
        try checkAttached()
        let (heap, word, address) = try loans.allocate(byteCount: byteCount)
        return MessageLoan(heap: heap, word: word, address: address, byteCount: byteCount, loans: loans)
    }

    private func checkOwn(_ loan: borrowing MessageLoan) throws(InterprocessError) {
        guard loan.loans.takeUnretainedValue() === loans else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "the loan was made by another channel handle")
        }
    }

    @usableFromInline
    func sendLoan(_ loan: consuming MessageLoan, timeout: Duration?, exclusive: Bool = false) async throws(InterprocessError) {
        try checkAttached()
        try checkOwn(loan)
        if Task.isCancelled { throw cancelledError() }
        let claim = try await ring.claimToSend(timeout: timeout, exclusive: exclusive)
        let (word, count) = loan.handOver()
        ring.finishSendLoan(claim, word: word, byteCount: count)
    }

    @usableFromInline
    func blockingSendLoan(_ loan: consuming MessageLoan, timeout: Duration?, exclusive: Bool = false) throws(InterprocessError) {
        try checkAttached()
        try checkOwn(loan)
        let claim = try ring.blockingClaimToSend(timeout: timeout, exclusive: exclusive)
        let (word, count) = loan.handOver()
        ring.finishSendLoan(claim, word: word, byteCount: count)
    }

    @usableFromInline
    func trySendLoan(_ loan: consuming MessageLoan, exclusive: Bool = false) throws(InterprocessError) -> MessageLoan? {
        try checkAttached()
        try checkOwn(loan)
        guard let claim = try ring.tryClaimForSending(exclusive: exclusive) else { return loan }
        let (word, count) = loan.handOver()
        ring.finishSendLoan(claim, word: word, byteCount: count)
        return nil
    }

    /// Takes the claimed message as a ``ReceivedMessage``: a loan in place, a short one copied.
    func takeInPlace(_ claim: ChannelClaim) throws(InterprocessError) -> ReceivedMessage {
        let loans = loans
        var taken: TakenLoan?
        var copy: ReceivedMessage?
        do throws(InterprocessError) {
            try ring.finishReceive(
                claim, { bytes throws(InterprocessError) in copy = ReceivedMessage(copying: bytes) },
                takeLoan: { word, count throws(InterprocessError) in taken = try loans.takeLoan(word, byteCount: count) })
        } catch {
            throw named(error)
        }
        if let taken { return ReceivedMessage(heap: taken.heap, word: taken.word, address: taken.address, byteCount: taken.byteCount) }
        guard let copy = copy.take() else { throw named(ChannelCodec<Message>.mismatch()) }
        return copy
    }

    // MARK: The loan heap

    /// The name of the channel's loan heap (`NAME~loans`; a hash replaces the end of a very long
    /// name): the ``SharedHeap`` that carries messages longer than a slot. `ipc ls` lists it.
    public var loanHeapName: String { loans.heapName }

    /// Creates the channel's loan heap now, with `capacity` bytes reserved and room to grow to
    /// `maximumCapacity`, if there is none yet; returns whether it did (an existing loan heap keeps
    /// its sizes). Without it, the first message longer than a slot creates one of 4 MiB that grows
    /// to 1 GiB. The heap has the channel's permissions, and goes when the channel goes.
    /// - Throws: `invalidSize` for sizes a heap cannot have, `outOfMemory` if the capacity cannot be
    ///   reserved, and what opening a heap throws.
    @discardableResult
    public func prepareLoans(capacity: Int, maximumCapacity: Int) throws(InterprocessError) -> Bool {
        try checkAttached()
        return try loans.heap(capacity: capacity, maximumCapacity: maximumCapacity).created
    }

    /// Frees the blocks of the loan heap that processes which ended left behind (loans never sent,
    /// messages received and never given back) and that no message in the channel needs. Done
    /// anyway whenever a process opens the loan heap and when it has no room for a loan: call it to
    /// return memory sooner. With `dryRun`, only counts them.
    @discardableResult
    public func reclaimLoans(dryRun: Bool = false) throws(InterprocessError) -> SharedHeap.Reclamation {
        try checkAttached()
        return try loans.sweep(try loans.heap(sweeping: !dryRun).heap, dryRun: dryRun)
    }
}

// MARK: - The verbs of loans (channels of bytes)

extension Channel where Message == [UInt8] {
    /// Lends this process a buffer of `byteCount` bytes in the channel's loan heap, to fill and
    /// send without a copy (``send(_:timeout:)-(MessageLoan,_)``). Any length up to 2 GiB, whatever
    /// the channel's slot size. The first loan of a channel creates its loan heap
    /// (``prepareLoans(capacity:maximumCapacity:)``).
    /// - Throws: `outOfMemory` when the loan heap is full (after freeing what ended processes left)
    ///   and at its maximum capacity; `invalidSize`; `closed` if this handle was detached.
    public func loan(byteCount: Int) throws(InterprocessError) -> MessageLoan {
        try makeLoan(byteCount: byteCount)
    }

    /// Sends the loaned buffer, suspending the task while the channel is full, for at most `timeout`.
    /// The receiver gets the same bytes, not a copy. The loan is consumed: if the send fails
    /// (`closed`, `timedOut`, `cancelled`), nothing is sent and the buffer is given back.
    /// `invalidArgument` for a loan of another channel handle.
    public func send(_ loan: consuming MessageLoan, timeout: Duration? = nil) async throws(InterprocessError) {
        try await sendLoan(loan, timeout: timeout)
    }

    /// The blocking form of ``send(_:timeout:)-(MessageLoan,_)``.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    public func blockingSend(_ loan: consuming MessageLoan, timeout: Duration? = nil) throws(InterprocessError) {
        try blockingSendLoan(loan, timeout: timeout)
    }

    /// Sends the loaned buffer if there is room now; never waits. Returns nil once sent, or the loan,
    /// unsent, if the channel is full.
    public func trySend(_ loan: consuming MessageLoan) throws(InterprocessError) -> MessageLoan? {
        try trySendLoan(loan)
    }

    /// Receives the next message without copying it when it came through the loan heap (a message
    /// longer than a slot, or any loan), suspending the task while the channel is empty, for at most
    /// `timeout`. Its buffer is given back when the ``ReceivedMessage`` goes away.
    /// - Throws: as ``receive(timeout:)``; `corrupt` when the message names no block of the loan
    ///   heap (it is dropped), `notFound` when the loan heap was removed.
    public func receiveInPlace(timeout: Duration? = nil) async throws(InterprocessError) -> ReceivedMessage {
        try await receiveInPlace(timeout: timeout, exclusive: false)
    }

    /// ``receiveInPlace(timeout:)``, as the holder of the receiver role (``ExclusiveReceiver``) or not.
    func receiveInPlace(timeout: Duration?, exclusive: Bool) async throws(InterprocessError) -> ReceivedMessage {
        try checkAttached()
        if Task.isCancelled { throw cancelledError() }
        return try takeInPlace(try await ring.claimToReceive(timeout: timeout, exclusive: exclusive))
    }

    /// The blocking form of ``receiveInPlace(timeout:)``.
    @available(*, noasync, message: "use the async receiveInPlace(timeout:) in async code")
    public func blockingReceiveInPlace(timeout: Duration? = nil) throws(InterprocessError) -> ReceivedMessage {
        try blockingReceiveInPlace(timeout: timeout, exclusive: false)
    }

    /// ``blockingReceiveInPlace(timeout:)``, as the holder of the receiver role or not.
    @available(*, noasync, message: "use the async receiveInPlace(timeout:) in async code")
    func blockingReceiveInPlace(timeout: Duration?, exclusive: Bool) throws(InterprocessError) -> ReceivedMessage {
        try checkAttached()
        return try takeInPlace(try ring.blockingClaimToReceive(timeout: timeout, exclusive: exclusive))
    }

    /// ``receiveInPlace(timeout:)`` if a message is there now; never waits (nil: none).
    public func tryReceiveInPlace() throws(InterprocessError) -> ReceivedMessage? {
        try tryReceiveInPlace(exclusive: false)
    }

    /// ``tryReceiveInPlace()``, as the holder of the receiver role or not.
    func tryReceiveInPlace(exclusive: Bool) throws(InterprocessError) -> ReceivedMessage? {
        try checkAttached()
        guard let claim = try ring.tryClaimForReceiving(exclusive: exclusive) else { return nil }
        return try takeInPlace(claim)
    }
}

// MARK: - Loans through the exclusive endpoints

extension ExclusiveSender where Message == [UInt8] {
    /// Lends this process a buffer of `byteCount` bytes in the channel's loan heap, to fill and send
    /// through this endpoint without a copy (``send(_:timeout:)-(MessageLoan,_)``): what
    /// ``Channel/loan(byteCount:)`` does (a loan of the channel handle the endpoint was taken from
    /// is the same thing, and either kind of send takes it). Taking a loan does not need the role.
    /// - Throws: as ``Channel/loan(byteCount:)``.
    public func loan(byteCount: Int) throws(InterprocessError) -> MessageLoan {
        try channel.makeLoan(byteCount: byteCount)
    }

    /// Sends the loaned buffer, suspending the task while the channel is full, for at most
    /// `timeout`; the receiver gets the same bytes, not a copy. As
    /// ``Channel/send(_:timeout:)-(MessageLoan,_)`` — the loan is consumed: if the send fails
    /// (`closed`, `timedOut`, `cancelled`), nothing is sent and the buffer is given back;
    /// `invalidArgument` for a loan of another channel handle — without a claim, as the holder of
    /// the sender role.
    ///
    /// **Killed while sending it**, the holder leaves what a holder killed in a send leaves (see
    /// ``ExclusiveSender``): killed before publishing, the message is not sent, and its block — named
    /// by no published slot — is freed by the loan heap's next sweep; killed after publishing, the
    /// message is delivered whole (see ``MessageLoan`` for the block's side).
    public mutating func send(_ loan: consuming MessageLoan, timeout: Duration? = nil) async throws(InterprocessError) {
        try await channel.sendLoan(loan, timeout: timeout, exclusive: true)
    }

    /// The blocking form of ``send(_:timeout:)-(MessageLoan,_)``.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    public mutating func blockingSend(_ loan: consuming MessageLoan, timeout: Duration? = nil) throws(InterprocessError) {
        try channel.blockingSendLoan(loan, timeout: timeout, exclusive: true)
    }

    /// Sends the loaned buffer if there is room now; never waits. Returns nil once sent, or the
    /// loan, unsent, if the channel is full (as ``Channel/trySend(_:)-(MessageLoan)``).
    public mutating func trySend(_ loan: consuming MessageLoan) throws(InterprocessError) -> MessageLoan? {
        try channel.trySendLoan(loan, exclusive: true)
    }
}

extension ExclusiveReceiver where Message == [UInt8] {
    /// Receives the next message without copying it when it came through the loan heap, suspending
    /// the task while the channel is empty, for at most `timeout`: ``Channel/receiveInPlace(timeout:)``
    /// (its errors; the buffer is given back when the ``ReceivedMessage`` goes away), without a
    /// claim, as the holder of the receiver role.
    ///
    /// **Killed while receiving it**, the holder leaves what a holder killed in a receive leaves
    /// (see ``ExclusiveReceiver``): killed after taking the block over and before freeing the slot,
    /// the slot still names the block, so the message is received again, whole, by the next
    /// receiver (which takes the block over in turn); killed after freeing the slot — or while it
    /// holds the ``ReceivedMessage`` — the message is lost with it, and its block, which no slot
    /// names any more, is freed by the loan heap's next sweep.
    public mutating func receiveInPlace(timeout: Duration? = nil) async throws(InterprocessError) -> ReceivedMessage {
        try await channel.receiveInPlace(timeout: timeout, exclusive: true)
    }

    /// The blocking form of ``receiveInPlace(timeout:)``.
    @available(*, noasync, message: "use the async receiveInPlace(timeout:) in async code")
    public mutating func blockingReceiveInPlace(timeout: Duration? = nil) throws(InterprocessError) -> ReceivedMessage {
        try channel.blockingReceiveInPlace(timeout: timeout, exclusive: true)
    }

    /// ``receiveInPlace(timeout:)`` if a message is there now; never waits (nil: none), as
    /// ``Channel/tryReceiveInPlace()``.
    public mutating func tryReceiveInPlace() throws(InterprocessError) -> ReceivedMessage? {
        try channel.tryReceiveInPlace(exclusive: true)
    }
}
