// A peer process that the tests spawn with posix_spawn. Each command does one thing and reports
// through its exit status, a line on standard output ("ready" when it is in position), and shared
// memory. Exit codes: 0 success, 1 unexpected failure, 2 usage, 3 the expected "already exists",
// 4 timed out waiting.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

func say(_ line: String) {
    StandardStream.write(line + "\n")
}

func fail(_ message: String, code: Int32 = 1) -> Never {
    StandardStream.write("child: \(message)\n", to: 2)
    exit(code)
}

/// Waits until the monotonic clock reaches `deadline` (a start line shared by several children).
func waitUntil(_ deadline: UInt64) {
    while Clock.monotonicNanoseconds() < deadline { cipcRelax() }
}

func cipcRelax() { sched_yield() }

/// Waits for the test to tell us to go on: returns the next line on standard input, or nil when the
/// test closed it (or died) or `seconds` passed — an upper bound, never what orders events.
@discardableResult
func awaitInstruction(upTo seconds: Int) -> String? {
    let deadline = Deadline(after: .seconds(seconds))
    var line: [UInt8] = []
    while true {
        if deadline.hasPassed { return nil }
        var entry = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        let ready = poll(&entry, 1, min(deadline.pollMilliseconds, 1000))
        if ready < 0 && errno != EINTR { return nil }
        if ready <= 0 { continue }
        var byte: UInt8 = 0
        let n = read(0, &byte, 1)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return nil }
        if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
        line.append(byte)
    }
}

/// Starts a thread that ends this process with exit status `status` as soon as the test writes a
/// line to our standard input or closes it: how a test stops a child that is still waiting, without
/// a timeout deciding the outcome.
func exitWhenTold(status: Int32) {
    exitStatusWhenTold = status
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { _ in
        awaitInstruction(upTo: 3600)
        _exit(exitStatusWhenTold)
    }, nil)
    if rc != 0 { fail("could not start the instruction thread") }
    pthread_detach(thread)
}

/// Set once, before the thread that reads it starts.
nonisolated(unsafe) var exitStatusWhenTold: Int32 = 0

var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--as-nobody" {
    arguments.removeFirst()
    guard setgid(65534) == 0, setuid(65534) == 0 else { fail("could not drop privileges") }
}
guard let command = arguments.first else { fail("no command", code: 2) }
let rest = Array(arguments.dropFirst())

func lifetime(_ text: String) -> Lifetime { text == "persistent" ? .persistent : .whileReferenced }

switch command {
case "hold":
    // hold NAME SECONDS: open NAME, say ready, hold it until told (a line or end of our input; at
    // most SECONDS), close it.
    let segment: SharedMemory
    do { segment = try SharedMemory.open(name: rest[0]) } catch { fail("\(error)") }
    say("ready \(segment.size)")
    awaitInstruction(upTo: Int(rest[1])!)
    segment.close()

case "create-hold":
    // create-hold NAME SIZE LIFETIME SECONDS [MODE]: create (permissions MODE, octal; default 600),
    // write "hello from PID", say ready, hold it until told (at most SECONDS), close it.
    let segment: SharedMemory
    do {
        let mode = FilePermissions(rawValue: CModeT(rest.count > 4 ? rest[4] : "600", radix: 8)!)
        segment = try SharedMemory.create(name: rest[0], size: Int(rest[1])!, permissions: mode, lifetime: lifetime(rest[2]))
        try segment.write("hello from \(getpid())")
    } catch { fail("\(error)") }
    say("ready")
    awaitInstruction(upTo: Int(rest[3])!)
    segment.close()

case "create-exit":
    // create-exit NAME SIZE LIFETIME TEXT: create, store TEXT, exit without closing.
    do {
        let segment = try SharedMemory.create(name: rest[0], size: Int(rest[1])!, lifetime: lifetime(rest[2]))
        try segment.write(rest[3])
        exit(0) // deliberately without close: persistent segments must survive this
    } catch { fail("\(error)") }

case "read":
    // read NAME: print the stored string.
    do { say(try SharedMemory.open(name: rest[0]).readString()) } catch { fail("\(error)") }

case "write":
    // write NAME TEXT: open and store TEXT.
    do { try SharedMemory.open(name: rest[0]).write(rest[1]) } catch { fail("\(error)") }

case "expect-open-error":
    // expect-open-error NAME CODE: exit 0 if opening fails with that code.
    do {
        _ = try SharedMemory.open(name: rest[0])
        fail("open succeeded")
    } catch {
        say("\(error)")
        exit(error.code.description == rest[1] ? 0 : 1)
    }

case "race-create":
    // race-create NAME START_NS: at the start line, try to create; 0 created, 3 already exists.
    waitUntil(UInt64(rest[1])!)
    do {
        let segment = try SharedMemory.create(name: rest[0], size: 64, lifetime: .persistent)
        segment.close()
        exit(0)
    } catch where error.code == .alreadyExists {
        exit(3)
    } catch { fail("\(error)") }

case "unique-names":
    // unique-names COUNT START_NS: print COUNT unique names, one per line.
    waitUntil(UInt64(rest[1])!)
    var out = ""
    out.reserveCapacity(Int(rest[0])! * 26)
    for _ in 0..<Int(rest[0])! { out += SharedObjectName.unique(prefix: "t").description; out += "\n" }
    StandardStream.write(out)

case "send-name":
    // send-name: create a segment with a unique name storing "payload for <name>", write the
    // 32-byte raw name to stdout, wait (≤ 20 s) until the peer writes "ack" into the segment.
    let name = SharedObjectName.unique(prefix: "pipe")
    do {
        let segment = try SharedMemory.create(name: name, size: 256)
        try segment.write("payload for \(name)")
        let raw = name.rawBytes
        StandardStream.write(bytes: raw)
        let deadline = Deadline(after: .seconds(20))
        while !deadline.hasPassed {
            if (try? segment.readString()) == "ack" { segment.close(); exit(0) }
            usleep(1000)
        }
        exit(4)
    } catch { fail("\(error)") }

case "create-close":
    // create-close NAME: create a whileReferenced segment and close it (crash points fire inside).
    do { try SharedMemory.create(name: rest[0], size: 4096).close() } catch { fail("\(error)") }

case "churn":
    // churn NAME ITERATIONS: open-or-create, check and bump a counter, close; over and over.
    // Any error other than the documented races is a failure.
    for _ in 0..<Int(rest[1])! {
        do {
            let (segment, _) = try SharedMemory.openOrCreate(name: rest[0], size: 4096)
            try segment.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: bytes.load(as: UInt64.self) &+ 1, as: UInt64.self)
            }
            segment.close()
        } catch {
            fail("\(error)")
        }
    }

