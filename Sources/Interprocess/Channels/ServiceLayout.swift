import CInterprocess
import InterprocessSystem

/// What creating a service takes.
struct ServiceParameters: Sendable {
    var capacity: Int
    var maxRequestSize: Int
    var maxResponseSize: Int
    var requestType: ChannelMessageType
    var responseType: ChannelMessageType
}

/// The shared layout of a service (`cipc_service` in `CInterprocessService.h`): its size for given
/// parameters, how a creator initializes it (the header, the request queue — a whole channel — and
/// the reply slots), how an opener checks it, and how `ipc ls` and `ipc inspect` describe it. The
/// service kind of shared object (registered in ``SharedObjectRegistry``; ``ServiceState`` is the
/// object).
enum ServiceLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .service }
    static var tag: UInt32 { CIPC_TAG_SERVICE }
    static var tagOffset: Int { fieldOffset(\cipc_service.tag) }
    /// "SRV1": its counters were on one line written by clients and servers alike (every request
    /// passed that line back and forth between the two processes). "SRV2": a server moved its reply
    /// slot to WRITING before it wrote the reply and wrote the reply's length in a word of its own
    /// (three writes to the line the client waits on, where "SRV3" makes one).
    static var retiredTags: [UInt32] { [CIPC_TAG_SERVICE_V1, CIPC_TAG_SERVICE_V2] }
    static var kindName: String { "service" }

    static let headerSize = Int(CIPC_SERVICE_HEADER_SIZE)
    static let slotHeaderSize = Int(CIPC_SERVICE_SLOT_HEADER_SIZE)
    static let requestHeaderSize = Int(CIPC_SERVICE_REQUEST_HEADER_SIZE)
    static let maximumSlots = Int(CIPC_SERVICE_MAX_SLOTS)
    static let maximumMessageSize = Int(CIPC_SERVICE_MAX_MESSAGE_SIZE)

    /// The request queue's message type: bytes (a request header and the request).
    static let queueType = ChannelMessageType([UInt8].self, format: ChannelMessageType.bytesFormat)

    /// Bytes from one reply slot to the next: its header and the reply, rounded up to a cache line.
    static func stride(maxResponseSize: Int) -> Int { slotStride(header: slotHeaderSize, message: maxResponseSize) }

    /// The request queue's parameters.
    static func queueParameters(slots: Int, maxRequestSize: Int) -> ChannelParameters {
        ChannelParameters(capacity: slots, maxMessageSize: requestHeaderSize + maxRequestSize, messageType: queueType)
    }

    /// Where the parts are: the queue's size, the reply slots' offset and the whole size.
    static func geometry(slots: Int, maxRequestSize: Int, maxResponseSize: Int) -> (queueSize: Int, slotsOffset: Int, size: Int) {
        let queueSize = ChannelLayout.headerSize + slots * ChannelLayout.stride(maxMessageSize: requestHeaderSize + maxRequestSize)
        let slotsOffset = headerSize + queueSize
        return (queueSize, slotsOffset, slotsOffset + slots * stride(maxResponseSize: maxResponseSize))
    }

    /// The bytes a service with `parameters` needs. Throws `invalidArgument` for parameters it
    /// cannot be created with.
    static func size(for parameters: ServiceParameters) throws(InterprocessError) -> Int {
        try checkParameter("capacity", parameters.capacity, upTo: maximumSlots)
        for (what, size) in [("request", parameters.maxRequestSize), ("response", parameters.maxResponseSize)] {
            try checkParameter("maximum \(what) size", size, upTo: maximumMessageSize, unit: " bytes")
        }
        for (what, type) in [("request", parameters.requestType), ("response", parameters.responseType)] {
            try type.checkRecordable(as: what)
        }
        return geometry(slots: parameters.capacity, maxRequestSize: parameters.maxRequestSize, maxResponseSize: parameters.maxResponseSize).size
    }

    /// Initializes a zero-filled state of `size` bytes (the storage then publishes the tag).
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: ServiceParameters) {
        let header = state.assumingMemoryBound(to: cipc_service.self)
        let geometry = geometry(slots: parameters.capacity, maxRequestSize: parameters.maxRequestSize, maxResponseSize: parameters.maxResponseSize)
        header.pointee.slot_count = UInt32(parameters.capacity)
        header.pointee.max_request_size = UInt32(parameters.maxRequestSize)
        header.pointee.max_response_size = UInt32(parameters.maxResponseSize)
        header.pointee.slot_stride = UInt32(stride(maxResponseSize: parameters.maxResponseSize))
        header.pointee.request_format = parameters.requestType.format
        header.pointee.response_format = parameters.responseType.format
        // With the table of participants (``ServiceState/size(for:)``) or without it.
        header.pointee.state_size = UInt64(size == geometry.size + ServiceParticipants.tableSize ? size : geometry.size)
        header.pointee.queue_offset = UInt32(headerSize)
        header.pointee.queue_size = UInt64(geometry.queueSize)
        header.pointee.slots_offset = UInt64(geometry.slotsOffset)
        header.pointee.request_type = parameters.requestType.fingerprint.shared
        header.pointee.response_type = parameters.responseType.fingerprint.shared
        // The queue is a channel, tag and all (nobody opens it by itself: it is published here).
        let queue = state + headerSize
        ChannelLayout.initialize(queue, size: geometry.queueSize, with: queueParameters(slots: parameters.capacity, maxRequestSize: parameters.maxRequestSize))
        atomic32(queue + ChannelLayout.tagOffset).pointee.store(ChannelLayout.tag, ordering: .releasing)
        // Reply slots start free with ticket 0: all zero.
    }

    /// The validated fixed fields of a service.
    struct Geometry {
        var slots: Int
        var maxRequestSize: Int
        var maxResponseSize: Int
        var stride: Int
        var queueSize: Int
        var slotsOffset: Int
        var queue: (capacity: Int, maxMessageSize: Int, stride: Int)
        var requestType: String
        var responseType: String
        var requestFormat: UInt32
        var responseFormat: UInt32
        /// Where the table of participants is (after the reply slots), nil for a service without one.
        var participantsOffset: Int?
    }

    /// Checks an existing state before anything trusts it: the tag, every field fixed at creation
    /// against the `available` bytes, the embedded queue (as a channel); with `expected`, also the
    /// request and response types (`incompatible` if they differ).
    @discardableResult
    static func validate(
        _ state: UnsafeMutableRawPointer, available: Int, expecting expected: (request: ChannelMessageType, response: ChannelMessageType)?
    ) throws(InterprocessError) -> Geometry {
        try checkTag(state, available: available, headerSize: headerSize)
        let header = state.assumingMemoryBound(to: cipc_service.self).pointee
        let slots = Int(header.slot_count)
        let maxRequest = Int(header.max_request_size)
        let maxResponse = Int(header.max_response_size)
        guard (1...maximumSlots).contains(slots), (1...maximumMessageSize).contains(maxRequest), (1...maximumMessageSize).contains(maxResponse)
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent service header (\(header.slot_count) slots, requests of \(header.max_request_size) bytes, responses of \(header.max_response_size))")
        }
        let expectedGeometry = geometry(slots: slots, maxRequestSize: maxRequest, maxResponseSize: maxResponse)
        guard Int(header.slot_stride) == stride(maxResponseSize: maxResponse), Int(header.queue_offset) == headerSize,
              header.queue_size == UInt64(expectedGeometry.queueSize), header.slots_offset == UInt64(expectedGeometry.slotsOffset),
              let participants = hasParticipants(stateSize: header.state_size, slotsEnd: expectedGeometry.size),
              header.state_size <= UInt64(available)
        else {
            throw InterprocessError(.corrupt, detail: "inconsistent service header (stride \(header.slot_stride), queue at \(header.queue_offset) of \(header.queue_size) bytes, slots at \(header.slots_offset), size \(header.state_size) of \(available) bytes)")
        }
        try ChannelMessageType.checkRecord(header.request_type)
        try ChannelMessageType.checkRecord(header.response_type)
        let formats = CIPC_CHANNEL_FORMAT_BYTES...CIPC_CHANNEL_FORMAT_TEXT
        guard formats.contains(header.request_format), formats.contains(header.response_format) else {
            throw InterprocessError(.incompatible, detail: "its messages are in formats \(header.request_format) and \(header.response_format), which this version does not know")
        }
        if let expected {
            if try !expected.request.matches(header.request_type, format: header.request_format) {
                throw InterprocessError(.incompatible,
                    detail: "its requests are \(ChannelMessageType.text(of: header.request_type, format: header.request_format)); expected \(expected.request)")
            }
            if try !expected.response.matches(header.response_type, format: header.response_format) {
                throw InterprocessError(.incompatible,
                    detail: "its responses are \(ChannelMessageType.text(of: header.response_type, format: header.response_format)); expected \(expected.response)")
            }
        }
        // The queue: a channel of exactly the size the header implies.
        let queue = try ChannelLayout.validate(state + headerSize, available: expectedGeometry.queueSize, expecting: queueType)
        guard queue.capacity == slots, queue.maxMessageSize == requestHeaderSize + maxRequest else {
            throw InterprocessError(.corrupt, detail: "its request queue (\(queue.capacity) slots of \(queue.maxMessageSize) bytes) does not fit its header")
        }
        return Geometry(
            slots: slots, maxRequestSize: maxRequest, maxResponseSize: maxResponse, stride: stride(maxResponseSize: maxResponse),
            queueSize: expectedGeometry.queueSize, slotsOffset: expectedGeometry.slotsOffset,
            queue: (queue.capacity, queue.maxMessageSize, queue.stride),
            requestType: ChannelMessageType.text(of: header.request_type, format: header.request_format),
            responseType: ChannelMessageType.text(of: header.response_type, format: header.response_format),
            requestFormat: header.request_format, responseFormat: header.response_format, participantsOffset: participants)
    }

    /// Where a service's table of participants starts, for a state of `stateSize` bytes whose reply
    /// slots end at `slotsEnd`: there when the state holds the table, nil when it ends with the
    /// slots (a service created before the table existed). `Int?.none?` (an outer nil) when the
    /// size fits neither.
    static func hasParticipants(stateSize: UInt64, slotsEnd: Int) -> Int?? {
        if stateSize == UInt64(slotsEnd) { return .some(nil) }
        if stateSize == UInt64(slotsEnd) &+ UInt64(ServiceParticipants.tableSize) { return .some(slotsEnd) }
        return nil
    }

    /// Capacity, types, requests queued and in flight, slots by phase and what was recovered, read
    /// from a copy of the state (never trusted: sizes are checked, nothing read is followed blindly).
    static func describe(_ state: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard state.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = state.load(as: cipc_service.self)
        if header.tag == CIPC_TAG_SERVICE_V1 || header.tag == CIPC_TAG_SERVICE_V2 {
            // Its counters may be elsewhere and its slots mean other things: say what it is rather
            // than misread them.
            let version = header.tag == CIPC_TAG_SERVICE_V1 ? "SRV1" : "SRV2"
            return SharedObjectDescription(
                details: ["layout": "\(version) (older; this version does not open it)"], summary: "older layout (\(version))")
        }
        var details: [String: String] = [
            "capacity": "\(header.slot_count)",
            "maxRequestSize": "\(header.max_request_size)",
            "maxResponseSize": "\(header.max_response_size)",
            "requestType": TypeFingerprint.problem(in: header.request_type) == nil
                ? ChannelMessageType.text(of: header.request_type, format: header.request_format) : "damaged",
            "responseType": TypeFingerprint.problem(in: header.response_type) == nil
                ? ChannelMessageType.text(of: header.response_type, format: header.response_format) : "damaged",
            "requestFormat": ChannelMessageType.formatName(header.request_format),
            "responseFormat": ChannelMessageType.formatName(header.response_format),
            "requests": "\(header.requests)",
            "replies": "\(header.replies)",
            "discardedReplies": "\(header.discarded_replies)",
            "serverDeaths": "\(header.server_deaths)",
            "reclaimedSlots": "\(header.reclaimed_slots)",
            "staleRequests": "\(header.stale_requests)",
            "slotWaiters": "\(header.slot_waiters)",
        ]
        var summary = "\(header.slot_count) slots"
        // The queue, as a channel describes itself.
        let queueEnd = UInt64(headerSize) &+ header.queue_size
        if header.queue_size >= UInt64(ChannelLayout.headerSize), queueEnd <= UInt64(state.count) {
            let queue = ChannelLayout.describe(UnsafeRawBufferPointer(rebasing: state[headerSize..<Int(queueEnd)]), isAlive: isAlive).details
            details["queued"] = queue["count"] ?? "?"
            details["closed"] = queue["closed"] ?? "?"
            details["serversWaiting"] = queue["receiversWaiting"] ?? "?"
            summary += ", \(queue["count"] ?? "?") queued" + (queue["closed"] == "yes" ? ", closed" : "")
        }
        // The slots, if they are where the header says and fit the copy.
        let stride = UInt64(header.slot_stride)
        let slots = UInt64(header.slot_count)
        if stride >= UInt64(slotHeaderSize), slots <= UInt64(maximumSlots), header.slots_offset % 64 == 0,
           header.slots_offset <= UInt64(state.count), slots &* stride <= UInt64(state.count) - header.slots_offset {
            var phases = [Int](repeating: 0, count: 8)
            var deadClients = 0
            for index in 0..<Int(slots) {
                let slot = state.load(fromByteOffset: Int(header.slots_offset) + index * Int(stride), as: cipc_service_slot.self)
                phases[min(Int(slot.control & 0xFF), 7)] += 1
                if slot.client != 0, !isAlive(slot.client) { deadClients += 1 }
            }
            let inFlight = Int(slots) - phases[0]
            details["inFlight"] = "\(inFlight)"
            details["pending"] = "\(phases[1])"
            details["serving"] = "\(phases[2] + phases[3])"
            details["replied"] = "\(phases[4] + phases[5])"
            details["abandoned"] = "\(phases[6])"
            details["deadClients"] = "\(deadClients)"
            if phases[7] > 0 { details["invalidSlots"] = "\(phases[7])" }
            summary += ", \(inFlight) in flight"
        }
        // The table of participants, if the service has one and the copy holds it.
        if let participants = ServiceParticipants.describe(state, header: header, isAlive: isAlive) {
            details.merge(participants.details) { _, new in new }
            summary += participants.summary
        }
        return SharedObjectDescription(details: details, summary: summary)
    }
}

