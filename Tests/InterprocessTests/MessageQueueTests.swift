#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

private struct Job: Codable, Equatable, Sendable {
    var id: Int
    var path: String
}

private struct Point: BitwiseCopyable, Equatable, Sendable {
    var x: Int32
    var y: Int32
}

/// Where a queue's header, heap, free stack and slots are in its segment's file (for scribbling).
private enum QueueFile {
    static let payload = 4096
    static let header = 512
    static let lock = payload + 256
    static let readyCount = payload + 280
    static let freeCount = payload + 284
    static func ready(_ position: Int) -> Int { payload + header + 4 * position }
    static func free(_ position: Int, capacity: Int) -> Int { payload + header + 4 * capacity + 4 * position }
    static func slot(_ index: Int, capacity: Int, maxMessageSize: Int) -> Int {
        let slots = (header + 8 * capacity + 63) / 64 * 64
        return payload + slots + index * ((32 + maxMessageSize + 63) / 64 * 64)
    }
}

private func bytes(of value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
private func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

@Suite("MessageQueue", .serialized, .timeLimit(.minutes(5)))
struct MessageQueueTests {
    // MARK: Messages and priorities

    @Test func messagesOfEveryKindKeepTheirBoundariesAndTypes() throws {
        try withCleanNames("mq") { name in
            let raw = try MessageQueue<[UInt8]>.create(name: name + "-bytes", capacity: 4, maxMessageSize: 100)
            defer { raw.detach() }
            #expect(raw.capacity == 4 && raw.maxMessageSize == 100)
            #expect(try raw.trySend([]))
            #expect(try raw.trySend([1, 2, 3], priority: 2))
            #expect(try raw.trySend(Array(repeating: 7, count: 100), priority: 1))
            expectError(.invalidSize) { try raw.trySend(Array(repeating: 7, count: 101)) }
            expectError(.invalidArgument) { try raw.trySend([1], priority: -1) }
            expectError(.invalidArgument) { try raw.trySend([1], priority: MessageQueue<[UInt8]>.maximumPriority + 1) }
            #expect(raw.count == 3)
            #expect(details(name + "-bytes")["byPriority"] == "2: 1, 1: 1, 0: 1" && details(name + "-bytes")["highestPriority"] == "2")
            #expect(try raw.tryReceiveWithPriority().map { [$0.message.count, $0.priority] } == [3, 2])
            #expect(try raw.tryReceive() == Array(repeating: 7, count: 100))
            #expect(try raw.tryReceive() == [])
            #expect(try raw.tryReceive() == nil)

            let text = try MessageQueue<String>.create(name: name + "-text", capacity: 2, maxMessageSize: 16)
            defer { text.detach() }
            #expect(try text.trySend("héllo", priority: MessageQueue<String>.maximumPriority))
            #expect(try text.tryReceiveWithPriority().map { "\($0.message) \($0.priority)" } == "héllo \(UInt32.max)")

            let points = try MessageQueue<Point>.create(name: name + "-raw", capacity: 2)
            defer { points.detach() }
            #expect(points.maxMessageSize == 8)
            #expect(try points.trySend(Point(x: 1, y: -2)))
            #expect(try points.tryReceive() == Point(x: 1, y: -2))

            let jobs = try MessageQueue<Job>.create(name: name + "-json", capacity: 2)
            defer { jobs.detach() }
            #expect(try jobs.trySend(Job(id: 7, path: "/a")))
            #expect(try jobs.tryReceive() == Job(id: 7, path: "/a"))

            // Opening as another type is incompatible; as a channel too (another kind).
            expectError(.incompatible) { try MessageQueue<String>.open(name: name + "-bytes") }
            expectError(.incompatible) { try MessageQueue<Int64>.open(name: name + "-raw") }
            expectError(.incompatible) { try Channel<[UInt8]>.open(name: name + "-bytes") }
            let again = try MessageQueue<[UInt8]>.open(name: name + "-bytes")
            again.detach()
            #expect(try SharedMemory.info(name: name + "-text").kind == "mqueue")
            #expect(SegmentKind.messageQueue.description == "mqueue")
            expectError(.invalidArgument) { try MessageQueue<String>.create(name: name + "-bad", capacity: 0) }
            expectError(.invalidArgument) { try MessageQueue<String>.create(name: name + "-bad", capacity: 1, maxMessageSize: 0) }
        }
    }

    /// Higher priorities leave first; within one priority, the order of sending.
    @Test func priorityOrderAndFIFOWithinAPriority() throws {
        try withCleanNames("mqorder") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 64, maxMessageSize: 32)
            defer { queue.detach() }
            let sent = (0..<60).map { index in (priority: (index * 7) % 5, text: "\((index * 7) % 5):\(index)") }
            for message in sent { #expect(try queue.trySend(message.text, priority: message.priority)) }
            let expected = sent.enumerated().sorted { a, b in
                a.element.priority != b.element.priority ? a.element.priority > b.element.priority : a.offset < b.offset
            }.map(\.element.text)
            var received: [String] = []
            while let text = try queue.tryReceive() { received.append(text) }
            #expect(received == expected)
            let summary = details(name)
            #expect(summary["count"] == "0" && summary["sent"] == "60" && summary["received"] == "60")
        }
    }

    /// The same across processes: one process sends (blocking on a small queue, so that sends and
    /// receives interleave), another drains; and a process drains what this one sent.
    @Test func priorityOrderAcrossProcesses() throws {
        try withCleanNames("mqorderx") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 200, maxMessageSize: 32)
            defer { queue.detach() }
            // A child sends; then this process receives everything in order.
            let sender = try Peer.spawn("mq-send-pattern", name, "150")
            defer { sender.stop() }
            #expect(sender.readLine(timeout: .seconds(60)) == "sent")
            #expect(sender.wait(timeout: .seconds(10)) == .exited(0))
            #expect(details(name)["count"] == "150" && details(name)["highestPriority"] == "4")
            let expected = (0..<150).sorted { a, b in
                (a * 7) % 5 != (b * 7) % 5 ? (a * 7) % 5 > (b * 7) % 5 : a < b
            }.map { "\(($0 * 7) % 5):\($0)" }
            var received: [String] = []
            while let (text, priority) = try queue.tryReceiveWithPriority() {
                #expect(text.hasPrefix("\(priority):"))
                received.append(text)
            }
            #expect(received == expected)
            // This process sends; a child drains.
            for index in 0..<150 { try queue.blockingSend("\((index * 7) % 5):\(index)", priority: (index * 7) % 5) }
            let drainer = try Peer.spawn("mq-drain", name)
            defer { drainer.stop() }
            var lines: [String] = []
            while let line = drainer.readLine(timeout: .seconds(60)), !line.hasPrefix("drained") { lines.append(line) }
            #expect(drainer.wait(timeout: .seconds(10)) == .exited(0))
            #expect(lines == expected)
        }
    }

    // MARK: Waiting

    @Test func aFullQueueRefusesTrySendAndTimesOut() throws {
        try withCleanNames("mqfull") { name in
            let queue = try MessageQueue<Int>.create(name: name, capacity: 2)
            defer { queue.detach() }
            #expect(try queue.trySend(1))
            #expect(try queue.trySend(2, priority: 5))
            #expect(try !queue.trySend(3))
            let start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try queue.blockingSend(3, timeout: .milliseconds(100)) }
            #expect(elapsed(since: start) >= 0.09)
            #expect(try queue.blockingReceive(timeout: .seconds(1)) == 2)
            #expect(try queue.blockingReceive(timeout: .seconds(1)) == 1)
            expectError(.timedOut) { try queue.blockingReceive(timeout: .milliseconds(50)) }
            #expect(try queue.tryReceive() == nil)
            #expect(detail(name, "receiversWaiting") == 0 && detail(name, "sendersWaiting") == 0)
        }
    }

    @Test func asyncFormsTimeOutAndWait() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("mqasync")
            let queue = try MessageQueue<String>.create(name: name, capacity: 1)
            defer { queue.detach() }
            await #expect(throws: InterprocessError.self) { try await queue.receive(timeout: .milliseconds(50)) }
            try await queue.send("a", priority: 3)
            await #expect(throws: InterprocessError.self) { try await queue.send("b", timeout: .milliseconds(50)) }
            let received = try await queue.receiveWithPriority()
            #expect(received.message == "a" && received.priority == 3)
            // A receiver parked in a task is woken by a send.
            let waiting = Task(executorPreference: executor) { () async throws -> String in
                try await queue.receive(timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "receiversWaiting") == 1 })
            try await queue.send("c")
            #expect(try await waiting.value == "c")
        }
    }

    @Test func aParkedReceiverInAnotherProcessIsWoken() throws {
        try withCleanNames("mqwake") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 2)
            defer { queue.detach() }
            for command in ["mq-receive", "mq-receive-async"] {
                let child = try Peer.spawn(command, name, "30000")
                defer { child.stop() }
                #expect(child.readLine() == "receiving")
                #expect(pollUntil { detail(name, "receiversWaiting") == 1 })
                try queue.blockingSend("hello", priority: 4)
                #expect(child.readLine(timeout: .seconds(20)) == "received hello 4")
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
        }
    }

    // MARK: Cancellation

    @Test func aCancelledReceiveTakesNothingAndACancelledSendSendsNothing() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("mqcancel")
            let queue = try MessageQueue<Int>.create(name: name, capacity: 1)
            defer { queue.detach() }
            let waiting = Task(executorPreference: executor) { () async throws -> Int in
                try await queue.receive(timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "receiversWaiting") == 1 })
            let start = Clock.monotonicNanoseconds()
            waiting.cancel()
            let outcome = await waiting.result
            #expect(elapsed(since: start) < promptly)
            if case .failure(let error) = outcome {
                #expect((error as? InterprocessError)?.code == .cancelled)
            } else {
                Issue.record("a cancelled receive returned \(outcome)")
            }
            #expect(detail(name, "receiversWaiting") == 0)
            #expect(try queue.trySend(5))
            // Cancelled before it starts: takes nothing even though a message is there.
            let early = Task(executorPreference: executor) { () async throws -> Int in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await queue.receive()
            }
            if case .success(let value) = await early.result { Issue.record("a cancelled task received \(value)") }
            // A send parked on the full queue, cancelled: sends nothing.
            let sending = Task(executorPreference: executor) { () async throws in
                try await queue.send(6, timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "sendersWaiting") == 1 })
            sending.cancel()
            if case .failure(let error) = await sending.result {
                #expect((error as? InterprocessError)?.code == .cancelled)
            } else {
                Issue.record("a cancelled send succeeded")
            }
            #expect(try queue.tryReceive() == 5)
            #expect(try queue.tryReceive() == nil, "the cancelled send sent nothing")
            // Cancellation racing a send: either it received the message or the message is still there.
            for round in 0..<20 {
                let racing = Task(executorPreference: executor) { () async throws -> Int in
                    try await queue.receive(timeout: .seconds(30))
                }
                #expect(await eventually { detail(name, "receiversWaiting") == 1 })
                #expect(try queue.trySend(100 + round))
                racing.cancel()
                switch await racing.result {
                case .success(let value): #expect(value == 100 + round)
                case .failure(let error):
                    #expect((error as? InterprocessError)?.code == .cancelled)
                    #expect(try queue.tryReceive() == 100 + round)
                }
                #expect(queue.count == 0)
            }
        }
    }

    // MARK: Closing

    @Test func closeEndsSendsAndLetsReceiversDrain() async throws {
        try await onOwnQueue { _ in
            let name = TestNames.make("mqclose")
            let queue = try MessageQueue<String>.create(name: name, capacity: 4, maxMessageSize: 16)
            defer { queue.detach() }
            try await queue.send("a")
            try await queue.send("b", priority: 1)
            try await queue.send("c")
            queue.close()
            queue.close()
            #expect(queue.isClosed && details(name)["closed"] == "yes")
            await #expect(throws: InterprocessError.self) { try await queue.send("d") }
            do throws(InterprocessError) {
                _ = try queue.trySend("d")
                Issue.record("a send after close succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            var received: [String] = []
            for try await text in queue.messages { received.append(text) }
            #expect(received == ["b", "a", "c"])
            do throws(InterprocessError) {
                _ = try queue.tryReceive()
                Issue.record("a receive after the end succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            let peer = try MessageQueue<String>.open(name: name)
            #expect(peer.isClosed, "closed for every process")
            peer.detach()
            do throws(InterprocessError) {
                _ = try peer.tryReceive()
                Issue.record("a detached handle received")
            } catch {
                #expect(error.code == .closed)
            }
        }
    }

    @Test func closeWakesAParkedReceiverInAnotherProcess() throws {
        try withCleanNames("mqclosewake") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 1)
            defer { queue.detach() }
            let child = try Peer.spawn("mq-receive", name, "30000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(pollUntil { detail(name, "receiversWaiting") == 1 })
            queue.close()
            #expect(child.readLine(timeout: .seconds(20)) == "closed")
        }
    }

    // MARK: Objects

    @Test func openOrCreateOpenWhenCreatedAndRemove() async throws {
        let name = TestNames.make("mqobject")
        let (first, created) = try MessageQueue<String>.openOrCreate(name: name, capacity: 4)
        #expect(created)
        let (second, createdAgain) = try MessageQueue<String>.openOrCreate(name: name, capacity: 99)
        #expect(!createdAgain && second.capacity == 4)
        let third = try await MessageQueue<String>.openWhenCreated(name: name, timeout: .seconds(5))
        try await first.send("x", priority: 2)
        #expect(try await third.receive() == "x")
        await #expect(throws: InterprocessError.self) {
            try await MessageQueue<String>.openWhenCreated(name: name + "-none", timeout: .milliseconds(30))
        }
        expectError(.incompatible) { try ProcessMutex.remove(name: name) }
        try MessageQueue<String>.remove(name: name)
        #expect(TestNames.leftovers(name).isEmpty)
        for queue in [first, second, third] { queue.detach() }
    }

    // MARK: Many processes

    /// Producers and consumers in separate processes (some blocking, some async, producers at
    /// different priorities) exchange numbered messages through a small queue: each message arrives
    /// exactly once, whole, with its priority, and in order per producer.
    @Test func numberedMessagesBetweenProducersAndConsumers() throws {
        try withCleanNames("mqnxm") { name in
            let producers = 4, consumers = 3, count = 3000
            let queue = try MessageQueue<[UInt8]>.create(name: name, capacity: 8, maxMessageSize: 128)
            defer { queue.detach() }
            let ledger = try SharedMemory.create(name: name + "-ledger", size: 1024 + 4 * producers * count)
            defer { ledger.close() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for consumer in 0..<consumers {
                children.append(try Peer.spawn("mq-consume", name, name + "-ledger", "\(count)", consumer == 0 ? "async" : "blocking"))
            }
            for producer in 0..<producers {
                children.append(try Peer.spawn("mq-produce", name, name + "-ledger", "\(producer)", "\(count)", producer == 0 ? "async" : "blocking"))
            }
            for child in children { #expect(child.readLine() == "ready") }
            for producer in children[consumers...] {
                #expect(producer.readLine(timeout: .seconds(120)) == "done")
                #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            }
            queue.close()
            var drained = 0
            for consumer in children[..<consumers] {
                let line = consumer.readLine(timeout: .seconds(60)) ?? ""
                #expect(line.hasPrefix("drained "))
                drained += Int(line.dropFirst("drained ".count)) ?? 0
                #expect(consumer.wait(timeout: .seconds(10)) == .exited(0))
            }
            #expect(drained == producers * count)
            try ledger.withUnsafeBytes { bytes in
                #expect(bytes.load(as: UInt64.self) == 0, "order violations")
                #expect(bytes.load(fromByteOffset: 8, as: UInt64.self) == 0, "damaged messages")
                var wrong: [String] = []
                for producer in 0..<producers {
                    for sequence in 0..<count {
                        let times = bytes.load(fromByteOffset: 1024 + 4 * (producer * count + sequence), as: UInt32.self)
                        if times != 1 { wrong.append("\(producer)/\(sequence)×\(times)") }
                    }
                }
                #expect(wrong.isEmpty, "\(wrong.prefix(20))")
            }
            #expect(detail(name, "rebuilds") == 0 && detail(name, "abandonedSends") == 0 && detail(name, "redeliveries") == 0)
        }
    }

    // MARK: Processes killed at each step

    /// A sender killed at each step of a send: the others go on at once, and the message is either
    /// delivered whole (in its place) or not at all, as the table in `MessageQueue`'s documentation says.
    @Test(arguments: [
        ("mqueue.send.lockedClaim", false, ["rebuilds": 1, "abandonedSends": 1]),
        ("mqueue.send.afterClaim", false, ["abandonedSends": 1]),
        ("mqueue.send.afterWrite", false, ["abandonedSends": 1]),
        ("mqueue.send.lockedPublish", true, ["rebuilds": 1, "abandonedSends": 0]),
    ])
    func aSenderKilledAtEachStep(point: String, delivered: Bool, counts: [String: Int]) throws {
        try withCleanNames("mqkillsend") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 4, maxMessageSize: 16)
            defer { queue.detach() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "mq-send", name, "3", "lost?")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            try queue.blockingSend("after", priority: 3, timeout: .seconds(20))
            var received = [try queue.blockingReceive(timeout: .seconds(20))]
            if delivered { received.append(try queue.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == (delivered ? ["lost?", "after"] : ["after"]))
            expectError(.timedOut) { try queue.blockingReceive(timeout: .milliseconds(100)) }
            for (key, value) in counts { #expect(detail(name, key) == value, "\(key): \(details(name))") }
            // Every slot is free again, and the queue goes on working, through every slot.
            #expect(detail(name, "freeCount") == 4 && detail(name, "writing") == 0)
            for round in 0..<10 {
                try queue.blockingSend("m\(round)", priority: round % 3, timeout: .seconds(5))
                #expect(try queue.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
        }
    }

    /// A receiver killed at each step of a receive: before it freed the slot, the message is
    /// redelivered — at once if it died holding the lock (the next locker rebuilds), else once a
    /// receiver that finds nothing else repairs the slot; after it freed the slot, the message is
    /// gone with it. Nothing is delivered twice.
    @Test(arguments: [
        ("mqueue.receive.lockedClaim", ["first", "second"], ["rebuilds": 1, "redeliveries": 1]),
        ("mqueue.receive.afterClaim", ["second", "first"], ["redeliveries": 1]),
        ("mqueue.receive.afterCopy", ["second", "first"], ["redeliveries": 1]),
        ("mqueue.receive.lockedRelease", ["second"], ["rebuilds": 1, "redeliveries": 0]),
    ])
    func aReceiverKilledAtEachStep(point: String, expected: [String], counts: [String: Int]) throws {
        try withCleanNames("mqkillrecv") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 4, maxMessageSize: 16)
            defer { queue.detach() }
            try queue.blockingSend("first", priority: 1)
            try queue.blockingSend("second", priority: 1)
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "mq-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            var received: [String] = []
            for _ in expected { received.append(try queue.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == expected)
            expectError(.timedOut) { try queue.blockingReceive(timeout: .milliseconds(100)) }
            for (key, value) in counts { #expect(detail(name, key) == value, "\(key): \(details(name))") }
            #expect(detail(name, "freeCount") == 4 && detail(name, "reading") == 0)
            for round in 0..<10 {
                try queue.blockingSend("m\(round)", timeout: .seconds(5))
                #expect(try queue.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
        }
    }

    /// A `try…` form repairs a dead process's slot at once (a full queue of one slot whose sender died
    /// writing), and takes the lock of a dead holder over.
    @Test func tryFormsRepairWhatTheDeadLeft() throws {
        try withCleanNames("mqkilltry") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 1)
            defer { queue.detach() }
            let writer = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "mqueue.send.afterWrite", "mq-send", name, "0", "lost")
            defer { writer.stop() }
            #expect(writer.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(detail(name, "writing") == 1)
            #expect(try queue.trySend("a"))
            #expect(detail(name, "abandonedSends") == 1)
            let holder = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "mqueue.receive.lockedClaim", "mq-receive", name, "60000")
            defer { holder.stop() }
            #expect(holder.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(details(name)["locked"] == "yes" && details(name)["lockOwnerAlive"] == "no")
            #expect(try queue.tryReceive() == "a")
            #expect(detail(name, "redeliveries") == 1)
        }
    }

    /// A process killed while it repairs (holding the lock) leaves it to the next one.
    @Test func aRepairerKilledWhileRepairingLeavesItToTheNext() throws {
        try withCleanNames("mqkillrepair") { name in
            let queue = try MessageQueue<String>.create(name: name, capacity: 4, maxMessageSize: 16)
            defer { queue.detach() }
            let sender = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "mqueue.send.afterWrite", "mq-send", name, "0", "lost")
            defer { sender.stop() }
            #expect(sender.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            // A receiver finds the empty queue, looks for dead processes' slots, and dies repairing.
            let repairer = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "mqueue.repair.beforeState", "mq-receive", name, "60000")
            defer { repairer.stop() }
            #expect(repairer.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            try queue.blockingSend("after", timeout: .seconds(20))
            #expect(try queue.blockingReceive(timeout: .seconds(20)) == "after")
            #expect(detail(name, "abandonedSends") == 1 && detail(name, "writing") == 0)
        }
    }

    /// Producers and consumers (blocking and async, at several priorities) SIGKILLed at random
    /// moments while numbered messages flow through a small queue, and replaced; then the survivors
    /// finish. Nothing is received twice; every message whose send returned is received, except at
    /// most one per killed consumer; a killed producer's message in flight is received or not, and
    /// nothing after it.
    @Test func producersAndConsumersKilledAtRandomMoments() throws {
        try withCleanNames("mqchaos") { name in
            let producerCount = 3, consumerCount = 2, count = 4000, rounds = 30
            let queue = try MessageQueue<[UInt8]>.create(name: name, capacity: 8, maxMessageSize: 128)
            defer { queue.detach() }
            let ledgerName = name + "-ledger"
            let ledger = try SharedMemory.create(name: ledgerName, size: 1024 + 4 * 56 * count)
            defer { ledger.close() }
            var nextID = 0
            var producers: [(child: ChildProcess, id: Int)] = []
            var consumers: [ChildProcess] = []
            var everyone: [ChildProcess] = []
            defer { for child in everyone { child.stop() } }
            func startProducer() throws {
                let child = try Peer.spawn("mq-produce", name, ledgerName, "\(nextID)", "\(count)", nextID % 2 == 0 ? "async" : "blocking")
                everyone.append(child)
                #expect(child.readLine() == "ready")
                producers.append((child, nextID))
                nextID += 1
            }
            func startConsumer(_ index: Int) throws {
                let child = try Peer.spawn("mq-consume", name, ledgerName, "\(count)", index % 2 == 0 ? "async" : "blocking")
                everyone.append(child)
                #expect(child.readLine() == "ready")
                consumers.append(child)
            }
            for _ in 0..<producerCount { try startProducer() }
            for index in 0..<consumerCount { try startConsumer(index) }
            var killedProducers: [Int: Int] = [:]
            var finishedProducers: Set<Int> = []
            var killedConsumers = 0
            for round in 0..<rounds {
                usleep(UInt32.random(in: 500...10_000))
                if round % 2 == 0 {
                    let (child, id) = producers.remove(at: Int.random(in: 0..<producers.count))
                    child.kill(signal: SIGKILL)
                    switch child.wait(timeout: .seconds(10)) {
                    case .signaled(SIGKILL):
                        killedProducers[id] = try ledger.withUnsafeBytes { Int($0.load(fromByteOffset: 64 + 8 * id, as: UInt64.self)) }
                    case .exited(0): finishedProducers.insert(id)
                    case let other: Issue.record("producer \(id): \(String(describing: other))")
                    }
                    try startProducer()
                } else {
                    let index = Int.random(in: 0..<consumers.count)
                    let child = consumers.remove(at: index)
                    child.kill(signal: SIGKILL)
                    #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
                    killedConsumers += 1
                    try startConsumer(index)
                }
            }
            for (child, id) in producers {
                #expect(child.readLine(timeout: .seconds(120)) == "done")
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
                finishedProducers.insert(id)
            }
            queue.close()
            for child in consumers {
                #expect(child.readLine(timeout: .seconds(60))?.hasPrefix("drained ") == true)
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            let stats = details(name)
            let redeliveries = Int(stats["redeliveries"] ?? "") ?? -1
            var missing: [String] = []
            var duplicates: [String] = []
            var unexpected: [String] = []
            try ledger.withUnsafeBytes { bytes in
                func times(_ id: Int, _ sequence: Int) -> UInt32 {
                    bytes.load(fromByteOffset: 1024 + 4 * (id * count + sequence), as: UInt32.self)
                }
                #expect(bytes.load(fromByteOffset: 8, as: UInt64.self) == 0, "damaged messages")
                let violations = Int(bytes.load(as: UInt64.self))
                #expect(violations <= redeliveries, "\(violations) out of order, \(redeliveries) redelivered")
                for id in 0..<nextID {
                    let sent = finishedProducers.contains(id) ? count : killedProducers[id] ?? 0
                    for sequence in 0..<count {
                        let n = times(id, sequence)
                        if n > 1 { duplicates.append("\(id)/\(sequence)×\(n)") }
                        if sequence < sent && n == 0 { missing.append("\(id)/\(sequence)") }
                        if sequence > sent && n != 0 { unexpected.append("\(id)/\(sequence)") }
                    }
                }
            }
            #expect(duplicates.isEmpty, "\(duplicates)")
            #expect(unexpected.isEmpty, "received but never sent: \(unexpected)")
            #expect(missing.count <= killedConsumers, "\(missing) missing, \(killedConsumers) consumers killed")
            #expect(stats["count"] == "0" && stats["writing"] == "0" && stats["reading"] == "0", "\(stats)")
            #expect(stats["freeCount"] == "8")
            print("message queue chaos: \(killedProducers.count) producers and \(killedConsumers) consumers killed; \(missing.count) messages lost with them; \(stats["abandonedSends"] ?? "?") sends abandoned, \(redeliveries) redelivered, \(stats["rebuilds"] ?? "?") rebuilds")
        }
    }

    // MARK: A hostile or buggy peer

    /// Whatever a peer scribbles, an operation that meets it rebuilds the caches from the slots
    /// (where that is safe) or throws `corrupt`: it never reads or writes outside the queue.
    @Test func aScribbledQueueIsRebuiltOrCorruptNeverACrash() throws {
        try withCleanNames("mqscribble") { name in
            func slot(_ index: Int) -> Int { QueueFile.slot(index, capacity: 4, maxMessageSize: 16) }
            // A length longer than a slot: the message is dropped, the queue goes on.
            let lengths = try MessageQueue<String>.create(name: name + "-length", capacity: 4, maxMessageSize: 16)
            defer { lengths.detach() }
            try lengths.blockingSend("a")
            scribble(name + "-length", at: slot(0) + 4, bytes(of: UInt32(1000)))
            expectError(.corrupt) { try lengths.tryReceive() }
            #expect(detail(name + "-length", "droppedMessages") == 1)
            try lengths.blockingSend("b")
            #expect(try lengths.blockingReceive() == "b")
            // A heap entry that names no slot, a count beyond the capacity, a free-stack entry that
            // names a ready slot: rebuilt from the slots, nothing lost.
            let caches = try MessageQueue<String>.create(name: name + "-cache", capacity: 4, maxMessageSize: 16)
            defer { caches.detach() }
            try caches.blockingSend("c", priority: 1)
            try caches.blockingSend("d", priority: 2)
            scribble(name + "-cache", at: QueueFile.ready(0), bytes(of: UInt32(999_999)))
            #expect(try caches.tryReceive() == "d")
            #expect(detail(name + "-cache", "rebuilds") == 1)
            scribble(name + "-cache", at: QueueFile.readyCount, bytes(of: UInt32(1_000_000)))
            #expect(try caches.blockingReceive(timeout: .seconds(5)) == "c")
            try caches.blockingSend("e")
            scribble(name + "-cache", at: QueueFile.free(1, capacity: 4), bytes(of: UInt32(0)))   // top of the stack
            scribble(name + "-cache", at: QueueFile.freeCount, bytes(of: UInt32(2)))
            try caches.blockingSend("f", timeout: .seconds(5))
            #expect(try caches.blockingReceive(timeout: .seconds(5)) == "e")
            #expect(try caches.blockingReceive(timeout: .seconds(5)) == "f")
            #expect(detail(name + "-cache", "freeCount") == 4)
            // A lock word that is not a live process: taken over.
            scribble(name + "-cache", at: QueueFile.lock, bytes(of: UInt64(5)))
            #expect(try caches.trySend("g"))
            #expect(try caches.blockingReceive(timeout: .seconds(5)) == "g")
            // A slot in no valid state: corrupt, for the operation that meets it.
            let states = try MessageQueue<String>.create(name: name + "-state", capacity: 4, maxMessageSize: 16)
            defer { states.detach() }
            scribble(name + "-state", at: slot(0), bytes(of: UInt32(7)))
            expectError(.corrupt) { try states.trySend("h") }
            expectError(.corrupt) { try states.blockingSend("h", timeout: .seconds(5)) }
            #expect(details(name + "-state")["damagedSlots"] == "1")
            // A damaged header: refused when opened.
            let header = try MessageQueue<String>.create(name: name + "-header", capacity: 4, maxMessageSize: 16)
            defer { header.detach() }
            scribble(name + "-header", at: QueueFile.payload, bytes(of: UInt32(0)))
            expectError(.corrupt) { try MessageQueue<String>.open(name: name + "-header") }
            scribble(name + "-header", at: QueueFile.payload, bytes(of: UInt32(1_000_000)))
            expectError(.corrupt) { try MessageQueue<String>.open(name: name + "-header") }
            scribble(name + "-header", at: QueueFile.payload, bytes(of: UInt32(4)))
            _ = try MessageQueue<String>.open(name: name + "-header")
            scribble(name + "-header", at: QueueFile.payload + 32, bytes(of: UInt32(4)))
            expectError(.corrupt) { try MessageQueue<String>.open(name: name + "-header") }
        }
    }
}
