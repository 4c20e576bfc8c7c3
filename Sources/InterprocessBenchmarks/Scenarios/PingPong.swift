import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// Scenario 2: round-trip latency between two processes. This process pings, a peer
/// (`ipc bench-peer pong-…`) pongs; every round trip is timed on its own (two clock reads around
/// it), so the rows give a median and a p99.
///
/// Variants: the floor (both processes spin on one atomic word with a pause instruction, no system
/// call), a pair of ``ProcessSemaphore``s, a pair of auto-reset ``ProcessEvent``s (both through the
/// plain blocking `wait()`), a pipe pair and a Unix socket pair (1 byte each way, blocking
/// `read`/`write`). All five peers run at once and the variants take turns in chunks, round after
/// round, so that a change in where the scheduler (or the hypervisor) puts the processes hits every
/// variant alike; between its chunks a peer sleeps (the floor's peer parks on a futex). A watchdog
/// thread bounds every blocking loop: if a peer dies or the step overruns, it kills the peers and
/// releases the waiting side.
enum PingPongBench: BenchScenario {
    static let id = "ping-pong"
    static let title = "ping-pong between two processes"
    static let summary = "spinning floor, ProcessSemaphore, ProcessEvent, pipe, Unix socket"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "floor-spin"
    static let targets = [
        BenchTarget("ProcessSemaphore / floor", "semaphore", over: "floor-spin", .atMost(2)),
        BenchTarget("pipe / ProcessSemaphore", "pipe", over: "semaphore", .atLeast(50)),
        BenchTarget("ProcessEvent / floor", "event", over: "floor-spin", .atMost(2)),
        BenchTarget("pipe / ProcessEvent", "pipe", over: "event", .atLeast(50)),
    ]
    static let roles: [BenchRole] = [.pongSpin, .pongSemaphore, .pongEvent, .pongPipe, .pongSocket]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let segment = session.segment
        let pingSemaphore = try ProcessSemaphore.create(in: segment, at: BenchLayout.pingSemaphore, value: 0)
        let pongSemaphore = try ProcessSemaphore.create(in: segment, at: BenchLayout.pongSemaphore, value: 0)
        let pingEvent = try ProcessEvent.create(in: segment, at: BenchLayout.pingEvent, mode: .autoReset)
        let pongEvent = try ProcessEvent.create(in: segment, at: BenchLayout.pongEvent, mode: .autoReset)

        var samples: [String: [UInt64]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let floorWord = atomic32(base + BenchLayout.floorWord)
            floorWord.initialize(to: Atomic(0))

            // Start the five peers; each gets only its own descriptors.
            let toPipePeer = try BenchIO.pipe()
            let fromPipePeer = try BenchIO.pipe()
            let sockets = try BenchIO.socketPair()
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.pongSpin, segment: session.name)
            try peers.spawn(.pongSemaphore, segment: session.name)
            try peers.spawn(.pongEvent, segment: session.name)
            try peers.spawn(
                .pongPipe, segment: session.name, ["--in", "\(toPipePeer.read.fd)", "--out", "\(fromPipePeer.write.fd)"],
                passing: [toPipePeer.read, fromPipePeer.write])
            try peers.spawn(
                .pongSocket, segment: session.name, ["--in", "\(sockets.1.fd)", "--out", "\(sockets.1.fd)"], passing: [sockets.1])
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 5, deadline: deadline)

            let watchdog = Watchdog(peers: peers.children, deadline: deadline) {
                try? pongSemaphore.signal()
                pongEvent.set()
            }
            var spin = SpinRoundTrip(word: floorWord, watchdog: watchdog)
            var semaphores = SemaphoreRoundTrip(ping: pingSemaphore, pong: pongSemaphore, control: control)
            var events = EventRoundTrip(ping: pingEvent, pong: pongEvent, control: control)
            var pipes = PipeRoundTrip(output: toPipePeer.write, input: fromPipePeer.read)
            var socket = SocketRoundTrip(socket: sockets.0)
            do {
                defer { watchdog.disarm() }
                for _ in 0..<plan.pingPongRounds {
                    try chunk(&spin, plan, watchdog, into: &samples["floor-spin", default: []])
                    try chunk(&semaphores, plan, watchdog, into: &samples["semaphore", default: []])
                    try chunk(&events, plan, watchdog, into: &samples["event", default: []])
                    try chunk(&pipes, plan, watchdog, into: &samples["pipe", default: []])
                    try chunk(&socket, plan, watchdog, into: &samples["unix-socket", default: []])
                }
            }
            spin.finish()
            try semaphores.finish()
            events.finish()
            pipes.finish()
            socket.finish()
            try peers.finish(deadline: deadline)
        }

        let rows = [
            ("floor-spin", "floor: spin on one atomic word (pause)"),
            ("semaphore", "ProcessSemaphore pair"),
            ("event", "ProcessEvent pair (auto reset)"),
            ("pipe", "pipe round trip (2 pipes, 1 byte each way)"),
            ("unix-socket", "Unix domain socket round trip (socketpair, 1 byte each way)"),
        ]
        for (id, name) in rows {
            let summary = Summary((samples[id] ?? []).map { Double($0) })
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.pingPongRounds) round(s) of chunks per variant, "
                + "each chunk \(plan.pingPongWarmup) warm-up round trips then up to \(plan.pingPongSamples) samples "
                + "or \(plan.pingPongBudget / 1_000_000) ms")
    }

    /// One chunk: warm-up, then one sample per round trip until the sample count or the time budget
    /// is reached; the peer then sleeps until the variant's next chunk.
    @inline(never)
    static func chunk<T: RoundTrip>(
        _ transport: inout T, _ plan: BenchPlan, _ watchdog: Watchdog, into samples: inout [UInt64]
    ) throws {
        try transport.begin()
        for _ in 0..<plan.pingPongWarmup {
            try transport.once()
            if watchdog.isTripped { break }
        }
        try watchdog.check("ping-pong warm-up")
        samples.reserveCapacity(samples.count + plan.pingPongSamples)
        let end = BenchClock.now() &+ plan.pingPongBudget
        for _ in 0..<plan.pingPongSamples {
            let start = BenchClock.now()
            try transport.once()
            let stop = BenchClock.now()
            samples.append(stop &- start)
            if watchdog.isTripped || stop >= end { break }
        }
        transport.end()
        try watchdog.check("ping-pong")
    }
}

