import CInterprocess
import InterprocessSystem

// MARK: - Named objects

/// Named objects: processes meet at a well-known object of the heap by its name, without passing
/// pointers around (Boost.Interprocess's `find_or_construct`).
///
/// ```swift
/// let heap = try SharedHeap.openOrCreate(name: "app", capacity: 1 << 20).heap
/// // Every process runs the same line: exactly one creates the counter, all get the same block.
/// let counter = try heap.findOrCreate(name: "requests", initialValue: UInt64(0)).pointer
/// try heap.withUnsafeMutablePointer(to: counter) { $0.pointee += 1 }   // synchronize as usual
///
/// let same = try heap.find(name: "requests", as: UInt64.self)   // notFound if nobody created it
/// _ = try? heap.find(name: "requests", as: Int64.self)          // incompatible: another type
/// try heap.destroy(name: "requests")                           // frees its block too
/// ```
///
/// A name is 1 to 96 bytes of UTF-8 (no NUL), in the heap's own namespace (not /dev/shm's). The
/// object is a block of the heap like any other — a ``SharedPointer`` resolves it in every process —
/// but it belongs to its name: free it with ``destroy(name:)``, never with ``unsafeDeallocate(_:)``
/// or an adopted allocation (the name would then record a block that is gone: `find` says
/// `corrupt`, and `destroy` removes the name alone). After `destroy`, pointers to the object are
/// stale: resolving them is `invalidPointer`.
///
/// **Typed.** The creator records a ``TypeFingerprint`` (by default `T`'s name, size and
/// alignment), and every `find` and `findOrCreate` of an existing name compares it with its own:
/// another type is `incompatible`, even of the same size.
///
/// **Layout.** A directory of entries (`cipc_heap_name`: state, name, its hash, the object's pointer
/// word and byte count, the type fingerprint), 8 per chunk (`cipc_heap_directory`, a block of the
/// heap); the heap header's `directory` word names the first chunk, each chunk the next. Chunks are
/// never freed: the directory keeps the size the most names ever needed. Lookups walk it under the
/// heap's lock (comparing hashes first): meant for tens of well-known objects, not as a hash map.
///
/// **Races and crashes.** `findOrCreate` looks the name up and creates it in one operation under
/// the heap's robust lock, so processes that race on one name create exactly one object, and every
/// one of them gets it. Creating writes, through the heap's undo journal: a new chunk if no entry is
/// free (its block, its first words, the link to it), the object's block and its first 16 bytes
/// (the rest of its initial value is written plainly into the block, which is not the heap's
/// metadata), and last the entry's state (the entry's other fields are written first, plainly:
/// they mean nothing while the state says free). `destroy` frees the object's block (preserving its
/// first bytes in the journal) and then clears the entry's state. A process SIGKILLed at any of these
/// writes, or after the last one before the operation ends, leaves the journal to the next process
/// that takes the lock: it undoes the whole operation, so the name is either there with its object
/// whole (destroy undone, or created before) or absent with nothing allocated (create undone) —
/// never a name without its object, never an object without its name. (If creating needs the heap
/// to merge its quick blocks or grow, those steps end operations of their own first: a chunk added
/// then stays, empty.) Every entry is checked when it is read — state, name length, padding and
/// hash, type fingerprint, and that the object is the live block of the size it records — and a
/// directory chunk must be a live block with its tag: a scribbled directory is `corrupt`, never a
/// crash, and ``check()`` reports its problems.
extension SharedHeap {
    /// Returns the object named `name`, creating it with `initialValue` if it does not exist: one
    /// atomic step, so when several processes race, exactly one creates it and all get the same
    /// block. `created` tells whether this call created it.
    ///
    /// Throws `incompatible` if the object exists with another type, `outOfMemory` if it does not
    /// and there is no room, `invalidName` for an empty name, a name longer than 96 bytes, or one
    /// with a NUL.
    /// - Parameters:
    ///   - name: the object's name in the heap's own namespace (1 to 96 bytes of UTF-8).
    ///   - initialValue: what a creating call stores in the new block; ignored when it exists.
    ///   - type: what the object holds, recorded by its creator and compared by every
    ///     `find`; `T`'s fingerprint unless given (give a version when `T`'s layout changes).
    public func findOrCreate<T: BitwiseCopyable>(
        name: String, initialValue: T, type: TypeFingerprint = TypeFingerprint(of: T.self)
    ) throws(InterprocessError) -> (pointer: SharedPointer<T>, created: Bool) {
        let bytes = try core.objectName(name)
        var value = initialValue
        let result = try withUnsafeBytes(of: &value) { initial throws(InterprocessError) in
            try core.findOrCreateNamed(bytes, type: type, alignment: max(16, MemoryLayout<T>.alignment), initial: initial)
        }
        return (SharedPointer(bitPattern: result.word), result.created)
    }

