import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// Where everything lives in a bench segment (byte offsets into its payload; the payload starts on
/// a page boundary, so every offset here that is a multiple of 64 starts a cache line).
///
/// Control words (UInt32 atomics, written by the parent unless noted):
/// - `ready`: incremented by each peer once it has opened everything;
/// - `go`: set to 1 (and futex-woken) when the peers may start;
/// - `stop`: set to 1 when timed loops must end;
/// - `arrived`: incremented by each contending peer after go (a start barrier, so that they overlap);
/// - `quit(pair)`: set by the pinging side of a pair to tell its ponging side to exit.
///
/// Slots (one cache line per peer): a peer's count of operations, its start and end times, and one
/// more word (the loaded scenario's takers: the sum of the values they took).
enum BenchLayout {
    static let size = 16384

    static let ready = 0
    static let go = 4
    static let stop = 8
    static let arrived = 12
    static func quit(pair: Int) -> Int { 64 + 4 * pair }
    static var controlWords: [Int] { [ready, go, stop, arrived] + (0..<pairCount).map { quit(pair: $0) } }

    static let slotCount = 8
    static func slot(_ index: Int) -> Int { 128 + 64 * index }

    /// The word that the floor ping-pong bounces (UInt32).
    static let floorWord = 1024
    /// A `pthread_mutex_t` (robust, process-shared).
    static let pthreadMutex = 1088
    /// A ``ProcessMutex``.
    static let processMutex = 1152
    /// The counter that contending processes increment under a lock (UInt64, plain).
    static let counter = 1216
    /// ``ProcessSemaphore`` and ``ProcessEvent`` pairs for the two-process ping-pong.
    static let pingSemaphore = 1280
    static let pongSemaphore = 1344
    static let pingEvent = 1408
    static let pongEvent = 1472
    /// Semaphore pairs of the oversubscribed scenario, one pair per 128 bytes.
    static let pairCount = 4
    static func pairPing(_ pair: Int) -> Int { 2048 + 128 * pair }
    static func pairPong(_ pair: Int) -> Int { 2048 + 128 * pair + 64 }
    /// Two ``SharedVariable``s of `UInt64` (ping and pong), each on its own cache lines.
    static let pingVariable = 4096
    static var pongVariable: Int { pingVariable + (SharedVariable<UInt64>.stateSize + 63) / 64 * 64 }
    /// The loaded scenario's POSIX one-slot buffer: two `sem_t` (empty, full) and the slot, each on
    /// its own cache line. (Its SharedVariable is the one at `pingVariable`.)
    static let posixEmpty = 8192
    static let posixFull = 8256
    static let posixSlot = 8320
}

/// The control words and result slots of a mapped bench segment.
struct BenchControl {
    let base: UnsafeMutableRawPointer

