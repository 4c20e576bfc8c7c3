// `ipc mq-create`, `ipc send --priority`, `ipc recv` on a message queue, and `ipc ls` / `ipc inspect`
// describing one, run as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite("ipc and message queues", .serialized, .timeLimit(.minutes(5)))
struct MessageQueueToolTests {
    @Test func createSendWithPrioritiesReceiveInOrder() throws {
        try withCleanNames("mqcli") { name in
            var result = try ipc("mq-create", name, "--capacity", "8", "--max-message-size", "64")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(try ipc("mq-create", name).termination == .exited(1), "the name is taken")
            result = try ipc("send", name, "low", "--priority", "1")
            #expect(result.output == "sent 1 message to \(name)\n", "\(result.error)")
            #expect(try ipc("send", name, "high", "higher", "--priority", "7").termination == .exited(0))
            #expect(try ipc("send", name, "plain").termination == .exited(0))
            #expect(try ipc("send", name, "x", "--priority", "-1").termination != .exited(0))
            let listed = try ipc("ls")
            #expect(listed.output.contains("4 of 8 messages, highest priority 7"), "\(listed.output)")
            let inspected = try ipc("inspect", name, "--json")
            let info = try JSONSerialization.jsonObject(with: Data(inspected.output.utf8)) as? [String: Any]
            let details = info?["details"] as? [String: String]
            #expect(details?["byPriority"] == "7: 2, 1: 1, 0: 1", "\(inspected.output)")
            #expect(details?["capacity"] == "8" && details?["maxMessageSize"] == "64" && details?["count"] == "4")
            // A program sees the same queue.
            let queue = try MessageQueue<String>.open(name: name)
            defer { queue.detach() }
            #expect(queue.count == 4)
            result = try ipc("recv", name, "--count", "1")
            #expect(result.output == "high\n")
            result = try ipc("recv", name, "--count", "3", "--json")
            let lines = result.output.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? NSDictionary }
            #expect(lines == [
                ["bytes": 6, "text": "higher", "priority": 7], ["bytes": 3, "text": "low", "priority": 1],
                ["bytes": 5, "text": "plain", "priority": 0],
            ])
            // --priority is for message queues only.
            let channel = try Channel<String>.create(name: name + "-chan", capacity: 2)
            defer { channel.detach() }
            result = try ipc("send", name + "-chan", "x", "--priority", "2")
            #expect(result.termination == .exited(1) && result.error.contains("no priority"), "\(result.error)")
            queue.close()
            result = try ipc("recv", name)
            #expect(result.termination == .exited(0) && result.output.isEmpty)
            #expect(try ipc("rm", name).termination == .exited(0))
        }
    }
}
