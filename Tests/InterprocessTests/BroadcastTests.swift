#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

private struct Quote: Codable, Equatable, Sendable {
    var symbol: String
    var price: Double
}

private struct Point: BitwiseCopyable, Equatable, Sendable {
    var x: Int32
    var y: Int32
}

/// Where a broadcast's header, subscriber places and slots are in its segment's file (for scribbling).
private enum BroadcastFile {
    static let payload = 4096
    static let head = payload + 256
    static let publisher = payload + 264
    static func place(_ index: Int) -> Int { payload + 512 + index * 64 }
    static func slot(_ index: Int, maxSubscribers: Int, maxMessageSize: Int) -> Int {
        payload + 512 + maxSubscribers * 64 + index * ((16 + maxMessageSize + 63) / 64 * 64)
    }
}

private func bytes(of value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
private func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

/// The numbers of a child's "received R missed M violations V first F last L" line.
private struct Report: Equatable {
    var received = -1, missed = -1, violations = -1, first = -2, last = -2

    init?(_ line: String?) {
        guard let words = line?.split(separator: " "), words.count == 10, words[0] == "received" else { return nil }
        received = Int(words[1]) ?? -1
        missed = Int(words[3]) ?? -1
        violations = Int(words[5]) ?? -1
        first = Int(words[7]) ?? -2
        last = Int(words[9]) ?? -2
    }

    init(received: Int, missed: Int, violations: Int, first: Int, last: Int) {
        (self.received, self.missed, self.violations, self.first, self.last) = (received, missed, violations, first, last)
    }
}

@Suite("Broadcast", .serialized, .timeLimit(.minutes(5)))
struct BroadcastTests {
    // MARK: Messages of every kind

    @Test func bytesTextRawAndCodableMessagesReachEverySubscriber() throws {
        try withCleanNames("bc") { name in
            let raw = try Broadcast<[UInt8]>.create(name: name + "-bytes", capacity: 4, maxMessageSize: 100)
            defer { raw.detach() }
            #expect(raw.capacity == 4 && raw.maxMessageSize == 100 && raw.policy == .blockPublisher && raw.maxSubscribers == 64)
            let first = try raw.subscribe(), second = try raw.subscribe()
            #expect(raw.subscriberCount == 2)
            #expect(try raw.tryPublish([]))
            #expect(try raw.tryPublish([1, 2, 3]))
            #expect(try raw.tryPublish(Array(repeating: 7, count: 100)))
            expectError(.invalidSize) { try raw.tryPublish(Array(repeating: 7, count: 101)) }
            for subscription in [first, second] {
                #expect(subscription.backlog == 3)
                #expect(try subscription.tryReceive() == .message([]))
                #expect(try subscription.tryReceive() == .message([1, 2, 3]))
                #expect(try subscription.tryReceive() == .message(Array(repeating: 7, count: 100)))
                #expect(try subscription.tryReceive() == nil)
            }
            first.close()
            #expect(raw.subscriberCount == 1)
            expectError(.closed) { try first.tryReceive() }

            let text = try Broadcast<String>.create(name: name + "-text", capacity: 2, maxMessageSize: 16)
            defer { text.detach() }
            let reader = try text.subscribe()
            try text.blockingPublish("héllo")
            #expect(try reader.blockingReceive() == .message("héllo"))
            expectError(.invalidSize) { try text.blockingPublish(String(repeating: "x", count: 17)) }

            let quotes = try Broadcast<Quote>.create(name: name + "-json", capacity: 2, policy: .dropOldest)
            defer { quotes.detach() }
            let quoteReader = try quotes.subscribe()
            try quotes.blockingPublish(Quote(symbol: "ACME", price: 12.5))
            #expect(try quoteReader.blockingReceive().message == Quote(symbol: "ACME", price: 12.5))
            #expect(details(name + "-json")["format"] == "JSON")
            #expect(details(name + "-json")["policy"] == "dropOldest")

            let points = try Broadcast<Point>.create(name: name + "-point", capacity: 2)
            defer { points.detach() }
            let pointReader = try points.subscribe()
            try points.blockingPublish(Point(x: 1, y: -2))
            #expect(try pointReader.blockingReceive() == .message(Point(x: 1, y: -2)))

            let info = try SharedMemory.info(name: name + "-point")
            #expect(info.kind == "broadcast")
            #expect(info.details["capacity"] == "2")
            #expect(info.details["maxMessageSize"] == "8")
            #expect(info.details["policy"] == "blockPublisher")
            #expect(info.details["head"] == "1")
            #expect(info.details["subscribers"] == "1")
            #expect(info.details["subscriber.0"]?.contains("received 1") == true, "\(info.details)")
            #expect(info.details["messageType"]?.contains("Point") == true)
            #expect(info.summary.contains("1 subscriber"), "\(info.summary)")
        }
    }

    @Test func openingAsAnotherMessageTypeIsIncompatible() throws {
        try withCleanNames("bctype") { name in
            let broadcast = try Broadcast<Int64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            expectError(.incompatible) { try Broadcast<UInt64>.open(name: name) }
            expectError(.incompatible) { try Broadcast<String>.open(name: name) }
            expectError(.incompatible) { try Channel<Int64>.open(name: name) }
            expectError(.alreadyExists) { try Broadcast<Int64>.create(name: name, capacity: 4) }
            let peer = try Broadcast<Int64>.open(name: name)
            defer { peer.detach() }
            #expect(peer.capacity == 4)
            let (again, created) = try Broadcast<Int64>.openOrCreate(name: name, capacity: 99, policy: .dropOldest)
            defer { again.detach() }
            #expect(!created && again.capacity == 4 && again.policy == .blockPublisher)
            let (fresh, made) = try Broadcast<Int64>.openOrCreate(name: name + "-new", capacity: 3)
            #expect(made && fresh.capacity == 3)
            fresh.detach()
            #expect(!SharedMemory.exists(name: name + "-new"), "the last holder that detaches removes it")
            expectError(.invalidArgument) { try Broadcast<Int64>.create(name: name + "-zero", capacity: 0) }
            expectError(.invalidArgument) { try Broadcast<Int64>.create(name: name + "-subs", capacity: 1, maxSubscribers: 0) }
            expectError(.invalidArgument) { try broadcast.subscribe(history: -1) }
            let channel = try Channel<Int64>.create(name: name + "-chan", capacity: 1)
            defer { channel.detach() }
            expectError(.incompatible) { try Broadcast<Int64>.open(name: name + "-chan") }
        }
    }

    // MARK: Subscribers

    @Test func aLateSubscriberGetsTheHistoryItAskedFor() throws {
        try withCleanNames("bchistory") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { broadcast.detach() }
            for value in 0..<10 { try broadcast.blockingPublish(UInt64(value)) }   // nobody subscribed: nothing waits
            let none = try broadcast.subscribe()
            let some = try broadcast.subscribe(history: 3)
            let all = try broadcast.subscribe(history: 100)
            #expect(try none.tryReceive() == nil)
            func drain(_ subscription: Broadcast<UInt64>.Subscription) throws -> [UInt64] {
                var values: [UInt64] = []
                while let delivery = try subscription.tryReceive() {
                    guard case .message(let value) = delivery else {
                        Issue.record("unexpected \(delivery)")
                        return values
                    }
                    values.append(value)
                }
                return values
            }
            #expect(try drain(some) == [7, 8, 9])
            #expect(try drain(all) == Array(2..<10), "at most the capacity")
            try broadcast.blockingPublish(10)
            for subscription in [none, some, all] { #expect(try subscription.tryReceive() == .message(10)) }
            // In another process.
            let child = try Peer.spawn("bc-subscribe", name, "history", "4")
            defer { child.stop() }
            #expect(child.readLine() == "subscribed 7")
            try broadcast.blockingPublish(11)
            broadcast.close()
            #expect(Report(child.readLine(timeout: .seconds(30))) == Report(received: 5, missed: 0, violations: 0, first: 7, last: 11))
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
        }
    }

    @Test func closingASubscriptionFreesItsPlaceAndThePublisher() throws {
        try withCleanNames("bcplaces") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 2, maxSubscribers: 2)
            defer { broadcast.detach() }
            let slow = try broadcast.subscribe()
            var other: Broadcast<UInt64>.Subscription? = try broadcast.subscribe()
            expectError(.outOfMemory) { try broadcast.subscribe() }
            #expect(try broadcast.tryPublish(1) && broadcast.tryPublish(2))
            #expect(try !broadcast.tryPublish(3), "the ring is full of what they have not read")
            expectError(.timedOut) { try broadcast.blockingPublish(3, timeout: .milliseconds(100)) }
            #expect(detail(name, "publishersWaiting") == 0)
            other = nil   // dropping it unsubscribes
            _ = other
            #expect(broadcast.subscriberCount == 1)
            #expect(try slow.tryReceive() == .message(1))
            #expect(try broadcast.tryPublish(3))
            slow.close()
            for value in 4..<20 { #expect(try broadcast.tryPublish(UInt64(value)), "nobody to wait for") }
            let late = try broadcast.subscribe(history: 2)
            #expect(try late.tryReceive() == .message(18))
        }
    }

    /// A publisher parked on a slow subscriber in another process goes on when it reads.
    @Test func aBlockedPublisherWaitsForTheSlowestSubscriber() throws {
        try withCleanNames("bcslow") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bc-subscribe", name, "hold")
            defer { child.stop() }
            #expect(child.readLine() == "subscribed 0")
            for value in 0..<4 { #expect(try broadcast.tryPublish(UInt64(value))) }
            #expect(try !broadcast.tryPublish(4))
            let publisher = try Peer.spawn("bc-publish", name, "4", "96")
            defer { publisher.stop() }
            #expect(publisher.readLine() == "publishing")
            #expect(pollUntil { detail(name, "publishersWaiting") == 1 })
            #expect(details(name)["subscriber.0"]?.contains("4 behind") == true, "\(details(name))")
            child.tell()
            #expect(publisher.readLine(timeout: .seconds(60)) == "published")
            broadcast.close()
            #expect(Report(child.readLine(timeout: .seconds(30))) == Report(received: 100, missed: 0, violations: 0, first: 0, last: 99))
        }
    }

    // MARK: Drop oldest

    @Test func aSubscriberThatFellBehindIsToldExactlyHowManyItMissed() throws {
        try withCleanNames("bcdrop") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4, policy: .dropOldest)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            for value in 0..<10 { #expect(try broadcast.tryPublish(UInt64(value)), "never waits") }
            #expect(try subscription.tryReceive() == .missed(6))
            #expect(subscription.missedCount == 6)
            for value in 6..<10 { #expect(try subscription.tryReceive() == .message(UInt64(value))) }
            #expect(try subscription.tryReceive() == nil)
            // Overwritten while it reads: publish a full ring more, then read one.
            for value in 10..<14 { try broadcast.blockingPublish(UInt64(value)) }
            #expect(try subscription.tryReceive() == .message(10))
            for value in 14..<16 { try broadcast.blockingPublish(UInt64(value)) }
            #expect(try subscription.tryReceive() == .missed(1), "11 was overwritten by 15")
            #expect(try subscription.tryReceive() == .message(12))
            #expect(subscription.missedCount == 7)
            // A subscriber in another process that holds still while 100 are published.
            let child = try Peer.spawn("bc-subscribe", name, "hold")
            defer { child.stop() }
            #expect(child.readLine() == "subscribed 16")
            for value in 16..<116 { try broadcast.blockingPublish(UInt64(value)) }
            child.tell()
            #expect(pollUntil { details(name)["subscriber.1"]?.contains("0 behind") == true })
            broadcast.close()
            #expect(Report(child.readLine(timeout: .seconds(30))) == Report(received: 4, missed: 96, violations: 0, first: 112, last: 115))
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
        }
    }

    // MARK: Between processes

    /// One publisher, four subscribers in other processes (two async, two blocking), a small ring:
    /// each subscriber receives every message, in order, none missed.
    @Test func everySubscriberInOtherProcessesReceivesEverythingInOrder() throws {
        try withCleanNames("bcorder") { name in
            let count = 5000
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { broadcast.detach() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for index in 0..<4 {
                let child = try Peer.spawn("bc-subscribe", name, index % 2 == 0 ? "async" : "blocking")
                children.append(child)
                #expect(child.readLine() == "subscribed 0")
            }
            for value in 0..<count { try broadcast.blockingPublish(UInt64(value), timeout: .seconds(60)) }
            broadcast.close()
            for child in children {
                #expect(Report(child.readLine(timeout: .seconds(60))) == Report(received: count, missed: 0, violations: 0, first: 0, last: count - 1))
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            #expect(detail(name, "departedSubscribers") == 0 && detail(name, "droppedMessages") == 0)
        }
    }

    @Test func aParkedSubscriberInAnotherProcessIsWokenByPublishAndByClose() throws {
        try withCleanNames("bcwake") { name in
            let broadcast = try Broadcast<String>.create(name: name, capacity: 2)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bc-receive", name, "60000")
            defer { child.stop() }
            #expect(child.readLine() == "receiving")
            #expect(pollUntil { detail(name, "subscribersWaiting") == 1 })
            try broadcast.blockingPublish("hello")
            #expect(child.readLine() == "received hello")
            #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            let second = try Peer.spawn("bc-receive", name, "60000")
            defer { second.stop() }
            #expect(second.readLine() == "receiving")
            #expect(pollUntil { detail(name, "subscribersWaiting") == 1 })
            let start = Clock.monotonicNanoseconds()
            broadcast.close()
            #expect(second.readLine() == "closed")
            #expect(elapsed(since: start) < promptly)
        }
    }

    // MARK: Closing and cancellation

    @Test func closeEndsPublishingAndLetsSubscribersDrain() async throws {
        try await onOwnQueue { _ in
            let name = TestNames.make("bcclose")
            let broadcast = try Broadcast<String>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            for text in ["a", "b", "c"] { try await broadcast.publish(text) }
            broadcast.close()
            broadcast.close()
            #expect(broadcast.isClosed && details(name)["closed"] == "yes")
            await #expect(throws: InterprocessError.self) { try await broadcast.publish("d") }
            var received: [String] = []
            for try await delivery in subscription.messages {
                if let text = delivery.message { received.append(text) }
            }
            #expect(received == ["a", "b", "c"])
            do throws(InterprocessError) {
                _ = try await subscription.receive()
                Issue.record("a receive after the end succeeded")
            } catch {
                #expect(error.code == .closed)
            }
            let late = try broadcast.subscribe(history: 2)
            var history: [String] = []
            for try await delivery in late.messages { history.append(delivery.message ?? "?") }
            #expect(history == ["b", "c"], "a subscriber of a closed broadcast gets its history, then the end")
        }
    }

    @Test func aCancelledReceiveConsumesNothing() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("bccancel")
            let broadcast = try Broadcast<Int>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            let waiting = Task(executorPreference: executor) { () async throws -> Broadcast<Int>.Delivery in
                try await subscription.receive(timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "subscribersWaiting") == 1 })
            waiting.cancel()
            guard case .failure(let error) = await waiting.result else {
                Issue.record("a cancelled receive returned")
                return
            }
            #expect((error as? InterprocessError)?.code == .cancelled)
            #expect(detail(name, "subscribersWaiting") == 0)
            #expect(try broadcast.tryPublish(5))
            #expect(try subscription.tryReceive() == .message(5), "the cancelled receive took nothing")
            // Cancelled before it starts: takes nothing even though a message is there.
            #expect(try broadcast.tryPublish(6))
            let early = Task(executorPreference: executor) { () async throws -> Broadcast<Int>.Delivery in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await subscription.receive()
            }
            if case .success(let delivery) = await early.result { Issue.record("a cancelled task received \(delivery)") }
            #expect(try subscription.tryReceive() == .message(6))
            // A cancelled publish that waits for a slow subscriber publishes nothing.
            for value in 7..<11 { #expect(try broadcast.tryPublish(value)) }
            let publishing = Task(executorPreference: executor) { () async throws in
                try await broadcast.publish(99, timeout: .seconds(30))
            }
            #expect(await eventually { detail(name, "publishersWaiting") == 1 })
            publishing.cancel()
            if case .success = await publishing.result { Issue.record("a cancelled publish succeeded") }
            #expect(broadcast.publishedCount == 6, "5, 6, then 7 to 10: not 99")
            for value in 7..<11 { #expect(try subscription.tryReceive() == .message(value)) }
            #expect(try subscription.tryReceive() == nil)
        }
    }

    // MARK: Processes that die

    /// A subscriber SIGKILLed while the publisher waits for it no longer holds anyone back: the
    /// publisher finds it dead, clears its place and goes on.
    @Test func aSubscriberKilledWhileThePublisherWaitsForItReleasesThePublisher() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("bckillsub")
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bc-subscribe", name, "hold")
            defer { child.stop() }
            #expect(child.readLine() == "subscribed 0")
            let survivor = try broadcast.subscribe()
            for value in 0..<4 { #expect(try broadcast.tryPublish(UInt64(value))) }
            for value in 0..<4 { #expect(try survivor.tryReceive() == .message(UInt64(value))) }
            let publishing = Task(executorPreference: executor) { () async throws in
                try await broadcast.publish(4, timeout: .seconds(60))
            }
            #expect(await eventually { detail(name, "publishersWaiting") == 1 })
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            try await publishing.value
            #expect(elapsed(since: start) < promptly)
            #expect(detail(name, "departedSubscribers") == 1)
            #expect(broadcast.subscriberCount == 1)
            #expect(try survivor.tryReceive() == .message(4))
        }
    }

    /// A subscriber killed in the middle of a receive (after it advanced its position) or of
    /// subscribing (its place marked joining) takes nothing from the others: the publisher goes on
    /// past it (a ring of 2 makes it wait for the dead one first), the other subscriber receives
    /// everything, and the dead one's place is reused.
    @Test(arguments: ["broadcast.receive.afterAdvance", "broadcast.subscribe.afterOwner"])
    func aSubscriberKilledMidReceiveOrMidSubscribe(point: String) throws {
        try withCleanNames("bckillstep") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 2, maxSubscribers: 2)
            defer { broadcast.detach() }
            let survivor = try broadcast.subscribe()
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "bc-subscribe", name)
            defer { child.stop() }
            if point == "broadcast.receive.afterAdvance" {
                #expect(child.readLine() == "subscribed 0")
                try broadcast.blockingPublish(0, timeout: .seconds(20))
            }
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            var received: [Broadcast<UInt64>.Delivery] = []
            for value in UInt64(point == "broadcast.receive.afterAdvance" ? 1 : 0)..<10 {
                try broadcast.blockingPublish(value, timeout: .seconds(20))
                if value % 2 == 1 {
                    while let delivery = try survivor.tryReceive() { received.append(delivery) }
                }
            }
            #expect(elapsed(since: start) < promptly)
            #expect(received == (0..<10).map { .message(UInt64($0)) })
            let replacement = try broadcast.subscribe()   // the dead one's place, reused
            #expect(detail(name, "departedSubscribers") == 1, "\(details(name))")
            try broadcast.blockingPublish(10)
            #expect(try replacement.tryReceive() == .message(10))
        }
    }

    /// A publisher killed at each step of a publish: before it marked the slot nothing was
    /// published; while writing, the message is not published (abandoned); once it was marked
    /// whole, the next publisher publishes it first (completed); after `head` moved, it is simply
    /// published. Subscribers never wait for the dead publisher, and the broadcast goes on.
    @Test(arguments: [
        ("broadcast.publish.afterTurn", false, nil),
        ("broadcast.publish.afterMark", false, "abandonedPublishes"),
        ("broadcast.publish.afterWrite", false, "abandonedPublishes"),
        ("broadcast.publish.afterComplete", true, "completedPublishes"),
        ("broadcast.publish.afterHead", true, nil),
    ] as [(String, Bool, String?)])
    func aPublisherKilledAtEachStep(point: String, delivered: Bool, repair: String?) throws {
        try withCleanNames("bckillpub") { name in
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "bc-publish", name, "100", "1")
            defer { child.stop() }
            #expect(child.readLine() == "publishing")
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let start = Clock.monotonicNanoseconds()
            try broadcast.blockingPublish(200, timeout: .seconds(20))
            var received = [try subscription.blockingReceive(timeout: .seconds(20))]
            if delivered { received.append(try subscription.blockingReceive(timeout: .seconds(20))) }
            #expect(elapsed(since: start) < promptly)
            #expect(received == (delivered ? [.message(100), .message(200)] : [.message(200)]))
            #expect(try subscription.tryReceive() == nil)
            if let repair { #expect(detail(name, repair) == 1, "\(details(name))") }
            #expect(details(name)["publisher"] == "none")
            for value in 300..<310 {
                try broadcast.blockingPublish(UInt64(value), timeout: .seconds(5))
                #expect(try subscription.blockingReceive(timeout: .seconds(5)) == .message(UInt64(value)))
            }
        }
    }

    /// Subscribers SIGKILLed at random moments while a publisher streams numbers through a small
    /// ring (blocking on the slowest): the publisher finishes, and every surviving subscriber has
    /// received every message, in order — a subscriber that dies takes nothing from the others.
    @Test func subscribersKilledAtRandomMomentsTakeNothingFromTheOthers() throws {
        try withCleanNames("bcchaos") { name in
            let count = 20_000
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { broadcast.detach() }
            var survivors: [ChildProcess] = []
            var victims: [ChildProcess] = []
            defer { for child in survivors + victims { child.stop() } }
            for index in 0..<2 {
                let child = try Peer.spawn("bc-subscribe", name, index == 0 ? "async" : "blocking")
                survivors.append(child)
                #expect(child.readLine() == "subscribed 0")
            }
            for index in 0..<3 {
                let child = try Peer.spawn("bc-subscribe", name, index % 2 == 0 ? "async" : "blocking")
                victims.append(child)
                #expect(child.readLine() == "subscribed 0")
            }
            let publisher = try Peer.spawn("bc-publish", name, "0", "\(count)")
            defer { publisher.stop() }
            #expect(publisher.readLine() == "publishing")
            for victim in victims {
                usleep(UInt32.random(in: 1_000...20_000))
                victim.kill(signal: SIGKILL)
                #expect(victim.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            }
            #expect(publisher.readLine(timeout: .seconds(120)) == "published")
            broadcast.close()
            for child in survivors {
                #expect(Report(child.readLine(timeout: .seconds(60))) == Report(received: count, missed: 0, violations: 0, first: 0, last: count - 1))
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            #expect(pollUntil { broadcast.subscriberCount == 2 } || detail(name, "departedSubscribers") ?? 0 <= 3)
        }
    }

    /// Publishers SIGKILLed at random moments (and replaced) while two subscribers in other
    /// processes receive: each publisher's messages arrive in order with none missing (a killed
    /// publisher's message in flight arrives whole or not at all, and nothing after it), no
    /// subscriber ever waits for a dead publisher, and both subscribers receive exactly the same
    /// messages.
    @Test func publishersKilledAtRandomMomentsLoseNothingButTheirLastMessage() throws {
        try withCleanNames("bcpubchaos") { name in
            let count = 20_000, rounds = 12
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { broadcast.detach() }
            var everyone: [ChildProcess] = []
            defer { for child in everyone { child.stop() } }
            var subscribers: [ChildProcess] = []
            for _ in 0..<2 {
                let child = try Peer.spawn("bc-subscribe-multi", name)
                everyone.append(child)
                subscribers.append(child)
                #expect(child.readLine() == "subscribed")
            }
            var nextID: UInt64 = 1
            var publishers: [ChildProcess] = []
            func startPublisher() throws {
                let child = try Peer.spawn("bc-publish", name, "\(nextID << 32)", "\(count)")
                everyone.append(child)
                #expect(child.readLine() == "publishing")
                publishers.append(child)
                nextID += 1
            }
            for _ in 0..<3 { try startPublisher() }
            var killed = 0
            for _ in 0..<rounds {
                usleep(UInt32.random(in: 500...10_000))
                let child = publishers.remove(at: Int.random(in: 0..<publishers.count))
                child.kill(signal: SIGKILL)
                if child.wait(timeout: .seconds(10)) == .signaled(SIGKILL) { killed += 1 }
                try startPublisher()
            }
            for child in publishers {
                #expect(child.readLine(timeout: .seconds(120)) == "published")
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            broadcast.close()
            var lines: [String] = []
            for child in subscribers {
                let line = child.readLine(timeout: .seconds(60)) ?? ""
                lines.append(line)
                let words = line.split(separator: " ")
                #expect(words.count == 10 && words[2] == "missed" && words[3] == "0" && words[4] == "violations" && words[5] == "0", "\(line)")
                #expect(words.count == 10 && Int(words[1]) ?? 0 >= 3 * count, "\(line)")
                #expect(child.wait(timeout: .seconds(10)) == .exited(0))
            }
            #expect(lines.count == 2 && lines[0] == lines[1], "both subscribers received the same messages: \(lines)")
            print("broadcast publisher chaos: \(killed) publishers killed; \(details(name)["abandonedPublishes"] ?? "?") publishes abandoned, \(details(name)["completedPublishes"] ?? "?") completed by the next publisher")
        }
    }

    // MARK: A hostile or buggy peer

    /// Whatever a peer scribbles into the broadcast, an operation that meets it throws `corrupt`:
    /// it never reads or writes outside the ring, and never crashes.
    @Test func aScribbledBroadcastIsCorruptNotACrash() throws {
        try withCleanNames("bcscribble") { name in
            func slot(_ index: Int) -> Int { BroadcastFile.slot(index, maxSubscribers: 4, maxMessageSize: 16) }
            // A length longer than a slot: the message is dropped, the subscriber goes on.
            let lengths = try Broadcast<String>.create(name: name + "-length", capacity: 4, maxMessageSize: 16, maxSubscribers: 4)
            defer { lengths.detach() }
            let lengthReader = try lengths.subscribe()
            try lengths.blockingPublish("a")
            scribble(name + "-length", at: slot(0) + 8, bytes(of: UInt32(1000)))
            expectError(.corrupt) { try lengthReader.tryReceive() }
            #expect(detail(name + "-length", "droppedMessages") == 1)
            try lengths.blockingPublish("b")
            #expect(try lengthReader.blockingReceive() == .message("b"))
            // A sequence that fits no position of its slot.
            let sequences = try Broadcast<String>.create(name: name + "-sequence", capacity: 4, maxMessageSize: 16, maxSubscribers: 4)
            defer { sequences.detach() }
            let sequenceReader = try sequences.subscribe()
            try sequences.blockingPublish("c")
            scribble(name + "-sequence", at: slot(0), bytes(of: UInt64(12345)))
            expectError(.corrupt) { try sequenceReader.tryReceive() }
            expectError(.corrupt) { try sequenceReader.blockingReceive(timeout: .seconds(5)) }
            scribble(name + "-sequence", at: slot(0), bytes(of: UInt64.max))
            expectError(.corrupt) { try sequenceReader.tryReceive() }
            // A head far ahead of what was written.
            let heads = try Broadcast<String>.create(name: name + "-head", capacity: 4, maxMessageSize: 16, maxSubscribers: 4)
            defer { heads.detach() }
            let headReader = try heads.subscribe()
            scribble(name + "-head", at: BroadcastFile.head, bytes(of: UInt64(400)))
            // More than a ring behind: it skips to what should be there, and finds it never written.
            #expect(try headReader.tryReceive() == .missed(396))
            expectError(.corrupt) { try headReader.tryReceive() }
            // A subscriber position past the head: for the subscriber and for a publisher that waits.
            let positions = try Broadcast<String>.create(name: name + "-position", capacity: 1, maxMessageSize: 16, maxSubscribers: 4)
            defer { positions.detach() }
            let positionReader = try positions.subscribe()
            try positions.blockingPublish("d")
            scribble(name + "-position", at: BroadcastFile.place(0) + 8, bytes(of: UInt64(77)))
            expectError(.corrupt) { try positionReader.tryReceive() }
            expectError(.corrupt) { try positions.blockingPublish("e", timeout: .seconds(5)) }
            #expect(details(name + "-position")["subscriber.0"]?.contains("position invalid") == true)
            // Owners that are not processes: a subscriber place, the publishing turn.
            let owners = try Broadcast<String>.create(name: name + "-owner", capacity: 1, maxMessageSize: 16, maxSubscribers: 4)
            defer { owners.detach() }
            let ownerReader = try owners.subscribe()
            try owners.blockingPublish("f")
            scribble(name + "-owner", at: BroadcastFile.place(0), bytes(of: UInt64(5)))
            expectError(.corrupt) { try ownerReader.tryReceive() }
            expectError(.corrupt) { try owners.blockingPublish("g", timeout: .seconds(5)) }
            scribble(name + "-owner", at: BroadcastFile.place(0), bytes(of: UInt64(0)))
            scribble(name + "-owner", at: BroadcastFile.publisher, bytes(of: UInt64(9)))
            expectError(.corrupt) { try owners.tryPublish("h") }
            // A damaged header: refused when opened.
            let header = try Broadcast<String>.create(name: name + "-header", capacity: 4, maxMessageSize: 16)
            defer { header.detach() }
            scribble(name + "-header", at: BroadcastFile.payload, bytes(of: UInt32(0)))
            expectError(.corrupt) { try Broadcast<String>.open(name: name + "-header") }
            scribble(name + "-header", at: BroadcastFile.payload, bytes(of: UInt32(4)))
            _ = try Broadcast<String>.open(name: name + "-header")
            scribble(name + "-header", at: BroadcastFile.payload + 32, bytes(of: UInt32(7)))
            expectError(.corrupt) { try Broadcast<String>.open(name: name + "-header") }
            scribble(name + "-header", at: BroadcastFile.payload + 32, bytes(of: UInt32(1)))
            scribble(name + "-header", at: BroadcastFile.payload + 36, bytes(of: UInt32(100_000)))
            expectError(.corrupt) { try Broadcast<String>.open(name: name + "-header") }
        }
    }
}
