#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import SystemPackage
import InterprocessSystem

/// Storing values in one call.
///
/// Stored data is *framed*: the payload starts with the byte count as a little-endian 64-bit
/// integer, followed by the bytes. Strings are UTF-8; `Codable` values are JSON, so programs in other
/// languages can read them (see the README). Reads check the stored length against the segment's size
/// and fail with `corrupt` rather than trust it.
///
/// A store is not atomic with respect to a concurrent load in another process: guard the segment
/// with a ``ProcessMutex`` (or use a channel) when writers and readers overlap.
///
/// **Values and placed objects share a segment safely.** The stored value is registered in the
/// segment's table of placed objects (see ``placedObjects()``) as the bytes its frame takes from
/// offset 0: a store whose frame would reach an object placed in the segment (a mutex, an atomic, …)
/// fails with `overlaps` and changes nothing, and placing an object over the stored value's frame
/// fails the same way. Objects placed without an offset go to the end of the segment, leaving the
/// start to the value. (``withUnsafeMutableBytes(_:)`` is not checked: raw access is yours.)
extension SharedMemory {
    /// Bytes of the length prefix.
    public static let framePrefixSize = 8

    /// The bytes, from offset 0, that the frame of a stored value of `byteCount` bytes takes: the one
    /// place that knows the frame's extent (the table of placed objects registers it).
    static func frameExtent(byteCount: Int) -> Int {
        framePrefixSize + byteCount
    }

    /// Creates a segment just big enough for `bytes` and stores them (framed).
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, bytes: some Collection<UInt8>, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        let data = Array(bytes)
        let extent = frameExtent(byteCount: data.count)
        let handle = try SegmentHandle.create(
            name: name, kind: .raw, payloadSize: extent, permissions: permissions, lifetime: lifetime
        ) { payload in
            // Nobody else sees the file yet: its table needs no lock.
            let table = PlacementTable(header: payload.baseAddress! - SegmentHeader.size, payloadSize: payload.count, segmentName: name)
            table.claim(0, offset: 0, size: extent, tag: PlacementTable.storedValueTag, tagOffset: 0, name: [], placed: true)
            Self.writeFrame(data, into: payload)
        }
        return SharedMemory(handle: handle)
    }

    /// Creates a segment just big enough for `string` (UTF-8) and stores it (framed).
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, string: String, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        try create(name: name, bytes: Array(string.utf8), permissions: permissions, lifetime: lifetime)
    }

    /// Creates a segment just big enough for `value` (JSON) and stores it (framed).
    /// Keep the returned handle: a `.whileReferenced` segment goes with its last handle, so
    /// `_ = try SharedMemory.create(…)` removes it at once.
    public static func create(
        name: String, storing value: some Encodable, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedMemory {
        try create(name: name, bytes: try encode(value, name: name), permissions: permissions, lifetime: lifetime)
    }

    /// Stores `bytes` (framed). Fails with `invalidSize` if they do not fit, `overlaps` (changing
    /// nothing) if the frame would reach an object placed in the segment.
    public func write(_ bytes: some Collection<UInt8>) throws(InterprocessError) {
        let data = Array(bytes)
        guard data.count <= size - Self.framePrefixSize else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "\(data.count) bytes do not fit; it holds \(max(size - Self.framePrefixSize, 0)) after the 8-byte length")
        }
        let extent = Self.frameExtent(byteCount: data.count)
        let placements = try SegmentPlacements.of(self)
        try withMapping { payload throws(InterprocessError) in
            try placements.withLock { table throws(InterprocessError) in
                // The entry covers the old and the new frame while the frame changes, then the new one.
                let index = try table.reserveStoredValue(extent: extent)
                CrashPoint.reached("store.afterReserve")
                Self.writeFrame(data, into: payload)
                table.resize(index, to: extent)
            }
        }
    }

    /// Stores `string` as UTF-8 (framed).
    public func write(_ string: String) throws(InterprocessError) {
        try write(Array(string.utf8))
    }

    /// Stores `value` as JSON (framed).
    public func store(_ value: some Encodable) throws(InterprocessError) {
        try write(Self.encode(value, name: name))
    }

    /// The stored bytes. Fails with `corrupt` if the stored length does not fit the segment.
    public func readBytes() throws(InterprocessError) -> [UInt8] {
        try withMapping { payload throws(InterprocessError) -> [UInt8] in
            guard payload.count >= Self.framePrefixSize else {
                throw InterprocessError(.corrupt, objectName: name, detail: "\(payload.count) bytes cannot hold a length prefix")
            }
            let length = UInt64(littleEndian: payload.loadUnaligned(as: UInt64.self))
            guard length <= UInt64(payload.count - Self.framePrefixSize) else {
                throw InterprocessError(.corrupt, objectName: name, detail: "stored length \(length) exceeds the \(payload.count - Self.framePrefixSize) bytes available")
            }
            return Array(UnsafeRawBufferPointer(rebasing: payload[Self.framePrefixSize..<(Self.framePrefixSize + Int(length))]))
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

    private static func encode(_ value: some Encodable, name: String) throws(InterprocessError) -> [UInt8] {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Array(try encoder.encode(value))
        } catch {
            throw InterprocessError(.encodingFailed, objectName: name, detail: "\(error)")
        }
    }

    private static func writeFrame(_ data: [UInt8], into payload: UnsafeMutableRawBufferPointer) {
        payload.storeBytes(of: UInt64(data.count).littleEndian, toByteOffset: 0, as: UInt64.self)
        data.withUnsafeBytes { source in
            if !source.isEmpty { (payload.baseAddress! + framePrefixSize).copyMemory(from: source.baseAddress!, byteCount: source.count) }
        }
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
