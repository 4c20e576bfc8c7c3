#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// Receives until nil; the values of the messages (a `.missed` is recorded as nil).
private func drain(_ subscription: Broadcast<UInt64>.Subscription) throws -> [UInt64?] {
    var values: [UInt64?] = []
    while let delivery = try subscription.tryReceive() { values.append(delivery.message) }
    return values
}

@Suite("Broadcast readiness descriptors")
struct BroadcastReadinessTests {
    @Test func becomesReadableWhenAChildPublishes() throws {
        try withCleanNames("bcrdy-child") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            #expect(try subscription.tryReceive() == nil)
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let publisher = try Peer.spawn("bc-publish", name, "7", "1")
            defer { publisher.stop() }
            #expect(publisher.readLine() == "publishing")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try subscription.tryReceive() == .message(7))
            #expect(try subscription.tryReceive() == nil)
            #expect(publisher.readLine() == "published")
            #expect(publisher.wait(timeout: .seconds(20)) == .exited(0))
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 1)
        }
    }

    /// The protocol's steps in the order that matters: a message published while the descriptor is
    /// signalled and not yet acknowledged makes no second wake-up and is taken by the receives after
    /// the acknowledgement; after it, the next publish wakes it again; closing wakes it too. Messages
    /// published before the descriptor existed do not make it readable (the first drain takes them).
    @Test func theProtocolLeavesNoMessageUnannounced() throws {
        try withCleanNames("bcrdy-protocol") { prefix in
            let name = prefix + "-b"
            let publisher = try Broadcast<UInt64>.create(name: name, capacity: 8)
            defer { publisher.detach() }
            let subscription = try Broadcast<UInt64>.open(name: name).subscribe()
            defer { subscription.close() }
            #expect(try publisher.tryPublish(0))
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(try drain(subscription) == [0])
            #expect(try publisher.tryPublish(1))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(try publisher.tryPublish(2))
            #expect(readiness.wakeUps == 1)
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(try drain(subscription) == [1, 2])
            #expect(try publisher.tryPublish(3))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 2)
            readiness.acknowledge()
            publisher.close()
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 3)
            #expect(try subscription.tryReceive() == .message(3))
            expectError(.closed) { try subscription.tryReceive() }
        }
    }

    /// One descriptor per subscription (another subscription of the same process has its own);
    /// `ipc inspect` shows it; its socket file goes with it; closing the subscription closes it.
    @Test func oneDescriptorPerSubscriptionAndItsFileGoesWithIt() throws {
        try withCleanNames("bcrdy-one") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            let first = try broadcast.subscribe()
            let second = try broadcast.subscribe()
            defer { second.close() }
            let readiness = try first.readinessDescriptor()
            expectError(.alreadyExists) { try first.readinessDescriptor() }
            let other = try second.readinessDescriptor()
            #expect(readinessFiles(name, kind: "bcready").count == 2)
            let lines = inspectLines(name, "subscriber.", pid: getpid())
            #expect(lines.count == 2 && lines.allSatisfy { $0.contains("readiness descriptor (armed, 0 wake-ups)") }, "\(lines)")
            readiness.close()
            readiness.close()
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            #expect(inspectLines(name, "subscriber.", pid: getpid()).filter { $0.contains("readiness descriptor") }.count == 1)
            let again = try first.readinessDescriptor()
            #expect(readinessFiles(name, kind: "bcready").count == 2)
            // Closing the subscription closes its descriptor (and frees its place's fields).
            first.close()
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            expectError(.closed) { try first.readinessDescriptor() }
            again.acknowledge()
            #expect(try broadcast.tryPublish(5))
            #expect(isReadable(other.fileDescriptor, within: 0))
            #expect(again.wakeUps == 0)
            other.close()
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
        }
    }

    /// With more than 64 places, places 6 and 70 share bit 6 of `descriptors_armed`: a publish wakes
    /// both, and each acknowledges on its own. Under `.dropOldest` a woken subscriber that fell
    /// behind hears what it missed.
    @Test func placesBeyondSixtyFourShareBitsAndAllWake() throws {
        try withCleanNames("bcrdy-many") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 2, maxSubscribers: 80, policy: .dropOldest)
            defer { broadcast.detach() }
            var subscriptions: [Broadcast<UInt64>.Subscription] = []
            defer { for subscription in subscriptions { subscription.close() } }
            for _ in 0..<71 { subscriptions.append(try broadcast.subscribe()) }
            let low = try subscriptions[6].readinessDescriptor()
            defer { low.close() }
            let high = try subscriptions[70].readinessDescriptor()
            defer { high.close() }
            #expect(inspectLines(name, "subscriber.", pid: getpid()).filter { $0.contains("readiness descriptor (armed") }.count == 2)
            for value in 0..<5 as Range<UInt64> { #expect(try broadcast.tryPublish(value)) }
            #expect(isReadable(low.fileDescriptor, within: 0) && isReadable(high.fileDescriptor, within: 0))
            #expect(low.wakeUps == 1 && high.wakeUps == 1)
            high.acknowledge()
            #expect(try drain(subscriptions[70]) == [nil, 3, 4])
            #expect(try broadcast.tryPublish(5))
            #expect(high.wakeUps == 2 && low.wakeUps == 1, "the signalled, unacknowledged one is not sent another")
            low.acknowledge()
            #expect(try drain(subscriptions[6]) == [nil, 4, 5])
            #expect(try drain(subscriptions[70]) == [5])
            high.acknowledge()
            #expect(try broadcast.tryPublish(6))
            #expect(low.wakeUps == 2 && high.wakeUps == 3)
        }
    }

    /// A subscriber killed while its descriptor is armed: `ipc inspect` shows it dead, and the first
    /// publish, whose datagram is refused, sweeps it (bit and flag cleared, socket file removed,
    /// place freed and counted departed). Publishing goes on.
    @Test func aSubscriberKilledWhileArmedIsSwept() throws {
        try withCleanNames("bcrdy-killed") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8, policy: .dropOldest)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bcready-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            let lines = inspectLines(name, "subscriber.", pid: child.pid)
            #expect(lines.count == 1 && lines.first?.contains("readiness descriptor (armed, 0 wake-ups)") == true, "\(lines)")
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            child.stop()
            #expect(inspectLines(name, "subscriber.", pid: child.pid).first?.contains("(dead)") == true)
            #expect(broadcast.subscriberCount == 1)
            #expect(try broadcast.tryPublish(1))
            #expect(inspectLines(name, "subscriber.", pid: child.pid).isEmpty)
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
            #expect(broadcast.subscriberCount == 0)
            #expect(details(name)["departedSubscribers"] == "1")
            #expect(try broadcast.tryPublish(2))
        }
    }

    /// A subscriber killed with a descriptor, whose place a joining subscriber takes over (every
    /// place taken): the joiner removes the dead one's socket file and starts with clean fields.
    @Test func aJoinerTakingADeadPlaceRemovesItsSocketFile() throws {
        try withCleanNames("bcrdy-join") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8, maxSubscribers: 1)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bcready-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            child.stop()
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
            #expect(inspectLines(name, "subscriber.", pid: getpid()) == ["pid \(getpid()) at 0 (0 behind), received 0, missed 0"])
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            #expect(try broadcast.tryPublish(9))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            readiness.acknowledge()
            #expect(try drain(subscription) == [9])
        }
    }

    /// A subscriber killed at each step of registering its descriptor leaves its place (and, once
    /// bound, a socket file); the subscriber that takes the place over removes the file, and its own
    /// descriptor works.
    @Test(arguments: ["broadcast.readiness.numbered", "broadcast.readiness.bound", "broadcast.readiness.armed"])
    func aSubscriberKilledAtEachRegistrationStepIsSwept(_ point: String) throws {
        try withCleanNames("bcrdy-crash") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8, maxSubscribers: 1)
            defer { broadcast.detach() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "bcready-hold", name)
            defer { child.stop() }
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            #expect(inspectLines(name, "subscriber.", pid: child.pid).first?.contains("(dead)") == true)
            #expect(readinessFiles(name, kind: "bcready").count == (point == "broadcast.readiness.numbered" ? 0 : 1))
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
            #expect(inspectLines(name, "subscriber.", pid: child.pid).isEmpty)
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            #expect(try broadcast.tryPublish(3))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            readiness.acknowledge()
            #expect(try drain(subscription) == [3])
        }
    }

    /// A publisher killed while sweeping a dead subscriber's place (after taking it) leaves the
    /// place marked with its own dead token, as joining (it holds no publisher back), and the socket
    /// file; the next subscriber that needs the place takes it over and removes the file.
    @Test func aSweeperKilledWhileSweepingIsSweptInTurn() throws {
        try withCleanNames("bcrdy-sweeper") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 8, maxSubscribers: 1)
            defer { broadcast.detach() }
            let holder = try Peer.spawn("bcready-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "registered")
            holder.stop()
            let sweeper = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "broadcast.readiness.sweep.taken", "bc-publish", name, "0", "1")
            defer { sweeper.stop() }
            #expect(sweeper.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            let marked = inspectLines(name, "subscriber.", pid: sweeper.pid)
            #expect(marked.count == 1 && marked.first?.contains("(dead)") == true && marked.first?.contains("joining") == true, "\(marked)")
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            #expect(try broadcast.tryPublish(1), "a place being swept holds no publisher back")
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
            #expect(inspectLines(name, "subscriber.", pid: sweeper.pid).isEmpty && inspectLines(name, "subscriber.", pid: holder.pid).isEmpty)
        }
    }

    /// A subscriber killed after its descriptor was signalled (not armed, so no publish sends it
    /// anything) and that holds a `.blockPublisher` publisher back: the publisher that finds it dead
    /// frees its place and removes its socket file.
    @Test func aBlockedPublisherSweepsADeadSubscribersDescriptor() throws {
        try withCleanNames("bcrdy-blocked") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 2, policy: .blockPublisher)
            defer { broadcast.detach() }
            let child = try Peer.spawn("bcready-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            #expect(try broadcast.tryPublish(0))
            let signalled = inspectLines(name, "subscriber.", pid: child.pid)
            #expect(signalled.first?.contains("readiness descriptor (signalled or not armed, 1 wake-ups)") == true, "\(signalled)")
            child.stop()
            #expect(readinessFiles(name, kind: "bcready").count == 1)
            #expect(try broadcast.tryPublish(1))
            #expect(readinessFiles(name, kind: "bcready").count == 1, "nothing was sent to it, so nothing found it")
            #expect(try broadcast.tryPublish(2), "the dead subscriber at position 0 is cleared")
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
            #expect(inspectLines(name, "subscriber.", pid: child.pid).isEmpty)
            #expect(details(name)["departedSubscribers"] == "1")
        }
    }

    /// Scribbled readiness fields never crash a publisher nor send a datagram anywhere but to a
    /// path it builds itself: places whose owner is no live token are swept by the publish that
    /// finds them armed; publishing and descriptors go on working.
    @Test func scribbledReadinessFieldsAreSweptNotTrusted() throws {
        try withCleanNames("bcrdy-scribble") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4, maxSubscribers: 4, policy: .dropOldest)
            defer { broadcast.detach() }
            let places = SharedMemory.payloadOffset + 512
            for place in 0..<4 {
                scribble(name, at: places + place * 64, [UInt8](repeating: 0x5A, count: 8))        // owner: a dead "token"
                scribble(name, at: places + place * 64 + 32, [UInt8](repeating: place % 2 == 0 ? 0x5A : 0xFF, count: 32))
            }
            scribble(name, at: SharedMemory.payloadOffset + 272, [UInt8](repeating: 0xFF, count: 8))   // descriptors_armed
            #expect(broadcast.subscriberCount == 4)
            #expect(try broadcast.tryPublish(1))
            #expect(broadcast.subscriberCount == 0, "\(details(name))")
            #expect(details(name)["departedSubscribers"] == "4")
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            #expect(try broadcast.tryPublish(2))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            readiness.acknowledge()
            #expect(try drain(subscription) == [2])
        }
    }

    /// A broadcast of the layout before readiness descriptors (tag "BCS1") is refused as an older
    /// layout, not misread.
    @Test func aBroadcastOfTheOlderLayoutIsIncompatible() throws {
        try withCleanNames("bcrdy-old") { prefix in
            let name = prefix + "-b"
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: 4)
            defer { broadcast.detach() }
            scribble(name, at: SharedMemory.payloadOffset + 20, Array("BCS1".utf8))
            do {
                _ = try Broadcast<UInt64>.open(name: name)
                Issue.record("a BCS1 broadcast opened")
            } catch let error as InterprocessError {
                #expect(error.code == .incompatible && error.detail.contains("older layout"), "\(error)")
            }
        }
    }

    /// A publisher child publishes numbers in bursts while two child processes and the test each
    /// run an event loop on a subscription's descriptor (poll, acknowledge, tryReceive until nil).
    /// Within a burst, publishes race with the loops' acknowledgements; after each burst the
    /// publisher waits until every loop has received its last number (each replies on a channel),
    /// so a wake-up lost on any burst's last message stops the run: the loop waits out its bound.
    /// Every message arrives, once, in order (under `.dropOldest`: arrives or is counted missed).
    @Test(arguments: [Broadcast<UInt64>.SlowSubscriberPolicy.blockPublisher, .dropOldest])
    func crossProcessStressLosesNoWakeUp(_ policy: Broadcast<UInt64>.SlowSubscriberPolicy) throws {
        try withCleanNames("bcrdy-stress") { prefix in
            let name = prefix + "-b"
            let total = 20_000
            let burst = 4
            let broadcast = try Broadcast<UInt64>.create(name: name, capacity: policy == .blockPublisher ? 2 : 16, policy: policy)
            defer { broadcast.detach() }
            let reply = try Channel<UInt64>.create(name: prefix + "-r", capacity: 8)
            defer { reply.detach() }
            let subscription = try broadcast.subscribe()
            defer { subscription.close() }
            let readiness = try subscription.readinessDescriptor()
            defer { readiness.close() }
            var loops: [ChildProcess] = []
            defer { for child in loops { child.stop() } }
            for _ in 0..<2 { loops.append(try Peer.spawn("bcready-loop", name, "\(total)", prefix + "-r", "\(burst)")) }
            for child in loops { #expect(child.readLine() == "subscribed") }
            let publisher = try Peer.spawn("bcready-publish", name, "\(total)", prefix + "-r", "\(burst)", "3")
            defer { publisher.stop() }
            var received = 0, missed = 0, violations = 0, stalls = 0
            var last: UInt64?
            var missedSinceLast = 0
            while received + missed < total {
                if !isReadable(readiness.fileDescriptor, within: 30_000) {
                    stalls += 1
                    break
                }
                readiness.acknowledge()
                while let delivery = try subscription.tryReceive() {
                    switch delivery {
                    case .missed(let count):
                        missed += count
                        missedSinceLast += count
                    case .message(let value):
                        if let last, value != last + 1 + UInt64(missedSinceLast) { violations += 1 }
                        last = value
                        missedSinceLast = 0
                        received += 1
                        if value % UInt64(burst) == UInt64(burst - 1) { try reply.blockingSend(value, timeout: .seconds(60)) }
                    }
                }
            }
            #expect(stalls == 0, "the loop waited 30 s for a wake-up with \(total - received - missed) messages to come")
            #expect(violations == 0)
            #expect(received + missed == total && last == UInt64(total - 1))
            if policy == .blockPublisher { #expect(missed == 0) }
            #expect(readiness.wakeUps >= 1)
            #expect(publisher.readLine(timeout: .seconds(60)) == "publishing")
            #expect(publisher.readLine(timeout: .seconds(60)) == "published")
            #expect(publisher.wait(timeout: .seconds(20)) == .exited(0))
            for child in loops {
                let report = child.readLine(timeout: .seconds(60)) ?? "nothing"
                let fields = report.split(separator: " ")
                #expect(fields.count == 8 && fields[0] == "received" && fields[4] == "violations" && fields[5] == "0", "\(report)")
                if fields.count == 8 {
                    #expect((Int(fields[1]) ?? 0) + (Int(fields[3]) ?? 0) == total, "\(report)")
                    if policy == .blockPublisher { #expect(fields[3] == "0", "\(report)") }
                }
                #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            }
            #expect(try subscription.tryReceive() == nil)
            readiness.close()
            #expect(readinessFiles(name, kind: "bcready").isEmpty)
        }
    }
}
