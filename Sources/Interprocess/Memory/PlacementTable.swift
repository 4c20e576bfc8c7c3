import CInterprocess
import InterprocessSystem
import Synchronization

/// One object placed in a segment, as the segment's table of placed objects records it
/// (``SharedMemory/placedObjects()``, `ipc inspect`).
public struct PlacedObject: Sendable, Hashable, Codable, CustomStringConvertible {
    /// What it is: "mutex", "semaphore", "atomic", …, "stored value" (the value frame that `store` /
    /// `write` keep at offset 0, with both its slots), or "unknown(TAG)" for a kind this version does
    /// not know.
    public var kind: String
    /// Where it starts, from the start of the payload.
    public var offset: Int
    /// Its bytes.
    public var size: Int
    /// Its name in the segment, if it was placed by name.
    public var name: String?

    /// A placed object's record: `kind` at `offset`, `size` bytes, under `name` (if any).
    public init(kind: String, offset: Int, size: Int, name: String? = nil) {
        self.kind = kind
        self.offset = offset
        self.size = size
        self.name = name
    }

    /// The bytes it takes.
    public var range: Range<Int> { offset..<(offset + size) }

    public var description: String {
        (name.map { "the \(kind) '\($0)'" } ?? (kind == PlacementTable.storedValueKindName ? "the \(kind)" : Self.article(kind) + kind))
            + " at \(offset)..<\(offset + size)"
    }

    /// "an " before a vowel, else "a ".
    static func article(_ word: String) -> String {
        "aeiou".contains(word.first ?? "x") ? "an " : "a "
    }
}

/// The kind of a placed object: its tag. Its name comes from the registry of shared-object kinds,
/// like ``SegmentKind``'s (the registry extends this type).
struct PlacedKind: Hashable, Sendable {
    let tag: UInt32
}

/// The table of placed objects in a raw segment's header (`cipc_placement_table` in
/// `CInterprocess.h`): what is placed where in the payload, so that nothing is placed over something
/// else — an object over an object, an object over the value frame `store` keeps at offset 0, or a
/// value frame over an object.
///
/// **Where it lives, and the format.** In bytes 384..<2048 of the 4096-byte header, which layout
/// version 1 reserved (zero). A segment whose table was never used reads as an empty table
/// (`format` 0), so segments made before the table existed open as before, and the header's version
/// stays 1; the first entry sets `format` to 1. A table of another format is `incompatible`.
///
/// **Changes are made under the table's lock**, a robust `cipc_mutex` (a ``ProcessMutex``) at the
/// table's start, held only for the few stores of one change (and, for a placement, while the object
/// is initialized): whoever places, stores, opens or removes takes it; a holder that dies is taken
/// over by the next one (within the mutex's liveness interval), which first repairs what it left.
///
/// What a process killed at each step of a placement leaves behind (entries are reached only under
/// the lock, so nobody sees a step half-done):
/// 1. The tag word of the new place is zeroed; the entry's fields are written, then its `state` set
///    to 1 (*being placed*). Killed here, or at any point before step 3: the repairer frees the entry
///    (its object never published a tag) — **nothing** was placed.
/// 2. The place is zero-filled and the object initialized.
/// 3. The object's tag is published (release). Killed from here on: the repairer finds the tag and
///    sets the entry to 2 (*placed*) — **the entry**, with a complete object.
/// 4. `state` becomes 2 (placed); the lock is released.
///
/// The entry of the stored value covers its value frame's whole extent (both slots: a frame's
/// extent is fixed when it is laid out, which the first store does under this lock, after writing
/// the entry); it is written complete (placed) in one step, and set to the frame's extent in one
/// store: killed at any point, the entry covers at least every byte of the frame (see
/// `SharedMemory.registerFrame`). Stores after the first change only the frame, under its own
/// writer lock, never while holding this one. A removal zeroes the object's tag, then frees the entry: killed
/// in between, the entry stays with an object that no longer opens (`corrupt`); removing it again
/// finishes the job.
///
/// **Nothing read from the table is trusted**: a state other than 0, 1, 2, an entry outside the
/// payload, entries that overlap, a name longer than its field are `corrupt` — never an
/// out-of-bounds access.
///
/// Not `Sendable`: it points into a mapping that its owner keeps alive.
struct PlacementTable {
    let raw: UnsafeMutableRawPointer
    let payloadSize: Int
    let segmentName: String

