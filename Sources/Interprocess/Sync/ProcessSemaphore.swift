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

    /// Bytes of shared state.
    public static let stateSize = 64
    /// The largest count.
    public static let maximumCount = Int(Int32.max)

    let storage: PrimitiveStorage
    private let count: UnsafeMutablePointer<Atomic<UInt32>>
    private let waiters: UnsafeMutableRawPointer

    private init(storage: PrimitiveStorage) {
        self.storage = storage
        count = atomic32(storage.base)
        waiters = storage.base + 4
    }

    private static func initializer(_ value: Int, name: String) throws(InterprocessError) -> (UnsafeMutableRawPointer) -> Void {
        guard value >= 0 else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "a semaphore's initial value must not be negative (\(value))")
        }
        guard value <= maximumCount else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "initial value \(value) exceeds \(maximumCount)")
        }
        return { base in atomic32(base).initialize(to: Atomic(UInt32(value))) }
    }

    /// Creates a named semaphore with `value` units. Negative values are rejected (`invalidArgument`).
    public static func create(
        name: String, value: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessSemaphore {
        ProcessSemaphore(storage: try PrimitiveStorage.create(
            name: name, kind: .semaphore, tag: CIPC_TAG_SEMAPHORE, permissions: permissions, lifetime: lifetime,
            initialize: initializer(value, name: name)))
    }

    /// Opens a named semaphore. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessSemaphore {
        ProcessSemaphore(storage: try PrimitiveStorage.open(name: name, kind: .semaphore, tag: CIPC_TAG_SEMAPHORE, trusting: trust))
    }

    /// Initializes a semaphore with `value` units at `offset` in `segment`.
    public static func create(in segment: SharedMemory, at offset: Int, value: Int) throws(InterprocessError) -> ProcessSemaphore {
        ProcessSemaphore(storage: try PrimitiveStorage.place(
            in: segment, at: offset, tag: CIPC_TAG_SEMAPHORE, what: "semaphore", initialize: initializer(value, name: segment.name)))
    }

    /// Uses the semaphore that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessSemaphore {
        ProcessSemaphore(storage: try PrimitiveStorage.place(in: segment, at: offset, tag: CIPC_TAG_SEMAPHORE, what: "semaphore", initialize: nil))
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

    static func describe(_ state: UnsafeRawBufferPointer) -> [String: String] {
        guard state.count >= 8 else { return [:] }
        return ["count": "\(state.load(as: UInt32.self))", "waiters": "\(state.load(fromByteOffset: 4, as: UInt32.self))"]
    }
}
