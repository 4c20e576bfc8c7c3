import InterprocessSystem

/// The kinds of shared object this library knows. A kind joins with one line in ``kinds``; from
/// then on `ipc ls` and `ipc inspect` describe its objects, and ``SegmentKind`` knows its name.
///
/// This is the top of the library's layers: it names every kind, and nothing below it (Memory, the
/// framework, the kinds themselves) names it back, except through ``SegmentKind``'s description.
enum SharedObjectRegistry {
    /// Every kind, one line each.
    static let kinds: [any SharedObjectKind.Type] = [
        ProcessMutex.self,
        ProcessSemaphore.self,
        ProcessEvent.self,
        ProcessCondition.self,
        ProcessRWLock.self,
        SharedVariableLayout.self,
        SharedHeap.self,
        ChannelLayout.self,
        SharedAtomicLayout.self,
        MessageQueueLayout.self,
        BroadcastLayout.self,
        ServiceLayout.self,
        SharedWatchedValueLayout.self,
    ]

    /// The kinds by their segment kind number (the first of two that share a number wins; a test
    /// checks that none do).
    private static let byNumber: [UInt32: any SharedObjectKind.Type] = Dictionary(
        kinds.map { ($0.segmentKind.rawValue, $0) }, uniquingKeysWith: { first, _ in first })

    /// Names of the segment kinds that are not shared objects: Memory's own, and reserved numbers.
    private static let segmentKindNames: [UInt32: String] = [
        SegmentKind.raw.rawValue: "raw",
    ]

    /// The kinds by their tag (what a segment's table of placed objects records).
    private static let byTag: [UInt32: any SharedObjectKind.Type] = Dictionary(
        kinds.map { ($0.tag, $0) }, uniquingKeysWith: { first, _ in first })

    /// The registered kind whose objects carry `tag`, if any.
    static func kind(tag: UInt32) -> (any SharedObjectKind.Type)? { byTag[tag] }

    /// The registered kind with segment kind `kind`, if any.
    static func kind(_ kind: SegmentKind) -> (any SharedObjectKind.Type)? { byNumber[kind.rawValue] }

    /// The name of a segment kind, if this library knows it.
    static func name(of kind: SegmentKind) -> String? {
        segmentKindNames[kind.rawValue] ?? byNumber[kind.rawValue]?.kindName
    }

    /// Describes a copy of the payload of a segment of `kind`, if a registered kind has that number
    /// (``SegmentInfo/Describer``).
    static func describe(
        _ kind: SegmentKind, _ payload: UnsafeRawBufferPointer, _ isAlive: (UInt64) -> Bool
    ) -> (details: [String: String], summary: String)? {
        guard let objectKind = byNumber[kind.rawValue] else { return nil }
        let description = objectKind.describe(payload, isAlive: isAlive)
        return (description.details, description.summary)
    }
}

extension SegmentKind: CustomStringConvertible {
    /// Whether this library knows the kind.
    public var isKnown: Bool { SharedObjectRegistry.name(of: self) != nil }

    /// The kind's name ("raw", "mutex", …), or "unknown(N)".
    public var description: String { SharedObjectRegistry.name(of: self) ?? "unknown(\(rawValue))" }
}

extension PlacedKind: CustomStringConvertible {
    /// The kind's name ("mutex", "atomic", …), "stored value", or "unknown(TAG)".
    var description: String {
        if tag == PlacementTable.storedValueTag { return PlacementTable.storedValueKindName }
        return SharedObjectRegistry.kind(tag: tag)?.kindName ?? "unknown(\(SharedObjectStorage.tagText(tag)))"
    }
}

extension SharedMemory {
    /// What the header and the kernel's locks say about a named object, read without opening it,
    /// with its kind-specific state (``SegmentInfo/details``). Throws `notFound`, `permissionDenied`,
    /// or `incompatible` for an object that is not ours; an inconsistent header is reported in
    /// ``SegmentInfo/problem``.
    public static func info(name: String) throws(InterprocessError) -> SegmentInfo {
        try SegmentInfo.read(osName: osName(for: name), name: name, describe: SharedObjectRegistry.describe)
    }

    /// Every Interprocess object in the shared memory directory that this user can read, by file
    /// name. A file whose name is not valid UTF-8 (no Interprocess segment has one: names are
    /// Strings) is listed under an escaped name (`\xFF` for each invalid byte) with a ``SegmentInfo/problem``.
    public static func list() -> [SegmentInfo] {
        var infos = SharedMemoryObject.listNames().compactMap {
            try? SegmentInfo.read(osName: "/" + $0, name: $0, describe: SharedObjectRegistry.describe)
        }
        for raw in SharedMemoryObject.listNonUTF8Names() {
            guard let fd = try? SharedMemoryObject.open(rawName: raw) else { continue }
            defer { try? fd.close() }
            let label = SharedMemoryObject.escaped(raw)
            if let info = try? SegmentInfo.read(fd: fd, osName: "/" + label, label: label, nameProblem: "the file name is not valid UTF-8") {
                infos.append(info)
            }
        }
        return infos
    }
}
