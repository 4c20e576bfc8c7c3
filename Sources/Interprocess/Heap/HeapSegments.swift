import CInterprocess
import InterprocessSystem
import SystemPackage
import Synchronization

/// The heap's stores as named segments: store 0 is the segment named like the heap, store `i > 0`
/// the segment `NAME~NONCE-i` (the heap's nonce in 16 hex digits), created `.persistent` whatever the
/// heap's lifetime and removed with the heap (see ``SharedHeap``). This is the one part of the heap
/// that knows how stores are created, found and removed; moving the heap onto the shared-objects
/// framework replaces it.
final class HeapSegments: HeapStoreProvider {
    let heapName: String
    let nonce: UInt64
    let trust: TrustedOwners
    let permissions: FilePermissions
    let group: UInt32?
    private let handles = Mutex<[Int: SegmentHandle]>([:])

    init(heapName: String, nonce: UInt64, trust: TrustedOwners, permissions: FilePermissions, group: UInt32?) {
        self.heapName = heapName
        self.nonce = nonce
        self.trust = trust
        self.permissions = permissions
        self.group = group
    }

    /// Characters a store's name adds to the heap's: `~`, 16 hex digits, `-`, up to 2 digits.
    static let storeSuffixLength = 20

    static func storeName(heap: String, nonce: UInt64, index: Int) -> String {
        storePrefix(heap: heap, nonce: nonce) + String(index)
    }

    static func storePrefix(heap: String, nonce: UInt64) -> String {
        let hex = String(nonce, radix: 16)
        return heap + "~" + String(repeating: "0", count: 16 - hex.count) + hex + "-"
    }

    // MARK: HeapStoreProvider

    func mapStore(_ index: Int) throws(InterprocessError) -> MappedStore {
        let name = Self.storeName(heap: heapName, nonce: nonce, index: index)
        let handle: SegmentHandle
        do {
            handle = try SegmentHandle.open(name: name, kind: .heap, trusting: trust)
        } catch where error.code == .notFound {
            throw InterprocessError(.corrupt, objectName: heapName, detail: "its store \(index) ('\(name)') is missing")
        }
        do throws(InterprocessError) {
            let view = try Self.storeView(handle, index: index, nonce: nonce, heapName: heapName)
            handles.withLock { $0[index] = handle }
            return view
        } catch {
            handle.close()
            throw error
        }
    }

    func createStore(_ index: Int, byteCount: Int) throws(InterprocessError) -> MappedStore {
        let name = Self.storeName(heap: heapName, nonce: nonce, index: index)
        for _ in 0..<4 {
            do throws(InterprocessError) {
                let handle = try SegmentHandle.create(
                    name: name, kind: .heap, payloadSize: byteCount, permissions: permissions, group: group, lifetime: .persistent
                ) { payload in
                    _ = HeapInitializer.initializeStore(payload.baseAddress!, size: byteCount, index: index, nonce: nonce)
                }
                HotPath.crashPoint("heap.grow.afterLink")
                return try keep(handle, index: index)
            } catch where error.code == .alreadyExists {
                // A grower died after creating it and before publishing it: nobody uses it (a
                // process that mapped it while a publication was being undone sees the same file).
                // Take it over as it is, whatever size that grower chose: it fits the maximum,
                // which has not moved since (only publishing it would have moved it).
                let handle: SegmentHandle
                do {
                    handle = try SegmentHandle.open(name: name, kind: .heap, trusting: trust)
                } catch where error.code == .notFound {
                    continue
                }
                do throws(InterprocessError) {
                    let mapped = try Self.storeView(handle, index: index, nonce: nonce, heapName: heapName, initialize: true)
                    handles.withLock { $0[index] = handle }
                    return mapped
                } catch {
                    handle.close()
                    throw error
                }
            }
        }
        throw InterprocessError(.createFailed, objectName: heapName, detail: "could not create its store '\(name)'")
    }

    private func keep(_ handle: SegmentHandle, index: Int) throws(InterprocessError) -> MappedStore {
        do throws(InterprocessError) {
            let view = try Self.storeView(handle, index: index, nonce: nonce, heapName: heapName)
            handles.withLock { $0[index] = handle }
            return view
        } catch {
            handle.close()
            throw error
        }
    }

