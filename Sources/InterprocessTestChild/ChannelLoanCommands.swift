// Commands for channel loans ("loan-…"): large messages through a channel's loan heap. Exit codes:
// 0 success, 1 failure. A message's byte i is (SEED + 7 * i) & 0xFF.
import Interprocess
import InterprocessToolSupport

/// The pattern of message SEED, `count` bytes long, checked or written.
func loanPattern(_ seed: Int, _ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: seed &+ 7 &* index) }

/// Runs one loan command; returns the exit status.
func runChannelLoanCommand(_ command: String, _ rest: [String]) -> Int32 {
    do throws(InterprocessError) {
        let channel = try Channel<[UInt8]>.open(name: rest[0])
        switch command {
        case "loan-hold":
            // loan-hold NAME SIZE: loans SIZE bytes, fills them, says "loaned", and holds the loan
            // (unsent) until told, then gives it back and says "gave back".
            let loan = try channel.loan(byteCount: Int(rest[1])!)
            loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = loanPattern(1, index) } }
            say("loaned")
            awaitInstruction(upTo: 60)
            try loan.giveBack()
            say("gave back")
        case "loan-send":
            // loan-send NAME SIZE SEED: loans SIZE bytes, fills them with message SEED, says
            // "sending", sends, says "sent", and holds until told.
            let loan = try channel.loan(byteCount: Int(rest[1])!)
            let seed = Int(rest[2])!
            loan.withUnsafeMutableBytes { buffer in for index in buffer.indices { buffer[index] = loanPattern(seed, index) } }
            say("sending")
            try channel.blockingSend(loan, timeout: .seconds(20))
            say("sent")
            awaitInstruction(upTo: 60)
        case "loan-receive":
            // loan-receive NAME SEED: receives a message in place, says "received SIZE in place|copied
            // whole|damaged" (checked against message SEED), holds it until told, then releases it
            // and says "released".
            let message = try channel.blockingReceiveInPlace(timeout: .seconds(20))
            let seed = Int(rest[1])!
            let whole = message.withUnsafeBytes { bytes in bytes.indices.allSatisfy { bytes[$0] == loanPattern(seed, $0) } }
            say("received \(message.byteCount) \(message.isInPlace ? "in place" : "copied") \(whole ? "whole" : "damaged")")
            awaitInstruction(upTo: 60)
            try message.release()
            say("released")
        default:
            fail("unknown command \(command)", code: 2)
        }
        channel.detach()
        return 0
    } catch {
        say("\(error.code)")
        return 1
    }
}
