import CInterprocess
import InterprocessSystem
import Synchronization
import SystemPackage

/// A channel's or a message queue's table of participants (`cipc_channel_participant` in
/// `CInterprocessChannel.h`, after the slots; the same code serves both kinds, which differ only in
/// where their `descriptors_armed` word is and in their socket files' names): one entry per process
/// that has the channel (or queue) open — its handles, whether it sent or
/// received (what `ipc ls` and `ipc inspect` show) and, when it waits on a readiness descriptor
/// (``ChannelReadiness``), the number that names that descriptor's socket file. Bit i of the
/// header's `descriptors_armed` asks for a datagram to entry i's socket at the next message.
///
/// **Entries.** A process claims a free entry with a compare-and-swap of `owner` from 0 to its
/// owner token (one per process and file: ``OwnerLease``) and frees it (owner back to 0) when its
/// last handle goes. An entry whose owner is dead is *swept* by whoever finds it — a process that
/// joins, a sender whose datagram was refused, a process letting go of its last handle (the
/// channel may be removed after it, and the dead entries' socket files with nobody to find them
/// later), or `ipc gc` (``ParticipantsSweep``, which opens the object without joining): it takes the entry
/// (owner: its own token with the flag bit, so that two sweepers never clean one entry and a new
/// owner's fields are never wiped), clears the entry's armed bit, removes the dead socket file (if
/// this user's and nobody is bound to it), zeroes the entry and frees it. A sweeper killed while
/// sweeping leaves the entry owned by a dead token: the next sweeper does it again.
///
/// **Waiters.** A channel's entry also counts its process's threads parked in a send or receive
/// (``ProcessWaiterTally``, "Waiters of a process" in `CInterprocessChannel.h`): a sweeper first
/// takes those counts (an exchange with 0) and subtracts them from the header's
/// `receivers_waiting` / `senders_waiting`, never below 0, and wakes nobody (no live waiter lost
/// anything). Besides the sweeps above, a wake-up call of the channel that woke nobody
/// (``sweepDeadWaitersIfDue()``: at most once per ``waiterSweepInterval`` and table) looks for
/// entries of dead processes that still count waiters: a waiter killed while parked costs one
/// spare wake-up call, not one per message from then on. A sweeper killed after it took the counts
/// (`channel.participants.sweep.countsTaken`) leaves them in the header: an over-count.
///
/// **Never trusting the table.** Every index is below `CIPC_CHANNEL_PARTICIPANTS` by construction
/// (bits of a 64-bit mask, a fixed loop); a socket path is never read from shared memory: it is
/// built from this process's own channel name and a number, inside this user's runtime directory
/// (a scribbled number names no socket, or another registration of this channel: a spurious
/// wake-up, never a write elsewhere).
///
/// `@unchecked Sendable`: the table is touched only through atomics; the rest is immutable, and
/// this process's own entry is changed under ``local``.
final class ChannelParticipants: @unchecked Sendable {
    static let count = Int(CIPC_CHANNEL_PARTICIPANTS)
    static let entrySize = Int(CIPC_CHANNEL_PARTICIPANT_SIZE)
    static let tableSize = count * entrySize
    static let senderRole = CIPC_CHANNEL_ROLE_SENDER
    static let receiverRole = CIPC_CHANNEL_ROLE_RECEIVER

    private let table: UnsafeMutableRawPointer
    private let armed: UnsafeMutablePointer<Atomic<UInt64>>
    /// A channel's `exclusive_sender` word (nil for the other kinds, which have none).
    private let exclusiveSender: UnsafeMutablePointer<Atomic<UInt64>>?
    /// A channel's `receivers_waiting` and `senders_waiting` (nil for the other kinds, whose
    /// entries count no waiters).
    private let waiterCounts: (receivers: UnsafeMutablePointer<Atomic<UInt32>>, senders: UnsafeMutablePointer<Atomic<UInt32>>)?
    /// When this table's last sweep for waiters of dead processes started (process-local).
    private let lastWaiterSweep = Atomic<UInt64>(0)
    /// The least time between two sweeps for dead waiters (``sweepDeadWaitersIfDue()``).
    static let waiterSweepInterval: UInt64 = 50_000_000
    private let lease: OwnerLease
    private let me: UInt64
    /// Keeps the memory mapped.
    private let storage: SharedObjectStorage
    /// `<runtime directory>/ready-<name hash>-`: the socket files of this channel's readiness
    /// descriptors start with it (nil when the channel has no name or the path would not fit).
    let socketPrefix: String?

