import CInterprocess
import InterprocessSystem
import Synchronization

extension SegmentKind {
    /// A ``Broadcast`` (publish / subscribe).
    public static let broadcast = SegmentKind(rawValue: CIPC_KIND_BROADCAST)
}

/// What creating a broadcast takes.
struct BroadcastParameters: Sendable {
    var capacity: Int
    var maxMessageSize: Int
    var maxSubscribers: Int
    var policy: UInt32
    var messageType: ChannelMessageType
}

/// The shared layout of a broadcast (`cipc_broadcast` in `CInterprocessBroadcast.h`): its size for
/// given parameters, how a creator initializes it, how an opener checks it, and how `ipc ls` and
/// `ipc inspect` describe it — the broadcast kind of shared object (registered in
/// ``SharedObjectRegistry``; ``BroadcastState`` is the object). The message type is recorded as a
/// channel's is (``ChannelMessageType``, the `CIPC_CHANNEL_FORMAT_*` formats).
enum BroadcastLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .broadcast }
    static var tag: UInt32 { CIPC_TAG_BROADCAST }
    static var tagOffset: Int { fieldOffset(\cipc_broadcast.tag) }
    /// "BCS1": made before readiness descriptors (its publishers would not wake them).
    static var retiredTags: [UInt32] { [CIPC_TAG_BROADCAST_V1] }
    static var kindName: String { "broadcast" }

    static let headerSize = Int(CIPC_BROADCAST_HEADER_SIZE)
    static let slotHeaderSize = Int(CIPC_BROADCAST_SLOT_HEADER_SIZE)
    static let subscriberSize = Int(CIPC_BROADCAST_SUBSCRIBER_SIZE)
    static let maximumCapacity = Int(CIPC_BROADCAST_MAX_CAPACITY)
    static let maximumMessageSize = Int(CIPC_BROADCAST_MAX_MESSAGE_SIZE)
    static let maximumSubscribers = Int(CIPC_BROADCAST_MAX_SUBSCRIBERS)

    /// Bytes from one slot to the next: its header and the message, rounded up to a cache line.
    static func stride(maxMessageSize: Int) -> Int { slotStride(header: slotHeaderSize, message: maxMessageSize) }

    /// Where the slots start: after the header and the subscriber places.
    static func slotsOffset(maxSubscribers: Int) -> Int { headerSize + maxSubscribers * subscriberSize }

    static func policyName(_ policy: UInt32) -> String {
        switch policy {
        case CIPC_BROADCAST_BLOCK_PUBLISHER: "blockPublisher"
        case CIPC_BROADCAST_DROP_OLDEST: "dropOldest"
        default: "policy \(policy)"
        }
    }

    /// The bytes a broadcast with `parameters` needs. Throws `invalidArgument` for parameters it
    /// cannot be created with.
    static func size(for parameters: BroadcastParameters) throws(InterprocessError) -> Int {
        try checkParameter("capacity", parameters.capacity, upTo: maximumCapacity)
        try checkParameter("maximum message size", parameters.maxMessageSize, upTo: maximumMessageSize, unit: " bytes")
        try checkParameter("maximum number of subscribers", parameters.maxSubscribers, upTo: maximumSubscribers)
        try parameters.messageType.checkRecordable()
        return slotsOffset(maxSubscribers: parameters.maxSubscribers) + parameters.capacity * stride(maxMessageSize: parameters.maxMessageSize)
    }

    /// Initializes a zero-filled state of `size` bytes (the storage then publishes the tag). Every
    /// slot starts never written (sequence 0), every subscriber place free.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: BroadcastParameters) {
        let header = state.assumingMemoryBound(to: cipc_broadcast.self)
        header.pointee.capacity = UInt32(parameters.capacity)
        header.pointee.max_message_size = UInt32(parameters.maxMessageSize)
        header.pointee.slot_stride = UInt32(stride(maxMessageSize: parameters.maxMessageSize))
        header.pointee.slots_offset = UInt32(slotsOffset(maxSubscribers: parameters.maxSubscribers))
        header.pointee.format = parameters.messageType.format
        header.pointee.state_size = UInt64(size)
        header.pointee.policy = parameters.policy
        header.pointee.max_subscribers = UInt32(parameters.maxSubscribers)
        header.pointee.message_type = parameters.messageType.fingerprint.shared
    }

    /// The validated fixed fields of a broadcast.
    struct Geometry {
        var capacity: Int
        var maxMessageSize: Int
        var stride: Int
        var maxSubscribers: Int
        var slotsOffset: Int
        var policy: UInt32
        var messageType: String
        var format: UInt32
    }

    /// Checks an existing state before anything trusts it: the tag, then every field fixed at
    /// creation against the `available` bytes; with `expected`, also the message type
    /// (`incompatible` if it differs). Words that change as the broadcast is used are checked where
    /// they are used.
    @discardableResult
    static func validate(
        _ state: UnsafeMutableRawPointer, available: Int, expecting expected: ChannelMessageType?
    ) throws(InterprocessError) -> Geometry {
        try checkTag(state, available: available, headerSize: headerSize)
        let header = state.assumingMemoryBound(to: cipc_broadcast.self).pointee
        let capacity = Int(header.capacity)
        let maxMessageSize = Int(header.max_message_size)
        let maxSubscribers = Int(header.max_subscribers)
        guard (1...maximumCapacity).contains(capacity), (1...maximumMessageSize).contains(maxMessageSize),
              (1...maximumSubscribers).contains(maxSubscribers),
              Int(header.slot_stride) == stride(maxMessageSize: maxMessageSize),
              Int(header.slots_offset) == slotsOffset(maxSubscribers: maxSubscribers),
              header.state_size == UInt64(slotsOffset(maxSubscribers: maxSubscribers) + capacity * stride(maxMessageSize: maxMessageSize)),
              Int(header.state_size) <= available
        else {
            throw InterprocessError(.corrupt,
                detail: "inconsistent broadcast header (capacity \(header.capacity), maximum message size \(header.max_message_size), \(header.max_subscribers) subscribers, stride \(header.slot_stride), size \(header.state_size) of \(available) bytes)")
        }
        guard header.policy == CIPC_BROADCAST_BLOCK_PUBLISHER || header.policy == CIPC_BROADCAST_DROP_OLDEST else {
            throw InterprocessError(.corrupt, detail: "a broadcast with slow-subscriber policy \(header.policy), which no creator writes")
        }
        let messageType = try ChannelMessageType.checkRecorded(header.message_type, format: header.format, expecting: expected)
        return Geometry(
            capacity: capacity, maxMessageSize: maxMessageSize, stride: stride(maxMessageSize: maxMessageSize),
            maxSubscribers: maxSubscribers, slotsOffset: Int(header.slots_offset), policy: header.policy,
            messageType: messageType, format: header.format)
    }

    /// Capacity, policy, head position, subscribers (each with its position and what it missed),
    /// waiters and what was recovered, read from a copy of the state (never trusted: sizes are
    /// checked, nothing read is followed).
    static func describe(_ state: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard state.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = state.load(as: cipc_broadcast.self)
        let head = header.head & ~CIPC_BROADCAST_CLOSED
        let closed = header.head & CIPC_BROADCAST_CLOSED != 0
        let messageType = TypeFingerprint.problem(in: header.message_type) == nil
            ? ChannelMessageType.text(of: header.message_type, format: header.format) : "damaged"
        var details: [String: String] = [
            "capacity": "\(header.capacity)",
            "maxMessageSize": "\(header.max_message_size)",
            "maxSubscribers": "\(header.max_subscribers)",
            "policy": policyName(header.policy),
            "messageType": messageType,
            "format": ChannelMessageType.formatName(header.format),
            "head": "\(head)",
            "closed": closed ? "yes" : "no",
            "subscribersWaiting": "\(header.subscribers_waiting)",
            "publishersWaiting": "\(header.publishers_waiting)",
            "departedSubscribers": "\(header.departed_subscribers)",
            "completedPublishes": "\(header.completed_publishes)",
            "abandonedPublishes": "\(header.abandoned_publishes)",
            "droppedMessages": "\(header.dropped_messages)",
        ]
        let publisher = header.publisher & ~OwnerLease.flagBit
        details["publisher"] = publisher == 0 ? "none"
            : "pid \(OwnerLease.displayPID(of: publisher))" + (isAlive(publisher) ? "" : " (dead)")
        var subscribers = 0
        var slowest: UInt64?
        let places = min(Int(header.max_subscribers), (state.count - headerSize) / subscriberSize)
        for index in 0..<max(places, 0) {
            let place = state.load(fromByteOffset: headerSize + index * subscriberSize, as: cipc_broadcast_subscriber.self)
            let owner = place.owner & ~OwnerLease.flagBit
            guard owner != 0 else { continue }
            subscribers += 1
            let behind = head &- place.position
            let lag = behind <= UInt64(header.capacity) &* 2 ? "\(behind) behind" : "position invalid"
            let joining = place.owner & OwnerLease.flagBit != 0 ? ", joining" : ""
            let dead = isAlive(owner) ? "" : " (dead)"
            var readiness = ""
            if place.notifier != 0 {
                let isArmed = place.armed != 0 && header.descriptors_armed & (UInt64(1) << UInt64(index & 63)) != 0
                readiness = ", readiness descriptor (" + (isArmed ? "armed" : "signalled or not armed") + ", \(place.pokes) wake-ups)"
            }
            details["subscriber.\(index)"] =
                "pid \(OwnerLease.displayPID(of: owner))\(dead) at \(place.position) (\(lag)), received \(place.received), missed \(place.missed)\(joining)\(readiness)"
            if place.position <= head { slowest = min(slowest ?? place.position, place.position) }
        }
        details["subscribers"] = "\(subscribers)"
        details["slowest"] = slowest.map { "\($0)" } ?? "none"
        let waiting = UInt64(header.subscribers_waiting) + UInt64(header.publishers_waiting)
        return SharedObjectDescription(
            details: details,
            summary: "\(subscribers) subscriber\(subscribers == 1 ? "" : "s"), \(head) published, capacity \(header.capacity), "
                + policyName(header.policy) + (closed ? ", closed" : "") + (waiting > 0 ? ", \(waiting) waiting" : ""))
    }
}

