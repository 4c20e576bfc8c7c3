import InterprocessSystem

/// A kind of object that lives in shared memory, as the tools see it: the numbers that identify it
/// and how to describe a copy of its state.
///
/// Every kind is one type that conforms, and one line in ``SharedObjectRegistry/kinds``: that is how
/// `ipc ls`, `ipc inspect` and ``SegmentKind/description`` learn about it. Its layout is a C struct
/// in `CInterprocess.h` (pinned by `LayoutTests`). How a kind is added is described in the README
/// (Development).
protocol SharedObjectKind: SendableMetatype {
    /// The segment kind of a named object of this kind (the segment header's `kind` field).
    static var segmentKind: SegmentKind { get }
    /// What an initialized state holds at ``tagOffset``: written last by the creator (release), so
    /// that an opener that reads it (acquire) sees the whole initialized state.
    static var tag: UInt32 { get }
    /// Where the tag is in the state (from the kind's C struct).
    static var tagOffset: Int { get }
    /// Tags of older layouts of this kind, which this version refuses to open (`incompatible`,
    /// rather than `corrupt`).
    static var retiredTags: [UInt32] { get }
    /// The kind's name in `ipc ls` and in messages about segments ("mutex", "rwlock").
    static var kindName: String { get }
    /// What one object is called in messages ("reader-writer lock").
    static var displayName: String { get }
    /// Describes a copy of a state, for `ipc ls` and `ipc inspect`. The copy was written by another
    /// process: check its size, show what is there, never trust it (no index or length read from it
    /// is followed without a check).
    /// - Parameter isAlive: whether an owner token recorded in the state is alive.
    static func describe(_ state: UnsafeRawBufferPointer, isAlive: (UInt64) -> Bool) -> SharedObjectDescription
}

extension SharedObjectKind {
    static var retiredTags: [UInt32] { [] }
    static var displayName: String { kindName }
}

/// What ``SharedObjectKind/describe(_:isAlive:)`` says about one object.
struct SharedObjectDescription: Sendable, Hashable {
    /// Named values for `ipc inspect` (and the tests): "locked", "waiters", …
    var details: [String: String]
    /// A few words for `ipc ls` ("locked by 1234, 2 waiting"), or "".
    var summary: String

    init(details: [String: String], summary: String = "") {
        self.details = details
        self.summary = summary
    }
}

/// The Swift face of a shared object: how its state is sized, initialized and checked. Everything
/// else — a named segment of its own or a place in the user's segment, create, open, openOrCreate,
/// close, remove — is ``SharedObjectStorage``'s, once for every kind. A type that conforms keeps only
/// its own protocol logic; it reaches its shared words through pointers it computes once in
/// ``init(storage:)`` (hot paths never go through the storage).
protocol SharedObject: AnyObject {
    /// The kind (by default the type itself).
    associatedtype Kind: SharedObjectKind = Self
    /// What creating an object takes (an initial value, a mode, a value type), and what an opener
    /// may expect of an existing one (see ``validate(_:available:expecting:)``).
    associatedtype Parameters

    /// Whether the object records owners (its storage then carries this process's `OwnerLease`).
    static var recordsOwners: Bool { get }
    /// The alignment of its place in a segment (at least 8).
    static var alignment: Int { get }
    /// The fewest bytes an existing state may have: what ``validate(_:available:expecting:)`` may
    /// read (it checks the actual size itself).
    static var minimumSize: Int { get }
    /// The bytes of state that an object created with `parameters` needs. Throws `invalidArgument`
    /// (without the object's name: the storage adds it) for parameters it cannot be created with.
    static func size(for parameters: Parameters) throws(InterprocessError) -> Int
    /// Initializes a zero-filled state of `size` bytes. The storage then publishes the tag.
    static func initialize(_ state: UnsafeMutableRawPointer, size: Int, with parameters: Parameters)
    /// Checks an existing state whose tag is right, before anything trusts it: every field that
    /// never changes after creation (sizes, counts, modes, the value type), against `available`
    /// bytes. A value no creator writes is `corrupt`; a state that is fine but does not suit
    /// `parameters` (another value type, another mode) is `incompatible`. Words that change as the
    /// object is used are checked where they are used. Errors carry no name: the storage adds it.
    static func validate(_ state: UnsafeMutableRawPointer, available: Int, expecting parameters: Parameters?) throws(InterprocessError)
    /// An object on a validated state.
    init(storage: SharedObjectStorage) throws(InterprocessError)
}

extension SharedObject {
    static var recordsOwners: Bool { false }
    static var alignment: Int { 8 }
    static func size(for _: Parameters) throws(InterprocessError) -> Int { minimumSize }
    static func validate(_: UnsafeMutableRawPointer, available _: Int, expecting _: Parameters?) throws(InterprocessError) {}
}
