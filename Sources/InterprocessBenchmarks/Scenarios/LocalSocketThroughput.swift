import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// One-way throughput between two processes: `localThroughputBytes` in 64 KiB writes through a
/// pipe and a socketpair (the baselines), and as 64 KiB and 4 KiB ``LocalSocket`` messages; the
/// peer reads everything and answers one byte at the end. Median of the runs.
enum LocalSocketThroughputBench: BenchScenario {
    static let id = "local-socket-throughput"
    static let title = "local socket throughput, next to pipe and socketpair"
    static let summary = "LocalSocket throughput, 64 KiB and 4 KiB messages, vs pipe and socketpair"
    static let unit = "bytes/s, one way"
    static let higherIsBetter = true
    static let baseline: String? = "socketpair"
    static let targets = [BenchTarget("LocalSocket 64 KiB / socketpair", "local-socket-64k", over: "socketpair", .atLeast(0.7))]
    static let roles: [BenchRole] = [.sink]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let toPeer = try BenchIO.pipe()
        let fromPeer = try BenchIO.pipe()
        let pair = try BenchIO.socketPair()
        let total = plan.localThroughputBytes
        let child = try spawnLocalPeer(
            .sink,
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
                try BenchIO.writeAll(chunk, total: total, to: toPeer.write.fd)
                guard try BenchIO.readByte(fromPeer.read.fd) else { throw ToolError("the pipe peer closed its end") }
            }
            try run("socketpair") {
                try BenchIO.writeAll(chunk, total: total, to: pair.0.fd)
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
        scenario.notes.append("\(total >> 20) MiB per run, median of \(plan.localThroughputRuns) run(s); the receiver answers once it has every byte")
    }
}

extension BenchPlan {
    /// Bytes per run, and runs per variant.
    var localThroughputBytes: Int { quick ? 16 << 20 : 256 << 20 }
    var localThroughputRuns: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let sink = BenchRole("sink") { try $0.sink() }
}

// MARK: - The peer (`ipc bench-peer sink`)

extension BenchPeer {
    /// Reads `--bytes` bytes from `--in` and answers one byte on `--out`; the same on `--pair`;
    /// receives messages on `--socket` until it has `--bytes` bytes and answers one message; over
    /// and over until each ends.
    func sink() throws {
        let input = self.input, output = self.output, pair = self.pair, total = bytes
        guard let path = socket, input >= 0, output >= 0, pair >= 0, total > 0 else {
            throw ValidationError("sink needs --socket, --in, --out, --pair and --bytes")
        }
        let connection = try LocalSocket.blockingConnect(path: path, timeout: .seconds(30))
        let pipes: @Sendable () throws -> Void = { while try BenchIO.drain(input, total) { try BenchIO.writeByte(output) } }
        let sockets: @Sendable () throws -> Void = { while try BenchIO.drain(pair, total) { try BenchIO.writeByte(pair) } }
        let messages: @Sendable () throws -> Void = { try Self.sinkMessages(connection, total) }
        try concurrently([pipes, sockets, messages])
    }

    private static func sinkMessages(_ connection: LocalSocket, _ total: Int) throws {
        var received = 0
        while let message = try nextMessage(connection) {
            received += message.bytes.count
            if received >= total {
                received = 0
                try connection.blockingSend([1])
            }
        }
    }
}
