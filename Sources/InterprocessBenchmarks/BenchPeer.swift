package import ArgumentParser
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// `ipc bench-peer ROLE …` (hidden): the other process(es) of `ipc bench`.
///
/// A peer plays one part (a ``BenchRole``) of one scenario: a role in the bench's segment
/// (`--segment`) opens it, does its part, records what it measured in its slot of the segment and
/// exits 0; a role of the local IPC scenarios works on the descriptors and sockets it is given.
/// It never outlives its bounds: it ends itself with SIGALRM after `--life-limit` seconds, a
/// spinning peer gives up when its parent changes (the bench died), and the bench kills it if it
/// overstays.
package struct BenchPeer: ParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "bench-peer",
        abstract: "A peer process that `ipc bench` starts.",
        shouldDisplay: false
    )

    /// A peer's life limit, in seconds, as the bench starts it (it ends itself with SIGALRM after this many seconds): a last resort
    /// against a peer nobody waits for, long enough for a full run on a busy machine (the segment
    /// hand-over scenario took more than 120 s beside two CPU-bound processes).
    static let lifeLimit = 900

    @Argument(help: "What to do: \(BenchScenarios.roles.map(\.name).joined(separator: ", ")).")
    var role: BenchRole

    @Option(help: "The bench's segment (roles in the segment).")
    var segment: String?

    @Option(help: "This peer's result slot (and pair number).")
    var slot = 0

    @Option(help: "Operations to do (contention roles), values to put (loaded putter).")
    var count = 0

    @Option(help: "Peers that start together (contention roles), takers to stop (loaded putter).")
    var parties = 1

    @Option(name: .customLong("in"), help: "Descriptor to read from (pipe and socket roles).")
    var input: Int32 = -1

    @Option(name: .customLong("out"), help: "Descriptor to write to (pipe and socket roles).")
    var output: Int32 = -1

    @Option(help: "A socketpair end (local roles).")
    var pair: Int32 = -1

    @Option(help: "A listener's socket path to connect to (local roles).")
    var socket: String?

    @Option(help: "A datagram socket path to connect to (local roles).")
    var datagram: String?

    @Option(help: "Bytes per sink run.")
    var bytes = 0

    @Option(name: .customLong("life-limit"), help: "Seconds after which this process ends itself.")
    var lifeLimit = Self.lifeLimit

    package init() {}

    package func validate() throws {
        guard (0..<BenchLayout.slotCount).contains(slot), slot < BenchLayout.pairCount || !role.name.hasPrefix("pair-") else {
            throw ValidationError("--slot \(slot) is out of range")
        }
        guard count >= 0, lifeLimit > 0, parties > 0 else {
            throw ValidationError("--count, --parties and --life-limit must be positive")
        }
        if role.inSegment && segment == nil { throw ValidationError("\(role.name) needs --segment") }
    }

    package func run() throws {
        PeerLifetime.limit(seconds: lifeLimit)
        try role.run(self)
    }

    /// Opens the bench's segment and runs `body` with it mapped (for roles in the segment).
    fileprivate func withSegment(_ body: (PeerWork) throws -> Void) throws {
        guard let segment else { throw ToolError("\(role.name) needs --segment") }
        let memory = try SharedMemory.open(name: segment)
        defer { memory.close() }
        guard memory.size >= BenchLayout.size else { throw ToolError("\(segment) is not a bench segment") }
        try memory.withUnsafeMutableBytes { buffer in
            let base = buffer.baseAddress!
            try body(
                PeerWork(
                    memory: memory, base: base, control: BenchControl(base: base), slot: slot, count: count,
                    parties: parties, input: input, output: output, deadline: Deadline(after: .seconds(lifeLimit))))
        }
    }
}

/// A part that a peer process plays in a scenario: `ipc bench-peer NAME`. A scenario lists its
/// roles in ``BenchScenario/roles``; the bench starts one with ``BenchPeers/spawn(_:segment:_:passing:)``
/// (a role in the segment) or ``spawnLocalPeer(_:_:passing:)``.
package struct BenchRole: Sendable, ExpressibleByArgument {
    /// The name on the peer's command line, unique among every scenario's roles.
    package let name: String
    /// Whether it works in the bench's segment (then `--segment` is required).
    let inSegment: Bool
    /// What the peer does, given its options.
    let run: @Sendable (BenchPeer) throws -> Void

    /// A role that needs only the peer's options (descriptors, socket paths, counts).
    init(_ name: String, _ run: @escaping @Sendable (BenchPeer) throws -> Void) {
        self.init(name, inSegment: false, run)
    }

    private init(_ name: String, inSegment: Bool, _ run: @escaping @Sendable (BenchPeer) throws -> Void) {
        self.name = name
        self.inSegment = inSegment
        self.run = run
    }

    /// A role in the bench's segment: `body` gets it opened and mapped (`--segment` is required).
    static func inSegment(_ name: String, _ body: @escaping @Sendable (PeerWork) throws -> Void) -> BenchRole {
        BenchRole(name, inSegment: true) { peer in try peer.withSegment(body) }
    }

    package init?(argument: String) {
        guard let role = BenchScenarios.roles.first(where: { $0.name == argument }) else { return nil }
        self = role
    }

    package static var allValueStrings: [String] { BenchScenarios.roles.map(\.name) }

    package static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
}

/// A peer's view of the bench's segment and its options, for roles in the segment. The scenarios
/// add their roles' work as extensions; the work that several scenarios share is here.
struct PeerWork {
    let memory: SharedMemory
    let base: UnsafeMutableRawPointer
    let control: BenchControl
    let slot: Int
    let count: Int
    let parties: Int
    let input: Int32
    let output: Int32
    let deadline: Deadline

    /// Waits on `ping`, signals `pong`; ends when woken with the pair's quit flag set.
    func pongSemaphores(_ ping: ProcessSemaphore, _ pong: ProcessSemaphore, pair: Int) throws {
        let quit = control.word(BenchLayout.quit(pair: pair))
        control.markReady()
        while true {
            try ping.blockingWait()
            if quit.pointee.load(ordering: .relaxed) != 0 { return }
            try pong.signal()
        }
    }

    /// Answers every byte read with a byte written, until end of file.
    func pongBytes() throws {
        guard input >= 0, output >= 0 else { throw ValidationError("--in and --out are required") }
        control.markReady()
        while try BenchIO.readByte(input) {
            try BenchIO.writeByte(output)
        }
    }
}
