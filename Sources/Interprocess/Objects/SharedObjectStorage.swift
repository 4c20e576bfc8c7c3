import SystemPackage
import InterprocessSystem
import Synchronization

/// Where one shared object's state lives, and what keeps it mapped: a named segment of its own (of
/// its kind's ``SegmentKind``, the state at the payload offset), or a place in a ``SharedMemory``
/// segment that the user owns.
///
/// It does, once for every kind of ``SharedObject``, what used to be written out per kind: create
/// (named, or placed in a segment), open, openOrCreate, close and remove, with the checks they take —
/// bounds and alignment of a place, the segment's kind, the state's size and tag, then the kind's own
/// ``SharedObject/validate(_:available:expecting:)`` — before the object is built.
///
/// What a process killed at each step leaves behind: a named object is built in a file with no name
/// and named only when it is complete (``SegmentHandle``): killed before, nothing; after, a complete
/// object. A placed object is registered in its segment's table of placed objects, initialized in
/// place and its tag written last, all under the table's lock: killed before the tag, nothing was
/// placed (the next holder of the lock frees the entry); after it, the entry and a complete object
/// (see ``PlacementTable``).
///
/// `@unchecked Sendable`: `base` points into a mapping that `mapping` keeps alive for as long as this
/// object exists; the state is touched only through atomics by the objects built on it, and
/// everything else here is immutable.
final class SharedObjectStorage: @unchecked Sendable {
    /// The state's first byte.
    let base: UnsafeMutableRawPointer
    /// How many bytes from `base` on belong to the object's memory: a named object's payload, or the
    /// rest of the user's segment from the place on.
    let available: Int
    let mapping: MemoryMapping
    /// The segment registration of a named object (nil for one placed in the user's memory).
    let segment: SegmentHandle?
    /// This process's identity in the file, for kinds that record owners.
    let lease: OwnerLease?

    init(base: UnsafeMutableRawPointer, available: Int, mapping: MemoryMapping, segment: SegmentHandle?, lease: OwnerLease?) {
        self.base = base
        self.available = available
        self.mapping = mapping
        self.segment = segment
        self.lease = lease
    }

    /// The name of a named object (nil for a placed one).
    var name: String? { segment?.name }

    /// Unregisters a named object (the last holder of a `.whileReferenced` one removes the name).
    /// A placed object's memory belongs to its segment: nothing to do.
    func close() { segment?.close() }
}

// MARK: - Named objects

