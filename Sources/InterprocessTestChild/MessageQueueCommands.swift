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
        case "mq-wake-rounds":
            // mq-wake-rounds receiver|sender|async-receiver WORK GO ACKS ROUNDS ID: ROUNDS rounds of one message
            // each, on MessageQueue<UInt64>s. A receiver takes one from WORK, sends ID on ACKS and
            // (except after the last round) takes one from GO; a sender takes one from GO, then
            // sends ID on WORK. Every wait is bounded by 20 s (exit 4: a wake-up was lost, if the
            // periodic look is turned off: INTERPROCESS_MQUEUE_RECOVERY_MS).
            let work = try MessageQueue<UInt64>.open(name: rest[1])
            let go = try MessageQueue<UInt64>.open(name: rest[2])
            let acks = try MessageQueue<UInt64>.open(name: rest[3])
            let rounds = Int(rest[4])!, id = UInt64(rest[5])!
            let bound = Duration.seconds(20)
            say("ready")
            for round in 0..<rounds {
                switch rest[0] {
                case "receiver":
                    _ = try work.blockingReceive(timeout: bound)
                    try acks.blockingSend(id, timeout: bound)
                    if round < rounds - 1 { _ = try go.blockingReceive(timeout: bound) }
                case "async-receiver":
                    let finished = DispatchSemaphore(value: 0)
                    let last = round == rounds - 1
                    Task {
                        do throws(InterprocessError) {
                            _ = try await work.receive(timeout: bound)
                            try await acks.send(id, timeout: bound)
                            if !last { _ = try await go.receive(timeout: bound) }
                        } catch {
                            StandardStream.write("child: \(error)\n", to: 2)
                            exit(error.code == .timedOut ? 4 : 1)
                        }
                        finished.signal()
                    }
                    finished.wait()
                default:
                    _ = try go.blockingReceive(timeout: bound)
                    try work.blockingSend(id, timeout: bound)
                }
            }
            say("done")
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
