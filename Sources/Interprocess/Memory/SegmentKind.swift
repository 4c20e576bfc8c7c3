import CInterprocess

/// What a segment holds. Stored in every segment's header so that opening a segment as the wrong
/// kind of object fails with ``InterprocessError/Code/incompatible`` instead of misreading it.
///
/// The numbers are `CIPC_KIND_*` in `CInterprocess.h`. Each kind of shared object declares its own
/// constant beside its type (``SegmentKind/mutex`` with ``ProcessMutex``, …) and its name comes from
/// the registry of shared-object kinds, which is also where ``description`` and ``isKnown`` are.
public struct SegmentKind: RawRepresentable, Hashable, Sendable, Codable {
    /// The value stored in the header's `kind` field.
    public let rawValue: UInt32
    /// The kind stored as `rawValue` (unknown kinds are kept, and described as "unknown(N)").
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Raw bytes: a ``SharedMemory`` segment.
    public static let raw = SegmentKind(rawValue: CIPC_KIND_RAW)
    /// A message ``Channel``.
    public static let channel = SegmentKind(rawValue: CIPC_KIND_CHANNEL)
}
