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

    /// Bytes of shared state: a `cipc_event`.
    public static let stateSize = MemoryLayout<cipc_event>.size

    let storage: SharedObjectStorage
    private let state: UnsafeMutablePointer<Atomic<UInt32>>
    private let waiters: UnsafeMutableRawPointer
    /// The mode, read once when attaching (a peer cannot change it under us).
    public let mode: Mode

    init(storage: SharedObjectStorage) throws(InterprocessError) {
        self.storage = storage
        state = atomic32(storage.base + fieldOffset(\cipc_event.state))
        waiters = storage.base + fieldOffset(\cipc_event.waiters)
        guard let mode = Self.mode(at: storage.base) else {
            throw InterprocessError(.corrupt, objectName: storage.name, detail: "unknown event mode")
        }
        self.mode = mode
    }

    /// Creates a named event.
    public static func create(
        name: String, mode: Mode, initiallySet: Bool = false, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.create(
            ProcessEvent.self, name: name, parameters: (mode, initiallySet), permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named event. Only an object of a trusted owner opens (by default: this process's
    /// user; see ``TrustedOwners``): another user's is `permissionDenied`.
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.open(ProcessEvent.self, name: name, expecting: nil, trusting: trust)
    }

    /// Opens the named event (`incompatible` if it has the other mode), or creates it; `created` says
    /// which. Of racing processes exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, mode: Mode, initiallySet: Bool = false, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (event: ProcessEvent, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            ProcessEvent.self, name: name, parameters: (mode, initiallySet), permissions: permissions, lifetime: lifetime,
            trusting: trust)
    }

    /// Removes the name of the named event `name` (`incompatible` if it is not an event); processes
    /// that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ProcessEvent.self, name: name)
    }

    /// Initializes an event at `offset` in `segment`.
    public static func create(in segment: SharedMemory, at offset: Int, mode: Mode, initiallySet: Bool = false) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.place(ProcessEvent.self, in: segment, at: offset, parameters: (mode, initiallySet))
    }

    /// Uses the event that another process created at `offset` in `segment`.
    public static func open(in segment: SharedMemory, at offset: Int) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.attach(ProcessEvent.self, in: segment, at: offset, expecting: nil)
    }

    /// Places an event in `segment` under `name` (1 to 32 bytes, unique in the segment:
    /// `alreadyExists` otherwise) at the highest free offset that is a multiple of 64, recorded in
    /// the segment's table of placed objects (`outOfMemory` if no room is free). Peers find it with
    /// ``open(in:named:)``.
    public static func create(in segment: SharedMemory, named name: String, mode: Mode, initiallySet: Bool = false) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.place(ProcessEvent.self, in: segment, at: nil, named: name, parameters: (mode, initiallySet))
    }

    /// Uses the event placed in `segment` under `name` (`notFound` if nothing is, `incompatible` if
    /// it is of another kind).
    public static func open(in segment: SharedMemory, named name: String) throws(InterprocessError) -> ProcessEvent {
        try SharedObjectStorage.attach(ProcessEvent.self, in: segment, named: name, expecting: nil)
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
}

// MARK: - The shared object

extension ProcessEvent: SharedObject, SharedObjectKind {
    /// The mode, and whether a new event starts set. An opener that expects a mode gets
    /// `incompatible` for an event of the other mode.
    typealias Parameters = (mode: Mode, initiallySet: Bool)

    static var segmentKind: SegmentKind { .event }
    static var tag: UInt32 { CIPC_TAG_EVENT }
    static var tagOffset: Int { fieldOffset(\cipc_event.tag) }
    static var kindName: String { "event" }
    static var minimumSize: Int { stateSize }

    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        atomic32(state + fieldOffset(\cipc_event.state)).initialize(to: Atomic(parameters.initiallySet ? 1 : 0))
        state.storeBytes(of: parameters.mode.rawValue, toByteOffset: fieldOffset(\cipc_event.mode), as: UInt32.self)
    }

    /// The mode: one a creator writes, and the one expected.
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError) {
        guard let mode = mode(at: state) else {
            throw InterprocessError(.corrupt, detail: "unknown event mode \(state.load(fromByteOffset: fieldOffset(\cipc_event.mode), as: UInt32.self))")
        }
        if let parameters, parameters.mode != mode {
            throw InterprocessError(.incompatible, detail: "it is a \(mode) event, not \(parameters.mode)")
        }
    }

    /// The mode recorded in the state at `base`, if it is one.
    private static func mode(at base: UnsafeMutableRawPointer) -> Mode? {
        Mode(rawValue: base.load(fromByteOffset: fieldOffset(\cipc_event.mode), as: UInt32.self))
    }

    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= MemoryLayout<cipc_event>.size else { return SharedObjectDescription(details: [:]) }
        let state = copy.loadUnaligned(as: cipc_event.self)
        let mode = Mode(rawValue: state.mode).map { "\($0)" } ?? "invalid"
        return SharedObjectDescription(
            details: ["set": state.state == 0 ? "no" : "yes", "mode": mode, "waiters": "\(state.waiters)"],
            summary: (state.state == 0 ? "reset" : "set") + " (\(mode))" + (state.waiters > 0 ? ", \(state.waiters) waiting" : ""))
    }
}

extension SegmentKind {
    /// A named ``ProcessEvent``.
    public static let event = SegmentKind(rawValue: CIPC_KIND_EVENT)
}
