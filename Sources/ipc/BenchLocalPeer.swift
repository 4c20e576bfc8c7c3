import ArgumentParser
import Foundation
import Interprocess
import InterprocessSystem

/// `ipc bench-local-peer ROLE …` (hidden): the other process of the local IPC scenarios of
/// `ipc bench` (BenchLocal.swift).
///
/// - `echo`: answers every byte on `--in` with one on `--out` (pipes), every byte on `--pair` (a
///   socketpair end), every message on a connection to `--socket`, and every datagram on a socket
///   connected to `--datagram` (after a hello, so that the bench learns its address) — one thread
///   each, until each ends.
/// - `sink`: reads `--bytes` bytes from `--in`, answers one byte on `--out`; the same on `--pair`;
///   then receives messages on `--socket` until it has `--bytes` bytes and answers one message; over
///   and over until each ends.
/// - `handover`: for each message on `--socket`, adopts the segment it carries or opens the named
///   segment it names, touches its first and last byte, closes it, and answers `[1]` (`[0]` on
///   failure).
///
/// It ends itself with SIGALRM after `--life-limit` seconds.
struct LocalBenchPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-local-peer",
        abstract: "A peer process of the local IPC scenarios of `ipc bench`.",
        shouldDisplay: false
    )

    /// The peer's life limit, in seconds.
    static let lifeLimit = 120

    @Argument(help: "echo, sink or handover.")
    var role: String

    @Option(help: "A listener's socket path to connect to.")
    var socket: String?

    @Option(help: "A datagram socket path to connect to.")
    var datagram: String?

    @Option(name: .customLong("in"), help: "A pipe to read from.")
    var input: Int32 = -1

    @Option(name: .customLong("out"), help: "A pipe to write to.")
    var output: Int32 = -1

    @Option(help: "A socketpair end.")
    var pair: Int32 = -1

    @Option(help: "Bytes per sink run.")
    var bytes = 0

    @Option(name: .customLong("life-limit"), help: "Seconds after which this process ends itself.")
    var lifeLimit = 120

    func run() throws {
        PeerLifetime.limit(seconds: lifeLimit)
        switch role {
        case "echo": try echo()
        case "sink": try sink()
        case "handover": try handOver()
        default: throw ValidationError("unknown role \(role)")
        }
    }

    /// Runs each body on its own thread and waits for all; the first error is thrown.
    private func concurrently(_ bodies: [@Sendable () throws -> Void]) throws {
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

    private func echo() throws {
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

    /// The next message, or nil when the peer hung up.
    private static func nextMessage(_ connection: LocalSocket) throws -> LocalMessage? {
        do {
            return try connection.blockingReceive()
        } catch {
            if error.code == .disconnected { return nil }
            throw error
        }
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

    private func sink() throws {
        let input = self.input, output = self.output, pair = self.pair, total = bytes
        guard let path = socket, input >= 0, output >= 0, pair >= 0, total > 0 else {
            throw ValidationError("sink needs --socket, --in, --out, --pair and --bytes")
        }
        let connection = try LocalSocket.blockingConnect(path: path, timeout: .seconds(30))
        let pipes: @Sendable () throws -> Void = { while try Self.drain(input, total) { try BenchIO.writeByte(output) } }
        let sockets: @Sendable () throws -> Void = { while try Self.drain(pair, total) { try BenchIO.writeByte(pair) } }
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

    /// Reads `total` bytes; false at end of file.
    private static func drain(_ fd: Int32, _ total: Int) throws -> Bool {
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

    private func handOver() throws {
        guard let path = socket else { throw ValidationError("handover needs --socket") }
        let connection = try LocalSocket.blockingConnect(path: path, timeout: .seconds(30))
        while let message = try Self.nextMessage(connection) {
            var ok = true
            do {
                let segment: SharedMemory
                if message.descriptors.count == 1 {
                    segment = try SharedMemory.adopt(message.descriptors[0])
                } else {
                    segment = try SharedMemory.open(name: String(decoding: message.bytes, as: UTF8.self))
                }
                try segment.withUnsafeMutableBytes { bytes in
                    bytes[0] = 1
                    bytes[bytes.count - 1] = 1
                }
                segment.close()
            } catch {
                ok = false
            }
            try connection.blockingSend([ok ? 1 : 0])
        }
    }
}

/// The first error of several threads.
private final class FailureBox: @unchecked Sendable {
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
