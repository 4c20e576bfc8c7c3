#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import SystemPackage
import InterprocessSystem

/// Storing values in one call.
///
/// Stored data is kept in a *value frame* at the start of the payload (`cipc_value_frame` in
/// `CInterprocessValue.h`; the README shows how another language reads it): a 128-byte header and
/// two slots, so that **a reader never sees a missing or torn value while a writer stores**. A store
/// writes the new value into the slot that is not current and then publishes it with one atomic
/// counter; a load copies the current slot and checks that the counter did not move meanwhile,
/// copying again if it did. Readers never block writers; writers take turns through a robust lock in
/// the frame (a writer killed mid-store leaves the old value or the new one, never a mix: see
/// `ValueFrame`, whose doc comment lists every step). Strings are UTF-8; `Codable` values are JSON, so programs in other languages can
/// read them.
///
/// **Capacity.** Each slot holds values of up to a fixed number of bytes, the frame's *capacity*:
/// ``create(name:storing:capacity:permissions:lifetime:)`` and its siblings reserve `capacity` bytes
/// (by default just the first value's size: pass more if later values may be larger); the first
/// ``write(_:)`` or ``store(_:)`` into a segment made with ``create(name:size:permissions:group:lifetime:)``
/// lays the frame out over the whole payload, with a capacity of (`size` − 128) / 2 rounded down to
/// 8. A value that does not fit is refused with `invalidSize`, and the stored value stays as it was.
///
/// **Values and placed objects share a segment safely.** The frame is registered in the segment's
/// table of placed objects (see ``placedObjects()``) as the bytes it takes from offset 0 — its whole
/// extent, both slots, so the capacity reserved for later values too: placing an object over it
/// fails with `overlaps`, and a store never writes over a placed object. In a segment that already
/// holds placed objects, the first store lays the frame out over the free bytes before the first of
/// them (objects placed without an offset go to the end of the segment, leaving the start to the
/// value): a store that does not fit there fails with `overlaps`, naming what is in the way, and
/// changes nothing. Place the objects first, or create the segment for the value with a capacity
/// and keep the objects in another segment. (``withUnsafeMutableBytes(_:)`` is not checked: raw
/// access is yours.)
///
/// **Two locks, never held together.** A store takes the table's lock (to check the frame's entry
/// and, for the first store, to register the frame and lay it out: frames are laid out only under
/// that lock), releases it, and only then takes the frame's writer lock to store the value. Placing
/// and removing objects take only the table's lock; readers take neither. No process ever waits
/// for one lock while holding the other, so the two cannot deadlock, and a process killed at any
/// step leaves the old or the new value (see `ValueFrame`) and a complete entry covering the frame
/// (see `registerFrame`).
///
/// Until a value is stored, ``readBytes()``, ``readString()`` and ``load(_:)`` throw `empty`
/// ("nothing stored yet"). Nothing in the frame is trusted: a capacity or length that does not fit
/// is `corrupt`.
extension SharedMemory {
    /// Where the value frame starts in the payload.
    static let valueFrameOffset = 0

    /// The bytes of payload that stored values of up to `capacity` bytes take: the value frame's
    /// 128-byte header and its two slots (`capacity` rounded up to 8, twice). A segment of this
    /// ``size`` holds such values and nothing else.
    public static func storageSize(capacity: Int) -> Int {
        ValueFrame.extent(capacity: capacity)
    }

    /// The payload bytes `0..<n` that the stored value's frame covers, or nil if nothing was ever
    /// stored (the frame is laid out by the first store): what must not be used for anything else.
    /// `corrupt` if the frame is damaged.
    public func storedValueExtent() throws(InterprocessError) -> Range<Int>? {
        try withMapping { payload throws(InterprocessError) -> Range<Int>? in
            try frame(payload).extent().map { Self.valueFrameOffset..<(Self.valueFrameOffset + $0) }
        }
    }

