import CInterprocess
import InterprocessSystem
import Synchronization

/// The lifetime rule of a named object.
public enum Lifetime: String, Sendable, Hashable, Codable, CustomStringConvertible {
    /// The object lives while any process holds it open: the last ``SharedMemory/close()`` removes
    /// its name. A holder that died (even by SIGKILL) does not keep it alive: the next open or close
    /// by anyone, or `ipc gc`, finds the dead holder and sweeps the object.
    case whileReferenced
    /// The object lives until ``SharedMemory/remove(name:)-(String)`` (or `ipc rm`) removes it, or the
    /// machine restarts.
    case persistent

    var rawCode: UInt32 { self == .whileReferenced ? 1 : 2 }
    init?(code: UInt32) {
        switch code {
        case 1: self = .whileReferenced
        case 2: self = .persistent
        default: return nil
        }
    }
    public var description: String { rawValue }
}

/// Values of the header's `state` word.
enum SegmentState: UInt32 {
    case initializing = 0, ready = 1, removed = 2
}

/// The bytes of the segment's file that carry open-file-description locks. They are not data: a
/// byte-range lock does not touch the file's contents, and the offsets may even lie past its end.
enum LockByte {
    /// Shared-locked by every holder; exclusive by a creator while it initializes the segment, and
    /// by a closer or sweeper that has found no other holder.
    static let live: Int64 = 0
    /// Exclusive while someone unlinks the name, so that two cleaners never both unlink.
    static let gate: Int64 = 1
    /// Holder slot i is owned by whoever holds a lock on byte `slotBase + i`.
    static let slotBase: Int64 = 64
    // Bytes from 2^62 on carry the owner tokens of the primitives in the file (`OwnerLease`).
}

/// Typed access to a mapped `cipc_segment_header`.
///
/// Never trusts what it reads: ``validate(fileSize:name:kind:)`` checks every field against the
/// file before anything else uses it.
struct SegmentHeader {
    static let size = MemoryLayout<cipc_segment_header>.size
    /// The checksum covers every field before `reserved` (the name included).
    static let checksummedBytes = fieldOffset(\cipc_segment_header.reserved)
    static let holderCapacity = Int(CIPC_HOLDER_CAPACITY)

