// Runs `ipc bench --quick --json` once: it must finish, exit 0 and report every scenario. No timing
// assertions: the numbers are for the benchmark (and a debug build's numbers mean nothing).
import Foundation
import Interprocess
import InterprocessBenchmarks
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite(.serialized)
struct BenchSmokeTests {
    @Test func quickJSONRunReportsEveryScenario() throws {
        let ipc = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        let (termination, output, error) = try ChildProcess.run(ipc, ["bench", "--quick", "--json"], timeout: .seconds(120))
        #expect(termination == .exited(0), "ipc bench --quick --json: \(String(describing: termination)); stderr: \(error)")

        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "not a JSON object: \(output)")
        #expect(json["quick"] as? Bool == true)
        #expect(json["build"] as? String != nil)
        let scenarios = try #require(json["scenarios"] as? [[String: Any]])
        let ids = scenarios.compactMap { $0["id"] as? String }
        for expected in ["uncontended-lock", "ping-pong", "contended-lock", "oversubscribed", "shared-variable", "loaded"] {
            #expect(ids.contains(expected), "scenario \(expected) missing from \(ids)")
        }
        #expect(ids == BenchScenarios.ids, "the run reports every registered scenario, in order")
        for scenario in scenarios {
            let id = scenario["id"] as? String ?? "?"
            #expect(scenario["error"] == nil, "scenario \(id) failed: \(scenario["error"] ?? "")")
            let rows = scenario["rows"] as? [[String: Any]] ?? []
            #expect(!rows.isEmpty, "scenario \(id) has no rows")
            for row in rows {
                #expect(row["median"] is Double || row["median"] is Int, "scenario \(id): a row without a median")
                #expect(row["correct"] as? Bool != false, "scenario \(id): \(row["name"] ?? "?") counted wrong")
            }
        }
        let leftovers = SharedMemoryObject.listNames().filter { $0.hasPrefix("bench_") && !isHeldByLiveProcess($0) }
        #expect(leftovers.isEmpty, "bench segments left in /dev/shm: \(leftovers)")
    }

    /// Scenarios are told apart by their ids (`--scenario`, the JSON) and peers by their role names
    /// (`ipc bench-peer ROLE`), so each must be unique across the registry.
    @Test func scenarioIdsAndPeerRolesAreUnique() {
        let ids = BenchScenarios.ids
        #expect(Set(ids).count == ids.count, "duplicate scenario ids: \(ids)")
        #expect(!ids.contains(""))
        let roles = BenchScenarios.roleNames
        #expect(Set(roles).count == roles.count, "duplicate peer roles: \(roles)")
        #expect(!roles.isEmpty)
    }

    /// Whether a `bench_…` object belongs to another run of the bench that is still going (its name
    /// alone cannot tell; its holders can).
    private func isHeldByLiveProcess(_ name: String) -> Bool {
        (try? SharedMemory.info(name: name))?.holders.contains(where: \.alive) ?? false
    }
}