    /// This process's entries, per lease (one lease per process and file): which entry, and how
    /// many handles hold it. Changes to our own entry are made under this lock.
    fileprivate struct LocalEntry {
        var index: Int
        var holds: Int
    }
    fileprivate static let local = Mutex<[ObjectIdentifier: LocalEntry]>([:])

    /// What this process's waiting receivers and senders count themselves in beside the header
    /// (``WaitSite/processTally``): its entry's counts. Nil for a table of another kind.
    let receiverTally: EntryWaiterTally?
    let senderTally: EntryWaiterTally?

    /// The table at `tableOffset` of a channel's (or, with `armedOffset` and `socketKind` of another
    /// kind, a message queue's) state. `armedOffset`: where the header's `descriptors_armed` word is;
    /// `socketKind`: what the socket files' names start with (`ready` for a channel, `mqready` for a
    /// message queue), so that objects of two kinds with one name never share a socket's name.
    init?(
        storage: SharedObjectStorage, base: UnsafeMutableRawPointer, tableOffset: Int, name: String?,
        armedOffset: Int = fieldOffset(\cipc_channel.descriptors_armed), socketKind: String = "ready",
        exclusiveSenderOffset: Int? = nil, waiterCountOffsets: (receivers: Int, senders: Int)? = nil
    ) {
        guard let lease = storage.lease else { return nil }
        self.storage = storage
        self.lease = lease
        me = lease.token
        table = base + tableOffset
        armed = atomic64(base + armedOffset)
        exclusiveSender = exclusiveSenderOffset.map { atomic64(base + $0) }
        waiterCounts = waiterCountOffsets.map { (atomic32(base + $0.receivers), atomic32(base + $0.senders)) }
        let table = table
        receiverTally = waiterCountOffsets.map { _ in
            EntryWaiterTally(table: table, lease: lease, field: fieldOffset(\cipc_channel_participant.receivers_waiting))
        }
        senderTally = waiterCountOffsets.map { _ in
            EntryWaiterTally(table: table, lease: lease, field: fieldOffset(\cipc_channel_participant.senders_waiting))
        }
        socketPrefix = name.map { ReadinessSocket.prefix(kind: socketKind, name: $0) }
    }

    /// A channel's table at `tableOffset` of its state at `base`: with the role word and the
    /// waiter counts of its header.
    static func ofChannel(storage: SharedObjectStorage, base: UnsafeMutableRawPointer, tableOffset: Int, name: String?) -> ChannelParticipants? {
        ChannelParticipants(
            storage: storage, base: base, tableOffset: tableOffset, name: name,
            exclusiveSenderOffset: fieldOffset(\cipc_channel.exclusive_sender),
            waiterCountOffsets: (fieldOffset(\cipc_channel.receivers_waiting), fieldOffset(\cipc_channel.senders_waiting)))
    }

    // MARK: Fields

    private func entry(_ index: Int) -> UnsafeMutableRawPointer { table + index * Self.entrySize }
    private func owner(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(entry(index)) }
    private func roles(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(entry(index) + 8) }
    private func handles(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(entry(index) + 12) }
    private func notifier(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(entry(index) + 16) }
    private func pokes(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(entry(index) + 24) }
    private func receiversWaiting(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        atomic32(entry(index) + fieldOffset(\cipc_channel_participant.receivers_waiting))
    }
    private func sendersWaiting(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        atomic32(entry(index) + fieldOffset(\cipc_channel_participant.senders_waiting))
    }

