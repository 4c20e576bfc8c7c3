// Opening a Broadcast once its creator has made it (`openWhenCreated`), by message type (as MessageQueue's),
// and what the shared opener (``CodecOpenedKind``) needs of a broadcast.

extension Broadcast: CodecOpenedKind {
    static func expectation(for codec: ChannelCodec<Message>) -> BroadcastParameters {
        BroadcastParameters(capacity: 1, maxMessageSize: 1, maxSubscribers: 1, policy: 0, messageType: codec.messageType)
    }

    static func handle(on state: BroadcastState, codecs codec: ChannelCodec<Message>) throws(InterprocessError) -> Broadcast {
        try Broadcast(state: state, codec: codec)
    }
}

extension Broadcast where Message == [UInt8] {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message == String {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: Codable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: BitwiseCopyable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: BitwiseCopyable & Codable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}
