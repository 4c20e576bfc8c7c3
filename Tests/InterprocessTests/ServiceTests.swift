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

/// Where a service's parts are in its segment's file (for scribbling).
private struct ServiceFile {
    static let payload = 4096
    static let header = 512
    let capacity: Int
    let maxRequestSize: Int
    let maxResponseSize: Int

    var queueStride: Int { (32 + 16 + maxRequestSize + 63) / 64 * 64 }
    var queueSize: Int { 512 + capacity * queueStride }
    /// The queue slot `index`'s header (sequence, owner, length), and its message (request header first).
    func queueSlot(_ index: Int) -> Int { Self.payload + Self.header + 512 + index * queueStride }
    func queueMessage(_ index: Int) -> Int { queueSlot(index) + 32 }
    var replyStride: Int { (64 + maxResponseSize + 63) / 64 * 64 }
    /// The reply slot `index` (control, server, client, signal, waiting, length).
    func replySlot(_ index: Int) -> Int { Self.payload + Self.header + queueSize + index * replyStride }
}

private func bytes(of value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
private func bytes(of value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

@Suite("Service", .serialized, .timeLimit(.minutes(5)))
struct ServiceTests {
    // MARK: Messages of every kind

    @Test func requestsAndResponsesOfEveryKind() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("svc")
            let text = try Service<String, String>.create(name: name + "-text", capacity: 4, maxRequestSize: 32, maxResponseSize: 64)
            defer { text.detach() }
            #expect(text.capacity == 4 && text.maxRequestSize == 32 && text.maxResponseSize == 64)
            let textServer = Task(executorPreference: executor) { () async throws -> Void in
                try await text.serve { request in
                    if request == "fail" { throw InterprocessError(.invalidArgument, detail: "no thanks") }
                    return "echo " + request
                }
            }
            #expect(try await text.request("héllo", timeout: .seconds(20)) == "echo héllo")
            await #expect(throws: InterprocessError.self) { try await text.request(String(repeating: "x", count: 33)) }
            do throws(InterprocessError) {
                _ = try await text.request("fail", timeout: .seconds(20))
                Issue.record("a refused request returned")
            } catch {
                #expect(error.code == .requestFailed && error.detail.contains("no thanks"), "\(error)")
            }
            #expect(try await text.request("again", timeout: .seconds(20)) == "echo again", "a refusal does not stop the server")
            text.close()
            try await textServer.value
            do throws(InterprocessError) {
                _ = try await text.request("closed")
                Issue.record("a request to a closed service returned")
            } catch {
                #expect(error.code == .closed)
            }

            let numbers = try Service<Int, Int>.create(name: name + "-raw", capacity: 2)
            defer { numbers.detach() }
            #expect(numbers.maxRequestSize == 8 && numbers.maxResponseSize == 8)
            let numberServer = Task(executorPreference: executor) { () async throws -> Void in try await numbers.serve { $0 * 2 } }
            for value in [-5, 0, 21] { #expect(try await numbers.request(value, timeout: .seconds(20)) == value * 2) }
            numbers.close()
            try await numberServer.value

            let jobs = try Service<Job, Job>.create(name: name + "-json", capacity: 2)
            defer { jobs.detach() }
            let jobServer = Task(executorPreference: executor) { () async throws -> Void in
                try await jobs.serve { Job(id: $0.id + 1, path: $0.path.uppercased()) }
            }
            #expect(try await jobs.request(Job(id: 7, path: "/tmp/a"), timeout: .seconds(20)) == Job(id: 8, path: "/TMP/A"))
            jobs.close()
            try await jobServer.value

            let raw = try Service<[UInt8], [UInt8]>.create(name: name + "-bytes", capacity: 2, maxRequestSize: 100, maxResponseSize: 100)
            defer { raw.detach() }
            let rawServer = Task(executorPreference: executor) { () async throws -> Void in try await raw.serve { Array($0.reversed()) } }
            #expect(try await raw.request([1, 2, 3], timeout: .seconds(20)) == [3, 2, 1])
            #expect(try await raw.request([], timeout: .seconds(20)) == [])
            raw.close()
            try await rawServer.value

            let info = try SharedMemory.info(name: name + "-json")
            #expect(info.kind == "service")
            #expect(info.details["capacity"] == "2")
            #expect(info.details["requestFormat"] == "JSON" && info.details["responseFormat"] == "JSON")
            #expect(info.details["requestType"]?.contains("Job") == true)
            #expect(info.details["requests"] == "1" && info.details["replies"] == "1")
            #expect(info.details["inFlight"] == "0" && info.details["closed"] == "yes")
            #expect(details(name + "-raw")["requestFormat"] == "raw values", "BitwiseCopyable and Codable types travel raw")
            #expect(details(name + "-text")["replies"] == "3", "two replies and one refusal")
        }
    }

    @Test func openingAsOtherTypesIsIncompatible() throws {
        try withCleanNames("svctype") { name in
            let service = try Service<Int64, Int64>.create(name: name, capacity: 4)
            defer { service.detach() }
            expectError(.incompatible) { try Service<UInt64, Int64>.open(name: name) }
            expectError(.incompatible) { try Service<Int64, UInt64>.open(name: name) }
            expectError(.incompatible) { try Service<String, String>.open(name: name) }
            expectError(.incompatible) { try Service<Job, Job>.open(name: name) }
            expectError(.incompatible) { try Channel<Int64>.open(name: name) }
            expectError(.alreadyExists) { try Service<Int64, Int64>.create(name: name, capacity: 4) }
            let peer = try Service<Int64, Int64>.open(name: name)
            defer { peer.detach() }
            #expect(peer.capacity == 4)
            let (again, created) = try Service<Int64, Int64>.openOrCreate(name: name, capacity: 99)
            defer { again.detach() }
            #expect(!created && again.capacity == 4)
            let (fresh, made) = try Service<Int64, Int64>.openOrCreate(name: name + "-new", capacity: 3)
            #expect(made && fresh.capacity == 3)
            fresh.detach()
            #expect(!SharedMemory.exists(name: name + "-new"), "the last holder that detaches removes it")
            expectError(.notFound) { try Service<Int64, Int64>.open(name: name + "-none") }
            expectError(.invalidArgument) { try Service<Int64, Int64>.create(name: name + "-zero", capacity: 0) }
            expectError(.invalidArgument) { try Service<String, String>.create(name: name + "-big", capacity: 1, maxRequestSize: 1 << 25) }
            let channel = try Channel<Int64>.create(name: name + "-chan", capacity: 2)
            defer { channel.detach() }
            expectError(.incompatible) { try Service<Int64, Int64>.open(name: name + "-chan") }
        }
    }

    /// A service of an older layout — before the clients' and servers' lines (tag "SRV1"), or
    /// with the WRITING step and a separate length word (tag "SRV2") — is refused as an older
    /// layout, not misread; `ipc inspect` says what it is.
    @Test(arguments: ["SRV1", "SRV2"])
    func aServiceOfAnOlderLayoutIsIncompatible(tag: String) throws {
        try withCleanNames("svcold") { name in
            let service = try Service<Int64, Int64>.create(name: name, capacity: 2)
            defer { service.detach() }
            _ = try Service<Int64, Int64>.open(name: name).detach()
            scribble(name, at: ServiceFile.payload + 20, Array(tag.utf8))
            do {
                _ = try Service<Int64, Int64>.open(name: name)
                Issue.record("an \(tag) service opened")
            } catch let error as InterprocessError {
                #expect(error.code == .incompatible && error.detail.contains("older layout"), "\(error)")
            }
            let info = try SharedMemory.info(name: name)
            #expect(info.kind == "service" && info.details["layout"]?.hasPrefix(tag) == true, "\(info.details)")
            #expect(info.details["requests"] == nil, "its counters are not misread")
        }
    }

    // MARK: Timeouts and cancellation

    /// A server whose task is cancelled takes nothing, not even a request that is queued already
    /// (raw values: the async servers' hot path checks before it takes), shared or exclusive; the
    /// request stays for the next server.
    @Test(arguments: [false, true])
    func aCancelledServerTakesNothing(exclusive: Bool) async throws {
        try await withCleanNamesAsync("svccancelserve") { name in
            let service = try Service<UInt64, UInt64>.create(name: name, capacity: 2)
            defer { service.detach() }
            let client = try Peer.spawn("svc-raw-request", name, "5", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(pollUntil { service.queued == 1 })
            let outcome = await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                try await serveValues(service, exclusive: exclusive)
            }.result
            #expect((outcome.failureValue as? InterprocessError)?.code == .cancelled, "\(outcome)")
            #expect(service.queued == 1)
            let server = try Peer.spawn("svc-raw-serve", name)
            defer { server.stop() }
            #expect(client.readLine(timeout: .seconds(30)) == "reply 1005")
        }
    }

    @Test func aRequestNobodyServesTimesOutAndItsStaleMessageReachesNobody() throws {
        try withCleanNames("svctimeout") { name in
            let service = try Service<String, String>.create(name: name, capacity: 1)
            defer { service.detach() }
            let start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try service.blockingRequest("a", timeout: .milliseconds(100)) }
            let took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            #expect(detail(name, "inFlight") == 0, "the slot was given up")
            #expect(service.queued == 1, "its message stays in the queue, stale")
            let server = try Peer.spawn("svc-serve", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            #expect(try service.blockingRequest("b", timeout: .seconds(30)) == "echo b", "the reply of the later request, not the stale one")
            #expect(detail(name, "staleRequests") == 1)
            service.close()
            #expect(server.readLine(timeout: .seconds(30)) == "served 1")
            #expect(detail(name, "inFlight") == 0)
        }
    }

    @Test func aCancelledRequestNeitherHangsNorDeliversItsLateReply() async throws {
        try await onOwnQueue { executor in
            let name = TestNames.make("svccancel")
            let service = try Service<String, String>.create(name: name, capacity: 1)
            defer { service.detach() }
            // Cancelled while queued.
            let queued = Task(executorPreference: executor) { () async throws -> String in try await service.request("q", timeout: .seconds(60)) }
            #expect(await eventually { service.queued == 1 })
            var start = Clock.monotonicNanoseconds()
            queued.cancel()
            var outcome = await queued.result
            #expect(elapsed(since: start) < promptly)
            #expect(((outcome.failureValue) as? InterprocessError)?.code == .cancelled, "\(outcome)")
            #expect(detail(name, "inFlight") == 0)
            // Cancelled while a server handles it: the late reply goes nowhere.
            let served = Task(executorPreference: executor) { () async throws -> String in try await service.request("x", timeout: .seconds(60)) }
            let call = try await service.nextCall(timeout: .seconds(20))
            #expect(call.request == "x", "the message of the request cancelled while queued was passed over")
            start = Clock.monotonicNanoseconds()
            served.cancel()
            outcome = await served.result
            #expect(elapsed(since: start) < promptly)
            #expect(((outcome.failureValue) as? InterprocessError)?.code == .cancelled, "\(outcome)")
            #expect(try call.reply("late x") == false, "the caller is gone")
            #expect(detail(name, "discardedReplies") == 1)
            #expect(detail(name, "staleRequests") == 1, "the message of the request cancelled while queued")
            // The slot serves the next request, which gets its own reply.
            let next = Task(executorPreference: executor) { () async throws -> String in try await service.request("y", timeout: .seconds(60)) }
            let nextCall = try await service.nextCall(timeout: .seconds(20))
            let text = nextCall.request
            #expect(try nextCall.reply("echo " + text))
            #expect(try await next.value == "echo y")
            #expect(detail(name, "inFlight") == 0)
        }
    }

    /// A client that gives up while its server writes the reply leaves the slot to the server, which
    /// frees it when it is done.
    @Test func aClientThatGivesUpWhileItsServerWritesLeavesTheSlotToTheServer() throws {
        try withCleanNames("svcwriting") { name in
            let service = try Service<String, String>.create(name: name, capacity: 1)
            defer { service.detach() }
            let server = try Peer.spawn(environment: "INTERPROCESS_STOP_POINT", "service.reply.afterWrite", "svc-hold", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            let client = try Peer.spawn("svc-request", name, "w", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(server.readLine() == "got w")
            server.tell()
            #expect(pollUntil { processState(server.pid) == "T" }, "the server stops while it writes")
            // The client gives up (killed: its slot is then the server's to finish, not anyone's to take).
            expectError(.timedOut) { try service.blockingRequest("z", timeout: .milliseconds(200)) }
            client.stop()
            expectError(.timedOut) { try service.blockingRequest("z", timeout: .milliseconds(200)) }
            #expect(detail(name, "inFlight") == 1, "a slot being written by a live server is not taken back")
            server.kill(signal: SIGCONT)
            #expect(server.readLine(timeout: .seconds(30)) == "delivered true")
            // Now the dead client's replied slot is taken back by the next request that needs it.
            let peer = try Peer.spawn("svc-serve", name)
            defer { peer.stop() }
            #expect(peer.readLine() == "ready")
            #expect(try service.blockingRequest("after", timeout: .seconds(30)) == "echo after")
            #expect(detail(name, "reclaimedSlots") == 1)
        }
    }

    /// A client that times out while the server writes marks the slot abandoned; the server frees it.
    @Test func aTimedOutRequestWhileTheServerWritesIsFreedByTheServer() throws {
        try withCleanNames("svcabandon") { name in
            let service = try Service<String, String>.create(name: name, capacity: 1)
            defer { service.detach() }
            let server = try Peer.spawn(environment: "INTERPROCESS_STOP_POINT", "service.reply.afterWrite", "svc-hold", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            let waiting = Mutex<InterprocessError?>(nil)
            let done = Atomic<Bool>(false)
            let thread = ServiceTestThread {
                do throws(InterprocessError) {
                    _ = try service.blockingRequest("v", timeout: .seconds(3))
                } catch {
                    waiting.withLock { $0 = error }
                }
                done.store(true, ordering: .sequentiallyConsistent)
            }
            #expect(server.readLine() == "got v")
            server.tell()
            #expect(pollUntil { processState(server.pid) == "T" })
            #expect(pollUntil(timeout: .seconds(30)) { done.load(ordering: .sequentiallyConsistent) })
            thread.join()
            #expect(waiting.withLock { $0 }?.code == .timedOut)
            #expect(details(name)["abandoned"] == "1")
            server.kill(signal: SIGCONT)
            #expect(server.readLine(timeout: .seconds(30)) == "delivered false")
            #expect(detail(name, "inFlight") == 0, "the server freed the abandoned slot")
            #expect(detail(name, "discardedReplies") == 1)
        }
    }

    // MARK: Many processes

    /// Three client processes (four tasks each) and two server processes: every client gets exactly
    /// its own replies, and every request is handled by exactly one server.
    @Test func manyClientsInSeveralProcessesEachGetTheirOwnReplies() throws {
        try withCleanNames("svcmany") { name in
            let service = try Service<String, String>.create(name: name, capacity: 8)
            defer { service.detach() }
            let servers = [try Peer.spawn("svc-serve", name, "async"), try Peer.spawn("svc-serve", name)]
            defer { for server in servers { server.stop() } }
            let tasks = 4, count = 100
            var clients: [ChildProcess] = []
            defer { for client in clients { client.stop() } }
            for id in 0..<3 { clients.append(try Peer.spawn("svc-clients", name, "c\(id)", "\(tasks)", "\(count)")) }
            for child in servers + clients { #expect(child.readLine() == "ready") }
            for client in clients { client.tell() }
            for client in clients { #expect(client.readLine(timeout: .seconds(240)) == "ok \(tasks * count)") }
            service.close()
            var served = 0
            for server in servers {
                let line = server.readLine(timeout: .seconds(30)) ?? ""
                #expect(line.hasPrefix("served "), "\(line)")
                served += Int(line.dropFirst("served ".count)) ?? 0
            }
            let total = 3 * tasks * count
            #expect(served == total, "each request handled by exactly one server")
            #expect(detail(name, "requests") == total && detail(name, "replies") == total)
            #expect(detail(name, "discardedReplies") == 0 && detail(name, "inFlight") == 0)
        }
    }

    // MARK: Processes that die

    @Test func aClientKilledWithRequestsInFlightLeavesNothingHarmful() throws {
        try withCleanNames("svcclientdies") { name in
            let service = try Service<String, String>.create(name: name, capacity: 3)
            defer { service.detach() }
            let holder = try Peer.spawn("svc-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "ready")
            let client = try Peer.spawn("svc-flood", name, "3")
            defer { client.stop() }
            #expect(client.readLine() == "ready")
            let got = holder.readLine() ?? ""
            #expect(got.hasPrefix("got flood "), "\(got)")
            // All three requests are in: one taken by the holder, two queued (what we can observe;
            // the client's own "sent" counts only queued requests, so it never comes here).
            #expect(pollUntil { service.queued == 2 && detail(name, "inFlight") == 3 })
            client.stop()
            // The server's reply goes into the dead client's slot: harmless.
            holder.tell()
            #expect(holder.readLine(timeout: .seconds(30)) == "delivered true")
            // Every slot is held by the dead client: the next request takes them back (and, with no
            // server yet, times out, leaving a stale message of its own — if it got as far as the
            // queue within its 300 ms: on a busy machine the slots' recovery may take them all).
            expectError(.timedOut) { try service.blockingRequest("reclaim", timeout: .milliseconds(300)) }
            #expect(detail(name, "reclaimedSlots") == 3)
            #expect(detail(name, "inFlight") == 0)
            // Every message queued now is stale: the dead client's two, and the timed-out one's.
            let stale = service.queued
            #expect(stale == 2 || stale == 3, "\(stale) queued")
            let server = try Peer.spawn("svc-serve", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            #expect(try service.blockingRequest("mine", timeout: .seconds(30)) == "echo mine")
            service.close()
            #expect(server.readLine(timeout: .seconds(30)) == "served 1", "the dead client's queued requests were stale")
            #expect(detail(name, "staleRequests") == stale, "\(stale) were queued: \(details(name))")
            #expect(detail(name, "inFlight") == 0)
        }
    }

    @Test func aServerKilledMidRequestGivesItsClientServerDiedAndANewServerTakesOver() throws {
        try withCleanNames("svcserverdies") { name in
            let service = try Service<String, String>.create(name: name, capacity: 2)
            defer { service.detach() }
            let holder = try Peer.spawn("svc-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "ready")
            let client = try Peer.spawn("svc-request", name, "a", "120000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(holder.readLine() == "got a")
            let start = Clock.monotonicNanoseconds()
            holder.stop()
            #expect(client.readLine(timeout: .seconds(60)) == "serverDied")
            #expect(elapsed(since: start) < promptly)
            #expect(detail(name, "serverDeaths") == 1 && detail(name, "inFlight") == 0)
            let server = try Peer.spawn("svc-serve", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            #expect(try service.blockingRequest("b", timeout: .seconds(30)) == "echo b")
        }
    }

    /// A server killed at each step of handling a request: what its client sees, and that the next
    /// server goes on.
    /// The same for a server that holds the exclusive server role (the next server, a shared one,
    /// takes the role over from the dead process); and for raw values (`Service<UInt64, UInt64>`,
    /// whose servers, blocking and async, take a queued request on their hot path: the same steps).
    @Test(arguments: [
        ("service.serve.beforeTake", "reply"),
        ("service.serve.afterTake", "serverDied"),
        ("service.serve.afterRelease", "serverDied"),
        ("service.reply.afterWrite", "serverDied"),
        ("service.reply.afterPublish", "reply"),
    ], [("sync", "text"), ("exclusive", "text"), ("sync", "raw"), ("exclusive", "raw"), ("async", "raw"), ("async-exclusive", "raw")])
    func aServerKilledAtEachStep(_ step: (String, String), _ how: (mode: String, kind: String)) throws {
        let (point, outcome) = step
        let raw = how.kind == "raw"
        let expected = outcome == "reply" ? (raw ? "reply 1001" : "reply echo a") : outcome
        try withCleanNames("svcstep") { name in
            let text = raw ? nil : try Service<String, String>.create(name: name, capacity: 2)
            let values = raw ? try Service<UInt64, UInt64>.create(name: name, capacity: 2) : nil
            defer { text?.detach(); values?.detach() }
            // The request is queued before the doomed server looks (so that a raw server takes it
            // on its fast path, in one call).
            let client = try Peer.spawn(raw ? "svc-raw-request" : "svc-request", name, raw ? "1" : "a", "120000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(pollUntil { (text?.queued ?? values?.queued) == 1 })
            let serve = raw ? "svc-raw-serve" : "svc-serve"
            let doomed = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, serve, name, how.mode)
            defer { doomed.stop() }
            #expect(doomed.wait(timeout: .seconds(60)) == .signaled(SIGKILL))
            // The next server (killed before the take, the dead one left the request to it).
            let server = try Peer.spawn(serve, name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            #expect(client.readLine(timeout: .seconds(60)) == expected)
            if let values {
                #expect(try values.blockingRequest(2, timeout: .seconds(30)) == 1002)
            } else if let text {
                #expect(try text.blockingRequest("b", timeout: .seconds(30)) == "echo b")
            }
            // A server killed after the take and before it released the queue slot left the
            // message to be redelivered: the next server passes over it (its request was marked as
            // the dead server's). (The queue finds the orphan, or the exclusive role's dead holder,
            // within about 50 ms, while a server waits.)
            let stale = point == "service.serve.afterTake" ? 1 : 0
            #expect(pollUntil { detail(name, "staleRequests") == stale })
            #expect(detail(name, "inFlight") == 0)
        }
    }

    /// One process holds the server role: it answers every request; a second holder is refused
    /// (`wouldBlock`) and a shared server finds nothing while the role is held; once the role is
    /// given back, shared servers answer again.
    @Test func anExclusiveServerAnswersAloneUntilItGivesTheRoleBack() throws {
        try withCleanNames("svcexcl") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let server = try Peer.spawn("svc-serve", name, "exclusive")
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            expectError(.wouldBlock) { _ = try service.exclusiveServer() }
            for text in ["a", "b", "c"] {
                #expect(try service.blockingRequest(text, timeout: .seconds(30)) == "echo " + text)
            }
            // A request this process queues is not taken by its shared server while the role is held.
            let client = try Peer.spawn("svc-request", name, "d", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(client.readLine(timeout: .seconds(30)) == "reply echo d")
            if let call = try service.tryNextCall() {
                Issue.record("a shared server took \(call.request) while the role was held")
                _ = call.refuse("taken by mistake")
            }
            service.close()
            #expect(server.readLine(timeout: .seconds(30)) == "served 4")
            #expect(server.wait(timeout: .seconds(30)) == .exited(0))
            // Given back (the server ended): this process takes it now.
            var mine = try service.exclusiveServer()
            do {
                if let call = try mine.tryNextCall() { _ = call.refuse("unexpected") }
                Issue.record("a closed and drained service had a call")
            } catch let error as InterprocessError {
                #expect(error.code == .closed, "\(error)")
            }
        }
    }

    /// A client killed at each step of a request leaves a slot that is taken back; for strings,
    /// and for raw values (whose request is sent in one call, and whose reply is looked for before
    /// the general wait: the same steps), served by a shared and by an exclusive server.
    @Test(arguments: ["text", "raw", "raw exclusive"])
    func aClientKilledWhileTakingASlotOrQueueingLeavesASlotThatIsTakenBack(kind: String) throws {
        for point in ["service.request.afterSlot", "service.request.afterSend", "service.request.afterReply", "service.request.afterFree"] {
            try withCleanNames("svcclientstep") { name in
                let raw = kind != "text"
                let text = raw ? nil : try Service<String, String>.create(name: name, capacity: 1)
                let values = raw ? try Service<UInt64, UInt64>.create(name: name, capacity: 1) : nil
                defer { text?.detach(); values?.detach() }
                let server = try Peer.spawn(raw ? "svc-raw-serve" : "svc-serve", name, kind == "raw exclusive" ? "exclusive" : "sync")
                defer { server.stop() }
                #expect(server.readLine() == "ready")
                let doomed = try Peer.spawn(
                    environment: "INTERPROCESS_CRASH_POINT", point, raw ? "svc-raw-request" : "svc-request", name, raw ? "7" : "lost", "60000")
                defer { doomed.stop() }
                #expect(doomed.wait(timeout: .seconds(60)) == .signaled(SIGKILL))
                if let values {
                    #expect(try values.blockingRequest(8, timeout: .seconds(30)) == 1008, "\(point)")
                } else if let text {
                    #expect(try text.blockingRequest("next", timeout: .seconds(30)) == "echo next", "\(point)")
                }
                #expect(pollUntil { detail(name, "inFlight") == 0 }, "\(point): \(details(name))")
            }
        }
    }

    /// Servers and clients SIGKILLed at random moments (when the service has made some progress),
    /// and replaced: the survivors finish, every reply a client got was its own, a client whose
    /// server died got `serverDied`, and afterwards every slot is free again.
    @Test func serversAndClientsKilledAtRandomMoments() throws {
        try withCleanNames("svckill") { name in
            let capacity = 6
            let service = try Service<String, String>.create(name: name, capacity: capacity)
            defer { service.detach() }
            var generator = SystemRandomNumberGenerator()
            var servers: [ChildProcess] = []
            var clients: [ChildProcess] = []
            var finished: [ChildProcess] = []
            defer { for child in servers + clients + finished { child.stop() } }
            var nextID = 0
            func startServer() throws {
                let child = try Peer.spawn("svc-serve", name, nextID % 2 == 0 ? "async" : "blocking")
                nextID += 1
                #expect(child.readLine() == "ready")
                servers.append(child)
            }
            func startClient() throws {
                let child = try Peer.spawn("svc-clients", name, "k\(nextID)", "2", "0", "tolerant")
                nextID += 1
                #expect(child.readLine() == "ready")
                child.tell()
                clients.append(child)
            }
            for _ in 0..<2 { try startServer() }
            for _ in 0..<2 { try startClient() }
            for _ in 0..<8 {
                // Wait for progress (state we can observe), then kill someone.
                let before = detail(name, "replies") ?? 0
                #expect(pollUntil(timeout: .seconds(60)) { (detail(name, "replies") ?? 0) >= before + 15 })
                if Bool.random(using: &generator) {
                    let victim = servers.remove(at: Int.random(in: 0..<servers.count, using: &generator))
                    victim.kill(signal: SIGKILL)
                    finished.append(victim)
                    try startServer()
                } else {
                    let victim = clients.remove(at: Int.random(in: 0..<clients.count, using: &generator))
                    victim.kill(signal: SIGKILL)
                    finished.append(victim)
                    try startClient()
                }
            }
            for client in clients { client.tell("stop") }
            for client in clients {
                let line = client.readLine(timeout: .seconds(120)) ?? ""
                #expect(line.hasPrefix("ok "), "\(line)")
                let numbers = line.split(separator: " ").compactMap { Int($0) }
                #expect(numbers.count == 3 && numbers[0] + numbers[1] == numbers[2], "each request answered or its server died: \(line)")
            }
            // With no server, every slot is needed at once: those of dead clients are taken back,
            // and the requests, unserved, time out and free their slots.
            for server in servers { server.stop() }
            let outcomes = Outcomes()
            let threads = (0..<capacity).map { index in
                ServiceTestThread {
                    let outcome: String
                    do throws(InterprocessError) {
                        outcome = try service.blockingRequest("last \(index)", timeout: .milliseconds(500))
                    } catch {
                        outcome = "\(error.code)"
                    }
                    outcomes.list.withLock { $0.append(outcome) }
                }
            }
            for thread in threads { thread.join() }
            #expect(outcomes.list.withLock { $0 } == Array(repeating: "timedOut", count: capacity))
            #expect(detail(name, "inFlight") == 0)
            servers = []
            try startServer()
            #expect(try service.blockingRequest("after", timeout: .seconds(30)) == "echo after")
            service.close()
            for server in servers { #expect(server.readLine(timeout: .seconds(30))?.hasPrefix("served ") == true) }
        }
    }

    // MARK: Never trusting a peer

    @Test func aScribbledStateIsCorruptNotACrash() throws {
        try withCleanNames("svcscribble") { name in
            let file = ServiceFile(capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            // A queue message naming a reply slot that does not exist: dropped, and the server goes on.
            let index = try Service<String, String>.create(name: name + "-index", capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            defer { index.detach() }
            expectError(.timedOut) { try index.blockingRequest("a", timeout: .milliseconds(20)) }
            scribble(name + "-index", at: file.queueMessage(0), bytes(of: UInt32(9999)))
            expectError(.corrupt) { _ = try index.tryNextCall() }
            #expect(index.queued == 0)
            expectError(.timedOut) { try index.blockingRequest("b", timeout: .milliseconds(20)) }
            // A queue message shorter than its header.
            scribble(name + "-index", at: file.queueSlot(1) + 16, bytes(of: UInt32(8)))
            expectError(.corrupt) { _ = try index.tryNextCall() }
            // A reply slot in no phase of the protocol.
            let phase = try Service<String, String>.create(name: name + "-phase", capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            defer { phase.detach() }
            scribble(name + "-phase", at: file.replySlot(0), bytes(of: UInt64(9)))
            expectError(.corrupt) { try phase.blockingRequest("c", timeout: .seconds(5)) }
            // A client word that is not a process token.
            let owner = try Service<String, String>.create(name: name + "-owner", capacity: 1, maxRequestSize: 32, maxResponseSize: 32)
            defer { owner.detach() }
            scribble(name + "-owner", at: ServiceFile(capacity: 1, maxRequestSize: 32, maxResponseSize: 32).replySlot(0) + 16, bytes(of: UInt64(5)))
            expectError(.corrupt) { try owner.blockingRequest("d", timeout: .seconds(5)) }
            // A damaged header or queue: refused when opened.
            let header = try Service<String, String>.create(name: name + "-header", capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            defer { header.detach() }
            _ = try Service<String, String>.open(name: name + "-header").detach()
            scribble(name + "-header", at: ServiceFile.payload, bytes(of: UInt32(0)))
            expectError(.corrupt) { try Service<String, String>.open(name: name + "-header") }
            scribble(name + "-header", at: ServiceFile.payload, bytes(of: UInt32(70_000)))
            expectError(.corrupt) { try Service<String, String>.open(name: name + "-header") }
            scribble(name + "-header", at: ServiceFile.payload, bytes(of: UInt32(2)))
            _ = try Service<String, String>.open(name: name + "-header").detach()
            scribble(name + "-header", at: ServiceFile.payload + ServiceFile.header, bytes(of: UInt32(3)))
            expectError(.corrupt) { try Service<String, String>.open(name: name + "-header") }
        }
    }

    /// Raw values skip the codec on both sides (blocking forms here; the async ones above): still
    /// checked as any message is. A peer that replies with bytes of another length gets its client
    /// `corrupt` (not a value read past the reply), and a request of another length is refused.
    @Test func rawValuesAreCheckedAsAnyMessage() throws {
        try withCleanNames("svcraw") { name in
            let service = try Service<Int64, Int64>.create(name: name, capacity: 2)
            defer { service.detach() }
            let bytes = try Service<[UInt8], [UInt8]>.openAnyType(name: name)
            defer { bytes.detach() }
            let outcome = Mutex<Result<Int64, InterprocessError>?>(nil)
            func request(_ value: Int64) -> ServiceTestThread {
                outcome.withLock { $0 = nil }
                return ServiceTestThread {
                    let result: Result<Int64, InterprocessError>
                    do throws(InterprocessError) { result = .success(try service.blockingRequest(value, timeout: .seconds(30))) } catch { result = .failure(error) }
                    outcome.withLock { $0 = result }
                }
            }
            // Both sides raw, blocking.
            var thread = request(21)
            let call = try service.blockingNextCall(timeout: .seconds(30))
            let asked = call.request
            #expect(asked == 21)
            #expect(try call.reply(asked * 2))
            thread.join()
            #expect(outcome.withLock { $0 } == .success(42))
            // A 3-byte reply to a client of 8-byte values.
            thread = request(5)
            let short = try bytes.blockingNextCall(timeout: .seconds(30))
            #expect(short.request == Array(withUnsafeBytes(of: Int64(5)) { Array($0) }))
            #expect(try short.reply([1, 2, 3]))
            thread.join()
            let shortReply = outcome.withLock { $0 }
            #expect(shortReply?.failureValue?.code == .corrupt, "\(String(describing: shortReply))")
            // A 3-byte request to a server of 8-byte values: refused, and the server goes on.
            let refused = Mutex<InterprocessError?>(nil)
            let sender = ServiceTestThread {
                do throws(InterprocessError) { _ = try bytes.blockingRequest([1, 2, 3], timeout: .seconds(30)) } catch { refused.withLock { $0 = error } }
            }
            #expect(pollUntil { service.queued == 1 })
            if let taken = try service.tryNextCall() {
                Issue.record("a 3-byte request was read as \(taken.request)")
                taken.refuse("test")
            }
            sender.join()
            #expect(refused.withLock { $0 }?.code == .requestFailed)
            #expect(detail(name, "inFlight") == 0)
        }
    }

    /// A reply slot whose length (the second half of its pair, once replied) is longer than a
    /// reply, read by the waiting client: `corrupt`.
    @Test func aScribbledReplyLengthIsCorrupt() throws {
        try withCleanNames("svclength") { name in
            let file = ServiceFile(capacity: 1, maxRequestSize: 32, maxResponseSize: 32)
            let service = try Service<String, String>.create(name: name, capacity: 1, maxRequestSize: 32, maxResponseSize: 32)
            defer { service.detach() }
            let server = try Peer.spawn("svc-serve", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            let client = try Peer.spawn(environment: "INTERPROCESS_STOP_POINT", "service.request.afterReply", "svc-request", name, "l", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(pollUntil { processState(client.pid) == "T" }, "the client stops once its reply is in")
            scribble(name, at: file.replySlot(0) + 8, bytes(of: UInt64(10_000)))
            client.kill(signal: SIGCONT)
            #expect(client.readLine(timeout: .seconds(30)) == "corrupt")
            #expect(detail(name, "inFlight") == 0, "the client freed its slot")
        }
    }
}

extension Result {
    var failureValue: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// A thread that runs `body` and can be joined (a blocking request beside the test's own thread).
private final class ServiceTestThread: @unchecked Sendable {
    // `@unchecked Sendable`: `handle` is written once, before any other thread sees the object.
    private var handle = pthread_t()
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { context in
            let thread = Unmanaged<ServiceTestThread>.fromOpaque(context!).takeRetainedValue()
            thread.body()
            return nil
        }, context)
    }

    func join() { pthread_join(handle, nil) }
}

/// What the threads of a test found.
private final class Outcomes: Sendable {
    let list = Mutex<[String]>([])
}

/// Serves `service` with `value + 1`, through its exclusive server or not, until it ends.
private func serveValues(_ service: Service<UInt64, UInt64>, exclusive: Bool) async throws {
    if exclusive {
        var server = try service.exclusiveServer()
        try await server.serve { $0 + 1 }
    } else {
        try await service.serve { $0 + 1 }
    }
}
