import CInterprocess
import InterprocessSystem
import Synchronization

/// What creating a channel takes.
struct ChannelParameters: Sendable {
    var capacity: Int
    var maxMessageSize: Int
    var messageType: ChannelMessageType
}

/// The type of a channel's messages, as the creator records it: how the bytes are encoded (the
/// header's `format`) and the Swift type they are (a ``TypeFingerprint`` at `message_type`). An
/// opener that expects something else gets `incompatible` — also when only the name differs, so
/// `Int64` and `UInt64`, or two structs of one size, never read each other's bytes.
@usableFromInline
struct ChannelMessageType: Sendable, Hashable, CustomStringConvertible {
    var format: UInt32
    var fingerprint: TypeFingerprint

    /// The `format` values (`CIPC_CHANNEL_FORMAT_*`), for code inlined into programs, which cannot
    /// see the C header.
    @usableFromInline static let bytesFormat = CIPC_CHANNEL_FORMAT_BYTES
    @usableFromInline static let valueFormat = CIPC_CHANNEL_FORMAT_VALUE
    @usableFromInline static let textFormat = CIPC_CHANNEL_FORMAT_TEXT

    /// The message type of `Message` sent as `format`.
    @usableFromInline
    init<Message>(_: Message.Type, format: UInt32) {
        self.format = format
        fingerprint = TypeFingerprint(of: Message.self)
    }

    @usableFromInline
    var description: String { "\(fingerprint) as \(Self.formatName(format))" }

    static func formatName(_ format: UInt32) -> String {
        switch format {
        case CIPC_CHANNEL_FORMAT_BYTES: "bytes"
        case CIPC_CHANNEL_FORMAT_VALUE: "raw values"
        case CIPC_CHANNEL_FORMAT_JSON: "JSON"
        case CIPC_CHANNEL_FORMAT_TEXT: "UTF-8 text"
        default: "format \(format)"
        }
    }

    /// Throws `corrupt` for a recorded type (read from a peer's memory) that no creator writes.
    static func checkRecord(_ record: cipc_type_fingerprint) throws(InterprocessError) {
        if let problem = TypeFingerprint.problem(in: record) {
            throw InterprocessError(.corrupt, detail: "a damaged message type record (\(problem))")
        }
    }

    /// Whether the checked `record` and `recordedFormat` describe this type.
    func matches(_ record: cipc_type_fingerprint, format recordedFormat: UInt32) throws(InterprocessError) -> Bool {
        try fingerprint.matches(record) && recordedFormat == format
    }

    /// A readable form of a recorded type.
    static func text(of record: cipc_type_fingerprint, format: UInt32) -> String {
        "\(TypeFingerprint.text(of: record)) as \(formatName(format))"
    }
}