    let raw: UnsafeMutableRawPointer
    var pointer: UnsafeMutablePointer<cipc_segment_header> { raw.assumingMemoryBound(to: cipc_segment_header.self) }

    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    var stateWord: UnsafeMutablePointer<Atomic<UInt32>> {
        (raw + fieldOffset(\cipc_segment_header.state)).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    var state: UInt32 { stateWord.pointee.load(ordering: .acquiring) }

    /// Moves the state from `expected` to `desired`; false if it was not `expected`.
    func transition(from expected: SegmentState, to desired: SegmentState) -> Bool {
        stateWord.pointee.compareExchange(expected: expected.rawValue, desired: desired.rawValue, ordering: .acquiringAndReleasing).exchanged
    }

    func slotPID(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        (UnsafeMutableRawPointer(slot(index)) + fieldOffset(\cipc_holder_slot.pid)).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    func slot(_ index: Int) -> UnsafeMutablePointer<cipc_holder_slot> {
        (raw + fieldOffset(\cipc_segment_header.holders) + index * MemoryLayout<cipc_holder_slot>.stride)
            .assumingMemoryBound(to: cipc_holder_slot.self)
    }

    var name: String {
        let length = min(Int(pointer.pointee.name_length), Int(CIPC_NAME_CAPACITY))
        return String(decoding: UnsafeRawBufferPointer(start: raw + fieldOffset(\cipc_segment_header.name), count: length), as: UTF8.self)
    }

    /// FNV-1a 64 of the immutable part of the header (state and checksum read as zero).
    static func checksum(of raw: UnsafeRawPointer) -> UInt64 {
        let state = fieldOffset(\cipc_segment_header.state)
        let checksum = fieldOffset(\cipc_segment_header.checksum)
        let zeroed = [state..<(state + MemoryLayout<UInt32>.size), checksum..<(checksum + MemoryLayout<UInt64>.size)]
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for offset in 0..<checksummedBytes {
            let byte: UInt8 = zeroed.contains { $0.contains(offset) } ? 0 : raw.load(fromByteOffset: offset, as: UInt8.self)
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return hash
    }

    /// Writes a fresh header (state stays `initializing`).
    func initialize(name: String, kind: SegmentKind, lifetime: Lifetime, payloadSize: Int) {
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
        let identity = ProcessIdentity.current
        let nameBytes = Array(name.utf8)
        pointer.pointee.magic = CIPC_SEGMENT_MAGIC
        pointer.pointee.version = CIPC_LAYOUT_VERSION
        pointer.pointee.header_size = CIPC_HEADER_SIZE
        pointer.pointee.kind = kind.rawValue
        pointer.pointee.lifetime = lifetime.rawCode
        pointer.pointee.holder_capacity = CIPC_HOLDER_CAPACITY
        pointer.pointee.total_size = UInt64(Self.size + payloadSize)
        pointer.pointee.payload_offset = UInt64(Self.size)
        pointer.pointee.payload_size = UInt64(payloadSize)
        pointer.pointee.created_ns = Clock.realtimeNanoseconds()
        pointer.pointee.creator_start_time = identity.startTime
        pointer.pointee.creator_pid = UInt32(bitPattern: identity.pid)
        pointer.pointee.name_length = UInt32(nameBytes.count)
        (raw + fieldOffset(\cipc_segment_header.name)).copyMemory(from: nameBytes, byteCount: nameBytes.count)
        pointer.pointee.checksum = Self.checksum(of: raw)
    }

    /// Checks the header against the file it came from. Throws `incompatible` for something that is
    /// not ours or not of this version or kind, `corrupt` for anything inconsistent.
    func validate(fileSize: Int64, name: String, kind expectedKind: SegmentKind?) throws(InterprocessError) {
        let h = pointer.pointee
        func corrupt(_ detail: String) -> InterprocessError { InterprocessError(.corrupt, objectName: name, detail: detail) }
        guard h.magic == CIPC_SEGMENT_MAGIC else {
            throw InterprocessError(.incompatible, objectName: name, detail: "not an Interprocess segment (no IPCSEGMT magic)")
        }
        guard h.version == CIPC_LAYOUT_VERSION else {
            throw InterprocessError(.incompatible, objectName: name, detail: "layout version \(h.version); this library reads version \(CIPC_LAYOUT_VERSION)")
        }
        guard h.header_size == CIPC_HEADER_SIZE, h.payload_offset == UInt64(CIPC_HEADER_SIZE) else {
            throw corrupt("header size \(h.header_size) / payload offset \(h.payload_offset), expected \(CIPC_HEADER_SIZE)")
        }
        guard h.total_size == UInt64(fileSize) else {
            throw corrupt("header says \(h.total_size) bytes but the file has \(fileSize)")
        }
        guard h.payload_size > 0, h.payload_size == h.total_size - h.payload_offset else {
            throw corrupt("payload size \(h.payload_size) does not match total size \(h.total_size)")
        }
        guard h.holder_capacity == CIPC_HOLDER_CAPACITY else { throw corrupt("holder capacity \(h.holder_capacity)") }
        guard h.name_length <= CIPC_NAME_CAPACITY else { throw corrupt("name length \(h.name_length)") }
        guard Lifetime(code: h.lifetime) != nil else { throw corrupt("unknown lifetime code \(h.lifetime)") }
        guard SegmentState(rawValue: state) != nil else { throw corrupt("unknown state \(state)") }
        guard h.checksum == Self.checksum(of: raw) else { throw corrupt("header checksum mismatch (the header was overwritten)") }
        guard self.name == name else { throw corrupt("the header names the segment '\(self.name)'") }
        if let expectedKind, h.kind != expectedKind.rawValue {
            throw InterprocessError(.incompatible, objectName: name, detail: "it is a \(SegmentKind(rawValue: h.kind)) segment, not \(expectedKind)")
        }
    }
}
