/// A pointer into a ``SharedHeap`` that means the same block in every process: one 64-bit word,
/// to store in shared memory, in a ``SharedVariable``, or to send through a pipe.
///
/// The word holds the block's store and offset and a 24-bit *tag* that the block's header repeats
/// while the block lives. Resolving it (``SharedHeap/load(_:)``, ``SharedHeap/withUnsafeMutablePointer(to:_:)``,
/// ``SharedHeap/adopt(_:)``…) checks both: a pointer to a freed block, to the middle of one, to
/// another heap, or made of garbage throws ``InterprocessError/Code/invalidPointer`` — never a wild
/// access. (A tag repeats after 2²⁴ allocations, so a stale pointer whose block was reused exactly
/// that many allocations later may pass — thread caches take tags in batches, so "exactly" is
/// "about"; a block never gets the tag it had last; a forged one passes with odds of 1 in 2²⁴, and
/// then reaches memory inside the heap only.)
///
/// Layout of the word (for programs in other languages): bits 0–33 the payload's offset in its store
/// in 16-byte granules, bits 34–39 the store, bits 40–63 the tag. 0 is the null pointer.
public struct SharedPointer<Pointee>: BitwiseCopyable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// The word.
    public let bitPattern: UInt64

    /// The pointer whose word is `bitPattern` (checked only when it is resolved).
    public init(bitPattern: UInt64) { self.bitPattern = bitPattern }

    /// The null pointer (word 0): deallocating it does nothing, reallocating it allocates.
    public static var null: SharedPointer { SharedPointer(bitPattern: 0) }

    /// Whether this is the null pointer.
    public var isNull: Bool { bitPattern == 0 }

    /// The same block, seen as holding `U`s.
    public func cast<U>(to type: U.Type = U.self) -> SharedPointer<U> { SharedPointer<U>(bitPattern: bitPattern) }

    /// Decodes the word from a single unsigned integer.
    public init(from decoder: any Decoder) throws {
        bitPattern = try decoder.singleValueContainer().decode(UInt64.self)
    }

    /// Encodes the word as a single unsigned integer.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(bitPattern)
    }

    public var description: String { "SharedPointer<\(Pointee.self)>(0x\(String(bitPattern, radix: 16)))" }
}

/// One block of a ``SharedHeap``, owned by this value: it is freed exactly once — by
/// ``deallocate()``, or when the value goes away — unless it is handed over with ``relinquish()``
/// (whoever receives the pointer takes it back with ``SharedHeap/adopt(_:)``). It cannot be copied,
/// so it cannot be freed twice.
///
/// ```swift
/// var buffer = try heap.allocate(repeating: UInt32(0), count: 256)
/// buffer[3] = 7
/// try buffer.reallocate(byteCount: 512 * 4)        // keeps the first 1024 bytes
/// let word = buffer.relinquish()                  // now another process's to free
/// ```
///
/// The block's memory stays mapped while this value exists (it keeps its heap alive). Other
/// processes may read and write the block too: synchronize with the primitives of this library.
public struct SharedAllocation<Pointee: BitwiseCopyable>: ~Copyable, @unchecked Sendable {
    // `@unchecked Sendable`: `address` points into a mapping that the heap (retained through `owner`)
    // keeps alive; the bytes are shared memory, which other processes change anyway.
    private let owner: Unmanaged<SharedHeap>
    private var word: UInt64
    private var address: UnsafeMutableRawPointer
    /// The bytes the allocation holds.
    public private(set) var byteCount: Int

    init(heap: SharedHeap, word: UInt64, address: UnsafeMutableRawPointer, byteCount: Int) {
        owner = .passRetained(heap)
        self.word = word
        self.address = address
        self.byteCount = byteCount
    }

    deinit {
        try? owner.takeUnretainedValue().core.free(word)
        owner.release()
    }

    /// The heap the block belongs to.
    public var heap: SharedHeap { owner.takeUnretainedValue() }

    /// The block's pointer: the same in every process. Keep the allocation (or ``relinquish()`` it)
    /// while the pointer is used.
    public var pointer: SharedPointer<Pointee> { SharedPointer(bitPattern: word) }

    /// How many `Pointee`s fit.
    public var count: Int { MemoryLayout<Pointee>.stride == 0 ? 0 : byteCount / MemoryLayout<Pointee>.stride }

    /// The first value.
    public var pointee: Pointee {
        get { self[0] }
        nonmutating set { self[0] = newValue }
    }

    /// The value at `index` (0 ..< ``count``).
    public subscript(index: Int) -> Pointee {
        get {
            precondition(index >= 0 && index < count, "index \(index) out of 0..<\(count)")
            return address.load(fromByteOffset: index * MemoryLayout<Pointee>.stride, as: Pointee.self)
        }
        nonmutating set {
            precondition(index >= 0 && index < count, "index \(index) out of 0..<\(count)")
            address.storeBytes(of: newValue, toByteOffset: index * MemoryLayout<Pointee>.stride, as: Pointee.self)
        }
    }

    /// Calls `body` with the block's bytes. The buffer must not escape `body`.
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: address, count: byteCount))
    }

    /// Calls `body` with the block's values. The buffer must not escape `body`.
    public func withUnsafeMutableBufferPointer<R, E: Error>(_ body: (UnsafeMutableBufferPointer<Pointee>) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableBufferPointer(start: address.assumingMemoryBound(to: Pointee.self), count: count))
    }

    /// Resizes the block to `byteCount` bytes, keeping the first min(old, new): in place when it
    /// can, else by moving it (``pointer`` changes then). If it throws, nothing changed.
    public mutating func reallocate(byteCount: Int, alignment: Int = 16) throws(InterprocessError) {
        let (newWord, newAddress) = try heap.core.reallocate(word, byteCount: byteCount, alignment: max(alignment, MemoryLayout<Pointee>.alignment, 16))
        word = newWord
        address = newAddress
        self.byteCount = byteCount
    }

    /// Frees the block. Throws `invalidPointer` if another process freed it already (through a copy
    /// of its pointer), `closed` if the heap was closed: the block is then left as it is.
    public consuming func deallocate() throws(InterprocessError) {
        let owner = owner
        let word = word
        discard self
        defer { owner.release() }
        try owner.takeUnretainedValue().core.free(word)
    }

    /// Gives up ownership without freeing: the returned pointer must be freed exactly once by
    /// whoever receives it (``SharedHeap/adopt(_:)``, ``SharedHeap/unsafeDeallocate(_:)``).
    public consuming func relinquish() -> SharedPointer<Pointee> {
        let owner = owner
        let word = word
        discard self
        owner.release()
        return SharedPointer(bitPattern: word)
    }
}
