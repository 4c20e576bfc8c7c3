#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

@Suite("Channel readiness descriptors")
struct ChannelReadinessTests {
    @Test func becomesReadableWhenAChildSends() async throws {
        try withCleanNames("rdy-child") { prefix in
            let channel = try Channel<String>.create(name: prefix + "-c", capacity: 8)
            defer { channel.detach() }
            let readiness = try channel.readinessDescriptor()
            defer { readiness.close() }
            #expect(try channel.tryReceive() == nil)
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let sender = try Peer.spawn("chan-send", prefix + "-c", "hello")
            defer { sender.stop() }
            #expect(sender.readLine() == "sending")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try channel.tryReceive() == "hello")
            #expect(try channel.tryReceive() == nil)
            #expect(sender.readLine() == "sent")
            #expect(sender.wait(timeout: .seconds(20)) == .exited(0))
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 1)
        }
    }

    /// The steps of the protocol in the order that matters: a message sent while the descriptor is
    /// signalled and not yet acknowledged makes no second wake-up, and is still taken by the
    /// receives that follow the acknowledgement; after it, the next message wakes it again.
    @Test func theProtocolLeavesNoMessageUnannounced() throws {
        try withCleanNames("rdy-protocol") { prefix in
            let sender = try Channel<String>.create(name: prefix + "-c", capacity: 8)
            defer { sender.detach() }
            let receiver = try Channel<String>.open(name: prefix + "-c")
            defer { receiver.detach() }
            let readiness = try receiver.readinessDescriptor()
            defer { readiness.close() }
            #expect(try sender.trySend("one"))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(try sender.trySend("two"))
            #expect(readiness.wakeUps == 1)
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "one")
            #expect(try receiver.tryReceive() == "two")
            #expect(try receiver.tryReceive() == nil)
            #expect(try sender.trySend("three"))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 2)
            // Closing the channel wakes it too; the receives then drain and end.
            readiness.acknowledge()
            sender.close()
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "three")
            let end = #expect(throws: InterprocessError.self) { _ = try receiver.tryReceive() }
            #expect(end?.code == .closed)
        }
    }

    @Test func oneDescriptorPerProcessAndItsFileGoesWithIt() throws {
        try withCleanNames("rdy-one") { prefix in
                        let channel = try Channel<String>.create(name: prefix + "-c", capacity: 4)
            defer { channel.detach() }
            let readiness = try channel.readinessDescriptor()
            #expect(readinessFiles(prefix + "-c", kind: "ready").count == 1)
            let again = #expect(throws: InterprocessError.self) { _ = try channel.readinessDescriptor() }
            #expect(again?.code == .alreadyExists)
            let line = inspectLines(prefix + "-c", "participant.", pid: getpid())
            #expect(line.count == 1 && line.first?.contains("readiness descriptor (armed") == true, "\(line)")
            readiness.close()
            readiness.close()
            #expect(readinessFiles(prefix + "-c", kind: "ready").isEmpty)
            let second = try channel.readinessDescriptor()
            second.close()
            #expect(readinessFiles(prefix + "-c", kind: "ready").isEmpty)
        }
    }

    /// A receiver killed while registered: its entry shows as ended, and the first send that finds
    /// its socket gone sweeps it (entry freed, socket file removed).
    @Test func aReceiverKilledWhileRegisteredIsSwept() throws {
        try withCleanNames("rdy-killed") { prefix in
                        let channel = try Channel<String>.create(name: prefix + "-c", capacity: 8)
            defer { channel.detach() }
            let child = try Peer.spawn("ready-hold", prefix + "-c")
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            let lines = inspectLines(prefix + "-c", "participant.", pid: child.pid)
            #expect(lines.count == 1 && lines.first?.contains("alive") == true && lines.first?.contains("readiness descriptor (armed") == true, "\(lines)")
            #expect(readinessFiles(prefix + "-c", kind: "ready").count == 1)
            child.stop()
            let ended = inspectLines(prefix + "-c", "participant.", pid: child.pid)
            #expect(ended.count == 1 && ended.first?.contains("ended") == true, "\(ended)")
            #expect(try channel.trySend("to nobody's descriptor"))
            #expect(inspectLines(prefix + "-c", "participant.", pid: child.pid).isEmpty)
            #expect(readinessFiles(prefix + "-c", kind: "ready").isEmpty)
            #expect(try channel.tryReceive() == "to nobody's descriptor")
        }
    }

    /// A process that opens the channel sweeps a dead process's entry that holds a descriptor
    /// which was never armed again (no send would find it).
    @Test func aJoiningProcessSweepsDeadEntries() throws {
        try withCleanNames("rdy-join") { prefix in
                        let channel = try Channel<String>.create(name: prefix + "-c", capacity: 8)
            defer { channel.detach() }
            let child = try Peer.spawn("ready-hold", prefix + "-c")
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            child.stop()
            // A second process joins (the test process is in the table already): it sweeps.
            let sender = try Peer.spawn("ready-send", prefix + "-c", "s", "0")
            defer { sender.stop() }
            #expect(sender.readLine() == "ready")
            #expect(inspectLines(prefix + "-c", "participant.", pid: child.pid).isEmpty)
            #expect(readinessFiles(prefix + "-c", kind: "ready").isEmpty)
            sender.tell()
            #expect(sender.readLine() == "done")
        }
    }

    /// A process killed at each step of registering (and of closing) its descriptor leaves an entry
    /// of an ended process, and maybe a socket file; the next process to join sweeps both, and the
    /// channel's descriptors work as before.
    @Test(arguments: [
        "channel.participants.claimed", "channel.readiness.numbered", "channel.readiness.bound", "channel.readiness.armed",
        "channel.readiness.unlinked",
    ])
    func aProcessKilledAtEachRegistrationStepIsSwept(_ point: String) throws {
        try withCleanNames("rdy-crash") { prefix in
            let name = prefix + "-c"
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "ready-hold", name, "close")
            defer { child.stop() }
            if point == "channel.readiness.unlinked" {
                #expect(child.readLine() == "registered")
                child.tell()
            }
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            let left = inspectLines(name, "participant.", pid: child.pid)
            #expect(left.count == 1 && left.first?.contains("ended") == true, "\(left)")
            let joiner = try Peer.spawn("ready-send", name, "j", "1")
            defer { joiner.stop() }
            #expect(joiner.readLine() == "ready")
            #expect(inspectLines(name, "participant.", pid: child.pid).isEmpty)
            #expect(readinessFiles(name, kind: "ready").isEmpty)
            let readiness = try channel.readinessDescriptor()
            defer { readiness.close() }
            joiner.tell()
            #expect(joiner.readLine() == "done")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try channel.tryReceive() == "j:0")
        }
    }

    /// A sweeper killed in the middle of a sweep leaves the entry marked with its own (dead) token;
    /// the next sweeper finishes the job.
    @Test func aSweeperKilledWhileSweepingIsSweptInTurn() throws {
        try withCleanNames("rdy-sweeper") { prefix in
            let name = prefix + "-c"
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            let holder = try Peer.spawn("ready-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "registered")
            holder.stop()
            let sweeper = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "channel.participants.sweep.taken", "ready-send", name, "s", "0")
            defer { sweeper.stop() }
            #expect(sweeper.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            let marked = inspectLines(name, "participant.", pid: sweeper.pid)
            #expect(marked.count == 1 && marked.first?.contains("ended (being swept)") == true, "\(marked)")
            #expect(readinessFiles(name, kind: "ready").count == 1)
            let joiner = try Peer.spawn("ready-send", name, "j", "0")
            defer { joiner.stop() }
            #expect(joiner.readLine() == "ready")
            #expect(inspectLines(name, "participant.", pid: holder.pid).isEmpty && inspectLines(name, "participant.", pid: sweeper.pid).isEmpty)
            #expect(readinessFiles(name, kind: "ready").isEmpty)
            joiner.tell()
            #expect(joiner.readLine() == "done")
        }
    }

    /// Child processes send numbered messages as fast as they can while the test runs an event
    /// loop on the descriptor (poll, acknowledge, tryReceive until nil): every message arrives,
    /// once, in order per sender, and the loop never waits out its bound (no lost wake-up).
    @Test func crossProcessStressLosesNoWakeUp() throws {
        try withCleanNames("rdy-stress") { prefix in
            let senders = 4
            let perSender = 10_000
            let channel = try Channel<String>.create(name: prefix + "-c", capacity: 16)
            defer { channel.detach() }
            let readiness = try channel.readinessDescriptor()
            defer { readiness.close() }
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for id in 0..<senders { children.append(try Peer.spawn("ready-send", prefix + "-c", "\(id)", "\(perSender)")) }
            for child in children { #expect(child.readLine() == "ready") }
            for child in children { child.tell() }
            var next = [Int](repeating: 0, count: senders)
            var received = 0
            var stalls = 0
            var problems: [String] = []
            while received < senders * perSender {
                if !isReadable(readiness.fileDescriptor, within: 30_000) {
                    stalls += 1
                    break
                }
                readiness.acknowledge()
                while let message = try channel.tryReceive() {
                    let parts = message.split(separator: ":")
                    guard parts.count == 2, let id = Int(parts[0]), let sequence = Int(parts[1]), (0..<senders).contains(id) else {
                        problems.append("bad message \(message)")
                        continue
                    }
                    if sequence != next[id] { problems.append("sender \(id): \(sequence) after \(next[id] - 1)") }
                    next[id] = sequence + 1
                    received += 1
                }
            }
            #expect(stalls == 0, "the loop waited 30 s for a wake-up with \(senders * perSender - received) messages to come")
            #expect(problems.isEmpty, "\(problems.prefix(5))")
            #expect(received == senders * perSender)
            for child in children { #expect(child.readLine() == "done") }
            #expect(try channel.tryReceive() == nil)
            #expect(readiness.wakeUps >= 1)
            readiness.close()
            #expect(readinessFiles(prefix + "-c", kind: "ready").isEmpty)
        }
    }
}

@Suite("Channel participants")
struct ChannelParticipantsTests {
    /// `ipc inspect` lists each process with the channel open: pid, alive or ended, sender or
    /// receiver, handles; `ipc ls`'s summary counts the live producers and consumers.
    @Test func inspectShowsProducersAndConsumersPerProcess() throws {
        try withCleanNames("part-inspect") { prefix in
            let name = prefix + "-c"
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            let second = try Channel<String>.open(name: name)
            let mine = inspectLines(name, "participant.", pid: getpid())
            #expect(mine == ["pid \(getpid()) alive, no messages yet, 2 handles"], "\(mine)")
            second.detach()
            let sender = try Peer.spawn("ready-send", name, "s", "2")
            defer { sender.stop() }
            #expect(sender.readLine() == "ready")
            sender.tell()
            #expect(sender.readLine() == "done")
            #expect(inspectLines(name, "participant.", pid: sender.pid) == ["pid \(sender.pid) alive, sender, 1 handle"])
            #expect(try channel.tryReceive() == "s:0")
            #expect(inspectLines(name, "participant.", pid: getpid()) == ["pid \(getpid()) alive, receiver, 1 handle"])
            let info = try SharedMemory.info(name: name)
            #expect(info.details["producers"] == "1" && info.details["consumers"] == "1", "\(info.details)")
            #expect(info.summary.contains("1 of 8 messages, 1 producer, 1 consumer"), "\(info.summary)")
            sender.stop()
            #expect(inspectLines(name, "participant.", pid: sender.pid) == ["pid \(sender.pid) ended, sender, 1 handle"])
            #expect(try SharedMemory.info(name: name).summary.contains("0 producers, 1 consumer (1 ended)"))
        }
    }

    /// A scribbled table never crashes anyone: entries whose owner is no live token are shown as
    /// ended and swept; bits of `descriptors_armed` naming garbage entries cost a send nothing but
    /// a refused datagram; sends and receives go on.
    @Test func aScribbledTableIsSweptNotTrusted() throws {
        try withCleanNames("part-scribble") { prefix in
            let name = prefix + "-c"
            let channel = try Channel<String>.create(name: name, capacity: 2, maxMessageSize: 32)
            defer { channel.detach() }
            // The table follows the slots: payload 4096 + header 512 + 2 slots of 64 bytes.
            let table = 4096 + 512 + 2 * 64
            for entry in 1..<64 {
                var bytes = [UInt8](repeating: 0xA5, count: 64)
                if entry % 3 == 0 { bytes = [UInt8](repeating: 0xFF, count: 64) }
                scribble(name, at: table + entry * 64, bytes)
            }
            scribble(name, at: 4096 + 392, [UInt8](repeating: 0xFF, count: 8))
            let described = details(name)
            #expect(described["participants"] == "64", "\(described)")
            #expect(try channel.trySend("after the scribble"))
            #expect(try channel.tryReceive() == "after the scribble")
            // Garbage is never followed: none of it is a token, so no datagram went anywhere.
            let after = details(name)
            #expect(after.filter { $0.key.hasPrefix("participant.") && $0.value.contains(" alive") }.count == 1, "\(after)")
            #expect(after.filter { $0.key.hasPrefix("participant.") && $0.value.contains(" ended") }.count == 63, "\(after)")
            // A process that joins sweeps every entry without a live owner, and takes one.
            let joiner = try Peer.spawn("ready-send", name, "j", "1")
            defer { joiner.stop() }
            #expect(joiner.readLine() == "ready")
            #expect(details(name)["participants"] == "2", "\(details(name))")
            let readiness = try channel.readinessDescriptor()
            joiner.tell()
            #expect(joiner.readLine() == "done")
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            readiness.acknowledge()
            #expect(try channel.tryReceive() == "j:0")
            readiness.close()
        }
    }
}

@Suite("ipc ls and inspect: channel participants", .serialized)
struct ChannelParticipantsToolTests {
    /// Runs `ipc arguments…` to completion (killed after 30 s).
    private func ipc(_ arguments: String...) throws -> (termination: ChildProcess.Termination?, output: String, error: String) {
        let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        let result = try ChildProcess.run(path, arguments, timeout: .seconds(30))
        return (result.termination, result.standardOutput, result.standardError)
    }

    @Test func lsAndInspectShowProducersConsumersAndDescriptors() throws {
        try withCleanNames("part-tool") { prefix in
            let name = prefix + "-c"
            let channel = try Channel<String>.create(name: name, capacity: 8)
            defer { channel.detach() }
            #expect(try channel.trySend("one"))
            let child = try Peer.spawn("ready-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            var result = try ipc("inspect", name)
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output.contains("pid \(getpid()) alive, sender, 1 handle"), "\(result.output)")
            #expect(result.output.contains("pid \(child.pid) alive, no messages yet, 2 handles, readiness descriptor (armed, 0 wake-ups)"), "\(result.output)")
            #expect(result.output.contains("producers: 1") && result.output.contains("consumers: 0"), "\(result.output)")
            result = try ipc("ls")
            let line = result.output.split(separator: "\n").first { $0.contains(name) }.map(String.init) ?? ""
            #expect(line.contains("1 of 8 messages, 1 producer, 0 consumers"), "\(result.output)")
            child.stop()
            result = try ipc("inspect", name, "--json")
            #expect(result.output.contains("pid \(child.pid) ended"), "\(result.output)")
            #expect(try channel.tryReceive() == "one")
            // The last process to let go sweeps the dead one's socket file.
            #expect(readinessFiles(name, kind: "ready").count == 1)
            channel.detach()
            #expect(readinessFiles(name, kind: "ready").isEmpty)
        }
    }
}
