// `ipc send` and `ipc recv`, run from a shell as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

private struct Job: Codable, Equatable, Sendable {
    var id: Int
    var path: String
}

@Suite("ipc send and recv", .serialized, .timeLimit(.minutes(5)))
struct ChannelToolTests {
    /// `ipc hz` reports what was sent between its samples, from the channel's counter: it takes
    /// nothing, its samples add up, and it refuses what has no messages.
    @Test func hzCountsWhatIsSentWithoutTakingIt() throws {
        struct Sample: Decodable { var messages: UInt64; var seconds: Double; var rate: Double; var total: UInt64; var waiting: Int? }
        try withCleanNames("chanhz") { name in
            let channel = try Channel<String>.create(name: name, capacity: 64)
            defer { channel.detach() }
            for index in 0..<5 { #expect(try channel.trySend("before \(index)")) }
            let sampler = try ChildProcess.spawn(
                try ipcPath(), ["hz", name, "--interval", "0.2", "--count", "2", "--json"], standardOutput: .pipe, standardError: .pipe)
            defer { sampler.stop() }
            for index in 0..<7 { #expect(try channel.trySend("during \(index)")) }
            #expect(sampler.wait(timeout: .seconds(30)) == .exited(0))
            let samples = try (0..<2).map { _ in
                try JSONDecoder().decode(Sample.self, from: Data(try #require(sampler.readLine()).utf8))
            }
            // The first read saw at least the 5 sent before; each sample continues the one before.
            #expect(samples[0].total - samples[0].messages >= 5)
            #expect(samples[1].total - samples[1].messages == samples[0].total)
            #expect(samples[1].total <= 12)
            for sample in samples {
                #expect(sample.seconds >= 0.2 && abs(sample.rate - Double(sample.messages) / sample.seconds) < 0.001)
            }
            // Nothing was taken: a last sample sees all 12 sent and waiting.
            var result = try ipc("hz", name, "--interval", "0.01", "--count", "1", "--json")
            #expect(result.termination == .exited(0), "\(result.error)")
            let last = try JSONDecoder().decode(Sample.self, from: Data(result.output.utf8))
            #expect(last.total == 12 && last.messages == 0 && last.waiting == 12)
            #expect(channel.count == 12)
            result = try ipc("hz", name, "--interval", "0.01", "--count", "1")
            #expect(result.output.hasPrefix("\(name): 0.0 msg/s (0 in "), "\(result.output)")
            // What has no messages is refused, as are bad options.
            let mutex = try ProcessMutex.create(name: name + "-m")
            defer { mutex.close() }
            result = try ipc("hz", name + "-m", "--count", "1")
            #expect(result.termination == .exited(1) && result.error.contains("is a mutex"), "\(result.error)")
            #expect(try ipc("hz", name, "--interval", "0").termination != .exited(0))
            #expect(try ipc("hz", name + "-missing", "--count", "1").termination == .exited(1))
        }
    }

    @Test func sendAndReceiveText() throws {
        try withCleanNames("chancli") { name in
            var result = try ipc("send", name, "hello", "two words", "--create", "--capacity", "8")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output == "sent 2 messages to \(name)\n")
            let listed = try ipc("ls")
            #expect(listed.output.contains("2 of 8 messages"), "\(listed.output)")
            result = try ipc("recv", name, "--count", "1")
            #expect(result.output == "hello\n")
            result = try ipc("recv", name, "--count", "1", "--json")
            #expect(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? NSDictionary == ["bytes": 9, "text": "two words"])
            // Lines from standard input; --close ends the receivers' stream after them.
            result = try shell("printf 'a\\nline\\033with escape\\nc\\n' | \"$IPC\" send \(name) --close")
            #expect(result.output == "sent 3 messages to \(name) and closed it\n", "\(result.error)")
            result = try ipc("recv", name)
            #expect(result.termination == .exited(0))
            #expect(result.output == "a\nline\\ewith escape\nc\n", "one message per line, escaped")
            result = try ipc("send", name, "late")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("closed"))
            // An empty channel that stays empty: --timeout fails.
            let empty = try Channel<String>.create(name: name + "-empty", capacity: 2)
            defer { empty.detach() }
            let start = Clock.monotonicNanoseconds()
            result = try ipc("recv", name + "-empty", "--timeout", "0.2")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("timedOut"))
            #expect(elapsed(since: start) < promptly + 0.2)
            #expect(try ipc("rm", name).termination == .exited(0))
        }
    }

    @Test func aProgramAndTheToolShareAChannel() throws {
        try withCleanNames("chanclijson") { name in
            let jobs = try Channel<Job>.create(name: name, capacity: 4)
            defer { jobs.detach() }
            var result = try ipc("send", name, #"{"id":7,"path":"/tmp/a"}"#)
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(try jobs.blockingReceive(timeout: .seconds(5)) == Job(id: 7, path: "/tmp/a"))
            result = try ipc("send", name, "not json")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("not JSON"))
            #expect(jobs.count == 0, "nothing was sent")
            try jobs.blockingSend(Job(id: 8, path: "/b"))
            result = try ipc("recv", name, "--count", "1", "--json")
            let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
            #expect((object?["value"] as? NSDictionary) == ["id": 8, "path": "/b"], "\(result.output)")
            // Raw values: printed in hexadecimal; the tool does not send them.
            let numbers = try Channel<UInt32>.create(name: name + "-raw", capacity: 2)
            defer { numbers.detach() }
            try numbers.blockingSend(0x0102_0304)
            result = try ipc("recv", name + "-raw", "--count", "1")
            #expect(result.output == "04030201\n")
            result = try ipc("send", name + "-raw", "1")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("raw values"))
            result = try ipc("send", name + "-none", "x")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("notFound"))
        }
    }

    /// Ctrl-C (SIGINT) ends a waiting `ipc recv` with status 130, and it leaves no parked waiter
    /// counted in the channel (its wait was cancelled, not killed).
    @Test func anInterruptedReceiveLeavesNoWaiterBehind() throws {
        try withCleanNames("chancliint") { name in
            let channel = try Channel<String>.create(name: name, capacity: 2)
            defer { channel.detach() }
            let child = try ChildProcess.spawn(try ipcPath(), ["recv", name], standardOutput: .pipe, standardError: .pipe)
            defer { child.stop() }
            #expect(pollUntil { (try? SharedMemory.info(name: name).details["receiversWaiting"]) == "1" })
            child.kill(signal: SIGINT)
            #expect(child.wait(timeout: .seconds(10)) == .exited(130))
            #expect(try SharedMemory.info(name: name).details["receiversWaiting"] == "0")
            try channel.blockingSend("still here")
            #expect(try channel.tryReceive() == "still here", "the interrupted receive took nothing")
        }
    }
}
