// The operating-system baselines and small OS wrappers of `ipc bench`: a pthread robust
// process-shared mutex, POSIX semaphores, pipes, Unix socket pairs, reads and writes, and the bounds
// of a peer's life. This is the only file of the benchmarks that imports Glibc: these are benchmark
// baselines, not library code (the library's own OS layer is InterprocessSystem; the tools' process
// helpers are InterprocessToolSupport). A scenario that needs another OS baseline adds it here.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import InterprocessToolSupport
import CInterprocess

/// A pthread mutex that is process-shared and robust, placed in shared memory: the baseline that
/// ``ProcessMutex`` must beat. The corresponding C type is `pthread_mutex_t`, initialized with
/// `pthread_mutexattr_setpshared(PTHREAD_PROCESS_SHARED)` and `pthread_mutexattr_setrobust(PTHREAD_MUTEX_ROBUST)`.
struct RobustPthreadMutex {
    let pointer: UnsafeMutablePointer<pthread_mutex_t>

    /// Bytes it occupies (40 on x86-64 Linux).
    static let size = MemoryLayout<pthread_mutex_t>.size

    /// Initializes an unlocked mutex at `raw`, in memory that other processes map.
    static func create(at raw: UnsafeMutableRawPointer) throws -> RobustPthreadMutex {
        var attributes = pthread_mutexattr_t()
        try check(pthread_mutexattr_init(&attributes), "pthread_mutexattr_init")
        defer { pthread_mutexattr_destroy(&attributes) }
        try check(pthread_mutexattr_setpshared(&attributes, Int32(PTHREAD_PROCESS_SHARED)), "pthread_mutexattr_setpshared")
        try check(pthread_mutexattr_setrobust(&attributes, Int32(PTHREAD_MUTEX_ROBUST)), "pthread_mutexattr_setrobust")
        let pointer = raw.bindMemory(to: pthread_mutex_t.self, capacity: 1)
        try check(pthread_mutex_init(pointer, &attributes), "pthread_mutex_init")
        return RobustPthreadMutex(pointer: pointer)
    }

    /// Uses the mutex that another process initialized at `raw`.
    static func open(at raw: UnsafeMutableRawPointer) -> RobustPthreadMutex {
        RobustPthreadMutex(pointer: raw.assumingMemoryBound(to: pthread_mutex_t.self))
    }

    @inline(__always)
    func lock() throws {
        let rc = pthread_mutex_lock(pointer)
        if rc != 0 { try failed(rc) }
    }

    @inline(__always)
    func unlock() {
        pthread_mutex_unlock(pointer)
    }

    /// A lock failure: after EOWNERDEAD the mutex is made consistent (and released) before throwing,
    /// so that the other process can go on and report its own result.
    private func failed(_ rc: Int32) throws -> Never {
        if rc == EOWNERDEAD {
            pthread_mutex_consistent(pointer)
            pthread_mutex_unlock(pointer)
            throw ToolError("pthread_mutex_lock: the previous owner died holding the lock")
        }
        throw ToolError("pthread_mutex_lock failed: \(String(cString: strerror(rc)))")
    }

    private static func check(_ rc: Int32, _ call: String) throws {
        guard rc == 0 else { throw ToolError("\(call) failed: \(String(cString: strerror(rc)))") }
    }
}

/// A file descriptor that this process owns: closed once, by ``close()`` or when the last
/// reference goes away.
final class BenchDescriptor {
    private(set) var fd: Int32

    init(_ fd: Int32) { self.fd = fd }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}

