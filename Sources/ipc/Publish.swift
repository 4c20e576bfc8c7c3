import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc publish NAME [TEXT…]`: publishes each TEXT, or each line of standard input, to a broadcast.
struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish messages to a broadcast: each TEXT, or each line of standard input.",
        discussion: """
            Every subscriber receives every message. A broadcast of bytes or strings gets the text's \
            UTF-8 bytes; to a broadcast of JSON messages each message must be JSON (checked before \
            anything is published). A broadcast of raw values is refused. Under the blockPublisher \
            policy it waits for the slowest subscriber (at most --timeout seconds per message). With \
            --create, a persistent broadcast of strings is created if there is none; --close closes \
            it after the last message (its subscribers then see the end).
            """
    )

    @Argument(help: "The broadcast's name.")
    var name: String

    @Argument(help: "The messages (UTF-8); none: each line of standard input.")
    var texts: [String] = []

    @Option(help: ArgumentHelp("Wait at most this long for room, per message.", valueName: "seconds"))
    var timeout: Double?

    @Flag(help: "Create a persistent broadcast of strings if there is none.")
    var create = false

    @Option(help: "With --create: how many messages the ring holds.")
    var capacity = 64

    @Option(name: .customLong("max-message-size"), help: ArgumentHelp("With --create: the largest message.", valueName: "bytes"))
    var maxMessageSize = 4096

    @Option(help: ArgumentHelp("With --create: what a slow subscriber does to publishers: block or drop.", valueName: "policy"))
    var policy = "block"

    @Flag(help: "Close the broadcast after publishing (its subscribers read what is left, then see the end).")
    var close = false

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if let timeout, !(timeout >= 0 && timeout <= 1e9) { throw ValidationError("--timeout must be a number of seconds, at least 0") }
        if capacity < 1 { throw ValidationError("--capacity must be at least 1") }
        if maxMessageSize < 1 { throw ValidationError("--max-message-size must be at least 1") }
        if policy != "block" && policy != "drop" { throw ValidationError("--policy must be block or drop") }
    }

    func run() throws {
        let broadcast = try openBroadcast()
        defer { broadcast.detach() }
        let format = broadcast.messageFormat
        if format == .rawValue {
            throw ToolError("'\(name)' carries raw values (\(broadcast.messageTypeDescription)); ipc publish publishes text")
        }
        let texts = texts
        let timeout = timeout.map { Duration.milliseconds(Int64(($0 * 1000).rounded(.up))) }
        let name = name
        let closing = close
        try Interruptible.run {
            let published = try await TextMessages.deliverEach(texts, format: format, name: name) { bytes in
                try await broadcast.publish(bytes, timeout: timeout)
            }
            if closing { broadcast.close() }
            StandardStream.write("published \(published) message\(published == 1 ? "" : "s") to \(name)\(closing ? " and closed it" : "")\n")
        }
    }

    private func openBroadcast() throws -> Broadcast<[UInt8]> {
        guard create else { return try Broadcast<[UInt8]>.openAnyType(name: name, trusting: trust.trusted) }
        return try TextMessages.openCreatingIfMissing(name: name) { () throws(InterprocessError) in
            try Broadcast<[UInt8]>.openAnyType(name: name, trusting: trust.trusted)
        } create: { () throws(InterprocessError) in
            try Broadcast<String>.create(
                name: name, capacity: capacity, maxMessageSize: maxMessageSize, policy: policy == "drop" ? .dropOldest : .blockPublisher,
                lifetime: .persistent
            ).detach()
        }
    }
}