    /// The view of a store segment, after checking its store header against what it must be.
    /// With `initialize`, the store (not published) is first reset to one free block.
    static func storeView(
        _ handle: SegmentHandle, index: Int, nonce: UInt64, heapName: String, initialize: Bool = false
    ) throws(InterprocessError) -> MappedStore {
        let mapping = try handle.mapping()
        let payload = mapping.base + SegmentHeader.size
        let size = handle.payloadSize
        func corrupt(_ detail: String) -> InterprocessError {
            InterprocessError(.corrupt, objectName: heapName, detail: "store \(index): \(detail)")
        }
        guard size >= HeapLayout.storeHeaderSize, load32(payload + HeapLayout.storeTag) == CIPC_TAG_HEAP_STORE else {
            throw InterprocessError(.incompatible, objectName: handle.name, detail: "not a store of a shared heap")
        }
        guard load64(payload + HeapLayout.storeNonce) == nonce, load32(payload + HeapLayout.storeIndex) == UInt32(index) else {
            throw corrupt("the segment '\(handle.name)' is not this heap's store \(index)")
        }
        let validSize = size % HeapLayout.granule == 0 && size <= HeapLayout.maximumStoreSize
            && size >= HeapLayout.firstBlockOfStore + 3 * HeapLayout.blockHeaderSize
        if initialize && index > 0 && validSize {
            _ = HeapInitializer.initializeStore(payload, size: size, index: index, nonce: nonce)
        }
        let first = index == 0 ? HeapLayout.firstBlockOfBase : HeapLayout.firstBlockOfStore
        let end = size - HeapLayout.blockHeaderSize
        guard size % HeapLayout.granule == 0, size <= HeapLayout.maximumStoreSize,
              end - first >= Int(HeapLayout.minimumBlock) * HeapLayout.granule,
              load64(payload + HeapLayout.storeSize) == UInt64(size),
              load64(payload + HeapLayout.storeFirstBlock) == UInt64(first),
              load64(payload + HeapLayout.storeEndBlock) == UInt64(end)
        else { throw corrupt("its store header does not match its \(size)-byte segment") }
        return MappedStore(view: StoreView(base: payload, size: size, first: first, end: end), owner: mapping)
    }

    /// Unregisters every store segment this process opened (they are persistent: nothing is removed).
    func closeAll() {
        let all = handles.withLock { handles in
            defer { handles = [:] }
            return Array(handles.values)
        }
        for handle in all { handle.close() }
    }

    // MARK: Removing stores

    /// Removes the stores of the heap `heap` with `nonce`.
    static func removeStores(heap: String, nonce: UInt64) {
        let prefix = storePrefix(heap: heap, nonce: nonce)
        for name in SharedMemoryObject.listNames() where name.hasPrefix(prefix) && Int(name.dropFirst(prefix.count)) != nil {
            try? SharedMemory.remove(name: name)
        }
    }

    /// Removes the stores of every heap once named `heap` but `keeping`'s (nil: all of them): the
    /// leftovers of heaps that were removed, or swept after their holders died.
    static func removeOrphanStores(heap: String, keeping: UInt64?, trusting trust: TrustedOwners) {
        let prefix = heap + "~"
        // The names first, then the heap's nonce: a store listed belongs to a heap that existed
        // before we looked at the name, so a heap created meanwhile keeps its stores.
        let candidates = SharedMemoryObject.listNames().filter { $0.hasPrefix(prefix) }
        if candidates.isEmpty { return }
        let current = keeping ?? (try? nonce(ofHeap: heap, trusting: trust))
        for name in candidates {
            let suffix = name.dropFirst(prefix.count)
            guard suffix.count >= 18, suffix[suffix.index(suffix.startIndex, offsetBy: 16)] == "-",
                  let storeNonce = UInt64(suffix.prefix(16), radix: 16),
                  Int(suffix.dropFirst(17)) != nil
            else { continue }
            if storeNonce == current { continue }
            guard (try? SharedMemory.info(name: name))?.kind == SegmentKind.heap.description else { continue }
            try? SharedMemory.remove(name: name)
        }
    }

    /// What the start of the segment `name`'s payload says, read without opening it (no
    /// registration, no sweeping): its store index and the heap's nonce, and whether it is store 0
    /// of a heap (its heap header's tag). Throws `incompatible` for a segment that is not a heap's.
    static func peek(_ name: String, trusting trust: TrustedOwners) throws(InterprocessError) -> (index: UInt32, nonce: UInt64, isHeap: Bool) {
        let osName = try SharedMemory.osName(for: name)
        let fd = try SegmentHandle.openChecked(name: name, osName: osName, trusting: trust, readOnly: true)
        defer { try? fd.close() }
        let (page, status) = try SegmentHandle.readHeader(fd: fd, name: name)
        try SegmentHeader(page.baseAddress!).validate(fileSize: status.size, name: name, kind: .heap)
        let count = HeapLayout.headerOffset + HeapLayout.heapNonce + 8
        guard let bytes = try? fd.read(count: count, at: Int64(SegmentHeader.size)), bytes.count == count else {
            throw InterprocessError(.corrupt, objectName: name, detail: "too short for a heap's store")
        }
        return bytes.withUnsafeBytes { payload in
            (payload.loadUnaligned(fromByteOffset: HeapLayout.storeIndex, as: UInt32.self),
             payload.loadUnaligned(fromByteOffset: HeapLayout.storeNonce, as: UInt64.self),
             payload.loadUnaligned(fromByteOffset: HeapLayout.storeTag, as: UInt32.self) == CIPC_TAG_HEAP_STORE
                && payload.loadUnaligned(fromByteOffset: HeapLayout.headerOffset + HeapLayout.heapTag, as: UInt32.self) == CIPC_TAG_HEAP)
        }
    }

    /// The nonce of the heap named `heap`; `incompatible` if the segment is a store, not a heap.
    static func nonce(ofHeap heap: String, trusting trust: TrustedOwners) throws(InterprocessError) -> UInt64 {
        let (index, nonce, isHeap) = try peek(heap, trusting: trust)
        guard isHeap, index == 0 else {
            throw InterprocessError(.incompatible, objectName: heap, detail: "a segment of kind heap that is not a heap (a store a heap grew into?)")
        }
        return nonce
    }
}
