#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

private struct Boom: Error {}

@Suite("SharedVariable", .serialized, .timeLimit(.minutes(5)))
struct SharedVariableTests {
    @Test func emptyAndFullInOneProcess() throws {
        try withCleanNames("var") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            #expect(variable.name == name)
            #expect(variable.isEmpty)
            #expect(variable.tryTake() == nil)
            #expect(variable.tryRead() == nil)
            #expect(variable.trySwap(1) == nil)
            // Take on empty blocks, and times out on time.
            var start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try variable.blockingTake(timeout: .milliseconds(150)) }
            var took = elapsed(since: start)
            #expect(took >= 0.149 && took < promptly, "\(took) s")
            expectError(.timedOut) { try variable.blockingRead(timeout: .milliseconds(20)) }
            expectError(.timedOut) { try variable.blockingSwap(3, timeout: .milliseconds(20)) }
            #expect(details(name)["waitingReaders"] == "0", "a reader that timed out left its slot")
            #expect(variable.tryPut(1))
            #expect(!variable.isEmpty)
            #expect(!variable.tryPut(2))
            // Put on full blocks, and times out on time.
            start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try variable.blockingPut(2, timeout: .milliseconds(150)) }
            took = elapsed(since: start)
            #expect(took >= 0.149 && took < promptly, "\(took) s")
            #expect(variable.tryRead() == 1)
            #expect(try variable.blockingRead() == 1)
            #expect(!variable.isEmpty, "reading does not empty it")
            #expect(try variable.blockingSwap(5) == 1)
            #expect(variable.trySwap(6) == 5)
            #expect(try variable.blockingModify{ value -> Int in value += 1; return 99 } == 99)
            #expect(try variable.blockingTake() == 7)
            #expect(variable.isEmpty)
            try variable.blockingPut(8)
            #expect(try variable.blockingTake(timeout: .seconds(1)) == 8)
            let info = try SharedMemory.info(name: name)
            #expect(info.kind == "variable")
            #expect(info.details["full"] == "no")
            #expect(info.details["valueSize"] == "8")
            #expect(info.details["putter"] == "-")
            let initialized = try SharedVariable<Int>.create(name: name + "-init", initialValue: 42)
            #expect(try initialized.blockingTake() == 42)
            initialized.close()
        }
    }

    @Test func modifyPutsTheOriginalBackWhenTheBodyThrows() throws {
        try withCleanNames("varmod") { name in
            let variable = try SharedVariable<Int>.create(name: name, initialValue: 10)
            defer { variable.close() }
            #expect(throws: Boom.self) {
                try variable.blockingModify { value in
                    value = 666
                    throw Boom()
                }
            }
            #expect(!variable.isEmpty)
            #expect(try variable.blockingRead() == 10)
            try variable.blockingModify { $0 += 5 }
            #expect(try variable.blockingTake() == 15)
            expectError(.timedOut) { try variable.blockingModify(timeout: .milliseconds(20)) { _ in Issue.record("ran on an empty variable") } }
        }
    }

    @Test func openingWithAnotherValueLayoutIsIncompatible() throws {
        try withCleanNames("varcompat") { name in
            let variable = try SharedVariable<UInt64>.create(name: name)
            defer { variable.close() }
            expectError(.incompatible) { try SharedVariable<UInt32>.open(name: name) }
            expectError(.incompatible) { try SharedVariable<(UInt32, UInt32)>.open(name: name) } // same size, other alignment
            expectError(.incompatible) { try SharedVariable<(UInt64, UInt64)>.open(name: name) }
            expectError(.incompatible) { try ProcessMutex.open(name: name) }
            expectError(.notFound) { try SharedVariable<UInt64>.open(name: name + "-x") }
            // Same size and alignment, another type: incompatible too (its type fingerprint).
            expectError(.incompatible) { try SharedVariable<Int64>.open(name: name) }
            // The creator's fingerprint, given explicitly, reads the same bytes as another type.
            let same = try SharedVariable<Int64>.open(name: name, type: TypeFingerprint(of: UInt64.self))
            try variable.blockingPut(7)
            #expect(try same.blockingTake() == 7)
            same.close()
        }
    }

    @Test func placementInAUserSegmentIsChecked() throws {
        try withCleanNames("varplace") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            #expect(SharedVariable<Int>.stateSize == 456) // a 448-byte header (with the type fingerprint), the value
            expectError(.invalidArgument) { try SharedVariable<Int>.create(in: segment, at: 4) }
            expectError(.invalidArgument) { try SharedVariable<Int>.create(in: segment, at: 4096 - 320) }
            expectError(.corrupt) { try SharedVariable<Int>.open(in: segment, at: 0) }
            let variable = try SharedVariable<Int>.create(in: segment, at: 512, initialValue: 3)
            expectError(.incompatible) { try SharedVariable<Int32>.open(in: segment, at: 512) }
            let again = try SharedVariable<Int>.open(in: segment, at: 512)
            #expect(try again.blockingTake() == 3)
            try variable.blockingPut(4, timeout: .seconds(5))
            segment.close()
            #expect(try again.blockingRead() == 4)
            #expect(try variable.blockingTake() == 4)
        }
    }

    @Test func putAndTakeAcrossProcesses() throws {
        try withCleanNames("varxfer") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            // The child takes what we put.
            let taker = try Peer.spawn("var-take-n", name, "200")
            defer { taker.stop() }
            #expect(taker.readLine() == "ready")
            for value in 1...200 { try variable.blockingPut(value, timeout: .seconds(10)) }
            #expect(taker.readLine() == "sum \(200 * 201 / 2)")
            #expect(taker.wait(timeout: .seconds(10)) == .exited(0))
            // We take what the child puts.
            let putter = try Peer.spawn("var-put-n", name, "200")
            defer { putter.stop() }
            #expect(putter.readLine() == "ready")
            var sum = 0
            for _ in 0..<200 { sum += try variable.blockingTake(timeout: .seconds(10)) }
            #expect(sum == 200 * 201 / 2)
            #expect(putter.readLine() == "done")
            #expect(putter.wait(timeout: .seconds(10)) == .exited(0))
            #expect(variable.isEmpty)
        }
    }

    @Test func onePutWakesExactlyOneOfSeveralTakers() throws {
        try withCleanNames("varone") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            let takers = try (0..<3).map { _ in try Peer.spawn("var-take", name, "20000") }
            defer { takers.forEach { $0.stop() } }
            for taker in takers { #expect(taker.readLine() == "waiting") }
            #expect(pollUntil { details(name)["waiters"] == "3" }, "all three takers parked")
            var got: [Int] = []
            var waiting = takers
            for value in [7, 8, 9] {
                try variable.blockingPut(value, timeout: .seconds(5))
                // Exactly one of the takers still waiting reports this value: collect reports until
                // 300 ms after the first (at most 10 s).
                var reported: [ChildProcess] = []
                let deadline = Deadline(after: .seconds(10))
                var quietAfter = Deadline.never
                while !min(deadline, quietAfter).hasPassed {
                    for taker in waiting where !reported.contains(where: { $0 === taker }) {
                        guard let line = taker.readLine(timeout: .milliseconds(10)) else { continue }
                        #expect(line == "took \(value)")
                        reported.append(taker)
                        got.append(Int(line.dropFirst(5)) ?? -1)
                        if quietAfter.isNever { quietAfter = Deadline(after: .milliseconds(300)) }
                    }
                }
                #expect(reported.count == 1, "\(reported.count) takers woke with \(value)")
                #expect(variable.isEmpty)
                waiting.removeAll { taker in reported.contains { $0 === taker } }
            }
            #expect(got == [7, 8, 9])
            for taker in takers { #expect(taker.wait(timeout: .seconds(10)) == .exited(0)) }
            #expect(variable.isEmpty)
        }
    }

    @Test func everyWaitingReaderSeesThePutBeforeATakerTakesIt() throws {
        try withCleanNames("varread") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            for round in 1...5 {
                let readers = try (0..<3).map { _ in try Peer.spawn("var-read", name, "20000") }
                let taker = try Peer.spawn("var-take", name, "20000")
                defer { (readers + [taker]).forEach { $0.stop() } }
                for child in readers + [taker] { #expect(child.readLine() == "waiting") }
                #expect(pollUntil { details(name)["waitingReaders"] == "3" && details(name)["waiters"] == "4" },
                        "three readers registered, four processes parked: \(details(name))")
                try variable.blockingPut(100 + round, timeout: .seconds(5))
                for reader in readers { #expect(reader.readLine(timeout: .seconds(10)) == "read \(100 + round)") }
                #expect(taker.readLine(timeout: .seconds(10)) == "took \(100 + round)")
                for child in readers + [taker] { #expect(child.wait(timeout: .seconds(10)) == .exited(0)) }
                #expect(variable.isEmpty)
                #expect(details(name)["waitingReaders"] == "0")
            }
        }
    }

    @Test func asyncWaitsHonourCancellationAndConsumeNothing() async throws {
        try await onOwnQueue { executor in
            let prefix = TestNames.make("varasync")
            let variable = try SharedVariable<Int>.create(name: prefix)
            defer { variable.close() }
            let taking = Task(executorPreference: executor) { try await variable.take() }
            let reading = Task(executorPreference: executor) { try await variable.read() }
            #expect(await eventually { details(prefix)["waiters"] == "2" && details(prefix)["waitingReaders"] == "1" }, "both tasks parked")
            let start = Clock.monotonicNanoseconds()
            taking.cancel()
            reading.cancel()
            await #expect(throws: InterprocessError.self) { try await taking.value }
            await #expect(throws: InterprocessError.self) { try await reading.value }
            #expect(elapsed(since: start) < promptly)
            #expect(details(prefix)["waitingReaders"] == "0", "the cancelled reader left its slot")
            // Nothing was consumed, and no cancelled reader holds takers back.
            try await variable.put(3)
            #expect(variable.tryTake() == 3)
            // The async forms do wait for a value from another process.
            let putter = try Peer.spawn("var-put", prefix, "11", "10000")
            defer { putter.stop() }
            #expect(try await variable.read(timeout: .seconds(10)) == 11)
            #expect(try await variable.swap(12, timeout: .seconds(10)) == 11)
            #expect(try await variable.modify(timeout: .seconds(10)) { value -> Int in value += 1; return value } == 13)
            #expect(try await variable.take(timeout: .seconds(10)) == 13)
            await #expect(throws: InterprocessError.self) { try await variable.take(timeout: .milliseconds(30)) }
            try await variable.put(1, timeout: .seconds(1))
            await #expect(throws: InterprocessError.self) { try await variable.put(2, timeout: .milliseconds(30)) }
            #expect(variable.tryTake() == 1)
            putter.stop()
            variable.close()
            #expect(TestNames.leftovers(prefix).isEmpty)
        }
    }

    // MARK: Processes killed at each step

    @Test func aPutterKilledAfterClaimingDoesNotWedgeIt() throws {
        try withCleanNames("varkillput") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "variable.put.afterClaim", "var-put", name, "5", "5000")
            defer { child.stop() }
            #expect(child.readLine() == "putting")
            #expect(pollUntil { details(name)["putter"] == "\(child.pid)" })
            #expect(variable.isEmpty, "it died before publishing")
            let start = Clock.monotonicNanoseconds()
            try variable.blockingPut(9, timeout: .seconds(20))
            #expect(elapsed(since: start) < promptly)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try variable.blockingTake(timeout: .seconds(1)) == 9)
            #expect(details(name)["recoveries"] == "1")
        }
    }

    @Test func aPutterKilledAfterPublishingLeavesAWholeValue() throws {
        try withCleanNames("varkillpub") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "variable.put.afterPublish", "var-put", name, "5", "5000")
            defer { child.stop() }
            #expect(child.readLine() == "putting")
            #expect(pollUntil { !variable.isEmpty })
            let start = Clock.monotonicNanoseconds()
            #expect(try variable.blockingTake(timeout: .seconds(20)) == 5)
            #expect(elapsed(since: start) < promptly)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            try variable.blockingPut(6, timeout: .seconds(5))
            #expect(try variable.blockingTake(timeout: .seconds(1)) == 6)
            #expect(details(name)["putter"] == "-")
        }
    }

    @Test func aSwapperKilledAfterTakingLeavesItEmptyAndUsable() throws {
        try withCleanNames("varkillswap") { name in
            let variable = try SharedVariable<Int>.create(name: name, initialValue: 1)
            defer { variable.close() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "variable.exchange.afterTake", "var-swap", name, "2", "5000")
            defer { child.stop() }
            #expect(child.readLine() == "swapping")
            #expect(pollUntil { variable.isEmpty })
            let start = Clock.monotonicNanoseconds()
            try variable.blockingPut(3, timeout: .seconds(20))
            #expect(elapsed(since: start) < promptly)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try variable.blockingSwap(4, timeout: .seconds(1)) == 3)
            #expect(try variable.blockingTake(timeout: .seconds(1)) == 4)
        }
    }

    @Test func aReaderKilledWhileWaitingDoesNotHoldTakersBack() throws {
        try withCleanNames("varkillread") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            let reader = try Peer.spawn("var-read", name, "60000")
            defer { reader.stop() }
            #expect(reader.readLine() == "waiting")
            #expect(pollUntil { details(name)["waitingReaders"] == "1" })
            reader.kill(signal: SIGKILL) // not reaped yet: a zombie, as a crashed peer looks for a while
            try variable.blockingPut(3, timeout: .seconds(5))
            let start = Clock.monotonicNanoseconds()
            #expect(try variable.blockingTake(timeout: .seconds(20)) == 3)
            let took = elapsed(since: start)
            #expect(took < promptly, "the dead reader held the taker back \(took) s")
            #expect(details(name)["waitingReaders"] == "0")
            // Reaped: a try-take clears a dead reader's slot at once.
            let second = try Peer.spawn("var-read", name, "60000")
            #expect(second.readLine() == "waiting")
            #expect(pollUntil { details(name)["waitingReaders"] == "1" })
            second.stop()
            try variable.blockingPut(4, timeout: .seconds(5))
            #expect(variable.tryTake() == 4)
        }
    }

    @Test func peersKilledAtRandomMomentsNeverWedgeIt() throws {
        try withCleanNames("varchaos") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            var generator = SystemRandomNumberGenerator()
            var survivorTimeouts = 0
            for _ in 0..<12 {
                let victim = try Peer.spawn("var-churn", name, "100000000")
                let survivor = try Peer.spawn("var-churn", name, "3000")
                #expect(victim.readLine() == "ready")
                #expect(survivor.readLine() == "ready")
                Clock.sleep(nanoseconds: UInt64.random(in: 0...5_000_000, using: &generator))
                victim.kill(signal: SIGKILL)
                let line = survivor.readLine(timeout: .seconds(60))
                #expect(line?.hasPrefix("done ") == true, "survivor said \(String(describing: line))")
                survivorTimeouts += Int(line?.dropFirst(5) ?? "") ?? 0
                #expect(survivor.wait(timeout: .seconds(30)) == .exited(0))
                victim.stop()
                survivor.stop()
                // Whatever the victim left — a value, a claimed putter word, a reader slot — the
                // variable works for the next round.
                if !variable.isEmpty { _ = try variable.blockingTake(timeout: .seconds(2)) }
                try variable.blockingPut(-1, timeout: .seconds(2))
                #expect(try variable.blockingRead(timeout: .seconds(2)) == -1)
                #expect(try variable.blockingTake(timeout: .seconds(2)) == -1)
            }
            #expect(details(name)["putter"] == "-")
            print("variable chaos: survivors saw \(survivorTimeouts) timeouts, \(details(name)["recoveries"] ?? "?") recoveries")
        }
    }
}
