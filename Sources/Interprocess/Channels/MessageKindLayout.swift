import CInterprocess
import InterprocessSystem
import Synchronization

// The checks that the layouts of the four message kinds (channel, broadcast, message queue,
// service) make alike, written once: a creator's parameters, the tag an opener reads first, and the
// message type a creator recorded. Each kind keeps what is its own (its header's fields, offsets
// and sizes).

extension SharedObjectKind {
    /// Bytes from one slot to the next: a slot header of `header` bytes and a message of up to
    /// `message` bytes, rounded up to a cache line.
    static func slotStride(header: Int, message: Int) -> Int {
        (header + message + 63) / 64 * 64
    }

    /// Throws `invalidArgument` ("a channel's capacity must be in 1...1048576, not 0") unless
    /// `value`, a creator's parameter, is in 1...`maximum`.
    static func checkParameter(_ what: String, _ value: Int, upTo maximum: Int, unit: String = "") throws(InterprocessError) {
        guard (1...maximum).contains(value) else {
            throw InterprocessError(.invalidArgument, detail: "a \(displayName)'s \(what) must be in 1...\(maximum)\(unit), not \(value)")
        }
    }

    /// Throws `corrupt` ("no valid channel there") unless the `available` bytes hold a header of
    /// `headerSize` bytes whose tag is this kind's. The tag is read with acquire ordering: the
    /// creator wrote it last (release), so a state with the tag is initialized.
    static func checkTag(_ state: UnsafeMutableRawPointer, available: Int, headerSize: Int) throws(InterprocessError) {
        guard available >= headerSize, atomic32(state + tagOffset).pointee.load(ordering: .acquiring) == tag else {
            throw InterprocessError(.corrupt, detail: "no valid \(displayName) there")
        }
    }
}

extension ChannelMessageType {
    /// Throws `invalidArgument` ("the message type cannot be recorded: …") for a type whose
    /// fingerprint a creator cannot record.
    func checkRecordable(as what: String = "message") throws(InterprocessError) {
        if let problem = fingerprint.problem {
            throw InterprocessError(.invalidArgument, detail: "the \(what) type cannot be recorded: \(problem)")
        }
    }

    /// Checks the message type and format a creator recorded (read from a peer's memory): `corrupt`
    /// for a damaged record, `incompatible` for a format this version does not know or, with
    /// `expected`, for another type. Returns the recorded type as text.
    static func checkRecorded(
        _ record: cipc_type_fingerprint, format: UInt32, expecting expected: ChannelMessageType?
    ) throws(InterprocessError) -> String {
        try checkRecord(record)
        guard (CIPC_CHANNEL_FORMAT_BYTES...CIPC_CHANNEL_FORMAT_TEXT).contains(format) else {
            throw InterprocessError(.incompatible, detail: "its messages are in format \(format), which this version does not know")
        }
        if let expected, try !expected.matches(record, format: format) {
            throw InterprocessError(.incompatible, detail: "it carries \(text(of: record, format: format)); expected \(expected)")
        }
        return text(of: record, format: format)
    }
}
