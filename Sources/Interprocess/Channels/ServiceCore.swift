import CInterprocess
import InterprocessSystem
import Synchronization

/// One request's reply slot and ticket: what a client holds from taking a slot to collecting the
/// reply, and what a server holds from taking the request to replying.
@usableFromInline
struct ServiceTicket: Sendable, Hashable {
    let slot: Int
    let ticket: UInt64
}

/// The deadline of one call (a whole request, or one wait for the next request), made once from its
/// timeout: what ``Service``'s inlinable verbs hand to ``ServiceCore``, which does the waiting.
@usableFromInline
struct ServiceWait: Sendable {
    let deadline: Deadline

    @usableFromInline
    init(timeout: Duration?) { deadline = Deadline(after: timeout) }

    /// What is left of it, as a timeout (nil: no deadline).
    var remaining: Duration? {
        deadline.isNever ? nil : .nanoseconds(Int64(clamping: deadline.remainingNanoseconds))
    }
}

/// What a client waiting for its reply found.
@usableFromInline
enum ServiceOutcome {
    /// The reply is in.
    case replied
    /// The server refused the request (the slot holds its reason).
    case failed
    /// The server that took the request (this token) died before it replied.
    case serverDied(UInt64)
}

/// The protocol of a ``Service`` on its shared memory: a request queue (a ``ChannelRing`` on the
/// channel embedded in the state) and a table of reply slots, each a 16-byte atomic pair
/// (`control` = ticket << 8 | phase, and the serving process's token — the reply's length once
/// replied), the client's token, a futex
/// word and the reply's bytes. The layout and the protocol are `cipc_service` in
/// `CInterprocessService.h`; what a process killed at each step leaves behind is on ``Service``.
///
/// It moves bytes; what they mean is ``Service``'s business (its codecs). Every number read from
/// the shared state is checked before it is used: a reply slot's index (from a queue message)
/// against the slot count, phases against the known ones, a reply's length against the slot, the
/// client word of the caller's own slot against its token; a value no correct peer writes is
/// `corrupt`.
///
/// Nothing here is generic: ``Service``'s verbs are inlinable (a program's `Service<Job, Result>`
/// runs them specialized, with no generic metadata looked up per request: that lookup was a fifth of
/// a request's time) and call these with bytes and closures.
///
/// `@unchecked Sendable`: the pointers point into a mapping that `storage` keeps alive, every shared
/// word is accessed atomically, and the rest is immutable.
@usableFromInline
final class ServiceCore: @unchecked Sendable {
    let name: String?
    /// The request queue.
    let queue: ChannelRing
    let slotCount: Int
    @usableFromInline let maxRequestSize: Int
    @usableFromInline let maxResponseSize: Int
    private let stride: Int
    private let slots: UnsafeMutableRawPointer

    private let requests: UnsafeMutablePointer<Atomic<UInt64>>
    private let replies: UnsafeMutablePointer<Atomic<UInt64>>
    private let discardedReplies: UnsafeMutablePointer<Atomic<UInt64>>
    private let serverDeaths: UnsafeMutablePointer<Atomic<UInt64>>
    private let reclaimedSlots: UnsafeMutablePointer<Atomic<UInt64>>
    private let staleRequests: UnsafeMutablePointer<Atomic<UInt64>>
    private let slotHint: UnsafeMutablePointer<Atomic<UInt32>>
    private let slotSignal: UnsafeMutableRawPointer
    private let slotWaiters: UnsafeMutableRawPointer

    private let lease: OwnerLease
    /// This process's token: what it records as a slot's client or server.
    let me: UInt64
    /// Keeps the memory mapped.
    private let storage: SharedObjectStorage

    static let free = UInt(CIPC_SERVICE_FREE)
    static let pending = UInt(CIPC_SERVICE_PENDING)
    static let serving = UInt(CIPC_SERVICE_SERVING)
    /// "SRV2"'s phase of a server writing its reply; "SRV3" writes it in SERVING (never seen here).
    static let retiredWriting = UInt(CIPC_SERVICE_WRITING)
    static let replied = UInt(CIPC_SERVICE_REPLIED)
    static let failed = UInt(CIPC_SERVICE_FAILED)
    static let abandoned = UInt(CIPC_SERVICE_ABANDONED)
    static let ticketMask: UInt64 = (1 << 56) - 1
    static let headerSize = Int(CIPC_SERVICE_REQUEST_HEADER_SIZE)
    static let dataOffset = Int(CIPC_SERVICE_SLOT_HEADER_SIZE)
    /// How often a waiting client checks that its server lives, and a client waiting for a slot
    /// looks for slots of clients that died.
    static let recoveryInterval: UInt64 = 50_000_000

