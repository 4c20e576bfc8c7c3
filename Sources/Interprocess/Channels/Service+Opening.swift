// Opening a Service once its creator has made it (`openWhenCreated`), by request and response types.

extension Service {
    static func openWhenCreated(name: String, request: ChannelCodec<Request>, response: ChannelCodec<Response>, trusting trust: TrustedOwners, timeout: Duration?)
        async throws(InterprocessError) -> Service
    {
        try await CreatorWait.open(name: name, what: "service", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, request: request, response: response, trusting: trust)
        }
    }

    @available(*, noasync)
    static func blockingOpenWhenCreated(name: String, request: ChannelCodec<Request>, response: ChannelCodec<Response>, trusting trust: TrustedOwners, timeout: Duration?)
        throws(InterprocessError) -> Service
    {
        try CreatorWait.blockingOpen(name: name, what: "service", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, request: request, response: response, trusting: trust)
        }
    }
}

extension Service where Request: Codable, Response: Codable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, request: .json, response: .json, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, request: .json, response: .json, trusting: trust, timeout: timeout)
    }
}

extension Service where Request == String, Response == String {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, request: .text, response: .text, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, request: .text, response: .text, trusting: trust, timeout: timeout)
    }
}

extension Service where Request == [UInt8], Response == [UInt8] {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, request: .bytes, response: .bytes, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, request: .bytes, response: .bytes, trusting: trust, timeout: timeout)
    }
}

extension Service where Request: BitwiseCopyable, Response: BitwiseCopyable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, request: .raw, response: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, request: .raw, response: .raw, trusting: trust, timeout: timeout)
    }
}

extension Service where Request: BitwiseCopyable & Codable, Response: BitwiseCopyable & Codable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, request: .raw, response: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, request: .raw, response: .raw, trusting: trust, timeout: timeout)
    }
}
