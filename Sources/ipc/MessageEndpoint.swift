import Interprocess

/// What `ipc send` and `ipc recv` talk to: a channel or a message queue, whatever its message type,
/// as bytes (the segment's kind decides which).
enum MessageEndpoint {
    case channel(Channel<[UInt8]>)
    case queue(MessageQueue<[UInt8]>)

    /// Opens `name` as a message queue if it is one, else as a channel (whose errors say what it is).
    static func open(name: String, trusting trust: TrustedOwners) throws(InterprocessError) -> MessageEndpoint {
        if (try? SharedMemory.info(name: name))?.kind == SegmentKind.messageQueue.description {
            return .queue(try MessageQueue<[UInt8]>.openAnyType(name: name, trusting: trust))
        }
        return .channel(try Channel<[UInt8]>.openAnyType(name: name, trusting: trust))
    }

    var isQueue: Bool {
        if case .queue = self { return true }
        return false
    }

    var messageFormat: ChannelMessageFormat {
        switch self {
        case .channel(let channel): channel.messageFormat
        case .queue(let queue): queue.messageFormat
        }
    }

    var messageTypeDescription: String {
        switch self {
        case .channel(let channel): channel.messageTypeDescription
        case .queue(let queue): queue.messageTypeDescription
        }
    }

    /// Sends `bytes` (with `priority`: a message queue's; a channel has none, the caller checked).
    func send(_ bytes: [UInt8], priority: Int, timeout: Duration?) async throws(InterprocessError) {
        switch self {
        case .channel(let channel): try await channel.send(bytes, timeout: timeout)
        case .queue(let queue): try await queue.send(bytes, priority: priority, timeout: timeout)
        }
    }

    /// The next message, and its priority for a message queue.
    func receive(timeout: Duration?) async throws(InterprocessError) -> (bytes: [UInt8], priority: Int?) {
        switch self {
        case .channel(let channel): return (try await channel.receive(timeout: timeout), nil)
        case .queue(let queue):
            let (bytes, priority) = try await queue.receiveWithPriority(timeout: timeout)
            return (bytes, priority)
        }
    }

    func close() {
        switch self {
        case .channel(let channel): channel.close()
        case .queue(let queue): queue.close()
        }
    }

    func detach() {
        switch self {
        case .channel(let channel): channel.detach()
        case .queue(let queue): queue.detach()
        }
    }
}
