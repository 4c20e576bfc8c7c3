#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess

/// Who a process is: its pid together with its start time, so that a reused pid is not mistaken
/// for a process that died.
///
/// For display only (the segment holder table shows it). Never decide from it whether an owner is
/// alive: a pid means nothing in another PID namespace, and /proc may hide other users' processes
/// (`hidepid`). Owners' liveness comes from the kernel: see `OwnerLease`.
package struct ProcessIdentity: Sendable, Hashable {
    package var pid: Int32
    /// Linux: field 22 of /proc/PID/stat (clock ticks since boot). 0 where unknown.
    package var startTime: UInt64

    package init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// This process.
    package static let current: ProcessIdentity = {
        let pid = getpid()
        return ProcessIdentity(pid: pid, startTime: startTime(of: pid) ?? 0)
    }()

    /// This process's effective user id. The corresponding C function is `geteuid`.
    package static var effectiveUserID: UInt32 { UInt32(geteuid()) }

    /// The current process id (not cached: correct in a child after fork/exec).
    package static var currentPID: Int32 { getpid() }

    /// The calling thread's kernel id (`gettid`): its entry in /proc/self/task.
    package static var currentThreadID: Int32 { cipc_gettid() }

    /// The start time of process `pid`, or nil if there is no such process.
    package static func startTime(of pid: Int32) -> UInt64? {
        #if os(Linux)
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
        guard let close = buffer[..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 1)..<n].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (state); field 22 is at index 19.
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
        #else
        return kill(pid, 0) == 0 || errno == EPERM ? 0 : nil
        #endif
    }

    /// Whether some process has this pid (one cheap system call: `kill(pid, 0)`).
    package static func pidExists(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// Whether this exact process (pid and start time) is still running. A zombie counts as dead.
    package var isAlive: Bool {
        guard pid > 0 else { return false }
        guard let now = ProcessIdentity.startTime(of: pid) else { return false }
        if startTime != 0 && now != startTime { return false }
        #if os(Linux)
        return !ProcessIdentity.isZombie(pid)
        #else
        return true
        #endif
    }

    #if os(Linux)
    private static func isZombie(_ pid: Int32) -> Bool {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0, let close = buffer[..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return true }
        let state = buffer[close + 2]
        return state == UInt8(ascii: "Z") || state == UInt8(ascii: "X")
    }
    #endif
}