/// Pipes, socket pairs and single-byte messages. Descriptors cross to peers as command-line
/// arguments (their numbers).
enum BenchIO {
    /// A pipe, both ends close-on-exec.
    static func pipe() throws -> (read: BenchDescriptor, write: BenchDescriptor) {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw failure("pipe") }
        setInheritable(fds, false)
        return (BenchDescriptor(fds[0]), BenchDescriptor(fds[1]))
    }

    /// A connected pair of Unix stream sockets, both close-on-exec.
    static func socketPair() throws -> (BenchDescriptor, BenchDescriptor) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw failure("socketpair") }
        setInheritable(fds, false)
        return (BenchDescriptor(fds[0]), BenchDescriptor(fds[1]))
    }

    /// Clears (`true`) or sets (`false`) close-on-exec. `ipc bench` spawns its peers from one thread,
    /// so a descriptor made inheritable just for one spawn leaks into no other child.
    static func setInheritable(_ fds: [Int32], _ inheritable: Bool) {
        for fd in fds { _ = fcntl(fd, F_SETFD, inheritable ? 0 : FD_CLOEXEC) }
    }

    /// Writes one byte.
    @inline(__always)
    static func writeByte(_ fd: Int32) throws {
        var byte: UInt8 = 1
        while true {
            let n = write(fd, &byte, 1)
            if n == 1 { return }
            if n < 0 && errno == EINTR { continue }
            throw failure("write")
        }
    }

    /// Reads one byte; false at end of file (the other side closed or died).
    @inline(__always)
    static func readByte(_ fd: Int32) throws -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n == 1 { return true }
            if n == 0 { return false }
            if errno == EINTR { continue }
            throw failure("read")
        }
    }

    /// Writes `total` bytes to `fd`, `chunk` after `chunk` (the last one cut short).
    static func writeAll(_ chunk: [UInt8], total: Int, to fd: Int32) throws {
        var left = total
        while left > 0 {
            let count = min(left, chunk.count)
            try chunk.withUnsafeBytes { raw in
                var done = 0
                while done < count {
                    let n = write(fd, raw.baseAddress! + done, count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw ToolError("write failed: errno \(errno)")
                    }
                    done += n
                }
            }
            left -= count
        }
    }

    /// Reads `total` bytes; false at end of file.
    static func drain(_ fd: Int32, _ total: Int) throws -> Bool {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var left = total
        while left > 0 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, left)) }
            if n == 0 { return false }
            if n < 0 {
                if errno == EINTR { continue }
                throw ToolError("read failed: errno \(errno)")
            }
            left -= n
        }
        return true
    }

    private static func failure(_ call: String) -> ToolError {
        ToolError("\(call) failed: \(String(cString: strerror(errno)))")
    }
}

/// The bounds of a peer process's life.
enum PeerLifetime {
    /// Ends this process with SIGALRM after `seconds`, whatever it is doing (a peer that the bench
    /// stopped waiting for never lingers).
    static func limit(seconds: Int) {
        _ = alarm(UInt32(clamping: max(seconds, 1)))
    }

    /// The parent process's id (it changes when the parent dies and the peer is re-parented).
    static var parentPID: Int32 { getppid() }

    /// Runs this process under the ordinary time-sharing policy (`SCHED_OTHER`), whatever it
    /// inherited: the loaded scenario's processes stand for ordinary programs on a busy machine.
    /// Under `chrt -f` they would inherit a real-time policy, and a CPU hog that never blocks would
    /// then keep its CPU from everyone of its priority (the whole run stalled until the peers' life
    /// limit).
    static func useOrdinaryScheduling() {
        var parameters = sched_param()
        parameters.sched_priority = 0
        _ = sched_setscheduler(0, SCHED_OTHER, &parameters)
    }
}

/// A POSIX unnamed semaphore in shared memory (`sem_init` with `pshared` = 1): the baseline of the
/// loaded scenario. glibc's is a futex word with a waiter count: `sem_wait` parks at once when the
/// count is 0 (no spinning), `sem_post` wakes one waiter only when one is counted.
struct PosixSemaphore {
    let pointer: UnsafeMutablePointer<sem_t>

    /// Bytes it occupies (32 on x86-64 Linux).
    static let size = MemoryLayout<sem_t>.size

    /// Initializes a process-shared semaphore with `value` at `raw` (no peer may be using it).
    static func create(at raw: UnsafeMutableRawPointer, value: UInt32) throws -> PosixSemaphore {
        let pointer = raw.bindMemory(to: sem_t.self, capacity: 1)
        guard sem_init(pointer, 1, value) == 0 else { throw ToolError("sem_init failed: \(String(cString: strerror(errno)))") }
        return PosixSemaphore(pointer: pointer)
    }

    /// Uses the semaphore that another process initialized at `raw`.
    static func open(at raw: UnsafeMutableRawPointer) -> PosixSemaphore {
        PosixSemaphore(pointer: raw.assumingMemoryBound(to: sem_t.self))
    }

    @inline(__always)
    func wait() throws {
        while sem_wait(pointer) != 0 {
            if errno != EINTR { throw ToolError("sem_wait failed: \(String(cString: strerror(errno)))") }
        }
    }

    @inline(__always)
    func post() throws {
        guard sem_post(pointer) == 0 else { throw ToolError("sem_post failed: \(String(cString: strerror(errno)))") }
    }
}

/// The textbook bounded buffer of one slot between processes, from two POSIX semaphores: `empty`
/// (starts at 1) counts free slots, `full` (starts at 0) filled ones. A put waits on `empty`, writes
/// the slot and posts `full`; a take waits on `full`, reads the slot and posts `empty`. The
/// semaphores order the slot's plain accesses.
struct PosixSlot {
    let empty: PosixSemaphore
    let full: PosixSemaphore
    let slot: UnsafeMutableRawPointer

    /// Initializes an empty buffer in the bench segment (no peer may be using it).
    static func create(base: UnsafeMutableRawPointer) throws -> PosixSlot {
        let slot = base + BenchLayout.posixSlot
        slot.storeBytes(of: UInt64(0), as: UInt64.self)
        return PosixSlot(
            empty: try PosixSemaphore.create(at: base + BenchLayout.posixEmpty, value: 1),
            full: try PosixSemaphore.create(at: base + BenchLayout.posixFull, value: 0), slot: slot)
    }

