public import Synchronization

// The exclusive endpoints' fast paths, inlined into the program that uses them: a raw value
// (`BitwiseCopyable`, no larger than a slot) sent or received when nothing has to wait, with no
// call. The same steps, in the same order, as the general path (`exclusiveClaimForSending`,
// `finishSend`; `exclusiveClaimForReceiving`, `finishRawReceive`), with the same crash points, so
// a process killed at any of them leaves what ``ExclusiveSender`` and ``ExclusiveReceiver`` say.
// Whatever is not the common case (a full ring, a message not in yet, an orphan, a close, a
// detached handle, a length that is not the value's) returns to the caller, which takes the
// general path from the start; nothing is done before such a return.
//
// Why inlined: a call into this module costs what the whole send costs. Measured (callgrind) with
// the general path, a 64-byte exclusive send + receive took ~340 instructions in five calls; the
// protocol itself is a few dozen (a C program of it runs at 1.2–1.5× the spinning floor).

extension ChannelRing {
    /// The raw-value size that the exclusive endpoints' fast paths handle for a channel whose codec
    /// has `fixedSize`: that size if it fits a slot, else -1 (never the size of a value).
    func fastValueSize(_ fixedSize: Int?) -> Int {
        guard let fixedSize, fixedSize <= maxMessageSize else { return -1 }
        return fixedSize
    }

    /// The exclusive sender's send of `message` (a raw value of `MemoryLayout<Message>.size` bytes,
    /// which fits a slot: the caller checked) if its slot is free now: claims the position
    /// (announces it, then checks CLOSING), writes, publishes, and wakes a parked receiver or armed
    /// readiness descriptors if there are any. False, having done nothing, if the slot is not free
    /// or the handle is detached (the general path waits, or throws). Throws `closed` if the channel
    /// is closing (the announcement taken back: nothing sent).
    @inlinable @inline(__always)
    func exclusiveSendNow<Message>(_ message: Message) throws(InterprocessError) -> Bool {
        if detached.load(ordering: .relaxed) { return false }
        let positionWord = exclusivePosition
        let position = positionWord.pointee.load(ordering: .relaxed)
        let slot = slot(at: position)
        let sequence = slot.assumingMemoryBound(to: Atomic<UInt64>.self)
        guard sequence.pointee.load(ordering: .acquiring) == Self.free(position) else { return false }
        positionWord.pointee.store(position &+ 1, ordering: .releasing)
        HotPath.lightFence()
        if sendPosition.pointee.load(ordering: .relaxed) & Self.flagBits != 0 { throw exclusiveSendClosed(announced: position) }
        HotPath.crashPoint("channel.send.afterClaim")
        (slot + 16).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.store(
            UInt32(truncatingIfNeeded: MemoryLayout<Message>.size), ordering: .relaxed)
        withUnsafeBytes(of: message) { bytes in
            (slot + Self.dataOffset).copyMemory(from: bytes.baseAddress.unsafelyUnwrapped, byteCount: MemoryLayout<Message>.size)
        }
        HotPath.crashPoint("channel.send.afterWrite")
        sequence.pointee.store(Self.full(position), ordering: .releasing)
        HotPath.lightFence()
        HotPath.crashPoint("channel.send.afterPublish")
        if receiversWaitingCount.pointee.load(ordering: .sequentiallyConsistent) != 0
            || descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            wakeAfterExclusiveSend(position: position)
        }
        return true
    }

    /// The exclusive receiver's receive of a raw value of `MemoryLayout<Message>.size` bytes (which
    /// fits a slot: the caller checked) if the next message is in now: loads it, frees its slot,
    /// advances the receive position, and wakes a parked sender if one waits for this slot. The
    /// general path handles the rest: an orphan to redeliver first, a skipped slot, a length that is
    /// not the value's, a detached handle (`.general`, nothing done); `.notIn` if the message is not
    /// in yet (the caller may spin, then takes the general path).
    @inlinable @inline(__always)
    func exclusiveReceiveNow<Message>(_: Message.Type) -> ExclusiveReceipt<Message> {
        if detached.load(ordering: .relaxed) { return .general }
        let positionWord = receivePosition
        let position = positionWord.pointee.load(ordering: .relaxed)
        let slot = slot(at: position)
        let sequence = slot.assumingMemoryBound(to: Atomic<UInt64>.self)
        guard sequence.pointee.load(ordering: .acquiring) == Self.full(position) else { return .notIn }
        guard orphans.pointee.load(ordering: .relaxed) == 0,
              (slot + 16).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.load(ordering: .relaxed)
                == UInt32(truncatingIfNeeded: MemoryLayout<Message>.size)
        else { return .general }
        let value = UnsafeRawPointer(slot + Self.dataOffset).loadUnaligned(as: Message.self)
        HotPath.crashPoint("channel.receive.afterCopy")
        sequence.pointee.store(Self.free(position &+ UInt64(truncatingIfNeeded: capacity)), ordering: .releasing)
        HotPath.crashPoint("channel.receive.afterRelease")
        positionWord.pointee.store(position &+ 1, ordering: .releasing)
        HotPath.lightFence()
        if sendersWaitingCount.pointee.load(ordering: .sequentiallyConsistent) != 0 { wakeAfterExclusiveReceive(position: position) }
        return .value(value)
    }

    /// Closing, found by the exclusive sender's fast path after it announced `position`: the
    /// announcement taken back, the error to throw (as the general path does).
    @usableFromInline @inline(never)
    func exclusiveSendClosed(announced position: UInt64) -> InterprocessError {
        takeBackAnnouncement(of: position)
    }

    /// What the general path's `afterPublishing` does when someone waits: wakes the receiver parked
    /// for `position`'s message, pokes armed readiness descriptors.
    @usableFromInline @inline(never)
    func wakeAfterExclusiveSend(position: UInt64) {
        wakeReceiver(for: position)
        if descriptorsArmed.pointee.load(ordering: .sequentiallyConsistent) != 0 { participants?.poke() }
    }

    /// Wakes the sender parked for the slot of `position`, if one is.
    @usableFromInline @inline(never)
    func wakeAfterExclusiveReceive(position: UInt64) {
        wakeSender(forSlotOf: position)
    }
}

/// What the exclusive receiver's fast path found (``ChannelRing/exclusiveReceiveNow(_:)``).
@usableFromInline
enum ExclusiveReceipt<Message> {
    /// The message, received.
    case value(Message)
    /// Not in yet; nothing done.
    case notIn
    /// Something only the general path handles; nothing done.
    case general
}
