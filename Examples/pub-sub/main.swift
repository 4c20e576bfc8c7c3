// Publish / subscribe: a publisher and 3 subscriber processes on one Broadcast; every subscriber
// receives every message, in order.
//
//   swift run --package-path Examples pub-sub
//
// A subscriber receives what is published after it subscribed, so the publisher waits until all 3
// have subscribed (each signals a ProcessSemaphore) before it publishes. The broadcast is created
// with `.blockPublisher`: the publisher waits for the slowest subscriber rather than overwrite a
// message it has not read, so nothing is lost although the ring holds only 64 messages.
import Foundation
import Interprocess

let subscriberCount = 3
let messageCount = 2_000

struct Message: Codable, Sendable { var number: Int; var text: String }   // travels as JSON

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "subscriber" {
    let prefix = CommandLine.arguments[2]
    let news = try Broadcast<Message>.open(name: prefix + "-news")
    let subscribed = try ProcessSemaphore.open(name: prefix + "-subscribed")
    let subscription = try news.subscribe()
    try subscribed.signal()                             // "I will receive everything from now on"
    var expected = 0                                    // the number of the next message
    var problem: String?
    for try await delivery in subscription.messages {   // ends when the broadcast is closed and read
        switch delivery {
        case .message(let message) where message.number == expected: expected += 1
        case .message(let message): problem = "expected message \(expected), received \(message.number)"
        case .missed(let count): problem = "missed \(count) messages"   // never under .blockPublisher
        }
        if problem != nil { break }
    }
    subscription.close()                                // unsubscribes: the publisher no longer waits for it
    news.detach()
    subscribed.close()
    if expected != messageCount, problem == nil { problem = "received only \(expected) messages" }
    print("subscriber (pid \(getpid())) " + (problem ?? "received messages 0..<\(expected) in order"))
    exit(problem == nil ? 0 : 1)
}

let prefix = "example-pub-sub-\(getpid())"
let news = try Broadcast<Message>.create(name: prefix + "-news", capacity: 64, policy: .blockPublisher)
let subscribed = try ProcessSemaphore.create(name: prefix + "-subscribed", value: 0)
let subscribers = try (0..<subscriberCount).map { _ in try startPeer("subscriber", prefix) }
for _ in 0..<subscriberCount { try await subscribed.wait(timeout: .seconds(30)) }
print("publisher (pid \(getpid())): \(news.subscriberCount) subscribers")

for number in 0..<messageCount {
    try await news.publish(Message(number: number, text: "news item \(number)"), timeout: .seconds(30))
}
news.close()                                            // for everyone: subscribers end once they read all
for subscriber in subscribers { subscriber.waitUntilExit() }
print("publisher (pid \(getpid())) published \(news.publishedCount) messages")
news.detach()                                           // the last holder removes the broadcast
subscribed.close()
let allRight = subscribers.allSatisfy { $0.terminationStatus == 0 }
print(allRight ? "ok: \(subscriberCount) subscribers each received all \(messageCount) messages in order" : "FAILED")
exit(allRight ? 0 : 1)