extension BenchPlan {
    /// Rounds of chunks; each chunk is warm-up round trips, then samples until `pingPongSamples` or
    /// `pingPongBudget` (ns). (The SharedVariable scenario takes turns the same way.)
    var pingPongRounds: Int { quick ? 1 : 5 }
    var pingPongWarmup: Int { quick ? 200 : 1000 }
    var pingPongSamples: Int { quick ? 20_000 : 40_000 }
    var pingPongBudget: UInt64 { quick ? 150_000_000 : 600_000_000 }
}

extension BenchRole {
    static let pongSpin = BenchRole.inSegment("pong-spin") { try $0.pongSpin() }
    static let pongSemaphore = BenchRole.inSegment("pong-semaphore") { work in
        let ping = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pingSemaphore)
        let pong = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pongSemaphore)
        try work.pongSemaphores(ping, pong, pair: 0)
    }
    static let pongEvent = BenchRole.inSegment("pong-event") { work in
        let ping = try ProcessEvent.open(in: work.memory, at: BenchLayout.pingEvent)
        let pong = try ProcessEvent.open(in: work.memory, at: BenchLayout.pongEvent)
        try work.pongEvents(ping, pong)
    }
    static let pongPipe = BenchRole.inSegment("pong-pipe") { try $0.pongBytes() }
    static let pongSocket = BenchRole.inSegment("pong-socket") { try $0.pongBytes() }
}

/// One way of doing a ping-pong round trip from the pinging side.
protocol RoundTrip {
    /// Starts a chunk of round trips (wakes a peer that sleeps between chunks).
    mutating func begin() throws
    /// Sends a ping and waits for its pong.
    mutating func once() throws
    /// Ends a chunk (lets a peer that would otherwise spin sleep).
    mutating func end()
    /// Tells the peer to exit.
    mutating func finish() throws
}

extension RoundTrip {
    func begin() {}
    func end() {}
}

/// The floor: the ping writes an odd value into one shared word, the peer answers with the next
/// (even) value; both sides spin with a pause instruction, no system call. Between chunks the word
/// holds ``parked`` and the peer sleeps on it (a futex), so that it does not steal a CPU from the
/// other variants.
struct SpinRoundTrip: RoundTrip {
    static let quit = UInt32.max
    static let parked = UInt32.max - 1

    let word: UnsafeMutablePointer<Atomic<UInt32>>
    let watchdog: Watchdog
    var ping: UInt32 = 1

    /// The first round trip of a chunk: the ping, a wake-up for the parked peer, the pong.
    mutating func begin() throws {
        word.pointee.store(ping, ordering: .sequentiallyConsistent)
        Futex.wakeAll(UnsafeMutableRawPointer(word))
        try awaitPong()
    }