    /// The service's table of participants (nil: a service created without one); the request
    /// queue pokes its armed readiness descriptors (``ServiceParticipants``).
    let participants: ChannelParticipants?
    /// Whether this handle has recorded this process as a server (process-local).
    private let markedServer = Atomic<Bool>(false)

    init(storage: SharedObjectStorage, geometry: ServiceLayout.Geometry, participants: ChannelParticipants? = nil) throws(InterprocessError) {
        guard let lease = storage.lease else { preconditionFailure("a service's storage carries a lease") }
        let base = storage.base
        self.storage = storage
        self.lease = lease
        me = lease.token
        name = storage.name
        slotCount = geometry.slots
        maxRequestSize = geometry.maxRequestSize
        maxResponseSize = geometry.maxResponseSize
        stride = geometry.stride
        slots = base + geometry.slotsOffset
        queue = try ChannelRing(
            storage: storage, base: base + ServiceLayout.headerSize, capacity: geometry.queue.capacity,
            maxMessageSize: geometry.queue.maxMessageSize, stride: geometry.queue.stride, participants: participants)
        self.participants = participants
        requests = atomic64(base + fieldOffset(\cipc_service.requests))
        replies = atomic64(base + fieldOffset(\cipc_service.replies))
        discardedReplies = atomic64(base + fieldOffset(\cipc_service.discarded_replies))
        serverDeaths = atomic64(base + fieldOffset(\cipc_service.server_deaths))
        reclaimedSlots = atomic64(base + fieldOffset(\cipc_service.reclaimed_slots))
        staleRequests = atomic64(base + fieldOffset(\cipc_service.stale_requests))
        slotHint = atomic32(base + fieldOffset(\cipc_service.slot_hint))
        slotSignal = base + fieldOffset(\cipc_service.slot_signal)
        slotWaiters = base + fieldOffset(\cipc_service.slot_waiters)
    }

    // MARK: Slots

    @inline(__always)
    private func slot(_ index: Int) -> UnsafeMutableRawPointer { slots + index &* stride }

