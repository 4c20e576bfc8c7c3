// Wake-ups of a MessageQueue across processes: a burst of messages (free slots) must reach every
// parked receiver (sender), though only the first of the burst wakes one and woken waiters pass the
// wake-up on ("Waking" in MessageQueueCore). The children turn the periodic look for dead
// processes' slots off (INTERPROCESS_MQUEUE_RECOVERY_MS), which would otherwise end a lost wake-up
// after 50 ms: a lost one makes a child's bounded wait time out, and the child exit 4.
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

private func waitingCount(_ name: String, _ key: String) -> Int? {
    (try? SharedMemory.info(name: name)).flatMap { Int($0.details[key] ?? "") }
}

@Suite("MessageQueue wake-ups", .serialized, .timeLimit(.minutes(5)))
struct MessageQueueWakeTests {
    /// Per round, 4 receivers in child processes park on one queue (the test waits until the queue
    /// counts 4 waiting), then 4 messages are sent at once: each receiver takes one, acknowledges it
    /// on a second queue, and parks on a third until the next round, whose 4 tokens are sent at once
    /// too. A sender's round is the mirror image: 4 senders park on a full queue, then 4 messages
    /// are received at once. Every message of every round must arrive within 8 s; a wake-up that is
    /// not passed on leaves a child parked until its 20-second bound.
    @Test(arguments: ["receiver", "async-receiver", "sender"])
    func aBurstWakesEveryParkedWaiter(_ role: String) throws {
        try withCleanNames("mqburst") { prefix in
            let parties = 4, rounds = 80
            // Far below the children's 20 s (a lost wake-up fails the round here, not after the
            // stuck child's bound), far above a round's milliseconds.
            let bound = Duration.seconds(8)
            let (workName, goName, acksName) = (prefix + "-w", prefix + "-g", prefix + "-a")
            let work = try MessageQueue<UInt64>.create(name: workName, capacity: parties)
            defer { work.detach() }
            let go = try MessageQueue<UInt64>.create(name: goName, capacity: parties)
            defer { go.detach() }
            let acks = try MessageQueue<UInt64>.create(name: acksName, capacity: parties)
            defer { acks.detach() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for id in 0..<parties {
                children.append(try Peer.spawn(
                    environment: "INTERPROCESS_MQUEUE_RECOVERY_MS", "600000",
                    "mq-wake-rounds", role, workName, goName, acksName, "\(rounds)", "\(id)"))
            }
            for child in children { #expect(child.readLine(timeout: .seconds(20)) == "ready") }
            var counts = [Int](repeating: 0, count: parties)
            func count(_ id: UInt64) {
                if id < UInt64(parties) { counts[Int(id)] += 1 }
            }
            if role == "sender" {
                // Full, so that every sender parks.
                for _ in 0..<parties { try work.blockingSend(UInt64.max) }
                for round in 0..<rounds {
                    try #require(pollUntil(timeout: bound) { waitingCount(goName, "receiversWaiting") == parties }, "round \(round)")
                    for _ in 0..<parties { try go.blockingSend(UInt64(round)) }
                    try #require(pollUntil(timeout: bound) { waitingCount(workName, "sendersWaiting") == parties }, "round \(round)")
                    // The burst: 4 slots freed at once.
                    for _ in 0..<parties { count(try work.blockingReceive(timeout: bound)) }
                }
                for _ in 0..<parties { count(try work.blockingReceive(timeout: bound)) }
            } else {
                for round in 0..<rounds {
                    try #require(pollUntil(timeout: bound) { waitingCount(workName, "receiversWaiting") == parties }, "round \(round)")
                    // The burst: 4 messages at once.
                    for _ in 0..<parties { try work.blockingSend(UInt64(round)) }
                    for _ in 0..<parties { count(try acks.blockingReceive(timeout: bound)) }
                    guard round < rounds - 1 else { break }
                    try #require(pollUntil(timeout: bound) { waitingCount(goName, "receiversWaiting") == parties }, "round \(round)")
                    for _ in 0..<parties { try go.blockingSend(UInt64(round)) }
                }
            }
            #expect(counts == [Int](repeating: rounds, count: parties))
            for child in children {
                #expect(child.readLine(timeout: .seconds(20)) == "done")
                #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            }
        }
    }
}
