// `ipc gc` sweeps the entries of dead processes from the tables of participants of channels,
// message queues and services (with their readiness socket files), which otherwise stay until a
// participant happens to find them.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite("ipc gc and tables of participants", .serialized, .timeLimit(.minutes(3)))
struct CollectGarbageParticipantsTests {
    private func ipc(_ arguments: String...) throws -> (termination: ChildProcess.Termination?, output: String, error: String) {
        let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        let result = try ChildProcess.run(path, arguments, timeout: .seconds(30))
        return (result.termination, result.standardOutput, result.standardError)
    }

    /// A child SIGKILLed while it holds a channel, a message queue and a service open, each with a
    /// readiness descriptor (an entry and a socket file each): `ipc gc --dry-run` reports the three
    /// entries and changes nothing; `ipc gc` sweeps them (entries freed, socket files removed) and
    /// says how many; the objects, which this process still holds, stay and work.
    @Test func gcSweepsTheEntriesOfAKilledParticipant() throws {
        try withCleanNames("gc-part") { prefix in
            let channelName = prefix + "-c", queueName = prefix + "-q", serviceName = prefix + "-s"
            let channel = try Channel<String>.create(name: channelName, capacity: 4)
            defer { channel.detach() }
            let queue = try MessageQueue<String>.create(name: queueName, capacity: 4)
            defer { queue.detach() }
            let service = try Service<String, String>.create(name: serviceName, capacity: 4)
            defer { service.detach() }
            let objects = [(channelName, "ready", "ready-hold"), (queueName, "mqready", "ready-mq-hold"), (serviceName, "srvready", "svc-ready-hold")]
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for (name, _, command) in objects {
                let child = try Peer.spawn(command, name)
                children.append(child)
                #expect(child.readLine(timeout: .seconds(20)) == "registered")
            }
            for (index, child) in children.enumerated() {
                child.stop()
                let (name, kind, _) = objects[index]
                let lines = inspectLines(name, "participant.", pid: child.pid)
                #expect(lines.count == 1 && lines.first?.contains(" ended") == true, "\(name): \(lines)")
                #expect(readinessFiles(name, kind: kind).count == 1, "\(name)")
            }

            let dry = try ipc("gc", "--dry-run", "--prefix", prefix)
            #expect(dry.termination == .exited(0), "\(dry.error)")
            for (name, kind, _) in objects {
                #expect(dry.output.contains("would sweep 1 entry of ended processes (and their readiness socket files) from the participants of \(kindName(kind)) \(name)\n"), "\(dry.output)")
                #expect(inspectLines(name, "participant.", pid: children[0].pid).count + inspectLines(name, "participant.", pid: children[1].pid).count
                    + inspectLines(name, "participant.", pid: children[2].pid).count == 1, "dry run changed \(name)")
                #expect(readinessFiles(name, kind: kind).count == 1, "dry run removed \(name)'s socket file")
            }

            // The same as JSON: one object per table swept.
            let dryJSON = try ipc("gc", "--dry-run", "--json", "--prefix", prefix)
            let actions = try #require(try JSONSerialization.jsonObject(with: Data(dryJSON.output.utf8)) as? [[String: Any]], "\(dryJSON.output)")
            for (name, kind, _) in objects {
                let action = actions.first { $0["name"] as? String == name }
                #expect(action?["action"] as? String == "would sweep" && action?["kind"] as? String == kindName(kind)
                    && action?["entries"] as? Int == 1, "\(dryJSON.output)")
            }

            let gc = try ipc("gc", "--prefix", prefix)
            #expect(gc.termination == .exited(0), "\(gc.error)")
            for (index, (name, kind, _)) in objects.enumerated() {
                #expect(gc.output.contains("swept 1 entry of ended processes (and their readiness socket files) from the participants of \(kindName(kind)) \(name)\n"), "\(gc.output)")
                #expect(inspectLines(name, "participant.", pid: children[index].pid).isEmpty, "\(name): \(details(name))")
                #expect(readinessFiles(name, kind: kind).isEmpty, "\(name)")
                // This process's own entry (alive) stays, and gc removed nothing that is in use.
                #expect(inspectLines(name, "participant.", pid: getpid()).count == 1, "\(name): \(details(name))")
            }
            #expect(!gc.output.contains("removed \(prefix)"), "\(gc.output)")
            #expect(try ipc("gc", "--prefix", prefix).output == "nothing to remove\n")

            #expect(try channel.trySend("still works"))
            #expect(try channel.tryReceive() == "still works")
            #expect(try queue.trySend("still works"))
            #expect(try queue.tryReceive() == "still works")
        }
    }

    /// What `ipc ls` calls each kind.
    private func kindName(_ socketKind: String) -> String {
        switch socketKind {
        case "ready": "channel"
        case "mqready": "mqueue"
        default: "service"
        }
    }
}
