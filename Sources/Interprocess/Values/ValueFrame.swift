import CInterprocess
import InterprocessSystem
import Synchronization

/// A stored value that readers never see torn or missing while a writer replaces it: the frame
/// behind ``SharedMemory/store(_:)`` / ``SharedMemory/write(_:)`` and ``SharedWatchedValue``
/// (`cipc_value_frame` in `CInterprocessValue.h`, where the protocol is written down field by field).
///
/// A 128-byte header and two slots of ``capacity`` bytes (double buffering). `sequence` counts the
/// stores: 0 while nothing was stored, else store number n is in slot n & 1. A writer takes the
/// frame's robust writer lock, writes the new value into the slot that is *not* current, sets its
/// length and publishes it by storing `sequence` + 1; readers copy the current slot and check that
/// `sequence` did not move meanwhile (a seqlock), retrying if it did. Readers never write and never
/// wait for a writer; a writer never waits for readers, only for another writer's copy.
///
/// What a writer killed at each step of a store leaves behind (each step is a crash point, tested):
/// - **after taking the lock** (`value.store.afterLock`), **in the middle of copying**
///   (`value.store.midCopy`) or **after copying and setting the length, before publishing**
///   (`value.store.beforePublish`): `sequence` still names the old slot, which nobody wrote: readers
///   get the **old value**. The half-written slot is not current; the next store overwrites it.
/// - **after publishing, before releasing the lock** (`value.store.afterPublish`): readers get the
///   **new value**.
/// - in every case the lock names a dead process: the next writer takes it over (at once if the
///   writer was already dead when it came, else within ~25 ms) and counts a recovery; there is nothing
///   to repair, since the frame is consistent after every step.
///
/// Nothing in it is trusted: the tag, the slot capacity (against the bytes the frame may use) and
/// each length (against the capacity) are checked on every access; a value no writer could have
/// written is `corrupt`.
///
/// `@unchecked Sendable`: `base` points into a mapping that its owner (a ``SharedMemory`` call or a
/// ``SharedWatchedValue``'s storage) keeps alive while the frame is used; the shared words are touched
/// through atomics, the slots only as the protocol above allows.
struct ValueFrame: @unchecked Sendable {
    /// Bytes of the header (`cipc_value_frame`); the slots follow it.
    static let headerSize = Int(CIPC_VALUE_FRAME_HEADER_SIZE)
    /// The largest capacity a frame may have (so that ``extent(capacity:)`` never overflows).
    static let maximumCapacity = Int(Int32.max) * 1024

    /// The bytes a frame for values of up to `capacity` bytes takes: its header and two slots of
    /// `capacity` rounded up to 8. **The one place where a frame's extent is computed** (the segment's
    /// table of placed objects asks it too).
    static func extent(capacity: Int) -> Int {
        headerSize + 2 * slotSize(capacity)
    }

    /// A slot's size: `capacity` rounded up to 8.
    static func slotSize(_ capacity: Int) -> Int { (capacity + 7) / 8 * 8 }

    /// The largest capacity (a multiple of 8) whose frame fits in `bytes`; nil if not even an empty
    /// value's does.
    static func capacity(fitting bytes: Int) -> Int? {
        guard bytes >= headerSize else { return nil }
        return min((bytes - headerSize) / 2 / 8 * 8, maximumCapacity)
    }

    /// The frame's first byte.
    let base: UnsafeMutableRawPointer
    /// How many bytes from `base` on the frame may use (what a capacity read from it is checked against).
    let available: Int
    /// The object's name, for errors.
    let name: String?

    private var sequence: UnsafeMutablePointer<Atomic<UInt64>> { atomic64(base + fieldOffset(\cipc_value_frame.sequence)) }
    private var tag: UnsafeMutablePointer<Atomic<UInt32>> { atomic32(base + fieldOffset(\cipc_value_frame.tag)) }
    /// Where watchers park: the low half of `sequence` (little-endian).
    var word: UnsafeMutableRawPointer { base + fieldOffset(\cipc_value_frame.sequence) }
    var waiters: UnsafeMutableRawPointer { base + fieldOffset(\cipc_value_frame.waiters) }
    private func length(_ slot: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        atomic64(base + fieldOffset(\cipc_value_frame.length) + 8 * slot)
    }
    private func slot(_ index: Int, capacity: Int) -> UnsafeMutableRawPointer {
        base + Self.headerSize + index * Self.slotSize(capacity)
    }

    /// The writer lock's state: a `cipc_mutex` at the frame's start.
    static let writerOffset = fieldOffset(\cipc_value_frame.writer)

    // MARK: Layout

