// Commands for a Channel's exclusive endpoints ("chan-x-…"), run through runChannelCommand (its
// exit codes and ledger).
import Interprocess
import InterprocessSystem
import Synchronization
import Dispatch

func runExclusiveChannelCommand(_ command: String, _ rest: [String]) throws {
    switch command {
    case "chan-x-send":
        // chan-x-send NAME TEXT...: takes the sender role of a Channel<String>, says "sending",
        // sends each TEXT, says "sent".
        let channel = try Channel<String>.open(name: rest[0])
        var sender = try channel.exclusiveSender()
        say("sending")
        for text in rest.dropFirst() { try sender.blockingSend(text, timeout: .seconds(20)) }
        say("sent")
    case "chan-x-receive":
        // chan-x-receive NAME TIMEOUT_MS: takes the receiver role, says "receiving", then
        // "received TEXT" or the error's code.
        let channel = try Channel<String>.open(name: rest[0])
        var receiver = try channel.exclusiveReceiver()
        say("receiving")
        say(receiveOrCode(&receiver, timeout: .milliseconds(Int(rest[1])!)))
    case "chan-x-hold":
        // chan-x-hold NAME sender|receiver: takes the role, says "holding", gives it up when told
        // (a line on standard input), says "released".
        let channel = try Channel<String>.open(name: rest[0])
        if rest[1] == "sender" {
            let sender = try channel.exclusiveSender()
            say("holding")
            awaitInstruction(upTo: 120)
            _ = consume sender
        } else {
            let receiver = try channel.exclusiveReceiver()
            say("holding")
            awaitInstruction(upTo: 120)
            _ = consume receiver
        }
        say("released")
    case "chan-x-produce":
        // chan-x-produce NAME LEDGER ID COUNT [async|until-closed]: as chan-produce, through the
        // exclusive sender. until-closed: sends until the channel is closed (COUNT at most),
        // recording each send that returned, then says "closed N".
        let channel = try Channel<[UInt8]>.open(name: rest[0])
        let ledger = try Ledger(name: rest[1], count: Int(rest[3])!)
        let id = Int(rest[2])!, count = Int(rest[3])!
        let mode = rest.count > 4 ? rest[4] : "blocking"
        if mode == "async" {
            say("ready")
            let done = DispatchSemaphore(value: 0)
            let failure = Mutex<InterprocessError?>(nil)
            Task {
                do throws(InterprocessError) {
                    var sender = try channel.exclusiveSender()
                    for sequence in 0..<count {
                        try await sender.send(numberedMessage(id: id, sequence: sequence), timeout: .seconds(60))
                        ledger.sent(id).pointee.store(UInt64(sequence + 1), ordering: .releasing)
                    }
                } catch {
                    failure.withLock { $0 = error }
                }
                done.signal()
            }
            done.wait()
            if let error = failure.withLock({ $0 }) { throw error }
            say("done")
            return
        }
        var sender = try channel.exclusiveSender()
        say("ready")
        for sequence in 0..<count {
            guard try sendUnlessClosed(&sender, numberedMessage(id: id, sequence: sequence), stopping: mode == "until-closed") else {
                say("closed \(sequence)")
                return
            }
            ledger.sent(id).pointee.store(UInt64(sequence + 1), ordering: .releasing)
        }
        say("done")
    case "chan-x-consume":
        // chan-x-consume NAME LEDGER COUNT: as chan-consume (blocking), through the exclusive receiver.
        let channel = try Channel<[UInt8]>.open(name: rest[0])
        var receiver = try channel.exclusiveReceiver()
        try consumeNumbered(ledger: rest[1], count: Int(rest[2])!, async: false, messages: channel.messages) { () throws(InterprocessError) in
            (try receiver.blockingReceive(timeout: .seconds(60)), nil)
        }
    default:
        fail("unknown command \(command)", code: 2)
    }
}

/// "received TEXT", or the error's code.
private func receiveOrCode(_ receiver: inout ExclusiveReceiver<String>, timeout: Duration) -> String {
    do throws(InterprocessError) {
        return "received \(try receiver.blockingReceive(timeout: timeout))"
    } catch {
        return "\(error.code)"
    }
}

/// Sends `message`; false if the channel was closed and `stopping` says that is the end.
private func sendUnlessClosed(_ sender: inout ExclusiveSender<[UInt8]>, _ message: [UInt8], stopping: Bool) throws(InterprocessError) -> Bool {
    do throws(InterprocessError) {
        try sender.blockingSend(message, timeout: .seconds(60))
        return true
    } catch {
        if stopping && error.code == .closed { return false }
        throw error
    }
}
