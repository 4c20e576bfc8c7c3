import CInterprocess
import InterprocessSystem
import Synchronization

/// What creating a channel takes.
struct ChannelParameters: Sendable {
    var capacity: Int
    var maxMessageSize: Int
    var messageType: ChannelMessageType
}

/// The type of a channel's messages, as the creator records it (`cipc_channel_message_type` and the
/// header's `format`): how the bytes are encoded, and the Swift type they are. An opener that expects
/// something else gets `incompatible` — also when only the name differs, so `Int64` and `UInt64`, or
/// two structs of one size, never read each other's bytes.
@usableFromInline
struct ChannelMessageType: Sendable, Hashable, CustomStringConvertible {
    var format: UInt32
    var typeName: String
    var size: Int
    var alignment: Int
    var version: UInt32 = 0

    /// The `format` values (`CIPC_CHANNEL_FORMAT_*`), for code inlined into programs, which cannot
    /// see the C header.
    @usableFromInline static let bytesFormat = CIPC_CHANNEL_FORMAT_BYTES
    @usableFromInline static let valueFormat = CIPC_CHANNEL_FORMAT_VALUE
    @usableFromInline static let textFormat = CIPC_CHANNEL_FORMAT_TEXT

    /// The message type of `Message` sent as `format`.
    @usableFromInline
    init<Message>(_: Message.Type, format: UInt32) {
        self.format = format
        typeName = Self.stableName(String(reflecting: Message.self))
        size = MemoryLayout<Message>.size
        alignment = MemoryLayout<Message>.alignment
    }

    init(format: UInt32, typeName: String, size: Int, alignment: Int, version: UInt32) {
        self.format = format
        self.typeName = typeName
        self.size = size
        self.alignment = alignment
        self.version = version
    }

    @usableFromInline
    var description: String {
        "\(typeName) as \(Self.formatName(format)) (\(size) bytes, aligned to \(alignment)\(version == 0 ? "" : ", version \(version)"))"
    }

    static func formatName(_ format: UInt32) -> String {
        switch format {
        case CIPC_CHANNEL_FORMAT_BYTES: "bytes"
        case CIPC_CHANNEL_FORMAT_VALUE: "raw values"
        case CIPC_CHANNEL_FORMAT_JSON: "JSON"
        case CIPC_CHANNEL_FORMAT_TEXT: "UTF-8 text"
        default: "format \(format)"
        }
    }

    static let maximumNameLength = 4096

    /// `name` with the addresses of unknown contexts removed ("(unknown context at $55aea0771708)" →
    /// "(unknown context)"): Swift prints a private or local type's context with an address that
    /// differs between processes.
    static func stableName(_ name: String) -> String {
        let marker = "(unknown context at $"
        var result = ""
        var rest = Substring(name)
        while let range = rest.firstRange(of: marker) {
            result += rest[..<range.lowerBound]
            let tail = rest[range.upperBound...]
            guard let close = tail.firstIndex(of: ")"), tail[..<close].allSatisfy(\.isHexDigit) else {
                result += rest[range]
                rest = tail
                continue
            }
            result += "(unknown context)"
            rest = tail[tail.index(after: close)...]
        }
        return result + rest
    }

    /// FNV-1a 64.
    static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// The shared form (the caller checked the name's length).
    var shared: cipc_channel_message_type {
        var record = cipc_channel_message_type()
        let name = Array(typeName.utf8)
        record.name_hash = Self.hash(name)
        record.size = UInt32(clamping: size)
        record.alignment = UInt32(clamping: alignment)
        record.version = version
        record.name_length = UInt32(name.count)
        withUnsafeMutableBytes(of: &record.name) { $0.copyBytes(from: name.prefix($0.count)) }
        return record
    }

    /// Throws `corrupt` for a recorded type (read from a peer's memory) that no creator writes.
    static func checkRecord(_ record: cipc_channel_message_type) throws(InterprocessError) {
        let length = Int(record.name_length)
        var copy = record
        let intact = withUnsafeBytes(of: &copy.name) { bytes -> Bool in
            let stored = min(length, bytes.count)
            return bytes[stored...].allSatisfy { $0 == 0 } && (length > bytes.count || hash(bytes[..<stored]) == record.name_hash)
        }
        guard length >= 1, length <= maximumNameLength, intact, record.alignment != 0, record.alignment & (record.alignment - 1) == 0 else {
            throw InterprocessError(.corrupt, detail: "a damaged message type record")
        }
    }

