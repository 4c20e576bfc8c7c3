// Commands for channel readiness descriptors ("ready-…"). Exit codes: 0 success, 1 failure, 2 usage.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessToolSupport

/// Runs one readiness command; returns the exit status.
func runReadinessCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "ready-hold":
            // ready-hold NAME [close]: opens the Channel<String> NAME, takes a readiness descriptor,
            // says "registered", and when told exits without closing anything — or, with `close`,
            // closes the descriptor first (crash points on the way are armed by the environment).
            let channel = try Channel<String>.open(name: rest[0])
            let readiness = try channel.readinessDescriptor()
            say("registered")
            awaitInstruction(upTo: 120)
            if rest.count > 1 && rest[1] == "close" { readiness.close() }
            withExtendedLifetime(readiness) {}
            _exit(0)
        case "ready-send":
            // ready-send NAME ID COUNT: opens the Channel<String> NAME, says "ready", and when told
            // sends "ID:SEQ" for SEQ in 0..<COUNT (blocking while full), then says "done" and keeps
            // its handle until told again (or killed).
            let channel = try Channel<String>.open(name: rest[0])
            let id = rest[1]
            let count = Int(rest[2])!
            say("ready")
            awaitInstruction(upTo: 120)
            for sequence in 0..<count { try channel.blockingSend("\(id):\(sequence)", timeout: .seconds(120)) }
            say("done")
            awaitInstruction(upTo: 120)
            withExtendedLifetime(channel) {}
        case "ready-mq-hold":
            // ready-mq-hold NAME: opens the MessageQueue<String> NAME, takes a readiness descriptor,
            // says "registered", and when told exits without closing anything.
            let queue = try MessageQueue<String>.open(name: rest[0])
            let readiness = try queue.readinessDescriptor()
            say("registered")
            awaitInstruction(upTo: 120)
            withExtendedLifetime(readiness) {}
            _exit(0)
        case "ready-mq-send":
            // ready-mq-send NAME PRIORITY=TEXT…: opens the MessageQueue<String> NAME, says "ready",
            // and when told sends each TEXT with its PRIORITY (blocking while full), then says
            // "done" and keeps its handle until told again (or killed).
            let queue = try MessageQueue<String>.open(name: rest[0])
            let messages = rest.dropFirst().map { item -> (Int, String) in
                let parts = item.split(separator: "=", maxSplits: 1)
                return (Int(parts[0])!, String(parts[1]))
            }
            say("ready")
            awaitInstruction(upTo: 120)
            for (priority, text) in messages { try queue.blockingSend(text, priority: priority, timeout: .seconds(120)) }
            say("done")
            awaitInstruction(upTo: 120)
            withExtendedLifetime(queue) {}
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}
