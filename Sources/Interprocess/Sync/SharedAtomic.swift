public import SystemPackage
import CInterprocess
import InterprocessSystem
public import Synchronization

/// The integer types a ``SharedAtomic`` holds: `Int`, `UInt`, `Int64`, `UInt64`, `Int32`, `UInt32`
/// (a type of 4 or 8 bytes; another size is refused with `invalidArgument`).
public protocol SharedAtomicValue: FixedWidthInteger, Sendable {}

extension Int: SharedAtomicValue {}
extension UInt: SharedAtomicValue {}
extension Int64: SharedAtomicValue {}
extension UInt64: SharedAtomicValue {}
extension Int32: SharedAtomicValue {}
extension UInt32: SharedAtomicValue {}

/// An integer shared between processes and changed lock-free: a counter, a flag, a sequence number.
///
/// ```swift
/// let segment = try SharedMemory.create(name: "stats", size: 4096)
/// let requests = try SharedAtomic<Int64>.create(in: segment, named: "requests")  // no offsets to compute
/// requests.wrappingAdd(1)
///
/// // Another process:
/// let requests = try SharedAtomic<Int64>.open(in: segment, named: "requests")
/// print(requests.load())
///
/// // Or a named object of its own (`ipc ls` shows it, kind "atomic"):
/// let jobsDone = try SharedAtomic<UInt64>.create(name: "jobs-done")
/// ```
///
/// It lives where every shared object may: placed in a segment — at an offset you choose, or by a
/// name (1 to 32 bytes) at a free place that the segment picks from its table of placed objects
/// (the highest free offset that is a multiple of 64), and that `open(in:named:)` finds again —
/// or as a named object of its own. Its value has a cache line to itself (the state is a
/// `cipc_atomic`, 192 bytes).
///
/// **The type is checked.** It records its value type (``TypeFingerprint``): opening an
/// `SharedAtomic<Int64>` as `SharedAtomic<UInt64>` (the same size) is `incompatible`.
///
/// Every operation is one atomic instruction on the shared word (`Synchronization.Atomic`),
/// sequentially consistent (what other processes wrote before their store or add is visible after
/// your load of it); arithmetic wraps (a value another process
/// wrote never traps). A process killed at any instruction leaves the value it last wrote: there is
/// nothing else to repair.
public final class SharedAtomic<Value: SharedAtomicValue>: @unchecked Sendable {
    // `@unchecked Sendable`: the value is shared memory kept mapped by `storage`, touched only
    // through atomics.

    /// Bytes of shared state (a `cipc_atomic`; place it at an 8-byte aligned offset — 64 keeps the
    /// value off other data's cache line).
    public static var stateSize: Int { MemoryLayout<cipc_atomic>.size }

    let storage: SharedObjectStorage
    /// The value word (for a 4-byte value, `word32` is its low half).
    @usableFromInline let word64: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let word32: UnsafeMutablePointer<Atomic<UInt32>>

    init(storage: SharedObjectStorage) {
        self.storage = storage
        word64 = atomic64(storage.base + fieldOffset(\cipc_atomic.value))
        word32 = atomic32(storage.base + fieldOffset(\cipc_atomic.value))
    }

    // MARK: Creating and opening

    /// Creates a named atomic (a segment of kind `atomic`) holding `initialValue`.
    /// - Parameters:
    ///   - name: 1 to 255 bytes, no '/' and no NUL.
    ///   - initialValue: the value it starts with.
    ///   - type: what it records as its value type (by default `Value`'s fingerprint); its
    ///     size and alignment must be `Value`'s.
    ///   - permissions: owner-only by default.
    ///   - lifetime: ``Lifetime/whileReferenced`` by default.
    public static func create(
        name: String, initialValue: Value = 0, type: TypeFingerprint = TypeFingerprint(of: Value.self),
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.create(
            SharedAtomic.self, name: name, parameters: parameters(type, initialValue, name: name), permissions: permissions, lifetime: lifetime)
    }

    /// Opens a named atomic (`incompatible` if it records another value type than `type`).
    public static func open(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.open(SharedAtomic.self, name: name, expecting: parameters(type, nil, name: name), trusting: trust)
    }

