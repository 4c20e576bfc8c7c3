/// What a segment holds. Stored in every segment's header so that opening a segment as the wrong
/// kind of object fails with ``InterprocessError/Code/incompatible`` instead of misreading it.
public struct SegmentKind: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// The value stored in the header's `kind` field.
    public let rawValue: UInt32
    /// The kind stored as `rawValue` (unknown kinds are kept, and described as "unknown(N)").
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Raw bytes: a ``SharedMemory`` segment.
    public static let raw = SegmentKind(rawValue: 1)
    /// A shared-memory heap.
    public static let heap = SegmentKind(rawValue: 2)
    /// A message channel.
    public static let channel = SegmentKind(rawValue: 3)
    /// A named ``ProcessMutex``.
    public static let mutex = SegmentKind(rawValue: 16)
    /// A named ``ProcessSemaphore``.
    public static let semaphore = SegmentKind(rawValue: 17)
    /// A named ``ProcessEvent``.
    public static let event = SegmentKind(rawValue: 18)
    /// A named ``ProcessCondition``.
    public static let condition = SegmentKind(rawValue: 19)
    /// A named ``ProcessRWLock``.
    public static let rwLock = SegmentKind(rawValue: 20)
    /// A named ``SharedVariable``.
    public static let variable = SegmentKind(rawValue: 21)

    private static let names: [UInt32: String] = [
        1: "raw", 2: "heap", 3: "channel", 16: "mutex", 17: "semaphore", 18: "event",
        19: "condition", 20: "rwlock", 21: "variable",
    ]

    /// Whether this library knows the kind.
    public var isKnown: Bool { Self.names[rawValue] != nil }

    public var description: String { Self.names[rawValue] ?? "unknown(\(rawValue))" }
}
