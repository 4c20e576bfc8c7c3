/// One scenario of `ipc bench`: what it compares, in which unit, against which baseline row, with
/// which speed targets, which parts its peer processes play, and how it measures.
///
/// A scenario is one file under `Scenarios/` (a caseless enum conforming to this protocol, the
/// ``BenchPlan`` properties it needs as an extension, its peer roles) and one line in
/// ``BenchScenarios/all``. The runner (``BenchSuite``) starts the result with the scenario's
/// identity, calls ``measure(_:_:)``, computes each row's ratio to the baseline row, then checks the
/// ``targets``; a scenario that throws gets its error recorded and the others still run.
package protocol BenchScenario {
    /// The id that `ipc bench --scenario` takes and the JSON reports, e.g. "ping-pong".
    static var id: String { get }
    /// The title printed above its table, e.g. "ping-pong between two processes".
    static var title: String { get }
    /// One line for `ipc bench --help`: what it compares, e.g. "ProcessMutex vs pthread robust
    /// mutex vs Swift Mutex".
    static var summary: String { get }
    /// What a row's median and p99 measure, e.g. "ns per round trip" or "ops/s" (a unit that starts
    /// with "ns" is printed as a duration, any other as a rate).
    static var unit: String { get }
    /// Whether a larger figure is better (rates) rather than worse (times).
    static var higherIsBetter: Bool { get }
    /// The id of the row that the ratios are against (an OS baseline, the floor), if any.
    static var baseline: String? { get }
    /// The speed targets, checked in this order once ``measure(_:_:)`` has returned (none by default).
    static var targets: [BenchTarget] { get }
    /// The parts that its peer processes play (`ipc bench-peer ROLE`; none by default).
    static var roles: [BenchRole] { get }
    /// Measures: appends the rows, the correctness checks (``BenchScenarioResult/correctness(_:_:)``)
    /// and the notes to `result`. Throws when the scenario cannot be measured.
    static func measure(_ result: inout BenchScenarioResult, _ plan: BenchPlan) throws
}

extension BenchScenario {
    package static var targets: [BenchTarget] { [] }
    package static var roles: [BenchRole] { [] }
}

/// Every scenario, in the order `ipc bench` runs them (and prints, and lists in its help).
package enum BenchScenarios {
    package static var all: [any BenchScenario.Type] {
        [
            UncontendedLockBench.self,
            PingPongBench.self,
            ChannelRoundTripBench.self,
            ChannelThroughputBench.self,
            ChannelProducersBench.self,
            ChannelLoanThroughputBench.self,
            MessageQueueRoundTripBench.self,
            MessageQueueProducersBench.self,
            BroadcastFanOutBench.self,
            ServiceRoundTripBench.self,
            ContendedLockBench.self,
            OversubscribedBench.self,
            SharedVariableBench.self,
            LoadedBench.self,
            LocalSocketLatencyBench.self,
            LocalSocketThroughputBench.self,
            HandOverBench.self,
            AsyncWakeBench.self,
            HeapAllocateFreeBench.self,
            HeapTwoProcessesBench.self,
            HeapMixedSizesBench.self,
        ]
    }

    /// The ids of every scenario, in order.
    package static var ids: [String] { all.map { $0.id } }

    /// The scenario with this id.
    package static func named(_ id: String) -> (any BenchScenario.Type)? {
        all.first { $0.id == id }
    }

    /// Every peer role of every scenario, in scenario order.
    static var roles: [BenchRole] { all.flatMap { $0.roles } }

    /// The names of every peer role (`ipc bench-peer ROLE`), in scenario order.
    package static var roleNames: [String] { roles.map(\.name) }
}

/// A speed target: the median of one row divided by the median of another must be at most, at
/// least or below a limit. The value is reported as a ratio ("1.18×"); it fails when a row is
/// missing or the divisor is not positive.
package struct BenchTarget: Sendable {
    /// How the ratio must compare with the limit.
    package enum Comparison: Sendable {
        case atMost(Double)
        case atLeast(Double)
        case below(Double)
    }

    /// The name it is printed under, e.g. "ProcessSemaphore / floor".
    package var name: String
    /// The id of the row divided.
    package var row: String
    /// The id of the row it is divided by.
    package var over: String
    package var comparison: Comparison

    /// `name`: median of `row` / median of `over`, compared with a limit.
    package init(_ name: String, _ row: String, over: String, _ comparison: Comparison) {
        self.name = name
        self.row = row
        self.over = over
        self.comparison = comparison
    }
}
