import InterprocessSystem
import Synchronization

/// The name of a shared object, stored inline in a fixed 32 bytes.
///
/// A `SharedObjectName` is short enough for every platform (macOS allows 31 bytes for a POSIX
/// shared memory name, counting the slash) and fixed in size, so it can sit in shared memory or be
/// written to a pipe or socket as ``rawBytes`` and read back on the other side.
///
/// ```swift
/// let name = SharedObjectName.unique(prefix: "jobs")   // e.g. "jobs_04k1x0003m2q9d7fz8tw"
/// let segment = try SharedMemory.create(name: name, size: 4096)
/// ```
///
/// Raw form: byte 0 is the length (1...30), bytes 1...30 the name's bytes, byte 31 zero.
public struct SharedObjectName: Hashable, Comparable, Sendable, BitwiseCopyable, Codable,
    LosslessStringConvertible, CustomDebugStringConvertible
{
    /// Longest name in bytes.
    public static let maximumLength = 30
    /// Longest prefix that ``unique(prefix:)`` accepts.
    public static let maximumPrefixLength = 9
    /// Size of the raw form.
    public static let rawSize = 32

    private var words: (UInt64, UInt64, UInt64, UInt64)

    /// A name from a string; nil if it is not a valid shared object name of at most 30 bytes
    /// (not empty, no '/', no NUL, not "." or "..").
    public init?(_ description: String) {
        let bytes = Array(description.utf8)
        guard bytes.count <= Self.maximumLength, SharedMemory.validationProblem(description) == nil else { return nil }
        self.init(validBytes: bytes)
    }

    /// A name from its 32-byte raw form; nil if the bytes are not a valid raw name.
    public init?(rawBytes: some Collection<UInt8>) {
        let raw = Array(rawBytes)
        guard raw.count == Self.rawSize, raw[31] == 0 else { return nil }
        let length = Int(raw[0])
        guard (1...Self.maximumLength).contains(length), raw[(1 + length)...].allSatisfy({ $0 == 0 }) else { return nil }
        let bytes = Array(raw[1...length])
        guard let string = String(validating: bytes, as: UTF8.self) else { return nil }
        self.init(string)
    }

    private init(validBytes bytes: [UInt8]) {
        var raw = [UInt8](repeating: 0, count: Self.rawSize)
        raw[0] = UInt8(bytes.count)
        raw.replaceSubrange(1...bytes.count, with: bytes)
        words = (0, 0, 0, 0)
        raw.withUnsafeBytes { source in withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: source) } }
    }

    /// The 32-byte raw form, to store in shared memory or send through a pipe.
    public var rawBytes: [UInt8] { withUnsafeBytes(of: words) { Array($0) } }

    /// Calls `body` with the raw form without copying it.
    public func withRawBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let copy = words
        return try withUnsafeBytes(of: copy) { raw in Result { () throws(E) -> R in try body(raw) } }.get()
    }

    /// The name as a string.
    public var description: String {
        withUnsafeBytes(of: words) { raw in
            let length = Int(raw[0])
            return String(decoding: UnsafeRawBufferPointer(rebasing: raw[1..<(1 + length)]), as: UTF8.self)
        }
    }

    public var debugDescription: String { "SharedObjectName(\"\(description)\")" }

    public static func < (lhs: SharedObjectName, rhs: SharedObjectName) -> Bool {
        lhs.description.utf8.lexicographicallyPrecedes(rhs.description.utf8)
    }

    public static func == (lhs: SharedObjectName, rhs: SharedObjectName) -> Bool {
        lhs.words == rhs.words
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
    }

    public init(from decoder: any Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        guard let name = SharedObjectName(string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a shared object name: \(string)"))
        }
        self = name
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    // MARK: Unique names

    private static let counter = Atomic<UInt64>(0)
    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    /// A name that no other call in any process on this machine returns: the prefix, '_', and 20
    /// characters made from this process's id, a per-process counter and 50 random bits.
    ///
    /// - Parameter prefix: up to 9 bytes, valid in a name (no '/', no NUL). Longer prefixes are
    ///   shortened to 9 bytes.
    public static func unique(prefix: String = "ipc") -> SharedObjectName {
        var prefixBytes = Array(prefix.utf8.prefix(maximumPrefixLength))
        if prefixBytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 }) || String(validating: prefixBytes, as: UTF8.self) == nil {
            prefixBytes = Array("ipc".utf8)
        }
        let pid = UInt64(UInt32(bitPattern: ProcessIdentity.currentPID))
        let count = counter.wrappingAdd(1, ordering: .relaxed).newValue
        var generator = SystemRandomNumberGenerator()
        let random = generator.next() & ((1 << 50) - 1)
        var bytes = prefixBytes
        bytes.append(UInt8(ascii: "_"))
        // pid: 25 bits in 5 characters (pid_max on Linux is at most 2^22).
        for shift in stride(from: 20, through: 0, by: -5) { bytes.append(alphabet[Int((pid >> UInt64(shift)) & 31)]) }
        // counter: 25 bits in 5 characters; it wraps after 33 million names, where the time-seeded
        // random part keeps names apart.
        for shift in stride(from: 20, through: 0, by: -5) { bytes.append(alphabet[Int((count >> UInt64(shift)) & 31)]) }
        for shift in stride(from: 45, through: 0, by: -5) { bytes.append(alphabet[Int((random >> UInt64(shift)) & 31)]) }
        return SharedObjectName(validBytes: bytes)
    }
}
