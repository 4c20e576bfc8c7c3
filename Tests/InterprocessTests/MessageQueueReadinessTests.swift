#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// What `ipc inspect` shows for the named message queue.
private func queueDetails(_ name: String) -> [String: String] {
    (try? SharedMemory.info(name: name).details) ?? [:]
}

/// The participant lines of `ipc inspect` that name `pid`.
private func queueParticipantLines(_ name: String, pid: Int32) -> [String] {
    queueDetails(name).filter { $0.key.hasPrefix("participant.") && $0.value.hasPrefix("pid \(pid) ") }.map(\.value)
}

/// Whether `fd` is readable within `milliseconds` (0: now). The bound is an upper bound only.
private func readable(_ fd: FileDescriptor, within milliseconds: Int32) -> Bool {
    var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
    while true {
        let ready = poll(&entry, 1, milliseconds)
        if ready < 0 && errno == EINTR { continue }
        return ready > 0 && entry.revents & Int16(POLLIN) != 0
    }
}

/// The readiness socket files of the message queue `name` in this user's runtime directory:
/// `mqready-<FNV-1a 64 of the name>-<number>`.
private func queueReadinessFiles(_ name: String) -> Set<String> {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    let digits = String(hash, radix: 16)
    let prefix = "mqready-" + String(repeating: "0", count: 16 - digits.count) + digits + "-"
    let directory = (LocalPath.environment("INTERPROCESS_RUNTIME_DIR").flatMap { $0.isEmpty ? nil : $0 })
        ?? LocalPath.environment("XDG_RUNTIME_DIR").map { $0 + "/interprocess" }
        ?? "/tmp/interprocess-\(getuid())"
    return Set(LocalPath.entries(of: directory).filter { $0.hasPrefix(prefix) })
}

@Suite("Message queue readiness descriptors and participants")
struct MessageQueueReadinessTests {
    /// A child sends three messages of different priorities: the descriptor becomes readable (one
    /// wake-up: the first send takes the armed bit), and the receives after the acknowledgement
    /// take them highest priority first.
    @Test func becomesReadableWhenAChildSendsAndReceivesByPriority() throws {
        try withCleanNames("mqrdy-child") { prefix in
            let name = prefix + "-q"
            let queue = try MessageQueue<String>.create(name: name, capacity: 8)
            defer { queue.detach() }
            let readiness = try queue.readinessDescriptor()
            defer { readiness.close() }
            #expect(try queue.tryReceive() == nil)
            #expect(!readable(readiness.fileDescriptor, within: 0))
            let sender = try Peer.spawn("ready-mq-send", name, "1=low", "9=high", "5=middle")
            defer { sender.stop() }
            #expect(sender.readLine() == "ready")
            sender.tell()
            #expect(readable(readiness.fileDescriptor, within: 20_000))
            #expect(sender.readLine() == "done")
            readiness.acknowledge()
            #expect(!readable(readiness.fileDescriptor, within: 0))
            let first = try queue.tryReceiveWithPriority()
            let second = try queue.tryReceiveWithPriority()
            let third = try queue.tryReceiveWithPriority()
            #expect(first?.message == "high" && first?.priority == 9)
            #expect(second?.message == "middle" && second?.priority == 5)
            #expect(third?.message == "low" && third?.priority == 1)
            #expect(try queue.tryReceive() == nil)
            #expect(readiness.wakeUps == 1)
            #expect(queueParticipantLines(name, pid: sender.pid) == ["pid \(sender.pid) alive, sender, 1 handle"])
        }
    }

    /// The protocol's order: a message sent while the descriptor is signalled and not yet
    /// acknowledged makes no second wake-up and is still taken after the acknowledgement; the next
    /// one wakes it again; closing the queue wakes it too, and the receives then drain and end.
    @Test func theProtocolLeavesNoMessageUnannouncedAndCloseWakes() throws {
        try withCleanNames("mqrdy-protocol") { prefix in
            let sender = try MessageQueue<String>.create(name: prefix + "-q", capacity: 8)
            defer { sender.detach() }
            let receiver = try MessageQueue<String>.open(name: prefix + "-q")
            defer { receiver.detach() }
            let readiness = try receiver.readinessDescriptor()
            defer { readiness.close() }
            let again = #expect(throws: InterprocessError.self) { _ = try sender.readinessDescriptor() }
            #expect(again?.code == .alreadyExists)
            #expect(queueReadinessFiles(prefix + "-q").count == 1)
            #expect(try sender.trySend("one"))
            #expect(readable(readiness.fileDescriptor, within: 0))
            #expect(try sender.trySend("two", priority: 2))
            #expect(readiness.wakeUps == 1)
            readiness.acknowledge()
            #expect(!readable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "two")
            #expect(try receiver.tryReceive() == "one")
            #expect(try receiver.tryReceive() == nil)
            #expect(try sender.trySend("three"))
            #expect(readable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 2)
            readiness.acknowledge()
            sender.close()
            #expect(readable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "three")
            let end = #expect(throws: InterprocessError.self) { _ = try receiver.tryReceive() }
            #expect(end?.code == .closed)
            readiness.close()
            #expect(queueReadinessFiles(prefix + "-q").isEmpty)
        }
    }

