// Commands for Broadcast ("bc-…"). Exit codes: 0 success, 1 failure, 2 usage, 4 timed out.
//
// The broadcasts of these commands carry UInt64 numbers that a publisher sends in increasing order
// (each one more than the last), so that a subscriber can check order and completeness itself.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Dispatch

/// Runs one broadcast command; returns the exit status.
func runBroadcastCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "bc-subscribe":
            // bc-subscribe NAME [history K] [async] [hold]: subscribes to a Broadcast<UInt64> (with
            // a history of K), says "subscribed FIRST" (FIRST: the position it starts at), with
            // `hold` waits to be told, then receives until the broadcast is closed and says
            // "received R missed M violations V first F last L" (F, L: -1 if none). A violation is
            // a number that is not the one after the last, plus what was missed in between.
            let options = Set(rest.dropFirst())
            var history = 0
            if let index = rest.firstIndex(of: "history") { history = Int(rest[index + 1])! }
            let broadcast = try Broadcast<UInt64>.open(name: rest[0])
            let subscription = try broadcast.subscribe(history: history)
            say("subscribed \(broadcast.publishedCount - subscription.backlog)")
            if options.contains("hold") { _ = awaitInstruction(upTo: 120) }
            let tally = BroadcastTally()
            if options.contains("async") {
                try runInTask { () throws(InterprocessError) in
                    for try await delivery in subscription.messages { tally.count(delivery) }
                }
            } else {
                receiving: while true {
                    switch Result(catching: { () throws(InterprocessError) in try subscription.blockingReceive(timeout: .seconds(60)) }) {
                    case .success(let delivery): tally.count(delivery)
                    case .failure(let error) where error.code == .closed: break receiving
                    case .failure(let error): throw error
                    }
                }
            }
            say(tally.report)
        case "bc-publish":
            // bc-publish NAME FROM COUNT: publishes FROM, FROM + 1, … (COUNT numbers) to a
            // Broadcast<UInt64>; says "publishing" before and "published" after.
            let broadcast = try Broadcast<UInt64>.open(name: rest[0])
            let from = UInt64(rest[1])!, count = UInt64(rest[2])!
            say("publishing")
            for value in from..<(from + count) { try broadcast.blockingPublish(value, timeout: .seconds(60)) }
            say("published")
        case "bc-subscribe-multi":
            // bc-subscribe-multi NAME: subscribes to a Broadcast<UInt64> whose numbers are ID << 32 |
            // SEQ from several publishers (each publishing SEQ = 0, 1, 2, …), says "subscribed",
            // receives until the broadcast is closed, and says "received R missed M violations V
            // publishers P digest D": a violation is a SEQ that is not the one after its
            // publisher's last (or 0 for its first); D sums ID * 1_000_003 + messages of ID.
            let subscription = try Broadcast<UInt64>.open(name: rest[0]).subscribe()
            say("subscribed")
            var last: [UInt64: UInt64] = [:]
            var received = 0, missed = 0, violations = 0
            receiving: while true {
                switch Result(catching: { () throws(InterprocessError) in try subscription.blockingReceive(timeout: .seconds(120)) }) {
                case .success(.message(let value)):
                    let (id, sequence) = (value >> 32, value & 0xFFFF_FFFF)
                    if sequence != (last[id].map { $0 + 1 } ?? 0) { violations += 1 }
                    last[id] = sequence
                    received += 1
                case .success(.missed(let count)): missed += count
                case .failure(let error) where error.code == .closed: break receiving
                case .failure(let error): throw error
                }
            }
            let digest = last.reduce(UInt64(0)) { $0 &+ $1.key &* 1_000_003 &+ $1.value &+ 1 }
            say("received \(received) missed \(missed) violations \(violations) publishers \(last.count) digest \(digest)")
        case "bc-receive":
            // bc-receive NAME TIMEOUT_MS: subscribes to a Broadcast<String>, says "receiving", then
            // "received TEXT", "missed N" or the error's code.
            let subscription = try Broadcast<String>.open(name: rest[0]).subscribe()
            say("receiving")
            do throws(InterprocessError) {
                switch try subscription.blockingReceive(timeout: .milliseconds(Int(rest[1])!)) {
                case .message(let text): say("received \(text)")
                case .missed(let count): say("missed \(count)")
                }
            } catch {
                say("\(error.code)")
            }
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
        return 0
    } catch let error as InterprocessError {
        StandardStream.write("child: \(error)\n", to: 2)
        return error.code == .timedOut ? 4 : 1
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// What a subscriber received, checked as it arrives.
///
/// `@unchecked Sendable`: used by one task or thread at a time (the receiving one), and read after it ended.
private final class BroadcastTally: @unchecked Sendable {
    var received = 0
    var missed = 0
    var missedSinceLast = 0
    var violations = 0
    var first: UInt64?
    var last: UInt64?

    func count(_ delivery: Broadcast<UInt64>.Delivery) {
        switch delivery {
        case .missed(let count):
            missed += count
            missedSinceLast += count
        case .message(let value):
            if let last, value != last &+ 1 &+ UInt64(missedSinceLast) { violations += 1 }
            if first == nil { first = value }
            last = value
            missedSinceLast = 0
            received += 1
        }
    }

    var report: String {
        "received \(received) missed \(missed) violations \(violations) first \(first.map { Int($0) } ?? -1) last \(last.map { Int($0) } ?? -1)"
    }
}
