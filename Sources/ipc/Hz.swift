import ArgumentParser
import Dispatch
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc hz NAME`: the message rate of a channel, message queue, broadcast or service, from the counter
/// of messages sent that each keeps in its header (`ipc inspect` shows it), sampled at an interval. It
/// takes no message and registers nowhere: it only reads the segment, as `ipc inspect` does.
struct Hz: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the message rate of a channel, message queue, broadcast or service, without taking any message.",
        discussion: """
            Every interval, prints how many messages were sent (published, or requested of a service) \
            since the previous sample and the rate per second, and the messages waiting. Until \
            interrupted, or --count samples.
            """
    )

    @Argument(help: "The channel's, message queue's, broadcast's or service's name.")
    var name: String

    @Option(help: "Seconds between samples (0.01 to 3600).")
    var interval: Double = 1

    @Option(help: "How many samples to print (default: until interrupted).")
    var count: Int?

    @Flag(help: "Print one JSON object per sample: name, messages, seconds, rate, total, waiting.")
    var json = false

    struct Sample: Encodable {
        var name: String
        var messages: UInt64
        var seconds: Double
        var rate: Double
        var total: UInt64
        var waiting: Int?
    }

    /// The detail that counts the messages sent so far, by kind.
    static let counters = ["channel": "sent", "mqueue": "sent", "broadcast": "head", "service": "requests"]

    func validate() throws {
        guard interval >= 0.01, interval <= 3600 else { throw ValidationError("--interval must be between 0.01 and 3600 seconds") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        var previous = try read()
        var printed = 0
        while count.map({ printed < $0 }) ?? true {
            Thread.sleep(forTimeInterval: interval)
            let next = try read()
            let seconds = Double(next.time - previous.time) / 1e9
            // A counter that went back (the name now names another object) counts from zero.
            let messages = next.total >= previous.total ? next.total - previous.total : next.total
            let sample = Sample(
                name: name, messages: messages, seconds: seconds, rate: seconds > 0 ? Double(messages) / seconds : 0,
                total: next.total, waiting: next.waiting)
            if json {
                StandardStream.write(try Format.json(sample, compact: true))
            } else {
                let waiting = sample.waiting.map { ", \($0) waiting" } ?? ""
                say("\(name): \(String(format: "%.1f", sample.rate)) msg/s (\(messages) in \(String(format: "%.2f", seconds)) s, \(next.total) in all\(waiting))")
            }
            previous = next
            printed += 1
        }
    }

    /// The object's counter of messages sent and its depth now, with the monotonic time of reading.
    private func read() throws -> (total: UInt64, waiting: Int?, time: UInt64) {
        let info = try SharedMemory.info(name: name)
        guard let key = Self.counters[info.kind] else {
            throw ToolError("'\(name)' is a \(info.kind); ipc hz measures channels, message queues, broadcasts and services")
        }
        guard let total = info.details[key].flatMap({ UInt64($0) }) else {
            throw ToolError("'\(name)' does not show its count of messages (\(key)): is it damaged? See ipc inspect \(name)")
        }
        let waiting = (info.details["count"] ?? info.details["queued"]).flatMap { Int($0) }
        return (total, waiting, DispatchTime.now().uptimeNanoseconds)
    }
}
