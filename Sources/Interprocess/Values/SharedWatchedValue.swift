#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A value shared between processes that its readers *watch*: each reader receives every new
/// version as an `AsyncSequence` — the current one when it subscribes, then each newer one.
///
/// ```swift
/// // The writer (one process):
/// let config = try SharedWatchedValue<Config>.create(name: "config", initialValue: Config(level: 1))
/// try config.store(Config(level: 2))
///
/// // Each reader (other processes, started before or after the writer):
/// let config = try await SharedWatchedValue<Config>.openWhenCreated(name: "config")
/// for try await current in config.updates {
///     apply(current)                       // Config(level: 1) or 2 at once, then every later one
/// }
/// ```
///
/// **Versions.** Every ``store(_:)`` makes a new ``version`` (1, 2, 3…; 0 while nothing was stored).
/// ``updates`` yields the current value on subscribing (waiting for the first store if there is
/// none), then waits for a newer version and yields it. **A slow reader may skip versions** — it gets
/// the latest one when it looks again, never a stale one, and never the same version twice — so a
/// reader always ends at the latest value. ``next(after:timeout:)`` and ``blockingNext(after:timeout:)``
/// do the same one step at a time, with the version (a value type, `Snapshot`), and
/// ``load()`` / ``snapshot()`` read the current value without waiting.
///
/// **Never torn, never missing.** The value lives in a value frame (`cipc_value_frame`, also behind
/// ``SharedMemory/store(_:)``): two slots and a publish counter. A store writes the new value into the
/// slot readers do not use and publishes it with one atomic counter; a reader copies the current slot
/// and checks that the counter did not move, copying again if it did. Readers never write and never
/// make a writer wait; writers take turns through a robust lock in the frame. Watchers park on the
/// counter's low half (a futex); a store wakes them only if some are parked.
///
/// **Capacity.** Values are JSON, of up to ``capacity`` bytes each (fixed at creation: 4096 by
/// default). A value whose JSON is longer is refused with `invalidSize` and the stored value stays as
/// it was.
///
/// **Types.** The creator records `Value`'s ``TypeFingerprint`` (its name as Swift prints it and a
/// version you may give, ``TypeFingerprint/init(codable:version:)``): opening it as another type
/// throws `incompatible`.
///
/// **What a writer killed at each step of a store leaves behind**: readers see the old value if it
/// died before publishing, the new one after; never a mix. The next writer takes its lock over (see
/// `ValueFrame`). A watcher killed while parked leaves the `waiters` count one too high: later stores
/// then make one wake-up system call each (~1 µs) for nobody.
///
/// **Waiting.** ``next(after:timeout:)`` and ``updates`` suspend the task (no thread blocks) and honour
/// cancellation: a cancelled wait throws `cancelled` and consumes nothing (the iterator's position
/// stays where it was). ``blockingNext(after:timeout:)`` blocks the thread (not in async code).
public final class SharedWatchedValue<Value: Codable & Sendable>: @unchecked Sendable {
    // `@unchecked Sendable`: the state is shared memory kept mapped by `storage`, touched through
    // atomics and the value frame's protocol; everything else is immutable.

    private typealias Layout = SharedWatchedValueLayout

    /// The default ``capacity``: 4096 bytes of JSON.
    public static var defaultCapacity: Int { 4096 }

    let storage: SharedObjectStorage
    private let frame: ValueFrame
    private let writer: ProcessMutex

    init(storage: SharedObjectStorage) {
        self.storage = storage
        let frameOffset = Layout.frameOffset
        frame = ValueFrame(base: storage.base + frameOffset, available: storage.available - frameOffset, name: storage.name)
        writer = ProcessMutex(storage: storage.nested(at: frameOffset + ValueFrame.writerOffset))
    }

    // MARK: Creating and opening

