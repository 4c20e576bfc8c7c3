import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// A 64-byte request / response round trip between two processes through a ``Service`` (a client
/// here, a server in a peer), against the floor (both processes spinning on one atomic word) and a
/// ``Channel`` pair (one channel each way: the same messages without reply slots). Run as the
/// channel round trip is: every round trip timed on its own, the variants taking turns in chunks.
///
/// The target (issue 13: ≤ 3× the floor) is the exclusive server's, as the channel round trip's
/// ≤ 2× is the exclusive endpoints': one client and one server is what an ``ExclusiveServer`` is
/// for. A shared server's row is shown beside it: it claims each request with two
/// compare-and-swaps and releases its queue slot with sequentially consistent stores so that
/// several servers can serve at once, which puts it at 2.5–3.3× on the 2026-12-04 machine.
enum ServiceRoundTripBench: BenchScenario {
    static let id = "request-response"
    static let title = "64-byte request / response round trip between two processes"
    static let summary = "Service request (64-byte values; shared server, and an exclusive one) vs spinning floor and a Channel pair"
    static let unit = "ns per round trip"
    static let higherIsBetter = false
    static let baseline: String? = "floor-spin"
    static let targets = [
        BenchTarget("Service, exclusive server / floor", "service-exclusive", over: "floor-spin", .atMost(3)),
    ]
    // The floor's peer is the ping-pong scenario's (`pong-spin`), the channel pair's the channel
    // round trip's (`pong-channel`).
    static let roles: [BenchRole] = [.serveService, .serveServiceExclusively]

    static func measure(_ scenario: inout BenchScenarioResult, _ plan: BenchPlan) throws {
        let session = try BenchSession()
        defer { session.close() }
        let names = ChannelNames(session: session.name.description)
        let ping = try Channel<BenchMessage>.create(name: names.ping, capacity: 16)
        defer { ping.detach() }
        let pong = try Channel<BenchMessage>.create(name: names.pong, capacity: 16)
        defer { pong.detach() }
        let service = try Service<BenchMessage, BenchMessage>.create(name: Self.serviceName(session.name.description), capacity: 16)
        defer { service.detach() }
        let exclusiveService = try Service<BenchMessage, BenchMessage>.create(
            name: Self.exclusiveServiceName(session.name.description), capacity: 16)
        defer { exclusiveService.detach() }
        var samples: [String: [UInt64]] = [:]
        try session.withMemory { base in
            let control = BenchControl(base: base)
            let floorWord = atomic32(base + BenchLayout.floorWord)
            floorWord.initialize(to: Atomic(0))
            let peers = session.peers
            defer { peers.killAll() }
            try peers.spawn(.pongSpin, segment: session.name)
            try peers.spawn(.pongChannel, segment: session.name)
            try peers.spawn(.serveService, segment: session.name)
            try peers.spawn(.serveServiceExclusively, segment: session.name)
            let deadline = Deadline(after: plan.stepTimeout)
            try peers.awaitReady(control, count: 4, deadline: deadline)

            let watchdog = Watchdog(peers: peers.children, deadline: deadline) {
                // Release a side that waits for an answer that will not come.
                pong.close()
                service.close()
                exclusiveService.close()
            }
            var spin = SpinRoundTrip(word: floorWord, watchdog: watchdog)
            var channels = ChannelPairRoundTrip(ping: ping, pong: pong)
            var requests = ServiceRoundTrip(service: service)
            var exclusiveRequests = ServiceRoundTrip(service: exclusiveService)
            do {
                defer { watchdog.disarm() }
                for _ in 0..<plan.pingPongRounds {
                    try PingPongBench.chunk(&spin, plan, watchdog, into: &samples["floor-spin", default: []])
                    try PingPongBench.chunk(&requests, plan, watchdog, into: &samples["service", default: []])
                    try PingPongBench.chunk(&exclusiveRequests, plan, watchdog, into: &samples["service-exclusive", default: []])
                    try PingPongBench.chunk(&channels, plan, watchdog, into: &samples["channel", default: []])
                }
            }
            spin.finish()
            try channels.finish()
            requests.finish()
            exclusiveRequests.finish()
            try peers.finish(deadline: deadline)
            scenario.correctness("every reply was the request sent", channels.correct && requests.correct && exclusiveRequests.correct)
        }

        let rows = [
            ("floor-spin", "floor: spin on one atomic word (pause)"),
            ("service", "Service request (64-byte BitwiseCopyable values, blocking request, blocking serve)"),
            ("service-exclusive", "Service request, exclusive server (ExclusiveServer.blockingServe)"),
            ("channel", "Channel pair (64-byte values, one channel each way, blocking send and receive)"),
        ]
        for (id, name) in rows {
            let summary = Summary((samples[id] ?? []).map { Double($0) })
            guard summary.count > 0 else { throw ToolError("\(id): no round trip completed") }
            scenario.rows.append(BenchRow(id: id, name: name, median: summary.median, p99: summary.p99, samples: summary.count))
        }
        scenario.notes.append(
            "each sample is one round trip between two clock reads; \(plan.pingPongRounds) round(s) of chunks per variant, "
                + "each chunk \(plan.pingPongWarmup) warm-up round trips then up to \(plan.pingPongSamples) samples "
                + "or \(plan.pingPongBudget / 1_000_000) ms (the ping-pong scenario's amounts); a service of 16 slots")
    }

    static func serviceName(_ session: String) -> String { session + "-svc" }
    static func exclusiveServiceName(_ session: String) -> String { session + "-svx" }
}

/// One request, and its reply checked.
struct ServiceRoundTrip: RoundTrip {
    let service: Service<BenchMessage, BenchMessage>
    var sequence: UInt64 = 1
    var correct = true

    @inline(__always)
    mutating func once() throws {
        let answer = try service.blockingRequest(BenchMessage(sequence))
        if answer.sequence != sequence || !answer.isWhole { correct = false }
        sequence &+= 1
    }

    /// Closing the service ends the peer's loop.
    func finish() {
        service.close()
    }
}

extension BenchRole {
    static let serveService = BenchRole.inSegment("serve-service") { try $0.serveService() }
    static let serveServiceExclusively = BenchRole.inSegment("serve-service-exclusive") { try $0.serveServiceExclusively() }
}

// MARK: - The serving side (`ipc bench-peer serve-service`)

extension PeerWork {
    /// Answers every request with the request itself, until the service is closed.
    func serveService() throws {
        let service = try Service<BenchMessage, BenchMessage>.open(name: ServiceRoundTripBench.serviceName(memory.name))
        defer { service.detach() }
        control.markReady()
        try service.blockingServe { $0 }
    }

    /// ``serveService()`` through the service's exclusive server role.
    func serveServiceExclusively() throws {
        let service = try Service<BenchMessage, BenchMessage>.open(name: ServiceRoundTripBench.exclusiveServiceName(memory.name))
        defer { service.detach() }
        var server = try service.exclusiveServer()
        control.markReady()
        try server.blockingServe { $0 }
    }
}
