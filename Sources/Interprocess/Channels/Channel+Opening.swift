// Opening a Channel once its creator has made it (`openWhenCreated`), by message type (as MessageQueue's),
// and what the shared opener (``CodecOpenedKind``) needs of a channel.

extension Channel: CodecOpenedKind {
    static func expectation(for codec: ChannelCodec<Message>) -> ChannelParameters {
        ChannelParameters(capacity: 1, maxMessageSize: 1, messageType: codec.messageType)
    }

    static func handle(on state: ChannelState, codecs codec: ChannelCodec<Message>) throws(InterprocessError) -> Channel {
        try Channel(state: state, codec: codec)
    }
}

extension Channel where Message == [UInt8] {
    /// Opens the channel, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Channel {
        try await openWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Channel {
        try blockingOpenWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }
}

extension Channel where Message == String {
    /// Opens the channel, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Channel {
        try await openWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Channel {
        try blockingOpenWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }
}

extension Channel where Message: Codable {
    /// Opens the channel, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Channel {
        try await openWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Channel {
        try blockingOpenWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }
}

extension Channel where Message: BitwiseCopyable {
    /// Opens the channel, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Channel {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Channel {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}

extension Channel where Message: BitwiseCopyable & Codable {
    /// Opens the channel, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Channel {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Channel {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}