    /// Lays out a zero-filled frame for values of up to `capacity` bytes (whoever lays it out is
    /// alone: a creator before the object has a name, or a writer holding the writer lock), and
    /// stores `initial` as store number 1 if given (it fits: the caller checked). The tag goes last.
    func layOut(capacity: Int, initial: [UInt8]? = nil) {
        atomic32(base + Self.writerOffset + fieldOffset(\cipc_mutex.tag)).pointee.store(CIPC_TAG_MUTEX, ordering: .relaxed)
        base.storeBytes(of: UInt64(capacity), toByteOffset: fieldOffset(\cipc_value_frame.slot_capacity), as: UInt64.self)
        if let initial {
            copy(initial, to: slot(1, capacity: capacity))
            length(1).pointee.store(UInt64(initial.count), ordering: .relaxed)
            sequence.pointee.store(1, ordering: .relaxed)
        }
        tag.pointee.store(CIPC_TAG_VALUE_FRAME, ordering: .releasing)
    }

    /// The frame's slot capacity after checking it, or nil if it was never laid out (a zero-filled
    /// segment, or one too small for a frame: nothing stored yet). `corrupt` if it holds something else or a capacity that does
    /// not fit the bytes it may use.
    func capacity() throws(InterprocessError) -> Int? {
        guard available >= Self.headerSize else { return nil } // too small for one: nothing was ever stored
        let tag = tag.pointee.load(ordering: .acquiring)
        if tag == 0 { return nil }
        guard tag == CIPC_TAG_VALUE_FRAME else {
            throw InterprocessError(.corrupt, objectName: name, detail: "no value frame (tag \(SharedObjectStorage.tagText(tag)))")
        }
        let stored = base.load(fromByteOffset: fieldOffset(\cipc_value_frame.slot_capacity), as: UInt64.self)
        guard stored % 8 == 0, stored <= UInt64((available - Self.headerSize) / 2) else {
            throw InterprocessError(.corrupt, objectName: name, detail: "slot capacity \(stored) does not fit the \(available) bytes of the value frame")
        }
        return Int(stored)
    }

    /// The byte range the frame covers from `base` on, once laid out (nil before): `0..<extent`.
    func extent() throws(InterprocessError) -> Int? {
        try capacity().map(Self.extent(capacity:))
    }

    // MARK: Storing

