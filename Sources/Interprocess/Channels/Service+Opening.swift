// Opening a Service once its creator has made it (`openWhenCreated`), by request and response types,
// and what the shared opener (``CodecOpenedKind``) needs of a service.

extension Service: CodecOpenedKind {
    static func expectation(for codecs: (request: ChannelCodec<Request>, response: ChannelCodec<Response>)) -> ServiceParameters {
        parameters(capacity: 1, maxRequestSize: 1, maxResponseSize: 1, request: codecs.request, response: codecs.response)
    }

    static func handle(
        on state: ServiceState, codecs: (request: ChannelCodec<Request>, response: ChannelCodec<Response>)
    ) throws(InterprocessError) -> Service {
        try Service(state: state, request: codecs.request, response: codecs.response)
    }
}

extension Service where Request: Codable, Response: Codable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, codecs: (request: .json, response: .json), trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, codecs: (request: .json, response: .json), trusting: trust, timeout: timeout)
    }
}

extension Service where Request == String, Response == String {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, codecs: (request: .text, response: .text), trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, codecs: (request: .text, response: .text), trusting: trust, timeout: timeout)
    }
}

extension Service where Request == [UInt8], Response == [UInt8] {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, codecs: (request: .bytes, response: .bytes), trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, codecs: (request: .bytes, response: .bytes), trusting: trust, timeout: timeout)
    }
}

extension Service where Request: BitwiseCopyable, Response: BitwiseCopyable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, codecs: (request: .raw, response: .raw), trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, codecs: (request: .raw, response: .raw), trusting: trust, timeout: timeout)
    }
}

extension Service where Request: BitwiseCopyable & Codable, Response: BitwiseCopyable & Codable {
    /// Opens the service, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> Service {
        try await openWhenCreated(name: name, codecs: (request: .raw, response: .raw), trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> Service {
        try blockingOpenWhenCreated(name: name, codecs: (request: .raw, response: .raw), trusting: trust, timeout: timeout)
    }
}
