import ArgumentParser
import Interprocess
import InterprocessSystem

/// `ipc demo-peer NAME` (hidden): the second process of `ipc demo`.
struct DemoPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-peer",
        abstract: "The peer process that `ipc demo` starts.",
        shouldDisplay: false
    )

    @Argument(help: "The segment that `ipc demo` created.")
    var name: String

    @Flag(help: "Take the segment's mutex and hold it until killed (at most 30 s).")
    var holdLock = false

    func run() throws {
        let log = DemoLog(role: "peer")
        if holdLock {
            let segment = try SharedMemory.open(name: name)
            let mutex = try ProcessMutex.open(in: segment, at: DemoScript.mutexOffset)
            try mutex.blockingLock()
            log("took the mutex; holding it")
            Clock.sleep(nanoseconds: 30_000_000_000)
            return
        }
        let segment = try SharedMemory.open(name: name)
        defer { segment.close() }
        let greeting = try segment.readString()
        log("opened \(name) and read \"\(greeting)\"")

        let reply = DemoScript.reply(from: log.pid, to: greeting)
        log("writing the reply")
        try segment.write(reply)

        try DemoScript.wait(for: "\"\(DemoScript.goodbye)\"", until: { (try? segment.readString()) == DemoScript.goodbye })
        log("read \"\(DemoScript.goodbye)\"; closing the segment and exiting")
    }
}
