import CInterprocess
import InterprocessSystem

/// Sweeping the tables of participants of channels, message queues and services from outside:
/// what `ipc gc` does for entries of processes that died, which are otherwise swept only when a
/// participant happens to find them (``ChannelParticipants``: a process that joins, a sender whose
/// datagram is refused, a process letting go of its last handle).
///
/// The object is opened as its kind (the segment's kind, tag and fixed fields checked as for any
/// opening) but *not* as a participant: the table is reached without joining it, since joining
/// sweeps on the way and would leave nothing to count. Each sweep is ``ChannelParticipants``'s own
/// (taking the entry with a compare-and-swap from the dead token, so that a participant sweeping at
/// the same time never cleans an entry twice): it clears the entry's armed bit, removes its
/// readiness socket file (if it is this user's and nobody is bound to it) and frees the entry.
package enum ParticipantsSweep {
    /// Sweeps the entries of dead processes in the table of the channel, message queue or service
    /// `name` (`kind`: the segment's kind as `ipc ls` shows it); returns how many it swept, or nil
    /// for another kind or an object created without a table.
    package static func sweepDead(name: String, kind: String, trusting trust: TrustedOwners) throws(InterprocessError) -> Int? {
        switch kind {
        case ChannelLayout.kindName: return try sweep(ChannelState.self, name: name, trusting: trust)
        case MessageQueueLayout.kindName: return try sweep(MessageQueueState.self, name: name, trusting: trust)
        case ServiceLayout.kindName: return try sweep(ServiceState.self, name: name, trusting: trust)
        default: return nil
        }
    }

    /// Whether objects of `kind` (as `ipc ls` shows it) have a table of participants.
    package static func hasTable(kind: String) -> Bool {
        [ChannelLayout.kindName, MessageQueueLayout.kindName, ServiceLayout.kindName].contains(kind)
    }

    /// How many entries of dead processes `ipc inspect`'s details of such an object list (the
    /// `participant.N` lines that say `ended`): what a sweep would find now.
    package static func endedEntries(inDetails details: [String: String]) -> Int {
        details.filter { key, value in
            key.hasPrefix("participant.") && value.split(separator: ",").first?.split(separator: " ").dropFirst(2).first == "ended"
        }.count
    }

    private static func sweep<Owner: ParticipantsTableOwner>(_: Owner.Type, name: String, trusting trust: TrustedOwners) throws(InterprocessError) -> Int? {
        let view = try SharedObjectStorage.open(ParticipantsTableView<Owner>.self, name: name, expecting: nil, trusting: trust)
        defer { view.storage.close() }
        return view.table?.sweepDead()
    }
}

/// A kind whose state holds a table of participants, and where it is in a validated state.
protocol ParticipantsTableOwner: SharedObject {
    /// The table of the validated state on `storage`, nil for a state without one (not joined).
    static func participantsTable(on storage: SharedObjectStorage) throws(InterprocessError) -> ChannelParticipants?
}

extension ChannelState: ParticipantsTableOwner {
    static func participantsTable(on storage: SharedObjectStorage) throws(InterprocessError) -> ChannelParticipants? {
        let geometry = try ChannelLayout.validate(storage.base, available: storage.available, expecting: nil)
        let stateSize = storage.base.load(fromByteOffset: fieldOffset(\cipc_channel.state_size), as: UInt64.self)
        guard case let tableOffset?? = ChannelLayout.hasParticipants(
            stateSize: stateSize, capacity: geometry.capacity, maxMessageSize: geometry.maxMessageSize),
            tableOffset + ChannelParticipants.tableSize <= storage.available
        else { return nil }
        return ChannelParticipants.ofChannel(storage: storage, base: storage.base, tableOffset: tableOffset, name: storage.name)
    }
}

extension MessageQueueState: ParticipantsTableOwner {
    static func participantsTable(on storage: SharedObjectStorage) throws(InterprocessError) -> ChannelParticipants? {
        let geometry = try MessageQueueLayout.validate(storage.base, available: storage.available, expecting: nil)
        guard let tableOffset = MessageQueueLayout.participantsOffset(storage.base, geometry: geometry),
              tableOffset + ChannelParticipants.tableSize <= storage.available
        else { return nil }
        return ChannelParticipants(
            storage: storage, base: storage.base, tableOffset: tableOffset, name: storage.name,
            armedOffset: fieldOffset(\cipc_mqueue.descriptors_armed), socketKind: "mqready")
    }
}

extension ServiceState: ParticipantsTableOwner {
    static func participantsTable(on storage: SharedObjectStorage) throws(InterprocessError) -> ChannelParticipants? {
        let geometry = try ServiceLayout.validate(storage.base, available: storage.available, expecting: nil)
        return ServiceParticipants.table(storage: storage, offset: geometry.participantsOffset)
    }
}

/// An object of `Owner`'s kind opened only to reach its table of participants: the same checks as
/// opening `Owner`, no participant joined, no protocol state built.
final class ParticipantsTableView<Owner: ParticipantsTableOwner>: SharedObject {
    typealias Kind = Owner.Kind
    typealias Parameters = Owner.Parameters

    static var recordsOwners: Bool { true }
    static var alignment: Int { Owner.alignment }
    static var minimumSize: Int { Owner.minimumSize }
    static func size(for parameters: Parameters) throws(InterprocessError) -> Int { try Owner.size(for: parameters) }
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        Owner.initialize(state, size: size, with: parameters)
    }
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError) {
        try Owner.validate(state, available: available, expecting: parameters)
    }

    let storage: SharedObjectStorage
    let table: ChannelParticipants?

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        self.storage = storage
        table = try Owner.participantsTable(on: storage)
    }
}