case "remove":
    // remove NAME: SharedMemory.remove; says "removed" (exit 0) or the error code (exit 5).
    do {
        try SharedMemory.remove(name: rest[0])
        say("removed")
    } catch {
        say(error.code.description)
        exit(5)
    }

case "create-remove":
    // create-remove NAME MODE: create a persistent segment with permissions MODE (octal), then
    // remove it; says "removed" (exit 0) or the error code (exit 5).
    do {
        let mode = FilePermissions(rawValue: CModeT(rest[1], radix: 8)!)
        try SharedMemory.create(name: rest[0], size: 64, permissions: mode, lifetime: .persistent).close()
        try SharedMemory.remove(name: rest[0])
        say("removed")
    } catch {
        say(error.code.description)
        exit(5)
    }

case "churn-create":
    // churn-create NAME N: says ready, then creates and closes a persistent segment N times; a
    // concurrent remover may delete it at any moment (alreadyExists is then expected, once).
    say("ready")
    for _ in 0..<Int(rest[1])! {
        do {
            try SharedMemory.create(name: rest[0], size: 4096, lifetime: .persistent).close()
        } catch where error.code == .alreadyExists {
        } catch { fail("\(error)") }
    }

case "open-as-mutex", "remove-as-mutex":
    // open-as-mutex NAME / remove-as-mutex NAME: open, or remove, NAME as a ProcessMutex (a raw
    // segment is refused); says the error code, exit 0 if refused as `incompatible`.
    do {
        if command == "open-as-mutex" { _ = try ProcessMutex.open(name: rest[0]) } else { try ProcessMutex.remove(name: rest[0]) }
        fail("\(command) succeeded")
    } catch {
        say(error.code.description)
        exit(error.code == .incompatible ? 0 : 1)
    }

case "gc-dry":
    // gc-dry PREFIX: the names a dry-run garbage collection would remove, one per line.
    for info in SharedMemory.collectGarbage(dryRun: true, prefix: rest[0]) { say(info.name) }

case "truncate-close":
    // truncate-close NAME: open NAME, truncate its file to 0 behind the handle's back, close the
    // handle (which must not touch the missing pages), say "closed".
    do {
        let segment = try SharedMemory.open(name: rest[0])
        let fd = try SharedMemoryObject.open("/" + rest[0], create: false, exclusive: false)
        try fd.truncate(to: 0)
        try fd.close()
        segment.close()
        say("closed")
    } catch { fail("\(error)") }

case "mutex-hold", "mutex-lock-within", "mutex-count", "sem-wait", "event-wait", "cond-wait", "sem-pong":
    exit(runSyncCommand(command, rest))

case let command where command.hasPrefix("rw-") || command.hasPrefix("var-"):
    exit(runReaderWriterAndVariableCommand(command, rest))

case let command where command.hasPrefix("svc-"):
    exit(runServiceCommand(command, rest))

case let command where command.hasPrefix("chan-"):
    exit(runChannelCommand(command, rest))
case let command where command.hasPrefix("loan-"):
    exit(runChannelLoanCommand(command, rest))

case let command where command.hasPrefix("ready-"):
    exit(runReadinessCommand(command, rest))

case let command where command.hasPrefix("mq-"):
    exit(runMessageQueueCommand(command, rest))
case let command where command.hasPrefix("bc-"):
    exit(runBroadcastCommand(command, rest))
case let command where command.hasPrefix("bcready-"):
    exit(runBroadcastReadinessCommand(command, rest))

case let command where command.hasPrefix("obj-"):
    exit(runObjectCommand(command, rest))

case "errno-probe":
    exit(runErrnoProbe(rest))

case let command where command.hasPrefix("local-"):
    exit(runLocalCommand(command, rest))

case let command where command.hasPrefix("place-"):
    exit(runPlacementCommand(command, rest))

case let command where command.hasPrefix("named-"):
    exit(runHeapNamedCommand(command, rest))

case let command where command.hasPrefix("heap-"):
    exit(runHeapCommand(command, rest))

case let command where command.hasPrefix("recycle-"):
    exit(runHeapRecycleCommand(command, rest))

case let command where command.hasPrefix("val-"):
    exit(runValueCommand(command, rest))

default:
    fail("unknown command \(command)", code: 2)
}
exit(0)
