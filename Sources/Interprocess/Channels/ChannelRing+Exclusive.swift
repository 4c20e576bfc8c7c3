import CInterprocess
import InterprocessSystem
import Synchronization

// The exclusive roles of a channel ring: one process may hold the sender role (or the receiver role)
// alone, and then sends (receives) without claims — no owner word, no compare-and-swap, no
// sequentially consistent store: a message is a few plain stores and release stores. The protocol
// is "Exclusive endpoints" in `CInterprocessChannel.h`; the public face is ``ExclusiveSender`` and
// ``ExclusiveReceiver``, whose doc comments say what a process killed at each step leaves behind.

extension ChannelRing {
    @inline(__always)
    func roleWord(_ role: ChannelRole) -> UnsafeMutablePointer<Atomic<UInt64>> {
        role == .sender ? exclusiveSender : exclusiveReceiver
    }

    // MARK: Taking and giving up a role

    /// Takes `role` for this process: records its token in the role word, repairing first after a
    /// holder that died, then waits until no process is half-way through a send (receive) of its
    /// own (a slot of that side owned by a live process), repairing slots of processes that died.
    /// Throws `wouldBlock` if a live process (this one included) holds the role.
    func takeExclusiveRole(_ role: ChannelRole) throws(InterprocessError) {
        // Register for the asymmetric fence before anything relies on it (else: fences, see `light`).
        _ = AsymmetricFence.registerFastSide()
        let word = roleWord(role)
        while true {
            let holder = word.pointee.load(ordering: .acquiring)
            if holder == 0 {
                if word.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged { break }
                continue
            }
            try checkToken(holder, of: role)
            if holder != me, !lease.isAlive(holder) {
                if try repairRole(role, deadHolder: holder, keep: true) { break }
                continue
            }
            throw InterprocessError(.wouldBlock, objectName: name,
                detail: "the exclusive \(role) role is held by \(holder == me ? "this process" : "process \(holder >> 32)")")
        }
        HotPath.crashPoint("channel.role.afterTake")
        do throws(InterprocessError) {
            try quiesce(role)
        } catch {
            // `exclusive_position` is not ours yet: give the role up without writing it back.
            if role == .sender {
                exclusivePosition.pointee.store(sendPosition.pointee.load(ordering: .acquiring) & ~Self.flagBits, ordering: .releasing)
            }
            giveUpExclusiveRole(role)
            throw error
        }
        if role == .sender {
            // Nobody else advances `send_position` now: the exclusive sender goes on from it.
            exclusivePosition.pointee.store(sendPosition.pointee.load(ordering: .acquiring) & ~Self.flagBits, ordering: .releasing)
        }
        record(role == .sender ? ChannelParticipants.senderRole : ChannelParticipants.receiverRole)
    }

    /// Gives `role` up (this process holds it and is not half-way through a send or receive):
    /// writes the exclusive sender's position back to `send_position` (keeping its flags, and
    /// finishing a close that could not fence), clears the role word and wakes everyone who waits.
    func giveUpExclusiveRole(_ role: ChannelRole) {
        if role == .sender { writeBackSendPosition(exclusivePosition.pointee.load(ordering: .acquiring)) }
        roleWord(role).pointee.store(0, ordering: .sequentiallyConsistent)
        wakeEveryone()
    }

    /// Sets `send_position` to `position`, keeping its flags; a CLOSING flag becomes CLOSED (no
    /// exclusive send is under way: the close can end).
    private func writeBackSendPosition(_ position: UInt64) {
        var current = sendPosition.pointee.load(ordering: .acquiring)
        while true {
            var flags = current & Self.flagBits
            if flags & Self.closingBit != 0 { flags |= Self.closedBit }
            let (exchanged, original) = sendPosition.pointee.compareExchange(
                expected: current, desired: flags | (position & ~Self.flagBits), ordering: .sequentiallyConsistent)
            if exchanged { return }
            current = original
        }
    }

