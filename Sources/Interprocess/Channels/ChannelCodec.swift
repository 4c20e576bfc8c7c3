#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CInterprocess

/// How a channel's messages become bytes and back, chosen by the message type when a channel is
/// created or opened: `[UInt8]` as it is, `String` as UTF-8, a `BitwiseCopyable` value as its raw
/// bytes, any other `Codable` value as JSON.
///
/// The sending and receiving verbs of ``Channel`` and the codecs of bytes, strings and raw values
/// are inlinable, so that a program's `Channel<Job>` runs specialized for `Job` (no generic
/// metadata is looked up per message); the JSON codec is not (it needs Foundation).
@usableFromInline
struct ChannelCodec<Message: Sendable>: Sendable {
    /// What the creator records and an opener checks.
    @usableFromInline let messageType: ChannelMessageType
    /// The size of every message, for raw values; nil for formats of any length.
    @usableFromInline let fixedSize: Int?
    /// What a send copies into a slot. Runs before anything is claimed, so an error sends nothing.
    @usableFromInline let encode: @Sendable (Message) throws(InterprocessError) -> ChannelPayload<Message>
    /// Copies a message out of its slot (runs while the receiver holds the slot; keeps nothing).
    @usableFromInline let copyOut: @Sendable (UnsafeRawBufferPointer) throws(InterprocessError) -> ChannelPayload<Message>
    /// Turns a copied message into a value (after the slot was released).
    @usableFromInline let decode: @Sendable (ChannelPayload<Message>) throws(InterprocessError) -> Message

    @inlinable
    init(
        messageType: ChannelMessageType, fixedSize: Int?,
        encode: @escaping @Sendable (Message) throws(InterprocessError) -> ChannelPayload<Message>,
        copyOut: @escaping @Sendable (UnsafeRawBufferPointer) throws(InterprocessError) -> ChannelPayload<Message>,
        decode: @escaping @Sendable (ChannelPayload<Message>) throws(InterprocessError) -> Message
    ) {
        self.messageType = messageType
        self.fixedSize = fixedSize
        self.encode = encode
        self.copyOut = copyOut
        self.decode = decode
    }
}

/// A message on its way: the value itself (raw values, copied byte for byte) or its bytes.
@usableFromInline
enum ChannelPayload<Message> {
    case value(Message)
    case bytes([UInt8])

    /// Calls `body` with the bytes to send. For `.value`, those of the value itself: only raw
    /// codecs, whose `Message` is `BitwiseCopyable`, make one.
    @inlinable
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch self {
        case .value(let value): withUnsafeBytes(of: value) { body($0) }
        case .bytes(let bytes): bytes.withUnsafeBytes { body($0) }
        }
    }

    @inlinable
    var count: Int {
        switch self {
        case .value: MemoryLayout<Message>.size
        case .bytes(let bytes): bytes.count
        }
    }
}

extension ChannelCodec {
    /// The wrong kind of payload reached a codec: cannot happen (each codec makes only its own).
    @usableFromInline
    static func mismatch() -> InterprocessError {
        InterprocessError(.decodingFailed, detail: "a message in an unexpected form")
    }
}

extension ChannelCodec {
    /// A message of `count` bytes in a channel of raw `size`-byte values: a peer wrote it.
    @usableFromInline
    static func wrongSize(_ count: Int, size: Int) -> InterprocessError {
        InterprocessError(.corrupt, detail: "a message of \(count) bytes in a channel of \(size)-byte \(Message.self) values (dropped)")
    }
}

extension ChannelCodec where Message: BitwiseCopyable {
    /// The value's raw bytes: fixed size, no encoding. Every process must agree on the type's layout,
    /// and a peer can write any bytes: use types for which every bit pattern is valid if peers are not
    /// trusted (not `Bool` or an enum).
    @inlinable
    static var raw: ChannelCodec {
        let size = MemoryLayout<Message>.size
        return ChannelCodec(
            messageType: ChannelMessageType(Message.self, format: ChannelMessageType.valueFormat),
            fixedSize: size,
            encode: { message throws(InterprocessError) in .value(message) },
            copyOut: { bytes throws(InterprocessError) in
                guard bytes.count == size else { throw wrongSize(bytes.count, size: size) }
                return .value(bytes.loadUnaligned(as: Message.self))
            },
            decode: { payload throws(InterprocessError) in
                guard case .value(let value) = payload else { throw mismatch() }
                return value
            })
    }
}

extension ChannelCodec where Message == [UInt8] {
    /// Bytes as they are.
    @inlinable
    static var bytes: ChannelCodec {
        ChannelCodec(
            messageType: ChannelMessageType([UInt8].self, format: ChannelMessageType.bytesFormat),
            fixedSize: nil,
            encode: { message throws(InterprocessError) in .bytes(message) },
            copyOut: { bytes throws(InterprocessError) in .bytes(Array(bytes)) },
            decode: { payload throws(InterprocessError) in
                guard case .bytes(let bytes) = payload else { throw mismatch() }
                return bytes
            })
    }
}

extension ChannelCodec where Message == String {
    /// A string as UTF-8. Bytes that are not valid UTF-8 (from a peer) are repaired (U+FFFD).
    @inlinable
    static var text: ChannelCodec {
        ChannelCodec(
            messageType: ChannelMessageType(String.self, format: ChannelMessageType.textFormat),
            fixedSize: nil,
            encode: { message throws(InterprocessError) in .bytes(Array(message.utf8)) },
            copyOut: { bytes throws(InterprocessError) in .bytes(Array(bytes)) },
            decode: { payload throws(InterprocessError) in
                guard case .bytes(let bytes) = payload else { throw mismatch() }
                return String(decoding: bytes, as: UTF8.self)
            })
    }
}

extension ChannelCodec where Message: Codable {
    /// A `Codable` value as JSON, so that programs in other languages can read and write it too.
    static var json: ChannelCodec {
        ChannelCodec(
            messageType: ChannelMessageType(Message.self, format: CIPC_CHANNEL_FORMAT_JSON),
            fixedSize: nil,
            encode: { message throws(InterprocessError) in
                do {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys]
                    return .bytes(Array(try encoder.encode(message)))
                } catch {
                    throw InterprocessError(.encodingFailed, detail: "\(Message.self) could not be encoded as JSON: \(error)")
                }
            },
            copyOut: { bytes throws(InterprocessError) in .bytes(Array(bytes)) },
            decode: { payload throws(InterprocessError) in
                guard case .bytes(let bytes) = payload else { throw mismatch() }
                do {
                    return try JSONDecoder().decode(Message.self, from: Data(bytes))
                } catch {
                    throw InterprocessError(.decodingFailed, detail: "a message is not a valid \(Message.self) in JSON: \(error)")
                }
            })
    }
}
