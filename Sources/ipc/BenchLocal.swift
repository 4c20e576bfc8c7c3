import Foundation
import Interprocess
import InterprocessSystem

// Scenarios of `ipc bench` for local IPC (issue 14): a segment handed over as a descriptor against
// a named segment created and opened, and local socket round trips and throughput next to the pipe
// and socketpair baselines. The peer is this tool started again as `ipc bench-local-peer ROLE`
// (BenchLocalPeer.swift); it ends itself after `LocalBenchPeer.lifeLimit` seconds whatever happens,
// and a peer that dies ends the parent's reads (end of file), so no loop here can hang.

extension BenchPlan {
    /// Round trips per chunk, chunks per variant (latency).
    var localRoundTrips: Int { quick ? 2_000 : 20_000 }
    var localRounds: Int { quick ? 1 : 5 }
    /// Bytes per throughput run, and runs per variant.
    var localThroughputBytes: Int { quick ? 16 << 20 : 256 << 20 }
    var localThroughputRuns: Int { quick ? 1 : 5 }
    /// Hand-overs per variant and size, in rounds.
    var handOvers: Int { quick ? 200 : 2_000 }
    var handOverRounds: Int { quick ? 1 : 5 }
}

/// Starts a local bench peer, passing it `descriptors` (inherited by this child alone and closed
/// here once it is started).
func spawnLocalPeer(_ role: String, _ arguments: [String], passing descriptors: [BenchDescriptor] = []) throws -> ChildProcess {
    let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]
    let fds = descriptors.map(\.fd)
    BenchIO.setInheritable(fds, true)
    defer {
        BenchIO.setInheritable(fds, false)
        descriptors.forEach { $0.close() }
    }
    return try ChildProcess.spawn(
        executable, ["bench-local-peer", role, "--life-limit", "\(LocalBenchPeer.lifeLimit)"] + arguments,
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
        throw ToolError("bench-local-peer \(child.pid) \(termination.map { "\($0)" } ?? "did not finish in time and was killed")")
    }
}

// MARK: - Local socket round trip

/// Round-trip latency of a 1-byte message between two processes: ``LocalSocket`` (framed, over a
/// connection from a ``LocalSocketListener``; the untimed blocking calls, which wait in the kernel)
/// and ``LocalDatagramSocket`` (a timed receive: a datagram peer that died would never end an
/// untimed one; it waits in `poll`) against the baselines of
/// the ping-pong scenario, a pipe pair and a socketpair with 1-byte reads and writes. One peer
/// answers all four, one thread each (idle threads sleep in a read); the variants take turns in
/// chunks, round after round.
enum LocalSocketLatencyBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.localSocketLatency.rawValue, title: BenchScenarioID.localSocketLatency.title,
            unit: "ns per round trip", higherIsBetter: false, baseline: "socketpair")
    }

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let datagramServer = try LocalDatagramSocket.bind(name: "bench-dgram-\(ProcessIdentity.currentPID)-\(UInt32.random(in: .min ... .max))")
        defer { datagramServer.close() }
        let toPeer = try BenchIO.pipe()
        let fromPeer = try BenchIO.pipe()
        let pair = try BenchIO.socketPair()
        let child = try spawnLocalPeer(
            "echo",
            ["--socket", listener.path, "--datagram", datagramServer.path!, "--in", "\(toPeer.read.fd)", "--out", "\(fromPeer.write.fd)", "--pair", "\(pair.1.fd)"],
            passing: [toPeer.read, fromPeer.write, pair.1])
        defer { child.wait(timeout: .zero) }
        let connection = try listener.blockingAccept(timeout: .seconds(30))
        defer { connection.close() }
        // The datagram peer says hello first, so that we know its address.
        let hello = try datagramServer.blockingReceive(timeout: .seconds(30))
        guard let datagramPeer = hello.senderAddress else { throw ToolError("the datagram peer has no address") }

        let ping: [UInt8] = [1]
        var samples: [String: [Double]] = [:]
        func chunk(_ id: String, _ once: () throws -> Void) throws {
            for _ in 0..<(plan.localRoundTrips / 10) { try once() }
            var taken: [Double] = []
            taken.reserveCapacity(plan.localRoundTrips)
            for _ in 0..<plan.localRoundTrips {
                let start = BenchClock.now()
                try once()
                taken.append(Double(BenchClock.now() &- start))
            }
            samples[id, default: []] += taken
        }
        for _ in 0..<plan.localRounds {
            try chunk("pipe") {
                try BenchIO.writeByte(toPeer.write.fd)
                guard try BenchIO.readByte(fromPeer.read.fd) else { throw ToolError("the pipe peer closed its end") }
            }
            try chunk("socketpair") {
                try BenchIO.writeByte(pair.0.fd)
                guard try BenchIO.readByte(pair.0.fd) else { throw ToolError("the socketpair peer closed its end") }
            }
            try chunk("local-socket") {
                try connection.blockingSend(ping)
                _ = try connection.blockingReceive() // a dead peer ends it (end of file)
            }
            try chunk("local-datagram") {
                try datagramServer.blockingSend(ping, to: datagramPeer)
                _ = try datagramServer.blockingReceive(timeout: .seconds(30))
            }
        }
        // Closing our ends ends the peer's loops.
        toPeer.write.close()
        pair.0.close()
        connection.close()
        try datagramServer.blockingSend([], to: datagramPeer)
        try finishLocalPeer(child)

        for (id, name) in [
            ("pipe", "pipe round trip (2 pipes, 1 byte each way)"),
            ("socketpair", "Unix socket round trip (socketpair, 1 byte each way)"),
            ("local-socket", "LocalSocket round trip (1-byte message, framed)"),
            ("local-datagram", "LocalDatagramSocket round trip (1-byte datagram, credentials, timed receive)"),
        ] {
            let summary = Summary(samples[id] ?? [])
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.computeRatios()
        scenario.target("LocalSocket / socketpair", scenario.row("local-socket")!.ratio ?? .infinity, atMost: 1.5)
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.localRounds) round(s) of \(plan.localRoundTrips) samples per variant "
                + "after \(plan.localRoundTrips / 10) warm-up round trips; the peer answers every variant from its own thread")
    }
}