    @inline(__always)
    mutating func once() throws {
        word.pointee.store(ping, ordering: .releasing)
        try awaitPong()
    }

    @inline(__always)
    private mutating func awaitPong() throws {
        let pong = ping &+ 1
        var spins: UInt32 = 0
        while word.pointee.load(ordering: .acquiring) != pong {
            SpinPolicy.pause()
            spins &+= 1
            if spins & 0xFFFF == 0 {
                if watchdog.isTripped { throw ToolError("the spinning peer stopped answering") }
                // The peer is not running (this sample is lost anyway): under `chrt -f`, let it have this CPU.
                SpinPolicy.yield()
            }
        }
        ping &+= 2
    }

    func end() {
        word.pointee.store(Self.parked, ordering: .releasing)
    }

    func finish() {
        word.pointee.store(Self.quit, ordering: .sequentiallyConsistent)
        Futex.wakeAll(UnsafeMutableRawPointer(word))
    }
}

struct SemaphoreRoundTrip: RoundTrip {
    let ping: ProcessSemaphore
    let pong: ProcessSemaphore
    let control: BenchControl

    @inline(__always)
    func once() throws {
        try ping.signal()
        try pong.blockingWait()
    }

    func finish() throws {
        control.word(BenchLayout.quit(pair: 0)).pointee.store(1, ordering: .sequentiallyConsistent)
        try ping.signal()
    }
}

struct EventRoundTrip: RoundTrip {
    let ping: ProcessEvent
    let pong: ProcessEvent
    let control: BenchControl

    @inline(__always)
    func once() throws {
        ping.set()
        try pong.blockingWait()
    }

    func finish() {
        control.word(BenchLayout.quit(pair: 0)).pointee.store(1, ordering: .sequentiallyConsistent)
        ping.set()
    }
}

struct PipeRoundTrip: RoundTrip {
    let output: BenchDescriptor
    let input: BenchDescriptor

    @inline(__always)
    func once() throws {
        try BenchIO.writeByte(output.fd)
        guard try BenchIO.readByte(input.fd) else { throw ToolError("the pipe peer closed its end") }
    }

    /// Closing our write end ends the peer's read loop.
    func finish() {
        output.close()
    }
}

struct SocketRoundTrip: RoundTrip {
    let socket: BenchDescriptor

    @inline(__always)
    func once() throws {
        try BenchIO.writeByte(socket.fd)
        guard try BenchIO.readByte(socket.fd) else { throw ToolError("the socket peer closed its end") }
    }

    /// Closing our end ends the peer's read loop.
    func finish() {
        socket.close()
    }
}

// MARK: - The ponging side (`ipc bench-peer pong-…`)

extension PeerWork {
    /// Answers each odd value in the floor word with the next value, spinning; ends at the quit value.
    func pongSpin() throws {
        let word = atomic32(base + BenchLayout.floorWord)
        let parent = PeerLifetime.parentPID
        control.markReady()
        var expected: UInt32 = 1
        while true {
            var spins: UInt32 = 0
            var value = word.pointee.load(ordering: .acquiring)
            while value != expected {
                if value == SpinRoundTrip.quit { return }
                if value == SpinRoundTrip.parked {
                    // Between chunks: sleep until the bench pings again.
                    if Futex.wait(UnsafeMutableRawPointer(word), expected: value, deadline: deadline) == .timedOut {
                        throw ToolError("bench-peer: the bench went away")
                    }
                    value = word.pointee.load(ordering: .acquiring)
                    continue
                }
                SpinPolicy.pause()
                spins &+= 1
                if spins & 0xFFFF == 0 {
                    guard PeerLifetime.parentPID == parent, !deadline.hasPassed else {
                        throw ToolError("bench-peer: the bench went away")
                    }
                    // ~1.5 ms without a ping: the bench is not running. Under `chrt -f`, a peer of
                    // another real-time run on the other CPU would otherwise keep it off both for
                    // as long as the peers live (seen: two benches at once, stalled 10 minutes).
                    SpinPolicy.yield()
                }
                value = word.pointee.load(ordering: .acquiring)
            }
            word.pointee.store(expected &+ 1, ordering: .releasing)
            expected &+= 2
        }
    }

    func pongEvents(_ ping: ProcessEvent, _ pong: ProcessEvent) throws {
        let quit = control.word(BenchLayout.quit(pair: 0))
        control.markReady()
        while true {
            try ping.blockingWait()
            if quit.pointee.load(ordering: .relaxed) != 0 { return }
            pong.set()
        }
    }
}
