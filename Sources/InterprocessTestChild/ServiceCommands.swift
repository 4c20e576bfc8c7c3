// Commands for Service ("svc-…"), all on a Service<String, String>. Exit codes: 0 success,
// 1 failure, 2 usage.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Dispatch

/// Runs one service command; returns the exit status.
func runServiceCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "svc-serve":
            // svc-serve NAME [async|exclusive]: says "ready", answers "TEXT" with "echo TEXT" (and
            // refuses "refuse…") until the service is closed, then says "served N". "exclusive":
            // through the service's exclusive server role (taken before "ready").
            let service = try Service<String, String>.open(name: rest[0])
            let served = Atomic<Int>(0)
            if rest.count <= 1 || rest[1] != "exclusive" { say("ready") }
            let handler: @Sendable (String) throws -> String = { text in
                if text.hasPrefix("refuse") { throw InterprocessError(.invalidArgument, detail: "refused \(text)") }
                served.wrappingAdd(1, ordering: .relaxed)
                return "echo " + text
            }
            if rest.count > 1 && rest[1] == "exclusive" {
                var server = try service.exclusiveServer()
                say("ready")
                try server.blockingServe(handler)
                say("served \(served.load(ordering: .relaxed))")
                return 0
            }
            if rest.count > 1 && rest[1] == "async" {
                try runInTask { () throws(InterprocessError) in
                    try await service.serve { try handler($0) }
                }
            } else {
                try service.blockingServe(handler)
            }
            say("served \(served.load(ordering: .relaxed))")
        case "svc-raw-serve":
            // svc-raw-serve NAME [sync|exclusive|async|async-exclusive]: svc-serve on a
            // Service<UInt64, UInt64> (raw values: the servers' and the clients' hot paths):
            // answers N with N + 1000 (and refuses 666) until the service is closed, then says
            // "served N".
            let service = try Service<UInt64, UInt64>.open(name: rest[0])
            let served = Atomic<Int>(0)
            let handler: @Sendable (UInt64) throws -> UInt64 = { value in
                if value == 666 { throw InterprocessError(.invalidArgument, detail: "refused \(value)") }
                served.wrappingAdd(1, ordering: .relaxed)
                return value &+ 1000
            }
            let mode = rest.count > 1 ? rest[1] : "sync"
            switch mode {
            case "exclusive":
                var server = try service.exclusiveServer()
                say("ready")
                try server.blockingServe(handler)
            case "async-exclusive":
                try runInTask { () throws(InterprocessError) in
                    var server = try service.exclusiveServer()
                    say("ready")
                    try await server.serve { try handler($0) }
                }
            case "async":
                say("ready")
                try runInTask { () throws(InterprocessError) in try await service.serve { try handler($0) } }
            default:
                say("ready")
                try service.blockingServe(handler)
            }
            say("served \(served.load(ordering: .relaxed))")
        case "svc-raw-request":
            // svc-raw-request NAME VALUE TIMEOUT_MS: svc-request on a Service<UInt64, UInt64>.
            requestAndSay(try Service<UInt64, UInt64>.open(name: rest[0]), UInt64(rest[1])!, milliseconds: rest[2])
        case "svc-hold":
            // svc-hold NAME: takes one request, says "got TEXT", waits to be told, answers
            // "late TEXT" and says "delivered true|false".
            let service = try Service<String, String>.open(name: rest[0])
            say("ready")
            let call = try service.blockingNextCall(timeout: .seconds(60))
            say("got \(call.request)")
            awaitInstruction(upTo: 120)
            let text = call.request
            say("delivered \(try call.reply("late " + text))")
        case "svc-request":
            // svc-request NAME TEXT TIMEOUT_MS: says "requesting", then "reply TEXT" or the error's code.
            requestAndSay(try Service<String, String>.open(name: rest[0]), rest[1], milliseconds: rest[2])
        case "svc-clients":
            // svc-clients NAME ID TASKS COUNT [tolerant]: says "ready", waits to be told, then TASKS
            // tasks each send COUNT requests "ID.TASK.SEQ" and check that each reply is "echo " + it;
            // says "ok N" (replies checked) or "wrong …" on the first reply that is not its own.
            // With "tolerant", a request whose server died counts as "died" ("ok N died M sent S").
            // COUNT 0: until told again (a second line).
            let service = try Service<String, String>.open(name: rest[0])
            let id = rest[1]
            let tasks = Int(rest[2])!
            let count = Int(rest[3])!
            let tolerant = rest.count > 4 && rest[4] == "tolerant"
            say("ready")
            awaitInstruction(upTo: 120)
            let tally = Tally()
            if count == 0 {
                // Until told again: a second line (or the end of our input) stops the tasks.
                Thread.detached {
                    awaitInstruction(upTo: 600)
                    tally.stop.store(true, ordering: .sequentiallyConsistent)
                }
            }
            let done = DispatchSemaphore(value: 0)
            for task in 0..<tasks {
                Task {
                    var sequence = 0
                    while count == 0 ? !tally.stop.load(ordering: .sequentiallyConsistent) : sequence < count {
                        defer { sequence += 1 }
                        tally.sent.wrappingAdd(1, ordering: .relaxed)
                        let text = "\(id).\(task).\(sequence)"
                        do throws(InterprocessError) {
                            let reply = try await service.request(text, timeout: .seconds(60))
                            if reply == "echo " + text {
                                tally.checked.wrappingAdd(1, ordering: .relaxed)
                            } else {
                                tally.wrong.withLock { $0 = $0 ?? "wrong \(text) got \(reply)" }
                            }
                        } catch {
                            if tolerant && error.code == .serverDied {
                                tally.died.wrappingAdd(1, ordering: .relaxed)
                            } else {
                                tally.wrong.withLock { $0 = $0 ?? "wrong \(text) failed \(error)" }
                            }
                        }
                    }
                    done.signal()
                }
            }
            for _ in 0..<tasks { done.wait() }
            let died = tolerant ? " died \(tally.died.load(ordering: .relaxed)) sent \(tally.sent.load(ordering: .relaxed))" : ""
            say(tally.wrong.withLock { $0 } ?? "ok \(tally.checked.load(ordering: .relaxed))" + died)
        case "svc-flood":
            // svc-flood NAME COUNT: says "ready", then sends COUNT requests from COUNT threads at
            // once (each waits for its reply), says "sent" once they are all queued, and waits
            // (to be killed with its requests in flight).
            let service = try Service<String, String>.open(name: rest[0])
            let count = Int(rest[1])!
            say("ready")
            for index in 0..<count {
                Thread.detached {
                    _ = try? service.blockingRequest("flood \(index)", timeout: .seconds(120))
                }
            }
            while service.queued < count { sched_yield() }
            say("sent")
            awaitInstruction(upTo: 120)
        case let command where command.hasPrefix("svc-ready-"):
            return runServiceReadinessCommand(command, rest)
        default:
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// Starts a detached thread (the blocking forms run on their own threads, not on the cooperative pool).
enum Thread {
    static func detached(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable { // handed to exactly one thread, which releases it
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        if rc != 0 { fail("could not start a thread") }
        pthread_detach(thread)
    }
}

/// What the client tasks of `svc-clients` found.
final class Tally: Sendable {
    let checked = Atomic<Int>(0)
    let died = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let wrong = Mutex<String?>(nil)
}

/// Says "requesting", sends `request` (timeout: `milliseconds`), then says "reply REPLY" or the error's code.
private func requestAndSay<Request, Response>(_ service: Service<Request, Response>, _ request: Request, milliseconds: String) {
    say("requesting")
    do throws(InterprocessError) {
        say("reply \(try service.blockingRequest(request, timeout: .milliseconds(Int(milliseconds)!)))")
    } catch {
        say("\(error.code)")
    }
}
