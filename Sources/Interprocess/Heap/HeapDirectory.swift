import CInterprocess
import InterprocessSystem

// The directory of named objects (`cipc_heap_directory`, `cipc_heap_name` in CInterprocessHeap.h):
// what `SharedHeap.findOrCreate` / `find` / `destroy` do to the heap, under its lock and journal.
// See `SharedHeap+Names.swift` for what a kill at each step leaves behind.

extension HeapLayout {
    @inline(__always) static var heapDirectory: Int { MemoryLayout<cipc_heap_header>.offset(of: \cipc_heap_header.directory)! }

    @inline(__always) static var directorySize: Int { MemoryLayout<cipc_heap_directory>.size }
    @inline(__always) static var directoryTag: Int { MemoryLayout<cipc_heap_directory>.offset(of: \cipc_heap_directory.tag)! }
    @inline(__always) static var directoryCapacity: Int { MemoryLayout<cipc_heap_directory>.offset(of: \cipc_heap_directory.capacity)! }
    @inline(__always) static var directoryNext: Int { MemoryLayout<cipc_heap_directory>.offset(of: \cipc_heap_directory.next)! }
    @inline(__always) static var directoryEntries: Int { MemoryLayout<cipc_heap_directory>.offset(of: \cipc_heap_directory.entries)! }
    @inline(__always) static var directoryEntryCount: Int { Int(CIPC_HEAP_DIRECTORY_ENTRIES) }

    @inline(__always) static var nameStride: Int { MemoryLayout<cipc_heap_name>.stride }
    @inline(__always) static var nameState: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.state)! }
    @inline(__always) static var nameLength: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.name_length)! }
    @inline(__always) static var nameHash: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.name_hash)! }
    @inline(__always) static var nameObject: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.object)! }
    @inline(__always) static var nameByteCount: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.byte_count)! }
    @inline(__always) static var nameBytes: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.name)! }
    @inline(__always) static var nameType: Int { MemoryLayout<cipc_heap_name>.offset(of: \cipc_heap_name.type)! }
    @inline(__always) static var nameCapacity: Int { Int(CIPC_HEAP_NAME_CAPACITY) }
    @inline(__always) static var nameLive: UInt32 { CIPC_HEAP_NAME_LIVE }
}

/// One entry of the directory as this process addresses it.
struct DirectoryEntry {
    /// The entry's first byte, and its reference (for the journal).
    let place: HeapPlace
    /// The pointer word of the chunk that holds it.
    let chunk: UInt64
    let index: Int

    @inline(__always) func field(_ offset: Int) -> HeapPlace {
        HeapPlace(pointer: place.pointer + offset, ref: place.ref &+ UInt64(offset))
    }
}

/// A live entry, read and checked.
struct NamedEntry {
    let entry: DirectoryEntry
    let name: [UInt8]
    /// The object's pointer word, and whether it is a live block of the heap of `byteCount` bytes.
    let object: UInt64
    let byteCount: Int
    let objectIsLive: Bool
    let type: cipc_type_fingerprint
}

/// What a walk of the directory found.
struct DirectoryWalk {
    /// Every live entry, in directory order.
    var entries: [NamedEntry] = []
    /// The first free entry, if any.
    var free: DirectoryEntry?
    /// The word that would name a new chunk: the header's `directory` or the last chunk's `next`.
    var tail: HeapPlace
    /// The pointer words of the chunks.
    var chunks: [UInt64] = []
}

