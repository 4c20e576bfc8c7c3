import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

// What the local IPC scenarios of `ipc bench` share (LocalSocketLatency, LocalSocketThroughput,
// SegmentHandOver): their peer is this tool started again as `ipc bench-peer ROLE` with no segment
// (roles `echo`, `sink`, `handover`); it ends itself after `BenchPeer.lifeLimit` seconds whatever
// happens, and a peer that dies ends the parent's reads (end of file), so no loop here can hang.

/// Starts a local bench peer (`ipc bench-peer ROLE`, with no segment), passing it `descriptors`
/// (inherited by this child alone and closed here once it is started).
func spawnLocalPeer(_ role: BenchRole, _ arguments: [String], passing descriptors: [BenchDescriptor] = []) throws -> ChildProcess {
    let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]
    let fds = descriptors.map(\.fd)
    BenchIO.setInheritable(fds, true)
    defer {
        BenchIO.setInheritable(fds, false)
        descriptors.forEach { $0.close() }
    }
    return try ChildProcess.spawn(
        executable, ["bench-peer", role.name, "--life-limit", "\(BenchPeer.lifeLimit)"] + arguments,
        standardOutput: .null, standardError: .inherit)
}

/// A listener with a unique name in the runtime directory, for one scenario.
func benchListener() throws -> LocalSocketListener {
    try LocalSocketListener.listen(name: "bench-\(ProcessIdentity.currentPID)-\(UInt32.random(in: .min ... .max))")
}

/// Waits for `child` to exit 0 (killing it after 30 s).
func finishLocalPeer(_ child: ChildProcess) throws {
    let termination = child.wait(timeout: .seconds(30))
    guard termination == .exited(0) else {
        throw ToolError("bench-peer \(child.pid) \(termination.map { "\($0)" } ?? "did not finish in time and was killed")")
    }
}

// MARK: - The peer's side

extension BenchPeer {
    /// Runs each body on its own thread and waits for all; the first error is thrown.
    func concurrently(_ bodies: [@Sendable () throws -> Void]) throws {
        let group = DispatchGroup()
        let failures = FailureBox()
        for body in bodies {
            group.enter()
            Thread.detachNewThread {
                do { try body() } catch { failures.record(error) }
                group.leave()
            }
        }
        group.wait()
        if let failure = failures.first { throw failure }
    }

    /// The next message, or nil when the peer hung up.
    static func nextMessage(_ connection: LocalSocket) throws -> LocalMessage? {
        do {
            return try connection.blockingReceive()
        } catch {
            if error.code == .disconnected { return nil }
            throw error
        }
    }
}

/// The first error of several threads.
final class FailureBox: @unchecked Sendable {
    // `@unchecked Sendable`: `lock` guards `failure`.
    private let lock = NSLock()
    private var failure: (any Error)?

    func record(_ error: any Error) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
    }

    var first: (any Error)? {
        lock.lock()
        defer { lock.unlock() }
        return failure
    }
}
