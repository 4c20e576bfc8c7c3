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

/// Where the channel's header and slots are in its segment's file (for scribbling).
private enum ChannelFile {
    static let payload = 4096
    static let header = 512
    static let sendPosition = payload + 256
    static let receivePosition = payload + 320
    static func slot(_ index: Int, stride: Int) -> Int { payload + header + index * stride }
    static func stride(maxMessageSize: Int) -> Int { (32 + maxMessageSize + 63) / 64 * 64 }
}

private func bytes(of value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
private func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

@Suite("Channel", .serialized, .timeLimit(.minutes(5)))
struct ChannelTests {
    // MARK: Messages of every kind

    @Test func bytesTextRawAndCodableMessagesKeepTheirBoundaries() throws {
        try withCleanNames("chan") { name in
            let raw = try Channel<[UInt8]>.create(name: name + "-bytes", capacity: 4, maxMessageSize: 100)
            defer { raw.detach() }
            #expect(raw.capacity == 4 && raw.maxMessageSize == 100)
            #expect(try raw.trySend([]))
            #expect(try raw.trySend([1, 2, 3]))
            #expect(try raw.trySend(Array(repeating: 7, count: 100)))
            // Longer than a slot: it travels through the channel's loan heap (ChannelLoanTests).
            #expect(try raw.trySend(Array(repeating: 7, count: 101)))
            #expect(raw.count == 4)
            #expect(try raw.tryReceive() == [])
            #expect(try raw.tryReceive() == [1, 2, 3])
            #expect(try raw.tryReceive() == Array(repeating: 7, count: 100))
            #expect(try raw.tryReceive() == Array(repeating: 7, count: 101))
            #expect(try raw.tryReceive() == nil)

            let text = try Channel<String>.create(name: name + "-text", capacity: 2, maxMessageSize: 16)
            defer { text.detach() }
            try text.blockingSend("héllo")
            #expect(try text.blockingReceive() == "héllo")
            try text.blockingSend(String(repeating: "x", count: 17))
            #expect(try text.blockingReceive() == String(repeating: "x", count: 17))

            let jobs = try Channel<Job>.create(name: name + "-json", capacity: 2)
            defer { jobs.detach() }
            try jobs.blockingSend(Job(id: 7, path: "/tmp/a"))
            #expect(try jobs.blockingReceive() == Job(id: 7, path: "/tmp/a"))
            #expect(details(name + "-json")["format"] == "JSON")

            let numbers = try Channel<Int>.create(name: name + "-int", capacity: 2)
            defer { numbers.detach() }
            #expect(numbers.maxMessageSize == 8)
            try numbers.blockingSend(-5)
            #expect(try numbers.blockingReceive() == -5)
            #expect(details(name + "-int")["format"] == "raw values", "a BitwiseCopyable and Codable type travels raw")

            let points = try Channel<Point>.create(name: name + "-point", capacity: 2)
            defer { points.detach() }
            try points.blockingSend(Point(x: 1, y: -2))
            #expect(try points.blockingReceive() == Point(x: 1, y: -2))

            let info = try SharedMemory.info(name: name + "-point")
            #expect(info.kind == "channel")
            #expect(info.details["capacity"] == "2")
            #expect(info.details["maxMessageSize"] == "8")
            #expect(info.details["count"] == "0")
            #expect(info.details["closed"] == "no")
            #expect(info.details["messageType"]?.contains("Point") == true)
        }
    }

    /// A detached handle's verbs throw `closed` and touch nothing (the raw values' one-call paths
    /// check it inside the ring), while another handle on the channel goes on.
    @Test func aDetachedHandleThrowsClosed() throws {
        try withCleanNames("chandet") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            let other = try Channel<UInt64>.open(name: name)
            defer { other.detach() }
            try channel.blockingSend(1)
            channel.detach()
            channel.detach() // idempotent
            expectError(.closed) { try channel.blockingSend(2) }
            expectError(.closed) { _ = try channel.trySend(2) }
            expectError(.closed) { _ = try channel.blockingReceive() }
            expectError(.closed) { _ = try channel.tryReceive() }
            expectError(.closed) { _ = try channel.exclusiveSender() }
            expectError(.closed) { _ = try channel.exclusiveReceiver() }
            // Nothing was sent or taken through the detached handle.
            #expect(try other.tryReceive() == 1)
            #expect(try other.tryReceive() == nil)
        }
    }

    /// ``aDetachedHandleThrowsClosed()`` for the async forms.
    @Test func aDetachedHandleThrowsClosedAsync() async throws {
        try await withCleanNamesAsync("chandeta") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            channel.detach()
            await expectErrorAsync(.closed) { try await channel.send(2) }
            await expectErrorAsync(.closed) { _ = try await channel.receive() }
        }
    }

    @Test func openingAsAnotherMessageTypeIsIncompatible() throws {
        try withCleanNames("chantype") { name in
            let channel = try Channel<Int64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            expectError(.incompatible) { try Channel<UInt64>.open(name: name) }
            expectError(.incompatible) { try Channel<String>.open(name: name) }
            expectError(.incompatible) { try Channel<[UInt8]>.open(name: name) }
            expectError(.incompatible) { try Channel<Job>.open(name: name) }
            expectError(.alreadyExists) { try Channel<Int64>.create(name: name, capacity: 4) }
            let peer = try Channel<Int64>.open(name: name)
            defer { peer.detach() }
            #expect(peer.capacity == 4)
            try channel.blockingSend(42)
            #expect(try peer.blockingReceive() == 42)
            let (again, created) = try Channel<Int64>.openOrCreate(name: name, capacity: 99)
            defer { again.detach() }
            #expect(!created && again.capacity == 4)
            let (fresh, made) = try Channel<Int64>.openOrCreate(name: name + "-new", capacity: 3)
            #expect(made && fresh.capacity == 3)
            fresh.detach()
            #expect(!SharedMemory.exists(name: name + "-new"), "the last holder that detaches removes it")
            expectError(.notFound) { try Channel<Int64>.open(name: name + "-none") }
            expectError(.invalidArgument) { try Channel<Int64>.create(name: name + "-zero", capacity: 0) }
            expectError(.invalidArgument) { try Channel<[UInt8]>.create(name: name + "-big", capacity: 1, maxMessageSize: 1 << 25) }
            let segment = try SharedMemory.create(name: name + "-seg", size: 4096)
            defer { segment.close() }
            expectError(.incompatible) { try Channel<Int64>.open(name: name + "-seg") }
        }
    }

    // MARK: Full, empty, try and timeouts

    @Test func aFullChannelRefusesTrySendAndTimesOutBlockingSend() throws {
        try withCleanNames("chanfull") { name in
            let channel = try Channel<Int>.create(name: name, capacity: 3)
            defer { channel.detach() }
            for value in 1...3 { #expect(try channel.trySend(value)) }
            #expect(try !channel.trySend(4))
            #expect(channel.count == 3)
            var start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try channel.blockingSend(4, timeout: .milliseconds(100)) }
            var took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            #expect(channel.count == 3, "a send that timed out sent nothing")
            #expect(try channel.tryReceive() == 1)
            #expect(try channel.trySend(4))
            #expect(try (0..<3).map { _ in try channel.blockingReceive() } == [2, 3, 4], "first in, first out")
            #expect(try channel.tryReceive() == nil)
            start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try channel.blockingReceive(timeout: .milliseconds(100)) }
            took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            #expect(detail(name, "receiversWaiting") == 0 && detail(name, "sendersWaiting") == 0)
            // Around the ring many times, capacity not a power of 2.
            for value in 0..<1000 {
                try channel.blockingSend(value)
                if value % 2 == 1 {
                    #expect(try channel.blockingReceive() == value - 1)
                    #expect(try channel.blockingReceive() == value)
                }
            }
            #expect(channel.count == 0)
        }
    }

    @Test func asyncFormsTimeOutAndWait() async throws {
        try await onOwnQueue { _ in
            let name = TestNames.make("chanasync")
            let channel = try Channel<String>.create(name: name, capacity: 1)
            defer { channel.detach() }
            await #expect(throws: InterprocessError.self) { try await channel.receive(timeout: .milliseconds(30)) }
            try await channel.send("a")
            await #expect(throws: InterprocessError.self) { try await channel.send("b", timeout: .milliseconds(30)) }
            #expect(try await channel.receive() == "a")
            // A receive that waits, served by a send from another task.
            async let received = channel.receive(timeout: .seconds(20))
            #expect(await eventually { detail(name, "receiversWaiting") == 1 })
            try await channel.send("c")
            #expect(try await received == "c")
            #expect(TestNames.leftovers(name).count == 1)
        }
    }

    // MARK: Cancellation

    @Test func aCancelledReceiveTakesNothing() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("chancancel")
            let channel = try Channel<Int>.create(name: name, capacity: 2)
            defer { channel.detach() }
            let waiting = Task(executorPreference: executor) { () async throws -> Int in
                try await channel.receive(timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "receiversWaiting") == 1 })
            let start = Clock.monotonicNanoseconds()
            waiting.cancel()
            let outcome = await waiting.result
            #expect(elapsed(since: start) < promptly)
            guard case .failure(let error) = outcome else {
                Issue.record("a cancelled receive returned \(outcome)")
                return
            }
            #expect((error as? InterprocessError)?.code == .cancelled)
            #expect(detail(name, "receiversWaiting") == 0)
            #expect(try channel.trySend(5))
            #expect(try channel.tryReceive() == 5, "the cancelled receive took nothing")

            // Cancelled before it starts: takes nothing even though a message is there.
            #expect(try channel.trySend(6))
            let early = Task(executorPreference: executor) { () async throws -> Int in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await channel.receive()
            }
            if case .success(let value) = await early.result { Issue.record("a cancelled task received \(value)") }
            #expect(try channel.tryReceive() == 6)

            // Cancellation racing a send: either it received the message or the message is still there.
            for round in 0..<20 {
                let racing = Task(executorPreference: executor) { () async throws -> Int in
                    try await channel.receive(timeout: .seconds(30))
                }
                #expect(await eventually { detail(name, "receiversWaiting") == 1 })
                #expect(try channel.trySend(100 + round))
                racing.cancel()
                switch await racing.result {
                case .success(let value): #expect(value == 100 + round)
                case .failure(let error):
                    #expect((error as? InterprocessError)?.code == .cancelled)
                    #expect(try channel.tryReceive() == 100 + round)
                }
                #expect(channel.count == 0)
            }
        }
    }

    @Test func aCancelledSendSendsNothing() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("chancancelsend")
            let channel = try Channel<Int>.create(name: name, capacity: 1)
            defer { channel.detach() }
            try await channel.send(1)
            let waiting = Task(executorPreference: executor) { () async throws in
                try await channel.send(2, timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "sendersWaiting") == 1 })
            waiting.cancel()
            if case .failure(let error) = await waiting.result {
                #expect((error as? InterprocessError)?.code == .cancelled)
            } else {
                Issue.record("a cancelled send succeeded")
            }
            #expect(channel.count == 1)
            #expect(try channel.tryReceive() == 1)
            #expect(try channel.tryReceive() == nil, "the cancelled send sent nothing")
        }
    }

    // MARK: Closing

    @Test func closeEndsSendsAndLetsReceiversDrain() async throws {
        try await onOwnQueue { _ in
            let name = TestNames.make("chanclose")
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            for text in ["a", "b", "c"] { try await channel.send(text) }
            #expect(!channel.isClosed)
            channel.close()
            channel.close()
            #expect(channel.isClosed)
            #expect(details(name)["closed"] == "yes")
            await #expect(throws: InterprocessError.self) { try await channel.send("d") }
            do throws(InterprocessError) {
                _ = try channel.trySend("d")
                Issue.record("a send after close succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            var received: [String] = []
            for try await text in channel.messages { received.append(text) }
            #expect(received == ["a", "b", "c"])
            do throws(InterprocessError) {
                _ = try await channel.receive()
                Issue.record("a receive after the end succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            do throws(InterprocessError) {
                _ = try channel.tryReceive()
                Issue.record("a try receive after the end succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            let peer = try Channel<String>.open(name: name)
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

    @Test func closeWakesParkedReceiversAndSendersInOtherProcesses() throws {
        try withCleanNames("chanclosewake") { name in
            let channel = try Channel<String>.create(name: name, capacity: 1)
            defer { channel.detach() }
            let receiver = try Peer.spawn("chan-receive", name, "60000")
            defer { receiver.stop() }
            #expect(receiver.readLine() == "receiving")
            #expect(pollUntil { detail(name, "receiversWaiting") == 1 })
            let empty = try Channel<String>.create(name: name + "-full", capacity: 1)
            defer { empty.detach() }
            try empty.blockingSend("x")
            let sender = try Peer.spawn("chan-send-wait", name + "-full", "y", "60000")
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            #expect(pollUntil { detail(name + "-full", "sendersWaiting") == 1 })
            let start = Clock.monotonicNanoseconds()
            channel.close()
            empty.close()
            #expect(receiver.readLine() == "closed")
            #expect(sender.readLine() == "closed")
            #expect(elapsed(since: start) < promptly)
            #expect(receiver.wait(timeout: .seconds(10)) == .exited(0))
            #expect(sender.wait(timeout: .seconds(10)) == .exited(0))
            #expect(try empty.blockingReceive() == "x", "what was in before the close is received")
        }
    }

    // MARK: Between processes

    @Test func aParkedReceiverInAnotherProcessIsWoken() throws {
        try withCleanNames("chanwake") { name in
            let channel = try Channel<String>.create(name: name, capacity: 2)
            defer { channel.detach() }
            for command in ["chan-receive", "chan-receive-async"] {
                let child = try Peer.spawn(command, name, "60000")
                defer { child.stop() }
                #expect(child.readLine() == "receiving")
                #expect(pollUntil { detail(name, "receiversWaiting") == 1 })
                try channel.blockingSend("hello from \(command)")
                #expect(child.readLine() == "received hello from \(command)")
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            // And a sender in another process, parked on a full channel.
            try channel.blockingSend("one")
            try channel.blockingSend("two")
            let sender = try Peer.spawn("chan-send-wait", name, "three", "60000")
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            #expect(pollUntil { detail(name, "sendersWaiting") == 1 })
            #expect(try channel.blockingReceive() == "one")
            #expect(sender.readLine() == "sent")
            #expect(try channel.blockingReceive() == "two")
            #expect(try channel.blockingReceive() == "three")
        }
    }

    /// Producers and consumers in separate processes (some blocking, some async) exchange numbered
    /// messages of many lengths through a small ring: each message arrives exactly once, whole, and
    /// each consumer sees each producer's messages in the order they were sent.
    @Test func numberedMessagesBetweenProducersAndConsumers() throws {
        try withCleanNames("channxm") { name in
            let producers = 3, consumers = 3, count = 4000
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 8, maxMessageSize: 128)
            defer { channel.detach() }
            let ledger = try SharedMemory.create(name: name + "-ledger", size: 1024 + 4 * producers * count)
            defer { ledger.close() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for consumer in 0..<consumers {
                children.append(try Peer.spawn("chan-consume", name, name + "-ledger", "\(count)", consumer == 0 ? "async" : "blocking"))
            }
            for producer in 0..<producers {
                children.append(try Peer.spawn("chan-produce", name, name + "-ledger", "\(producer)", "\(count)", producer == 0 ? "async" : "blocking"))
            }
            for child in children { #expect(child.readLine() == "ready") }
            for producer in children[consumers...] {
                #expect(producer.readLine(timeout: .seconds(120)) == "done")
                #expect(producer.wait(timeout: .seconds(10)) == .exited(0))
            }
            channel.close()
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
            #expect(detail(name, "abandonedSends") == 0 && detail(name, "orphanedReceives") == 0)
        }
    }

    /// Many receivers and senders waiting in one process at once — tasks and threads, on a ring of
    /// one slot — are all served: every message is received once.
    @Test func manyWaitersInOneProcessAreAllServed() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("chanmany")
            let channel = try Channel<Int>.create(name: name, capacity: 1)
            defer { channel.detach() }
            let receivers = 6, senders = 4, each = 150
            let total = receivers * each
            precondition(total % senders == 0)
            var values: [Int] = []
            try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<receivers {
                    group.addTask(executorPreference: executor) {
                        var mine: [Int] = []
                        for _ in 0..<each { mine.append(try await channel.receive(timeout: .seconds(60))) }
                        return mine
                    }
                }
                for sender in 0..<senders {
                    group.addTask(executorPreference: executor) {
                        for index in 0..<(total / senders) { try await channel.send(sender * 10_000 + index, timeout: .seconds(60)) }
                        return []
                    }
                }
                for try await batch in group { values += batch }
            }
            #expect(values.count == total)
            #expect(Set(values).count == total, "each message once")
            #expect(channel.count == 0)
            #expect(detail(name, "receiversWaiting") == 0 && detail(name, "sendersWaiting") == 0)
        }
    }

    /// Two processes bounce a message through two channels of one slot each (the shape of the round
    /// trip `ipc bench` measures).
    @Test func pingPongThroughTwoChannelsOfOneSlot() throws {
        try withCleanNames("chanpingpong") { name in
            let ping = try Channel<String>.create(name: name + "-ping", capacity: 1)
            defer { ping.detach() }
            let pong = try Channel<String>.create(name: name + "-pong", capacity: 1)
            defer { pong.detach() }
            let child = try Peer.spawn("chan-echo", name + "-ping", name + "-pong")
            defer { child.stop() }
            #expect(child.readLine() == "ready")
            for round in 0..<2000 {
                try ping.blockingSend("\(round)", timeout: .seconds(20))
                #expect(try pong.blockingReceive(timeout: .seconds(20)) == "echo \(round)")
            }
            ping.close()
            #expect(child.readLine() == "echoed 2000")
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
        }
    }

    /// A `.whileReferenced` channel lives while some process holds it; a `.persistent` one until removed.
    @Test func lifetimes() throws {
        try withCleanNames("chanlife") { name in
            let channel = try Channel<Int>.create(name: name, capacity: 2)
            let peer = try Channel<Int>.open(name: name)
            try channel.blockingSend(1)
            channel.detach()
            channel.detach()
            #expect(SharedMemory.exists(name: name), "a holder is left")
            expectError(.closed) { try channel.trySend(2) }
            #expect(try peer.blockingReceive() == 1)
            peer.detach()
            #expect(!SharedMemory.exists(name: name))
            let kept = try Channel<Int>.create(name: name + "-kept", capacity: 2, lifetime: .persistent)
            try kept.blockingSend(3)
            kept.detach()
            let again = try Channel<Int>.open(name: name + "-kept")
            #expect(try again.blockingReceive() == 3)
            again.detach()
            try Channel<Int>.remove(name: name + "-kept")
            #expect(!SharedMemory.exists(name: name + "-kept"))
        }
    }

    // MARK: Processes killed at each step

    /// A sender killed at each step of a send: the others go on at once (within the ~50 ms a waiter
    /// takes to check), and the message is either delivered whole or not at all.
    @Test(arguments: [
        ("channel.send.afterOwner", false, "clearedClaims"),
        ("channel.send.afterClaim", false, "abandonedSends"),
        ("channel.send.afterWrite", false, "abandonedSends"),
        ("channel.send.afterPublish", true, "clearedClaims"),
    ])
    func aSenderKilledAtEachStep(point: String, delivered: Bool, repair: String) throws {
        try withCleanNames("chankillsend") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-send", name, "lost?")
            defer { child.stop() }
            #expect(child.readLine() == "sending")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            try channel.blockingSend("after", timeout: .seconds(20))
            var received = [try channel.blockingReceive(timeout: .seconds(20))]
            if delivered { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == (delivered ? ["lost?", "after"] : ["after"]))
            #expect(detail(name, repair) == 1, "\(details(name))")
            #expect(try channel.tryReceive() == nil)
            // The channel goes on working, around the ring.
            for round in 0..<10 {
                try channel.blockingSend("m\(round)", timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
            #expect(channel.count == 0)
        }
    }

    /// A receiver killed at each step of a receive: before it claimed the message, the message is
    /// still there; after it claimed it and before it released the slot, the message is redelivered
    /// (after the one sent next); after it released the slot, the message is gone with it. Nothing
    /// is delivered twice, and the channel goes on working.
    @Test(arguments: [
        ("channel.receive.afterOwner", ["first", "second"], "clearedClaims"),
        ("channel.receive.afterClaim", ["second", "first"], "redeliveries"),
        ("channel.receive.afterCopy", ["second", "first"], "redeliveries"),
        ("channel.receive.afterRelease", ["second"], "clearedClaims"),
    ])
    func aReceiverKilledAtEachStep(point: String, expected: [String], repair: String) throws {
        try withCleanNames("chankillrecv") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend("first")
            try channel.blockingSend("second")
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            var received: [String] = []
            for _ in expected { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == expected)
            expectError(.timedOut) { try channel.blockingReceive(timeout: .milliseconds(200)) }
            #expect(detail(name, repair) == 1, "\(details(name))")
            #expect(detail(name, "orphans") == 0)
            for round in 0..<10 {
                try channel.blockingSend("m\(round)", timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == "m\(round)")
            }
            #expect(channel.count == 0)
        }
    }

    /// The same for raw values (`Channel<UInt64>`), whose receive is one call into the ring that
    /// loads the value and releases the slot: a shared receiver killed after loading the value and
    /// before releasing its slot has it redelivered (after the next one); an exclusive receiver
    /// killed there has it received again (first: the receive position did not move); killed after
    /// the release, the value is gone with it.
    @Test(arguments: [
        ("shared", "channel.receive.afterCopy", [UInt64(2), 1]),
        ("shared", "channel.receive.afterRelease", [UInt64(2)]),
        ("exclusive", "channel.receive.afterCopy", [UInt64(1), 2]),
        ("exclusive", "channel.receive.afterRelease", [UInt64(2)]),
    ])
    func aRawValueReceiverKilledAtEachStep(mode: String, point: String, expected: [UInt64]) throws {
        try withCleanNames("chankillraw") { name in
            let channel = try Channel<UInt64>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend(1)
            try channel.blockingSend(2)
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "chan-x-raw-receive", name, mode)
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            var received: [UInt64] = []
            for _ in expected { received.append(try channel.blockingReceive(timeout: .seconds(20))) }
            #expect(received == expected)
            expectError(.timedOut) { try channel.blockingReceive(timeout: .milliseconds(200)) }
            for round in UInt64(10)..<20 {
                try channel.blockingSend(round, timeout: .seconds(5))
                #expect(try channel.blockingReceive(timeout: .seconds(5)) == round)
            }
            #expect(channel.count == 0)
        }
    }

    /// A loop that only tries (an event loop on a readiness descriptor never parks) still gets the
    /// message of a receiver that died holding it: `tryReceive` looks for such messages when the
    /// channel looks empty (at most once per 50 ms), and nothing else would announce it.
    @Test func tryReceiveAloneRedeliversTheMessageOfADeadReceiver() throws {
        try withCleanNames("chantryorphan") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            try channel.blockingSend("only")
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.receive.afterClaim", "chan-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            // Only `try` forms from here on, polled until the message comes back (20 s: a bound).
            var received: String?
            let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
            while received == nil, Clock.monotonicNanoseconds() < deadline {
                received = try channel.tryReceive()
                if received == nil { usleep(5_000) }
            }
            #expect(received == "only")
            #expect(detail(name, "redeliveries") == 1, "\(details(name))")
            #expect(try channel.tryReceive() == nil)
        }
    }

    /// A process killed while it repairs a slot leaves it to the next repairer.
    @Test func aRepairerKilledWhileRepairingLeavesItToTheNext() throws {
        try withCleanNames("chankillrepair") { name in
            let channel = try Channel<String>.create(name: name, capacity: 4)
            defer { channel.detach() }
            let sender = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.send.afterWrite", "chan-send", name, "lost")
            defer { sender.stop() }
            #expect(sender.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            // A receiver finds the dead sender's slot, claims it to repair it, and dies.
            let repairer = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.recover.afterClaim", "chan-receive", name, "60000")
            defer { repairer.stop() }
            #expect(repairer.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            try channel.blockingSend("after")
            #expect(try channel.blockingReceive(timeout: .seconds(20)) == "after")
            #expect(detail(name, "abandonedSends") == 1)
        }
    }

    /// Producers and consumers (blocking and async) SIGKILLed at random moments while numbered
    /// messages flow through a small ring, and replaced; then the survivors finish. The accounting
    /// matches the documented semantics: nothing is received twice; every message whose send
    /// returned is received, except at most one per killed consumer (taken and not handled when it
    /// died); a killed producer's message in flight is received or not, and nothing after it; a
    /// consumer sees a producer's messages in order, except messages redelivered after a consumer died.
    @Test func producersAndConsumersKilledAtRandomMoments() throws {
        try withCleanNames("chanchaos") { name in
            let producerCount = 3, consumerCount = 2, count = 5000, rounds = 40
            let channel = try Channel<[UInt8]>.create(name: name, capacity: 8, maxMessageSize: 128)
            defer { channel.detach() }
            let ledgerName = name + "-ledger"
            let ledger = try SharedMemory.create(name: ledgerName, size: 1024 + 4 * 56 * count)
            defer { ledger.close() }
            var nextID = 0
            var producers: [(child: ChildProcess, id: Int)] = []
            var consumers: [ChildProcess] = []
            var everyone: [ChildProcess] = []
            defer { for child in everyone { child.stop() } }
            func startProducer() throws {
                let child = try Peer.spawn("chan-produce", name, ledgerName, "\(nextID)", "\(count)", nextID % 2 == 0 ? "async" : "blocking")
                everyone.append(child)
                #expect(child.readLine() == "ready")
                producers.append((child, nextID))
                nextID += 1
            }
            func startConsumer(_ index: Int) throws {
                let child = try Peer.spawn("chan-consume", name, ledgerName, "\(count)", index % 2 == 0 ? "async" : "blocking")
                everyone.append(child)
                #expect(child.readLine() == "ready")
                consumers.append(child)
            }
            for _ in 0..<producerCount { try startProducer() }
            for index in 0..<consumerCount { try startConsumer(index) }
            var killedProducers: [Int: Int] = [:]   // id: messages its sends returned for
            var finishedProducers: Set<Int> = []
            var killedConsumers = 0
            for round in 0..<rounds {
                // A random moment: the kills fall wherever the children happen to be.
                usleep(UInt32.random(in: 500...10_000))
                if round % 2 == 0 {
                    let index = Int.random(in: 0..<producers.count)
                    let (child, id) = producers.remove(at: index)
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
            channel.close()
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
            #expect(killedConsumers > 0 && !killedProducers.isEmpty || finishedProducers.count == nextID)
            #expect(detail(name, "orphans") == 0)
            print("channel chaos: \(killedProducers.count) producers and \(killedConsumers) consumers killed; \(missing.count) messages lost with them; \(stats["abandonedSends"] ?? "?") sends abandoned, \(redeliveries) redelivered, \(stats["clearedClaims"] ?? "?") claims cleared")
        }
    }

    // MARK: A hostile or buggy peer

    /// Whatever a peer scribbles into the ring, an operation that meets it throws `corrupt`: it
    /// never reads or writes outside the ring, and never crashes.
    @Test func aScribbledRingIsCorruptNotACrash() throws {
        try withCleanNames("chanscribble") { name in
            let stride = ChannelFile.stride(maxMessageSize: 16)
            // A length longer than a slot: the message is dropped, the channel goes on.
            let lengths = try Channel<String>.create(name: name + "-length", capacity: 4, maxMessageSize: 16)
            defer { lengths.detach() }
            try lengths.blockingSend("a")
            scribble(name + "-length", at: ChannelFile.slot(0, stride: stride) + 16, bytes(of: UInt32(1000)))
            expectError(.corrupt) { try lengths.tryReceive() }
            #expect(detail(name + "-length", "droppedMessages") == 1)
            try lengths.blockingSend("b")
            #expect(try lengths.blockingReceive() == "b")
            // A raw value of the wrong length.
            let values = try Channel<Int64>.create(name: name + "-value", capacity: 2)
            defer { values.detach() }
            try values.blockingSend(1)
            scribble(name + "-value", at: ChannelFile.slot(0, stride: 64) + 16, bytes(of: UInt32(4)))
            expectError(.corrupt) { try values.blockingReceive() }
            // A sequence that fits no position, where a receiver and a sender look.
            let sequences = try Channel<String>.create(name: name + "-sequence", capacity: 4, maxMessageSize: 16)
            defer { sequences.detach() }
            try sequences.blockingSend("c")
            scribble(name + "-sequence", at: ChannelFile.slot(0, stride: stride), bytes(of: UInt64(12345)))
            expectError(.corrupt) { try sequences.tryReceive() }
            expectError(.corrupt) { try sequences.blockingReceive(timeout: .seconds(5)) }
            scribble(name + "-sequence", at: ChannelFile.slot(1, stride: stride), bytes(of: UInt64.max))
            expectError(.corrupt) { try sequences.trySend("d") }
            expectError(.corrupt) { try sequences.blockingSend("d", timeout: .seconds(5)) }
            // Positions more than a lap apart.
            let positions = try Channel<String>.create(name: name + "-position", capacity: 4, maxMessageSize: 16)
            defer { positions.detach() }
            scribble(name + "-position", at: ChannelFile.sendPosition, bytes(of: UInt64(400)))
            expectError(.corrupt) { try positions.trySend("e") }
            expectError(.corrupt) { try positions.tryReceive() }
            expectError(.corrupt) { try positions.blockingReceive(timeout: .seconds(5)) }
            #expect(details(name + "-position")["count"]?.hasPrefix("invalid") == true)
            scribble(name + "-position", at: ChannelFile.sendPosition, bytes(of: UInt64(0)))
            scribble(name + "-position", at: ChannelFile.receivePosition, bytes(of: UInt64(1) << 63))
            expectError(.corrupt) { try positions.tryReceive() }
            // An owner that is not a process.
            let owners = try Channel<String>.create(name: name + "-owner", capacity: 4, maxMessageSize: 16)
            defer { owners.detach() }
            try owners.blockingSend("f")
            scribble(name + "-owner", at: ChannelFile.slot(0, stride: stride) + 8, bytes(of: UInt64(5)))
            expectError(.corrupt) { try owners.blockingReceive(timeout: .seconds(5)) }
            // A damaged header: refused when opened.
            let header = try Channel<String>.create(name: name + "-header", capacity: 4, maxMessageSize: 16)
            defer { header.detach() }
            scribble(name + "-header", at: ChannelFile.payload, bytes(of: UInt32(0)))
            expectError(.corrupt) { try Channel<String>.open(name: name + "-header") }
            scribble(name + "-header", at: ChannelFile.payload, bytes(of: UInt32(1_000_000)))
            expectError(.corrupt) { try Channel<String>.open(name: name + "-header") }
            scribble(name + "-header", at: ChannelFile.payload, bytes(of: UInt32(4)))
            _ = try Channel<String>.open(name: name + "-header")
            scribble(name + "-header", at: ChannelFile.payload + 128, bytes(of: UInt64(99)))
            expectError(.corrupt) { try Channel<String>.open(name: name + "-header") }
            scribble(name + "-header", at: ChannelFile.payload + 20, bytes(of: UInt32(7)))
            expectError(.corrupt) { try Channel<String>.open(name: name + "-header") }
        }
    }
}
