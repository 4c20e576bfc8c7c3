// Commands for MessageQueue ("mq-…"). Exit codes: 0 success, 1 failure, 2 usage, 4 timed out.
// The numbered-message commands share the channel commands' ledger (ChannelCommands.swift); producer
// ID sends all its messages with priority ID % 4, so that its messages stay in order.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Dispatch

/// Runs one message-queue command; returns the exit status.
func runMessageQueueCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "mq-send":
            // mq-send NAME PRIORITY TEXT...: sends each TEXT with PRIORITY (a MessageQueue<String>),
            // says "sending" before and "sent" after.
            let queue = try MessageQueue<String>.open(name: rest[0])
            say("sending")
            for text in rest.dropFirst(2) { try queue.blockingSend(text, priority: Int(rest[1])!, timeout: .seconds(20)) }
            say("sent")
        case "mq-send-pattern":
            // mq-send-pattern NAME COUNT: sends COUNT messages "P:I" with priority P = (I * 7) % 5,
            // blocking while the queue is full; says "sent".
            let queue = try MessageQueue<String>.open(name: rest[0])
            for index in 0..<Int(rest[1])! {
                let priority = (index * 7) % 5
                try queue.blockingSend("\(priority):\(index)", priority: priority, timeout: .seconds(20))
            }
            say("sent")
        case "mq-receive":
            // mq-receive NAME TIMEOUT_MS: says "receiving", then "received TEXT PRIORITY" or the error's code.
            let queue = try MessageQueue<String>.open(name: rest[0])
            say("receiving")
            do throws(InterprocessError) {
                let (text, priority) = try queue.blockingReceiveWithPriority(timeout: .milliseconds(Int(rest[1])!))
                say("received \(text) \(priority)")
            } catch {
                say("\(error.code)")
            }
        case "mq-receive-async":
            // mq-receive-async NAME TIMEOUT_MS: as mq-receive, with the async receive.
            let queue = try MessageQueue<String>.open(name: rest[0])
            say("receiving")
            let done = DispatchSemaphore(value: 0)
            let timeout = Int(rest[1])!
            Task {
                do throws(InterprocessError) {
                    let (text, priority) = try await queue.receiveWithPriority(timeout: .milliseconds(timeout))
                    say("received \(text) \(priority)")
                } catch {
                    say("\(error.code)")
                }
                done.signal()
            }
            done.wait()
        case "mq-drain":
            // mq-drain NAME: receives until the queue is empty, printing "P:I" lines as received
            // (checking that each priority matches its text), then "drained N".
            let queue = try MessageQueue<String>.open(name: rest[0])
            var drained = 0
            while let (text, priority) = try queue.tryReceiveWithPriority() {
                guard text.hasPrefix("\(priority):") else { fail("message \(text) came with priority \(priority)") }
                say(text)
                drained += 1
            }
            say("drained \(drained)")
        case "mq-produce":
            // mq-produce NAME LEDGER ID COUNT [async]: as chan-produce, priority ID % 4.
            try produce(name: rest[0], ledger: rest[1], id: Int(rest[2])!, count: Int(rest[3])!, async: rest.count > 4 && rest[4] == "async")
        case "mq-consume":
            // mq-consume NAME LEDGER COUNT [async]: as chan-consume.
            try consume(name: rest[0], ledger: rest[1], count: Int(rest[2])!, async: rest.count > 3 && rest[3] == "async")
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

private func produce(name: String, ledger: String, id: Int, count: Int, async: Bool) throws {
    let queue = try MessageQueue<[UInt8]>.open(name: name)
    let priority = id % 4
    try produceNumbered(ledger: ledger, id: id, count: count, async: async) { message throws(InterprocessError) in
        try queue.blockingSend(message, priority: priority, timeout: .seconds(60))
    } send: { message throws(InterprocessError) in
        try await queue.send(message, priority: priority, timeout: .seconds(60))
    }
}

private func consume(name: String, ledger: String, count: Int, async: Bool) throws {
    let queue = try MessageQueue<[UInt8]>.open(name: name)
    try consumeNumbered(ledger: ledger, count: count, async: async, messages: queue.messages) { () throws(InterprocessError) in
        let (message, priority) = try queue.blockingReceiveWithPriority(timeout: .seconds(60))
        return (message, priority)
    }
}
