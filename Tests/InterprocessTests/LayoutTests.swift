#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import CInterprocess
import Interprocess

/// The layouts of everything that lives in shared memory, pinned field by field.
///
/// The C structs in `Sources/CInterprocess/include/CInterprocess.h` are the one definition of each
/// layout: the library reaches every field through them (`MemoryLayout.offset(of:)`), and programs
/// in other languages read them. These pins make a change to a layout deliberate: a field that moves
/// (or a new one) fails here until the pin, the layout version or tag, and the README's tables
/// ("Reading a segment from another language") are changed with it. The README's tables are checked
/// against the same pins: **the README must change with the header**.
@Suite("Shared layouts")
struct LayoutTests {
    @Test(arguments: LayoutPin.all)
    func everyFieldIsPinned(_ layout: LayoutPin) {
        #expect(layout.actualSize == layout.size, "size of \(layout.name)")
        #expect(layout.actualAlignment == layout.alignment, "alignment of \(layout.name)")
        for field in layout.fields {
            #expect(field.actualOffset == field.offset, "offset of \(layout.name).\(field.name)")
            #expect(field.actualSize == field.size, "size of \(layout.name).\(field.name)")
        }
        // Every field of the struct has a pin, in order, and the pins tile the struct.
        #expect(layout.fields.map(\.name) == layout.declaredFields, "the fields of \(layout.name)")
        var end = 0
        for field in layout.fields.sorted(by: { $0.offset < $1.offset }) {
            #expect(field.offset >= end, "\(layout.name).\(field.name) overlaps the field before it")
            end = field.offset + field.size
        }
        #expect(end == layout.size, "\(layout.name)'s fields end at \(end), not at its size")
    }