/// The shared layout of a channel (`cipc_channel` in `CInterprocessChannel.h`): its size for given
/// parameters, how a creator initializes it, how an opener checks it, and how `ipc ls` and
/// `ipc inspect` describe it — the channel kind of shared object (registered in
/// ``SharedObjectRegistry``; ``ChannelState`` is the object).
enum ChannelLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .channel }
    static var tag: UInt32 { CIPC_TAG_CHANNEL }
    static var tagOffset: Int { fieldOffset(\cipc_channel.tag) }
    /// "CHN1": made before exclusive endpoints (its senders and receivers would not respect them).
    static var retiredTags: [UInt32] { [CIPC_TAG_CHANNEL_V1] }
    static var kindName: String { "channel" }

    static let headerSize = Int(CIPC_CHANNEL_HEADER_SIZE)
    static let slotHeaderSize = Int(CIPC_CHANNEL_SLOT_HEADER_SIZE)
    static let maximumCapacity = Int(CIPC_CHANNEL_MAX_CAPACITY)
    static let maximumMessageSize = Int(CIPC_CHANNEL_MAX_MESSAGE_SIZE)

    /// Bytes from one slot to the next: its header and the message, rounded up to a cache line.
    static func stride(maxMessageSize: Int) -> Int { slotStride(header: slotHeaderSize, message: maxMessageSize) }


    /// The bytes a channel with `parameters` needs. Throws `invalidArgument` for parameters it
    /// cannot be created with.
    static func size(for parameters: ChannelParameters) throws(InterprocessError) -> Int {
        try checkParameter("capacity", parameters.capacity, upTo: maximumCapacity)
        try checkParameter("maximum message size", parameters.maxMessageSize, upTo: maximumMessageSize, unit: " bytes")
        try parameters.messageType.checkRecordable()
        return headerSize + parameters.capacity * stride(maxMessageSize: parameters.maxMessageSize)
    }

    /// Initializes a zero-filled state of `size` bytes (the storage then publishes the tag).
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: ChannelParameters) {
        let header = state.assumingMemoryBound(to: cipc_channel.self)
        let stride = stride(maxMessageSize: parameters.maxMessageSize)
        header.pointee.capacity = UInt32(parameters.capacity)
        header.pointee.max_message_size = UInt32(parameters.maxMessageSize)
        header.pointee.slot_stride = UInt32(stride)
        header.pointee.slots_offset = UInt32(headerSize)
        header.pointee.format = parameters.messageType.format
        header.pointee.state_size = UInt64(size)
        header.pointee.message_type = parameters.messageType.fingerprint.shared
        for index in 0..<parameters.capacity {
            // Slot i starts free for position i.
            atomic64(state + headerSize + index * stride).initialize(to: Atomic(UInt64(index) &* 2))
        }
        // The storage publishes the tag (``SharedObjectStorage``), last.
    }

    /// Checks an existing state before anything trusts it: the tag, then every field fixed at
    /// creation against the `available` bytes; with `expected`, also the message type
    /// (`incompatible` if it differs). Words that change as the channel is used are checked where
    /// they are used. Returns the validated capacity, maximum message size and stride.
    @discardableResult
    static func validate(
        _ state: UnsafeMutableRawPointer, available: Int, expecting expected: ChannelMessageType?
    ) throws(InterprocessError) -> (capacity: Int, maxMessageSize: Int, stride: Int, messageType: String, format: UInt32) {
        try checkTag(state, available: available, headerSize: headerSize)
        let header = state.assumingMemoryBound(to: cipc_channel.self).pointee
        let capacity = Int(header.capacity)
        let maxMessageSize = Int(header.max_message_size)
        guard (1...maximumCapacity).contains(capacity), (1...maximumMessageSize).contains(maxMessageSize),
              Int(header.slot_stride) == stride(maxMessageSize: maxMessageSize),
              Int(header.slots_offset) == headerSize,
              hasParticipants(stateSize: header.state_size, capacity: capacity, maxMessageSize: maxMessageSize) != nil,
              Int(header.state_size) <= available
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent channel header (capacity \(header.capacity), maximum message size \(header.max_message_size), stride \(header.slot_stride), size \(header.state_size) of \(available) bytes)")
        }
        let messageType = try ChannelMessageType.checkRecorded(header.message_type, format: header.format, expecting: expected)
        return (capacity, maxMessageSize, stride(maxMessageSize: maxMessageSize), messageType, header.format)
    }

    /// Where a channel's table of participants starts, for a state of `stateSize` bytes: its slots'
    /// end when the state holds the table, nil when it ends with the slots (a channel without a
    /// table: a service's request queue, or one created before the table existed). `Int?.none?`
    /// (an outer nil) when the size fits neither.
    static func hasParticipants(stateSize: UInt64, capacity: Int, maxMessageSize: Int) -> Int?? {
        let slotsEnd = headerSize + capacity * stride(maxMessageSize: maxMessageSize)
        if stateSize == UInt64(slotsEnd) { return .some(nil) }
        if stateSize == UInt64(slotsEnd + ChannelParticipants.tableSize) { return .some(slotsEnd) }
        return nil
    }

    /// Who holds an exclusive role, for `ipc inspect`: "none", or the holder's pid (from its token,
    /// for display only) and whether it is alive.
    static func exclusiveHolder(_ token: UInt64, isAlive: (UInt64) -> Bool) -> String {
        guard token != 0 else { return "none" }
        guard token >= 1 << 32 else { return "invalid (\(token))" }
        return "pid \(token >> 32) (\(isAlive(token) ? "alive" : "ended"))"
    }

    /// Capacity, message type, depth, closed, waiters and what was recovered, read from a copy of
    /// the state (never trusted: sizes are checked, nothing read is followed).
    static func describe(_ state: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard state.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = state.load(as: cipc_channel.self)
        // While an exclusive sender holds the role, its position is `exclusive_position`.
        let shared = header.send_position & ~(CIPC_CHANNEL_CLOSED | CIPC_CHANNEL_CLOSING)
        let sent = header.exclusive_sender != 0 && ChannelRing.isAtOrAhead(header.exclusive_position, of: shared) ? header.exclusive_position : shared
        let received = header.receive_position
        let depth = sent &- received
        let count = depth <= UInt64(header.capacity) ? "\(depth)" : "invalid (\(sent) sent, \(received) received)"
        let closed = header.send_position & (CIPC_CHANNEL_CLOSED | CIPC_CHANNEL_CLOSING) != 0
        let waiting = UInt64(header.receivers_waiting) + UInt64(header.senders_waiting)
        let messageType = TypeFingerprint.problem(in: header.message_type) == nil
            ? ChannelMessageType.text(of: header.message_type, format: header.format) : "damaged"
        var details: [String: String] = [
            "capacity": "\(header.capacity)",
            "maxMessageSize": "\(header.max_message_size)",
            "messageType": messageType,
            "format": ChannelMessageType.formatName(header.format),
            "count": count,
            "sent": "\(sent)",
            "received": "\(received)",
            "closed": closed ? "yes" : "no",
            "receiversWaiting": "\(header.receivers_waiting)",
            "sendersWaiting": "\(header.senders_waiting)",
            "waiters": "\(waiting)",
            "orphans": "\(header.orphans)",
            "abandonedSends": "\(header.abandoned_sends)",
            "orphanedReceives": "\(header.orphaned_receives)",
            "redeliveries": "\(header.redeliveries)",
            "clearedClaims": "\(header.cleared_claims)",
            "droppedMessages": "\(header.dropped_messages)",
            "exclusiveSender": exclusiveHolder(header.exclusive_sender, isAlive: isAlive),
            "exclusiveReceiver": exclusiveHolder(header.exclusive_receiver, isAlive: isAlive),
        ]
        if header.loan_heap_nonce != 0 { details["loanHeapNonce"] = String(header.loan_heap_nonce, radix: 16) }
        var people = ""
        if header.capacity <= UInt32(maximumCapacity), header.max_message_size <= UInt32(maximumMessageSize),
           case let tableOffset?? = hasParticipants(stateSize: header.state_size, capacity: Int(header.capacity), maxMessageSize: Int(header.max_message_size)),
           tableOffset + ChannelParticipants.tableSize <= state.count {
            let table = UnsafeRawBufferPointer(rebasing: state[tableOffset..<(tableOffset + ChannelParticipants.tableSize)])
            let participants = ChannelParticipants.describe(table, armed: header.descriptors_armed, isAlive: isAlive)
            details.merge(participants.details) { _, new in new }
            people = ", \(participants.senders) producer\(participants.senders == 1 ? "" : "s"), \(participants.receivers) consumer\(participants.receivers == 1 ? "" : "s")"
                + (participants.ended > 0 ? " (\(participants.ended) ended)" : "")
        }
        if header.exclusive_sender != 0 || header.exclusive_receiver != 0 {
            let roles = [header.exclusive_sender != 0 ? "sender" : nil, header.exclusive_receiver != 0 ? "receiver" : nil].compactMap { $0 }
            people += ", exclusive \(roles.joined(separator: " and "))"
        }
        return SharedObjectDescription(
            details: details,
            summary: "\(count) of \(header.capacity) messages" + people + (closed ? ", closed" : "") + (waiting > 0 ? ", \(waiting) waiting" : ""))
    }
}