    static let capacity = Int(CIPC_PLACEMENT_CAPACITY)
    static let nameCapacity = Int(CIPC_PLACEMENT_NAME_CAPACITY)
    static let storedValueTag = CIPC_TAG_STORED_VALUE
    static let storedValueKindName = "stored value"
    /// Where the table is in the segment header.
    static let offsetInHeader = fieldOffset(\cipc_segment_header.placements)
    /// Placements made without an offset start at a multiple of this (a cache line).
    static let automaticAlignment = 64

    private enum State: UInt32 { case free = 0, placing = 1, placed = 2 }

    /// One used entry, checked.
    struct Entry {
        let index: Int
        let placing: Bool
        let offset: Int
        let size: Int
        let tag: UInt32
        let tagOffset: Int
        let name: [UInt8]

        var range: Range<Int> { offset..<(offset + size) }
        var isStoredValue: Bool { tag == PlacementTable.storedValueTag }
        var kind: PlacedKind { PlacedKind(tag: tag) }
        var object: PlacedObject {
            PlacedObject(kind: isStoredValue ? PlacementTable.storedValueKindName : "\(kind)", offset: offset, size: size,
                name: name.isEmpty ? nil : String(decoding: name, as: UTF8.self))
        }
    }

    /// The table of the segment whose header starts at `header`.
    init(header: UnsafeMutableRawPointer, payloadSize: Int, segmentName: String) {
        raw = header + Self.offsetInHeader
        self.payloadSize = payloadSize
        self.segmentName = segmentName
    }

    /// The table's lock (a `cipc_mutex`).
    var lockState: UnsafeMutableRawPointer { raw + fieldOffset(\cipc_placement_table.lock) }

    private func entry(_ index: Int) -> UnsafeMutableRawPointer {
        raw + fieldOffset(\cipc_placement_table.entries) + index * MemoryLayout<cipc_placement>.stride
    }

    private func stateWord(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        atomic32(entry(index) + fieldOffset(\cipc_placement.state))
    }

    /// Why a table cannot be read: `corrupt`, or `incompatible` for another format.
    struct Problem: Error {
        var code: InterprocessError.Code = .corrupt
        let detail: String
    }

    // MARK: Reading

    /// The used entries (being placed or placed), checked: `corrupt` for anything no correct process
    /// writes, `incompatible` for a table of another format.
    func read() throws(InterprocessError) -> [Entry] {
        do throws(Problem) {
            return try Self.entries(of: UnsafeRawPointer(raw), payloadSize: payloadSize) { stateWord($0).pointee.load(ordering: .acquiring) }
        } catch {
            throw InterprocessError(error.code, objectName: segmentName, detail: "its table of placed objects: " + error.detail)
        }
    }

