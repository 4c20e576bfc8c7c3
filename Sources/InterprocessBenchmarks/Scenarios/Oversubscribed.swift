import ArgumentParser
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Scenario 4: four ping-pong pairs (eight peer processes) at once, on a machine with fewer CPUs:
/// total round trips per second through ``ProcessSemaphore`` pairs, against four pairs doing pipe
/// ping-pong. Each pinging peer counts its round trips between go and stop and records its own
/// times; the row is the sum of the pairs' rates (median of the runs; the variants take turns).
enum OversubscribedBench: BenchScenario {
    static let id = "oversubscribed"
    static let title = "oversubscribed: 4 ping-pong pairs (8 processes) at once"
    static let summary = "4 ping-pong pairs, 8 processes at once: ProcessSemaphore pairs vs pipe pairs"
    static let unit = "round trips/s, all pairs together"
    static let higherIsBetter = true
    static let baseline: String? = "pipe"
    static let targets = [
        BenchTarget("ProcessSemaphore pairs / pipe pairs (throughput)", "semaphore", over: "pipe", .atLeast(1))
    ]
    static let roles: [BenchRole] = [.pairPingSemaphore, .pairPongSemaphore, .pairPingPipe, .pairPongPipe]

    static let pairs = BenchLayout.pairCount

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        var semaphoreRates: [Double] = []
        var pipeRates: [Double] = []
        try session.withMemory { base in
            let control = BenchControl(base: base)
            for _ in 0..<plan.oversubscribedRuns {
                semaphoreRates.append(try run(pipes: false, session, control, plan))
                pipeRates.append(try run(pipes: true, session, control, plan))
            }
        }
        for (id, name, rates) in [
            ("semaphore", "ProcessSemaphore pairs", semaphoreRates), ("pipe", "pipe pairs (1 byte each way)", pipeRates),
        ] {
            let summary = Summary(rates)
            scenario.rows.append(BenchRow(
                id: id, name: name, median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.notes.append(
            "\(pairs) pairs = \(2 * pairs) processes on \(SpinPolicy.processorCount) CPUs; "
                + "\(plan.oversubscribedDuration / 1_000_000) ms per run; median of \(plan.oversubscribedRuns) run(s)")
    }

    /// One run: start all pairs, let them go for the planned time, stop them and add up their rates.
    private static func run(pipes: Bool, _ session: BenchSession, _ control: BenchControl, _ plan: BenchPlan) throws -> Double {
        control.clear()
        defer { session.peers.killAll() }
        for pair in 0..<pairs {
            let slot = ["--slot", "\(pair)"]
            if pipes {
                let toPonger = try BenchIO.pipe()
                let toPinger = try BenchIO.pipe()
                let pongerArguments = slot + ["--in", "\(toPonger.read.fd)", "--out", "\(toPinger.write.fd)"]
                let pingerArguments = slot + ["--in", "\(toPinger.read.fd)", "--out", "\(toPonger.write.fd)"]
                try session.peers.spawn(.pairPongPipe, segment: session.name, pongerArguments, passing: [toPonger.read, toPinger.write])
                try session.peers.spawn(.pairPingPipe, segment: session.name, pingerArguments, passing: [toPinger.read, toPonger.write])
            } else {
                _ = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pairPing(pair), value: 0)
                _ = try ProcessSemaphore.create(in: session.segment, at: BenchLayout.pairPong(pair), value: 0)
                try session.peers.spawn(.pairPongSemaphore, segment: session.name, slot)
                try session.peers.spawn(.pairPingSemaphore, segment: session.name, slot)
            }
        }
        let deadline = Deadline(after: plan.stepTimeout)
        try session.peers.awaitReady(control, count: 2 * pairs, deadline: deadline)
        control.sayGo()
        Clock.sleep(nanoseconds: plan.oversubscribedDuration)
        try session.peers.checkRunning()
        control.sayStop()
        try session.peers.finish(deadline: deadline)
        var total = 0.0
        for pair in 0..<pairs {
            let result = control.result(slot: pair)
            guard result.end > result.start, result.count > 0 else {
                throw ToolError("pair \(pair) recorded no round trips")
            }
            total += Double(result.count) / (Double(result.end - result.start) / 1e9)
        }
        return total
    }
}

extension BenchPlan {
    /// Seconds per run, runs per variant.
    var oversubscribedDuration: UInt64 { quick ? 300_000_000 : 1_500_000_000 }
    var oversubscribedRuns: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let pairPingSemaphore = BenchRole.inSegment("pair-ping-semaphore") { work in
        let ping = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pairPing(work.slot))
        let pong = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pairPong(work.slot))
        try work.pingSemaphores(ping, pong)
    }
    static let pairPongSemaphore = BenchRole.inSegment("pair-pong-semaphore") { work in
        let ping = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pairPing(work.slot))
        let pong = try ProcessSemaphore.open(in: work.memory, at: BenchLayout.pairPong(work.slot))
        try work.pongSemaphores(ping, pong, pair: work.slot)
    }
    static let pairPingPipe = BenchRole.inSegment("pair-ping-pipe") { try $0.pingBytes() }
    static let pairPongPipe = BenchRole.inSegment("pair-pong-pipe") { try $0.pongBytes() }
}

// MARK: - The pinging side of a pair (`ipc bench-peer pair-ping-…`)

extension PeerWork {
    /// Round trips until the bench says stop; records the count and times, then releases the ponger.
    func pingSemaphores(_ ping: ProcessSemaphore, _ pong: ProcessSemaphore) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var trips: UInt64 = 0
        while !control.shouldStop {
            try ping.signal()
            try pong.blockingWait()
            trips &+= 1
        }
        control.record(slot: slot, count: trips, start: start, end: Clock.monotonicNanoseconds())
        control.word(BenchLayout.quit(pair: slot)).pointee.store(1, ordering: .sequentiallyConsistent)
        try ping.signal()
    }

    /// The same through pipes; closing our write end releases the ponger.
    func pingBytes() throws {
        guard input >= 0, output >= 0 else { throw ValidationError("--in and --out are required") }
        let output = BenchDescriptor(self.output)
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var trips: UInt64 = 0
        while !control.shouldStop {
            try BenchIO.writeByte(output.fd)
            guard try BenchIO.readByte(input) else { throw ToolError("bench-peer: the ponger closed its pipe") }
            trips &+= 1
        }
        control.record(slot: slot, count: trips, start: start, end: Clock.monotonicNanoseconds())
        output.close()
    }
}