    /// Creates a named watched value (a segment of kind `watched`), holding `initialValue` (version 1)
    /// or nothing yet (version 0).
    /// - Parameters:
    ///   - name: 1 to 255 bytes, no '/' and no NUL.
    ///   - initialValue: the first version; nil: nothing stored yet.
    ///   - capacity: the most bytes of JSON a value may take (``defaultCapacity`` by default); fixed
    ///     for the object's life. `invalidSize` if `initialValue` does not fit.
    ///   - type: what it records as its value type (by default `Value`'s name, version 0).
    ///   - permissions: owner-only by default.
    ///   - lifetime: ``Lifetime/whileReferenced`` by default.
    public static func create(
        name: String, initialValue: Value? = nil, capacity: Int = defaultCapacity,
        type: TypeFingerprint = TypeFingerprint(codable: Value.self), permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedWatchedValue {
        try SharedObjectStorage.create(
            SharedWatchedValue.self, name: name, parameters: parameters(type, initialValue, capacity, name: name),
            permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named watched value. Throws `incompatible` if it records another value type than
    /// `type` or is not a watched value, `corrupt` if what it records is damaged, `permissionDenied`
    /// if its owner is not trusted (by default only this process's user is; see ``TrustedOwners``).
    public static func open(
        name: String, type: TypeFingerprint = TypeFingerprint(codable: Value.self), trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> SharedWatchedValue {
        try SharedObjectStorage.open(
            SharedWatchedValue.self, name: name, expecting: parameters(type, nil, defaultCapacity, name: name), trusting: trust)
    }

    /// Opens the named watched value (which keeps its value and capacity; `incompatible` if it
    /// records another value type), or creates it holding `initialValue`; `created` says which. Of
    /// racing processes exactly one creates it; the others open it, complete.
    public static func openOrCreate(
        name: String, initialValue: Value? = nil, capacity: Int = defaultCapacity,
        type: TypeFingerprint = TypeFingerprint(codable: Value.self), permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (value: SharedWatchedValue, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            SharedWatchedValue.self, name: name, parameters: parameters(type, initialValue, capacity, name: name),
            permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    /// Opens the named watched value, suspending the task until a process has created it, for at
    /// most `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)`` and the checks of
    /// ``open(name:type:trusting:)``.
    public static func openWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(codable: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) async throws(InterprocessError) -> SharedWatchedValue {
        try await CreatorWait.open(name: name, what: "watched value", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:type:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:type:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(codable: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) throws(InterprocessError) -> SharedWatchedValue {
        try CreatorWait.blockingOpen(name: name, what: "watched value", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }

    /// Removes the name of the named watched value `name` (`incompatible` if it is not one);
    /// processes that hold it go on using it until they close it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(SharedWatchedValue.self, name: name)
    }

    /// The name.
    public var name: String? { storage.name }

    /// Unregisters this handle (the last holder of a `.whileReferenced` watched value removes the name).
    public func close() { storage.close() }

    /// The most bytes of JSON a value may take (fixed at creation).
    public var capacity: Int { (try? frame.capacity()).flatMap { $0 } ?? 0 }

    // MARK: Storing

    /// Stores `value` as the next version and wakes the watchers. Waits only while another writer
    /// copies its value (or ~25 ms to take over the lock of a writer that died).
    /// - Throws: `invalidSize` if its JSON exceeds ``capacity`` (nothing changes), `encodingFailed`,
    ///   `corrupt` if the shared state is damaged.
    public func store(_ value: Value) throws(InterprocessError) {
        let bytes = try SharedMemory.encode(value, name: name ?? "")
        try frame.store(bytes, writer: writer, capacityIfNew: nil)
    }

    // MARK: Reading

    /// A value and the version it was stored as.
    public struct Snapshot: Sendable {
        /// The number of the store that wrote it (1 for the first).
        public var version: UInt64
        /// The value.
        public var value: Value
    }

    /// The current version: the number of stores so far (0: nothing stored yet). A snapshot.
    public var version: UInt64 { frame.version }

    /// The current value and its version, or nil if nothing was stored yet. Never waits for a
    /// writer, never torn.
    /// - Throws: `decodingFailed` if the stored JSON is not a `Value`; `corrupt`.
    public func snapshot() throws(InterprocessError) -> Snapshot? {
        try frame.read().map { (version, bytes) throws(InterprocessError) in try decode(version, bytes) }
    }

    /// The current value.
    /// - Throws: `empty` ("nothing stored yet") if there is none; `decodingFailed`; `corrupt`.
    public func load() throws(InterprocessError) -> Value {
        guard let snapshot = try snapshot() else {
            throw InterprocessError(.empty, objectName: name, detail: "nothing stored yet")
        }
        return snapshot.value
    }

    /// The current value if its version is not `version`, else the next one stored, suspending the
    /// task (no thread blocks) for at most `timeout` (nil: as long as it takes). `after: 0` returns
    /// the current value, or waits for the first store. Versions stored meanwhile may be skipped: it
    /// returns the latest.
    /// - Throws: `timedOut`; `cancelled` if the task is cancelled (before or while waiting);
    ///   `decodingFailed`; `corrupt`.
    public func next(after version: UInt64, timeout: Duration? = nil) async throws(InterprocessError) -> Snapshot {
        let (current, bytes) = try await frame.site.asyncWait(until: Deadline(after: timeout)) { _ throws(InterprocessError) in
            try frame.changeAttempt(after: version)
        }
        return try decode(current, bytes)
    }

    /// The blocking form of ``next(after:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async next(after:timeout:) in async code")
    public func blockingNext(after version: UInt64, timeout: Duration? = nil) throws(InterprocessError) -> Snapshot {
        let (current, bytes) = try frame.site.blockingWait(until: Deadline(after: timeout)) { _ throws(InterprocessError) in
            try frame.changeAttempt(after: version)
        }
        return try decode(current, bytes)
    }

    /// Every version from now on: the current value (or the first one stored), then each newer one;
    /// a slow reader skips to the latest. It never ends by itself; cancelling the task ends it with
    /// `cancelled`, having consumed nothing.
    public var updates: Updates { Updates(source: self) }

    /// The values of a ``SharedWatchedValue``, newest first seen (see ``SharedWatchedValue/updates``).
    public struct Updates: AsyncSequence, Sendable {
        public typealias Element = Value
        public typealias Failure = InterprocessError

        let source: SharedWatchedValue

        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source) }

        /// Remembers the last version it yielded.
        public struct AsyncIterator: AsyncIteratorProtocol, Sendable {
            public typealias Element = Value
            public typealias Failure = InterprocessError

            let source: SharedWatchedValue
            /// The version of the last value yielded (0: none yet).
            public private(set) var lastVersion: UInt64 = 0

            init(source: SharedWatchedValue) { self.source = source }

            public mutating func next() async throws(InterprocessError) -> Value? {
                let snapshot = try await source.next(after: lastVersion)
                lastVersion = snapshot.version
                return snapshot.value
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async throws(InterprocessError) -> Value? {
                let snapshot = try await source.next(after: lastVersion)
                lastVersion = snapshot.version
                return snapshot.value
            }
        }
    }

    private func decode(_ version: UInt64, _ bytes: [UInt8]) throws(InterprocessError) -> Snapshot {
        do {
            return Snapshot(version: version, value: try JSONDecoder().decode(Value.self, from: Data(bytes)))
        } catch {
            throw InterprocessError(.decodingFailed, objectName: name, detail: "\(Value.self): \(error)")
        }
    }
}

// MARK: - The shared object

extension SharedWatchedValue: SharedObject {
    typealias Kind = SharedWatchedValueLayout

    /// What a watched value is created with, and what an opener expects of one.
    struct Parameters {
        var type: TypeFingerprint
        var capacity: Int
        /// The first value's JSON (creating only).
        var initial: [UInt8]?
    }

    static var recordsOwners: Bool { true }
    static var minimumSize: Int { Layout.headerSize }

    fileprivate static func parameters(
        _ type: TypeFingerprint, _ initialValue: Value?, _ capacity: Int, name: String
    ) throws(InterprocessError) -> Parameters {
        if let problem = type.problem {
            throw InterprocessError(.invalidArgument, objectName: name, detail: problem)
        }
        guard capacity >= 0, capacity <= ValueFrame.maximumCapacity else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "a capacity of \(capacity) bytes is out of range")
        }
        let initial = try initialValue.map { value throws(InterprocessError) in try SharedMemory.encode(value, name: name) }
        if let initial, initial.count > capacity {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "the initial value's JSON (\(initial.count) bytes) exceeds the capacity \(capacity)")
        }
        return Parameters(type: type, capacity: ValueFrame.slotSize(capacity), initial: initial)
    }

    static func size(for parameters: Parameters) throws(InterprocessError) -> Int {
        Layout.frameOffset + ValueFrame.extent(capacity: parameters.capacity)
    }

    static func initialize(_ base: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        base.storeBytes(of: CIPC_VALUE_FORMAT_JSON, toByteOffset: fieldOffset(\cipc_watched_value.format), as: UInt32.self)
        base.storeBytes(of: parameters.type.shared, toByteOffset: fieldOffset(\cipc_watched_value.value_type), as: cipc_type_fingerprint.self)
        ValueFrame(base: base + Layout.frameOffset, available: size - Layout.frameOffset, name: nil)
            .layOut(capacity: parameters.capacity, initial: parameters.initial)
    }

    /// Checks what a peer wrote before trusting it: the value type (`incompatible` if it is another,
    /// `corrupt` if it is garbage), the format, and a laid-out frame that fits.
    static func validate(_ base: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError) {
        let header = base.load(as: cipc_watched_value.self) // a copy: a peer may write meanwhile
        let expected = parameters?.type ?? TypeFingerprint(codable: Value.self)
        guard try expected.matches(header.value_type) else {
            throw InterprocessError(.incompatible, detail: "it holds \(TypeFingerprint.text(of: header.value_type)), not \(expected)")
        }
        guard header.format == CIPC_VALUE_FORMAT_JSON else {
            throw InterprocessError(.incompatible, detail: "its values are in format \(header.format), not JSON")
        }
        guard try ValueFrame(base: base + Layout.frameOffset, available: available - Layout.frameOffset, name: nil).capacity() != nil else {
            throw InterprocessError(.corrupt, detail: "its value frame was never laid out")
        }
    }
}

/// The shared layout of a ``SharedWatchedValue`` (`cipc_watched_value` in `CInterprocessValue.h`),
/// independent of its `Value`: the watched values' kind.
enum SharedWatchedValueLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .watchedValue }
    static var tag: UInt32 { CIPC_TAG_WATCHED_VALUE }
    static var tagOffset: Int { fieldOffset(\cipc_watched_value.tag) }
    static var kindName: String { "watched" }
    static var displayName: String { "watched value" }

    static let headerSize = MemoryLayout<cipc_watched_value>.size
    static let frameOffset = fieldOffset(\cipc_watched_value.frame)

    /// Version, size of the current value, capacity, value type, waiters and writer, read from a
    /// copy of the state.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= headerSize else { return SharedObjectDescription(details: [:]) }
        let header = copy.loadUnaligned(as: cipc_watched_value.self)
        var details = ValueFrame.describe(UnsafeRawBufferPointer(rebasing: copy[frameOffset...]), isAlive: isAlive)
        details["valueType"] = TypeFingerprint.problem(in: header.value_type) == nil ? TypeFingerprint.text(of: header.value_type) : "damaged"
        details["format"] = header.format == CIPC_VALUE_FORMAT_JSON ? "json" : "unknown(\(header.format))"
        let version = details["version"] ?? "0"
        let waiting = (details["waiters"] ?? "0") == "0" ? "" : ", \(details["waiters"] ?? "") waiting"
        return SharedObjectDescription(
            details: details,
            summary: version == "0"
                ? "nothing stored yet" + waiting
                : "version \(version), \(details["size"] ?? "-") of \(details["capacity"] ?? "-") bytes" + waiting)
    }
}

extension SegmentKind {
    /// A named ``SharedWatchedValue``.
    public static let watchedValue = SegmentKind(rawValue: CIPC_KIND_WATCHED_VALUE)
}