    /// The entries of a table at `table` (mapped, or a copy), or a problem description. `state` reads
    /// an entry's state word (atomically where it is shared). Also reads a copy for `ipc inspect`.
    /// `skippingPlacing`: leave out entries being placed unchecked (a copy taken without the lock
    /// may catch one half-written).
    static func entries(
        of table: UnsafeRawPointer, payloadSize: Int, skippingPlacing: Bool = false, state: (Int) -> UInt32
    ) throws(Problem) -> [Entry] {
        let format = table.loadUnaligned(fromByteOffset: fieldOffset(\cipc_placement_table.format), as: UInt32.self)
        let capacity = table.loadUnaligned(fromByteOffset: fieldOffset(\cipc_placement_table.capacity), as: UInt32.self)
        var entries: [Entry] = []
        switch format {
        case 0: break // never used: every entry must be free (checked below)
        case CIPC_PLACEMENT_FORMAT:
            guard capacity == CIPC_PLACEMENT_CAPACITY else { throw Problem(detail: "capacity \(capacity)") }
        default:
            throw Problem(code: .incompatible, detail: "format \(format), which this version does not read")
        }
        let base = fieldOffset(\cipc_placement_table.entries)
        for index in 0..<Self.capacity {
            let word = state(index)
            guard let state = State(rawValue: word) else { throw Problem(detail: "entry \(index) has state \(word)") }
            guard state != .free, !(skippingPlacing && state == .placing) else { continue }
            guard format != 0 else { throw Problem(detail: "entry \(index) is used in a table that was never used") }
            let field = table + base + index * MemoryLayout<cipc_placement>.stride
            let entry = field.loadUnaligned(as: cipc_placement.self)
            let length = Int(entry.name_length)
            guard entry.size >= 1, entry.offset <= UInt64(payloadSize), entry.size <= UInt64(payloadSize) - entry.offset else {
                throw Problem(detail: "entry \(index) claims \(entry.size) bytes at offset \(entry.offset) of a \(payloadSize)-byte payload")
            }
            guard length <= nameCapacity else { throw Problem(detail: "entry \(index) has a \(length)-byte name") }
            guard UInt64(entry.tag_offset) + 4 <= entry.size || entry.tag == storedValueTag else {
                throw Problem(detail: "entry \(index) has its tag at \(entry.tag_offset), outside its \(entry.size) bytes")
            }
            guard entry.tag != storedValueTag || entry.offset == 0 else {
                throw Problem(detail: "entry \(index) puts the stored value at offset \(entry.offset), not 0")
            }
            guard entry.tag == storedValueTag || (entry.offset % 8 == 0 && entry.tag_offset % 4 == 0) else {
                throw Problem(detail: "entry \(index) is not aligned (offset \(entry.offset), tag at \(entry.tag_offset))")
            }
            let name = withUnsafeBytes(of: entry.name) { Array($0.prefix(length)) }
            entries.append(Entry(
                index: index, placing: state == .placing, offset: Int(entry.offset), size: Int(entry.size), tag: entry.tag,
                tagOffset: Int(entry.tag_offset), name: name))
        }
        let sorted = entries.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.overlaps(b.range) {
            throw Problem(detail: "entries \(a.index) and \(b.index) overlap")
        }
        for (i, a) in entries.enumerated() where !a.name.isEmpty {
            if entries[(i + 1)...].contains(where: { $0.name == a.name }) { throw Problem(detail: "two entries have one name") }
        }
        return entries
    }

    // MARK: Changing (under the lock)

    /// Repairs what a holder of the lock that died left: an entry being placed is placed if its
    /// object's tag was published, else freed.
    func repair() throws(InterprocessError) {
        for entry in try read() where entry.placing {
            let published = !entry.isStoredValue
                && atomic32(payloadBase + entry.offset + entry.tagOffset).pointee.load(ordering: .acquiring) == entry.tag
            stateWord(entry.index).pointee.store(published ? State.placed.rawValue : State.free.rawValue, ordering: .releasing)
        }
    }

    /// The payload's first byte (the table is in the header, which the payload follows).
    private var payloadBase: UnsafeMutableRawPointer { raw - Self.offsetInHeader + SegmentHeader.size }

    /// The entry (if any) whose bytes include `offset`.
    static func entry(covering offset: Int, in entries: [Entry]) -> Entry? {
        entries.first { $0.range.contains(offset) }
    }

    /// Throws unless `range` is free (the entry `except` aside): `alreadyExists` when an object of
    /// kind `tag` is placed exactly there, `overlaps` otherwise, naming what is there.
    func checkFree(_ range: Range<Int>, tag: UInt32, in entries: [Entry], except: Int? = nil, what: String) throws(InterprocessError) {
        guard let other = entries.first(where: { $0.index != except && $0.range.overlaps(range) }) else { return }
        if other.tag == tag, other.range == range {
            throw InterprocessError(.alreadyExists, objectName: segmentName,
                detail: "\(other.object) is already placed there; open it instead")
        }
        throw InterprocessError(.overlaps, objectName: segmentName,
            detail: "\(what) at \(range.lowerBound)..<\(range.upperBound) would overlap \(other.object)")
    }

