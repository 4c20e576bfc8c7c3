import CInterprocess
import InterprocessSystem

/// What type a typed shared object holds — a ``SharedVariable``'s value (a channel's message next):
/// the type's name, size and alignment, and a version for when the type's layout changes.
///
/// The creator records it (`cipc_type_fingerprint` in `CInterprocess.h`); every opener compares all
/// of it with its own and gets ``InterprocessError/Code/incompatible`` when they differ — also when
/// only the name or the version does, so `Int64` and `UInt64`, or two structs of the same size, never
/// read each other's bytes by mistake. A fingerprint that no creator could have written (a peer's
/// garbage) is `corrupt`.
///
/// ```swift
/// // Job's layout changed in release 2: old and new programs refuse each other's variables.
/// let jobs = try SharedVariable<Job>.create(name: "jobs", type: TypeFingerprint(of: Job.self, version: 2))
///
/// // A peer in another language (or a renamed type) states the fingerprint explicitly:
/// let feed = try SharedVariable<Tick>.open(name: "feed",
///     type: TypeFingerprint(typeName: "feed.Tick", size: 16, alignment: 8, version: 1))
/// ```
///
/// The default name is the type's name as Swift prints it (`String(reflecting:)`): module-qualified
/// ("Swift.UInt64", "MyApp.Job", "(Swift.UInt32, Swift.UInt32)"), so the same type declared in two
/// modules does not match. A private or local type's context is printed by Swift with an address
/// that differs between processes; it is recorded as "(unknown context)" instead — give such types
/// an explicit name if two of them share a module, a name and a size.
public struct TypeFingerprint: Sendable, Hashable, CustomStringConvertible {
    /// The type's name (1 to 4096 bytes of UTF-8).
    public var typeName: String
    /// Bytes of one value (`MemoryLayout<T>.size`).
    public var size: Int
    /// The value's alignment (`MemoryLayout<T>.alignment`), a power of 2.
    public var alignment: Int
    /// The version of the type's layout, as its users number it (0 unless given).
    public var version: UInt32

    /// A fingerprint given explicitly (for peers in other languages, or a type that was renamed).
    public init(typeName: String, size: Int, alignment: Int, version: UInt32 = 0) {
        self.typeName = typeName
        self.size = size
        self.alignment = alignment
        self.version = version
    }

    /// The fingerprint of `type`: its name as Swift prints it, its size and alignment, and `version`.
    public init<T>(of type: T.Type, version: UInt32 = 0) {
        self.init(
            typeName: Self.stableName(String(reflecting: type)), size: MemoryLayout<T>.size,
            alignment: MemoryLayout<T>.alignment, version: version)
    }

    /// The fingerprint of a type stored as JSON (a ``SharedWatchedValue``'s): its name as Swift
    /// prints it and `version`; size 0 and alignment 1, since no value is copied byte for byte (a
    /// peer in another language gives the same with ``init(typeName:size:alignment:version:)``).
    public init<T: Codable>(codable type: T.Type, version: UInt32 = 0) {
        self.init(typeName: Self.stableName(String(reflecting: type)), size: 0, alignment: 1, version: version)
    }

    public var description: String {
        "\(typeName) (\(size) bytes, aligned to \(alignment), version \(version))"
    }

    /// `name` with the addresses of unknown contexts removed ("(unknown context at $55aea0771708)" →
    /// "(unknown context)"): they differ between processes.
    static func stableName(_ name: String) -> String {
        let marker = "(unknown context at $"
        var result = ""
        var rest = Substring(name)
        while let range = rest.firstRange(of: marker) {
            result += rest[..<range.lowerBound]
            let tail = rest[range.upperBound...]
            guard let close = tail.firstIndex(of: ")"), tail[..<close].allSatisfy(\Character.isHexDigit) else {
                result += rest[range]
                rest = tail
                continue
            }
            result += "(unknown context)"
            rest = tail[tail.index(after: close)...]
        }
        return result + rest
    }

    // MARK: The shared form

    /// Why this fingerprint cannot be recorded, or nil if it can.
    var problem: String? {
        let length = typeName.utf8.count
        if length == 0 || length > Int(CIPC_TYPE_NAME_MAX) { return "a type name has 1 to \(CIPC_TYPE_NAME_MAX) bytes, not \(length)" }
        if size < 0 || size > Int(UInt32.max) { return "a type's size must be in 0...\(UInt32.max), not \(size)" }
        if alignment < 1 || alignment > Int(UInt32.max) || alignment & (alignment - 1) != 0 {
            return "a type's alignment must be a power of 2, not \(alignment)"
        }
        return nil
    }

    /// The shared form (the caller has checked ``problem``).
    var shared: cipc_type_fingerprint {
        var fingerprint = cipc_type_fingerprint()
        let name = Array(typeName.utf8)
        fingerprint.name_hash = Self.hash(name)
        fingerprint.size = UInt32(size)
        fingerprint.alignment = UInt32(alignment)
        fingerprint.version = version
        fingerprint.name_length = UInt32(name.count)
        withUnsafeMutableBytes(of: &fingerprint.name) { bytes in
            bytes.copyBytes(from: name.prefix(bytes.count))
        }
        return fingerprint
    }

    /// Whether the recorded fingerprint `recorded` is this one. Throws `corrupt` if it is not one that
    /// a creator could have written (its name's hash, length or padding, its alignment).
    func matches(_ recorded: cipc_type_fingerprint) throws(InterprocessError) -> Bool {
        if let problem = Self.problem(in: recorded) {
            throw InterprocessError(.corrupt, detail: "a damaged type fingerprint (\(problem))")
        }
        var mine = shared
        var theirs = recorded
        return withUnsafeBytes(of: &mine) { a in withUnsafeBytes(of: &theirs) { b in a.elementsEqual(b) } }
    }

    /// What is wrong with a recorded fingerprint, or nil if a creator could have written it.
    static func problem(in recorded: cipc_type_fingerprint) -> String? {
        let length = Int(recorded.name_length)
        guard length >= 1, length <= Int(CIPC_TYPE_NAME_MAX) else { return "name length \(length)" }
        let alignment = recorded.alignment
        guard alignment != 0, alignment & (alignment - 1) == 0 else { return "alignment \(alignment)" }
        var copy = recorded
        return withUnsafeBytes(of: &copy.name) { bytes -> String? in
            let stored = min(length, bytes.count)
            guard bytes[stored...].allSatisfy({ $0 == 0 }) else { return "bytes after the name" }
            if length <= bytes.count && hash(Array(bytes[..<length])) != recorded.name_hash { return "name hash" }
            return nil
        }
    }

    /// A readable form of a recorded fingerprint (a truncated name ends in "…"), for messages and
    /// `ipc inspect`.
    static func text(of recorded: cipc_type_fingerprint) -> String {
        var copy = recorded
        let name = withUnsafeBytes(of: &copy.name) { bytes in
            String(decoding: bytes[..<min(Int(recorded.name_length), bytes.count)], as: UTF8.self)
        }
        let more = Int(recorded.name_length) > Int(CIPC_TYPE_NAME_CAPACITY) ? "…" : ""
        return "\(name)\(more) (\(recorded.size) bytes, aligned to \(recorded.alignment), version \(recorded.version))"
    }

    /// FNV-1a 64 of `bytes`.
    static func hash(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }
}
