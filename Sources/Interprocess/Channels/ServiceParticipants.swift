import CInterprocess
import InterprocessSystem

/// A service's table of participants: the channel's (``ChannelParticipants``, the same code and
/// entries), placed after the reply slots, whose armed bits are the request queue's own
/// `descriptors_armed` word — so the queue, a ``ChannelRing`` given the table, pokes a server's
/// readiness descriptor when a client publishes a request, exactly as a channel's sender does.
/// `CInterprocessService.h` documents the layout ("Participants").
///
/// Roles: a process that queued a request is a *client* (the ring records the sender role), one
/// that asked for or took a request a *server* (the receiver role: the ring records it when a
/// request is taken, ``ServiceCore/markServer()`` as soon as a process asks to serve, so that a
/// server waiting for its first request is listed as one).
enum ServiceParticipants {
    /// The table's bytes (64 entries of 64 bytes).
    static let tableSize = Int(CIPC_SERVICE_PARTICIPANTS_SIZE)
    /// The request queue's `descriptors_armed`, from the start of the service's state.
    static let armedOffset = Int(CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET)
    /// What a service's readiness socket files are named after (`srvready-<hash>-<number>`), so that
    /// a channel, a message queue and a service never share a socket's name.
    static let socketKind = "srvready"
    /// How `ipc inspect` names the roles.
    static let roleNames = (sender: "client", receiver: "server", none: "no requests yet")
    /// The role a server records (a client's is the sender role, recorded by the request queue).
    static let serverRole = ChannelParticipants.receiverRole

    /// The table at `offset` of a validated service state (nil: the service has none).
    static func table(storage: SharedObjectStorage, offset: Int?) -> ChannelParticipants? {
        guard let offset, offset + tableSize <= storage.available else { return nil }
        return ChannelParticipants(
            storage: storage, base: storage.base, tableOffset: offset, name: storage.name,
            armedOffset: armedOffset, socketKind: socketKind)
    }

    /// The participants in a copy of a service's state (never trusted: the table is looked for
    /// only where the header's sizes put it, and only if the copy holds it), for `ipc ls` /
    /// `ipc inspect`: a line per process, `clients` and `servers` (live ones) and the summary's
    /// words. Nil for a service without a table.
    static func describe(_ state: UnsafeRawBufferPointer, header: cipc_service, isAlive: (UInt64) -> Bool)
        -> (details: [String: String], summary: String)?
    {
        let (slotBytes, overflow) = UInt64(header.slot_count).multipliedReportingOverflow(by: UInt64(header.slot_stride))
        guard !overflow, header.slots_offset <= UInt64(Int.max / 2), slotBytes <= UInt64(Int.max / 2) else { return nil }
        let slotsEnd = Int(header.slots_offset) + Int(slotBytes)
        guard case let tableOffset?? = ServiceLayout.hasParticipants(stateSize: header.state_size, slotsEnd: slotsEnd),
              tableOffset + tableSize <= state.count
        else { return nil }
        let armedEnd = armedOffset + MemoryLayout<UInt64>.size
        guard armedEnd <= state.count else { return nil }
        let armed = state.loadUnaligned(fromByteOffset: armedOffset, as: UInt64.self)
        let table = UnsafeRawBufferPointer(rebasing: state[tableOffset..<(tableOffset + tableSize)])
        let found = ChannelParticipants.describe(table, armed: armed, isAlive: isAlive, roleNames: roleNames)
        var details = found.details
        details["producers"] = nil
        details["consumers"] = nil
        details["servers"] = "\(found.receivers)"
        details["clients"] = "\(found.senders)"
        let summary = ", \(found.receivers) server\(found.receivers == 1 ? "" : "s"), \(found.senders) client\(found.senders == 1 ? "" : "s")"
            + (found.ended > 0 ? " (\(found.ended) ended)" : "")
        return (details, summary)
    }
}