    func word(_ offset: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { atomic32(base + offset) }

    /// Initializes the control words and slots (creator only, before any peer starts).
    func reset() {
        for offset in BenchLayout.controlWords {
            word(offset).initialize(to: Atomic(0))
        }
        for index in 0..<BenchLayout.slotCount {
            (base + BenchLayout.slot(index)).initializeMemory(as: UInt64.self, repeating: 0, count: 4)
        }
    }

    /// Clears the control words and slots between runs (no peer may be running).
    func clear() {
        for offset in BenchLayout.controlWords {
            word(offset).pointee.store(0, ordering: .sequentiallyConsistent)
        }
        for index in 0..<BenchLayout.slotCount {
            (base + BenchLayout.slot(index)).initializeMemory(as: UInt64.self, repeating: 0, count: 4)
        }
    }

    // MARK: Peer side

    func markReady() { word(BenchLayout.ready).pointee.add(1, ordering: .sequentiallyConsistent) }

    /// Parks until the parent says go (throws after `deadline`).
    func awaitGo(deadline: Deadline) throws {
        let go = base + BenchLayout.go
        while word(BenchLayout.go).pointee.load(ordering: .acquiring) == 0 {
            if Futex.wait(go, expected: 0, deadline: deadline) == .timedOut {
                throw ToolError("the bench never said go")
            }
        }
    }

    /// A start barrier: counts this peer in and spins until `parties` peers are in (throws after
    /// `deadline`).
    func arrive(parties: Int, deadline: Deadline) throws {
        let arrived = word(BenchLayout.arrived)
        arrived.pointee.add(1, ordering: .sequentiallyConsistent)
        var spins: UInt32 = 0
        while arrived.pointee.load(ordering: .acquiring) < UInt32(parties) {
            SpinPolicy.pause()
            spins &+= 1
            if spins & 0xFFFF == 0 {
                if deadline.hasPassed { throw ToolError("bench-peer: the other peers never arrived") }
                // The others are not running: under `chrt -f`, let one have this CPU.
                SpinPolicy.yield()
            }
        }
    }

    @inline(__always)
    var shouldStop: Bool { word(BenchLayout.stop).pointee.load(ordering: .relaxed) != 0 }

    func record(slot: Int, count: UInt64, start: UInt64, end: UInt64, extra: UInt64 = 0) {
        let slot = base + BenchLayout.slot(slot)
        slot.storeBytes(of: extra, toByteOffset: 24, as: UInt64.self)
        slot.storeBytes(of: count, as: UInt64.self)
        slot.storeBytes(of: start, toByteOffset: 8, as: UInt64.self)
        slot.storeBytes(of: end, toByteOffset: 16, as: UInt64.self)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    // MARK: Parent side

    var readyCount: Int { Int(word(BenchLayout.ready).pointee.load(ordering: .sequentiallyConsistent)) }

    func sayGo() {
        word(BenchLayout.go).pointee.store(1, ordering: .sequentiallyConsistent)
        Futex.wakeAll(base + BenchLayout.go)
    }

    func sayStop() { word(BenchLayout.stop).pointee.store(1, ordering: .sequentiallyConsistent) }

    /// What the peer in `slot` recorded: operations, start and end (monotonic ns).
    func result(slot: Int) -> (count: UInt64, start: UInt64, end: UInt64) {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let slot = base + BenchLayout.slot(slot)
        return (
            slot.load(as: UInt64.self), slot.load(fromByteOffset: 8, as: UInt64.self),
            slot.load(fromByteOffset: 16, as: UInt64.self)
        )
    }

    /// The extra word the peer in `slot` recorded.
    func extra(slot: Int) -> UInt64 {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return (base + BenchLayout.slot(slot)).load(fromByteOffset: 24, as: UInt64.self)
    }
}

/// A segment for one scenario, with a unique name, and the peers that use it. ``close()`` kills
/// any peer still running and closes the segment (as its last holder, which removes the name).
final class BenchSession {
    let name: SharedObjectName
    let segment: SharedMemory
    let peers = BenchPeers()

    init() throws {
        name = SharedObjectName.unique(prefix: "bench")
        segment = try SharedMemory.create(name: name, size: BenchLayout.size)
        try withMemory { BenchControl(base: $0).reset() }
    }

    /// Calls `body` with the payload's base address (which must not escape `body`).
    func withMemory<R>(_ body: (UnsafeMutableRawPointer) throws -> R) throws -> R {
        try segment.withUnsafeMutableBytes { try body($0.baseAddress!) }
    }

    func close() {
        peers.killAll()
        segment.close()
        if SharedMemory.exists(name: name.description) { try? SharedMemory.remove(name: name) }
    }
}

/// The peer processes of a scenario: started with `posix_spawn`, every one waited for with a
/// deadline and killed if it overstays.
final class BenchPeers {
    private(set) var children: [ChildProcess] = []
    private let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]

    /// Starts `ipc bench-peer ROLE --segment NAME …`. The `passing` descriptors (close-on-exec
    /// otherwise) are inherited by this child alone, and closed here once it is started.
    @discardableResult
    func spawn(
        _ role: BenchRole, segment: SharedObjectName, _ arguments: [String] = [], passing descriptors: [BenchDescriptor] = []
    ) throws -> ChildProcess {
        let fds = descriptors.map(\.fd)
        BenchIO.setInheritable(fds, true)
        defer {
            BenchIO.setInheritable(fds, false)
            descriptors.forEach { $0.close() }
        }
        let child = try ChildProcess.spawn(
            executable,
            ["bench-peer", role.name, "--segment", segment.description, "--life-limit", "\(BenchPeer.lifeLimit)"]
                + arguments,
            standardOutput: .null, standardError: .inherit)
        children.append(child)
        return child
    }

    /// Waits until `count` peers have said ready; throws if one ends first or at `deadline`.
    func awaitReady(_ control: BenchControl, count: Int, deadline: Deadline) throws {
        while control.readyCount < count {
            try checkRunning()
            guard !deadline.hasPassed else {
                throw ToolError("timed out waiting for \(count) bench peers to start (\(control.readyCount) ready)")
            }
            Clock.sleep(nanoseconds: 200_000)
        }
    }

    /// Throws if a peer has already ended.
    func checkRunning() throws {
        for child in children {
            if let ended = child.poll() { throw ToolError("bench peer \(child.pid) \(ended) too early") }
        }
    }

    /// Waits for every peer to exit with status 0 by `deadline`; kills stragglers; throws if one failed.
    func finish(deadline: Deadline) throws {
        defer { children.removeAll() }
        var failures: [String] = []
        for child in children {
            let termination = child.wait(timeout: .nanoseconds(Int64(clamping: deadline.remainingNanoseconds)))
            if termination == nil {
                failures.append("bench peer \(child.pid) did not finish in time and was killed")
            } else if termination != .exited(0) {
                failures.append("bench peer \(child.pid) \(termination!)")
            }
        }
        if !failures.isEmpty { throw ToolError(failures.joined(separator: "; ")) }
    }

    /// Kills and reaps every peer still running.
    func killAll() {
        for child in children { child.wait(timeout: .zero) }
        children.removeAll()
    }
}

/// Bounds the parent's blocking measurement loops: a thread that wakes every 20 ms and, when a peer
/// ends early or the deadline passes, kills the peers and runs `rescue` (which releases whatever the
/// parent waits on), so that the loop returns and sees ``isTripped``.
final class Watchdog: Sendable {
    private let stopped = Mutex(false)
    private let tripped = Atomic<Bool>(false)

