import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc subscribe NAME`: subscribes to a broadcast and prints each message on a line.
struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribe to a broadcast and print its messages, one per line.",
        discussion: """
            Receives every message published after it subscribed (and with --history, up to that \
            many published before), until the broadcast is closed and read to the end, or --count \
            messages. Messages are printed as ipc recv prints them. Messages this subscriber missed \
            (overwritten before it read them, under the dropOldest policy) are reported on standard \
            error ("missed N messages"), or with --json as a line {"missed": N}.
            """
    )

    @Argument(help: "The broadcast's name.")
    var name: String

    @Option(help: "Stop after this many messages.")
    var count: Int?

    @Option(help: ArgumentHelp("Wait at most this long for each message (then fail).", valueName: "seconds"))
    var timeout: Double?

    @Flag(help: "Print each message as a JSON object.")
    var json = false

    @Option(help: "Also receive up to this many of the messages published before subscribing.")
    var history = 0

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let timeout, !(timeout >= 0 && timeout <= 1e9) { throw ValidationError("--timeout must be a number of seconds, at least 0") }
        if history < 0 { throw ValidationError("--history must be at least 0") }
    }

    func run() throws {
        let broadcast = try Broadcast<[UInt8]>.openAnyType(name: name, trusting: trust.trusted)
        defer { broadcast.detach() }
        let subscription = try broadcast.subscribe(history: history)
        defer { subscription.close() }
        let format = broadcast.messageFormat
        let timeout = timeout.map { Duration.milliseconds(Int64(($0 * 1000).rounded(.up))) }
        let limit = count ?? .max
        let json = json
        try Interruptible.run {
            var received = 0
            while received < limit {
                let outcome: Result<Broadcast<[UInt8]>.Delivery, InterprocessError>
                do throws(InterprocessError) {
                    outcome = .success(try await subscription.receive(timeout: timeout))
                } catch {
                    outcome = .failure(error)
                }
                switch outcome {
                case .success(.message(let message)):
                    received += 1
                    StandardStream.write((json ? Receive.json(message, format: format) : Receive.text(message, format: format)) + "\n")
                case .success(.missed(let missed)):
                    if json {
                        StandardStream.write("{\"missed\":\(missed)}\n")
                    } else {
                        StandardStream.write("ipc: missed \(missed) message\(missed == 1 ? "" : "s")\n", to: 2)
                    }
                case .failure(let error) where error.code == .closed:
                    return
                case .failure(let error):
                    throw error
                }
            }
        }
    }
}
