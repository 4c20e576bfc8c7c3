public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A condition variable shared between processes, used with a ``ProcessMutex``.
///
/// ```swift
/// try await mutex.lock()
/// while !ready { try await condition.wait(on: mutex) }     // suspends the task, no thread blocks
/// try mutex.unlock()
///
/// try mutex.blockingLock()                                 // the same, blocking the thread
/// while !ready { try condition.blockingWait(on: mutex) }
/// try mutex.unlock()
/// ```
///
/// As with every condition variable, a wait may return spuriously: wait in a loop on your predicate.
/// Each ``signal()`` and ``broadcast()`` bumps a sequence word that waiters park on, so a signal sent
/// after a waiter released the mutex is never lost. The sequence wraps after 2^32 signals (a waiter
/// that slept through exactly 2^32 of them would miss the last: as with every futex condition).
///
/// A waiter count that a peer made impossible (above 2^31 − 1) makes waits throw `corrupt`, still
/// holding the mutex.
///
/// A process killed while waiting leaves `waiters` one too high (a spare wake-up call, nothing missed).
public final class ProcessCondition: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, used through atomics.

    /// Bytes of shared state: a `cipc_condition`.
    public static let stateSize = MemoryLayout<cipc_condition>.size

    let storage: SharedObjectStorage
    private let sequence: UnsafeMutablePointer<Atomic<UInt32>>
    private let waiters: UnsafeMutablePointer<Atomic<UInt32>>

    init(storage: SharedObjectStorage) {
        self.storage = storage
        sequence = atomic32(storage.base + fieldOffset(\cipc_condition.sequence))
        waiters = atomic32(storage.base + fieldOffset(\cipc_condition.waiters))
    }

    /// Creates a named condition variable.
    public static func create(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.create(ProcessCondition.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named condition variable. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.open(ProcessCondition.self, name: name, expecting: nil, trusting: trust)
    }

    /// Opens the named condition variable, or creates it; `created` says which. Of racing processes
    /// exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (condition: ProcessCondition, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            ProcessCondition.self, name: name, parameters: (), permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named condition variable `name` (`incompatible` if it is not one);
    /// processes that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ProcessCondition.self, name: name)
    }

    /// Initializes a condition variable at `offset` in `segment`.
    public static func create(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.place(ProcessCondition.self, in: segment, at: offset, parameters: ())
    }

    /// Uses the condition variable that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.attach(ProcessCondition.self, in: segment, at: offset, expecting: nil)
    }

    /// Places a condition variable in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in
    /// the segment's table of placed objects (`outOfMemory` if no room is free). Peers find it with
    /// ``open(in:named:)``.
    public static func create(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.place(ProcessCondition.self, in: segment, at: nil, named: name, parameters: ())
    }

    /// Uses the condition placed in `segment` under `name` (`notFound` if nothing is, `incompatible`
    /// if it is of another kind).
    public static func open(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessCondition {
        try SharedObjectStorage.attach(ProcessCondition.self, in: segment, named: name, expecting: nil)
    }

    /// The name of a named condition variable.
    public var name: String? { storage.name }

    /// Unregisters a named condition variable.
    public func close() { storage.close() }

    /// Atomically releases `mutex` and waits for a signal, suspending the task (no thread blocks),
    /// then re-acquires `mutex` — whatever happened — and returns how that went. The caller must hold
    /// `mutex`.
    /// - Throws: `timedOut` if no signal came within `timeout` (nil: no limit), `cancelled` if the
    ///   task is cancelled — holding `mutex` again in both cases; `notOwner` (waiting for nothing) if
    ///   this process does not hold `mutex`.
    @discardableResult
    public func wait(on mutex: ProcessMutex, timeout: Duration? = nil) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = Deadline(after: timeout)
        if Task.isCancelled { throw cancelledError() }
        let observed = try release(mutex)
        let outcome = await AsyncFutexWaiter.shared.wait(on: UnsafeMutableRawPointer(sequence), expected: observed, deadline: deadline)
        uncountWaiter(in: UnsafeMutableRawPointer(waiters))
        let acquisition = try await relock(mutex)
        switch outcome {
        case .cancelled: throw cancelledError()
        case .timedOut: try checkSignalled(since: observed)
        case .changed: break
        }
        return acquisition
    }

    /// Atomically releases `mutex` and waits for a signal, blocking the calling thread, then
    /// re-acquires `mutex`. The blocking form of ``wait(on:timeout:)``.
    @available(*, noasync, message: "use the async wait(on:timeout:) in async code")
    @discardableResult
    public func blockingWait(on mutex: ProcessMutex, timeout: Duration? = nil) throws(InterprocessError) -> ProcessMutex.Acquisition {
        let deadline = Deadline(after: timeout)
        let observed = try release(mutex)
        let result = Futex.wait(UnsafeMutableRawPointer(sequence), expected: observed, deadline: deadline)
        uncountWaiter(in: UnsafeMutableRawPointer(waiters))
        let acquisition = try mutex.blockingLock()
        if result == .timedOut { try checkSignalled(since: observed) }
        return acquisition
    }

    /// Reads the sequence, counts this waiter, then releases `mutex` (a signal after this point bumps
    /// the sequence we park on). Returns the sequence seen.
    private func release(_ mutex: ProcessMutex) throws(InterprocessError) -> UInt32 {
        let observed = sequence.pointee.load(ordering: .sequentiallyConsistent)
        try countWaiter(in: UnsafeMutableRawPointer(waiters), name: name)
        do { try mutex.unlock() } catch {
            uncountWaiter(in: UnsafeMutableRawPointer(waiters))
            throw error
        }
        return observed
    }

    /// After the wait timed out: `timedOut`, unless a signal came as the time ran out.
    private func checkSignalled(since observed: UInt32) throws(InterprocessError) {
        if sequence.pointee.load(ordering: .relaxed) == observed {
            throw InterprocessError(.timedOut, objectName: name, detail: "no signal within the timeout")
        }
    }

    private func cancelledError() -> InterprocessError {
        InterprocessError(.cancelled, objectName: name, detail: "the waiting task was cancelled")
    }

    /// Re-acquires the mutex even if the task was cancelled (a condition wait must return holding it):
    /// a cancelled task re-acquires it through a detached task, which is not cancelled.
    private func relock(_ mutex: ProcessMutex) async throws(InterprocessError) -> ProcessMutex.Acquisition {
        if !Task.isCancelled { return try await mutex.lock() }
        let result = await Task.detached { () async -> Result<ProcessMutex.Acquisition, InterprocessError> in
            do throws(InterprocessError) { return .success(try await mutex.lock()) } catch { return .failure(error) }
        }.value
        return try result.get()
    }

    /// Wakes one waiter.
    public func signal() {
        sequence.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if waiters.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wake(UnsafeMutableRawPointer(sequence), count: 1)
        }
    }

    /// Wakes every waiter.
    public func broadcast() {
        sequence.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if waiters.pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wakeAll(UnsafeMutableRawPointer(sequence))
        }
    }
}

// MARK: - The shared object

extension ProcessCondition: SharedObject, SharedObjectKind {
    static var segmentKind: SegmentKind { .condition }
    static var tag: UInt32 { CIPC_TAG_CONDITION }
    static var tagOffset: Int { fieldOffset(\cipc_condition.tag) }
    static var kindName: String { "condition" }
    static var minimumSize: Int { stateSize }

    /// Sequence 0, nobody waiting: all zeros.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with _: Void) {}

    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= MemoryLayout<cipc_condition>.size else { return SharedObjectDescription(details: [:]) }
        let state = copy.loadUnaligned(as: cipc_condition.self)
        return SharedObjectDescription(
            details: ["sequence": "\(state.sequence)", "waiters": "\(state.waiters)"],
            summary: state.waiters > 0 ? "\(state.waiters) waiting" : "")
    }
}

extension SegmentKind {
    /// A named ``ProcessCondition``.
    public static let condition = SegmentKind(rawValue: CIPC_KIND_CONDITION)
}
