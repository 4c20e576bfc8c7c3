// Opening a Broadcast once its creator has made it (`openWhenCreated`), by message type (as MessageQueue's).

extension Broadcast {
    static func openWhenCreated(name: String, codec: ChannelCodec<Message>, trusting trust: TrustedOwners, timeout: Duration?)
        async throws(InterprocessError) -> Broadcast
    {
        try await CreatorWait.open(name: name, what: "broadcast", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, codec: codec, trusting: trust)
        }
    }

    @available(*, noasync)
    static func blockingOpenWhenCreated(name: String, codec: ChannelCodec<Message>, trusting trust: TrustedOwners, timeout: Duration?)
        throws(InterprocessError) -> Broadcast
    {
        try CreatorWait.blockingOpen(name: name, what: "broadcast", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, codec: codec, trusting: trust)
        }
    }
}

extension Broadcast where Message == [UInt8] {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codec: .bytes, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codec: .bytes, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message == String {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codec: .text, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codec: .text, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: Codable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codec: .json, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codec: .json, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: BitwiseCopyable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codec: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codec: .raw, trusting: trust, timeout: timeout)
    }
}

extension Broadcast where Message: BitwiseCopyable & Codable {
    /// Opens the broadcast, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Broadcast {
        try await openWhenCreated(name: name, codec: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Broadcast {
        try blockingOpenWhenCreated(name: name, codec: .raw, trusting: trust, timeout: timeout)
    }
}
