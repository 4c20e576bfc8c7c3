// Commands for broadcast readiness descriptors ("bcready-…"). Exit codes: 0 success, 1 failure,
// 2 usage, 4 the event loop waited out its bound (a lost wake-up).
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessToolSupport

/// Runs one broadcast readiness command; returns the exit status.
func runBroadcastReadinessCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "bcready-hold":
            // bcready-hold NAME: subscribes to the Broadcast<UInt64> NAME, takes a readiness
            // descriptor, says "registered", and when told exits without closing anything.
            let subscription = try Broadcast<UInt64>.open(name: rest[0]).subscribe()
            let readiness = try subscription.readinessDescriptor()
            say("registered")
            awaitInstruction(upTo: 120)
            withExtendedLifetime(readiness) {}
            _exit(0)
        case "bcready-loop":
            // bcready-loop NAME COUNT [REPLY BURST]: subscribes to the Broadcast<UInt64> NAME with a
            // readiness descriptor, receives until nil, says "subscribed", then runs an event loop —
            // poll (30 s at most), acknowledge, tryReceive until nil — until COUNT numbers arrived
            // or the broadcast is closed and read. With REPLY, sends each number that ends a burst
            // (number % BURST == BURST - 1) on the Channel<UInt64> REPLY. Says "received R missed M
            // violations V wakeups W" (a violation: a number that is not the one after the last,
            // plus what was missed in between), or "stalled R" and exits 4 if a poll waited out
            // its bound.
            let subscription = try Broadcast<UInt64>.open(name: rest[0]).subscribe()
            let count = Int(rest[1])!
            let reply = rest.count > 3 ? try Channel<UInt64>.open(name: rest[2]) : nil
            let burst = rest.count > 3 ? UInt64(rest[3])! : 0
            let readiness = try subscription.readinessDescriptor()
            var received = 0, missed = 0, missedSinceLast = 0, violations = 0
            var last: UInt64?
            var ended = false
            func drain() throws(InterprocessError) {
                do throws(InterprocessError) {
                    while let delivery = try subscription.tryReceive() {
                        switch delivery {
                        case .missed(let n):
                            missed += n
                            missedSinceLast += n
                        case .message(let value):
                            if let last, value != last &+ 1 &+ UInt64(missedSinceLast) { violations += 1 }
                            last = value
                            missedSinceLast = 0
                            received += 1
                            if let reply, value % burst == burst - 1 { try reply.blockingSend(value, timeout: .seconds(60)) }
                        }
                    }
                } catch where error.code == .closed {
                    ended = true
                }
            }
            try drain()
            say("subscribed")
            while received + missed < count && !ended {
                var entry = pollfd(fd: readiness.fileDescriptor.rawValue, events: Int16(POLLIN), revents: 0)
                let ready = poll(&entry, 1, 30_000)
                if ready < 0 && errno == EINTR { continue }
                guard ready > 0 else {
                    say("stalled \(received)")
                    return 4
                }
                readiness.acknowledge()
                try drain()
            }
            say("received \(received) missed \(missed) violations \(violations) wakeups \(readiness.wakeUps)")
            readiness.close()
            subscription.close()
        case "bcready-publish":
            // bcready-publish NAME COUNT REPLY BURST LOOPS: publishes 0, 1, … COUNT - 1 to the
            // Broadcast<UInt64> NAME in bursts of BURST, and after each burst waits until LOOPS
            // replies on the Channel<UInt64> REPLY name its last number (every loop received the
            // whole burst: a wake-up lost on a burst's last message stops it). Says "publishing"
            // before and "published" after; exits 4 if a reply does not come within 60 s.
            let broadcast = try Broadcast<UInt64>.open(name: rest[0])
            let count = UInt64(rest[1])!
            let reply = try Channel<UInt64>.open(name: rest[2])
            let burst = UInt64(rest[3])!, loops = Int(rest[4])!
            say("publishing")
            var value: UInt64 = 0
            while value < count {
                for _ in 0..<burst {
                    try broadcast.blockingPublish(value, timeout: .seconds(60))
                    value += 1
                }
                for _ in 0..<loops {
                    let answer = try reply.blockingReceive(timeout: .seconds(60))
                    guard answer == value - 1 else {
                        StandardStream.write("child: reply \(answer) after burst ending at \(value - 1)\n", to: 2)
                        return 1
                    }
                }
            }
            say("published")
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return error.code == .timedOut ? 4 : 1
    }
}