    @Test func constantsArePinned() {
        #expect(CIPC_SEGMENT_MAGIC == 0x544D_4745_5343_5049) // "IPCSEGMT"
        #expect(CIPC_LAYOUT_VERSION == 1)
        #expect(CIPC_HEADER_SIZE == 4096 && CIPC_NAME_CAPACITY == 256 && CIPC_HOLDER_CAPACITY == 64)
        #expect(SharedMemory.payloadOffset == 4096)
        #expect([CIPC_KIND_RAW, CIPC_KIND_HEAP, CIPC_KIND_CHANNEL, CIPC_KIND_BROADCAST, CIPC_KIND_MQUEUE] == [1, 2, 3, 4, 5])
        #expect([CIPC_KIND_MUTEX, CIPC_KIND_SEMAPHORE, CIPC_KIND_EVENT, CIPC_KIND_CONDITION, CIPC_KIND_RWLOCK, CIPC_KIND_VARIABLE, CIPC_KIND_ATOMIC,
            CIPC_KIND_WATCHED_VALUE] == [16, 17, 18, 19, 20, 21, 22, 23])
        #expect(CIPC_PLACEMENT_CAPACITY == 24 && CIPC_PLACEMENT_NAME_CAPACITY == 32 && CIPC_PLACEMENT_FORMAT == 1)
        #expect(Self.ascii(CIPC_TAG_STORED_VALUE) == "VAL1" && Self.ascii(CIPC_TAG_ATOMIC) == "ATM1")
        let tags = [CIPC_TAG_MUTEX, CIPC_TAG_SEMAPHORE, CIPC_TAG_EVENT, CIPC_TAG_CONDITION, CIPC_TAG_RWLOCK, CIPC_TAG_VARIABLE]
        #expect(tags.map(Self.ascii) == ["MTX1", "SEM1", "EVT1", "CND1", "RLW1", "VAR2"])
        #expect(Self.ascii(CIPC_TAG_VARIABLE_V1) == "VAR1")
        #expect(CIPC_RWLOCK_READERS == 32 && CIPC_RWLOCK_SIZE == 576)
        #expect(CIPC_VARIABLE_READERS == 16 && CIPC_VARIABLE_HEADER_SIZE == 448)
        #expect(CIPC_TYPE_NAME_CAPACITY == 104 && CIPC_TYPE_NAME_MAX == 4096)
        #expect(CIPC_TOKEN_FLAG == 0x8000_0000 && CIPC_TOKEN_LOCK_BASE == 1 << 62)
        #expect(Self.ascii(CIPC_TAG_HEAP) == "HEP1" && Self.ascii(CIPC_TAG_HEAP_STORE) == "HST1" && CIPC_HEAP_VERSION == 3)
        #expect(CIPC_HEAP_ENDED_CLIENT == 0xFF && CIPC_HEAP_ENDED_CLIENT >= CIPC_HEAP_CLIENTS)
        #expect(Self.ascii(CIPC_HEAP_FREE) == "FREE" && Self.ascii(CIPC_HEAP_QUICK) == "QUCK" && Self.ascii(CIPC_HEAP_END) == "END ")
        #expect(Self.ascii(CIPC_HEAP_CACHED) == "CACH" && Self.ascii(CIPC_HEAP_CACHE_RECORD) == "CREC")
        #expect(CIPC_HEAP_IN_USE == 0x8000_0000 && CIPC_HEAP_TAG_MASK == 0xFF_FFFF && CIPC_HEAP_HEADER_OFFSET == 64)
        #expect(CIPC_HEAP_GRANULE == 16 && CIPC_HEAP_MIN_BLOCK == 2 && CIPC_HEAP_QUICK_LIMIT == 32 && CIPC_HEAP_CLASSES == 248)
        #expect(CIPC_HEAP_MAX_STORES == 64 && CIPC_HEAP_CLIENTS == 64 && CIPC_HEAP_JOURNAL_CAPACITY == 48)
        #expect(CIPC_HEAP_REF_STORE_SHIFT == 48 && CIPC_HEAP_POINTER_STORE_SHIFT == 34 && CIPC_HEAP_POINTER_TAG_SHIFT == 40)
        #expect(Self.ascii(CIPC_TAG_CHANNEL) == "CHN2" && Self.ascii(CIPC_TAG_CHANNEL_V1) == "CHN1")
        #expect(Self.ascii(CIPC_TAG_BROADCAST) == "BCS2" && Self.ascii(CIPC_TAG_BROADCAST_V1) == "BCS1")
        #expect(CIPC_BROADCAST_HEADER_SIZE == 512 && CIPC_BROADCAST_SLOT_HEADER_SIZE == 16 && CIPC_BROADCAST_SUBSCRIBER_SIZE == 64)
        #expect(CIPC_BROADCAST_CLOSED == 1 << 63 && CIPC_BROADCAST_BLOCK_PUBLISHER == 1 && CIPC_BROADCAST_DROP_OLDEST == 2)
        #expect(CIPC_BROADCAST_MAX_CAPACITY == 1 << 20 && CIPC_BROADCAST_MAX_MESSAGE_SIZE == 1 << 24 && CIPC_BROADCAST_MAX_SUBSCRIBERS == 4096)
        #expect(CIPC_CHANNEL_HEADER_SIZE == 512 && CIPC_CHANNEL_SLOT_HEADER_SIZE == 32)
        #expect(CIPC_CHANNEL_CLOSED == 1 << 63 && CIPC_CHANNEL_ORPHAN == 1 && CIPC_CHANNEL_SKIPPED == UInt32.max)
        #expect([CIPC_CHANNEL_FORMAT_BYTES, CIPC_CHANNEL_FORMAT_VALUE, CIPC_CHANNEL_FORMAT_JSON, CIPC_CHANNEL_FORMAT_TEXT] == [1, 2, 3, 4])
        #expect(CIPC_CHANNEL_MAX_CAPACITY == 1 << 20 && CIPC_CHANNEL_MAX_MESSAGE_SIZE == 1 << 24)
        #expect(CIPC_CHANNEL_LOANED == 1 << 31 && CIPC_CHANNEL_MAX_LOAN_SIZE == (1 << 31) - 2)
        #expect(CIPC_CHANNEL_PARTICIPANTS == 64 && CIPC_CHANNEL_PARTICIPANT_SIZE == 64)
        #expect(CIPC_CHANNEL_ROLE_SENDER == 1 && CIPC_CHANNEL_ROLE_RECEIVER == 2)
        #expect(CIPC_KIND_MQUEUE == 5 && Self.ascii(CIPC_TAG_MQUEUE) == "MSQ1")
        #expect(CIPC_MQUEUE_HEADER_SIZE == 512 && CIPC_MQUEUE_SLOT_HEADER_SIZE == 32)
        #expect(CIPC_MQUEUE_MAX_CAPACITY == 1 << 20 && CIPC_MQUEUE_MAX_MESSAGE_SIZE == 1 << 24)
        #expect([CIPC_MQUEUE_FREE, CIPC_MQUEUE_WRITING, CIPC_MQUEUE_READY, CIPC_MQUEUE_READING] == [0, 1, 2, 3])
        #expect(Self.ascii(CIPC_TAG_SERVICE) == "SRV3" && Self.ascii(CIPC_TAG_SERVICE_V2) == "SRV2" && Self.ascii(CIPC_TAG_SERVICE_V1) == "SRV1" && CIPC_KIND_SERVICE == 6)
        #expect(CIPC_SERVICE_HEADER_SIZE == 512 && CIPC_SERVICE_SLOT_HEADER_SIZE == 64 && CIPC_SERVICE_REQUEST_HEADER_SIZE == 16)
        #expect(CIPC_SERVICE_MAX_SLOTS == 1 << 16 && CIPC_SERVICE_MAX_MESSAGE_SIZE == 1 << 24)
        // A service's table of participants (the channel's entries, after the reply slots) and its
        // armed readiness bits (the request queue's `descriptors_armed`).
        #expect(CIPC_SERVICE_PARTICIPANTS_SIZE == 64 * 64)
        #expect(Int(CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET) == Int(CIPC_SERVICE_HEADER_SIZE) + MemoryLayout<cipc_channel>.offset(of: \cipc_channel.descriptors_armed)!)
        #expect(CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET == 904)
        #expect([CIPC_SERVICE_FREE, CIPC_SERVICE_PENDING, CIPC_SERVICE_SERVING, CIPC_SERVICE_WRITING, CIPC_SERVICE_REPLIED,
                  CIPC_SERVICE_FAILED, CIPC_SERVICE_ABANDONED] == [0, 1, 2, 3, 4, 5, 6])
        // The public sizes come from the structs.
        #expect(ProcessMutex.stateSize == 64 && ProcessSemaphore.stateSize == 64)
        #expect(ProcessEvent.stateSize == 64 && ProcessCondition.stateSize == 64)
        #expect(ProcessRWLock.stateSize == 576)
        #expect(SharedVariable<UInt64>.stateSize == 456)
        #expect(SharedAtomic<Int64>.stateSize == 192 && SharedAtomic<UInt32>.stateSize == 192)
        #expect(Self.ascii(CIPC_TAG_VALUE_FRAME) == "VFR1" && Self.ascii(CIPC_TAG_WATCHED_VALUE) == "WCH1")
        #expect(CIPC_VALUE_FRAME_HEADER_SIZE == 128 && CIPC_WATCHED_VALUE_HEADER_SIZE == 320 && CIPC_VALUE_FORMAT_JSON == 1)
        // A frame's extent: the header and two slots of the capacity rounded up to 8.
        #expect(SharedMemory.storageSize(capacity: 0) == 128 && SharedMemory.storageSize(capacity: 5) == 144)
        #expect(SharedMemory.storageSize(capacity: 4096) == 128 + 8192)
    }

    /// Each kind has its own number and name, and the library knows every one of them.
    @Test func segmentKindsAreDistinctAndKnown() {
        let kinds: [(SegmentKind, String)] = [
            (.raw, "raw"), (.heap, "heap"), (.channel, "channel"), (.broadcast, "broadcast"), (.messageQueue, "mqueue"), (.service, "service"), (.mutex, "mutex"), (.semaphore, "semaphore"),
            (.event, "event"), (.condition, "condition"), (.rwLock, "rwlock"), (.variable, "variable"), (.atomic, "atomic"),
            (.watchedValue, "watched"),
        ]
        #expect(Set(kinds.map(\.0.rawValue)).count == kinds.count)
        for (kind, name) in kinds {
            #expect(kind.isKnown && kind.description == name)
        }
        #expect(!SegmentKind(rawValue: 99).isKnown && SegmentKind(rawValue: 99).description == "unknown(99)")
    }

    /// The README's layout tables (for programs in other languages) say exactly what the header says.
    @Test func readmeTablesMatchTheHeader() throws {
        let readme = try String(contentsOf: Self.readmeURL, encoding: .utf8)
        let tables = Self.layoutTables(in: readme)
        #expect(Set(tables.keys) == ["cipc_segment_header", "cipc_holder_slot", "cipc_type_fingerprint", "cipc_placement_table", "cipc_placement", "cipc_mqueue", "cipc_mqueue_slot", "cipc_value_frame"], "\(tables.keys)")
        for (name, rows) in tables {
            guard let layout = LayoutPin.all.first(where: { $0.name == name }) else {
                Issue.record("the README documents \(name), which is not a pinned layout")
                continue
            }
            let documented = rows.map { "\($0.field) @\($0.offset) +\($0.size)" }
            let pinned = layout.fields.map { "\($0.name) @\($0.offset) +\($0.size)" }
            #expect(documented == pinned, "README table of \(name)")
        }
    }

    // MARK: Helpers

    static func ascii(_ tag: UInt32) -> String {
        String(decoding: withUnsafeBytes(of: tag.littleEndian) { Array($0) }, as: UTF8.self)
    }

    static var readmeURL: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
    }

    /// The tables of the README whose third column is headed by a struct name in backticks:
    /// `| offset | size | \`cipc_…\` field | meaning |`, one row per field (`| 0 | 8 | \`magic\` | … |`).
    static func layoutTables(in text: String) -> [String: [(offset: Int, size: Int, field: String)]] {
        var tables: [String: [(offset: Int, size: Int, field: String)]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard line.hasPrefix("|"), cells.count >= 5 else {
                current = nil
                continue
            }
            if cells[1] == "offset", let name = backticked(cells[3]), name.hasPrefix("cipc_") {
                current = name
                tables[name] = []
                continue
            }
            guard let table = current, let offset = Int(cells[1]), let size = Int(cells[2]), let field = backticked(cells[3]) else { continue }
            tables[table]?.append((offset, size, field))
        }
        return tables
    }

    private static func backticked(_ cell: String) -> String? {
        guard let start = cell.firstIndex(of: "`"), let end = cell[cell.index(after: start)...].firstIndex(of: "`") else { return nil }
        return String(cell[cell.index(after: start)..<end])
    }
}