    /// Stores `bytes` as the new value, taking turns with other writers through `writer` (the lock
    /// at the frame's start). A frame never laid out is laid out first with `capacityIfNew` (nil:
    /// `corrupt`, the frame must exist). Throws `invalidSize` if `bytes` do not fit a slot — the stored
    /// value is then unchanged.
    @available(*, noasync)
    func store(_ bytes: [UInt8], writer: ProcessMutex, capacityIfNew: Int?) throws(InterprocessError) {
        var capacity = try capacity()
        if let capacity { try check(bytes.count, fits: capacity) }
        if try writer.blockingLock() == .previousOwnerDied {
            // A store killed at any step leaves a consistent frame: nothing to repair.
            atomic64(base + fieldOffset(\cipc_value_frame.recoveries)).pointee.wrappingAdd(1, ordering: .relaxed)
            writer.markConsistent()
        }
        defer { try? writer.unlock() }
        HotPath.crashPoint("value.store.afterLock")
        if capacity == nil {
            capacity = try self.capacity()
            if capacity == nil {
                guard let capacityIfNew else {
                    throw InterprocessError(.corrupt, objectName: name, detail: "the value frame was never laid out")
                }
                layOut(capacity: capacityIfNew)
                capacity = capacityIfNew
            }
        }
        guard let capacity else { return }
        try check(bytes.count, fits: capacity)
        // Only writers change `sequence`, and we hold the lock.
        let current = sequence.pointee.load(ordering: .relaxed)
        let next = current == .max ? 2 : current + 1 // (0 means "nothing stored"; 2 keeps the parity)
        let index = Int(next & 1)
        // Readers that copy this slot must see the publish of `current` (which made this slot
        // non-current) before any byte written here: the seqlock's release fence.
        atomicMemoryFence(ordering: .releasing)
        let half = bytes.count / 2
        copy(bytes[..<half], to: slot(index, capacity: capacity))
        HotPath.crashPoint("value.store.midCopy")
        copy(bytes[half...], to: slot(index, capacity: capacity) + half)
        length(index).pointee.store(UInt64(bytes.count), ordering: .relaxed)
        HotPath.crashPoint("value.store.beforePublish")
        sequence.pointee.store(next, ordering: .sequentiallyConsistent)
        HotPath.crashPoint("value.store.afterPublish")
        // The publish (sequentially consistent) comes before this read; a watcher counts itself
        // before its last look: one of them sees the other.
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            _ = Futex.wakeAll(word)
        }
    }

    private func check(_ count: Int, fits capacity: Int) throws(InterprocessError) {
        guard count <= capacity else {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "a value of \(count) bytes does not fit: the value frame holds values of up to \(capacity) bytes (its capacity, fixed when it was created); the stored value is unchanged")
        }
    }

    private func copy(_ bytes: some Collection<UInt8>, to destination: UnsafeMutableRawPointer) {
        _ = bytes.withContiguousStorageIfAvailable { source in
            if let start = source.baseAddress, source.count > 0 {
                destination.copyMemory(from: start, byteCount: source.count)
            }
        }
    }

    // MARK: Reading

    /// How many times a read retries when a writer keeps replacing the value while it copies, before
    /// it gives up with `timedOut` (a reader would need a writer storing faster than one copy, this
    /// many times in a row: a peer that only bumps the counter, not a real writer).
    static let maximumReadAttempts = 1_000_000

    /// The number of the current store (0: nothing stored yet).
    var version: UInt64 { sequence.pointee.load(ordering: .acquiring) }

    /// The current value's bytes and its store number, or nil if nothing was stored. Never torn: a
    /// copy that a writer may have overlapped is made again.
    func read() throws(InterprocessError) -> (version: UInt64, bytes: [UInt8])? {
        guard let capacity = try capacity() else { return nil }
        var attempts = 0
        while true {
            let observed = sequence.pointee.load(ordering: .acquiring)
            if observed == 0 { return nil }
            let index = Int(observed & 1)
            let count = length(index).pointee.load(ordering: .relaxed)
            if count <= UInt64(capacity) {
                let source = slot(index, capacity: capacity)
                let bytes = [UInt8](unsafeUninitializedCapacity: Int(count)) { buffer, initialized in
                    let total = Int(count), half = total / 2
                    if total > 0 {
                        let destination = UnsafeMutableRawPointer(buffer.baseAddress!)
                        destination.copyMemory(from: source, byteCount: half)
                        HotPath.crashPoint("value.read.midCopy") // (tests stop a reader here and overtake it)
                        (destination + half).copyMemory(from: source + half, byteCount: total - half)
                    }
                    initialized = total
                }
                atomicMemoryFence(ordering: .acquiring)
                if sequence.pointee.load(ordering: .relaxed) == observed { return (observed, bytes) }
            } else if sequence.pointee.load(ordering: .acquiring) == observed {
                throw InterprocessError(.corrupt, objectName: name,
                    detail: "the stored length \(count) exceeds the value frame's capacity \(capacity)")
            }
            attempts += 1
            if attempts >= Self.maximumReadAttempts {
                throw InterprocessError(.timedOut, objectName: name,
                    detail: "the value changed during each of \(attempts) attempts to copy it")
            }
            if attempts > 16 { SpinPolicy.yield() }
        }
    }

    // MARK: Watching

    /// Where watchers wait for the next store: the low half of `sequence`.
    var site: WaitSite { WaitSite(word: word, waiters: waiters, name: name) }

    /// One attempt of a watcher: the current value if its store number is not `version` (and
    /// something was stored), else park until `sequence` changes.
    func changeAttempt(after version: UInt64) throws(InterprocessError) -> WaitStep<(version: UInt64, bytes: [UInt8])> {
        let current = sequence.pointee.load(ordering: .sequentiallyConsistent)
        if current != version && current != 0 {
            if let value = try read() { return .done(value) }
            return .retry
        }
        return .park(expected: UInt32(truncatingIfNeeded: current))
    }

    // MARK: Describing

    /// Version, current size, capacity, waiters, writer, recoveries, read from a copy of the frame
    /// (for `ipc inspect`): every number is shown as found, none is followed.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> [String: String] {
        guard copy.count >= headerSize else { return [:] }
        let frame = copy.loadUnaligned(as: cipc_value_frame.self)
        let laidOut = frame.tag == CIPC_TAG_VALUE_FRAME
        let current = frame.sequence
        let size = current == 0 ? 0 : (current & 1 == 0 ? frame.length.0 : frame.length.1)
        let writer = frame.writer.owner
        return [
            "version": "\(laidOut ? current : 0)",
            "size": current == 0 || !laidOut ? "-" : "\(size)",
            "capacity": laidOut ? "\(frame.slot_capacity)" : "-",
            "waiters": "\(frame.waiters)",
            "writer": writer == 0 ? "-" : "\(OwnerLease.displayPID(of: writer))",
            "writerAlive": writer == 0 ? "-" : (isAlive(writer) ? "yes" : "no"),
            "recoveries": "\(frame.recoveries)",
        ]
    }
}

extension SharedObjectStorage {
    /// The storage of a state nested `offset` bytes into this one (a value frame's writer lock),
    /// sharing its mapping and lease; it has no name of its own to close.
    func nested(at offset: Int) -> SharedObjectStorage {
        SharedObjectStorage(base: base + offset, available: available - offset, mapping: mapping, segment: nil, lease: lease)
    }
}