    /// The highest offset (a multiple of `alignment`) where `size` bytes are free, or nil. Placing
    /// from the end leaves the start of the payload to the stored value, which grows from offset 0.
    func freeSpot(size: Int, alignment: Int, in entries: [Entry]) -> Int? {
        guard size <= payloadSize else { return nil }
        var candidate = (payloadSize - size) / alignment * alignment
        while true {
            guard let blocker = entries.first(where: { $0.range.overlaps(candidate..<(candidate + size)) }) else { return candidate }
            guard blocker.offset >= size else { return nil }
            candidate = (blocker.offset - size) / alignment * alignment
        }
    }

    /// The first free entry, or `outOfMemory`.
    func freeIndex(in entries: [Entry], what: String) throws(InterprocessError) -> Int {
        let used = Set(entries.map(\.index))
        guard let index = (0..<Self.capacity).first(where: { !used.contains($0) }) else {
            throw InterprocessError(.outOfMemory, objectName: segmentName,
                detail: "its table of placed objects is full (\(Self.capacity) entries); \(what) cannot be placed")
        }
        return index
    }

    /// Writes entry `index` (free) and marks it being placed (step 1 of a placement), or placed.
    func claim(_ index: Int, offset: Int, size: Int, tag: UInt32, tagOffset: Int, name: [UInt8], placed: Bool = false) {
        let format = atomic32(raw + fieldOffset(\cipc_placement_table.format))
        if format.pointee.load(ordering: .relaxed) == 0 {
            (raw + fieldOffset(\cipc_placement_table.capacity)).storeBytes(of: CIPC_PLACEMENT_CAPACITY, as: UInt32.self)
            format.pointee.store(CIPC_PLACEMENT_FORMAT, ordering: .releasing)
        }
        var fields = cipc_placement()
        fields.offset = UInt64(offset)
        fields.size = UInt64(size)
        fields.tag = tag
        fields.tag_offset = UInt32(tagOffset)
        fields.name_length = UInt32(name.count)
        withUnsafeMutableBytes(of: &fields.name) { $0.copyBytes(from: name) }
        let target = entry(index)
        // Everything but the state word, which says whether the rest means anything.
        let stateOffset = fieldOffset(\cipc_placement.state)
        withUnsafeBytes(of: &fields) { bytes in
            target.copyMemory(from: bytes.baseAddress!, byteCount: stateOffset)
            (target + stateOffset + 4).copyMemory(from: bytes.baseAddress! + stateOffset + 4, byteCount: bytes.count - stateOffset - 4)
        }
        stateWord(index).pointee.store(placed ? State.placed.rawValue : State.placing.rawValue, ordering: .releasing)
    }

    /// Marks entry `index` placed (step 4 of a placement).
    func commit(_ index: Int) {
        stateWord(index).pointee.store(State.placed.rawValue, ordering: .releasing)
    }

    /// Frees entry `index`.
    func free(_ index: Int) {
        stateWord(index).pointee.store(State.free.rawValue, ordering: .releasing)
    }

    /// Sets the size of entry `index` (one store).
    func resize(_ index: Int, to size: Int) {
        atomic64(entry(index) + fieldOffset(\cipc_placement.size)).pointee.store(UInt64(size), ordering: .releasing)
    }

    // MARK: The stored value

    /// Makes the stored value's entry cover exactly `0..<extent`, the whole extent of its frame (both
    /// slots), adding it if there is none (`overlaps` if a placed object is in the way, and nothing
    /// changes); returns its index. One store changes a present entry: before and after it, the entry
    /// covers at least the frame.
    func registerStoredValue(extent: Int) throws(InterprocessError) -> Int {
        let entries = try read()
        let current = entries.first { $0.isStoredValue }
        try checkFree(0..<extent, tag: Self.storedValueTag, in: entries, except: current?.index, what: "the stored value")
        if let current {
            if extent != current.size { resize(current.index, to: extent) }
            return current.index
        }
        let index = try freeIndex(in: entries, what: "the stored value")
        claim(index, offset: 0, size: extent, tag: Self.storedValueTag, tagOffset: 0, name: [], placed: true)
        return index
    }
}
