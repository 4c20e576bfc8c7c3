import CInterprocess
import InterprocessSystem

/// What creating a message queue takes.
struct MessageQueueParameters: Sendable {
    var capacity: Int
    var maxMessageSize: Int
    var messageType: ChannelMessageType
}

/// The validated geometry of a message queue: what an opener keeps its own copy of.
struct MessageQueueGeometry: Sendable {
    var capacity: Int
    var maxMessageSize: Int
    var stride: Int
    var readyOffset: Int
    var freeOffset: Int
    var slotsOffset: Int
    var size: Int
    var messageType: String
    var format: UInt32
}

/// The shared layout of a message queue (`cipc_mqueue` in `CInterprocessMessageQueue.h`): its size
/// for given parameters, how a creator initializes it, how an opener checks it, and how `ipc ls` and
/// `ipc inspect` describe it — the message-queue kind of shared object (registered in
/// ``SharedObjectRegistry``; ``MessageQueueState`` is the object).
enum MessageQueueLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .messageQueue }
    static var tag: UInt32 { CIPC_TAG_MQUEUE }
    static var tagOffset: Int { fieldOffset(\cipc_mqueue.tag) }
    static var kindName: String { "mqueue" }
    static var displayName: String { "message queue" }

    static let headerSize = Int(CIPC_MQUEUE_HEADER_SIZE)
    static let slotHeaderSize = Int(CIPC_MQUEUE_SLOT_HEADER_SIZE)
    static let maximumCapacity = Int(CIPC_MQUEUE_MAX_CAPACITY)
    static let maximumMessageSize = Int(CIPC_MQUEUE_MAX_MESSAGE_SIZE)

    /// Bytes from one slot to the next: its header and the message, rounded up to a cache line.
    static func stride(maxMessageSize: Int) -> Int { slotStride(header: slotHeaderSize, message: maxMessageSize) }

    /// Where the heap, the free stack and the slots are, and the whole size, for a geometry.
    static func offsets(capacity: Int, maxMessageSize: Int) -> (ready: Int, free: Int, slots: Int, size: Int) {
        let ready = headerSize
        let free = ready + 4 * capacity
        let slots = (free + 4 * capacity + 63) / 64 * 64
        return (ready, free, slots, slots + capacity * stride(maxMessageSize: maxMessageSize))
    }

    /// The bytes a queue with `parameters` needs. Throws `invalidArgument` for parameters it cannot
    /// be created with.
    static func size(for parameters: MessageQueueParameters) throws(InterprocessError) -> Int {
        try checkParameter("capacity", parameters.capacity, upTo: maximumCapacity)
        try checkParameter("maximum message size", parameters.maxMessageSize, upTo: maximumMessageSize, unit: " bytes")
        try parameters.messageType.checkRecordable()
        return offsets(capacity: parameters.capacity, maxMessageSize: parameters.maxMessageSize).size
    }

    /// Initializes a zero-filled state of `size` bytes: every slot free (state 0) and on the free
    /// stack, the heap empty. (The storage then publishes the tag.)
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: MessageQueueParameters) {
        let header = state.assumingMemoryBound(to: cipc_mqueue.self)
        let (ready, free, slots, total) = offsets(capacity: parameters.capacity, maxMessageSize: parameters.maxMessageSize)
        header.pointee.capacity = UInt32(parameters.capacity)
        header.pointee.max_message_size = UInt32(parameters.maxMessageSize)
        header.pointee.slot_stride = UInt32(stride(maxMessageSize: parameters.maxMessageSize))
        header.pointee.slots_offset = UInt32(slots)
        header.pointee.ready_offset = UInt32(ready)
        header.pointee.free_offset = UInt32(free)
        header.pointee.format = parameters.messageType.format
        // With the table of participants (``MessageQueueState/size(for:)``) or without it.
        header.pointee.state_size = UInt64(size == total + ChannelParticipants.tableSize ? size : total)
        header.pointee.message_type = parameters.messageType.fingerprint.shared
        // The free stack pops from its top: slot 0 is used first.
        let stack = (state + free).assumingMemoryBound(to: UInt32.self)
        for index in 0..<parameters.capacity { stack[index] = UInt32(parameters.capacity - 1 - index) }
        header.pointee.free_count = UInt32(parameters.capacity)
    }

    /// Checks an existing state before anything trusts it: the tag, then every field fixed at
    /// creation against the `available` bytes; with `expected`, also the message type
    /// (`incompatible` if it differs). Words that change as the queue is used are checked where
    /// they are used.
    @discardableResult
    static func validate(
        _ state: UnsafeMutableRawPointer, available: Int, expecting expected: ChannelMessageType?
    ) throws(InterprocessError) -> MessageQueueGeometry {
        try checkTag(state, available: available, headerSize: headerSize)
        let header = state.assumingMemoryBound(to: cipc_mqueue.self).pointee
        let capacity = Int(header.capacity)
        let maxMessageSize = Int(header.max_message_size)
        guard (1...maximumCapacity).contains(capacity), (1...maximumMessageSize).contains(maxMessageSize) else {
            throw InterprocessError(.corrupt, detail: "inconsistent message queue header (capacity \(header.capacity), maximum message size \(header.max_message_size))")
        }
        let expectedOffsets = offsets(capacity: capacity, maxMessageSize: maxMessageSize)
        guard Int(header.slot_stride) == stride(maxMessageSize: maxMessageSize),
              Int(header.ready_offset) == expectedOffsets.ready, Int(header.free_offset) == expectedOffsets.free,
              Int(header.slots_offset) == expectedOffsets.slots,
              hasParticipants(stateSize: header.state_size, slotsEnd: expectedOffsets.size) != nil,
              Int(header.state_size) <= available
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent message queue header (capacity \(header.capacity), maximum message size \(header.max_message_size), stride \(header.slot_stride), offsets \(header.ready_offset)/\(header.free_offset)/\(header.slots_offset), size \(header.state_size) of \(available) bytes)")
        }
        let messageType = try ChannelMessageType.checkRecorded(header.message_type, format: header.format, expecting: expected)
        return MessageQueueGeometry(
            capacity: capacity, maxMessageSize: maxMessageSize, stride: stride(maxMessageSize: maxMessageSize),
            readyOffset: expectedOffsets.ready, freeOffset: expectedOffsets.free, slotsOffset: expectedOffsets.slots,
            size: expectedOffsets.size, messageType: messageType, format: header.format)
    }

    /// Where a queue's table of participants starts, for a state of `stateSize` bytes whose slots end
    /// at `slotsEnd`: there when the state holds the table, nil when it ends with the slots (a queue
    /// created before the table existed). `Int?.none?` (an outer nil) when the size fits neither.
    static func hasParticipants(stateSize: UInt64, slotsEnd: Int) -> Int?? {
        if stateSize == UInt64(slotsEnd) { return .some(nil) }
        if stateSize == UInt64(slotsEnd + ChannelParticipants.tableSize) { return .some(slotsEnd) }
        return nil
    }

    /// The table of participants of a state validated as `geometry` (nil: it has none).
    static func participantsOffset(_ state: UnsafeMutableRawPointer, geometry: MessageQueueGeometry) -> Int? {
        let stateSize = state.load(fromByteOffset: fieldOffset(\cipc_mqueue.state_size), as: UInt64.self)
        guard case let offset?? = hasParticipants(stateSize: stateSize, slotsEnd: geometry.size) else { return nil }
        return offset
    }

    /// Capacity, message type, depth, messages by priority, closed, waiters, lock and what was
    /// repaired, read from a copy of the state (never trusted: sizes are checked, nothing read is
    /// followed outside the copy).
    static func describe(_ state: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard state.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = state.load(as: cipc_mqueue.self)
        let capacity = Int(header.capacity)
        let stride = Int(header.slot_stride)
        let slotsOffset = Int(header.slots_offset)
        // Count the slots' states, and the ready messages by priority, from the slots themselves.
        var states = [0, 0, 0, 0]
        var damaged = 0
        var byPriority: [UInt32: Int] = [:]
        let slotsFit = capacity <= maximumCapacity && stride >= slotHeaderSize && slotsOffset >= headerSize
            && slotsOffset + capacity * stride <= state.count
        if slotsFit {
            for index in 0..<capacity {
                let slot = state.loadUnaligned(fromByteOffset: slotsOffset + index * stride, as: cipc_mqueue_slot.self)
                guard slot.state <= CIPC_MQUEUE_READING else {
                    damaged += 1
                    continue
                }
                states[Int(slot.state)] += 1
                if slot.state == CIPC_MQUEUE_READY { byPriority[slot.priority, default: 0] += 1 }
            }
        }
        let priorities = byPriority.keys.sorted(by: >)
        // What the slots say when the copy reaches them (`ipc inspect` copies the first 4 KiB);
        // else the header's counts.
        let readyEntries = header.ready_count <= header.capacity ? "\(header.ready_count)" : "invalid (\(header.ready_count))"
        let depth = slotsFit ? "\(states[Int(CIPC_MQUEUE_READY)])" : readyEntries
        let highest = slotsFit
            ? priorities.first.map { "\($0)" }
            : (header.ready_count > 0 && header.ready_count <= header.capacity ? "\(header.top_priority)" : nil)
        var perPriority = priorities.prefix(8).map { "\($0): \(byPriority[$0]!)" }.joined(separator: ", ")
        if priorities.count > 8 { perPriority += ", …" }
        let closed = header.closed != 0
        let waiting = UInt64(header.receivers_waiting) + UInt64(header.senders_waiting)
        let lockWord = header.lock
        let messageType = TypeFingerprint.problem(in: header.message_type) == nil
            ? ChannelMessageType.text(of: header.message_type, format: header.format) : "damaged"
        var details: [String: String] = [
            "capacity": "\(header.capacity)",
            "maxMessageSize": "\(header.max_message_size)",
            "messageType": messageType,
            "format": ChannelMessageType.formatName(header.format),
            "count": depth,
            "readyCount": "\(header.ready_count)",
            "freeCount": "\(header.free_count)",
            "highestPriority": highest ?? "-",
            "sent": "\(header.sent)",
            "received": "\(header.received)",
            "closed": closed ? "yes" : "no",
            "locked": lockWord == 0 ? "no" : "yes",
            "lockOwnerAlive": lockWord == 0 ? "-" : (isAlive(lockWord) ? "yes" : "no"),
            "receiversWaiting": "\(header.receivers_waiting)",
            "sendersWaiting": "\(header.senders_waiting)",
            "waiters": "\(waiting)",
            "rebuilds": "\(header.rebuilds)",
            "abandonedSends": "\(header.abandoned_sends)",
            "redeliveries": "\(header.redeliveries)",
            "droppedMessages": "\(header.dropped_messages)",
        ]
        if slotsFit {
            details["writing"] = "\(states[Int(CIPC_MQUEUE_WRITING)])"
            details["reading"] = "\(states[Int(CIPC_MQUEUE_READING)])"
            details["byPriority"] = perPriority.isEmpty ? "-" : perPriority
        }
        if damaged > 0 { details["damagedSlots"] = "\(damaged)" }
        let top = highest.map { ", highest priority \($0)" } ?? ""
        var people = ""
        if capacity <= maximumCapacity, Int(header.max_message_size) <= maximumMessageSize {
            let slotsEnd = offsets(capacity: capacity, maxMessageSize: Int(header.max_message_size)).size
            if case let tableOffset?? = hasParticipants(stateSize: header.state_size, slotsEnd: slotsEnd),
               tableOffset + ChannelParticipants.tableSize <= state.count {
                let table = UnsafeRawBufferPointer(rebasing: state[tableOffset..<(tableOffset + ChannelParticipants.tableSize)])
                let participants = ChannelParticipants.describe(table, armed: header.descriptors_armed, isAlive: isAlive)
                details.merge(participants.details) { _, new in new }
                people = ", \(participants.senders) producer\(participants.senders == 1 ? "" : "s"), \(participants.receivers) consumer\(participants.receivers == 1 ? "" : "s")"
                    + (participants.ended > 0 ? " (\(participants.ended) ended)" : "")
            }
        }
        return SharedObjectDescription(
            details: details,
            summary: "\(depth) of \(header.capacity) messages" + top + people + (closed ? ", closed" : "") + (waiting > 0 ? ", \(waiting) waiting" : ""))
    }
}

