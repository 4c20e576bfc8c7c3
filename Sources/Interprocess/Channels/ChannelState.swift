import CInterprocess
import InterprocessSystem

/// A channel as a shared object: the state (`cipc_channel` and its slots) in a named segment of
/// kind ``SegmentKind/channel``, which ``SharedObjectStorage`` creates, opens, checks and removes as
/// for every kind, and the ring built on it. Not generic: ``Channel`` adds the message type on top
/// (its codec), so that one kind serves every `Channel<Message>`.
///
/// `@unchecked Sendable`: immutable; the ring's shared words are atomics.
final class ChannelState: SharedObject, @unchecked Sendable {
    typealias Kind = ChannelLayout
    typealias Parameters = ChannelParameters

    static var recordsOwners: Bool { true }
    /// Slots are cache lines apart; so is the state.
    static var alignment: Int { 64 }
    static var minimumSize: Int { ChannelLayout.headerSize }

    let storage: SharedObjectStorage
    let ring: ChannelRing
    /// The message type and format its creator recorded (validated), as text.
    let recordedType: String
    let recordedFormat: UInt32

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        let geometry = try ChannelLayout.validate(storage.base, available: storage.available, expecting: nil)
        self.storage = storage
        recordedType = geometry.messageType
        recordedFormat = geometry.format
        // The table of participants, if the channel has one (validated: the state holds it).
        let stateSize = storage.base.load(fromByteOffset: fieldOffset(\cipc_channel.state_size), as: UInt64.self)
        if case let tableOffset?? = ChannelLayout.hasParticipants(
            stateSize: stateSize, capacity: geometry.capacity, maxMessageSize: geometry.maxMessageSize),
           tableOffset + ChannelParticipants.tableSize <= storage.available {
            participants = ChannelParticipants.ofChannel(storage: storage, base: storage.base, tableOffset: tableOffset, name: storage.name)
        } else {
            participants = nil
        }
        ring = try ChannelRing(
            storage: storage, capacity: geometry.capacity, maxMessageSize: geometry.maxMessageSize, stride: geometry.stride,
            participants: participants)
        membership = ParticipantsMembership(participants)
    }

    /// The channel's table of participants (nil for a channel created without one).
    let participants: ChannelParticipants?
    /// This handle's place in it, left at `close()` or when the state goes away.
    private let membership: ParticipantsMembership

    /// The bytes of a channel: the header, the slots and the table of participants.
    static func size(for parameters: ChannelParameters) throws(InterprocessError) -> Int {
        try ChannelLayout.size(for: parameters) + ChannelParticipants.tableSize
    }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: ChannelParameters) {
        ChannelLayout.initialize(state, size: size, with: parameters)
    }

    /// Checks every field fixed at creation, and with `parameters` that the messages are of their
    /// type (`incompatible` otherwise; an opener's capacity and size do not have to match).
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: ChannelParameters?) throws(InterprocessError) {
        try ChannelLayout.validate(state, available: available, expecting: parameters?.messageType)
    }

    var name: String? { storage.name }

    func close() {
        membership.leave()
        storage.close()
    }
}