// MARK: - Local socket throughput

/// One-way throughput between two processes: `localThroughputBytes` in 64 KiB writes through a
/// pipe and a socketpair (the baselines), and as 64 KiB and 4 KiB ``LocalSocket`` messages; the
/// peer reads everything and answers one byte at the end. Median of the runs.
enum LocalSocketThroughputBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.localSocketThroughput.rawValue, title: BenchScenarioID.localSocketThroughput.title,
            unit: "bytes/s, one way", higherIsBetter: true, baseline: "socketpair")
    }

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let toPeer = try BenchIO.pipe()
        let fromPeer = try BenchIO.pipe()
        let pair = try BenchIO.socketPair()
        let total = plan.localThroughputBytes
        let child = try spawnLocalPeer(
            "sink",
            ["--socket", listener.path, "--in", "\(toPeer.read.fd)", "--out", "\(fromPeer.write.fd)", "--pair", "\(pair.1.fd)", "--bytes", "\(total)"],
            passing: [toPeer.read, fromPeer.write, pair.1])
        defer { child.wait(timeout: .zero) }
        let connection = try listener.blockingAccept(timeout: .seconds(30))
        defer { connection.close() }

        let chunk = [UInt8](repeating: 0xA5, count: 64 << 10)
        let small = [UInt8](repeating: 0x5A, count: 4 << 10)
        var rates: [String: [Double]] = [:]
        func run(_ id: String, _ body: () throws -> Void) throws {
            let start = BenchClock.now()
            try body()
            let seconds = Double(BenchClock.now() &- start) / 1e9
            rates[id, default: []].append(Double(total) / seconds)
        }
        for _ in 0..<plan.localThroughputRuns {
            try run("pipe") {
                try writeAll(chunk, total: total, to: toPeer.write.fd)
                guard try BenchIO.readByte(fromPeer.read.fd) else { throw ToolError("the pipe peer closed its end") }
            }
            try run("socketpair") {
                try writeAll(chunk, total: total, to: pair.0.fd)
                guard try BenchIO.readByte(pair.0.fd) else { throw ToolError("the socketpair peer closed its end") }
            }
            for (id, message) in [("local-socket-64k", chunk), ("local-socket-4k", small)] {
                try run(id) {
                    for _ in 0..<(total / message.count) { try connection.blockingSend(message) }
                    _ = try connection.blockingReceive(timeout: .seconds(60))
                }
            }
        }
        toPeer.write.close()
        pair.0.close()
        connection.close()
        try finishLocalPeer(child)

        for (id, name) in [
            ("pipe", "pipe, 64 KiB writes"),
            ("socketpair", "Unix socket (socketpair), 64 KiB writes"),
            ("local-socket-64k", "LocalSocket, 64 KiB messages"),
            ("local-socket-4k", "LocalSocket, 4 KiB messages"),
        ] {
            let summary = Summary(rates[id] ?? [])
            guard summary.count > 0 else { throw ToolError("\(id): no run completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, samples: summary.count, min: summary.min, max: summary.max))
        }
        scenario.computeRatios()
        scenario.target("LocalSocket 64 KiB / socketpair", scenario.row("local-socket-64k")!.ratio ?? 0, atLeast: 0.7)
        scenario.notes.append("\(total >> 20) MiB per run, median of \(plan.localThroughputRuns) run(s); the receiver answers once it has every byte")
    }

    private static func writeAll(_ chunk: [UInt8], total: Int, to fd: Int32) throws {
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
}

// MARK: - Segment hand-over

/// A segment handed to another process, per hand-over: an anonymous segment created, its descriptor
/// sent over a ``LocalSocket``, adopted (checked, mapped) and touched by the peer, which answers; against
/// a named segment created, its name sent, opened (checked, registered, mapped) and touched by the
/// peer, which closes it and answers, and closed (removed) here. Both include one round trip between
/// the processes, which the `local-socket-latency` scenario measures alone.
enum HandOverBench {
    static func scenario() -> BenchScenario {
        BenchScenario(
            id: BenchScenarioID.segmentHandOver.rawValue, title: BenchScenarioID.segmentHandOver.title,
            unit: "ns per hand-over", higherIsBetter: false, baseline: "named-64k")
    }

    static func measure(_ scenario: inout BenchScenario, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let child = try spawnLocalPeer("handover", ["--socket", listener.path])
        defer { child.wait(timeout: .zero) }
        let connection = try listener.blockingAccept(timeout: .seconds(30))
        defer { connection.close() }
        let prefix = "bench-handover-\(ProcessIdentity.currentPID)-"
        var counter = 0

        var samples: [String: [Double]] = [:]
        func measure(_ id: String, _ once: () throws -> Void) throws {
            for _ in 0..<(plan.handOvers / 10) { try once() }
            for _ in 0..<plan.handOvers {
                let start = BenchClock.now()
                try once()
                samples[id, default: []].append(Double(BenchClock.now() &- start))
            }
        }
        for _ in 0..<plan.handOverRounds {
            for (label, size) in [("64k", 64 << 10), ("4m", 4 << 20)] {
                try measure("anonymous-\(label)") {
                    let segment = try SharedMemory.anonymous(size: size)
                    try connection.blockingSend(segment)
                    guard try connection.blockingReceive(timeout: .seconds(30)).bytes == [1] else { throw ToolError("the peer could not map the segment") }
                    segment.close()
                }
                try measure("named-\(label)") {
                    counter += 1
                    let name = prefix + "\(counter)"
                    let segment = try SharedMemory.create(name: name, size: size)
                    try connection.blockingSend(Array(name.utf8))
                    guard try connection.blockingReceive(timeout: .seconds(30)).bytes == [1] else { throw ToolError("the peer could not open the segment") }
                    segment.close()
                }
            }
        }
        connection.close()
        try finishLocalPeer(child)
        // Nothing may be left: the last holder of each named segment removed it.
        let left = SharedMemoryObject.listNames().filter { $0.hasPrefix(prefix) }
        scenario.correctness("every named segment removed after its hand-over", left.isEmpty)
        for name in left { try? SharedMemory.remove(name: name) }

        for (id, name) in [
            ("anonymous-64k", "anonymous 64 KiB: create, send descriptor, adopt + map + touch"),
            ("named-64k", "named 64 KiB: create, send name, open + map + touch, close"),
            ("anonymous-4m", "anonymous 4 MiB: create, send descriptor, adopt + map + touch"),
            ("named-4m", "named 4 MiB: create, send name, open + map + touch, close"),
        ] {
            let summary = Summary(samples[id] ?? [])
            guard summary.count > 0 else { throw ToolError("\(id): no hand-over completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.computeRatios()
        scenario.target("anonymous / named (64 KiB)", scenario.row("anonymous-64k")!.median / scenario.row("named-64k")!.median, atMost: 1)
        scenario.target("anonymous / named (4 MiB)", scenario.row("anonymous-4m")!.median / scenario.row("named-4m")!.median, atMost: 1)
        scenario.notes.append(
            "\(plan.handOverRounds) round(s) of \(plan.handOvers) hand-overs per variant after \(plan.handOvers / 10) warm-up ones; "
                + "each includes the peer's answer (one round trip) and the creation of the segment, whose pages are reserved up front")
    }
}