    init(peers: [ChildProcess], deadline: Deadline, rescue: @escaping @Sendable () -> Void) {
        Thread.detachNewThread { [self] in
            while true {
                Clock.sleep(nanoseconds: 20_000_000)
                let done = stopped.withLock { stopped -> Bool in
                    if stopped { return true }
                    let peerEnded = peers.contains { $0.poll() != nil }
                    guard peerEnded || deadline.hasPassed else { return false }
                    tripped.store(true, ordering: .sequentiallyConsistent)
                    peers.forEach { $0.kill() }
                    rescue()
                    stopped = true
                    return true
                }
                if done { return }
            }
        }
    }

    /// Whether the watchdog fired (the measurement is void).
    @inline(__always)
    var isTripped: Bool { tripped.load(ordering: .relaxed) }

    /// Disarms it; after this returns, it never fires.
    func disarm() { stopped.withLock { $0 = true } }

    func check(_ what: String) throws {
        if tripped.load(ordering: .sequentiallyConsistent) {
            throw ToolError("\(what): a bench peer ended early or the scenario timed out")
        }
    }
}

/// Median and percentiles of samples, by sorting them (exact, no histogram buckets).
struct Summary: Sendable {
    var median: Double
    var p99: Double
    var min: Double
    var max: Double
    var count: Int

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        guard !sorted.isEmpty else {
            median = .nan; p99 = .nan; min = .nan; max = .nan
            return
        }
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        p99 = Self.percentile(sorted, 0.99)
        min = sorted.first!
        max = sorted.last!
    }

    /// Nearest-rank percentile of sorted samples.
    static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        let rank = Int((Double(sorted.count) * fraction).rounded(.up))
        return sorted[Swift.min(Swift.max(rank, 1), sorted.count) - 1]
    }
}

/// Keeps a value alive and opaque to the optimizer.
@inline(never)
func blackHole<T>(_ value: T) {
    withExtendedLifetime(value) {}
}