    /// Creates a segment for values of up to `capacity` bytes (nil: `bytes.count`) and stores
    /// `bytes`; its ``size`` is ``storageSize(capacity:)``. A later value larger than `capacity` is
    /// refused (`invalidSize`): reserve room now if values may grow. Throws `invalidSize` if `bytes`
    /// exceed `capacity`.
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, bytes: some Collection<UInt8>, capacity: Int? = nil, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        let data = Array(bytes)
        let requested = capacity ?? data.count
        guard requested >= data.count, requested <= ValueFrame.maximumCapacity else {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: requested < data.count ? "the first value (\(data.count) bytes) exceeds the capacity \(requested)" : "a capacity of \(requested) bytes is out of range")
        }
        let capacity = ValueFrame.slotSize(requested)
        let handle = try SegmentHandle.create(
            name: name, kind: .raw, payloadSize: storageSize(capacity: capacity), permissions: permissions, lifetime: lifetime
        ) { payload in
            // A new file is zero-filled, and nobody sees it before it has a name: its table needs no
            // lock. The frame's entry covers its whole extent (both slots), the whole payload.
            let table = PlacementTable(header: payload.baseAddress! - SegmentHeader.size, payloadSize: payload.count, segmentName: name)
            table.claim(0, offset: valueFrameOffset, size: storageSize(capacity: capacity), tag: PlacementTable.storedValueTag,
                tagOffset: 0, name: [], placed: true)
            ValueFrame(base: payload.baseAddress! + valueFrameOffset, available: payload.count - valueFrameOffset, name: name)
                .layOut(capacity: capacity, initial: data)
        }
        return SharedMemory(handle: handle)
    }

    /// Creates a segment for strings of up to `capacity` bytes of UTF-8 (nil: `string`'s) and stores
    /// `string` (see ``create(name:bytes:capacity:permissions:lifetime:)``).
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, string: String, capacity: Int? = nil, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        try create(name: name, bytes: Array(string.utf8), capacity: capacity, permissions: permissions, lifetime: lifetime)
    }

    /// Creates a segment for values whose JSON takes up to `capacity` bytes (nil: `value`'s) and
    /// stores `value` (see ``create(name:bytes:capacity:permissions:lifetime:)``): a later value whose
    /// JSON is longer is refused with `invalidSize`, so reserve room for the largest value to come.
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, storing value: some Encodable, capacity: Int? = nil, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        try create(name: name, bytes: try encode(value, name: name), capacity: capacity, permissions: permissions, lifetime: lifetime)
    }

    /// Stores `bytes` as the new value, atomically for readers (see the notes above). Waits only
    /// while another writer copies its value (or, if that writer died, ~25 ms to take its lock over).
    /// Throws `invalidSize` if they exceed the frame's capacity (the stored value is then
    /// unchanged), `overlaps` if the frame is (or, for the first store, would be) where an object is
    /// placed — nothing is written then — and `corrupt` if the frame or the segment's table of placed
    /// objects is damaged.
    public func write(_ bytes: some Collection<UInt8>) throws(InterprocessError) {
        let data = Array(bytes)
        try withMapping { payload throws(InterprocessError) in
            let frame = frame(payload)
            // First the table's lock (released before the writer lock is taken: see the notes above).
            try SegmentPlacements.of(self).withLock { table throws(InterprocessError) in
                try registerFrame(frame, forValueOf: data.count, in: table)
            }
            let writer = ProcessMutex(storage: try SharedObjectStorage.region(of: self, at: Self.valueFrameOffset + ValueFrame.writerOffset))
            try frame.store(data, writer: writer, capacityIfNew: nil)
        }
    }

    /// Under the table's lock: makes the stored value's entry cover exactly the frame's extent (both
    /// slots), laying the frame out first if nothing was ever stored — over the free bytes at the
    /// start of the payload, up to the first placed object. Steps of a first store, and what a
    /// process killed after each leaves (the next taker of the table's lock repairs nothing: the
    /// entry is always complete):
    /// 1. The entry is written (placed) for the extent chosen (`store.afterReserve`): an entry over
    ///    bytes with no frame yet — readers find nothing stored, nothing can be placed there, and
    ///    the next store lays the frame out (setting the entry to the extent it chooses).
    /// 2. The frame is laid out, its tag last (`store.afterLayOut`): frame and entry agree; nothing
    ///    is stored yet, until the value is stored under the frame's writer lock.
    private func registerFrame(_ frame: ValueFrame, forValueOf count: Int, in table: PlacementTable) throws(InterprocessError) {
        let blocker = try table.read().filter { !$0.isStoredValue }.min { $0.offset < $1.offset }
        let free = (blocker?.offset ?? size) - Self.valueFrameOffset
        // Frames are laid out only under the table's lock: whether this one is, cannot change now.
        // (Where an object is placed at the start, no frame can be: its bytes are the object's.)
        if free >= ValueFrame.headerSize, let capacity = try frame.capacity() {
            _ = try table.registerStoredValue(extent: Self.valueFrameOffset + ValueFrame.extent(capacity: capacity))
            return
        }
        guard let capacity = ValueFrame.capacity(fitting: free), capacity >= count else {
            let needed = Self.valueFrameOffset + ValueFrame.extent(capacity: count)
            if let blocker {
                throw InterprocessError(.overlaps, objectName: name,
                    detail: "the stored value at 0..<\(needed) (the frame of a \(count)-byte value) would overlap \(blocker.object)")
            }
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "a segment of \(size) bytes cannot hold a value of \(count) bytes: its value frame takes \(needed)")
        }
        _ = try table.registerStoredValue(extent: Self.valueFrameOffset + ValueFrame.extent(capacity: capacity))
        HotPath.crashPoint("store.afterReserve")
        frame.layOut(capacity: capacity)
        HotPath.crashPoint("store.afterLayOut")
    }

    /// Stores `string` as UTF-8 (framed).
    public func write(_ string: String) throws(InterprocessError) {
        try write(Array(string.utf8))
    }

    /// Stores `value` as JSON (framed).
    public func store(_ value: some Encodable) throws(InterprocessError) {
        try write(Self.encode(value, name: name))
    }

    /// The stored bytes: the value of the last completed store, never a torn one. Throws `empty` if
    /// nothing was stored yet, `corrupt` if the frame is damaged.
    public func readBytes() throws(InterprocessError) -> [UInt8] {
        try withMapping { payload throws(InterprocessError) -> [UInt8] in
            guard let (_, bytes) = try frame(payload).read() else {
                throw InterprocessError(.empty, objectName: name, detail: "nothing stored yet")
            }
            return bytes
        }
    }

    /// The stored string. Fails with `decodingFailed` if the bytes are not UTF-8.
    public func readString() throws(InterprocessError) -> String {
        let bytes = try readBytes()
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw InterprocessError(.decodingFailed, objectName: name, detail: "the stored bytes are not UTF-8")
        }
        return string
    }

    /// The stored value, decoded from JSON.
    public func load<T: Decodable>(_ type: T.Type = T.self) throws(InterprocessError) -> T {
        let bytes = try readBytes()
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw InterprocessError(.decodingFailed, objectName: name, detail: "\(T.self): \(error)")
        }
    }

    // MARK: Helpers

    static func encode(_ value: some Encodable, name: String) throws(InterprocessError) -> [UInt8] {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Array(try encoder.encode(value))
        } catch {
            throw InterprocessError(.encodingFailed, objectName: name, detail: "\(error)")
        }
    }

    /// The value frame in `payload` (a segment too small for one has a frame that cannot be laid out,
    /// and reads as `corrupt` only if a peer wrote a tag into it).
    private func frame(_ payload: UnsafeMutableRawBufferPointer) -> ValueFrame {
        ValueFrame(base: payload.baseAddress! + Self.valueFrameOffset, available: payload.count - Self.valueFrameOffset, name: name)
    }

    /// Runs `body` on the payload after checking that the file still covers the mapping (a peer that
    /// truncated it would otherwise make this access fault with SIGBUS; see ``SharedMemory``'s notes
    /// on what remains: a truncation *during* the access).
    private func withMapping<R>(_ body: (UnsafeMutableRawBufferPointer) throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        let mapping = try handle.mapping()
        try handle.checkFileSize()
        return try withExtendedLifetime(mapping) { () throws(InterprocessError) -> R in
            try body(UnsafeMutableRawBufferPointer(start: mapping.base + SegmentHeader.size, count: size))
        }
    }
}