    /// Returns the array named `name`, creating it with `count` values `repeating` if it does not
    /// exist (an existing one is returned whatever its count: ``byteCount(of:)`` tells). As
    /// ``findOrCreate(name:initialValue:type:)`` otherwise.
    public func findOrCreate<T: BitwiseCopyable>(
        name: String, repeating: T, count: Int, type: TypeFingerprint = TypeFingerprint(of: T.self)
    ) throws(InterprocessError) -> (pointer: SharedPointer<T>, created: Bool) {
        let bytes = try core.objectName(name)
        guard count >= 0, count <= HeapLayout.maximumStoreSize / max(MemoryLayout<T>.stride, 1) else {
            throw InterprocessError(.invalidSize, objectName: self.name, detail: "\(count) values of \(T.self)")
        }
        let initial = UnsafeMutableRawBufferPointer.allocate(byteCount: count * MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment)
        defer { initial.deallocate() }
        initial.baseAddress?.initializeMemory(as: T.self, repeating: repeating, count: count)
        let result = try core.findOrCreateNamed(
            bytes, type: type, alignment: max(16, MemoryLayout<T>.alignment), initial: UnsafeRawBufferPointer(initial))
        return (SharedPointer(bitPattern: result.word), result.created)
    }

    /// The object named `name`. Throws `notFound` if there is none, `incompatible` if it holds
    /// another type than `type` (`T`'s fingerprint unless given), `corrupt` if its entry is damaged.
    public func find<T: BitwiseCopyable>(
        name: String, as _: T.Type = T.self, type: TypeFingerprint = TypeFingerprint(of: T.self)
    ) throws(InterprocessError) -> SharedPointer<T> {
        SharedPointer(bitPattern: try core.findNamed(try core.objectName(name), type: type))
    }

    /// Destroys the object named `name`: frees its block and removes its name, in one atomic step.
    /// Returns false if there is no such name. Pointers to the object become stale.
    @discardableResult
    public func destroy(name: String) throws(InterprocessError) -> Bool {
        try core.destroyNamed(try core.objectName(name))
    }

    /// One named object, as ``namedObjects()`` lists it.
    public struct NamedObject: Sendable, Hashable, Codable {
        /// Its name.
        public var name: String
        /// What it holds, in words: the type fingerprint its creator recorded.
        public var type: String
        /// Bytes it holds.
        public var byteCount: Int
        /// Its block (the pointer ``find(name:as:type:)`` returns, untyped).
        public var pointer: SharedPointer<UInt8>
        /// Whether the block it records is live (false: someone freed it by hand; ``check()``
        /// reports it, and ``destroy(name:)`` removes the name).
        public var isIntact: Bool
    }

    /// Every named object, in directory order. Throws `corrupt` if the directory is damaged.
    public func namedObjects() throws(InterprocessError) -> [NamedObject] {
        try core.withLock(.findOrCreate) { (_: inout HeapOperation) throws(InterprocessError) -> [NamedObject] in
            try core.walkDirectory().entries.map { named in
                NamedObject(
                    name: String(decoding: named.name, as: UTF8.self), type: TypeFingerprint.text(of: named.type),
                    byteCount: named.byteCount, pointer: SharedPointer(bitPattern: named.object), isIntact: named.objectIsLive)
            }
        }
    }
}
