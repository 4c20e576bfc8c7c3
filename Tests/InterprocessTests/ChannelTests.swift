#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// What `ipc inspect` shows for the named channel.
private func details(_ name: String) -> [String: String] {
    (try? SharedMemory.info(name: name).details) ?? [:]
}

private func detail(_ name: String, _ key: String) -> Int? { Int(details(name)[key] ?? "") }

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
            expectError(.invalidSize) { try raw.trySend(Array(repeating: 7, count: 101)) }
            #expect(raw.count == 3)
            #expect(try raw.tryReceive() == [])
            #expect(try raw.tryReceive() == [1, 2, 3])
            #expect(try raw.tryReceive() == Array(repeating: 7, count: 100))
            #expect(try raw.tryReceive() == nil)

            let text = try Channel<String>.create(name: name + "-text", capacity: 2, maxMessageSize: 16)
            defer { text.detach() }
            try text.blockingSend("héllo")
            #expect(try text.blockingReceive() == "héllo")
            expectError(.invalidSize) { try text.blockingSend(String(repeating: "x", count: 17)) }

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
}
