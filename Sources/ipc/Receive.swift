import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc recv NAME`: receives messages from a channel and prints one per line.
struct Receive: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recv",
        abstract: "Receive messages from a channel or message queue, one per line.",
        discussion: """
            Receives until the channel is closed and drained, or --count messages. Each message is \
            taken: no other receiver gets it. Text is printed with control characters and line \
            breaks escaped (\\n, \\e), so that each message is one line; raw values in hexadecimal. \
            With --json, each line is an object: "bytes", and "text" (valid UTF-8), "value" (a \
            channel of JSON messages) or "base64" (anything else), and for a message queue \
            "priority". A message queue gives its messages highest priority first.
            """
    )

    @Argument(help: "The channel's name.")
    var name: String

    @Option(help: "Stop after this many messages.")
    var count: Int?

    @Option(help: ArgumentHelp("Wait at most this long for each message (then fail).", valueName: "seconds"))
    var timeout: Double?

    @Flag(help: "Print each message as a JSON object.")
    var json = false

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let timeout, !(timeout >= 0 && timeout <= 1e9) { throw ValidationError("--timeout must be a number of seconds, at least 0") }
    }

    func run() throws {
        let channel = try MessageEndpoint.open(name: name, trusting: trust.trusted)
        defer { channel.detach() }
        let format = channel.messageFormat
        let timeout = timeout.map { Duration.milliseconds(Int64(($0 * 1000).rounded(.up))) }
        let limit = count ?? .max
        let json = json
        try Interruptible.run {
            try await Self.receive(from: channel, limit: limit, timeout: timeout, json: json, format: format)
        }
    }

    /// Receives and prints up to `limit` messages, or until the channel is closed and drained.
    private static func receive(
        from channel: MessageEndpoint, limit: Int, timeout: Duration?, json: Bool, format: ChannelMessageFormat
    ) async throws {
        var received = 0
        while received < limit {
            let outcome: Result<(bytes: [UInt8], priority: Int?), InterprocessError>
            do {
                outcome = .success(try await channel.receive(timeout: timeout))
            } catch {
                outcome = .failure(error)
            }
            switch outcome {
            case .success(let (message, priority)):
                received += 1
                StandardStream.write((json ? Self.json(message, format: format, priority: priority) : Self.text(message, format: format)) + "\n")
            case .failure(let error) where error.code == .closed:
                return
            case .failure(let error):
                throw error
            }
        }
    }

    /// One message as a line of text.
    static func text(_ message: [UInt8], format: ChannelMessageFormat) -> String {
        switch format {
        case .rawValue: message.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        default: Terminal.escapeData(message)
        }
    }

    /// One message as a JSON object on one line.
    static func json(_ message: [UInt8], format: ChannelMessageFormat, priority: Int? = nil) -> String {
        var object: [String: Any] = ["bytes": message.count]
        if let priority { object["priority"] = priority }
        if format == .json, let value = try? JSONSerialization.jsonObject(with: Data(message), options: [.fragmentsAllowed]) {
            object["value"] = value
        } else if format != .rawValue, let text = String(validating: message, as: UTF8.self) {
            object["text"] = text
        } else {
            object["base64"] = Data(message).base64EncodedString()
        }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]) else {
            return "{\"bytes\":\(message.count),\"base64\":\"\(Data(message).base64EncodedString())\"}"
        }
        return Terminal.escapeJSON(String(decoding: data, as: UTF8.self))
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