/// A broadcast as a shared object: the state (`cipc_broadcast`, its subscriber places and slots) in
/// a named segment of kind ``SegmentKind/broadcast``, which ``SharedObjectStorage`` creates, opens,
/// checks and removes as for every kind, and the ring built on it. Not generic: ``Broadcast`` adds
/// the message type on top (a channel's codec).
///
/// `@unchecked Sendable`: immutable; the ring's shared words are atomics.
final class BroadcastState: SharedObject, @unchecked Sendable {
    typealias Kind = BroadcastLayout
    typealias Parameters = BroadcastParameters

    static var recordsOwners: Bool { true }
    static var alignment: Int { 64 }
    static var minimumSize: Int { BroadcastLayout.headerSize }

    let storage: SharedObjectStorage
    let ring: BroadcastRing
    /// The message type and format its creator recorded (validated), as text.
    let recordedType: String
    let recordedFormat: UInt32

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        let geometry = try BroadcastLayout.validate(storage.base, available: storage.available, expecting: nil)
        self.storage = storage
        recordedType = geometry.messageType
        recordedFormat = geometry.format
        ring = BroadcastRing(storage: storage, geometry: geometry)
    }

    static func size(for parameters: BroadcastParameters) throws(InterprocessError) -> Int {
        try BroadcastLayout.size(for: parameters)
    }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: BroadcastParameters) {
        BroadcastLayout.initialize(state, size: size, with: parameters)
    }

    /// Checks every field fixed at creation, and with `parameters` that the messages are of their
    /// type (`incompatible` otherwise; an opener's capacity, size and policy do not have to match).
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: BroadcastParameters?) throws(InterprocessError) {
        try BroadcastLayout.validate(state, available: available, expecting: parameters?.messageType)
    }

    var name: String? { storage.name }

    func close() { storage.close() }
}