    /// Waits (yielding the CPU) until no slot of `role`'s side is owned by a live process: those
    /// claimed before we took the role finish; those of processes that died are repaired.
    private func quiesce(_ role: ChannelRole) throws(InterprocessError) {
        for index in 0..<capacity {
            let slot = slots + index &* stride
            var checkedAt: UInt64 = 0
            while true {
                let holder = owner(slot).pointee.load(ordering: .sequentiallyConsistent)
                let token = holder & ~Self.contended
                // Free, or an orphan mark (a message the receivers take in turn).
                guard token >= 1 << 32 else { break }
                // A sender works on a slot while its sequence is even (claiming, writing), a
                // receiver while it is odd (claiming, copying); past that, it no longer moves a position.
                let even = sequence(slot).pointee.load(ordering: .acquiring) & 1 == 0
                guard (role == .sender) == even else { break }
                let now = Clock.monotonicNanoseconds()
                if token != me, now &- checkedAt >= Self.recoveryInterval {
                    checkedAt = now
                    if !lease.isAlive(token) {
                        try recover(slot, deadOwner: holder)
                        continue
                    }
                }
                SpinPolicy.yield()
            }
        }
    }

    // MARK: Holders that died

    /// A role word must hold 0 or a token.
    private func checkToken(_ holder: UInt64, of role: ChannelRole) throws(InterprocessError) {
        guard holder >= 1 << 32, holder & Self.contended == 0 else {
            throw InterprocessError(.corrupt, objectName: name, detail: "the exclusive \(role) role word holds \(holder), not a process token")
        }
    }

    /// Repairs after the holder of `role` if it died; whether it did (or the holder changed meanwhile).
    func recoverRoleIfDead(_ role: ChannelRole) throws(InterprocessError) -> Bool {
        let holder = roleWord(role).pointee.load(ordering: .acquiring)
        guard holder != 0, holder != me else { return false }
        try checkToken(holder, of: role)
        guard !lease.isAlive(holder) else { return false }
        _ = try repairRole(role, deadHolder: holder, keep: false)
        return true
    }

    /// Takes `role` from `dead` (a compare-and-swap: one repairer; a repairer that dies leaves a
    /// dead token again, and the next one repairs the same way) and repairs what its holder may have
    /// left half done; then gives the role up, or keeps it (`keep`, for a process taking the role).
    /// Whether this process did the repair.
    private func repairRole(_ role: ChannelRole, deadHolder dead: UInt64, keep: Bool) throws(InterprocessError) -> Bool {
        guard roleWord(role).pointee.compareExchange(expected: dead, desired: me, ordering: .sequentiallyConsistent).exchanged else {
            return false
        }
        HotPath.crashPoint("channel.role.afterRepairClaim")
        switch role {
        case .sender:
            // Its messages are those published: from where the receivers are (or the send position,
            // if they are behind it), every slot that holds its position's message. A slot it was
            // writing is not published, and is written again by the next sender.
            let sent = sendPosition.pointee.load(ordering: .acquiring) & ~Self.flagBits
            let received = receivePosition.pointee.load(ordering: .acquiring)
            var position = Self.isAtOrAhead(received, of: sent) ? received : sent
            var steps = 0
            while steps < capacity, sequence(slot(at: position)).pointee.load(ordering: .acquiring) == Self.full(position) {
                position &+= 1
                steps += 1
            }
            if exclusivePosition.pointee.load(ordering: .acquiring) == position &+ 1 {
                abandonedSends.pointee.wrappingAdd(1, ordering: .relaxed)
            }
            exclusivePosition.pointee.store(position, ordering: .releasing)
            writeBackSendPosition(position)
        case .receiver:
            // Killed after it freed its slot and before it advanced the receive position: the slot
            // is free for (or, if a sender was quick, holds) the position one lap on.
            let received = receivePosition.pointee.load(ordering: .acquiring)
            let observed = sequence(slot(at: received)).pointee.load(ordering: .acquiring)
            let next = received &+ UInt64(capacity)
            if observed == Self.free(next) || observed == Self.full(next) {
                receivePosition.pointee.store(received &+ 1, ordering: .sequentiallyConsistent)
            }
        }
        if !keep {
            roleWord(role).pointee.store(0, ordering: .sequentiallyConsistent)
            wakeEveryone()
        }
        return true
    }