    @inline(__always)
    private func pair(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<WordPair>> {
        slot.assumingMemoryBound(to: Atomic<WordPair>.self)
    }

    /// The pair as it is now. The pair changes only by a 16-byte compare-and-swap (or store); its
    /// halves are read with two 8-byte loads, much cheaper than the locked 16-byte instruction that
    /// a 16-byte load takes on x86. A torn read (the halves of two different pairs) is a pair that
    /// no compare-and-swap expects: the caller's exchange fails and it looks again. The server half
    /// changes only with the control half, so a control read names the phase the server half is of.
    @inline(__always)
    private func load(_ slot: UnsafeMutableRawPointer) -> WordPair {
        let control = atomic64(slot).pointee.load(ordering: .acquiring)
        let server = atomic64(slot + 8).pointee.load(ordering: .acquiring)
        return WordPair(first: UInt(control), second: UInt(server))
    }

    @inline(__always)
    private func client(_ slot: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(slot + 16) }

    @inline(__always)
    private func signal(_ slot: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer { slot + 24 }

    @inline(__always)
    private func waiting(_ slot: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer { slot + 28 }

    @inline(__always)
    private static func word(_ ticket: UInt64, _ phase: UInt, server: UInt64 = 0) -> WordPair {
        WordPair(first: UInt(ticket << 8) | phase, second: UInt(server))
    }

    @inline(__always)
    private static func ticket(of pair: WordPair) -> UInt64 { UInt64(pair.first) >> 8 }

    @inline(__always)
    private static func phase(of pair: WordPair) -> UInt { pair.first & 0xFF }

    // MARK: Clients: taking a slot

    /// One attempt to take a free reply slot for a new request: its `client` word, then `control`
    /// from (t, FREE) to (t + 1, PENDING). With `checkNow`, when none is free, takes back the slots
    /// of clients that died.
    func claimSlot(checkNow: Bool) throws(InterprocessError) -> WaitStep<ServiceTicket> {
        let signal = atomic32(slotSignal).pointee.load(ordering: .sequentiallyConsistent)
        let start = Int(slotHint.pointee.load(ordering: .relaxed)) % slotCount
        for step in 0..<slotCount {
            var index = start + step
            if index >= slotCount { index -= slotCount }
            let slot = slot(index)
            guard client(slot).pointee.load(ordering: .relaxed) == 0,
                  client(slot).pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged
            else { continue }
            HotPath.crashPoint("service.request.afterSlot")
            let observed = load(slot)
            guard Self.phase(of: observed) == Self.free else {
                client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
                throw corruptSlot(index, observed, "has no client but is not free")
            }
            let ticket = (Self.ticket(of: observed) &+ 1) & Self.ticketMask
            guard pair(slot).pointee.compareExchange(
                expected: observed, desired: Self.word(ticket, Self.pending), ordering: .sequentiallyConsistent
            ).exchanged else {
                client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
                return .retry
            }
            // Only the slot's client ever parks on it: a count left by a client killed while parked heals here.
            atomic32(waiting(slot)).pointee.store(0, ordering: .relaxed)
            slotHint.pointee.store(UInt32(truncatingIfNeeded: index + 1), ordering: .relaxed)
            return .done(ServiceTicket(slot: index, ticket: ticket))
        }
        if checkNow, try reclaimSlots() { return .retry }
        return .park(expected: signal)
    }

    /// Takes back the slots of clients that died (and slots abandoned by a server that died), so
    /// that others can use them; whether it found any. A slot that a live server has (SERVING: it
    /// may be writing the reply into it; ABANDONED: it frees it) is left until that server replied.
    func reclaimSlots() throws(InterprocessError) -> Bool {
        var found = false
        for index in 0..<slotCount {
            let slot = slot(index)
            let holder = client(slot).pointee.load(ordering: .acquiring)
            guard holder != 0, holder != me else { continue }
            guard holder >= 1 << 32, holder & OwnerLease.flagBit == 0 else {
                throw InterprocessError(.corrupt, objectName: name, detail: "reply slot \(index) has client \(holder), which is not a process token")
            }
            // One consistent read (the locked 16-byte load): the liveness decided below is of this pair's server.
            let observed = pair(slot).pointee.load(ordering: .acquiring)
            let phase = Self.phase(of: observed)
            guard phase <= Self.abandoned else { throw corruptSlot(index, observed, "is in no phase of the protocol") }
            if phase == Self.retiredWriting { throw corruptSlot(index, observed, "is in a phase of an older protocol") }
            if phase == Self.serving || phase == Self.abandoned {
                // Its server handles it (and may be writing its reply), or will free it when done:
                // only if that server died is it ours.
                if lease.isAlive(UInt64(observed.second)) { continue }
            } else if lease.isAlive(holder) {
                continue
            }
            guard client(slot).pointee.compareExchange(expected: holder, desired: me, ordering: .sequentiallyConsistent).exchanged else { continue }
            HotPath.crashPoint("service.reclaim.afterClaim")
            guard pair(slot).pointee.compareExchange(
                expected: observed, desired: Self.word(Self.ticket(of: observed), Self.free), ordering: .sequentiallyConsistent
            ).exchanged else {
                // A server moved on meanwhile (took the request, published its reply, or freed an
                // abandoned slot and is about to clear its client): leave it for a later look.
                _ = client(slot).pointee.compareExchange(expected: me, desired: holder, ordering: .sequentiallyConsistent)
                continue
            }
            client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
            reclaimedSlots.pointee.wrappingAdd(1, ordering: .relaxed)
            found = true
        }
        if found, atomic32(slotWaiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            atomic32(slotSignal).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            _ = Futex.wakeAll(slotSignal)
        }
        return found
    }

    /// Takes a free reply slot, blocking the thread while none is free, until `deadline`.
    func blockingClaimSlot(until deadline: Deadline) throws(InterprocessError) -> ServiceTicket {
        if case .done(let ticket) = try claimSlot(checkNow: false) { return ticket }
        return try slotSite.blockingWait(until: deadline) { check throws(InterprocessError) in try self.claimSlot(checkNow: check) }
    }

    /// Takes a free reply slot, suspending the task while none is free, until `deadline`.
    func claimSlot(until deadline: Deadline) async throws(InterprocessError) -> ServiceTicket {
        if case .done(let ticket) = try claimSlot(checkNow: false) { return ticket }
        return try await slotSite.asyncWait(until: deadline) { check throws(InterprocessError) in try self.claimSlot(checkNow: check) }
    }

    /// Takes a free reply slot if there is one now (taking back those of dead clients if there is not).
    func tryClaimSlot() throws(InterprocessError) -> ServiceTicket? {
        for check in [false, true] {
            for _ in 0..<16 {
                switch try claimSlot(checkNow: check) {
                case .done(let ticket): return ticket
                case .retry: continue
                case .park: break
                }
                break
            }
        }
        return nil
    }

    private var slotSite: WaitSite {
        WaitSite(word: slotSignal, waiters: slotWaiters, name: name, recheckEvery: Self.recoveryInterval)
    }

    // MARK: Clients: the request

    /// Takes a reply slot and a queue position for a request, blocking the thread while there is
    /// none, until the call's deadline. Throws (named) having taken nothing.
    @usableFromInline
    func blockingClaimRequest(_ wait: ServiceWait) throws(InterprocessError) -> (ServiceTicket, ChannelClaim) {
        let ticket = try named { () throws(InterprocessError) in try blockingClaimSlot(until: wait.deadline) }
        do throws(InterprocessError) {
            return (ticket, try queue.blockingClaimToSend(timeout: wait.remaining))
        } catch {
            release(ticket)
            throw named(error)
        }
    }

    /// ``blockingClaimRequest(_:)``, suspending the task instead (`cancelled`, having taken
    /// nothing, if the task is cancelled).
    @usableFromInline
    func claimRequest(_ wait: ServiceWait) async throws(InterprocessError) -> (ServiceTicket, ChannelClaim) {
        let ticket: ServiceTicket
        do throws(InterprocessError) {
            ticket = try await claimSlot(until: wait.deadline)
        } catch {
            throw named(error)
        }
        do throws(InterprocessError) {
            return (ticket, try await queue.claimToSend(timeout: wait.remaining))
        } catch {
            release(ticket)
            throw named(error)
        }
    }

    /// Writes the queue message of `ticket`'s request (its header and `bytes`, at most
    /// ``maxRequestSize``: the caller checked) into the claimed queue slot and publishes it.
    @usableFromInline
    func send(_ ticket: ServiceTicket, _ claim: ChannelClaim, _ bytes: UnsafeRawBufferPointer) {
        // The header and the bytes, written straight into the queue slot.
        queue.finishSend(claim, byteCount: Self.headerSize + bytes.count) { data in
            data.storeBytes(of: UInt32(ticket.slot).littleEndian, as: UInt32.self)
            (data + 4).storeBytes(of: UInt32(0), as: UInt32.self)
            (data + 8).storeBytes(of: ticket.ticket.littleEndian, as: UInt64.self)
            if let source = bytes.baseAddress, bytes.count > 0 {
                (data + Self.headerSize).copyMemory(from: source, byteCount: bytes.count)
            }
        }
        requests.pointee.wrappingAdd(1, ordering: .relaxed)
        HotPath.crashPoint("service.request.afterSend")
    }

    /// The reply slot and the ticket of the queue message at `data` (its header, as ``send(_:_:_:)``
    /// writes it: `cipc_service_request`), unchecked.
    @inline(__always)
    static func requestHeader(_ data: UnsafeRawPointer) -> (index: Int, ticket: UInt64) {
        (Int(UInt32(littleEndian: data.loadUnaligned(as: UInt32.self))), UInt64(littleEndian: data.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    // MARK: Clients: the hot path of raw values

    /// A whole request of `bytes` (at most ``maxRequestSize``: the caller checked) if it needs no
    /// wait: a reply slot and a queue position taken at the first try
    /// (``blockingClaimRequest(_:)``'s first attempts), then ``send(_:_:_:)``: one call. Nil,
    /// having taken nothing, when either would wait (or lost a race): the caller takes the general
    /// path from the start. Errors are named.
    @usableFromInline
    func sendNow(_ bytes: UnsafeRawBufferPointer) throws(InterprocessError) -> ServiceTicket? {
        let ticket: ServiceTicket
        let claim: ChannelClaim
        do throws(InterprocessError) {
            guard case .done(let slotTicket) = try claimSlot(checkNow: false) else { return nil }
            ticket = slotTicket
            do throws(InterprocessError) {
                guard case .done(let queueClaim) = try queue.claimForSending(checkNow: false, announce: false) else {
                    release(ticket)
                    return nil
                }
                claim = queueClaim
            } catch {
                release(ticket)
                throw error
            }
        } catch {
            throw named(error)
        }
        send(ticket, claim, bytes)
        return ticket
    }

    /// The reply of `ticket` collected in one call if it is in (REPLIED), looking at most `rounds`
    /// pause rounds more (a request's reply usually comes within a few hundred nanoseconds, and
    /// spinning here spares it the general wait's set-up), and is `size` bytes long: handed to
    /// `load` (which must not keep the pointer), then the slot freed — ``collect(_:_:_:)``'s steps
    /// and crash points. False, having done nothing: not in yet, or another phase (a refusal, a
    /// server that died, a damaged slot), or another length: the caller waits the general way
    /// (``blockingAwaitReply(_:_:)``), which sees to each.
    @usableFromInline
    func collectValue(_ ticket: ServiceTicket, size: Int, spinning rounds: Int, _ load: (UnsafeRawPointer) -> Void) -> Bool {
        let slot = slot(ticket.slot)
        let control = atomic64(slot)
        let replied = ticket.ticket << 8 | UInt64(Self.replied)
        guard HotPath.spin(rounds: rounds, until: { control.pointee.load(ordering: .acquiring) == replied }) else { return false }
        // The length is the pair's second half in REPLIED (published with the phase).
        guard client(slot).pointee.load(ordering: .relaxed) == me,
              atomic64(slot + 8).pointee.load(ordering: .acquiring) == UInt64(size)
        else { return false }
        HotPath.crashPoint("service.request.afterReply")
        load(UnsafeRawPointer(slot + Self.dataOffset))
        free(ticket)
        return true
    }

    /// Lets go of a slot whose request was never queued (the queue was full until the deadline,
    /// closed, or the task was cancelled).
    func release(_ ticket: ServiceTicket) {
        let slot = slot(ticket.slot)
        pair(slot).pointee.store(Self.word(ticket.ticket, Self.free), ordering: .sequentiallyConsistent)
        client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
        wakeSlotWaiter()
    }

    // MARK: Clients: the reply

    /// One look at the reply slot of `ticket`: the outcome, or park. With `checkNow`, checks that
    /// the server that took the request lives.
    func awaitReply(_ ticket: ServiceTicket, checkNow: Bool) throws(InterprocessError) -> WaitStep<ServiceOutcome> {
        let slot = slot(ticket.slot)
        let signal = atomic32(signal(slot)).pointee.load(ordering: .sequentiallyConsistent)
        // Sequentially consistent (a plain load on x86, as acquiring is): after a park counted in
        // `waiting`, this look and the server's load of `waiting` after its publishing exchange
        // cannot both miss each other (see `deliver`).
        let control = atomic64(slot).pointee.load(ordering: .sequentiallyConsistent)
        let observed = WordPair(first: UInt(control), second: UInt(atomic64(slot + 8).pointee.load(ordering: .acquiring)))
        guard Self.ticket(of: observed) == ticket.ticket, client(slot).pointee.load(ordering: .relaxed) == me else {
            throw corruptSlot(ticket.slot, observed, "was taken from under its request (ticket \(ticket.ticket))")
        }
        switch Self.phase(of: observed) {
        case Self.replied: return .done(.replied)
        case Self.failed: return .done(.failed)
        case Self.pending: return .park(expected: signal)
        case Self.serving:
            let server = UInt64(observed.second)
            if checkNow, !lease.isAlive(server) { return .done(.serverDied(server)) }
            return .park(expected: signal)
        default:
            throw corruptSlot(ticket.slot, observed, "is in no phase a waiting request can see")
        }
    }

    private func replySite(_ ticket: ServiceTicket) -> WaitSite {
        let slot = slot(ticket.slot)
        return WaitSite(word: signal(slot), waiters: waiting(slot), name: name, recheckEvery: Self.recoveryInterval)
    }

    /// Waits for the reply of `ticket`, blocking the thread, until the call's deadline; a wait that
    /// ends without one (timed out) gives the request up (``abandon(_:)``). Errors are named. The
    /// server's liveness is checked every ``recoveryInterval`` while the client is parked, but not
    /// at its first park: a request that parks is the common case, and its server is almost always
    /// alive (the check is a system call).
    @usableFromInline
    func blockingAwaitReply(_ ticket: ServiceTicket, _ wait: ServiceWait) throws(InterprocessError) -> ServiceOutcome {
        var first = true
        do throws(InterprocessError) {
            return try replySite(ticket).blockingWait(until: wait.deadline) { check throws(InterprocessError) in
                let due = check && !first
                if check { first = false }
                return try self.awaitReply(ticket, checkNow: due)
            }
        } catch {
            try named { () throws(InterprocessError) in try abandon(ticket) }
            throw named(error)
        }
    }

    /// ``blockingAwaitReply(_:_:)``, suspending the task instead (`cancelled` gives the request up too).
    @usableFromInline
    func awaitReply(_ ticket: ServiceTicket, _ wait: ServiceWait) async throws(InterprocessError) -> ServiceOutcome {
        var first = true
        do throws(InterprocessError) {
            return try await replySite(ticket).asyncWait(until: wait.deadline) { check throws(InterprocessError) in
                let due = check && !first
                if check { first = false }
                return try self.awaitReply(ticket, checkNow: due)
            }
        } catch {
            try named { () throws(InterprocessError) in try abandon(ticket) }
            throw named(error)
        }
    }

    /// Collects what `outcome` found: copies the reply out with `copy`, or throws the server's
    /// refusal (`requestFailed`) or its death (`serverDied`); frees the slot.
    @usableFromInline
    func collect(
        _ ticket: ServiceTicket, _ outcome: ServiceOutcome, _ copy: (UnsafeRawBufferPointer) throws(InterprocessError) -> Void
    ) throws(InterprocessError) {
        let slot = slot(ticket.slot)
        switch outcome {
        case .replied, .failed:
            HotPath.crashPoint("service.request.afterReply")
            // The length is the pair's second half in REPLIED and FAILED (published with the phase).
            let count = Int(truncatingIfNeeded: min(atomic64(slot + 8).pointee.load(ordering: .acquiring), UInt64(Int32.max)))
            guard count <= maxResponseSize else {
                free(ticket)
                throw InterprocessError(.corrupt, objectName: name,
                    detail: "a reply of \(count) bytes in a service of at most \(maxResponseSize)-byte responses (dropped)")
            }
            let bytes = UnsafeRawBufferPointer(start: slot + Self.dataOffset, count: count)
            if case .failed = outcome {
                let reason = String(decoding: bytes, as: UTF8.self)
                free(ticket)
                throw InterprocessError(.requestFailed, objectName: name, detail: reason)
            }
            defer { free(ticket) }
            return try copy(bytes)
        case .serverDied(let server):
            // Free the slot (its server cannot move on any more); count it once.
            while true {
                let observed = load(slot)
                guard Self.ticket(of: observed) == ticket.ticket else { throw corruptSlot(ticket.slot, observed, "was taken from under its request") }
                if pair(slot).pointee.compareExchange(
                    expected: observed, desired: Self.word(ticket.ticket, Self.free), ordering: .sequentiallyConsistent
                ).exchanged { break }
            }
            client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
            wakeSlotWaiter()
            serverDeaths.pointee.wrappingAdd(1, ordering: .relaxed)
            throw InterprocessError(.serverDied, objectName: name,
                detail: "the server (pid \(OwnerLease.displayPID(of: server)) as it saw itself) died while it handled the request")
        }
    }

    /// Frees the slot of a collected reply.
    private func free(_ ticket: ServiceTicket) {
        let slot = slot(ticket.slot)
        pair(slot).pointee.store(Self.word(ticket.ticket, Self.free), ordering: .sequentiallyConsistent)
        HotPath.crashPoint("service.request.afterFree")
        client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
        wakeSlotWaiter()
    }

    /// Gives up the request of `ticket` (timed out, cancelled): its reply, if one comes, is
    /// discarded, and never reaches anyone else. Never waits: if a server has the request (SERVING),
    /// the slot becomes ABANDONED and that server frees it when it replies.
    func abandon(_ ticket: ServiceTicket) throws(InterprocessError) {
        let slot = slot(ticket.slot)
        while true {
            let observed = load(slot)
            guard Self.ticket(of: observed) == ticket.ticket else { throw corruptSlot(ticket.slot, observed, "was taken from under its request") }
            let phase = Self.phase(of: observed)
            switch phase {
            case Self.pending, Self.replied, Self.failed:
                guard pair(slot).pointee.compareExchange(
                    expected: observed, desired: Self.word(ticket.ticket, Self.free), ordering: .sequentiallyConsistent
                ).exchanged else { continue }
                if phase == Self.replied || phase == Self.failed { discardedReplies.pointee.wrappingAdd(1, ordering: .relaxed) }
                client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
                wakeSlotWaiter()
                return
            case Self.serving:
                // Its server may be writing the reply into the slot: the slot stays its until it is done.
                guard pair(slot).pointee.compareExchange(
                    expected: observed, desired: Self.word(ticket.ticket, Self.abandoned, server: UInt64(observed.second)),
                    ordering: .sequentiallyConsistent
                ).exchanged else { continue }
                return
            default:
                throw corruptSlot(ticket.slot, observed, "is in no phase a waiting request can see")
            }
        }
    }

    // MARK: Servers

    /// Claims the next queued request, blocking the thread while there is none, until the wait's
    /// deadline (errors named). `exclusive`: as the holder of the request queue's receiver role
    /// (``ExclusiveServer``).
    @usableFromInline
    func blockingClaimToServe(_ wait: ServiceWait, exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim {
        try named { () throws(InterprocessError) in try queue.blockingClaimToReceive(timeout: wait.remaining, exclusive: exclusive) }
    }

    /// ``blockingClaimToServe(_:exclusive:)``, suspending the task instead.
    @usableFromInline
    func claimToServe(_ wait: ServiceWait, exclusive: Bool = false) async throws(InterprocessError) -> ChannelClaim {
        do throws(InterprocessError) {
            return try await queue.claimToReceive(timeout: wait.remaining, exclusive: exclusive)
        } catch {
            throw named(error)
        }
    }

    /// Claims the next queued request if there is one now (errors named). When the queue is empty,
    /// the ring's `try` form also looks (at most once per ``ChannelRing/recoveryInterval`` in this
    /// process) for requests held by a server that died before it took them: a server that waits on
    /// a readiness descriptor never parks, so its `try…` calls are what redelivers such a request.
    @usableFromInline
    func tryClaimToServe(exclusive: Bool = false) throws(InterprocessError) -> ChannelClaim? {
        try named { () throws(InterprocessError) in try queue.tryClaimForReceiving(exclusive: exclusive) }
    }

    /// A shared server's claim of the next queued request when one is queued now or within
    /// `rounds` pause rounds (the hot path of ``Service/blockingServe(_:)`` for raw values): the
    /// general path's first attempt, without its wait. Nil, having claimed nothing, when none came
    /// (or another server won it): the caller takes the general path. Errors are named.
    @usableFromInline
    func claimToServeNow(spinning rounds: Int) throws(InterprocessError) -> ChannelClaim? {
        guard HotPath.spin(rounds: rounds, until: { queue.hasMessage() }) else { return nil }
        do throws(InterprocessError) {
            guard case .done(let claim) = try queue.claimForReceiving(checkNow: false, announce: false) else { return nil }
            return claim
        } catch {
            throw named(error)
        }
    }

    /// Records once per handle that this process serves (asks for requests), so that `ipc inspect`
    /// lists a server waiting for its first request as one.
    @usableFromInline @inline(__always)
    func markServer() {
        if !markedServer.load(ordering: .relaxed) { recordServer() }
    }

    @inline(never)
    private func recordServer() {
        markedServer.store(true, ordering: .relaxed)
        participants?.mark(ServiceParticipants.serverRole)
    }

    /// Takes the request in the claimed queue slot: checks its header, moves its reply slot from
    /// (t, PENDING) to (t, SERVING, this process) while the queue slot is still ours (a server
    /// killed before this leaves the message to be redelivered), copies the request out with
    /// `copyOut` (which keeps what it made, or why it could not), and releases the queue slot. The
    /// request's ticket; nil for a stale message (its client gave up).
    @usableFromInline
    func take(_ claim: ChannelClaim, _ copyOut: (UnsafeRawBufferPointer) -> Void) throws(InterprocessError) -> ServiceTicket? {
        var taken: ServiceTicket?
        try queue.finishReceive(claim) { bytes throws(InterprocessError) in
            guard bytes.count >= Self.headerSize else {
                throw InterprocessError(.corrupt, objectName: name, detail: "a request of \(bytes.count) bytes, shorter than its header (dropped)")
            }
            let (index, ticket) = Self.requestHeader(bytes.baseAddress.unsafelyUnwrapped)
            guard index < slotCount else {
                throw InterprocessError(.corrupt, objectName: name, detail: "a request for reply slot \(index) of \(slotCount) (dropped)")
            }
            let slot = slot(index)
            HotPath.crashPoint("service.serve.beforeTake")
            // Straight to the exchange, expecting what the client left (a pending slot's server
            // half is 0): one fetch of the slot's line, where a load first fetched it to read and
            // then again to write. A failed exchange returns what is there.
            var expected = Self.word(ticket, Self.pending)
            while true {
                let (exchanged, observed) = pair(slot).pointee.compareExchange(
                    expected: expected, desired: Self.word(ticket, Self.serving, server: me), ordering: .sequentiallyConsistent)
                if exchanged { break }
                guard Self.ticket(of: observed) == ticket, Self.phase(of: observed) == Self.pending else {
                    // Its client gave up (or died, and its slot was taken back): nobody waits.
                    staleRequests.pointee.wrappingAdd(1, ordering: .relaxed)
                    return
                }
                expected = observed
            }
            HotPath.crashPoint("service.serve.afterTake")
            copyOut(UnsafeRawBufferPointer(rebasing: bytes[Self.headerSize...]))
            taken = ServiceTicket(slot: index, ticket: ticket)
        }
        if taken != nil { HotPath.crashPoint("service.serve.afterRelease") }
        return taken
    }

    /// The exclusive server's ``take(_:_:)`` of a raw request of `size` bytes, when one is queued
    /// now or within `rounds` pause rounds (the hot path of ``ExclusiveServer/blockingServe(_:)``):
    /// the same steps and crash points as a claim at the queue's receive position followed by
    /// ``take(_:_:)`` — the reply slot marked SERVING while the queue slot still holds the request,
    /// the request handed to `load` (which must not keep the pointer), the queue slot freed and
    /// the receive position advanced — in one call. Nil, having done nothing, when the general
    /// path must run: nothing queued within the spin, a request whose server died to redeliver
    /// first, a message of another length or a damaged one, a request its client gave up.
    @usableFromInline
    func exclusiveTakeNow(size: Int, spinning rounds: Int, _ load: (UnsafeRawPointer) -> Void) -> ServiceTicket? {
        let position = queue.receivePosition.pointee.load(ordering: .relaxed)
        let slot = queue.slot(at: position)
        let sequence = queue.sequence(slot)
        guard HotPath.spin(rounds: rounds, until: { sequence.pointee.load(ordering: .acquiring) == ChannelRing.full(position) }) else { return nil }
        guard queue.orphans.pointee.load(ordering: .relaxed) == 0,
              queue.length(slot).pointee.load(ordering: .relaxed) == UInt32(truncatingIfNeeded: Self.headerSize + size)
        else { return nil }
        let data = UnsafeRawPointer(slot + ChannelRing.dataOffset)
        let (index, ticket) = Self.requestHeader(data)
        guard index < slotCount else { return nil }
        let replySlot = self.slot(index)
        HotPath.crashPoint("service.serve.beforeTake")
        guard pair(replySlot).pointee.compareExchange(
            expected: Self.word(ticket, Self.pending), desired: Self.word(ticket, Self.serving, server: me), ordering: .sequentiallyConsistent
        ).exchanged else { return nil }
        HotPath.crashPoint("service.serve.afterTake")
        load(data + Self.headerSize)
        HotPath.crashPoint("channel.receive.afterCopy")
        queue.releaseExclusively(slot, position: position)
        HotPath.crashPoint("service.serve.afterRelease")
        return ServiceTicket(slot: index, ticket: ticket)
    }

    /// Delivers the reply (`failed`: a refusal, whose bytes are its reason) of the request of
    /// `ticket`, which this process took and which is still (SERVING, us) or (ABANDONED, us): the
    /// slot is ours to write either way (nobody else moves it on while we live). Writes the bytes,
    /// then publishes them with one 16-byte exchange from (SERVING, us) to (REPLIED or FAILED, the
    /// length), and wakes the client if it parked. Whether the client got it: false if it gave up
    /// meanwhile (ABANDONED) — the reply is then discarded, reaches nobody, and we free the slot.
    ///
    /// The slot's first line (the one its client spins on) is written once, by the publishing
    /// exchange: each write to it while the client looks costs a transfer of the line ("SRV2" wrote
    /// it three times: WRITING, the length, REPLIED).
    @usableFromInline
    func deliver(_ ticket: ServiceTicket, failed: Bool, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let slot = slot(ticket.slot)
        let count = min(bytes.count, maxResponseSize)
        if let source = bytes.baseAddress, count > 0 {
            (slot + Self.dataOffset).copyMemory(from: source, byteCount: count)
        }
        HotPath.crashPoint("service.reply.afterWrite")
        let phase = failed ? Self.failed : Self.replied
        let (published, observed) = pair(slot).pointee.compareExchange(
            expected: Self.word(ticket.ticket, Self.serving, server: me),
            desired: WordPair(first: UInt(ticket.ticket << 8) | phase, second: UInt(count)), ordering: .sequentiallyConsistent)
        if published {
            HotPath.crashPoint("service.reply.afterPublish")
            // Wake the client only if it parked (or is about to: it counts itself in `waiting`
            // before its last look, and that look reads `control` sequentially consistently, after
            // our exchange or before our load here); bump `signal` first, so that a client about
            // to park with the old value does not. A client that spins sees the phase change.
            if atomic32(waiting(slot)).pointee.load(ordering: .sequentiallyConsistent) != 0 {
                atomic32(signal(slot)).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
                _ = Futex.wake(signal(slot), count: 1)
            }
            replies.pointee.wrappingAdd(1, ordering: .relaxed)
            return true
        }
        // The client gave up while we handled the request: the slot is ours to free.
        if observed == Self.word(ticket.ticket, Self.abandoned, server: me),
           pair(slot).pointee.compareExchange(expected: observed, desired: Self.word(ticket.ticket, Self.free), ordering: .sequentiallyConsistent).exchanged {
            client(slot).pointee.store(0, ordering: .sequentiallyConsistent)
            wakeSlotWaiter()
        }
        discardedReplies.pointee.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    /// Refuses the request of `ticket` with `reason` (the client gets `requestFailed`).
    @discardableResult @usableFromInline
    func refuse(_ ticket: ServiceTicket, reason: String) -> Bool {
        var text = Array(reason.utf8)
        if text.count > maxResponseSize { text.removeLast(text.count - maxResponseSize) }
        return text.withUnsafeBytes { deliver(ticket, failed: true, $0) }
    }

    // MARK: Waking

    private func wakeSlotWaiter() {
        if atomic32(slotWaiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            atomic32(slotSignal).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            _ = Futex.wake(slotSignal, count: 1)
        }
    }

    // MARK: Errors

    /// `error`, with this service's name if it has none.
    @usableFromInline
    func named(_ error: InterprocessError) -> InterprocessError {
        var error = error
        if error.objectName == nil || error.objectName == "" { error.objectName = name }
        return error
    }

    private func named<R>(_ body: () throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        do throws(InterprocessError) { return try body() } catch { throw named(error) }
    }

    private func corruptSlot(_ index: Int, _ observed: WordPair, _ what: String) -> InterprocessError {
        InterprocessError(.corrupt, objectName: name,
            detail: "reply slot \(index) (ticket \(Self.ticket(of: observed)), phase \(Self.phase(of: observed))) \(what)")
    }
}