/// A message queue as a shared object: the state (`cipc_mqueue`, its heap, free stack and slots) in
/// a named segment of kind ``SegmentKind/messageQueue``, which ``SharedObjectStorage`` creates,
/// opens, checks and removes as for every kind, and the core built on it. Not generic:
/// ``MessageQueue`` adds the message type on top (its codec).
///
/// `@unchecked Sendable`: immutable; the core's shared words are atomics or guarded by its lock.
final class MessageQueueState: SharedObject, @unchecked Sendable {
    typealias Kind = MessageQueueLayout
    typealias Parameters = MessageQueueParameters

    static var recordsOwners: Bool { true }
    static var alignment: Int { 64 }
    static var minimumSize: Int { MessageQueueLayout.headerSize }

    let storage: SharedObjectStorage
    let core: MessageQueueCore
    /// The message type and format its creator recorded (validated), as text.
    let recordedType: String
    let recordedFormat: UInt32

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        let geometry = try MessageQueueLayout.validate(storage.base, available: storage.available, expecting: nil)
        self.storage = storage
        recordedType = geometry.messageType
        recordedFormat = geometry.format
        // The table of participants, if the queue has one (validated: the state holds it).
        if let tableOffset = MessageQueueLayout.participantsOffset(storage.base, geometry: geometry),
           tableOffset + ChannelParticipants.tableSize <= storage.available {
            participants = ChannelParticipants(
                storage: storage, base: storage.base, tableOffset: tableOffset, name: storage.name,
                armedOffset: fieldOffset(\cipc_mqueue.descriptors_armed), socketKind: "mqready")
        } else {
            participants = nil
        }
        core = MessageQueueCore(storage: storage, geometry: geometry, participants: participants)
        membership = ParticipantsMembership(participants)
    }

    /// The queue's table of participants (nil for a queue created without one).
    let participants: ChannelParticipants?
    /// This handle's place in it, left at `close()` or when the state goes away.
    private let membership: ParticipantsMembership

    /// The bytes of a queue: the header, the heap, the free stack, the slots and the table of participants.
    static func size(for parameters: MessageQueueParameters) throws(InterprocessError) -> Int {
        try MessageQueueLayout.size(for: parameters) + ChannelParticipants.tableSize
    }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: MessageQueueParameters) {
        MessageQueueLayout.initialize(state, size: size, with: parameters)
    }

    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: MessageQueueParameters?) throws(InterprocessError) {
        try MessageQueueLayout.validate(state, available: available, expecting: parameters?.messageType)
    }

    var name: String? { storage.name }

    func close() {
        membership.leave()
        storage.close()
    }
}

extension SegmentKind {
    /// A ``MessageQueue``.
    public static let messageQueue = SegmentKind(rawValue: CIPC_KIND_MQUEUE)
}