    static func open(base: UnsafeMutableRawPointer) -> PosixSlot {
        PosixSlot(
            empty: PosixSemaphore.open(at: base + BenchLayout.posixEmpty),
            full: PosixSemaphore.open(at: base + BenchLayout.posixFull), slot: base + BenchLayout.posixSlot)
    }

    @inline(__always)
    func put(_ value: UInt64) throws {
        try empty.wait()
        slot.storeBytes(of: value, as: UInt64.self)
        try full.post()
    }

    @inline(__always)
    func take() throws -> UInt64 {
        try full.wait()
        let value = slot.load(as: UInt64.self)
        try empty.post()
        return value
    }
}

// MARK: - Messages of a fixed size (the channel round trip's baselines)

extension BenchIO {
    /// Writes all of `bytes` (one message of a pipe or stream socket).
    @inline(__always)
    static func writeMessage(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("write")
            }
            done += n
        }
    }

    /// Reads exactly `buffer.count` bytes; false at end of file.
    @inline(__always)
    static func readMessage(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        var done = 0
        while done < buffer.count {
            let n = read(fd, buffer.baseAddress! + done, buffer.count - done)
            if n == 0 { return false }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read")
            }
            done += n
        }
        return true
    }
}

/// A POSIX message queue (`mq_open`, `mq_send`, `mq_receive`, through the C shim: Swift's Glibc
/// module has no <mqueue.h>): the kernel's own message queue between processes, a baseline of the
/// channel round trip. Linux only.
struct PosixMessageQueue {
    let descriptor: Int32
    let name: String

    /// Creates the queue `name` ("/…"), which must not exist, holding `capacity` messages of up to
    /// `messageSize` bytes (the defaults of /proc/sys/fs/mqueue allow 10 of 8192).
    static func create(name: String, capacity: Int, messageSize: Int) throws -> PosixMessageQueue {
        let descriptor = cipc_mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600, capacity, messageSize)
        guard descriptor >= 0 else { throw ToolError("mq_open \(name) failed: \(String(cString: strerror(errno)))") }
        return PosixMessageQueue(descriptor: descriptor, name: name)
    }

    /// Opens the queue `name` that another process created.
    static func open(name: String) throws -> PosixMessageQueue {
        let descriptor = cipc_mq_open(name, O_RDWR | O_CLOEXEC, 0, 0, 0)
        guard descriptor >= 0 else { throw ToolError("mq_open \(name) failed: \(String(cString: strerror(errno)))") }
        return PosixMessageQueue(descriptor: descriptor, name: name)
    }

    @inline(__always)
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        while cipc_mq_send(descriptor, bytes.baseAddress, bytes.count) != 0 {
            if errno != EINTR { throw ToolError("mq_send failed: \(String(cString: strerror(errno)))") }
        }
    }

    /// Receives one message into `buffer` (at least the queue's message size); its length.
    @inline(__always)
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = cipc_mq_receive(descriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return Int(n) }
            if errno != EINTR { throw ToolError("mq_receive failed: \(String(cString: strerror(errno)))") }
        }
    }

    func close() { _ = cipc_mq_close(descriptor) }

    func unlink() { _ = cipc_mq_unlink(name) }
}

/// glibc's `malloc` and `free`: the baseline of the shared heap's scenarios.
enum SystemAllocator {
    /// The corresponding C function is `malloc`; traps if it returns NULL (a benchmark has no use for
    /// a run without memory).
    @inline(__always)
    static func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let pointer = malloc(byteCount) else { fatalError("malloc(\(byteCount)) returned NULL") }
        return pointer
    }

    /// The corresponding C function is `free`.
    @inline(__always)
    static func deallocate(_ pointer: UnsafeMutableRawPointer) { free(pointer) }
}

extension PosixMessageQueue {
    /// The largest power of 2 that a POSIX message queue message may be here
    /// (`/proc/sys/fs/mqueue/msgsize_max`, 8192 by default; 8192 if it cannot be read), so that it
    /// divides the larger message sizes.
    static var largestMessage: Int {
        let text = (try? String(contentsOfFile: "/proc/sys/fs/mqueue/msgsize_max", encoding: .utf8)) ?? ""
        let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)).map { max($0, 64) } ?? 8192
        return 1 << (Int.bitWidth - 1 - limit.leadingZeroBitCount)
    }

    /// The deepest queue an unprivileged process may create here (`/proc/sys/fs/mqueue/msg_max`,
    /// 10 by default), at most 10.
    static var usableDepth: Int {
        let text = (try? String(contentsOfFile: "/proc/sys/fs/mqueue/msg_max", encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)).map { min(max($0, 1), 10) } ?? 10
    }
}
