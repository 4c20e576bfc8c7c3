public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// An event shared between processes, like a Win32 event.
///
/// - ``Mode/manualReset``: ``set()`` releases every waiter, and the event stays set (later waits
///   return at once) until ``reset()``.
/// - ``Mode/autoReset``: ``set()`` releases one waiter and the event resets as that waiter returns;
///   with nobody waiting it stays set until one wait consumes it. Setting a set event does nothing.
///
/// ```swift
/// let ready = try ProcessEvent.create(name: "ready", mode: .manualReset)   // or .open(name:)
/// ready.set()                              // in one process
/// try await ready.wait()                   // in another: suspends the task until it is set
/// try ready.blockingWait(timeout: .seconds(1))   // blocks the thread (not in async code)
/// ```
///
/// A process killed while waiting leaves `waiters` one too high (a spare wake-up call, nothing missed).
public final class ProcessEvent: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, used through atomics.

    /// How the event resets.
    public enum Mode: UInt32, Sendable, Hashable {
        case manualReset = 1
        case autoReset = 2
    }

    /// Bytes of shared state.
    public static let stateSize = 64

    let storage: PrimitiveStorage
    private let state: UnsafeMutablePointer<Atomic<UInt32>>
    private let waiters: UnsafeMutableRawPointer
    /// The mode, read once when attaching (a peer cannot change it under us).
    public let mode: Mode

    private init(storage: PrimitiveStorage) throws(InterprocessError) {
        self.storage = storage
        state = atomic32(storage.base)
        waiters = storage.base + 4
        guard let mode = Mode(rawValue: storage.base.load(fromByteOffset: 8, as: UInt32.self)) else {
            throw InterprocessError(.corrupt, objectName: storage.name, detail: "unknown event mode")
        }
        self.mode = mode
    }

    private static func initializer(_ mode: Mode, _ initiallySet: Bool) -> (UnsafeMutableRawPointer) -> Void {
        { base in
            atomic32(base).initialize(to: Atomic(initiallySet ? 1 : 0))
            base.storeBytes(of: mode.rawValue, toByteOffset: 8, as: UInt32.self)
        }
    }

    /// Creates a named event.
    public static func create(
        name: String, mode: Mode, initiallySet: Bool = false, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessEvent {
        try ProcessEvent(storage: try PrimitiveStorage.create(
            name: name, kind: .event, tag: CIPC_TAG_EVENT, permissions: permissions, lifetime: lifetime,
            initialize: initializer(mode, initiallySet)))
    }

    /// Opens a named event. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessEvent {
        try ProcessEvent(storage: try PrimitiveStorage.open(name: name, kind: .event, tag: CIPC_TAG_EVENT, trusting: trust))
    }

    /// Initializes an event at `offset` in `segment`.
    public static func create(in segment: SharedMemory, at offset: Int, mode: Mode, initiallySet: Bool = false) throws(InterprocessError) -> ProcessEvent {
        try ProcessEvent(storage: try PrimitiveStorage.place(
            in: segment, at: offset, tag: CIPC_TAG_EVENT, what: "event", initialize: initializer(mode, initiallySet)))
    }

    /// Uses the event that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessEvent {
        try ProcessEvent(storage: try PrimitiveStorage.place(in: segment, at: offset, tag: CIPC_TAG_EVENT, what: "event", initialize: nil))
    }

    /// The name of a named event.
    public var name: String? { storage.name }

    /// Unregisters a named event.
    public func close() { storage.close() }

    /// Whether the event is set (a snapshot).
    public var isSet: Bool { state.pointee.load(ordering: .acquiring) == 1 }

    /// Sets the event: releases every waiter (manual reset) or one (auto reset).
    @inline(__always)
    public func set() {
        state.pointee.store(1, ordering: .sequentiallyConsistent)
        if atomic32(waiters).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            Futex.wake(UnsafeMutableRawPointer(state), count: mode == .manualReset ? Int32.max : 1)
        }
    }

    /// Resets the event.
    public func reset() {
        state.pointee.store(0, ordering: .releasing)
    }

    /// Where waiters park: the state word.
    private var site: WaitSite { WaitSite(word: UnsafeMutableRawPointer(state), waiters: waiters, name: name) }

    /// Waits until the event is set (auto reset: and consumes it), suspending the task (no thread
    /// blocks) for at most `timeout` — nil: as long as it takes.
    /// - Throws: `timedOut` after `timeout`; `cancelled` if the task is cancelled (before or while
    ///   waiting) — in both cases having consumed nothing.
    public func wait(timeout: Duration? = nil) async throws(InterprocessError) {
        try await site.asyncWait(until: Deadline(after: timeout), waitAttempt)
    }

    /// Waits until the event is set (auto reset: and consumes it), blocking the calling thread for at
    /// most `timeout` — nil: as long as it takes. The blocking form of ``wait(timeout:)``.
    @available(*, noasync, message: "use the async wait(timeout:) in async code")
    @inline(__always)
    public func blockingWait(timeout: Duration? = nil) throws(InterprocessError) {
        if tryWait() { return }
        try site.blockingWait(until: Deadline(after: timeout), waitAttempt)
    }

    /// Returns whether the event is set (auto reset: consuming it); never blocks.
    @inline(__always)
    public func tryWait() -> Bool {
        if case .done = waitAttempt(false) { return true }
        return false
    }

    private func waitAttempt(_: Bool) -> WaitStep<Void> {
        let current = state.pointee.load(ordering: .acquiring)
        guard current != 0 else { return .park(expected: 0) }
        if mode == .manualReset { return .done(()) }
        return state.pointee.compareExchange(expected: current, desired: 0, ordering: .acquiring).exchanged ? .done(()) : .retry
    }

    static func describe(_ state: UnsafeRawBufferPointer) -> [String: String] {
        guard state.count >= 12 else { return [:] }
        let mode = Mode(rawValue: state.load(fromByteOffset: 8, as: UInt32.self))
        return [
            "set": state.load(as: UInt32.self) == 0 ? "no" : "yes",
            "mode": mode == .manualReset ? "manualReset" : mode == .autoReset ? "autoReset" : "invalid",
            "waiters": "\(state.load(fromByteOffset: 4, as: UInt32.self))",
        ]
    }
}
