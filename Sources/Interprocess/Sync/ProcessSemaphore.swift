public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A counting semaphore shared between processes.
///
/// ``wait(timeout:)`` takes one unit, waiting while the count is 0; ``signal(count:)`` adds units and
/// wakes that many waiters. `k` signals release exactly `k` waits.
///
/// ```swift
/// let items = try ProcessSemaphore.create(name: "items", value: 0)   // or .open(name:) in a peer
/// try items.signal()                       // producer
/// try await items.wait()                   // consumer: suspends the task while the count is 0
/// try items.blockingWait(timeout: .seconds(1))   // blocks the thread (not in async code)
/// if items.tryWait() { … }                 // never waits
/// ```
///
/// What a process killed at each step leaves behind: killed while parked, `waiters` stays one too
/// high (unlockers make a spare wake-up call; nobody misses one); killed after taking a unit, the unit
/// is gone with it — as with any semaphore, a unit is a resource the taker was to give back.
public final class ProcessSemaphore: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, used through atomics.

    /// Bytes of shared state: a `cipc_semaphore`.
    public static let stateSize = MemoryLayout<cipc_semaphore>.size
    /// The largest count.
    public static let maximumCount = Int(Int32.max)

    let storage: SharedObjectStorage
    private let count: UnsafeMutablePointer<Atomic<UInt32>>
    private let waiters: UnsafeMutableRawPointer

    init(storage: SharedObjectStorage) {
        self.storage = storage
        count = atomic32(storage.base + fieldOffset(\cipc_semaphore.count))
        waiters = storage.base + fieldOffset(\cipc_semaphore.waiters)
    }

    /// Creates a named semaphore with `value` units. Negative values are rejected (`invalidArgument`).
    public static func create(
        name: String, value: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.create(ProcessSemaphore.self, name: name, parameters: value, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named semaphore. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.open(ProcessSemaphore.self, name: name, expecting: nil, trusting: trust)
    }

    /// Opens the named semaphore (which keeps its count), or creates it with `value` units; `created`
    /// says which. Of racing processes exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, value: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (semaphore: ProcessSemaphore, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            ProcessSemaphore.self, name: name, parameters: value, permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named semaphore `name` (`incompatible` if it is not a semaphore);
    /// processes that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ProcessSemaphore.self, name: name)
    }

    /// Initializes a semaphore with `value` units at `offset` in `segment`.
    public static func create(in segment: SharedMemory, at offset: Int, value: Int) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.place(ProcessSemaphore.self, in: segment, at: offset, parameters: value)
    }

    /// Uses the semaphore that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.attach(ProcessSemaphore.self, in: segment, at: offset, expecting: nil)
    }

    /// Places a semaphore with `value` units in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in
    /// the segment's table of placed objects (`outOfMemory` if no room is free). Peers find it with
    /// ``open(in:named:)``.
    public static func create(in segment: SharedMemory, named name: String, value: Int) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.place(ProcessSemaphore.self, in: segment, at: nil, named: name, parameters: value)
    }

    /// Uses the semaphore placed in `segment` under `name` (`notFound` if nothing is, `incompatible`
    /// if it is of another kind).
    public static func open(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessSemaphore {
        try SharedObjectStorage.attach(ProcessSemaphore.self, in: segment, named: name, expecting: nil)
    }

    /// The name of a named semaphore.
    public var name: String? { storage.name }

    /// Unregisters a named semaphore.
    public func close() { storage.close() }

    /// The current count (a snapshot).
    public var value: Int { Int(count.pointee.load(ordering: .relaxed)) }

    /// Where waiters park: the count.
    private var site: WaitSite { WaitSite(word: UnsafeMutableRawPointer(count), waiters: waiters, name: name) }

    /// Takes one unit, suspending the task (no thread blocks) while the count is 0, for at most
    /// `timeout` — nil: as long as it takes.
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having taken nothing; `corrupt` for an impossible shared count.
    public func wait(timeout: Duration? = nil) async throws(InterprocessError) {
        try await site.asyncWait(until: Deadline(after: timeout), waitAttempt)
    }

    /// Takes one unit, blocking the calling thread while the count is 0, for at most `timeout` — nil:
    /// as long as it takes. The blocking form of ``wait(timeout:)``.
    @available(*, noasync, message: "use the async wait(timeout:) in async code")
    @inline(__always)
    public func blockingWait(timeout: Duration? = nil) throws(InterprocessError) {
        if tryWait() { return }
        try site.blockingWait(until: Deadline(after: timeout), waitAttempt)
    }

    /// Takes one unit if one is available; never blocks. (A count above ``maximumCount``, which only a
    /// damaged shared state holds, is no unit: false; the waits and ``signal(count:)`` throw `corrupt`.)
    @inline(__always)
    public func tryWait() -> Bool {
        var current = count.pointee.load(ordering: .relaxed)
        while current > 0 && current <= UInt32(Self.maximumCount) {
            let (exchanged, original) = count.pointee.compareExchange(expected: current, desired: current - 1, ordering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Adds `count` units (at least 1) and wakes up to `count` waiters. Throws `invalidArgument` if
    /// `count` is not positive or the total would exceed ``maximumCount``, `corrupt` if the shared
    /// count already does.
    @inline(__always)
    public func signal(count units: Int = 1) throws(InterprocessError) {
        guard units > 0, units <= Self.maximumCount else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "signal count \(units) must be in 1...\(Self.maximumCount)")
        }
        var current = count.pointee.load(ordering: .relaxed)
        while true {
            guard current <= UInt32(Self.maximumCount) else { throw corruptCount(current) }
            guard Int(current) + units <= Self.maximumCount else {
                throw InterprocessError(.invalidArgument, objectName: name, detail: "the count would exceed \(Self.maximumCount)")
            }
            let (exchanged, original) = count.pointee.compareExchange(
                expected: current, desired: current + UInt32(units), ordering: .sequentiallyConsistent)
            if exchanged { break }
            current = original
        }
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wake(UnsafeMutableRawPointer(count), count: Int32(units))
        }
    }

    private func waitAttempt(_: Bool) throws(InterprocessError) -> WaitStep<Void> {
        let current = count.pointee.load(ordering: .relaxed)
        if current == 0 { return .park(expected: current) }
        guard current <= UInt32(Self.maximumCount) else { throw corruptCount(current) }
        return count.pointee.compareExchange(expected: current, desired: current - 1, ordering: .acquiring).exchanged ? .done(()) : .retry
    }

    /// A count above ``maximumCount`` cannot come from `signal`: a peer wrote it.
    private func corruptCount(_ value: UInt32) -> InterprocessError {
        InterprocessError(.corrupt, objectName: name, detail: "impossible semaphore count \(value) (the maximum is \(Self.maximumCount))")
    }
}

