import ArgumentParser
import Interprocess

/// `ipc demo-peer NAME` (hidden): the second process of `ipc demo`.
struct DemoPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-peer",
        abstract: "The peer process that `ipc demo` starts.",
        shouldDisplay: false
    )

    @Argument(help: "The segment that `ipc demo` created.")
    var name: String

    func run() throws {
        let log = DemoLog(role: "peer")
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