    /// Whether the checked `record` and `recordedFormat` describe this type.
    func matches(_ record: cipc_channel_message_type, format recordedFormat: UInt32) -> Bool {
        var mine = shared
        var theirs = record
        let same = withUnsafeBytes(of: &mine) { a in withUnsafeBytes(of: &theirs) { b in a.elementsEqual(b) } }
        return same && recordedFormat == format
    }

    /// A readable form of a recorded type (a truncated name ends in "…").
    static func text(of record: cipc_channel_message_type, format: UInt32) -> String {
        var copy = record
        let name = withUnsafeBytes(of: &copy.name) { bytes in
            String(decoding: bytes[..<min(Int(record.name_length), bytes.count)], as: UTF8.self)
        }
        let more = Int(record.name_length) > MemoryLayout.size(ofValue: record.name) ? "…" : ""
        return "\(name)\(more) as \(formatName(format)) (\(record.size) bytes, aligned to \(record.alignment)\(record.version == 0 ? "" : ", version \(record.version)"))"
    }
}

/// The shared layout of a channel (`cipc_channel` in `CInterprocessChannel.h`): its size for given
/// parameters, how a creator initializes it, how an opener checks it, and how `ipc inspect`
/// describes it. The framework-shaped half of a shared object (see ``ChannelStorage``).
enum ChannelLayout {
    static let headerSize = Int(CIPC_CHANNEL_HEADER_SIZE)
    static let slotHeaderSize = Int(CIPC_CHANNEL_SLOT_HEADER_SIZE)
    static let maximumCapacity = Int(CIPC_CHANNEL_MAX_CAPACITY)
    static let maximumMessageSize = Int(CIPC_CHANNEL_MAX_MESSAGE_SIZE)

    /// Bytes from one slot to the next: its header and the message, rounded up to a cache line.
    static func stride(maxMessageSize: Int) -> Int {
        (slotHeaderSize + maxMessageSize + 63) / 64 * 64
    }

    static func offset(_ field: PartialKeyPath<cipc_channel>) -> Int { ChannelRing.offset(field) }

    /// The bytes a channel with `parameters` needs. Throws `invalidArgument` for parameters it
    /// cannot be created with.
    static func size(for parameters: ChannelParameters) throws(InterprocessError) -> Int {
        guard (1...maximumCapacity).contains(parameters.capacity) else {
            throw InterprocessError(.invalidArgument, detail: "a channel's capacity must be in 1...\(maximumCapacity), not \(parameters.capacity)")
        }
        guard (1...maximumMessageSize).contains(parameters.maxMessageSize) else {
            throw InterprocessError(.invalidArgument,
                detail: "a channel's maximum message size must be in 1...\(maximumMessageSize) bytes, not \(parameters.maxMessageSize)")
        }
        let nameLength = parameters.messageType.typeName.utf8.count
        guard (1...ChannelMessageType.maximumNameLength).contains(nameLength) else {
            throw InterprocessError(.invalidArgument, detail: "a message type's name has 1 to \(ChannelMessageType.maximumNameLength) bytes, not \(nameLength)")
        }
        return headerSize + parameters.capacity * stride(maxMessageSize: parameters.maxMessageSize)
    }