// MARK: - The shared object

extension ProcessSemaphore: SharedObject, SharedObjectKind {
    /// The initial count.
    typealias Parameters = Int

    static var segmentKind: SegmentKind { .semaphore }
    static var tag: UInt32 { CIPC_TAG_SEMAPHORE }
    static var tagOffset: Int { fieldOffset(\cipc_semaphore.tag) }
    static var kindName: String { "semaphore" }
    static var minimumSize: Int { stateSize }

    static func size(for value: Int) throws(InterprocessError) -> Int {
        guard value >= 0 else {
            throw InterprocessError(.invalidArgument, detail: "a semaphore's initial value must not be negative (\(value))")
        }
        guard value <= maximumCount else {
            throw InterprocessError(.invalidArgument, detail: "initial value \(value) exceeds \(maximumCount)")
        }
        return stateSize
    }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with value: Int) {
        atomic32(state + fieldOffset(\cipc_semaphore.count)).initialize(to: Atomic(UInt32(value)))
    }

    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= MemoryLayout<cipc_semaphore>.size else { return SharedObjectDescription(details: [:]) }
        let state = copy.loadUnaligned(as: cipc_semaphore.self)
        return SharedObjectDescription(
            details: ["count": "\(state.count)", "waiters": "\(state.waiters)"],
            summary: "count \(state.count)" + (state.waiters > 0 ? ", \(state.waiters) waiting" : ""))
    }
}

extension SegmentKind {
    /// A named ``ProcessSemaphore``.
    public static let semaphore = SegmentKind(rawValue: CIPC_KIND_SEMAPHORE)
}