extension SharedObjectStorage {
    /// Creates a named object (a segment of its kind holding one state, initialized before the
    /// segment gets its name). Of two processes creating one name, exactly one succeeds; the other
    /// gets `alreadyExists`.
    static func create<Object: SharedObject>(
        _: Object.Type, name: String, parameters: Object.Parameters, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> Object {
        let size = try named(name) { () throws(InterprocessError) in try Object.size(for: parameters) }
        let handle = try SegmentHandle.create(
            name: name, kind: Object.Kind.segmentKind, payloadSize: size, permissions: permissions, lifetime: lifetime
        ) { payload in
            // A new file is zero-filled.
            publish(Object.self, at: payload.baseAddress!, size: size, parameters: parameters)
        }
        return try build(Object.self, on: handle, expecting: nil, check: false)
    }

    /// Opens the named object `name`: a segment of its kind (`incompatible` otherwise) whose state
    /// has the kind's tag and passes its validation (with `parameters`, if given).
    static func open<Object: SharedObject>(
        _: Object.Type, name: String, expecting parameters: Object.Parameters?, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> Object {
        let handle = try SegmentHandle.open(name: name, kind: Object.Kind.segmentKind, trusting: trust)
        return try build(Object.self, on: handle, expecting: parameters, check: true)
    }

    /// Opens the named object, or creates it with `parameters` if there is none; `created` says
    /// which. The rules of ``SharedMemory/openOrCreate(name:size:permissions:group:lifetime:trusting:)``:
    /// of processes racing, exactly one creates, and the others open the object it built completely
    /// before naming it. An existing object is checked against `parameters` (`incompatible` if it
    /// does not suit them).
    static func openOrCreate<Object: SharedObject>(
        _: Object.Type, name: String, parameters: Object.Parameters, permissions: FilePermissions, lifetime: Lifetime,
        trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (Object, Bool) {
        for _ in 0..<64 {
            switch Result(catching: { () throws(InterprocessError) in
                try create(Object.self, name: name, parameters: parameters, permissions: permissions, lifetime: lifetime)
            }) {
            case .success(let object): return (object, true)
            case .failure(let error) where error.code == .alreadyExists: break
            case .failure(let error): throw error
            }
            switch Result(catching: { () throws(InterprocessError) in
                try open(Object.self, name: name, expecting: parameters, trusting: trust)
            }) {
            case .success(let object): return (object, false)
            case .failure(let error) where error.code == .notFound: break // removed meanwhile: create it
            case .failure(let error): throw error
            }
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }

    /// Removes the name of the named object `name`, which must be of `Object`'s kind
    /// (`incompatible` otherwise). Holders keep using it until they close it.
    static func remove<Object: SharedObject>(_: Object.Type, name: String) throws(InterprocessError) {
        try SharedMemory.remove(name: name, kind: Object.Kind.segmentKind)
    }

    /// Maps `handle`, checks the state (when opening) and builds the object; closes the handle if
    /// anything fails.
    private static func build<Object: SharedObject>(
        _: Object.Type, on handle: SegmentHandle, expecting parameters: Object.Parameters?, check: Bool
    ) throws(InterprocessError) -> Object {
        do throws(InterprocessError) {
            let mapping = try handle.mapping()
            let storage = SharedObjectStorage(
                base: mapping.base + SegmentHeader.size, available: handle.payloadSize, mapping: mapping, segment: handle,
                lease: Object.recordsOwners ? try handle.ownerLease() : nil)
            if check { try storage.validate(Object.self, expecting: parameters, place: nil) }
            return try named(handle.name) { () throws(InterprocessError) in try Object(storage: storage) }
        } catch {
            handle.close()
            throw error
        }
    }
}

// MARK: - Objects placed in a segment

extension SharedObjectStorage {
    /// Initializes a new object in `segment`, which the caller owns, and registers it in the
    /// segment's table of placed objects (``PlacementTable``): at `offset`, or (nil) at the highest
    /// free offset that is a multiple of 64 (and of the kind's alignment); under `name` if given
    /// (1 to 32 bytes, unique in the segment). Checks that the place is aligned, fits and is free
    /// (`alreadyExists` if an object of this kind is there, `overlaps` if anything else is, the
    /// stored value included), then follows the steps that ``PlacementTable`` documents.
    static func place<Object: SharedObject>(
        _: Object.Type, in segment: SharedMemory, at offset: Int?, named name: String? = nil, parameters: Object.Parameters
    ) throws(InterprocessError) -> Object {
        let size = try named(segment.name) { () throws(InterprocessError) in try Object.size(for: parameters) }
        let kind = Object.Kind.self
        let nameBytes = try placementName(name, in: segment)
        return try SegmentPlacements.of(segment).withLock { table throws(InterprocessError) -> Object in
            let entries = try table.read()
            if let name, let existing = entries.first(where: { $0.name == nameBytes }) {
                throw InterprocessError(existing.tag == kind.tag ? .alreadyExists : .overlaps, objectName: segment.name,
                    detail: "the name '\(name)' is taken: \(existing.object)")
            }
            let alignment = Swift.max(Object.alignment, PlacementTable.automaticAlignment)
            guard let offset = offset ?? table.freeSpot(size: size, alignment: alignment, in: entries) else {
                throw InterprocessError(.outOfMemory, objectName: segment.name,
                    detail: "no free \(size) bytes for \(PlacedObject.article(kind.displayName))\(kind.displayName) (\(entries.count) objects placed in \(segment.size) bytes)")
            }
            let storage = try locate(Object.self, in: segment, at: offset, size: size)
            let what = PlacedObject.article(kind.displayName) + kind.displayName + (name.map { " '\($0)'" } ?? "")
            try table.checkFree(offset..<(offset + size), tag: kind.tag, in: entries, what: what)
            let index = try table.freeIndex(in: entries, what: what)
            // Step 1: no stale tag at the place (a repair must not mistake it for ours), the entry.
            atomic32(storage.base + kind.tagOffset).pointee.store(0, ordering: .relaxed)
            table.claim(index, offset: offset, size: size, tag: kind.tag, tagOffset: kind.tagOffset, name: nameBytes)
            HotPath.crashPoint("place.afterClaim")
            // Steps 2 and 3: the object, its tag last.
            storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            Object.initialize(storage.base, size: size, with: parameters)
            HotPath.crashPoint("place.beforeTag")
            atomic32(storage.base + kind.tagOffset).pointee.store(kind.tag, ordering: .releasing)
            HotPath.crashPoint("place.afterTag")
            // Step 4.
            table.commit(index)
            return try named(segment.name) { () throws(InterprocessError) in try Object(storage: storage) }
        }
    }

    /// Uses the object that another process created at `offset` in `segment`, after checking it.
    /// The segment's table of placed objects must not say that something else is there
    /// (`incompatible`); a place it does not know (an object placed by a version without the table)
    /// is checked by its tag alone.
    static func attach<Object: SharedObject>(
        _: Object.Type, in segment: SharedMemory, at offset: Int, expecting parameters: Object.Parameters?
    ) throws(InterprocessError) -> Object {
        let kind = Object.Kind.self
        if let entry = PlacementTable.entry(covering: offset, in: try SegmentPlacements.of(segment).entries()),
           entry.offset != offset || entry.tag != kind.tag {
            throw InterprocessError(.incompatible, objectName: segment.name,
                detail: "\(entry.object) is placed there, not \(PlacedObject.article(kind.displayName))\(kind.displayName) at \(offset)")
        }
        let storage = try locate(Object.self, in: segment, at: offset, size: Object.minimumSize)
        try storage.validate(Object.self, expecting: parameters, place: (segment.name, offset))
        return try named(segment.name) { () throws(InterprocessError) in try Object(storage: storage) }
    }

    /// The storage of the bytes from `offset` on in `segment` (the caller checked the range), with
    /// this process's owner lease on its file: for a lock that lives inside what `SharedMemory` keeps
    /// there (the stored value's frame).
    static func region(of segment: SharedMemory, at offset: Int) throws(InterprocessError) -> SharedObjectStorage {
        let mapping = try segment.handle.mapping()
        return SharedObjectStorage(
            base: mapping.base + SegmentHeader.size + offset, available: segment.size - offset, mapping: mapping, segment: nil,
            lease: try segment.handle.ownerLease())
    }

    /// Uses the object placed in `segment` under `name` (`notFound` if there is none,
    /// `incompatible` if it is of another kind), after checking it.
    static func attach<Object: SharedObject>(
        _: Object.Type, in segment: SharedMemory, named name: String, expecting parameters: Object.Parameters?
    ) throws(InterprocessError) -> Object {
        let nameBytes = try placementName(name, in: segment)
        guard let entry = try SegmentPlacements.of(segment).entries().first(where: { $0.name == nameBytes }) else {
            throw InterprocessError(.notFound, objectName: segment.name, detail: "nothing named '\(name)' is placed in it")
        }
        guard entry.tag == Object.Kind.tag else {
            throw InterprocessError(.incompatible, objectName: segment.name,
                detail: "\(entry.object) is not \(PlacedObject.article(Object.Kind.displayName))\(Object.Kind.displayName)")
        }
        return try attach(Object.self, in: segment, at: entry.offset, expecting: parameters)
    }

    /// The bytes of a placement name (nil: none), after checking it: 1 to 32 bytes, no NUL.
    private static func placementName(_ name: String?, in segment: SharedMemory) throws(InterprocessError) -> [UInt8] {
        guard let name else { return [] }
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= PlacementTable.nameCapacity, !bytes.contains(0) else {
            throw InterprocessError(.invalidName, objectName: segment.name,
                detail: "a placed object's name has 1 to \(PlacementTable.nameCapacity) bytes and no NUL; '\(name.replacingNulls)' has \(bytes.count)")
        }
        return bytes
    }

    /// The storage at `offset` in `segment`, after checking that `size` bytes fit there at the kind's
    /// alignment (`invalidArgument` otherwise).
    private static func locate<Object: SharedObject>(
        _: Object.Type, in segment: SharedMemory, at offset: Int, size: Int
    ) throws(InterprocessError) -> SharedObjectStorage {
        let what = Object.Kind.displayName
        guard offset >= 0, offset % Object.alignment == 0 else {
            throw InterprocessError(.invalidArgument, objectName: segment.name,
                detail: "a \(what) must be placed at an offset that is a multiple of \(Object.alignment); \(offset) is not")
        }
        guard size <= segment.size, offset <= segment.size - size else {
            throw InterprocessError(.invalidArgument, objectName: segment.name,
                detail: "a \(what) needs \(size) bytes; at offset \(offset) a \(segment.size)-byte segment has \(max(0, segment.size - offset))")
        }
        let mapping = try segment.handle.mapping()
        return SharedObjectStorage(
            base: mapping.base + SegmentHeader.size + offset, available: segment.size - offset, mapping: mapping, segment: nil,
            lease: Object.recordsOwners ? try segment.handle.ownerLease() : nil)
    }

    /// Storage for a state that the library itself keeps in a segment (the lock of its table of
    /// placed objects): `available` bytes at `base`, inside `mapping`.
    static func internalState(
        at base: UnsafeMutableRawPointer, available: Int, mapping: MemoryMapping, lease: OwnerLease
    ) -> SharedObjectStorage {
        SharedObjectStorage(base: base, available: available, mapping: mapping, segment: nil, lease: lease)
    }
}

// MARK: - Checks

extension SharedObjectStorage {
    /// Initializes a zero-filled state and publishes its tag (release: an opener that reads the tag
    /// with acquire sees the whole state).
    private static func publish<Object: SharedObject>(
        _: Object.Type, at base: UnsafeMutableRawPointer, size: Int, parameters: Object.Parameters
    ) {
        Object.initialize(base, size: size, with: parameters)
        atomic32(base + Object.Kind.tagOffset).pointee.store(Object.Kind.tag, ordering: .releasing)
    }

    /// Checks the state before anything trusts it: room for the kind's smallest state, its tag, then
    /// the kind's own validation. `place` names a placed object's segment and offset (for messages).
    private func validate<Object: SharedObject>(
        _: Object.Type, expecting parameters: Object.Parameters?, place: (segment: String, offset: Int)?
    ) throws(InterprocessError) {
        let kind = Object.Kind.self
        let objectName = place?.segment ?? name
        let location = place.map { " at offset \($0.offset)" } ?? ""
        guard available >= Object.minimumSize, available >= kind.tagOffset + 4 else {
            throw InterprocessError(.corrupt, objectName: objectName,
                detail: "\(available) bytes\(location) cannot hold a \(kind.displayName) (\(Object.minimumSize) bytes)")
        }
        let tag = atomic32(base + kind.tagOffset).pointee.load(ordering: .acquiring)
        guard tag == kind.tag else {
            if kind.retiredTags.contains(tag) {
                throw InterprocessError(.incompatible, objectName: objectName,
                    detail: "the \(kind.displayName)\(location) has an older layout (tag \(Self.tagText(tag))), which this version does not open")
            }
            throw InterprocessError(.corrupt, objectName: objectName, detail: "no valid \(kind.displayName)\(location)")
        }
        do throws(InterprocessError) {
            try Object.validate(base, available: available, expecting: parameters)
        } catch {
            var error = error
            error.objectName = objectName
            if !location.isEmpty { error.detail = "the \(kind.displayName)\(location): " + error.detail }
            throw error
        }
    }

    /// A tag as its four ASCII characters where they are printable ("MTX1"), else in hexadecimal.
    static func tagText(_ tag: UInt32) -> String {
        let bytes = withUnsafeBytes(of: tag.littleEndian) { Array($0) }
        guard bytes.allSatisfy({ (0x21...0x7E).contains($0) }) else { return "0x" + String(tag, radix: 16) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Runs `body`, giving an error it throws without a name the object's name.
    private static func named<R>(_ name: String?, _ body: () throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        do throws(InterprocessError) {
            return try body()
        } catch {
            var error = error
            if error.objectName == nil { error.objectName = name }
            throw error
        }
    }
}
