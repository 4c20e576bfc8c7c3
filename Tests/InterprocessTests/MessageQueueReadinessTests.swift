#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

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
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let sender = try Peer.spawn("ready-mq-send", name, "1=low", "9=high", "5=middle")
            defer { sender.stop() }
            #expect(sender.readLine() == "ready")
            sender.tell()
            #expect(isReadable(readiness.fileDescriptor, within: 20_000))
            #expect(sender.readLine() == "done")
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            let first = try queue.tryReceiveWithPriority()
            let second = try queue.tryReceiveWithPriority()
            let third = try queue.tryReceiveWithPriority()
            #expect(first?.message == "high" && first?.priority == 9)
            #expect(second?.message == "middle" && second?.priority == 5)
            #expect(third?.message == "low" && third?.priority == 1)
            #expect(try queue.tryReceive() == nil)
            #expect(readiness.wakeUps == 1)
            #expect(inspectLines(name, "participant.", pid: sender.pid) == ["pid \(sender.pid) alive, sender, 1 handle"])
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
            #expect(readinessFiles(prefix + "-q", kind: "mqready").count == 1)
            #expect(try sender.trySend("one"))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(try sender.trySend("two", priority: 2))
            #expect(readiness.wakeUps == 1)
            readiness.acknowledge()
            #expect(!isReadable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "two")
            #expect(try receiver.tryReceive() == "one")
            #expect(try receiver.tryReceive() == nil)
            #expect(try sender.trySend("three"))
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(readiness.wakeUps == 2)
            readiness.acknowledge()
            sender.close()
            #expect(isReadable(readiness.fileDescriptor, within: 0))
            #expect(try receiver.tryReceive() == "three")
            let end = #expect(throws: InterprocessError.self) { _ = try receiver.tryReceive() }
            #expect(end?.code == .closed)
            readiness.close()
            #expect(readinessFiles(prefix + "-q", kind: "mqready").isEmpty)
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
            let lines = inspectLines(name, "participant.", pid: child.pid)
            #expect(lines == ["pid \(child.pid) alive, no messages yet, 2 handles, readiness descriptor (armed, 0 wake-ups)"], "\(lines)")
            #expect(readinessFiles(name, kind: "mqready").count == 1)
            child.stop()
            let ended = inspectLines(name, "participant.", pid: child.pid)
            #expect(ended.count == 1 && ended.first?.contains("ended") == true, "\(ended)")
            #expect(try queue.trySend("to nobody's descriptor", priority: 3))
            #expect(inspectLines(name, "participant.", pid: child.pid).isEmpty)
            #expect(readinessFiles(name, kind: "mqready").isEmpty)
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
            #expect(details(name)["participants"] == nil)
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
            #expect(inspectLines(name, "participant.", pid: getpid()) == ["pid \(getpid()) alive, no messages yet, 1 handle"])
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
            #expect(readinessFiles(name, kind: "mqready").count == 1)
            queue.detach()
            #expect(readinessFiles(name, kind: "mqready").isEmpty)
        }
    }
}