    /// A receiver killed while registered: `ipc inspect` shows its entry as ended, and the first
    /// send that finds its socket gone sweeps it (entry freed, socket file removed).
    @Test func aReceiverKilledWhileRegisteredIsSwept() throws {
        try withCleanNames("mqrdy-killed") { prefix in
            let name = prefix + "-q"
            let queue = try MessageQueue<String>.create(name: name, capacity: 8)
            defer { queue.detach() }
            let child = try Peer.spawn("ready-mq-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "registered")
            let lines = queueParticipantLines(name, pid: child.pid)
            #expect(lines == ["pid \(child.pid) alive, no messages yet, 2 handles, readiness descriptor (armed, 0 wake-ups)"], "\(lines)")
            #expect(queueReadinessFiles(name).count == 1)
            child.stop()
            let ended = queueParticipantLines(name, pid: child.pid)
            #expect(ended.count == 1 && ended.first?.contains("ended") == true, "\(ended)")
            #expect(try queue.trySend("to nobody's descriptor", priority: 3))
            #expect(queueParticipantLines(name, pid: child.pid).isEmpty)
            #expect(queueReadinessFiles(name).isEmpty)
            #expect(try queue.tryReceive() == "to nobody's descriptor")
        }
    }

    /// A queue whose `state_size` ends with its slots (one created before the table existed) opens
    /// and works, with no participants and no readiness descriptor (`incompatible`); a size that is
    /// neither is `corrupt`.
    @Test func aQueueWithoutTheTableWorksWithoutDescriptors() throws {
        try withCleanNames("mqrdy-old") { prefix in
            let name = prefix + "-q"
            let creator = try MessageQueue<String>.create(name: name, capacity: 2, maxMessageSize: 32)
            defer { creator.detach() }
            // Header 512, heap and stack 2 × 4 each (to 528, rounded to 576), 2 slots of 64 bytes.
            let slotsEnd: UInt64 = 576 + 2 * 64
            scribble(name, at: 4096 + 24, withUnsafeBytes(of: slotsEnd.littleEndian) { Array($0) })
            let old = try MessageQueue<String>.open(name: name)
            defer { old.detach() }
            let refused = #expect(throws: InterprocessError.self) { _ = try old.readinessDescriptor() }
            #expect(refused?.code == .incompatible)
            #expect(try old.trySend("still works", priority: 1))
            #expect(try old.tryReceive() == "still works")
            #expect(queueDetails(name)["participants"] == nil)
            scribble(name, at: 4096 + 24, withUnsafeBytes(of: (slotsEnd + 8).littleEndian) { Array($0) })
            let broken = #expect(throws: InterprocessError.self) { _ = try MessageQueue<String>.open(name: name) }
            #expect(broken?.code == .corrupt)
            // Put the size back, so that the creator's handle lets go of its entry as usual.
            scribble(name, at: 4096 + 24, withUnsafeBytes(of: (slotsEnd + 64 * 64).littleEndian) { Array($0) })
        }
    }

    /// `ipc inspect` lists each process with the queue open (sender, receiver, handles, readiness
    /// descriptor) and `ipc ls` counts the live producers and consumers.
    @Test func ipcInspectAndLsShowParticipants() throws {
        try withCleanNames("mqrdy-tool") { prefix in
            let name = prefix + "-q"
            let queue = try MessageQueue<String>.create(name: name, capacity: 8)
            defer { queue.detach() }
            #expect(queueParticipantLines(name, pid: getpid()) == ["pid \(getpid()) alive, no messages yet, 1 handle"])
            let sender = try Peer.spawn("ready-mq-send", name, "4=a", "7=b")
            defer { sender.stop() }
            #expect(sender.readLine() == "ready")
            sender.tell()
            #expect(sender.readLine() == "done")
            #expect(try queue.tryReceive() == "b")
            let holder = try Peer.spawn("ready-mq-hold", name)
            defer { holder.stop() }
            #expect(holder.readLine() == "registered")
            let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
            var result = try ChildProcess.run(path, ["inspect", name], timeout: .seconds(30))
            #expect(result.termination == .exited(0), "\(result.standardError)")
            #expect(result.standardOutput.contains("pid \(getpid()) alive, receiver, 1 handle"), "\(result.standardOutput)")
            #expect(result.standardOutput.contains("pid \(sender.pid) alive, sender, 1 handle"), "\(result.standardOutput)")
            #expect(result.standardOutput.contains("pid \(holder.pid) alive, no messages yet, 2 handles, readiness descriptor (armed, 0 wake-ups)"), "\(result.standardOutput)")
            #expect(result.standardOutput.contains("producers: 1") && result.standardOutput.contains("consumers: 1"), "\(result.standardOutput)")
            result = try ChildProcess.run(path, ["ls"], timeout: .seconds(30))
            let line = result.standardOutput.split(separator: "\n").first { $0.contains(name) }.map(String.init) ?? ""
            #expect(line.contains("1 of 8 messages, highest priority 4, 1 producer, 1 consumer"), "\(result.standardOutput)")
            sender.stop()
            #expect(try SharedMemory.info(name: name).summary.contains("0 producers, 1 consumer (1 ended)"))
            holder.stop()
            // The last process to let go sweeps the dead holder's socket file.
            #expect(queueReadinessFiles(name).count == 1)
            queue.detach()
            #expect(queueReadinessFiles(name).isEmpty)
        }
    }
}
