#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// Where a service's `state_size` is in its file, and where its reply slots end (a service
/// created with these parameters: header 512, queue 512 + slots of 32 + 16 + request bytes rounded
/// up to 64, reply slots of 64 + response bytes rounded up to 64).
private enum ServiceFileLayout {
    static let stateSize = 4096 + 24
    static func slotsEnd(capacity: Int, maxRequestSize: Int, maxResponseSize: Int) -> UInt64 {
        let queueStride = (32 + 16 + maxRequestSize + 63) / 64 * 64
        let replyStride = (64 + maxResponseSize + 63) / 64 * 64
        return UInt64(512 + 512 + capacity * queueStride + capacity * replyStride)
    }
}

@Suite("Service readiness descriptors", .serialized, .timeLimit(.minutes(5)))
struct ServiceReadinessTests {
    /// A client process's request makes the server's descriptor readable; after the
    /// acknowledgement, `tryServe` answers it and the client gets its reply.
    @Test func becomesReadableWhenAClientProcessRequests() throws {
        try withCleanNames("svcrdy-child") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            #expect(try service.tryServe { "echo " + $0 } == 0)
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let client = try Peer.spawn("svc-request", name, "hello", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(try service.tryServe { "echo " + $0 } == 1)
            #expect(client.readLine(timeout: .seconds(30)) == "reply echo hello")
            #expect(client.wait(timeout: .seconds(20)) == .exited(0))
            #expect(try service.tryServe { "echo " + $0 } == 0)
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 1)
        }
    }

    /// The steps of the protocol in the order that matters: a request queued while the descriptor
    /// is signalled and not yet acknowledged makes no second wake-up and is still answered after
    /// the acknowledgement; a handler that throws refuses its request; closing the service wakes
    /// the descriptor, and `tryServe` then answers what is left and throws `closed`.
    @Test func theProtocolLeavesNoRequestUnannouncedAndCloseWakes() throws {
        try withCleanNames("svcrdy-protocol") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            let again = #expect(throws: InterprocessError.self) { _ = try service.readinessDescriptor() }
            #expect(again?.code == .alreadyExists)
            #expect(readinessFiles(name, kind: "srvready").count == 1)
            let first = try Peer.spawn("svc-request", name, "one", "60000")
            defer { first.stop() }
            #expect(first.readLine() == "requesting")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            let second = try Peer.spawn("svc-request", name, "refuse two", "60000")
            defer { second.stop() }
            #expect(second.readLine() == "requesting")
            // Both requests published (the counter goes up after the publish and the look at the armed bits).
            #expect(pollUntil(timeout: .seconds(20)) { details(name)["requests"] == "2" })
            #expect(service.queued == 2)
            #expect(readiness.wakeUps == 1, "the first request took the armed bit; the second found none")
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let answered = try service.tryServe { text in
                if text.hasPrefix("refuse") { throw InterprocessError(.invalidArgument, detail: "not \(text)") }
                return "echo " + text
            }
            #expect(answered == 2)
            #expect(first.readLine(timeout: .seconds(30)) == "reply echo one")
            #expect(second.readLine(timeout: .seconds(30)) == "requestFailed")
            // Closing wakes the descriptor; a request queued before the close is still answered.
            readiness.acknowledge()
            let third = try Peer.spawn("svc-request", name, "three", "60000")
            defer { third.stop() }
            #expect(third.readLine() == "requesting")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            service.close()
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            readiness.acknowledge()
            var served: [String] = []
            let end = #expect(throws: InterprocessError.self) { try service.tryServe { served.append($0); return "echo " + $0 } }
            #expect(end?.code == .closed)
            #expect(served == ["three"])
            #expect(third.readLine(timeout: .seconds(30)) == "reply echo three")
            readiness.close()
            #expect(readinessFiles(name, kind: "srvready").isEmpty)
        }
    }

    /// A server killed with its descriptor armed: `ipc inspect` shows its entry as ended, and the
    /// first request that finds the socket gone (from a client that opened the service before, so
    /// that no opening sweeps it first) sweeps it: bit cleared, entry freed, socket file removed.
    /// The request is still answered by another server.
    @Test func aServerKilledWithItsDescriptorArmedIsSwept() throws {
        try withCleanNames("svcrdy-killed") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let holder = try Peer.spawn("svc-ready-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "registered")
            let lines = inspectLines(name, "participant.", pid: holder.pid)
            #expect(lines == ["pid \(holder.pid) alive, server, 2 handles, readiness descriptor (armed, 0 wake-ups)"], "\(lines)")
            #expect(readinessFiles(name, kind: "srvready").count == 1)
            let client = try Peer.spawn("svc-clients", name, "k", "1", "1")
            defer { client.stop() }
            #expect(client.readLine() == "ready")
            holder.stop()
            let ended = inspectLines(name, "participant.", pid: holder.pid)
            #expect(ended.count == 1 && ended.first?.contains("ended, server, 2 handles, readiness descriptor (armed") == true, "\(ended)")
            client.tell()
            #expect(pollUntil(timeout: .seconds(20)) { inspectLines(name, "participant.", pid: holder.pid).isEmpty })
            #expect(readinessFiles(name, kind: "srvready").isEmpty)
            let call = try service.blockingNextCall(timeout: .seconds(20))
            #expect(call.request == "k.0.0")
            // The client waits for its reply: listed alive, as a client (recorded after it published).
            #expect(pollUntil(timeout: .seconds(20)) {
                inspectLines(name, "participant.", pid: client.pid) == ["pid \(client.pid) alive, client, 1 handle"]
            })
            #expect(try call.reply("echo k.0.0"))
            #expect(client.readLine(timeout: .seconds(30)) == "ok 1")
        }
    }

    /// A server killed at each step of registering its descriptor (claiming its entry, numbering,
    /// binding, arming) leaves an entry of an ended process and maybe a socket file; the next
    /// process to open the service sweeps both, and descriptors work as before.
    @Test(arguments: ["channel.participants.claimed", "channel.readiness.numbered", "channel.readiness.bound", "channel.readiness.armed"])
    func aServerKilledAtEachRegistrationStepIsSwept(_ point: String) throws {
        try withCleanNames("svcrdy-crash") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let doomed = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "svc-ready-hold", name)
            defer { doomed.stop() }
            #expect(doomed.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            let left = inspectLines(name, "participant.", pid: doomed.pid)
            #expect(left.count == 1 && left.first?.contains("ended") == true, "\(left)")
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            // The client's opening (before it says "requesting") sweeps the dead entry.
            let client = try Peer.spawn("svc-request", name, "after \(point)", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(inspectLines(name, "participant.", pid: doomed.pid).isEmpty)
            #expect(readinessFiles(name, kind: "srvready").count == 1, "only ours is left")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try service.tryServe { "echo " + $0 } == 1)
            #expect(client.readLine(timeout: .seconds(30)) == "reply echo after \(point)")
            let next = try Peer.spawn("svc-request", name, "next", "60000")
            defer { next.stop() }
            #expect(next.readLine() == "requesting")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try service.tryServe { "echo " + $0 } == 1)
            #expect(next.readLine(timeout: .seconds(30)) == "reply echo next")
        }
    }

    /// A server killed after taking a request from the queue and before marking it as its own
    /// leaves it held by a dead process (the queue's orphan). A server that waits only on its
    /// descriptor never parks, so nobody announces it again: its loop's timer (`tryServe` with
    /// nothing readable) finds and answers it.
    @Test func aDescriptorServerOnATimerRedeliversARequestADeadServerHeld() throws {
        try withCleanNames("svcrdy-orphan") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            let doomed = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.receive.afterClaim", "svc-serve", name)
            defer { doomed.stop() }
            #expect(doomed.readLine() == "ready")
            let client = try Peer.spawn("svc-request", name, "held", "120000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(doomed.wait(timeout: .seconds(60)) == .signaled(SIGKILL))
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            var served: [String] = []
            let deadline = Deadline(after: .seconds(30))
            while served.isEmpty, !deadline.hasPassed {
                if isReadable(readiness.fileDescriptor, within: 100) { readiness.acknowledge() }
                try service.tryServe { served.append($0); return "echo " + $0 }
            }
            #expect(served == ["held"])
            #expect(client.readLine(timeout: .seconds(30)) == "reply echo held")
            #expect(Int(details(name)["inFlight"] ?? "") == 0)
        }
    }

    /// A scribbled table never crashes anyone: entries whose owner is no live token are shown as
    /// ended; bits of `descriptors_armed` naming garbage entries cost a request nothing (no
    /// datagram goes anywhere: a path is built only from the service's own name and a number of a
    /// live owner's entry); a process that opens the service sweeps them; requests and the
    /// descriptor go on working.
    @Test func aScribbledTableIsSweptNotTrusted() throws {
        try withCleanNames("svcrdy-scribble") { name in
            let service = try Service<String, String>.create(name: name, capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            defer { service.detach() }
            // A client that opened the service before the scribble (so that its opening sweeps nothing).
            let client = try Peer.spawn("svc-clients", name, "s", "1", "1")
            defer { client.stop() }
            #expect(client.readLine() == "ready")
            // The table follows the reply slots; entries 0 and 1 are ours and the client's.
            let table = 4096 + Int(ServiceFileLayout.slotsEnd(capacity: 2, maxRequestSize: 32, maxResponseSize: 32))
            for entry in 2..<64 {
                let bytes = [UInt8](repeating: entry % 3 == 0 ? 0xFF : 0xA5, count: 64)
                scribble(name, at: table + entry * 64, bytes)
            }
            scribble(name, at: 4096 + 904, [UInt8](repeating: 0xFF, count: 8))
            let described = details(name)
            #expect(described["participants"] == "64", "\(described)")
            #expect(described.filter { $0.key.hasPrefix("participant.") && $0.value.contains(" ended") }.count == 62, "\(described)")
            client.tell()
            let call = try service.blockingNextCall(timeout: .seconds(20))
            let request = call.request
            #expect(request == "s.0.0")
            #expect(try call.reply("echo " + request))
            #expect(client.readLine(timeout: .seconds(30)) == "ok 1")
            // A process that opens the service sweeps every entry without a live owner.
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            let joiner = try Peer.spawn("svc-request", name, "joined", "60000")
            defer { joiner.stop() }
            #expect(joiner.readLine() == "requesting")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try service.tryServe { "echo " + $0 } == 1)
            #expect(joiner.readLine(timeout: .seconds(30)) == "reply echo joined")
            #expect(joiner.wait(timeout: .seconds(20)) == .exited(0))
            // The garbage is gone; the client and the joiner let go of their entries when they
            // ended: only this process is left.
            let after = details(name)
            #expect(after["participants"] == "1" && after["servers"] == "1" && after["clients"] == "0", "\(after)")
            #expect(inspectLines(name, "participant.", pid: getpid()) == ["pid \(getpid()) alive, server, 2 handles, readiness descriptor (armed, 1 wake-ups)"])
        }
    }

    /// A service whose `state_size` ends with its reply slots (one created before the table
    /// existed) opens and works, with no participants and no readiness descriptor
    /// (`incompatible`); a size that is neither is `corrupt`.
    @Test func aServiceWithoutTheTableWorksWithoutDescriptors() throws {
        try withCleanNames("svcrdy-old") { name in
            let creator = try Service<String, String>.create(name: name, capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            defer { creator.detach() }
            let slotsEnd = ServiceFileLayout.slotsEnd(capacity: 2, maxRequestSize: 32, maxResponseSize: 32)
            #expect(Int(details(name)["participants"] ?? "") == 1)
            scribble(name, at: ServiceFileLayout.stateSize, withUnsafeBytes(of: slotsEnd.littleEndian) { Array($0) })
            let old = try Service<String, String>.open(name: name)
            defer { old.detach() }
            let refused = #expect(throws: InterprocessError.self) { _ = try old.readinessDescriptor() }
            #expect(refused?.code == .incompatible)
            #expect(details(name)["participants"] == nil)
            let client = try Peer.spawn("svc-request", name, "still works", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            let call = try old.blockingNextCall(timeout: .seconds(20))
            let request = call.request
            #expect(try call.reply("echo " + request))
            #expect(client.readLine(timeout: .seconds(30)) == "reply echo still works")
            scribble(name, at: ServiceFileLayout.stateSize, withUnsafeBytes(of: (slotsEnd + 8).littleEndian) { Array($0) })
            let broken = #expect(throws: InterprocessError.self) { _ = try Service<String, String>.open(name: name) }
            #expect(broken?.code == .corrupt)
            // Put the size back, so that the creator's handle lets go of its entry as usual.
            scribble(name, at: ServiceFileLayout.stateSize, withUnsafeBytes(of: (slotsEnd + 64 * 64).littleEndian) { Array($0) })
            #expect(Int(details(name)["participants"] ?? "") == 1)
        }
    }

    /// Client processes send thousands of requests as fast as they can while the test serves them
    /// in an event loop on the descriptor (poll, acknowledge, `tryServe`): every client checks
    /// that each reply is its own, every request is answered once, and the loop never waits out
    /// its bound (no lost wake-up).
    ///
    /// Why no wake-up can be lost: the server sets its bit in the request queue's
    /// `descriptors_armed` (`acknowledge()`, a sequentially consistent read-modify-write) *before*
    /// `tryServe` loads the queue's slots; a client stores its request's slot sequence (publishes
    /// it, sequentially consistent) *before* it loads `descriptors_armed`. In the single total
    /// order of these operations, either the client's load comes after the server's bit (it takes
    /// the bit and sends a datagram: the descriptor becomes readable), or the server's look at the
    /// queue comes after the publish (`tryServe` takes the request). A request published while the
    /// descriptor is signalled and not yet acknowledged finds no bit, and is taken by the
    /// `tryServe` that follows the acknowledgement.
    @Test func crossProcessStressLosesNoWakeUp() throws {
        try withCleanNames("svcrdy-stress") { name in
            let clients = 4, tasks = 2, perTask = 1500
            let total = clients * tasks * perTask
            let service = try Service<String, String>.create(name: name, capacity: 16)
            defer { service.detach() }
            let readiness = try service.readinessDescriptor()
            defer { readiness.close() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for id in 0..<clients { children.append(try Peer.spawn("svc-clients", name, "c\(id)", "\(tasks)", "\(perTask)")) }
            for child in children { #expect(child.readLine() == "ready") }
            for child in children { child.tell() }
            var answered = 0
            var stalls = 0
            var seen = Set<String>()
            var duplicates = 0
            while answered < total {
                if !isReadable(readiness.fileDescriptor, within: 30_000) {
                    stalls += 1
                    break
                }
                readiness.acknowledge()
                answered += try service.tryServe { text in
                    if !seen.insert(text).inserted { duplicates += 1 }
                    return "echo " + text
                }
            }
            #expect(stalls == 0, "the loop waited 30 s for a wake-up with \(total - answered) requests to come")
            #expect(answered == total && seen.count == total && duplicates == 0)
            for child in children { #expect(child.readLine(timeout: .seconds(60)) == "ok \(tasks * perTask)") }
            #expect(try service.tryServe { "echo " + $0 } == 0)
            #expect(readiness.wakeUps >= 1)
            let described = details(name)
            #expect(Int(described["requests"] ?? "") == total && Int(described["replies"] ?? "") == total, "\(described)")
            #expect(Int(described["inFlight"] ?? "") == 0)
            readiness.close()
            #expect(readinessFiles(name, kind: "srvready").isEmpty)
        }
    }
}

@Suite("ipc ls and inspect: service participants", .serialized, .timeLimit(.minutes(5)))
struct ServiceParticipantsToolTests {
    /// `ipc inspect` lists each process with the service open (server, client, handles, readiness
    /// descriptor, alive or ended), `ipc ls` counts the live servers and clients, and a process
    /// that ended is shown as ended until the next process to open the service sweeps it — all run
    /// as a user would, from a shell.
    @Test func lsAndInspectShowServersClientsAndDescriptors() throws {
        try withCleanNames("svcrdy-tool") { name in
            let service = try Service<String, String>.create(name: name, capacity: 4)
            defer { service.detach() }
            #expect(inspectLines(name, "participant.", pid: getpid()) == ["pid \(getpid()) alive, no requests yet, 1 handle"])
            let server = try Peer.spawn("svc-serve", name)
            defer { server.stop() }
            #expect(server.readLine() == "ready")
            #expect(pollUntil(timeout: .seconds(20)) {
                inspectLines(name, "participant.", pid: server.pid) == ["pid \(server.pid) alive, server, 1 handle"]
            })
            // A client killed right after it collected its reply (before it let go of its
            // handle): its entry stays, ended.
            let client = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "service.request.afterFree", "svc-request", name, "hi", "60000")
            defer { client.stop() }
            #expect(client.readLine() == "requesting")
            #expect(client.wait(timeout: .seconds(30)) == .signaled(SIGKILL))
            var result = try shell("\"$IPC\" inspect \(name)")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output.contains("pid \(getpid()) alive, no requests yet, 1 handle"), "\(result.output)")
            #expect(result.output.contains("pid \(server.pid) alive, server, 1 handle"), "\(result.output)")
            #expect(result.output.contains("pid \(client.pid) ended, client, 1 handle"), "\(result.output)")
            #expect(result.output.contains("servers: 1") && result.output.contains("clients: 0") && result.output.contains("participants: 3"), "\(result.output)")
            result = try shell("\"$IPC\" ls | grep -F \(name)")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output.contains("4 slots, 0 queued, 0 in flight, 1 server, 0 clients (1 ended)"), "\(result.output)")

            // A server with a readiness descriptor opens the service: its opening sweeps the
            // ended client's entry.
            let holder = try Peer.spawn("svc-ready-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "registered")
            result = try shell("\"$IPC\" inspect \(name)")
            #expect(result.output.contains("pid \(holder.pid) alive, server, 2 handles, readiness descriptor (armed, 0 wake-ups)"), "\(result.output)")
            #expect(!result.output.contains("pid \(client.pid) "), "\(result.output)")
            #expect(result.output.contains("servers: 2") && result.output.contains("participants: 3"), "\(result.output)")
            result = try shell("\"$IPC\" ls | grep -F \(name)")
            #expect(result.output.contains("4 slots, 0 queued, 0 in flight, 2 servers, 0 clients") && !result.output.contains("ended"), "\(result.output)")

            // A user's `ipc call` is a client while it waits (its entry goes when it exits).
            result = try shell("\"$IPC\" call \(name) again --timeout 30")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output.contains("echo again"), "\(result.output)")
            result = try ipc("inspect", name, "--json")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output.contains("\"participants\" : \"3\"") || result.output.contains("\"participants\": \"3\""), "\(result.output)")

            // The holder is killed with its descriptor armed: shown ended, then swept by the next
            // process that opens the service.
            holder.stop()
            result = try ipc("inspect", name)
            #expect(result.output.contains("pid \(holder.pid) ended, server, 2 handles, readiness descriptor"), "\(result.output)")
            #expect(readinessFiles(name, kind: "srvready").count == 1)
            result = try shell("\"$IPC\" call \(name) last --timeout 30")
            #expect(result.output.contains("echo last"), "\(result.output)")
            result = try ipc("inspect", name)
            #expect(!result.output.contains("pid \(holder.pid) "), "\(result.output)")
            #expect(readinessFiles(name, kind: "srvready").isEmpty)
            service.close()
            #expect(server.readLine(timeout: .seconds(30)) == "served 3")
        }
    }
}