    /// Opens the named atomic (which keeps its value), or creates it holding `initialValue`;
    /// `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, initialValue: Value = 0, type: TypeFingerprint = TypeFingerprint(of: Value.self),
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (atomic: SharedAtomic, created: Bool) {
        try SharedObjectStorage.openOrCreate(
            SharedAtomic.self, name: name, parameters: parameters(type, initialValue, name: name), permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Removes the name of the named atomic `name` (`incompatible` if it is not an atomic).
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(SharedAtomic.self, name: name)
    }

    /// Places a new atomic holding `initialValue` at `offset` in `segment` (``stateSize`` bytes, at
    /// a multiple of 8), registered in the segment's table of placed objects: `overlaps` if anything
    /// else is placed there (or the stored value reaches it), `alreadyExists` if an atomic is.
    public static func create(
        in segment: SharedMemory, at offset: Int, initialValue: Value = 0, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.place(
            SharedAtomic.self, in: segment, at: offset, parameters: parameters(type, initialValue, name: segment.name))
    }

    /// Places a new atomic holding `initialValue` in `segment` under `name` (1 to 32 bytes, unique in
    /// the segment: `alreadyExists` otherwise), at the highest free offset that is a multiple of 64
    /// (`outOfMemory` if there is none). Peers find it with ``open(in:named:type:)``.
    public static func create(
        in segment: SharedMemory, named name: String, initialValue: Value = 0, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.place(
            SharedAtomic.self, in: segment, at: nil, named: name, parameters: parameters(type, initialValue, name: segment.name))
    }

    /// Uses the atomic placed at `offset` in `segment` (`incompatible` if it records another value
    /// type than `type`, or something else is placed there).
    public static func open(
        in segment: SharedMemory, at offset: Int, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.attach(SharedAtomic.self, in: segment, at: offset, expecting: parameters(type, nil, name: segment.name))
    }

    /// Uses the atomic placed in `segment` under `name` (`notFound` if nothing is; `incompatible` if
    /// it is not an atomic of `type`).
    public static func open(
        in segment: SharedMemory, named name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self)
    ) throws(InterprocessError) -> SharedAtomic {
        try SharedObjectStorage.attach(SharedAtomic.self, in: segment, named: name, expecting: parameters(type, nil, name: segment.name))
    }

    /// The name of a named atomic (nil for a placed one).
    public var name: String? { storage.name }

    /// Unregisters a named atomic (the last holder of a `.whileReferenced` one removes the name).
    public func close() { storage.close() }

    // MARK: Operations

    @inlinable static var isWide: Bool { MemoryLayout<Value>.size == 8 }

    /// The value.
    @inlinable
    public func load() -> Value {
        Self.isWide
            ? Value(truncatingIfNeeded: word64.pointee.load(ordering: .sequentiallyConsistent))
            : Value(truncatingIfNeeded: word32.pointee.load(ordering: .sequentiallyConsistent))
    }

    /// Sets the value.
    @inlinable
    public func store(_ value: Value) {
        if Self.isWide {
            word64.pointee.store(UInt64(truncatingIfNeeded: value), ordering: .sequentiallyConsistent)
        } else {
            word32.pointee.store(UInt32(truncatingIfNeeded: value), ordering: .sequentiallyConsistent)
        }
    }

    /// Sets the value and returns the one it replaced.
    @inlinable
    public func exchange(_ value: Value) -> Value {
        Self.isWide
            ? Value(truncatingIfNeeded: word64.pointee.exchange(UInt64(truncatingIfNeeded: value), ordering: .sequentiallyConsistent))
            : Value(truncatingIfNeeded: word32.pointee.exchange(UInt32(truncatingIfNeeded: value), ordering: .sequentiallyConsistent))
    }

    /// Adds `operand`, wrapping around on overflow; returns the old and the new value.
    @inlinable
    @discardableResult
    public func wrappingAdd(_ operand: Value) -> (oldValue: Value, newValue: Value) {
        let old: Value = Self.isWide
            ? Value(truncatingIfNeeded: word64.pointee.wrappingAdd(UInt64(truncatingIfNeeded: operand), ordering: .sequentiallyConsistent).oldValue)
            : Value(truncatingIfNeeded: word32.pointee.wrappingAdd(UInt32(truncatingIfNeeded: operand), ordering: .sequentiallyConsistent).oldValue)
        return (old, old &+ operand)
    }

    /// Subtracts `operand`, wrapping around on overflow; returns the old and the new value.
    @inlinable
    @discardableResult
    public func wrappingSubtract(_ operand: Value) -> (oldValue: Value, newValue: Value) {
        let old: Value = Self.isWide
            ? Value(truncatingIfNeeded: word64.pointee.wrappingSubtract(UInt64(truncatingIfNeeded: operand), ordering: .sequentiallyConsistent).oldValue)
            : Value(truncatingIfNeeded: word32.pointee.wrappingSubtract(UInt32(truncatingIfNeeded: operand), ordering: .sequentiallyConsistent).oldValue)
        return (old, old &- operand)
    }

    /// Sets the value to `desired` if it is `expected`; returns whether it did and the value found.
    @inlinable
    public func compareExchange(
        expected: Value, desired: Value
    ) -> (exchanged: Bool, original: Value) {
        if Self.isWide {
            let result = word64.pointee.compareExchange(
                expected: UInt64(truncatingIfNeeded: expected), desired: UInt64(truncatingIfNeeded: desired), ordering: .sequentiallyConsistent)
            return (result.exchanged, Value(truncatingIfNeeded: result.original))
        }
        let result = word32.pointee.compareExchange(
            expected: UInt32(truncatingIfNeeded: expected), desired: UInt32(truncatingIfNeeded: desired), ordering: .sequentiallyConsistent)
        return (result.exchanged, Value(truncatingIfNeeded: result.original))
    }
}