    /// The socket file of the readiness descriptor numbered `notifier`.
    func socketPath(_ notifier: UInt64) -> String? {
        socketPrefix.map { $0 + ReadinessSocket.hex(notifier) }
    }

    /// Whether `word` has the shape of an owner token (pid above, non-zero random half below, flag clear).
    private static func isToken(_ word: UInt64) -> Bool {
        word >> 32 != 0 && word & 0xFFFF_FFFF != 0 && word & OwnerLease.flagBit == 0
    }

    // MARK: Joining and leaving

    /// Records one more handle of this process (claiming an entry for the process if it has none).
    /// Returns the entry's index, or nil if the table is full (the process then goes unlisted).
    @discardableResult
    func join() -> Int? {
        let key = ObjectIdentifier(lease)
        return Self.local.withLock { entries -> Int? in
            if var local = entries[key], owner(local.index).pointee.load(ordering: .acquiring) == me {
                local.holds += 1
                entries[key] = local
                handles(local.index).pointee.wrappingAdd(1, ordering: .relaxed)
                return local.index
            }
            guard let index = claimEntry() else { return nil }
            entries[key] = LocalEntry(index: index, holds: 1)
            return index
        }
    }

    /// Records that one handle of this process let go; the last one frees the entry.
    func leave() {
        let key = ObjectIdentifier(lease)
        Self.local.withLock { entries in
            guard var local = entries[key] else { return }
            local.holds -= 1
            guard owner(local.index).pointee.load(ordering: .acquiring) == me else {
                // Someone swept our entry (it cannot happen while we are alive, but never wipe another's).
                if local.holds <= 0 { entries[key] = nil } else { entries[key] = local }
                return
            }
            if local.holds > 0 {
                entries[key] = local
                handles(local.index).pointee.wrappingSubtract(1, ordering: .relaxed)
                return
            }
            entries[key] = nil
            clear(local.index)
            _ = owner(local.index).pointee.compareExchange(expected: me, desired: 0, ordering: .sequentiallyConsistent)
            // The channel may go away with us: sweep what dead processes left (their socket files).
            sweepDead()
        }
    }

    /// Records that this process sent (or received) on the channel.
    func mark(_ role: UInt32) {
        let key = ObjectIdentifier(lease)
        Self.local.withLock { entries in
            guard let local = entries[key], owner(local.index).pointee.load(ordering: .acquiring) == me else { return }
            roles(local.index).pointee.bitwiseOr(role, ordering: .relaxed)
        }
    }

    /// Our own entry's index, if we have one.
    var ownIndex: Int? {
        Self.local.withLock { entries in
            entries[ObjectIdentifier(lease)].flatMap { owner($0.index).pointee.load(ordering: .acquiring) == me ? $0.index : nil }
        }
    }

    /// A free entry, claimed for us; nil if none. Sweeps every entry of a dead process on the way
    /// (an open is rare, and this is what frees the entries of processes that were killed).
    private func claimEntry() -> Int? {
        var claimed: Int?
        for index in 0..<Self.count {
            var word = owner(index).pointee.load(ordering: .acquiring)
            if word != 0, !lease.isAlive(word) {
                sweep(index, dead: word)
                word = owner(index).pointee.load(ordering: .acquiring)
            }
            guard claimed == nil, word == 0 else { continue }
            guard owner(index).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else { continue }
            HotPath.crashPoint("channel.participants.claimed")
            // A sweeper zeroed the fields before it freed the entry; zero them again all the same
            // (an entry freed by a version that did not, or scribbled).
            clear(index)
            handles(index).pointee.store(1, ordering: .relaxed)
            claimed = index
        }
        return claimed
    }