/// A pinned field: its name in C, its offset and its size in bytes.
struct FieldPin: Sendable {
    let name: String
    let offset: Int
    let size: Int
    let actualOffset: Int?
    let actualSize: Int

    init<Layout, Field>(_ path: KeyPath<Layout, Field>, _ name: String, at offset: Int, size: Int) {
        self.name = name
        self.offset = offset
        self.size = size
        actualOffset = MemoryLayout<Layout>.offset(of: path)
        actualSize = MemoryLayout<Field>.size
    }
}

/// A pinned C struct: its size, its alignment and every field.
struct LayoutPin: Sendable, CustomTestStringConvertible {
    let name: String
    let size: Int
    let alignment: Int
    let fields: [FieldPin]
    let actualSize: Int
    let actualAlignment: Int
    /// The struct's fields in declaration order, as the compiler imported them.
    let declaredFields: [String]

    var testDescription: String { name }

    init<Layout>(_ empty: Layout, _ name: String, size: Int, alignment: Int, _ fields: [FieldPin]) {
        self.name = name
        self.size = size
        self.alignment = alignment
        self.fields = fields
        actualSize = MemoryLayout<Layout>.size
        actualAlignment = MemoryLayout<Layout>.alignment
        declaredFields = Mirror(reflecting: empty).children.compactMap(\.label)
    }

