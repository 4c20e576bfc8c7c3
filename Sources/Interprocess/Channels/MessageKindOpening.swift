// Creating and opening the four message kinds (Channel, Broadcast, MessageQueue, Service), written
import SystemPackage
// once. Each public overload by message type (`[UInt8]`, `String`, `Codable`, `BitwiseCopyable`, …)
// only picks the codec (or the request and response codecs) and forwards here; what an opener
// expects of an existing state, how `openOrCreate` answers and how `openWhenCreated` waits are the
// same for every kind and every message type.

/// A message kind as its openers see it: a ``SharedObject`` state, not generic, and a typed handle
/// built on it with the codecs of its messages.
protocol CodecOpenedKind: AnyObject {
    /// The shared object under the handle (``ChannelState``, ``BroadcastState``, …).
    associatedtype State: SharedObject
    /// What encodes the messages: one ``ChannelCodec``, or a service's request and response codecs.
    associatedtype Codecs

    /// What an opener expects of an existing state: the message types that `codecs` record (the
    /// kind's validation compares only those; capacity and sizes are the creator's to choose).
    static func expectation(for codecs: Codecs) -> State.Parameters

    /// A handle on a validated `state` whose messages `codecs` encode. Closes `state` when it throws
    /// (a state made for messages that do not fit).
    static func handle(on state: State, codecs: Codecs) throws(InterprocessError) -> Self
}

extension CodecOpenedKind {
    /// Creates the named object with `parameters` (which record the codecs' message types): the
    /// rules of ``SharedObjectStorage/create(_:name:parameters:permissions:lifetime:)``.
    static func create(
        name: String, parameters: State.Parameters, codecs: Codecs, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> Self {
        try handle(
            on: SharedObjectStorage.create(State.self, name: name, parameters: parameters, permissions: permissions, lifetime: lifetime),
            codecs: codecs)
    }

    /// Opens the named object if its messages are of the codecs' types (`incompatible` otherwise).
    static func open(name: String, codecs: Codecs, trusting trust: TrustedOwners) throws(InterprocessError) -> Self {
        try handle(on: SharedObjectStorage.open(State.self, name: name, expecting: expectation(for: codecs), trusting: trust), codecs: codecs)
    }

    /// Opens the named object, or creates it with `parameters`; `created` says which.
    static func openOrCreate(
        name: String, parameters: State.Parameters, codecs: Codecs, permissions: FilePermissions, lifetime: Lifetime,
        trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (Self, Bool) {
        let (state, created) = try SharedObjectStorage.openOrCreate(
            State.self, name: name, parameters: parameters, permissions: permissions, lifetime: lifetime, trusting: trust)
        return (try handle(on: state, codecs: codecs), created)
    }

    /// ``open(name:codecs:trusting:)`` once a process has created the object (``CreatorWait``).
    static func openWhenCreated(name: String, codecs: Codecs, trusting trust: TrustedOwners, timeout: Duration?)
        async throws(InterprocessError) -> Self
    {
        try await CreatorWait.open(name: name, what: State.Kind.displayName, timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, codecs: codecs, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:codecs:trusting:timeout:)``.
    @available(*, noasync)
    static func blockingOpenWhenCreated(name: String, codecs: Codecs, trusting trust: TrustedOwners, timeout: Duration?)
        throws(InterprocessError) -> Self
    {
        try CreatorWait.blockingOpen(name: name, what: State.Kind.displayName, timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, codecs: codecs, trusting: trust)
        }
    }
}
