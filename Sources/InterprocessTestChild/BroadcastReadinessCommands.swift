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
            // bcready-loop NAME COUNT: subscribes to the Broadcast<UInt64> NAME with a readiness
            // descriptor, receives until nil, says "subscribed", then runs an event loop — poll
            // (30 s at most), acknowledge, tryReceive until nil — until COUNT numbers arrived or the
            // broadcast is closed and read. Says "received R missed M violations V wakeups W"
            // (a violation: a number that is not the one after the last, plus what was missed in
            // between), or "stalled R" and exits 4 if a poll waited out its bound.
            let subscription = try Broadcast<UInt64>.open(name: rest[0]).subscribe()
            let count = Int(rest[1])!
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