    /// Initializes a zero-filled state of `size` bytes; the tag is written last (release).
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: ChannelParameters) {
        let header = state.assumingMemoryBound(to: cipc_channel.self)
        let stride = stride(maxMessageSize: parameters.maxMessageSize)
        header.pointee.capacity = UInt32(parameters.capacity)
        header.pointee.max_message_size = UInt32(parameters.maxMessageSize)
        header.pointee.slot_stride = UInt32(stride)
        header.pointee.slots_offset = UInt32(headerSize)
        header.pointee.format = parameters.messageType.format
        header.pointee.state_size = UInt64(size)
        header.pointee.message_type = parameters.messageType.shared
        for index in 0..<parameters.capacity {
            // Slot i starts free for position i.
            atomic64(state + headerSize + index * stride).initialize(to: Atomic(UInt64(index) &* 2))
        }
        atomic32(state + offset(\.tag)).pointee.store(CIPC_TAG_CHANNEL, ordering: .releasing)
    }

    /// Checks an existing state before anything trusts it: the tag, then every field fixed at
    /// creation against the `available` bytes; with `expected`, also the message type
    /// (`incompatible` if it differs). Words that change as the channel is used are checked where
    /// they are used. Returns the validated capacity, maximum message size and stride.
    @discardableResult
    static func validate(
        _ state: UnsafeMutableRawPointer, available: Int, expecting expected: ChannelMessageType?
    ) throws(InterprocessError) -> (capacity: Int, maxMessageSize: Int, stride: Int, messageType: String, format: UInt32) {
        guard available >= headerSize, atomic32(state + offset(\.tag)).pointee.load(ordering: .acquiring) == CIPC_TAG_CHANNEL else {
            throw InterprocessError(.corrupt, detail: "no valid channel there")
        }
        let header = state.assumingMemoryBound(to: cipc_channel.self).pointee
        let capacity = Int(header.capacity)
        let maxMessageSize = Int(header.max_message_size)
        guard (1...maximumCapacity).contains(capacity), (1...maximumMessageSize).contains(maxMessageSize),
              Int(header.slot_stride) == stride(maxMessageSize: maxMessageSize),
              Int(header.slots_offset) == headerSize,
              header.state_size == UInt64(headerSize + capacity * stride(maxMessageSize: maxMessageSize)),
              Int(header.state_size) <= available
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent channel header (capacity \(header.capacity), maximum message size \(header.max_message_size), stride \(header.slot_stride), size \(header.state_size) of \(available) bytes)")
        }
        try ChannelMessageType.checkRecord(header.message_type)
        guard (CIPC_CHANNEL_FORMAT_BYTES...CIPC_CHANNEL_FORMAT_TEXT).contains(header.format) else {
            throw InterprocessError(.incompatible, detail: "its messages are in format \(header.format), which this version does not know")
        }
        if let expected, !expected.matches(header.message_type, format: header.format) {
            throw InterprocessError(.incompatible,
                detail: "it carries \(ChannelMessageType.text(of: header.message_type, format: header.format)); expected \(expected)")
        }
        return (
            capacity, maxMessageSize, stride(maxMessageSize: maxMessageSize),
            ChannelMessageType.text(of: header.message_type, format: header.format), header.format)
    }

    /// Capacity, message type, depth, closed, waiters and what was recovered, read from a copy of
    /// the state (never trusted: sizes are checked, nothing read is followed).
    static func describe(_ state: UnsafeRawBufferPointer, isAlive _: (UInt64) -> Bool) -> [String: String] {
        guard state.count >= headerSize else { return [:] }
        let header = state.load(as: cipc_channel.self)
        let sent = header.send_position & ~CIPC_CHANNEL_CLOSED
        let received = header.receive_position
        let depth = sent &- received
        return [
            "capacity": "\(header.capacity)",
            "maxMessageSize": "\(header.max_message_size)",
            "messageType": ChannelMessageType.text(of: header.message_type, format: header.format),
            "format": ChannelMessageType.formatName(header.format),
            "count": depth <= UInt64(header.capacity) ? "\(depth)" : "invalid (\(sent) sent, \(received) received)",
            "sent": "\(sent)",
            "received": "\(received)",
            "closed": header.send_position & CIPC_CHANNEL_CLOSED == 0 ? "no" : "yes",
            "receiversWaiting": "\(header.receivers_waiting)",
            "sendersWaiting": "\(header.senders_waiting)",
            "waiters": "\(UInt64(header.receivers_waiting) + UInt64(header.senders_waiting))",
            "orphans": "\(header.orphans)",
            "abandonedSends": "\(header.abandoned_sends)",
            "orphanedReceives": "\(header.orphaned_receives)",
            "redeliveries": "\(header.redeliveries)",
            "clearedClaims": "\(header.cleared_claims)",
            "droppedMessages": "\(header.dropped_messages)",
        ]
    }
}