    /// Zeroes entry `index`'s fields (not its owner) and its armed bit, removing its socket file if
    /// it names one. Only the entry's owner (or its sweeper) calls this.
    private func clear(_ index: Int) {
        armed.pointee.bitwiseAnd(~(UInt64(1) << UInt64(index)), ordering: .sequentiallyConsistent)
        let number = notifier(index).pointee.load(ordering: .acquiring)
        if number != 0 { removeDeadSocket(number) }
        roles(index).pointee.store(0, ordering: .relaxed)
        handles(index).pointee.store(0, ordering: .relaxed)
        pokes(index).pointee.store(0, ordering: .relaxed)
        // Counts a sweeper took already, or of threads of a live process that let the entry go
        // while they wait (they count themselves out of the header; never subtracted for them).
        receiversWaiting(index).pointee.store(0, ordering: .relaxed)
        sendersWaiting(index).pointee.store(0, ordering: .relaxed)
        notifier(index).pointee.store(0, ordering: .releasing)
    }

    /// Sweeps entry `index` if its owner is still `dead`: takes it (our token with the flag bit),
    /// clears it, frees it. Returns whether it did (false: another process swept it, or it changed).
    @discardableResult
    func sweep(_ index: Int, dead: UInt64) -> Bool {
        guard (0..<Self.count).contains(index), dead != 0 else { return false }
        let mark = me | OwnerLease.flagBit
        guard owner(index).pointee.compareExchange(expected: dead, desired: mark, ordering: .sequentiallyConsistent).exchanged else { return false }
        HotPath.crashPoint("channel.participants.sweep.taken")
        dropWaiterCounts(index)
        clear(index)
        owner(index).pointee.store(0, ordering: .sequentiallyConsistent)
        return true
    }

    /// Takes the waiter counts of entry `index`, which we are sweeping (its owner died), and
    /// subtracts them from the header's counts, never below 0; wakes nobody. The exchange takes
    /// them once even if a sweeper before us died after taking the entry.
    private func dropWaiterCounts(_ index: Int) {
        guard let waiterCounts else { return }
        let receivers = receiversWaiting(index).pointee.exchange(0, ordering: .sequentiallyConsistent)
        let senders = sendersWaiting(index).pointee.exchange(0, ordering: .sequentiallyConsistent)
        HotPath.crashPoint("channel.participants.sweep.countsTaken")
        subtractWithoutWrapping(receivers, from: waiterCounts.receivers)
        subtractWithoutWrapping(senders, from: waiterCounts.senders)
    }

    /// Sweeps the entries of dead processes that still count waiters, if no such sweep of this
    /// table started in this process for ``waiterSweepInterval``: what a channel's wake-up call
    /// that woke nobody does (``ChannelRing/wake(_:all:)``), the sign of a waiter counted and not
    /// parked — on its way, or killed while parked. Checks the liveness only of entries whose
    /// counts are not 0.
    func sweepDeadWaitersIfDue() {
        guard waiterCounts != nil else { return }
        let now = Clock.monotonicNanoseconds()
        let last = lastWaiterSweep.load(ordering: .relaxed)
        guard now &- last >= Self.waiterSweepInterval,
              lastWaiterSweep.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        for index in 0..<Self.count {
            guard receiversWaiting(index).pointee.load(ordering: .relaxed) != 0
                || sendersWaiting(index).pointee.load(ordering: .relaxed) != 0 else { continue }
            let word = owner(index).pointee.load(ordering: .acquiring)
            if word != 0, !lease.isAlive(word) { sweep(index, dead: word) }
        }
    }

    /// Sweeps every entry whose owner is dead (`ipc gc` through ``ParticipantsSweep``, tests).
    /// Returns how many it swept (not those another process swept meanwhile).
    @discardableResult
    func sweepDead() -> Int {
        var swept = 0
        for index in 0..<Self.count {
            let word = owner(index).pointee.load(ordering: .acquiring)
            if word != 0, !lease.isAlive(word), sweep(index, dead: word) {
                swept += 1
            }
        }
        return swept
    }