    static let all: [LayoutPin] = [
        LayoutPin(cipc_segment_header(), "cipc_segment_header", size: 4096, alignment: 8, [
            FieldPin(\cipc_segment_header.magic, "magic", at: 0, size: 8),
            FieldPin(\cipc_segment_header.version, "version", at: 8, size: 4),
            FieldPin(\cipc_segment_header.header_size, "header_size", at: 12, size: 4),
            FieldPin(\cipc_segment_header.kind, "kind", at: 16, size: 4),
            FieldPin(\cipc_segment_header.lifetime, "lifetime", at: 20, size: 4),
            FieldPin(\cipc_segment_header.state, "state", at: 24, size: 4),
            FieldPin(\cipc_segment_header.holder_capacity, "holder_capacity", at: 28, size: 4),
            FieldPin(\cipc_segment_header.total_size, "total_size", at: 32, size: 8),
            FieldPin(\cipc_segment_header.payload_offset, "payload_offset", at: 40, size: 8),
            FieldPin(\cipc_segment_header.payload_size, "payload_size", at: 48, size: 8),
            FieldPin(\cipc_segment_header.created_ns, "created_ns", at: 56, size: 8),
            FieldPin(\cipc_segment_header.creator_start_time, "creator_start_time", at: 64, size: 8),
            FieldPin(\cipc_segment_header.creator_pid, "creator_pid", at: 72, size: 4),
            FieldPin(\cipc_segment_header.name_length, "name_length", at: 76, size: 4),
            FieldPin(\cipc_segment_header.checksum, "checksum", at: 80, size: 8),
            FieldPin(\cipc_segment_header.name, "name", at: 88, size: 256),
            FieldPin(\cipc_segment_header.reserved, "reserved", at: 344, size: 40),
            FieldPin(\cipc_segment_header.placements, "placements", at: 384, size: 1664),
            FieldPin(\cipc_segment_header.holders, "holders", at: 2048, size: 2048),
        ]),
        LayoutPin(cipc_placement_table(), "cipc_placement_table", size: 1664, alignment: 8, [
            FieldPin(\cipc_placement_table.lock, "lock", at: 0, size: 64),
            FieldPin(\cipc_placement_table.format, "format", at: 64, size: 4),
            FieldPin(\cipc_placement_table.capacity, "capacity", at: 68, size: 4),
            FieldPin(\cipc_placement_table.reserved, "reserved", at: 72, size: 56),
            FieldPin(\cipc_placement_table.entries, "entries", at: 128, size: 1536),
        ]),
        LayoutPin(cipc_placement(), "cipc_placement", size: 64, alignment: 8, [
            FieldPin(\cipc_placement.offset, "offset", at: 0, size: 8),
            FieldPin(\cipc_placement.size, "size", at: 8, size: 8),
            FieldPin(\cipc_placement.state, "state", at: 16, size: 4),
            FieldPin(\cipc_placement.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_placement.name_length, "name_length", at: 24, size: 4),
            FieldPin(\cipc_placement.tag_offset, "tag_offset", at: 28, size: 4),
            FieldPin(\cipc_placement.name, "name", at: 32, size: 32),
        ]),
        LayoutPin(cipc_atomic(), "cipc_atomic", size: 192, alignment: 8, [
            FieldPin(\cipc_atomic.value, "value", at: 0, size: 8),
            FieldPin(\cipc_atomic.value_size, "value_size", at: 8, size: 4),
            FieldPin(\cipc_atomic.reserved0, "reserved0", at: 12, size: 8),
            FieldPin(\cipc_atomic.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_atomic.reserved, "reserved", at: 24, size: 40),
            FieldPin(\cipc_atomic.value_type, "value_type", at: 64, size: 128),
        ]),
        LayoutPin(cipc_holder_slot(), "cipc_holder_slot", size: 32, alignment: 8, [
            FieldPin(\cipc_holder_slot.pid, "pid", at: 0, size: 4),
            FieldPin(\cipc_holder_slot.reserved0, "reserved0", at: 4, size: 4),
            FieldPin(\cipc_holder_slot.start_time, "start_time", at: 8, size: 8),
            FieldPin(\cipc_holder_slot.opened_ns, "opened_ns", at: 16, size: 8),
            FieldPin(\cipc_holder_slot.reserved1, "reserved1", at: 24, size: 8),
        ]),
        LayoutPin(cipc_type_fingerprint(), "cipc_type_fingerprint", size: 128, alignment: 8, [
            FieldPin(\cipc_type_fingerprint.name_hash, "name_hash", at: 0, size: 8),
            FieldPin(\cipc_type_fingerprint.size, "size", at: 8, size: 4),
            FieldPin(\cipc_type_fingerprint.alignment, "alignment", at: 12, size: 4),
            FieldPin(\cipc_type_fingerprint.version, "version", at: 16, size: 4),
            FieldPin(\cipc_type_fingerprint.name_length, "name_length", at: 20, size: 4),
            FieldPin(\cipc_type_fingerprint.name, "name", at: 24, size: 104),
        ]),
        LayoutPin(cipc_mutex(), "cipc_mutex", size: 64, alignment: 8, [
            FieldPin(\cipc_mutex.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_mutex.waiters, "waiters", at: 8, size: 4),
            FieldPin(\cipc_mutex.inconsistent, "inconsistent", at: 12, size: 4),
            FieldPin(\cipc_mutex.owner_tid, "owner_tid", at: 16, size: 4),
            FieldPin(\cipc_mutex.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_mutex.recoveries, "recoveries", at: 24, size: 8),
            FieldPin(\cipc_mutex.reserved, "reserved", at: 32, size: 32),
        ]),
        LayoutPin(cipc_semaphore(), "cipc_semaphore", size: 64, alignment: 4, [
            FieldPin(\cipc_semaphore.count, "count", at: 0, size: 4),
            FieldPin(\cipc_semaphore.waiters, "waiters", at: 4, size: 4),
            FieldPin(\cipc_semaphore.reserved0, "reserved0", at: 8, size: 12),
            FieldPin(\cipc_semaphore.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_semaphore.reserved, "reserved", at: 24, size: 40),
        ]),
        LayoutPin(cipc_event(), "cipc_event", size: 64, alignment: 4, [
            FieldPin(\cipc_event.state, "state", at: 0, size: 4),
            FieldPin(\cipc_event.waiters, "waiters", at: 4, size: 4),
            FieldPin(\cipc_event.mode, "mode", at: 8, size: 4),
            FieldPin(\cipc_event.reserved0, "reserved0", at: 12, size: 8),
            FieldPin(\cipc_event.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_event.reserved, "reserved", at: 24, size: 40),
        ]),
        LayoutPin(cipc_condition(), "cipc_condition", size: 64, alignment: 4, [
            FieldPin(\cipc_condition.sequence, "sequence", at: 0, size: 4),
            FieldPin(\cipc_condition.waiters, "waiters", at: 4, size: 4),
            FieldPin(\cipc_condition.reserved0, "reserved0", at: 8, size: 12),
            FieldPin(\cipc_condition.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_condition.reserved, "reserved", at: 24, size: 40),
        ]),
        LayoutPin(cipc_rwlock_reader(), "cipc_rwlock_reader", size: 16, alignment: 8, [
            FieldPin(\cipc_rwlock_reader.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_rwlock_reader.holds, "holds", at: 8, size: 4),
            FieldPin(\cipc_rwlock_reader.reserved, "reserved", at: 12, size: 4),
        ]),
        LayoutPin(cipc_rwlock(), "cipc_rwlock", size: 576, alignment: 8, [
            FieldPin(\cipc_rwlock.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_rwlock.drain, "drain", at: 8, size: 4),
            FieldPin(\cipc_rwlock.waiters, "waiters", at: 12, size: 4),
            FieldPin(\cipc_rwlock.drain_waiters, "drain_waiters", at: 16, size: 4),
            FieldPin(\cipc_rwlock.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_rwlock.recoveries, "recoveries", at: 24, size: 8),
            FieldPin(\cipc_rwlock.write_held, "write_held", at: 32, size: 4),
            FieldPin(\cipc_rwlock.inconsistent, "inconsistent", at: 36, size: 4),
            FieldPin(\cipc_rwlock.overflow, "overflow", at: 40, size: 4),
            FieldPin(\cipc_rwlock.reader_capacity, "reader_capacity", at: 44, size: 4),
            FieldPin(\cipc_rwlock.reader_recoveries, "reader_recoveries", at: 48, size: 8),
            FieldPin(\cipc_rwlock.state_size, "state_size", at: 56, size: 4),
            FieldPin(\cipc_rwlock.reserved, "reserved", at: 60, size: 4),
            FieldPin(\cipc_rwlock.readers, "readers", at: 64, size: 512),
        ]),
        LayoutPin(cipc_variable_reader(), "cipc_variable_reader", size: 16, alignment: 8, [
            FieldPin(\cipc_variable_reader.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_variable_reader.since, "since", at: 8, size: 8),
        ]),
        LayoutPin(cipc_variable_header(), "cipc_variable_header", size: 448, alignment: 8, [
            FieldPin(\cipc_variable_header.state, "state", at: 0, size: 8),
            FieldPin(\cipc_variable_header.waiters, "waiters", at: 8, size: 4),
            FieldPin(\cipc_variable_header.value_size, "value_size", at: 12, size: 4),
            FieldPin(\cipc_variable_header.value_alignment, "value_alignment", at: 16, size: 4),
            FieldPin(\cipc_variable_header.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_variable_header.putter, "putter", at: 24, size: 8),
            FieldPin(\cipc_variable_header.registered_readers, "registered_readers", at: 32, size: 4),
            FieldPin(\cipc_variable_header.reader_capacity, "reader_capacity", at: 36, size: 4),
            FieldPin(\cipc_variable_header.value_offset, "value_offset", at: 40, size: 4),
            FieldPin(\cipc_variable_header.reserved0, "reserved0", at: 44, size: 4),
            FieldPin(\cipc_variable_header.recoveries, "recoveries", at: 48, size: 8),
            FieldPin(\cipc_variable_header.reserved1, "reserved1", at: 56, size: 8),
            FieldPin(\cipc_variable_header.readers, "readers", at: 64, size: 256),
            FieldPin(\cipc_variable_header.value_type, "value_type", at: 320, size: 128),
        ]),
        // Stored values (CInterprocessValue.h).
        LayoutPin(cipc_value_frame(), "cipc_value_frame", size: 128, alignment: 8, [
            FieldPin(\cipc_value_frame.writer, "writer", at: 0, size: 64),
            FieldPin(\cipc_value_frame.sequence, "sequence", at: 64, size: 8),
            FieldPin(\cipc_value_frame.waiters, "waiters", at: 72, size: 4),
            FieldPin(\cipc_value_frame.tag, "tag", at: 76, size: 4),
            FieldPin(\cipc_value_frame.slot_capacity, "slot_capacity", at: 80, size: 8),
            FieldPin(\cipc_value_frame.length, "length", at: 88, size: 16),
            FieldPin(\cipc_value_frame.recoveries, "recoveries", at: 104, size: 8),
            FieldPin(\cipc_value_frame.reserved, "reserved", at: 112, size: 16),
        ]),
        LayoutPin(cipc_watched_value(), "cipc_watched_value", size: 320, alignment: 8, [
            FieldPin(\cipc_watched_value.format, "format", at: 0, size: 4),
            FieldPin(\cipc_watched_value.reserved0, "reserved0", at: 4, size: 16),
            FieldPin(\cipc_watched_value.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_watched_value.reserved1, "reserved1", at: 24, size: 40),
            FieldPin(\cipc_watched_value.value_type, "value_type", at: 64, size: 128),
            FieldPin(\cipc_watched_value.frame, "frame", at: 192, size: 128),
        ]),
        LayoutPin(cipc_channel_slot(), "cipc_channel_slot", size: 32, alignment: 8, [
            FieldPin(\cipc_channel_slot.sequence, "sequence", at: 0, size: 8),
            FieldPin(\cipc_channel_slot.owner, "owner", at: 8, size: 8),
            FieldPin(\cipc_channel_slot.length, "length", at: 16, size: 4),
            FieldPin(\cipc_channel_slot.reserved0, "reserved0", at: 20, size: 4),
            FieldPin(\cipc_channel_slot.loan, "loan", at: 24, size: 8),
        ]),
        LayoutPin(cipc_channel(), "cipc_channel", size: 512, alignment: 8, [
            FieldPin(\cipc_channel.capacity, "capacity", at: 0, size: 4),
            FieldPin(\cipc_channel.max_message_size, "max_message_size", at: 4, size: 4),
            FieldPin(\cipc_channel.slot_stride, "slot_stride", at: 8, size: 4),
            FieldPin(\cipc_channel.slots_offset, "slots_offset", at: 12, size: 4),
            FieldPin(\cipc_channel.format, "format", at: 16, size: 4),
            FieldPin(\cipc_channel.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_channel.state_size, "state_size", at: 24, size: 8),
            FieldPin(\cipc_channel.loan_heap_nonce, "loan_heap_nonce", at: 32, size: 8),
            FieldPin(\cipc_channel.exclusive_sender, "exclusive_sender", at: 40, size: 8),
            FieldPin(\cipc_channel.exclusive_receiver, "exclusive_receiver", at: 48, size: 8),
            FieldPin(\cipc_channel.reserved0, "reserved0", at: 56, size: 8),
            FieldPin(\cipc_channel.orphans, "orphans", at: 64, size: 4),
            FieldPin(\cipc_channel.reserved1, "reserved1", at: 68, size: 4),
            FieldPin(\cipc_channel.abandoned_sends, "abandoned_sends", at: 72, size: 8),
            FieldPin(\cipc_channel.orphaned_receives, "orphaned_receives", at: 80, size: 8),
            FieldPin(\cipc_channel.redeliveries, "redeliveries", at: 88, size: 8),
            FieldPin(\cipc_channel.cleared_claims, "cleared_claims", at: 96, size: 8),
            FieldPin(\cipc_channel.dropped_messages, "dropped_messages", at: 104, size: 8),
            FieldPin(\cipc_channel.reserved2, "reserved2", at: 112, size: 16),
            FieldPin(\cipc_channel.message_type, "message_type", at: 128, size: 128),
            FieldPin(\cipc_channel.send_position, "send_position", at: 256, size: 8),
            FieldPin(\cipc_channel.exclusive_position, "exclusive_position", at: 264, size: 8),
            FieldPin(\cipc_channel.reserved3, "reserved3", at: 272, size: 48),
            FieldPin(\cipc_channel.receive_position, "receive_position", at: 320, size: 8),
            FieldPin(\cipc_channel.reserved4, "reserved4", at: 328, size: 56),
            FieldPin(\cipc_channel.receive_signal, "receive_signal", at: 384, size: 4),
            FieldPin(\cipc_channel.receivers_waiting, "receivers_waiting", at: 388, size: 4),
            FieldPin(\cipc_channel.descriptors_armed, "descriptors_armed", at: 392, size: 8),
            FieldPin(\cipc_channel.reserved5, "reserved5", at: 400, size: 48),
            FieldPin(\cipc_channel.send_signal, "send_signal", at: 448, size: 4),
            FieldPin(\cipc_channel.senders_waiting, "senders_waiting", at: 452, size: 4),
            FieldPin(\cipc_channel.reserved6, "reserved6", at: 456, size: 56),
        ]),
        LayoutPin(cipc_channel_participant(), "cipc_channel_participant", size: 64, alignment: 8, [
            FieldPin(\cipc_channel_participant.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_channel_participant.roles, "roles", at: 8, size: 4),
            FieldPin(\cipc_channel_participant.handles, "handles", at: 12, size: 4),
            FieldPin(\cipc_channel_participant.notifier, "notifier", at: 16, size: 8),
            FieldPin(\cipc_channel_participant.pokes, "pokes", at: 24, size: 8),
            FieldPin(\cipc_channel_participant.receivers_waiting, "receivers_waiting", at: 32, size: 4),
            FieldPin(\cipc_channel_participant.senders_waiting, "senders_waiting", at: 36, size: 4),
            FieldPin(\cipc_channel_participant.reserved, "reserved", at: 40, size: 24),
        ]),
        // The message queue (CInterprocessMessageQueue.h).
        LayoutPin(cipc_mqueue_slot(), "cipc_mqueue_slot", size: 32, alignment: 8, [
            FieldPin(\cipc_mqueue_slot.state, "state", at: 0, size: 4),
            FieldPin(\cipc_mqueue_slot.length, "length", at: 4, size: 4),
            FieldPin(\cipc_mqueue_slot.owner, "owner", at: 8, size: 8),
            FieldPin(\cipc_mqueue_slot.sequence, "sequence", at: 16, size: 8),
            FieldPin(\cipc_mqueue_slot.priority, "priority", at: 24, size: 4),
            FieldPin(\cipc_mqueue_slot.reserved, "reserved", at: 28, size: 4),
        ]),
        LayoutPin(cipc_mqueue(), "cipc_mqueue", size: 512, alignment: 8, [
            FieldPin(\cipc_mqueue.capacity, "capacity", at: 0, size: 4),
            FieldPin(\cipc_mqueue.max_message_size, "max_message_size", at: 4, size: 4),
            FieldPin(\cipc_mqueue.slot_stride, "slot_stride", at: 8, size: 4),
            FieldPin(\cipc_mqueue.slots_offset, "slots_offset", at: 12, size: 4),
            FieldPin(\cipc_mqueue.format, "format", at: 16, size: 4),
            FieldPin(\cipc_mqueue.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_mqueue.state_size, "state_size", at: 24, size: 8),
            FieldPin(\cipc_mqueue.ready_offset, "ready_offset", at: 32, size: 4),
            FieldPin(\cipc_mqueue.free_offset, "free_offset", at: 36, size: 4),
            FieldPin(\cipc_mqueue.reserved0, "reserved0", at: 40, size: 24),
            FieldPin(\cipc_mqueue.rebuilds, "rebuilds", at: 64, size: 8),
            FieldPin(\cipc_mqueue.abandoned_sends, "abandoned_sends", at: 72, size: 8),
            FieldPin(\cipc_mqueue.redeliveries, "redeliveries", at: 80, size: 8),
            FieldPin(\cipc_mqueue.dropped_messages, "dropped_messages", at: 88, size: 8),
            FieldPin(\cipc_mqueue.reserved1, "reserved1", at: 96, size: 32),
            FieldPin(\cipc_mqueue.message_type, "message_type", at: 128, size: 128),
            FieldPin(\cipc_mqueue.lock, "lock", at: 256, size: 8),
            FieldPin(\cipc_mqueue.lock_waiters, "lock_waiters", at: 264, size: 4),
            FieldPin(\cipc_mqueue.closed, "closed", at: 268, size: 4),
            FieldPin(\cipc_mqueue.next_sequence, "next_sequence", at: 272, size: 8),
            FieldPin(\cipc_mqueue.ready_count, "ready_count", at: 280, size: 4),
            FieldPin(\cipc_mqueue.free_count, "free_count", at: 284, size: 4),
            FieldPin(\cipc_mqueue.sent, "sent", at: 288, size: 8),
            FieldPin(\cipc_mqueue.received, "received", at: 296, size: 8),
            FieldPin(\cipc_mqueue.top_priority, "top_priority", at: 304, size: 4),
            FieldPin(\cipc_mqueue.reserved2, "reserved2", at: 308, size: 12),
            FieldPin(\cipc_mqueue.receive_signal, "receive_signal", at: 320, size: 4),
            FieldPin(\cipc_mqueue.receivers_waiting, "receivers_waiting", at: 324, size: 4),
            FieldPin(\cipc_mqueue.descriptors_armed, "descriptors_armed", at: 328, size: 8),
            FieldPin(\cipc_mqueue.reserved3, "reserved3", at: 336, size: 48),
            FieldPin(\cipc_mqueue.send_signal, "send_signal", at: 384, size: 4),
            FieldPin(\cipc_mqueue.senders_waiting, "senders_waiting", at: 388, size: 4),
            FieldPin(\cipc_mqueue.reserved4, "reserved4", at: 392, size: 56),
            FieldPin(\cipc_mqueue.reserved5, "reserved5", at: 448, size: 64),
        ]),
        // The broadcast (CInterprocessBroadcast.h).
        LayoutPin(cipc_broadcast_slot(), "cipc_broadcast_slot", size: 16, alignment: 8, [
            FieldPin(\cipc_broadcast_slot.sequence, "sequence", at: 0, size: 8),
            FieldPin(\cipc_broadcast_slot.length, "length", at: 8, size: 4),
            FieldPin(\cipc_broadcast_slot.reserved, "reserved", at: 12, size: 4),
        ]),
        LayoutPin(cipc_broadcast_subscriber(), "cipc_broadcast_subscriber", size: 64, alignment: 8, [
            FieldPin(\cipc_broadcast_subscriber.owner, "owner", at: 0, size: 8),
            FieldPin(\cipc_broadcast_subscriber.position, "position", at: 8, size: 8),
            FieldPin(\cipc_broadcast_subscriber.missed, "missed", at: 16, size: 8),
            FieldPin(\cipc_broadcast_subscriber.received, "received", at: 24, size: 8),
            FieldPin(\cipc_broadcast_subscriber.notifier, "notifier", at: 32, size: 8),
            FieldPin(\cipc_broadcast_subscriber.pokes, "pokes", at: 40, size: 8),
            FieldPin(\cipc_broadcast_subscriber.armed, "armed", at: 48, size: 8),
            FieldPin(\cipc_broadcast_subscriber.reserved, "reserved", at: 56, size: 8),
        ]),
        LayoutPin(cipc_broadcast(), "cipc_broadcast", size: 512, alignment: 8, [
            FieldPin(\cipc_broadcast.capacity, "capacity", at: 0, size: 4),
            FieldPin(\cipc_broadcast.max_message_size, "max_message_size", at: 4, size: 4),
            FieldPin(\cipc_broadcast.slot_stride, "slot_stride", at: 8, size: 4),
            FieldPin(\cipc_broadcast.slots_offset, "slots_offset", at: 12, size: 4),
            FieldPin(\cipc_broadcast.format, "format", at: 16, size: 4),
            FieldPin(\cipc_broadcast.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_broadcast.state_size, "state_size", at: 24, size: 8),
            FieldPin(\cipc_broadcast.policy, "policy", at: 32, size: 4),
            FieldPin(\cipc_broadcast.max_subscribers, "max_subscribers", at: 36, size: 4),
            FieldPin(\cipc_broadcast.reserved0, "reserved0", at: 40, size: 24),
            FieldPin(\cipc_broadcast.subscribers_generation, "subscribers_generation", at: 64, size: 8),
            FieldPin(\cipc_broadcast.departed_subscribers, "departed_subscribers", at: 72, size: 8),
            FieldPin(\cipc_broadcast.completed_publishes, "completed_publishes", at: 80, size: 8),
            FieldPin(\cipc_broadcast.abandoned_publishes, "abandoned_publishes", at: 88, size: 8),
            FieldPin(\cipc_broadcast.dropped_messages, "dropped_messages", at: 96, size: 8),
            FieldPin(\cipc_broadcast.reserved1, "reserved1", at: 104, size: 24),
            FieldPin(\cipc_broadcast.message_type, "message_type", at: 128, size: 128),
            FieldPin(\cipc_broadcast.head, "head", at: 256, size: 8),
            FieldPin(\cipc_broadcast.publisher, "publisher", at: 264, size: 8),
            FieldPin(\cipc_broadcast.descriptors_armed, "descriptors_armed", at: 272, size: 8),
            FieldPin(\cipc_broadcast.reserved2, "reserved2", at: 280, size: 40),
            FieldPin(\cipc_broadcast.publish_signal, "publish_signal", at: 320, size: 4),
            FieldPin(\cipc_broadcast.subscribers_waiting, "subscribers_waiting", at: 324, size: 4),
            FieldPin(\cipc_broadcast.reserved3, "reserved3", at: 328, size: 56),
            FieldPin(\cipc_broadcast.space_signal, "space_signal", at: 384, size: 4),
            FieldPin(\cipc_broadcast.publishers_waiting, "publishers_waiting", at: 388, size: 4),
            FieldPin(\cipc_broadcast.reserved4, "reserved4", at: 392, size: 120),
        ]),
        // The service (CInterprocessService.h).
        LayoutPin(cipc_service_request(), "cipc_service_request", size: 16, alignment: 8, [
            FieldPin(\cipc_service_request.slot, "slot", at: 0, size: 4),
            FieldPin(\cipc_service_request.reserved, "reserved", at: 4, size: 4),
            FieldPin(\cipc_service_request.ticket, "ticket", at: 8, size: 8),
        ]),
        LayoutPin(cipc_service_slot(), "cipc_service_slot", size: 64, alignment: 8, [
            FieldPin(\cipc_service_slot.control, "control", at: 0, size: 8),
            FieldPin(\cipc_service_slot.server, "server", at: 8, size: 8),
            FieldPin(\cipc_service_slot.client, "client", at: 16, size: 8),
            FieldPin(\cipc_service_slot.signal, "signal", at: 24, size: 4),
            FieldPin(\cipc_service_slot.waiting, "waiting", at: 28, size: 4),
            FieldPin(\cipc_service_slot.length, "length", at: 32, size: 4),
            FieldPin(\cipc_service_slot.reserved0, "reserved0", at: 36, size: 4),
            FieldPin(\cipc_service_slot.reserved1, "reserved1", at: 40, size: 24),
        ]),
        LayoutPin(cipc_service(), "cipc_service", size: 512, alignment: 8, [
            FieldPin(\cipc_service.slot_count, "slot_count", at: 0, size: 4),
            FieldPin(\cipc_service.max_request_size, "max_request_size", at: 4, size: 4),
            FieldPin(\cipc_service.max_response_size, "max_response_size", at: 8, size: 4),
            FieldPin(\cipc_service.slot_stride, "slot_stride", at: 12, size: 4),
            FieldPin(\cipc_service.request_format, "request_format", at: 16, size: 4),
            FieldPin(\cipc_service.tag, "tag", at: 20, size: 4),
            FieldPin(\cipc_service.state_size, "state_size", at: 24, size: 8),
            FieldPin(\cipc_service.response_format, "response_format", at: 32, size: 4),
            FieldPin(\cipc_service.queue_offset, "queue_offset", at: 36, size: 4),
            FieldPin(\cipc_service.queue_size, "queue_size", at: 40, size: 8),
            FieldPin(\cipc_service.slots_offset, "slots_offset", at: 48, size: 8),
            FieldPin(\cipc_service.reserved0, "reserved0", at: 56, size: 8),
            FieldPin(\cipc_service.requests, "requests", at: 64, size: 8),
            FieldPin(\cipc_service.server_deaths, "server_deaths", at: 72, size: 8),
            FieldPin(\cipc_service.reclaimed_slots, "reclaimed_slots", at: 80, size: 8),
            FieldPin(\cipc_service.slot_signal, "slot_signal", at: 88, size: 4),
            FieldPin(\cipc_service.slot_waiters, "slot_waiters", at: 92, size: 4),
            FieldPin(\cipc_service.slot_hint, "slot_hint", at: 96, size: 4),
            FieldPin(\cipc_service.reserved1, "reserved1", at: 100, size: 28),
            FieldPin(\cipc_service.request_type, "request_type", at: 128, size: 128),
            FieldPin(\cipc_service.response_type, "response_type", at: 256, size: 128),
            FieldPin(\cipc_service.replies, "replies", at: 384, size: 8),
            FieldPin(\cipc_service.discarded_replies, "discarded_replies", at: 392, size: 8),
            FieldPin(\cipc_service.stale_requests, "stale_requests", at: 400, size: 8),
            FieldPin(\cipc_service.reserved2, "reserved2", at: 408, size: 104),
        ]),
        LayoutPin(cipc_futex_waiter(), "cipc_futex_waiter", size: 24, alignment: 8, [
            FieldPin(\cipc_futex_waiter.val, "val", at: 0, size: 8),
            FieldPin(\cipc_futex_waiter.uaddr, "uaddr", at: 8, size: 8),
            FieldPin(\cipc_futex_waiter.flags, "flags", at: 16, size: 4),
            FieldPin(\cipc_futex_waiter.reserved, "reserved", at: 20, size: 4),
        ]),
        // The shared heap (CInterprocessHeap.h).
        LayoutPin(cipc_heap_block(), "cipc_heap_block", size: 16, alignment: 4, [
            FieldPin(\cipc_heap_block.prev_size, "prev_size", at: 0, size: 4),
            FieldPin(\cipc_heap_block.size, "size", at: 4, size: 4),
            FieldPin(\cipc_heap_block.state, "state", at: 8, size: 4),
            FieldPin(\cipc_heap_block.info, "info", at: 12, size: 4),
        ]),
        LayoutPin(cipc_heap_free_block(), "cipc_heap_free_block", size: 32, alignment: 8, [
            FieldPin(\cipc_heap_free_block.header, "header", at: 0, size: 16),
            FieldPin(\cipc_heap_free_block.next, "next", at: 16, size: 8),
            FieldPin(\cipc_heap_free_block.prev, "prev", at: 24, size: 8),
        ]),
        LayoutPin(cipc_heap_store_header(), "cipc_heap_store_header", size: 64, alignment: 8, [
            FieldPin(\cipc_heap_store_header.tag, "tag", at: 0, size: 4),
            FieldPin(\cipc_heap_store_header.index, "index", at: 4, size: 4),
            FieldPin(\cipc_heap_store_header.nonce, "nonce", at: 8, size: 8),
            FieldPin(\cipc_heap_store_header.size, "size", at: 16, size: 8),
            FieldPin(\cipc_heap_store_header.first_block, "first_block", at: 24, size: 8),
            FieldPin(\cipc_heap_store_header.end_block, "end_block", at: 32, size: 8),
            FieldPin(\cipc_heap_store_header.reserved, "reserved", at: 40, size: 24),
        ]),
        LayoutPin(cipc_heap_client(), "cipc_heap_client", size: 16, alignment: 8, [
            FieldPin(\cipc_heap_client.token, "token", at: 0, size: 8),
            FieldPin(\cipc_heap_client.pid, "pid", at: 8, size: 4),
            FieldPin(\cipc_heap_client.caches, "caches", at: 12, size: 4),
        ]),
        LayoutPin(cipc_heap_cache(), "cipc_heap_cache", size: 256, alignment: 8, [
            FieldPin(\cipc_heap_cache.heads, "heads", at: 0, size: 256),
        ]),
        LayoutPin(cipc_heap_journal_entry(), "cipc_heap_journal_entry", size: 16, alignment: 8, [
            FieldPin(\cipc_heap_journal_entry.target, "target", at: 0, size: 8),
            FieldPin(\cipc_heap_journal_entry.old_value, "old_value", at: 8, size: 8),
        ]),
        LayoutPin(cipc_heap_journal(), "cipc_heap_journal", size: 784, alignment: 8, [
            FieldPin(\cipc_heap_journal.count, "count", at: 0, size: 4),
            FieldPin(\cipc_heap_journal.reserved, "reserved", at: 4, size: 4),
            FieldPin(\cipc_heap_journal.sequence, "sequence", at: 8, size: 8),
            FieldPin(\cipc_heap_journal.entries, "entries", at: 16, size: 768),
        ]),
        LayoutPin(cipc_heap_header(), "cipc_heap_header", size: 4304, alignment: 8, [
            FieldPin(\cipc_heap_header.tag, "tag", at: 0, size: 4),
            FieldPin(\cipc_heap_header.version, "version", at: 4, size: 4),
            FieldPin(\cipc_heap_header.nonce, "nonce", at: 8, size: 8),
            FieldPin(\cipc_heap_header.maximum_capacity, "maximum_capacity", at: 16, size: 8),
            FieldPin(\cipc_heap_header.capacity, "capacity", at: 24, size: 8),
            FieldPin(\cipc_heap_header.store_count, "store_count", at: 32, size: 4),
            FieldPin(\cipc_heap_header.next_tag, "next_tag", at: 36, size: 4),
            FieldPin(\cipc_heap_header.growth_size, "growth_size", at: 40, size: 8),
            FieldPin(\cipc_heap_header.recoveries, "recoveries", at: 48, size: 8),
            FieldPin(\cipc_heap_header.reserved0, "reserved0", at: 56, size: 8),
            FieldPin(\cipc_heap_header.lock, "lock", at: 64, size: 64),
            FieldPin(\cipc_heap_header.class_bitmap, "class_bitmap", at: 128, size: 32),
            FieldPin(\cipc_heap_header.directory, "directory", at: 160, size: 8),
            FieldPin(\cipc_heap_header.reserved1, "reserved1", at: 168, size: 24),
            FieldPin(\cipc_heap_header.quick_heads, "quick_heads", at: 192, size: 256),
            FieldPin(\cipc_heap_header.heads, "heads", at: 448, size: 2048),
            FieldPin(\cipc_heap_header.clients, "clients", at: 2496, size: 1024),
            FieldPin(\cipc_heap_header.journal, "journal", at: 3520, size: 784),
        ]),
        LayoutPin(cipc_heap_name(), "cipc_heap_name", size: 256, alignment: 8, [
            FieldPin(\cipc_heap_name.state, "state", at: 0, size: 4),
            FieldPin(\cipc_heap_name.name_length, "name_length", at: 4, size: 4),
            FieldPin(\cipc_heap_name.name_hash, "name_hash", at: 8, size: 8),
            FieldPin(\cipc_heap_name.object, "object", at: 16, size: 8),
            FieldPin(\cipc_heap_name.byte_count, "byte_count", at: 24, size: 8),
            FieldPin(\cipc_heap_name.name, "name", at: 32, size: 96),
            FieldPin(\cipc_heap_name.type, "type", at: 128, size: 128),
        ]),
        LayoutPin(cipc_heap_directory(), "cipc_heap_directory", size: 2112, alignment: 8, [
            FieldPin(\cipc_heap_directory.tag, "tag", at: 0, size: 4),
            FieldPin(\cipc_heap_directory.capacity, "capacity", at: 4, size: 4),
            FieldPin(\cipc_heap_directory.next, "next", at: 8, size: 8),
            FieldPin(\cipc_heap_directory.reserved, "reserved", at: 16, size: 48),
            FieldPin(\cipc_heap_directory.entries, "entries", at: 64, size: 2048),
        ]),
    ]
}