// MARK: - The shared object

extension SharedAtomic: SharedObject {
    typealias Kind = SharedAtomicLayout

    /// What an atomic is created with, and what an opener expects of one.
    struct Parameters {
        var type: TypeFingerprint
        var initialValue: Value?
    }

    static var minimumSize: Int { stateSize }

    /// Checks a fingerprint given for `Value` (`invalidArgument` if it cannot describe it, or `Value`
    /// is not 4 or 8 bytes).
    fileprivate static func parameters(_ type: TypeFingerprint, _ initialValue: Value?, name: String) throws(InterprocessError) -> Parameters {
        guard MemoryLayout<Value>.size == 4 || MemoryLayout<Value>.size == 8 else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "a shared atomic holds 4 or 8 bytes, not \(MemoryLayout<Value>.size) (\(Value.self))")
        }
        if let problem = type.problem {
            throw InterprocessError(.invalidArgument, objectName: name, detail: problem)
        }
        guard type.size == MemoryLayout<Value>.size, type.alignment == MemoryLayout<Value>.alignment else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "the type fingerprint \(type) does not describe \(Value.self)")
        }
        return Parameters(type: type, initialValue: initialValue)
    }

    static func initialize(_ base: UnsafeMutableRawPointer, size: Int, with parameters: Parameters) {
        base.storeBytes(of: UInt32(MemoryLayout<Value>.size), toByteOffset: fieldOffset(\cipc_atomic.value_size), as: UInt32.self)
        base.storeBytes(of: parameters.type.shared, toByteOffset: fieldOffset(\cipc_atomic.value_type), as: cipc_type_fingerprint.self)
        let value = parameters.initialValue ?? 0
        let bits = MemoryLayout<Value>.size == 8 ? UInt64(truncatingIfNeeded: value) : UInt64(UInt32(truncatingIfNeeded: value))
        atomic64(base + fieldOffset(\cipc_atomic.value)).initialize(to: Atomic(bits))
    }

    /// Checks the recorded value type (`incompatible` if it is another, `corrupt` if it is garbage)
    /// and the value's size.
    static func validate(_ base: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError) {
        let state = base.load(as: cipc_atomic.self) // a copy: a peer may write meanwhile
        let expected = parameters?.type ?? TypeFingerprint(of: Value.self)
        guard try expected.matches(state.value_type) else {
            throw InterprocessError(.incompatible, detail: "it holds \(TypeFingerprint.text(of: state.value_type)), not \(expected)")
        }
        guard Int(state.value_size) == MemoryLayout<Value>.size, state.value_type.size == state.value_size else {
            throw InterprocessError(.corrupt, detail: "inconsistent atomic (value size \(state.value_size))")
        }
    }
}

/// The shared layout of a ``SharedAtomic`` (`cipc_atomic` in `CInterprocess.h`), independent of its
/// `Value`: the atomics' kind.
enum SharedAtomicLayout: SharedObjectKind {
    static var segmentKind: SegmentKind { .atomic }
    static var tag: UInt32 { CIPC_TAG_ATOMIC }
    static var tagOffset: Int { fieldOffset(\cipc_atomic.tag) }
    static var kindName: String { "atomic" }
    static var displayName: String { "shared atomic" }

    /// The value (signed if the recorded type's name says so) and the value type, from a copy.
    static func describe(_ copy: UnsafeRawBufferPointer, isAlive _: (UInt64) -> Bool) -> SharedObjectDescription {
        guard copy.count >= MemoryLayout<cipc_atomic>.size else { return SharedObjectDescription(details: [:]) }
        let state = copy.loadUnaligned(as: cipc_atomic.self)
        let damaged = TypeFingerprint.problem(in: state.value_type) != nil
        let typeText = damaged ? "damaged" : TypeFingerprint.text(of: state.value_type)
        let signed = !damaged && (typeText.hasPrefix("Swift.Int ") || typeText.hasPrefix("Swift.Int64 ") || typeText.hasPrefix("Swift.Int32 "))
        let value: String
        switch (state.value_size, signed) {
        case (4, false): value = "\(UInt32(truncatingIfNeeded: state.value))"
        case (4, true): value = "\(Int32(truncatingIfNeeded: state.value))"
        case (_, true): value = "\(Int64(bitPattern: state.value))"
        default: value = "\(state.value)"
        }
        return SharedObjectDescription(details: ["value": value, "valueType": typeText, "valueSize": "\(state.value_size)"], summary: "value \(value)")
    }
}

extension SegmentKind {
    /// A named ``SharedAtomic``.
    public static let atomic = SegmentKind(rawValue: CIPC_KIND_ATOMIC)
}