    /// Removes the socket file numbered `number` if it is a socket that nobody is bound to (a dead
    /// registration's): never a file of another kind, never a live registration's.
    private func removeDeadSocket(_ number: UInt64) {
        if let path = socketPath(number) { ReadinessSocket.removeIfDead(path) }
    }

    // MARK: Readiness

    /// Records `number` as entry `index`'s readiness socket (before the socket file exists).
    func setNotifier(_ index: Int, _ number: UInt64) {
        notifier(index).pointee.store(number, ordering: .sequentiallyConsistent)
    }

    /// Records `number` as our entry's readiness socket if it has none yet (false: it has one).
    func claimNotifier(_ index: Int, _ number: UInt64) -> Bool {
        Self.local.withLock { _ in
            notifier(index).pointee.compareExchange(expected: 0, desired: number, ordering: .sequentiallyConsistent).exchanged
        }
    }

    /// Datagrams sent to entry `index`'s readiness socket.
    func pokeCount(_ index: Int) -> UInt64 { pokes(index).pointee.load(ordering: .relaxed) }

    /// Asks for a datagram at the next message (sequentially consistent: before the caller looks at the ring).
    /// While a channel's exclusive sender holds the role, it loads `descriptors_armed` with a plain
    /// load after its release store: the armer makes the slow side of the asymmetric fence before
    /// the caller looks (see `ChannelRing.fenceBeforeParking(behind:)`).
    func arm(_ index: Int) {
        armed.pointee.bitwiseOr(UInt64(1) << UInt64(index), ordering: .sequentiallyConsistent)
        if let exclusiveSender, exclusiveSender.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            _ = AsymmetricFence.heavy()
        }
    }

    func disarm(_ index: Int) {
        armed.pointee.bitwiseAnd(~(UInt64(1) << UInt64(index)), ordering: .sequentiallyConsistent)
    }

    /// Sends one datagram to every armed readiness descriptor, taking their bits (each asks again
    /// when it has been emptied). A refused datagram (the socket is gone) leads to a sweep if the
    /// entry's owner is dead. Called by a sender that published, after it saw a bit set.
    func poke() {
        var bits = armed.pointee.exchange(0, ordering: .sequentiallyConsistent)
        guard bits != 0 else { return }
        while bits != 0 {
            let index = bits.trailingZeroBitCount
            bits &= bits &- 1
            let word = owner(index).pointee.load(ordering: .acquiring)
            let number = notifier(index).pointee.load(ordering: .acquiring)
            guard Self.isToken(word), number != 0, let path = socketPath(number), let sent = ReadinessSocket.poke(path) else { continue }
            switch sent {
            case .success:
                // Sent, or the socket's queue is full (so it is readable already).
                pokes(index).pointee.wrappingAdd(1, ordering: .relaxed)
            case .failure(let error):
                // Gone or nobody bound: its process died (or closed it as we looked). Another user's
                // directory cannot be reached from here (permission denied): nothing to do.
                if ReadinessSocket.isGone(error), !lease.isAlive(word) {
                    sweep(index, dead: word)
                }
            }
        }
    }

    // MARK: Describing

    /// The participants in a copy of a channel's table, for `ipc ls` / `ipc inspect`: details per
    /// entry, and how many live processes sent and received. `roleNames`: how an entry's line names
    /// the roles, and an entry with none (a service says client, server, "no requests yet").
    static func describe(
        _ table: UnsafeRawBufferPointer, armed: UInt64, isAlive: (UInt64) -> Bool,
        roleNames: (sender: String, receiver: String, none: String) = ("sender", "receiver", "no messages yet")
    ) -> (details: [String: String], senders: Int, receivers: Int, ended: Int) {
        var details: [String: String] = [:]
        var senders = 0, receivers = 0, ended = 0, listed = 0
        for index in 0..<min(count, table.count / entrySize) {
            let record = table.load(fromByteOffset: index * entrySize, as: cipc_channel_participant.self)
            let word = record.owner & ~OwnerLease.flagBit
            guard word != 0 else { continue }
            listed += 1
            let alive = isAlive(word)
            var names: [String] = []
            if record.roles & senderRole != 0 { names.append(roleNames.sender) }
            if record.roles & receiverRole != 0 { names.append(roleNames.receiver) }
            if record.roles & ~(senderRole | receiverRole) != 0 { names.append("roles invalid (\(record.roles))") }
            if alive {
                if record.roles & senderRole != 0 { senders += 1 }
                if record.roles & receiverRole != 0 { receivers += 1 }
            } else {
                ended += 1
            }
            var text = "pid \(OwnerLease.displayPID(of: word)) " + (alive ? "alive" : "ended")
            if record.owner & OwnerLease.flagBit != 0 { text += " (being swept)" }
            text += ", " + (names.isEmpty ? roleNames.none : names.joined(separator: " and "))
            text += ", \(record.handles) handle\(record.handles == 1 ? "" : "s")"
            if record.receivers_waiting != 0 || record.senders_waiting != 0 {
                text += ", waiting: \(record.receivers_waiting) receiving, \(record.senders_waiting) sending"
            }
            if record.notifier != 0 {
                let isArmed = armed & (UInt64(1) << UInt64(index)) != 0
                text += ", readiness descriptor (" + (isArmed ? "armed" : "signalled or not armed") + ", \(record.pokes) wake-ups)"
            }
            details["participant.\(index)"] = text
        }
        details["participants"] = "\(listed)"
        details["producers"] = "\(senders)"
        details["consumers"] = "\(receivers)"
        return (details, senders, receivers, ended)
    }
}