    /// A shared send (receive) found `role` held: wait for it to be given up, checking at the
    /// periodic checks whether its holder died.
    func waitForRole(_ role: ChannelRole, checkNow: Bool, signal: UInt32) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        if checkNow, try recoverRoleIfDead(role) { return .retry }
        return .park(expected: signal)
    }

    // MARK: The other side's view

    /// How far sends were claimed — the exclusive sender's position while one holds the role and
    /// has taken over (its position is at or ahead of `send_position`), else
    /// `send_position` — and `send_position` itself (with its flags). Read in that order: the role
    /// word, then the positions, so that a role given up meanwhile left its position written back.
    @inline(__always)
    func claimedSends() -> (position: UInt64, word: UInt64) {
        let holder = exclusiveSender.pointee.load(ordering: .acquiring)
        let word = sendPosition.pointee.load(ordering: .acquiring)
        let sent = word & ~Self.flagBits
        if holder != 0 {
            let exclusive = exclusivePosition.pointee.load(ordering: .acquiring)
            if Self.isAtOrAhead(exclusive, of: sent) { return (exclusive, word) }
        }
        return (sent, word)
    }

    /// Whether position `a` is `b` or comes after it (positions grow by one and are 62 bits wide:
    /// any two that a channel holds at once are far less than 2^61 apart). While the sender role is
    /// held, `send_position` stays where it was and the holder's position runs any number of laps
    /// ahead of it.
    @inline(__always)
    static func isAtOrAhead(_ a: UInt64, of b: UInt64) -> Bool {
        (a &- b) & ~Self.flagBits < 1 << 61
    }

    /// Before a waiter's last look: if `roleWord`'s role is held, its holder reads the waiter count
    /// with a plain load after its plain stores, so the waiter makes the slow side of the
    /// asymmetric fence (``AsymmetricFence``) between counting itself and looking. Where the kernel
    /// refuses it, a wake-up that races the park can come late, by the periodic check (50 ms).
    @inline(__always)
    func fenceBeforeParking(behind roleWord: UnsafeMutablePointer<Atomic<UInt64>>) {
        if roleWord.pointee.load(ordering: .sequentiallyConsistent) != 0 { _ = AsymmetricFence.heavy() }
    }

    // MARK: Sending as the holder

    /// One attempt of the exclusive sender to claim its next position: free slot → announce the
    /// position in `exclusive_position`, then check CLOSING (the fast side of the close's fence).
    @inline(__always)
    func exclusiveClaimForSending(checkNow: Bool, spinning: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        let position = exclusivePosition.pointee.load(ordering: .relaxed)
        let slot = slot(at: position)
        if spinning, sequence(slot).pointee.load(ordering: .relaxed) != Self.free(position) { return .park(expected: 0) }
        let signal = atomic32(sendSignal).pointee.load(ordering: .sequentiallyConsistent)
        if sendPosition.pointee.load(ordering: .relaxed) & Self.flagBits != 0 { throw endOfSending() }
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        guard observed == Self.free(position) else {
            return try exclusiveSlotNotFree(slot, position: position, observed: observed, checkNow: checkNow, signal: signal)
        }
        exclusivePosition.pointee.store(position &+ 1, ordering: .releasing)
        HotPath.lightFence()
        if sendPosition.pointee.load(ordering: .relaxed) & Self.flagBits != 0 { throw takeBackAnnouncement(of: position) }
        return .done(ChannelClaim(slot: slot, position: position, redelivery: false, exclusive: true))
    }

    /// Closed after the exclusive sender announced `position`: takes the announcement back
    /// (receivers that saw it and parked look again); the error to throw.
    @inline(never)
    func takeBackAnnouncement(of position: UInt64) -> InterprocessError {
        exclusivePosition.pointee.store(position, ordering: .releasing)
        HotPath.lightFence()
        if atomic32(receiversWaiting).pointee.load(ordering: .relaxed) != 0 { wake(receiveSignal, all: true) }
        return endOfSending()
    }

    /// The exclusive sender's next slot is not free: full (it still serves the position one lap
    /// back: park, repairing first at a check), or a sequence that fits no position (`corrupt`).
    @inline(never)
    private func exclusiveSlotNotFree(
        _ slot: UnsafeMutableRawPointer, position: UInt64, observed: UInt64, checkNow: Bool, signal: UInt32
    ) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        let distance = Int64(bitPattern: observed &- Self.free(position))
        let lap = 2 * Int64(capacity)
        if distance == -lap || distance == -lap + 1 {
            if checkNow, try recoverIfDead(slot) { return .retry }
            if checkNow, try recoverRoleIfDead(.receiver) { return .retry }
            return .park(expected: signal)
        }
        throw InterprocessError(.corrupt, objectName: name,
            detail: "slot \(index(of: slot)) has sequence \(observed), which does not fit the exclusive sender's position \(position)")
    }

    /// The channel is closing or closed: the error, after finishing a close whose closer could not
    /// fence (this sender has nothing under way, so receivers may see the end).
    @inline(never)
    private func endOfSending() -> InterprocessError {
        if sendPosition.pointee.load(ordering: .acquiring) & Self.closedBit == 0 {
            sendPosition.pointee.bitwiseOr(Self.closedBit, ordering: .sequentiallyConsistent)
            wakeEveryone()
        }
        return InterprocessError(.closed, objectName: name, detail: "the channel was closed")
    }

    /// The exclusive sender's `try` form: nil if the ring is full now.
    @usableFromInline
    func tryExclusiveClaimForSending() throws(InterprocessError) -> ChannelClaim? {
        var checked = false
        while true {
            switch try exclusiveClaimForSending(checkNow: !checked) {
            case .done(let claim): return claim
            case .retry: checked = true
            case .park: return nil
            }
        }
    }

    // MARK: Receiving as the holder

    /// One attempt of the exclusive receiver to claim the next message: an orphan first (a message
    /// whose shared receiver died, taken with its owner word as before), else the message at the
    /// receive position if it is in. `quick`: a waiting receive's first try, which parks (goes on
    /// to the spin) as soon as the message is not in, without looking at the send position.
    @inline(__always)
    func exclusiveClaimForReceiving(checkNow: Bool, spinning: Bool = false, quick: Bool = false) throws(InterprocessError) -> WaitStep<ChannelClaim> {
        let position = receivePosition.pointee.load(ordering: .relaxed)
        let slot = slot(at: position)
        if spinning, sequence(slot).pointee.load(ordering: .relaxed) != Self.full(position), orphans.pointee.load(ordering: .relaxed) == 0 {
            return .park(expected: 0)
        }
        let signal = atomic32(receiveSignal).pointee.load(ordering: .sequentiallyConsistent)
        if orphans.pointee.load(ordering: .relaxed) != 0, let claim = try claimOrphan() {
            return .done(claim)
        }
        let observed = sequence(slot).pointee.load(ordering: .acquiring)
        if observed == Self.full(position) {
            if length(slot).pointee.load(ordering: .relaxed) == Self.skipped {
                releaseExclusively(slot, position: position)
                return .retry
            }
            return .done(ChannelClaim(slot: slot, position: position, redelivery: false, exclusive: true))
        }
        // Not in yet, at a first try: the waiting attempts look further (the send position's line
        // is the exclusive sender's, written at every send: reading it here would take it away).
        if quick, observed == Self.full(position) &- 1 { return .park(expected: signal) }
        return try notIn(slot: slot, position: position, observed: observed, checkNow: checkNow, signal: signal)
    }

    /// The exclusive receiver's `try` form: nil if there is no message now.
    @usableFromInline
    func tryExclusiveClaimForReceiving() throws(InterprocessError) -> ChannelClaim? {
        var checked = false
        while true {
            switch try exclusiveClaimForReceiving(checkNow: !checked) {
            case .done(let claim): return claim
            case .retry: checked = true
            case .park: return nil
            }
        }
    }
}
