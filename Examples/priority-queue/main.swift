// A priority message queue between two processes: the highest priority leaves first, and messages
// of one priority leave in the order they were sent.
//
//   swift run --package-path Examples priority-queue
//
// Another process sends alerts with priorities and exits; this one then takes them out.
import Foundation
import Interprocess

let alerts: [(text: String, priority: Int)] = [
    ("backup done", 0), ("disk 91% full", 5), ("user logged in", 1),
    ("disk 99% full", 9), ("certificate expires in 7 days", 5), ("disk full", 9),
]

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "sender" {
    let queue = try MessageQueue<String>.open(name: CommandLine.arguments[2])
    for alert in alerts {
        try queue.blockingSend(alert.text, priority: alert.priority, timeout: .seconds(30))
        print("sender (pid \(getpid())): sent     [\(alert.priority)] \(alert.text)")
    }
    queue.detach()                         // (queue.close() would end the queue for everyone)
    exit(0)
}

let name = "example-priority-queue-\(getpid())"
let queue = try MessageQueue<String>.create(name: name, capacity: 16)
let sender = try startPeer("sender", name)
sender.waitUntilExit()                     // so that every alert is in before we take the first

var received: [(text: String, priority: Int)] = []
while let (text, priority) = try queue.tryReceiveWithPriority() {    // never waits; nil when empty
    print("receiver (pid \(getpid())): received [\(priority)] \(text)")
    received.append((text, priority))
}
queue.detach()                             // the last holder removes the queue

// Highest priority first; within one priority, in the order they were sent (a stable sort).
let expected = alerts.enumerated().sorted { ($0.element.priority, -$0.offset) > ($1.element.priority, -$1.offset) }
let ok = received.map(\.text) == expected.map(\.element.text) && sender.terminationStatus == 0
print(ok ? "ok: \(received.count) alerts, by priority, first come first served within one" : "FAILED")
exit(ok ? 0 : 1)
