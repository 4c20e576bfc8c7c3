import ArgumentParser
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// `ipc demo`: two real processes share a segment and exchange data. (`ipc demo workers`, in
/// DemoWorkers.swift, shows worker processes sharing jobs through a channel.)
///
/// This process creates a segment and writes a greeting; it then starts itself again as
/// `ipc demo-peer NAME` (a second process), which opens the segment by name, reads the greeting and
/// writes a reply. Each step is one method of ``DemoSession``: to show more, add a method and call
/// it from ``run()``.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch two processes share a segment and exchange data.",
        subcommands: [DemoWorkers.self]
    )

    func run() throws {
        let session = try DemoSession()
        defer { session.tearDown() }
        try session.shareGreeting()
        try session.startPeer()
        try session.awaitReply()
        try session.showHolders()
        try session.releasePeer()
        try session.recoverFromAKilledLockOwner()
        try session.closeAndCheckGone()
    }
}

/// What the demo's two processes say to each other, and how long they wait.
///
/// They take turns: each writes only after reading what the other wrote, and each message is
/// recognized by its exact text, so a reader never acts on a half-written one. (Stores are not
/// atomic with respect to a concurrent read; real programs guard a segment with a lock.)
enum DemoScript {
    static let segmentSize = 4096
    static let timeout: Duration = .seconds(10)
    static let pollInterval: UInt64 = 2_000_000
    static let goodbye = "bye"
    /// Where the demo's ``ProcessMutex`` lives in the segment.
    static let mutexOffset = 2048

    static func greeting(from pid: Int32) -> String {
        "hello from demo pid \(pid)"
    }

    static func reply(from pid: Int32, to greeting: String) -> String {
        "peer pid \(pid) got \(greeting.utf8.count) bytes (\"\(greeting)\") and says hello back"
    }

    /// Checks `done` every 2 ms until it is true; fails after ``timeout``, or as soon as
    /// `giveUp` returns a reason.
    static func wait(
        for what: String, until done: () -> Bool, giveUp: () -> String? = { nil }
    ) throws {
        let deadline = Deadline(after: timeout)
        while !done() {
            if let reason = giveUp() { throw ToolError("\(reason) before \(what)") }
            guard !deadline.hasPassed else { throw ToolError("timed out waiting for \(what)") }
            Clock.sleep(nanoseconds: pollInterval)
        }
    }
}

/// Prints lines prefixed with the role and pid of the process, e.g. "[demo pid 4242] …".
struct DemoLog {
    let pid = ProcessIdentity.currentPID
    let role: String

    func callAsFunction(_ line: String) {
        say("[\(role) pid \(pid)] \(line)")
    }
}

/// The parent's side of `ipc demo`, one method per step.
final class DemoSession {
    let log = DemoLog(role: "demo")
    let name = SharedObjectName.unique(prefix: "demo")
    let segment: SharedMemory
    private var greeting = ""
    private var peer: ChildProcess?
    private var peerEnded: ChildProcess.Termination?

    let mutex: ProcessMutex

    init() throws {
        segment = try SharedMemory.create(name: name, size: DemoScript.segmentSize)
        mutex = try ProcessMutex.create(in: segment, at: DemoScript.mutexOffset)
        log("created segment \(name) (\(segment.size) bytes, lifetime \(segment.lifetime)) with a mutex at offset \(DemoScript.mutexOffset)")
    }

    func shareGreeting() throws {
        greeting = DemoScript.greeting(from: log.pid)
        try segment.write(greeting)
        log("wrote \"\(greeting)\"")
    }

    func startPeer() throws {
        let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]
        log("starting a second process: ipc demo-peer \(name)")
        peer = try ChildProcess.spawn(
            executable, ["demo-peer", name.description], standardOutput: .inherit, standardError: .inherit)
    }

    func awaitReply() throws {
        let expected = DemoScript.reply(from: peer!.pid, to: greeting)
        try DemoScript.wait(
            for: "the peer's reply", until: { (try? segment.readString()) == expected }, giveUp: peerEndedEarly)
        log("read the reply: \"\(expected)\"")
    }

    func showHolders() throws {
        let info = try SharedMemory.info(name: name.description)
        log("the segment as `ipc ls` shows it:")
        Format.table([info]).forEach { log("  " + $0) }
        for holder in info.holders {
            let who = holder.pid == log.pid ? "this process" : holder.pid == peer?.pid ? "the peer" : "another process"
            log("  holder pid \(holder.pid) (\(who)): \(holder.alive ? "alive" : "dead")")
        }
    }

    func releasePeer() throws {
        log("writing \"\(DemoScript.goodbye)\" and waiting for the peer to exit")
        try segment.write(DemoScript.goodbye)
        let termination = peer!.wait(timeout: DemoScript.timeout)
        peerEnded = termination ?? .signaled(9)
        guard let termination else { throw ToolError("the peer did not exit within \(DemoScript.timeout) and was killed") }
        guard termination == .exited(0) else { throw ToolError("the peer \(termination)") }
        log("the peer \(termination)")
    }

    /// A second peer takes the mutex and is killed with SIGKILL while holding it; this process
    /// then takes the lock over and is told that the previous owner died.
    func recoverFromAKilledLockOwner() throws {
        let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]
        log("starting another peer that takes the mutex and keeps it")
        let holder = try ChildProcess.spawn(
            executable, ["demo-peer", name.description, "--hold-lock"], standardOutput: .inherit, standardError: .inherit)
        defer { holder.wait(timeout: .zero) }
        try DemoScript.wait(for: "the peer to take the mutex", until: { mutex.isLocked }, giveUp: {
            holder.poll().map { "the lock-holding peer \($0)" }
        })
        log("the mutex is locked by pid \(holder.pid); killing that process with SIGKILL")
        holder.kill()
        _ = holder.wait(timeout: DemoScript.timeout)
        let start = Clock.monotonicNanoseconds()
        let acquisition = try mutex.blockingLock(timeout: DemoScript.timeout)
        let took = Double(Clock.monotonicNanoseconds() - start) / 1e6
        log("locked the mutex after \(String(format: "%.1f", took)) ms: \(acquisition)")
        guard acquisition == .previousOwnerDied else { throw ToolError("expected previousOwnerDied, got \(acquisition)") }
        log("repairing the shared data, marking the mutex consistent and unlocking it")
        mutex.markConsistent()
        try mutex.unlock()
    }

    func closeAndCheckGone() throws {
        let info = try SharedMemory.info(name: name.description)
        log("holders now: \(Format.holders(info)); closing the segment")
        segment.close()
        guard !SharedMemory.exists(name: name.description) else {
            throw ToolError("\(name) still exists after its last holder closed it")
        }
        log("\(name) is gone: the last holder of a whileReferenced segment removes it")
    }

    /// Ends a peer that is still running (after a failed step) and closes the segment.
    func tearDown() {
        if let peer, peerEnded == nil {
            peer.wait(timeout: .zero)  // kills it if it is still running
        }
        segment.close()
    }

    private func peerEndedEarly() -> String? {
        guard let peer, peerEnded == nil, let ended = peer.poll() else { return nil }
        peerEnded = ended
        return "the peer \(ended)"
    }
}
