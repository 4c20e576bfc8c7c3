// Creating and opening a MessageQueue, by message type (as Channel's), and what the shared opener
// (``CodecOpenedKind``) needs of a message queue.
public import SystemPackage

extension MessageQueue: CodecOpenedKind {
    static func expectation(for codec: ChannelCodec<Message>) -> MessageQueueParameters {
        MessageQueueParameters(capacity: 1, maxMessageSize: 1, messageType: codec.messageType)
    }

    static func handle(on state: MessageQueueState, codecs codec: ChannelCodec<Message>) throws(InterprocessError) -> MessageQueue {
        try MessageQueue(state: state, codec: codec)
    }
}

extension MessageQueue where Message == [UInt8] {
    /// Creates a message queue of byte messages of up to `maxMessageSize` bytes that holds up to `capacity` of them. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> MessageQueue {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .bytes, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a message queue of byte messages (`incompatible` if its messages are of another type). Only a queue of a
    /// trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try open(name: name, codecs: .bytes, trusting: trust)
    }

    /// Opens the queue, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)` does if there is none; `created` says
    /// which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .bytes, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Opens the queue, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> MessageQueue {
        try await openWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> MessageQueue {
        try blockingOpenWhenCreated(name: name, codecs: .bytes, trusting: trust, timeout: timeout)
    }
}

extension MessageQueue where Message == String {
    /// Creates a message queue of strings (sent as UTF-8) of up to `maxMessageSize` bytes that holds up to `capacity` of them. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> MessageQueue {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .text, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a message queue of strings (`incompatible` if its messages are of another type). Only a queue of a
    /// trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try open(name: name, codecs: .text, trusting: trust)
    }

    /// Opens the queue, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)` does if there is none; `created` says
    /// which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .text, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Opens the queue, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> MessageQueue {
        try await openWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> MessageQueue {
        try blockingOpenWhenCreated(name: name, codecs: .text, trusting: trust, timeout: timeout)
    }
}

extension MessageQueue where Message: Codable {
    /// Creates a message queue of `Message` values sent as JSON, of up to `maxMessageSize` bytes each, that holds up to `capacity` of them. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> MessageQueue {
        try create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .json, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a message queue of `Message` values sent as JSON (`incompatible` if its messages are of another type). Only a queue of a
    /// trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try open(name: name, codecs: .json, trusting: trust)
    }

    /// Opens the queue, or creates it as `create(name:capacity:maxMessageSize:permissions:lifetime:)` does if there is none; `created` says
    /// which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxMessageSize: Int = 1024, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: maxMessageSize, codec: .json, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Opens the queue, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> MessageQueue {
        try await openWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> MessageQueue {
        try blockingOpenWhenCreated(name: name, codecs: .json, trusting: trust, timeout: timeout)
    }
}

extension MessageQueue where Message: BitwiseCopyable {
    /// Creates a message queue of `Message` values copied byte for byte (every process must agree on the type's layout) that holds up to `capacity` of them. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576.
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> MessageQueue {
        try create(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a message queue of raw `Message` values (`incompatible` if its messages are of another type). Only a queue of a
    /// trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try open(name: name, codecs: .raw, trusting: trust)
    }

    /// Opens the queue, or creates it as `create(name:capacity:permissions:lifetime:)` does if there is none; `created` says
    /// which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Opens the queue, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> MessageQueue {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> MessageQueue {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}

extension MessageQueue where Message: BitwiseCopyable & Codable {
    /// Creates a message queue of `Message` values copied byte for byte (a type that is both `BitwiseCopyable` and `Codable` travels raw) that holds up to `capacity` of them. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside
    /// 1...1,048,576.
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> MessageQueue {
        try create(name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a message queue of raw `Message` values (`incompatible` if its messages are of another type). Only a queue of a
    /// trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> MessageQueue {
        try open(name: name, codecs: .raw, trusting: trust)
    }

    /// Opens the queue, or creates it as `create(name:capacity:permissions:lifetime:)` does if there is none; `created` says
    /// which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite,
        lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (queue: MessageQueue, created: Bool) {
        try openOrCreate(
            name: name, capacity: capacity, maxMessageSize: max(MemoryLayout<Message>.size, 1), codec: .raw, permissions: permissions,
            lifetime: lifetime, trusting: trust)
    }

    /// Opens the queue, suspending the task until a process has created it, for at most `timeout`
    /// (nil: as long as it takes). The rules of ``SharedMemory/openWhenCreated(name:trusting:timeout:)``
    /// and the checks of `open(name:trusting:)`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> MessageQueue {
        try await openWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }

    /// The blocking form of `openWhenCreated(name:trusting:timeout:)`: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> MessageQueue {
        try blockingOpenWhenCreated(name: name, codecs: .raw, trusting: trust, timeout: timeout)
    }
}
