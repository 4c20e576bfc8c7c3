import CInterprocess
import InterprocessSystem
import Synchronization

/// A segment's table of placed objects (``PlacementTable``) and the robust mutex that guards it,
/// for one ``SharedMemory`` handle (made once, on first use, and kept: the mutex carries this
/// process's owner lease on the file).
///
/// `@unchecked Sendable`: the table points into the mapping that `lock`'s storage keeps alive, and
/// is only touched while `lock` is held (by at most one thread of all the processes).
final class SegmentPlacements: @unchecked Sendable {
    let table: PlacementTable
    private let lock: ProcessMutex

    /// How long a change waits for the table's lock (held only for a few stores, or while an object
    /// is initialized, by a live process; a dead holder is taken over within ~25 ms).
    static let lockWait: Duration = .seconds(10)

    private init(table: PlacementTable, lock: ProcessMutex) {
        self.table = table
        self.lock = lock
    }

    /// The table of `segment`, with its lock.
    static func of(_ segment: SharedMemory) throws(InterprocessError) -> SegmentPlacements {
        if let cached = segment.placementCache.withLock({ $0 }) { return cached }
        let mapping = try segment.handle.mapping()
        let table = PlacementTable(header: mapping.base, payloadSize: segment.size, segmentName: segment.name)
        let storage = SharedObjectStorage.internalState(
            at: table.lockState, available: MemoryLayout<cipc_mutex>.size, mapping: mapping, lease: try segment.handle.ownerLease())
        let made = SegmentPlacements(table: table, lock: ProcessMutex(storage: storage))
        return segment.placementCache.withLock { cache in
            if let cache { return cache }
            cache = made
            return made
        }
    }

    /// Runs `body` holding the table's lock, after repairing what a holder that died left.
    func withLock<R>(_ body: (PlacementTable) throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        let acquisition: ProcessMutex.Acquisition
        do throws(InterprocessError) {
            acquisition = try lock.blockingLock(timeout: Self.lockWait)
        } catch {
            var error = error
            error.objectName = table.segmentName
            if error.code == .timedOut {
                error.detail = "another process held its table of placed objects for \(Self.lockWait)"
            }
            throw error
        }
        defer { try? lock.unlock() }
        // Entries being placed exist only while their placer holds the lock: any seen now were left
        // by a holder that died (or written by a hostile peer).
        try table.repair()
        if acquisition == .previousOwnerDied { lock.markConsistent() }
        return try body(table)
    }

    /// The used entries, read under the lock.
    func entries() throws(InterprocessError) -> [PlacementTable.Entry] {
        try withLock { table throws(InterprocessError) in try table.read() }
    }
}

extension SharedMemory {
    /// The objects placed in this segment, and the stored value (the value frame that `store` /
    /// `write` keep at offset 0, with both its slots), in the order of their offsets. Throws `corrupt` if the segment's table of placed
    /// objects was damaged.
    public func placedObjects() throws(InterprocessError) -> [PlacedObject] {
        try SegmentPlacements.of(self).entries().sorted { $0.offset < $1.offset }.map(\.object)
    }

    /// Removes the object placed at `offset` from the segment's table of placed objects, so that its
    /// bytes can take something else: zeroes its tag (a later open there fails), then frees its
    /// entry. Processes that still use the object go on touching those bytes: remove an object only
    /// when nobody uses it. Throws `notFound` if no object starts at `offset` (the stored value is
    /// not removed this way: it is replaced by the next `store`).
    public func removePlacedObject(at offset: Int) throws(InterprocessError) {
        let mapping = try handle.mapping()
        try withExtendedLifetime(mapping) { () throws(InterprocessError) in
            try SegmentPlacements.of(self).withLock { table throws(InterprocessError) in
                guard let entry = try table.read().first(where: { $0.offset == offset && !$0.isStoredValue }) else {
                    throw InterprocessError(.notFound, objectName: name, detail: "no object is placed at offset \(offset)")
                }
                atomic32(mapping.base + SegmentHeader.size + entry.offset + entry.tagOffset).pointee.store(0, ordering: .releasing)
                table.free(entry.index)
            }
        }
    }
}