extension HeapCore {
    /// The name's UTF-8 bytes, checked: 1 to `CIPC_HEAP_NAME_CAPACITY` bytes, no NUL.
    func objectName(_ name: String) throws(InterprocessError) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= HeapLayout.nameCapacity, !bytes.contains(0) else {
            throw InterprocessError(
                .invalidName, objectName: self.name,
                detail: "a named object's name has 1 to \(HeapLayout.nameCapacity) bytes and no NUL, not '\(name)' (\(bytes.count) bytes)")
        }
        return bytes
    }

    /// The block of a directory chunk, checked: a live block of the heap that holds a chunk with
    /// its tag and capacity. Anything else is `corrupt`.
    func directoryChunk(_ word: UInt64) throws(InterprocessError) -> HeapBlock {
        let block: HeapBlock
        let size: UInt32
        do {
            (block, size, _) = try liveBlock(word)
        } catch where error.code == .invalidPointer {
            throw corrupt("the directory of named objects leads to 0x\(String(word, radix: 16)), which is not a live block")
        }
        let payload = block.pointer + HeapLayout.blockHeaderSize
        guard Int(size) * HeapLayout.granule - HeapLayout.blockHeaderSize >= HeapLayout.directorySize,
              load32(payload + HeapLayout.directoryTag) == CIPC_TAG_HEAP_DIRECTORY,
              load32(payload + HeapLayout.directoryCapacity) == CIPC_HEAP_DIRECTORY_ENTRIES
        else {
            throw corrupt("the directory of named objects leads to block at \(block.offset) of store \(block.store), which is not a directory chunk")
        }
        return block
    }

    /// Reads the entry `entry`: nil if it is free, else its checked contents. A state, name,
    /// hash or type that no creator could have written is `corrupt`; an object that is not a live
    /// block of `byte_count` bytes is reported in `objectIsLive` (the caller decides).
    func readEntry(_ entry: DirectoryEntry) throws(InterprocessError) -> NamedEntry? {
        let base = entry.place.pointer
        let state = load32(base + HeapLayout.nameState)
        if state == 0 { return nil }
        let at = "entry \(entry.index) of directory chunk 0x\(String(entry.chunk, radix: 16))"
        guard state == HeapLayout.nameLive else { throw corrupt("\(at) has state 0x\(String(state, radix: 16))") }
        let length = Int(load32(base + HeapLayout.nameLength))
        guard length >= 1, length <= HeapLayout.nameCapacity else { throw corrupt("\(at) has a name of \(length) bytes") }
        let stored = UnsafeRawBufferPointer(start: base + HeapLayout.nameBytes, count: HeapLayout.nameCapacity)
        let name = Array(stored[..<length])
        guard stored[length...].allSatisfy({ $0 == 0 }), !name.contains(0),
              TypeFingerprint.hash(name) == load64(base + HeapLayout.nameHash)
        else { throw corrupt("\(at) has a damaged name") }
        let type = (base + HeapLayout.nameType).loadUnaligned(as: cipc_type_fingerprint.self)
        if let problem = TypeFingerprint.problem(in: type) { throw corrupt("\(at) has a damaged type fingerprint (\(problem))") }
        let object = load64(base + HeapLayout.nameObject)
        let recorded = load64(base + HeapLayout.nameByteCount)
        guard recorded <= UInt64(HeapLayout.maximumStoreSize) else { throw corrupt("\(at) records \(recorded) bytes") }
        let byteCount = Int(recorded)
        let live = (try? resolve(object, minimumBytes: 0, alignment: 1))?.byteCount == byteCount
        return NamedEntry(entry: entry, name: name, object: object, byteCount: byteCount, objectIsLive: live, type: type)
    }

    /// Walks the whole directory (under the lock), checking every chunk and every live entry. A
    /// chain longer than the heap could hold is a cycle: `corrupt`.
    func walkDirectory() throws(InterprocessError) -> DirectoryWalk {
        var walk = DirectoryWalk(tail: headerPlace(HeapLayout.heapDirectory))
        var word = load64(walk.tail.pointer)
        let limit = stepLimit
        while word != 0 {
            guard walk.chunks.count < limit, !walk.chunks.contains(word) else { throw corrupt("the directory of named objects has a cycle") }
            let block = try directoryChunk(word)
            walk.chunks.append(word)
            let payload = block.field(HeapLayout.blockHeaderSize)
            for index in 0..<HeapLayout.directoryEntryCount {
                let offset = HeapLayout.directoryEntries + index * HeapLayout.nameStride
                let entry = DirectoryEntry(
                    place: HeapPlace(pointer: payload.pointer + offset, ref: payload.ref &+ UInt64(offset)), chunk: word, index: index)
                if let named = try readEntry(entry) {
                    walk.entries.append(named)
                } else if walk.free == nil {
                    walk.free = entry
                }
            }
            walk.tail = HeapPlace(pointer: payload.pointer + HeapLayout.directoryNext, ref: payload.ref &+ UInt64(HeapLayout.directoryNext))
            word = load64(walk.tail.pointer)
        }
        return walk
    }

    /// The live entry named `name` in `walk`; a second entry of that name is `corrupt`.
    func entry(named name: [UInt8], in walk: DirectoryWalk) throws(InterprocessError) -> NamedEntry? {
        let matches = walk.entries.filter { $0.name == name }
        guard matches.count <= 1 else {
            throw corrupt("the directory names '\(String(decoding: name, as: UTF8.self))' \(matches.count) times")
        }
        return matches.first
    }

    /// The object's pointer word, if its entry names a live block and records `type`:
    /// `incompatible` for another type, `corrupt` for an entry whose block is gone.
    func checkedObject(_ named: NamedEntry, type: TypeFingerprint?) throws(InterprocessError) -> UInt64 {
        let label = String(decoding: named.name, as: UTF8.self)
        guard named.objectIsLive else {
            throw corrupt("named object '\(label)' records 0x\(String(named.object, radix: 16)), which is not its live \(named.byteCount)-byte block (freed by hand?)")
        }
        if let type, try !type.matches(named.type) {
            throw InterprocessError(
                .incompatible, objectName: name,
                detail: "named object '\(label)' holds \(TypeFingerprint.text(of: named.type)), not \(type)")
        }
        return named.object
    }

    /// Finds the object named `name` or creates it, as one journaled operation: a new directory
    /// chunk if no entry is free, the object's block holding `initial`, and last the entry's
    /// state. Returns its pointer word and whether this call created it.
    func findOrCreateNamed(
        _ name: [UInt8], type: TypeFingerprint, alignment: Int, initial: UnsafeRawBufferPointer
    ) throws(InterprocessError) -> (word: UInt64, created: Bool) {
        if let problem = type.problem { throw InterprocessError(.invalidArgument, objectName: self.name, detail: problem) }
        if alignment != HeapLayout.granule { try checkAlignment(alignment) }
        let (granules, slack) = try blockSize(forPayload: initial.count)
        let (chunkGranules, chunkSlack) = try blockSize(forPayload: HeapLayout.directorySize)
        return try withLock(.findOrCreate) { (op: inout HeapOperation) throws(InterprocessError) -> (word: UInt64, created: Bool) in
            op.pinned = .findOrCreate
            let walk = try walkDirectory()
            if let named = try entry(named: name, in: walk) {
                return (try checkedObject(named, type: type), false)
            }
            var slot = walk.free
            if slot == nil {
                guard let (word, block) = try allocateLocked(granules: chunkGranules, slack: chunkSlack, alignment: HeapLayout.granule, &op) else {
                    throw outOfMemory(HeapLayout.directorySize)
                }
                disown(block, &op)
                let payload = block.field(HeapLayout.blockHeaderSize)
                // The payload's first 16 bytes are the links the block had while it was free:
                // journaled, so that an undo puts them back. The rest is not the heap's metadata.
                op.set64(payload, UInt64(CIPC_TAG_HEAP_DIRECTORY) | UInt64(CIPC_HEAP_DIRECTORY_ENTRIES) << 32)
                op.set64(HeapPlace(pointer: payload.pointer + 8, ref: payload.ref &+ 8), 0)
                (payload.pointer + 16).initializeMemory(as: UInt8.self, repeating: 0, count: HeapLayout.directorySize - 16)
                op.set64(walk.tail, word)
                let offset = HeapLayout.directoryEntries
                slot = DirectoryEntry(place: HeapPlace(pointer: payload.pointer + offset, ref: payload.ref &+ UInt64(offset)), chunk: word, index: 0)
            }
            guard let slot else { throw corrupt("no directory entry") }
            guard let (word, block) = try allocateLocked(granules: granules, slack: slack, alignment: alignment, &op) else {
                throw outOfMemory(initial.count)
            }
            disown(block, &op)
            // The object's bytes: its first 16 journaled (as above), the rest written plainly.
            let payload = block.field(HeapLayout.blockHeaderSize)
            var head = (UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &head) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: initial.prefix(16))) }
            op.set64(payload, head.0)
            op.set64(HeapPlace(pointer: payload.pointer + 8, ref: payload.ref &+ 8), head.1)
            if initial.count > 16 {
                (payload.pointer + 16).copyMemory(from: initial.baseAddress! + 16, byteCount: initial.count - 16)
            }
            // The entry is free: its fields mean nothing until its state says it is live.
            let base = slot.place.pointer
            store32(base + HeapLayout.nameLength, UInt32(name.count))
            store64(base + HeapLayout.nameHash, TypeFingerprint.hash(name))
            store64(base + HeapLayout.nameObject, word)
            store64(base + HeapLayout.nameByteCount, UInt64(initial.count))
            let bytes = UnsafeMutableRawBufferPointer(start: base + HeapLayout.nameBytes, count: HeapLayout.nameCapacity)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            bytes.copyBytes(from: name)
            (base + HeapLayout.nameType).storeBytes(of: type.shared, as: cipc_type_fingerprint.self)
            op.set32(slot.field(HeapLayout.nameState), HeapLayout.nameLive)
            return (word, true)
        }
    }

    /// Records `block` (just allocated) as nobody's: client record 0. A named object and the
    /// directory belong to their names, not to the process that created them, which may end
    /// without its client record staying taken (``claimClient(_:)`` reuses a dead process's record
    /// only when no block records it), and which ``SharedHeap/reclaimBlocksOfEndedProcesses(dryRun:)``
    /// then need not tell apart.
    func disown(_ block: HeapBlock, _ op: inout HeapOperation) {
        op.set32(block.field(HeapLayout.blockInfo), block.info & ~0xFF)
    }

    /// The pointer word of the object named `name` (`notFound` if there is none).
    func findNamed(_ name: [UInt8], type: TypeFingerprint?) throws(InterprocessError) -> UInt64 {
        try withLock(.findOrCreate) { (_: inout HeapOperation) throws(InterprocessError) -> UInt64 in
            guard let named = try entry(named: name, in: try walkDirectory()) else {
                throw InterprocessError(.notFound, objectName: self.name, detail: "no object named '\(String(decoding: name, as: UTF8.self))' in the heap")
            }
            return try checkedObject(named, type: type)
        }
    }

    /// Frees the object named `name` and frees its entry, as one journaled operation. An entry
    /// whose block is gone (freed by hand) is freed alone. Returns false if there is no such name.
    func destroyNamed(_ name: [UInt8]) throws(InterprocessError) -> Bool {
        try withLock(.destroy) { (op: inout HeapOperation) throws(InterprocessError) -> Bool in
            op.pinned = .destroy
            guard let named = try entry(named: name, in: try walkDirectory()) else { return false }
            if named.objectIsLive {
                let (block, _, _) = try liveBlock(named.object)
                // Freeing onto a quick list writes a link into the payload outside the journal:
                // preserved, so that an undone destroy leaves the object's bytes as they were.
                op.preserve64(block.field(HeapLayout.blockHeaderSize))
                try freeLocked(named.object, &op)
            }
            op.set32(named.entry.field(HeapLayout.nameState), 0)
            return true
        }
    }

    /// Every block the directory holds: its chunks and its live objects, by reference.
    func directoryBlocks(_ walk: DirectoryWalk) -> Set<UInt64> {
        var refs = Set<UInt64>()
        for word in walk.chunks + walk.entries.filter(\.objectIsLive).map(\.object) {
            if let (block, _, _) = try? liveBlock(word) { refs.insert(block.ref) }
        }
        return refs
    }

    /// The directory's part of ``checkLocked()``: every problem its walk meets (it stops at the
    /// first damaged chunk or entry), names recorded twice, and entries whose block is gone.
    func checkDirectory(_ problem: (String) -> Void) {
        let walk: DirectoryWalk
        do { walk = try walkDirectory() } catch {
            problem("the directory of named objects: \(error.detail)")
            return
        }
        var seen = Set<[UInt8]>()
        for named in walk.entries {
            let label = String(decoding: named.name, as: UTF8.self)
            if !seen.insert(named.name).inserted { problem("the directory names '\(label)' more than once") }
            if !named.objectIsLive {
                problem("named object '\(label)' records 0x\(String(named.object, radix: 16)), which is not its live \(named.byteCount)-byte block")
            }
        }
    }
}
