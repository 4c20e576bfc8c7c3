// Commands for a Channel's exclusive endpoints ("chan-x-…"), run through runChannelCommand (its
// exit codes and ledger).
#if canImport(Glibc)
import Glibc
#endif
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
    case "chan-x-raw-receive":
        // chan-x-raw-receive NAME shared|exclusive [COUNT]: receives COUNT (default 1) values of a
        // Channel<UInt64> (raw values: the ring's one-call receive, or the exclusive receiver's
        // inlined fast path), through the exclusive receiver or not; says "receiving", then
        // "received N" for each.
        let channel = try Channel<UInt64>.open(name: rest[0])
        let count = rest.count > 2 ? Int(rest[2])! : 1
        if rest[1] == "exclusive" {
            var receiver = try channel.exclusiveReceiver()
            say("receiving")
            for _ in 0..<count { say("received \(try receiver.blockingReceive(timeout: .seconds(20)))") }
        } else {
            say("receiving")
            say("received \(try channel.blockingReceive(timeout: .seconds(20)))")
        }
    case "chan-x-raw-send":
        // chan-x-raw-send NAME N...: chan-x-send for a Channel<UInt64> (raw values: the exclusive
        // sender's inlined fast path).
        let channel = try Channel<UInt64>.open(name: rest[0])
        var sender = try channel.exclusiveSender()
        say("sending")
        for value in rest.dropFirst() { try sender.blockingSend(UInt64(value)!, timeout: .seconds(20)) }
        say("sent")
    case "chan-x-raw-produce":
        // chan-x-raw-produce NAME COUNT blocking|async|try|until-closed: takes the sender role of a
        // Channel<UInt64>, says "ready", sends 0 … COUNT-1 through it (try: retrying while full),
        // now and then sleeping 1–2 ms so that the receiver parks, and says "done". until-closed:
        // sends (COUNT at most, back to back) until the channel is closed, then says "closed N",
        // N the sends that returned.
        let channel = try Channel<UInt64>.open(name: rest[0])
        let count = UInt64(rest[1])!
        let mode = rest[2]
        var random = SystemRandomNumberGenerator()
        func pause(_ value: UInt64) {
            if value % 2_000 == 1_000 { usleep(1_000 + UInt32(random.next() % 1_000)) }
        }
        if mode == "async" {
            say("ready")
            try runInTask { () throws(InterprocessError) in
                var sender = try channel.exclusiveSender()
                for value in 0..<count {
                    try await sender.send(value, timeout: .seconds(60))
                    pause(value)
                }
            }
            say("done")
            return
        }
        var sender = try channel.exclusiveSender()
        say("ready")
        for value in 0..<count {
            switch mode {
            case "until-closed":
                guard try sendUnlessClosed(&sender, value, stopping: true) else {
                    say("closed \(value)")
                    return
                }
                continue
            case "try":
                let deadline = Deadline(after: .seconds(60))
                while try !sender.trySend(value) {
                    guard !deadline.hasPassed else { fail("value \(value) found no room within 60 s") }
                    sched_yield()
                }
            default:
                try sender.blockingSend(value, timeout: .seconds(60))
            }
            pause(value)
        }
        say("done")
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
            try runInTask { () throws(InterprocessError) in
                var sender = try channel.exclusiveSender()
                for sequence in 0..<count {
                    try await sender.send(numberedMessage(id: id, sequence: sequence), timeout: .seconds(60))
                    ledger.sent(id).pointee.store(UInt64(sequence + 1), ordering: .releasing)
                }
            }
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
    case "chan-x-ready-send":
        // chan-x-ready-send NAME COUNT fast|paced: takes the sender role of a Channel<String>, says
        // "ready", and when told sends "0" … "COUNT-1" (blocking while full): back to back, or
        // paced — after each message a pause of its own: a spin of 0–40 µs, now and then a
        // 50–450 µs sleep, and one time in two until the receiver has taken every message (so
        // that a wake-up lost for the last message sent would leave the receiver waiting, not be
        // covered by the next message's). Then says "done" and holds the role until told.
        let channel = try Channel<String>.open(name: rest[0])
        let count = Int(rest[1])!
        let paced = rest[2] == "paced"
        var sender = try channel.exclusiveSender()
        say("ready")
        awaitInstruction(upTo: 120)
        var random = SystemRandomNumberGenerator()
        for sequence in 0..<count {
            try sender.blockingSend("\(sequence)", timeout: .seconds(60))
            guard paced else { continue }
            let pause = random.next() % 16
            if pause < 8 {
                let deadline = Clock.monotonicNanoseconds() &+ 60_000_000_000
                while channel.count != 0 {
                    guard Clock.monotonicNanoseconds() < deadline else { fail("message \(sequence) was not received within 60 s") }
                    sched_yield()
                }
            } else if pause == 8 {
                usleep(50 + UInt32(random.next() % 400))
            } else {
                let end = Clock.monotonicNanoseconds() &+ random.next() % 40_000
                while Clock.monotonicNanoseconds() < end {}
            }
        }
        say("done")
        awaitInstruction(upTo: 120)
        _ = consume sender
    case "chan-x-loan-send":
        // chan-x-loan-send NAME SIZE SEED [blocking|async|try]: takes the sender role of a
        // Channel<[UInt8]>, loans SIZE bytes through it, fills them with message SEED
        // (loanPattern), says "sending", sends the loan, says "sent" ("full" if a try found no
        // room), and holds the role until told.
        let channel = try Channel<[UInt8]>.open(name: rest[0])
        let size = Int(rest[1])!, seed = Int(rest[2])!
        let mode = rest.count > 3 ? rest[3] : "blocking"
        func loaned(_ sender: borrowing ExclusiveSender<[UInt8]>) throws(InterprocessError) -> MessageLoan {
            let loan = try sender.loan(byteCount: size)
            loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = loanPattern(seed, index) } }
            say("sending")
            return loan
        }
        if mode == "async" {
            try runInTask { () throws(InterprocessError) in
                var sender = try channel.exclusiveSender()
                try await sender.send(try loaned(sender), timeout: .seconds(20))
                say("sent")
                awaitInstruction(upTo: 60)
            }
            return
        }
        var sender = try channel.exclusiveSender()
        let loan = try loaned(sender)
        if mode == "try" {
            if let unsent = try sender.trySend(loan) {
                try unsent.giveBack()
                say("full")
                return
            }
        } else {
            try sender.blockingSend(loan, timeout: .seconds(20))
        }
        say("sent")
        awaitInstruction(upTo: 60)
        _ = consume sender
    case "chan-x-loan-receive":
        // chan-x-loan-receive NAME SEED [blocking|async|try]: takes the receiver role of a
        // Channel<[UInt8]>, says "receiving", receives a message in place through it, says
        // "received SIZE in place|copied whole|damaged" (checked against message SEED; "empty" if
        // a try found none), holds it until told, then releases it and says "released".
        let channel = try Channel<[UInt8]>.open(name: rest[0])
        let seed = Int(rest[1])!
        let mode = rest.count > 2 ? rest[2] : "blocking"
        func handle(_ message: consuming ReceivedMessage) throws(InterprocessError) {
            let whole = message.withUnsafeBytes { bytes in bytes.indices.allSatisfy { bytes[$0] == loanPattern(seed, $0) } }
            say("received \(message.byteCount) \(message.isInPlace ? "in place" : "copied") \(whole ? "whole" : "damaged")")
            awaitInstruction(upTo: 60)
            try message.release()
            say("released")
        }
        if mode == "async" {
            try runInTask { () throws(InterprocessError) in
                var receiver = try channel.exclusiveReceiver()
                say("receiving")
                try handle(try await receiver.receiveInPlace(timeout: .seconds(20)))
            }
            return
        }
        var receiver = try channel.exclusiveReceiver()
        say("receiving")
        if mode == "try" {
            guard let message = try receiver.tryReceiveInPlace() else {
                say("empty")
                return
            }
            try handle(message)
        } else {
            try handle(try receiver.blockingReceiveInPlace(timeout: .seconds(20)))
        }
    case "chan-x-messages":
        // chan-x-messages NAME: takes the receiver role of a Channel<String>, says "ready", then
        // iterates the receiver's messages(), saying "received TEXT" for each; at the end "ended",
        // then "role back" if the receiver role can be taken again at once (else the error's code).
        let channel = try Channel<String>.open(name: rest[0])
        let messages = try channel.exclusiveReceiver().messages()
        say("ready")
        let done = DispatchSemaphore(value: 0)
        Task {
            do throws(InterprocessError) {
                for try await text in messages { say("received \(text)") }
                say("ended")
                do throws(InterprocessError) {
                    _ = try channel.exclusiveReceiver()
                    say("role back")
                } catch {
                    say("\(error.code)")
                }
            } catch {
                say("\(error.code)")
            }
            done.signal()
        }
        done.wait()
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
private func sendUnlessClosed<Message>(_ sender: inout ExclusiveSender<Message>, _ message: Message, stopping: Bool) throws(InterprocessError) -> Bool {
    do throws(InterprocessError) {
        try sender.blockingSend(message, timeout: .seconds(60))
        return true
    } catch {
        if stopping && error.code == .closed { return false }
        throw error
    }
}
