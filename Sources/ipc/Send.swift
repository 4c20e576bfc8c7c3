import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc send NAME [TEXT…]`: sends each TEXT, or each line of standard input, as one message.
struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send messages to a channel or message queue: each TEXT, or each line of standard input.",
        discussion: """
            A channel of bytes or strings gets the text's UTF-8 bytes; to a channel of JSON messages \
            each message must be JSON (it is checked before anything is sent). A channel of raw values \
            is refused. Waits while the channel is full (at most --timeout seconds per message). \
            With --create, a persistent channel of strings is created if there is none; --close \
            closes the channel after the last message (its receivers then see the end). To a \
            message queue (ipc mq-create), each message goes with --priority (higher leaves first).
            """
    )

    @Argument(help: "The channel's name.")
    var name: String

    @Argument(help: "The messages (UTF-8); none: each line of standard input.")
    var texts: [String] = []

    @Option(help: ArgumentHelp("Wait at most this long for room, per message.", valueName: "seconds"))
    var timeout: Double?

    @Option(help: "A message queue's priority for these messages (0 to 4294967295; higher leaves first).")
    var priority: Int?

    @Flag(help: "Create a persistent channel of strings if there is none.")
    var create = false

    @Option(help: "With --create: how many messages the channel holds.")
    var capacity = 64

    @Option(name: .customLong("max-message-size"), help: ArgumentHelp("With --create: the largest message.", valueName: "bytes"))
    var maxMessageSize = 4096

    @Flag(help: "Close the channel after sending (its receivers drain it, then see the end).")
    var close = false

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if let timeout, !(timeout >= 0 && timeout <= 1e9) { throw ValidationError("--timeout must be a number of seconds, at least 0") }
        if capacity < 1 { throw ValidationError("--capacity must be at least 1") }
        if maxMessageSize < 1 { throw ValidationError("--max-message-size must be at least 1") }
        if let priority, !(0...MessageQueue<[UInt8]>.maximumPriority).contains(priority) {
            throw ValidationError("--priority must be in 0...\(MessageQueue<[UInt8]>.maximumPriority)")
        }
    }

    func run() throws {
        let channel = try openEndpoint()
        defer { channel.detach() }
        if priority != nil && !channel.isQueue {
            throw ToolError("'\(name)' is a channel, whose messages have no priority (--priority is for message queues)")
        }
        let format = channel.messageFormat
        if format == .rawValue {
            throw ToolError("'\(name)' carries raw values (\(channel.messageTypeDescription)); ipc send sends text")
        }
        let texts = texts
        let timeout = timeout.map { Duration.milliseconds(Int64(($0 * 1000).rounded(.up))) }
        let name = name
        let closing = close
        let priority = priority ?? 0
        try Interruptible.run {
            let sent = try await TextMessages.deliverEach(texts, format: format, name: name) { bytes in
                try await channel.send(bytes, priority: priority, timeout: timeout)
            }
            if closing { channel.close() }
            say("sent \(sent) message\(sent == 1 ? "" : "s") to \(name)\(closing ? " and closed it" : "")")
        }
    }

    private func openEndpoint() throws -> MessageEndpoint {
        guard create else { return try MessageEndpoint.open(name: name, trusting: trust.trusted) }
        return try TextMessages.openCreatingIfMissing(name: name) { () throws(InterprocessError) in
            try MessageEndpoint.open(name: name, trusting: trust.trusted)
        } create: { () throws(InterprocessError) in
            try Channel<String>.create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, lifetime: .persistent).detach()
        }
    }
}