extension SegmentKind {
    /// A request / response ``Service``.
    public static let service = SegmentKind(rawValue: CIPC_KIND_SERVICE)
}

/// A service as a shared object: the state (`cipc_service`, its request queue and reply slots) in a
/// named segment of kind ``SegmentKind/service``, which ``SharedObjectStorage`` creates, opens,
/// checks and removes as for every kind, and the core built on it. Not generic: ``Service`` adds the
/// request and response types on top (their codecs).
///
/// `@unchecked Sendable`: immutable; the shared words are atomics.
final class ServiceState: SharedObject, @unchecked Sendable {
    typealias Kind = ServiceLayout
    typealias Parameters = ServiceParameters

    static var recordsOwners: Bool { true }
    static var alignment: Int { 64 }
    static var minimumSize: Int { ServiceLayout.headerSize }

    let storage: SharedObjectStorage
    let core: ServiceCore
    let geometry: ServiceLayout.Geometry

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        let geometry = try ServiceLayout.validate(storage.base, available: storage.available, expecting: nil)
        self.storage = storage
        self.geometry = geometry
        // The table of participants, if the service has one (validated: the state holds it).
        participants = ServiceParticipants.table(storage: storage, offset: geometry.participantsOffset)
        core = try ServiceCore(storage: storage, geometry: geometry, participants: participants)
        membership = ParticipantsMembership(participants)
    }

    /// The service's table of participants (nil for a service created without one).
    let participants: ChannelParticipants?
    /// This handle's place in it, left at `close()` or when the state goes away.
    private let membership: ParticipantsMembership

    /// The bytes of a service: the header, the request queue, the reply slots and the table of participants.
    static func size(for parameters: ServiceParameters) throws(InterprocessError) -> Int {
        try ServiceLayout.size(for: parameters) + ServiceParticipants.tableSize
    }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: ServiceParameters) {
        ServiceLayout.initialize(state, size: size, with: parameters)
    }

    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: ServiceParameters?) throws(InterprocessError) {
        try ServiceLayout.validate(state, available: available, expecting: parameters.map { ($0.requestType, $0.responseType) })
    }

    var name: String? { storage.name }

    func close() {
        membership.leave()
        storage.close()
    }
}
