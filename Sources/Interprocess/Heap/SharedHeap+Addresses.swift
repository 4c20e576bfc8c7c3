// MARK: - Blocks by address (what the C ABI is built on)

/// The heap seen as C sees it: a block is an address in this process, as `malloc` returns it.
/// `package` access: the C ABI (target `InterprocessHeapABI`) is the only user. Swift code keeps to
/// ``SharedAllocation`` and ``SharedPointer``, which cannot outlive their heap by mistake; an address
/// is valid only while the heap is open in this process.
extension SharedHeap {
    /// Allocates `byteCount` bytes at `alignment` (a power of two up to ``maximumAlignment``) and
    /// returns the block's address in this process; set to zero if `zeroed` (calloc). The block is
    /// nobody's to free but the caller's (``deallocate(address:)``).
    @inline(__always)
    package func allocateAddress(byteCount: Int, alignment: Int, zeroed: Bool = false) throws(InterprocessError) -> UnsafeMutableRawPointer {
        let (_, address) = try core.allocate(byteCount: byteCount, alignment: alignment)
        if zeroed { address.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount) }
        return address
    }

    /// Resizes the live block at `address` (nil: allocates) to `byteCount` bytes at `alignment`,
    /// keeping the first min(old, new) bytes, and returns its address (new if it moved). If it
    /// throws, the block is unchanged.
    package func reallocateAddress(_ address: UnsafeMutableRawPointer?, byteCount: Int, alignment: Int) throws(InterprocessError) -> UnsafeMutableRawPointer {
        guard let address else { return try allocateAddress(byteCount: byteCount, alignment: alignment) }
        let word = try core.word(forAddress: UnsafeRawPointer(address))
        return try core.reallocate(word, byteCount: byteCount, alignment: alignment).1
    }

    /// Frees the live block at `address`; nil does nothing. `invalidPointer` (and nothing freed) if
    /// `address` is not the start of a live block of this heap.
    @inline(__always)
    package func deallocate(address: UnsafeMutableRawPointer?) throws(InterprocessError) {
        guard let address else { return }
        try core.free(try core.word(forAddress: UnsafeRawPointer(address)))
    }

    /// The process-independent pointer of the live block at `address`. `invalidPointer` unless
    /// `address` is the start of a live block of this heap.
    package func sharedPointer(forAddress address: UnsafeRawPointer) throws(InterprocessError) -> SharedPointer<UInt8> {
        SharedPointer(bitPattern: try core.word(forAddress: address))
    }

    /// This process's address of the live block `pointer` points at (mapping its store if this
    /// process has not yet). `invalidPointer` unless it is a live block of this heap.
    package func address<T>(of pointer: SharedPointer<T>) throws(InterprocessError) -> UnsafeMutableRawPointer {
        try core.resolve(pointer.bitPattern, minimumBytes: 0, alignment: 1).address
    }

    /// The bytes the live block at `address` holds (what its allocation asked for).
    package func byteCount(atAddress address: UnsafeRawPointer) throws(InterprocessError) -> Int {
        try core.resolve(try core.word(forAddress: address), minimumBytes: 0, alignment: 1).byteCount
    }
}

extension HeapCore {
    /// The pointer word of the live block whose payload starts at `address`, an address in this
    /// process. The address must lie in a store this process has mapped (it got the address from
    /// the heap, so it has), on a granule, just past a block header that says "in use"; the word
    /// built from that header's tag is then checked like any other (``liveBlock(_:)``). Anything
    /// else — an address outside the heap, a freed block, a quick one — is `invalidPointer`.
    ///
    /// What this cannot tell: an address inside a live block whose 16 bytes before it hold,
    /// by accident or on purpose, a valid in-use header (the block's own data). Such an address is
    /// taken for a block, as glibc's `free` would take it; any process that can write the heap can
    /// damage it anyway (``SharedHeap`` limits what that does: never an access outside the heap).
    func word(forAddress address: UnsafeRawPointer) throws(InterprocessError) -> UInt64 {
        let target = UInt(bitPattern: address)
        for store in 0..<storeCount {
            // A store this process has not mapped cannot contain an address it was given.
            guard let view = table.view(store) else { continue }
            let start = UInt(bitPattern: view.base)
            guard target >= start, target - start < UInt(view.size) else { continue }
            let offset = Int(target - start) - HeapLayout.blockHeaderSize
            guard offset & (HeapLayout.granule - 1) == 0, offset >= view.first, offset < view.end else {
                throw addressError(address, "not the start of a block of store \(store)")
            }
            let state = load32(view.base + offset + HeapLayout.blockState)
            guard state & HeapLayout.inUse != 0, state & HeapLayout.tagMask != 0 else {
                throw addressError(address, "no live block of this heap starts there (freed, or inside a block)")
            }
            let word = HeapLayout.pointerWord(store: store, blockOffset: offset, tag: state & HeapLayout.tagMask)
            _ = try liveBlock(word)
            return word
        }
        throw addressError(address, "not in this heap")
    }

    private func addressError(_ address: UnsafeRawPointer, _ detail: String) -> InterprocessError {
        InterprocessError(.invalidPointer, objectName: name, detail: "address 0x\(String(UInt(bitPattern: address), radix: 16)): \(detail)")
    }
}
