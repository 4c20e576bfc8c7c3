import CInterprocess
import InterprocessSystem

// MARK: - The shared object

/// A heap is one kind of shared object: store 0 is its state, a named segment of kind `heap` made,
/// opened and removed by ``SharedObjectStorage``. The stores growth adds are the heap's own business
/// (``HeapSegments``); `ipc ls` lists them as segments of kind `heap` too, and describes each.
extension SharedHeap: SharedObject, SharedObjectKind {
    /// What creating a heap takes.
    struct Parameters {
        var capacity: Int
        var maximumCapacity: Int?
    }

    static var segmentKind: SegmentKind { .heap }
    static var tag: UInt32 { CIPC_TAG_HEAP }
    static var tagOffset: Int { HeapLayout.headerOffset + HeapLayout.heapTag }
    static var kindName: String { "heap" }
    static var recordsOwners: Bool { true }
    static var minimumSize: Int { HeapLayout.firstBlockOfBase + Int(HeapLayout.minimumBlock) * HeapLayout.granule + HeapLayout.blockHeaderSize }

    static func size(for parameters: Parameters) throws(InterprocessError) -> Int {
        guard parameters.capacity >= minimumCapacity, parameters.capacity <= HeapLayout.maximumStoreSize else {
            throw InterprocessError(.invalidSize, detail: "a heap's capacity is \(minimumCapacity) to \(HeapLayout.maximumStoreSize) bytes, not \(parameters.capacity)")
        }
        let size = HeapLayout.roundUp(parameters.capacity, to: systemPageSize)
        if let maximum = parameters.maximumCapacity, maximum < size {
            throw InterprocessError(.invalidSize, detail: "the maximum capacity \(maximum) is below the capacity \(size)")
        }
        return size
    }

    /// Writes store 0: a random nonce and first tag, one free block; the storage publishes the tag.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        var generator = SystemRandomNumberGenerator()
        HeapInitializer.initializeHeap(
            state, size: size, nonce: UInt64.random(in: 1...UInt64.max, using: &generator),
            maximumCapacity: parameters.maximumCapacity ?? size, growthSize: size,
            firstTag: UInt32.random(in: 1...HeapLayout.tagMask, using: &generator))
    }

    /// Checks what never changes after creation: the layout version, the store header of store 0,
    /// the nonce, the maximum and growth sizes. (Blocks, lists and the journal are checked where
    /// they are used, and by ``check()``.)
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting _: Parameters?) throws(InterprocessError) {
        let header = state + HeapLayout.headerOffset
        let version = load32(header + HeapLayout.heapVersion)
        guard version == CIPC_HEAP_VERSION else {
            throw InterprocessError(.incompatible, detail: "heap layout version \(version); this library reads \(CIPC_HEAP_VERSION)")
        }
        let nonce = load64(header + HeapLayout.heapNonce)
        let maximum = load64(header + HeapLayout.heapMaximumCapacity)
        let growth = load64(header + HeapLayout.heapGrowthSize)
        guard nonce != 0, maximum >= UInt64(available), maximum <= UInt64(Int64.max),
              growth > 0, growth <= UInt64(HeapLayout.maximumStoreSize)
        else { throw InterprocessError(.corrupt, detail: "the heap header is inconsistent") }
        guard available % HeapLayout.granule == 0, available <= HeapLayout.maximumStoreSize,
              load32(state + HeapLayout.storeTag) == CIPC_TAG_HEAP_STORE,
              load32(state + HeapLayout.storeIndex) == 0,
              load64(state + HeapLayout.storeNonce) == nonce,
              load64(state + HeapLayout.storeSize) == UInt64(available),
              load64(state + HeapLayout.storeFirstBlock) == UInt64(HeapLayout.firstBlockOfBase),
              load64(state + HeapLayout.storeEndBlock) == UInt64(available - HeapLayout.blockHeaderSize)
        else { throw InterprocessError(.corrupt, detail: "store 0's header does not match its \(available)-byte segment") }
    }

    /// What the first 4 KB of a heap's store tell (the header is read from a copy, never trusted):
    /// for store 0 the capacity, stores, lock, clients and recoveries; for a store growth added,
    /// which store it is.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        func u32(_ offset: Int) -> UInt32? { offset + 4 <= copy.count ? copy.loadUnaligned(fromByteOffset: offset, as: UInt32.self) : nil }
        func u64(_ offset: Int) -> UInt64? { offset + 8 <= copy.count ? copy.loadUnaligned(fromByteOffset: offset, as: UInt64.self) : nil }
        guard u32(HeapLayout.storeTag) == CIPC_TAG_HEAP_STORE, let index = u32(HeapLayout.storeIndex),
              let storeSize = u64(HeapLayout.storeSize)
        else { return SharedObjectDescription(details: [:], summary: "not a heap store") }
        let nonce = String(u64(HeapLayout.storeNonce) ?? 0, radix: 16)
        if index != 0 {
            return SharedObjectDescription(
                details: ["store": "\(index)", "nonce": nonce, "storeSize": "\(storeSize)"],
                summary: "store \(index) of a heap, \(storeSize) bytes")
        }
        let header = HeapLayout.headerOffset
        guard u32(header + HeapLayout.heapTag) == CIPC_TAG_HEAP,
              let capacity = u64(header + HeapLayout.heapCapacity), let maximum = u64(header + HeapLayout.heapMaximumCapacity),
              let stores = u32(header + HeapLayout.heapStoreCount), let recoveries = u64(header + HeapLayout.heapRecoveries)
        else { return SharedObjectDescription(details: [:], summary: "a heap with a damaged header") }
        let lock = header + HeapLayout.heapLock
        let owner = u64(lock + fieldOffset(\cipc_mutex.owner)) ?? 0
        var clients = 0
        for index in 1..<HeapLayout.clientCount {
            if let token = u64(header + HeapLayout.heapClients + index * HeapLayout.clientStride + HeapLayout.clientToken),
               token != 0, isAlive(token) { clients += 1 }
        }
        let pending = u32(header + HeapLayout.heapJournal + HeapLayout.journalCount) ?? 0
        var details = [
            "capacity": "\(capacity)", "maximumCapacity": "\(maximum)", "stores": "\(stores)", "nonce": nonce,
            "recoveries": "\(recoveries)", "clientsAlive": "\(clients)", "journal": "\(pending)",
            "locked": owner == 0 ? "no" : "yes",
        ]
        if owner != 0 {
            details["ownerPID"] = "\(OwnerLease.displayPID(of: owner))"
            details["ownerAlive"] = isAlive(owner) ? "yes" : "no"
        }
        return SharedObjectDescription(
            details: details,
            summary: "\(capacity) of \(maximum) bytes in \(stores) store\(stores == 1 ? "" : "s"), \(clients) process\(clients == 1 ? "" : "es")")
    }
}

extension SegmentKind {
    /// A ``SharedHeap``'s store 0 (named like the heap) and the stores it grows into.
    public static let heap = SegmentKind(rawValue: CIPC_KIND_HEAP)
}
