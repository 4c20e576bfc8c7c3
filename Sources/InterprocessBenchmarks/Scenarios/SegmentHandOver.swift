import ArgumentParser
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// A segment handed to another process, per hand-over: an anonymous segment created, its descriptor
/// sent over a ``LocalSocket``, adopted (checked, mapped) and touched by the peer, which answers; against
/// a named segment created, its name sent, opened (checked, registered, mapped) and touched by the
/// peer, which closes it and answers, and closed (removed) here. Both include one round trip between
/// the processes, which the `local-socket-latency` scenario measures alone.
enum HandOverBench: BenchScenario {
    static let id = "segment-hand-over"
    static let title = "segment hand-over: anonymous (descriptor) vs named (create + open)"
    static let summary = "a segment handed over as a descriptor vs a named one created and opened"
    static let unit = "ns per hand-over"
    static let higherIsBetter = false
    static let baseline: String? = "named-64k"
    static let targets = [
        BenchTarget("anonymous / named (64 KiB)", "anonymous-64k", over: "named-64k", .atMost(1)),
        BenchTarget("anonymous / named (4 MiB)", "anonymous-4m", over: "named-4m", .atMost(1)),
    ]
    static let roles: [BenchRole] = [.handOver]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let listener = try benchListener()
        defer { listener.close() }
        let child = try spawnLocalPeer(.handOver, ["--socket", listener.path])
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
        scenario.notes.append(
            "\(plan.handOverRounds) round(s) of \(plan.handOvers) hand-overs per variant after \(plan.handOvers / 10) warm-up ones; "
                + "each includes the peer's answer (one round trip) and the creation of the segment, whose pages are reserved up front")
    }
}

extension BenchPlan {
    /// Hand-overs per variant and size, in rounds.
    var handOvers: Int { quick ? 200 : 2_000 }
    var handOverRounds: Int { quick ? 1 : 5 }
}

extension BenchRole {
    static let handOver = BenchRole("handover") { try $0.handOver() }
}

// MARK: - The peer (`ipc bench-peer handover`)

extension BenchPeer {
    /// For each message on `--socket`: adopts the segment it carries or opens the named segment it
    /// names, touches its first and last byte, closes it, and answers `[1]` (`[0]` on failure).
    func handOver() throws {
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
