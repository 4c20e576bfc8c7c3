import ArgumentParser
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Round-trip latency of a 1-byte message between two processes: ``LocalSocket`` (framed, over a
/// connection from a ``LocalSocketListener``; the untimed blocking calls, which wait in the kernel)
/// and ``LocalDatagramSocket`` (a timed receive: a datagram peer that died would never end an
/// untimed one; it waits in `poll`) against the baselines of
/// the ping-pong scenario, a pipe pair and a socketpair with 1-byte reads and writes. One peer
/// answers all four, one thread each (idle threads sleep in a read); the variants take turns in
/// chunks, round after round.
enum LocalSocketLatencyBench: BenchScenario {
    static let id = "local-socket-latency"
    static let title = "local socket round trip, next to pipe and socketpair"
    static let summary = "LocalSocket and LocalDatagramSocket round trips vs pipe and socketpair"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "socketpair"
    static let targets = [BenchTarget("LocalSocket / socketpair", "local-socket", over: "socketpair", .atMost(1.5))]
    static let roles: [BenchRole] = [.echo]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let datagramServer = try LocalDatagramSocket.bind(name: "bench-dgram-\(ProcessIdentity.currentPID)-\(UInt32.random(in: .min ... .max))")
        defer { datagramServer.close() }
        let toPeer = try BenchIO.pipe()
        let fromPeer = try BenchIO.pipe()
        let pair = try BenchIO.socketPair()
        let child = try spawnLocalPeer(
            .echo,
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
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.localRounds) round(s) of \(plan.localRoundTrips) samples per variant "
                + "after \(plan.localRoundTrips / 10) warm-up round trips; the peer answers every variant from its own thread")
    }
}

extension BenchPlan {
    /// Round trips per chunk, chunks per variant.
    var localRoundTrips: Int { quick ? 2_000 : 20_000 }
    var localRounds: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let echo = BenchRole("echo") { try $0.echo() }
}

// MARK: - The peer (`ipc bench-peer echo`)

extension BenchPeer {
    /// Answers every byte on `--in` with one on `--out` (pipes), every byte on `--pair` (a
    /// socketpair end), every message on a connection to `--socket`, and every datagram on a socket
    /// connected to `--datagram` (after a hello, so that the bench learns its address): one thread
    /// each, until each ends.
    func echo() throws {
        let input = self.input, output = self.output, pair = self.pair
        guard let path = socket, let datagramPath = datagram, input >= 0, output >= 0, pair >= 0 else {
            throw ValidationError("echo needs --socket, --datagram, --in, --out and --pair")
        }
        let connection = try LocalSocket.blockingConnect(path: path, timeout: .seconds(30))
        let datagrams = try LocalDatagramSocket.connect(path: datagramPath)
        try datagrams.blockingSend(Array("hello".utf8))
        let pipes: @Sendable () throws -> Void = { try Self.echoBytes(input, output) }
        let sockets: @Sendable () throws -> Void = { try Self.echoBytes(pair, pair) }
        let messages: @Sendable () throws -> Void = { try Self.echoMessages(connection) }
        let datagramLoop: @Sendable () throws -> Void = { try Self.echoDatagrams(datagrams) }
        try concurrently([pipes, sockets, messages, datagramLoop])
    }

    private static func echoBytes(_ input: Int32, _ output: Int32) throws {
        while try BenchIO.readByte(input) { try BenchIO.writeByte(output) }
    }

    private static func echoMessages(_ connection: LocalSocket) throws {
        while let message = try nextMessage(connection) {
            try connection.blockingSend(message.bytes)
        }
    }

    private static func echoDatagrams(_ socket: LocalDatagramSocket) throws {
        while true {
            let message = try socket.blockingReceive()
            if message.bytes.isEmpty { return }
            try socket.blockingSend(message.bytes)
        }
    }
}
