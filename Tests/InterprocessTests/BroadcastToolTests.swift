// `ipc publish` and `ipc subscribe`, run from a shell as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite("ipc publish and subscribe", .serialized, .timeLimit(.minutes(5)))
struct BroadcastToolTests {
    @Test func publishAndSubscribeText() throws {
        try withCleanNames("bccli") { name in
            var result = try ipc("publish", name, "hello", "two words", "--create", "--capacity", "8")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(result.output == "published 2 messages to \(name)\n")
            result = try ipc("subscribe", name, "--history", "2", "--count", "2")
            #expect(result.output == "hello\ntwo words\n", "\(result.error)")
            result = try ipc("subscribe", name, "--history", "1", "--count", "1", "--json")
            #expect(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? NSDictionary == ["bytes": 9, "text": "two words"])
            // A subscriber waiting in the background; lines from standard input; --close ends it.
            let subscriber = try ChildProcess.spawn(try ipcPath(), ["subscribe", name], standardOutput: .pipe, standardError: .pipe)
            defer { subscriber.stop() }
            #expect(pollUntil { (try? SharedMemory.info(name: name).details["subscribersWaiting"]) == "1" })
            let listed = try ipc("ls")
            #expect(listed.output.contains("1 subscriber, 2 published, capacity 8, blockPublisher"), "\(listed.output)")
            let inspected = try ipc("inspect", name)
            #expect(inspected.output.contains("subscriber.0"), "\(inspected.output)")
            result = try shell("printf 'a\\nline\\033with escape\\nc\\n' | \"$IPC\" publish \(name) --close")
            #expect(result.output == "published 3 messages to \(name) and closed it\n", "\(result.error)")
            #expect(subscriber.wait(timeout: .seconds(20)) == .exited(0))
            #expect(subscriber.readLine() == "a")
            #expect(subscriber.readLine() == "line\\ewith escape")
            #expect(subscriber.readLine() == "c")
            result = try ipc("publish", name, "late")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("closed"))
            #expect(try ipc("rm", name).termination == .exited(0))
        }
    }

    @Test func aProgramAndTheToolShareABroadcast() throws {
        try withCleanNames("bcclidrop") { name in
            let broadcast = try Broadcast<String>.create(name: name, capacity: 2, policy: .dropOldest)
            defer { broadcast.detach() }
            let subscription = try broadcast.subscribe()
            var result = try ipc("publish", name, "1", "2", "3", "4", "5")
            #expect(result.termination == .exited(0), "\(result.error)")
            #expect(try subscription.tryReceive() == .missed(3))
            #expect(try subscription.tryReceive() == .message("4"))
            // The tool reports what it missed: a subscriber stopped (SIGSTOP) while five are published.
            let subscriber = try ChildProcess.spawn(try ipcPath(), ["subscribe", name, "--json", "--count", "2"], standardOutput: .pipe, standardError: .pipe)
            defer { subscriber.stop() }
            #expect(pollUntil { (try? SharedMemory.info(name: name).details["subscribersWaiting"]) == "1" })
            subscriber.kill(signal: SIGSTOP)
            // A stop is not immediate: publishing before every thread stopped let it read "6" first.
            #expect(pollUntil { allThreadsStopped(subscriber.pid) }, "the subscriber stopped")
            for value in 6...10 { try broadcast.blockingPublish("\(value)") }
            subscriber.kill(signal: SIGCONT)
            #expect(subscriber.wait(timeout: .seconds(20)) == .exited(0))
            #expect(subscriber.readLine() == #"{"missed":3}"#)
            #expect(subscriber.readLine() == #"{"bytes":1,"text":"9"}"#)
            #expect(subscriber.readLine() == #"{"bytes":2,"text":"10"}"#)
            // A timeout fails; raw values are refused; a missing name is notFound.
            let start = Clock.monotonicNanoseconds()
            result = try ipc("subscribe", name, "--timeout", "0.2")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("timedOut"))
            #expect(elapsed(since: start) < promptly + 0.2)
            let numbers = try Broadcast<UInt32>.create(name: name + "-raw", capacity: 2)
            defer { numbers.detach() }
            result = try ipc("publish", name + "-raw", "1")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("raw values"))
            result = try ipc("publish", name + "-none", "x")
            #expect(result.termination == .exited(1))
            #expect(result.error.contains("notFound"))
        }
    }
}
