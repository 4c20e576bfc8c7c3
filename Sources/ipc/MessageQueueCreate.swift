import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc mq-create NAME`: creates a persistent message queue of strings.
struct MessageQueueCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mq-create",
        abstract: "Create a persistent message queue of strings (for ipc send --priority / ipc recv).",
        discussion: """
            The queue holds --capacity messages of up to --max-message-size bytes each, and stays \
            until removed (ipc rm NAME). Programs open it as MessageQueue<String>.
            """
    )

    @Argument(help: "The queue's name.")
    var name: String

    @Option(help: "How many messages the queue holds.")
    var capacity = 64

    @Option(name: .customLong("max-message-size"), help: ArgumentHelp("The largest message.", valueName: "bytes"))
    var maxMessageSize = 4096

    func validate() throws {
        if capacity < 1 { throw ValidationError("--capacity must be at least 1") }
        if maxMessageSize < 1 { throw ValidationError("--max-message-size must be at least 1") }
    }

    func run() throws {
        let queue = try MessageQueue<String>.create(name: name, capacity: capacity, maxMessageSize: maxMessageSize, lifetime: .persistent)
        queue.detach()
        say("created message queue \(name): \(capacity) messages of up to \(maxMessageSize) bytes")
    }
}