/// One of a process's counts of its waiters in its entry of a channel's table
/// (``ChannelParticipants/receiverTally``, ``ChannelParticipants/senderTally``): a thread counts
/// itself in only while the entry is its process's (checked under the process-local lock that its
/// process's joining and leaving take), so an entry never counts a thread of another process.
///
/// `@unchecked Sendable`: immutable; the entry's words are atomics, the process-local map is behind
/// its lock.
final class EntryWaiterTally: ProcessWaiterTally, @unchecked Sendable {
    private let table: UnsafeMutableRawPointer
    private let lease: OwnerLease
    /// The count's offset in an entry.
    private let field: Int

    init(table: UnsafeMutableRawPointer, lease: OwnerLease, field: Int) {
        self.table = table
        self.lease = lease
        self.field = field
    }

    func countWaiter() -> UnsafeMutablePointer<Atomic<UInt32>>? {
        // Counted in the header already: a process killed here leaves an over-count of one.
        HotPath.crashPoint("channel.wait.countedGlobally")
        let me = lease.token
        return ChannelParticipants.local.withLock { entries -> UnsafeMutablePointer<Atomic<UInt32>>? in
            guard let local = entries[ObjectIdentifier(lease)] else { return nil }
            let entry = table + local.index * ChannelParticipants.entrySize
            guard atomic64(entry).pointee.load(ordering: .acquiring) == me else { return nil }
            let count = atomic32(entry + field)
            count.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            return count
        }
    }

    func countedOut() {
        // Out of the entry, not yet out of the header: a process killed here leaves an over-count of one.
        HotPath.crashPoint("channel.wait.uncountedEntry")
    }
}

/// One handle's place in a table of participants: it joins when it is made and leaves once, at
/// ``leave()`` (its state's `close()`) or when it goes away. What every state with a table holds (a
/// channel's, a message queue's, a service's).
///
/// `@unchecked Sendable`: the table is safe to share (shared words atomic, process-local entries
/// behind a lock) and `left` is an atomic.
final class ParticipantsMembership: @unchecked Sendable {
    let table: ChannelParticipants?
    private let left = Atomic<Bool>(false)

    init(_ table: ChannelParticipants?) {
        self.table = table
        table?.join()
    }

    deinit { leave() }

    /// This handle no longer counts in the table (once).
    func leave() {
        if !left.exchange(true, ordering: .relaxed) { table?.leave() }
    }
}
