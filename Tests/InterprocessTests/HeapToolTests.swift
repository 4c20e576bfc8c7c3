// `ipc inspect`, `ipc check` and `ipc gc` on shared heaps, run as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import CInterprocess
import Testing

@Suite("ipc inspect/check/gc for heaps", .serialized, .timeLimit(.minutes(3)))
struct HeapToolTests {
    private struct Result {
        var termination: ChildProcess.Termination?
        var output: String
        var error: String
        var succeeded: Bool { termination == .exited(0) }
    }

    private func ipc(_ arguments: String...) throws -> Result {
        let path = try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
        let (termination, output, error) = try ChildProcess.run(path, arguments, timeout: .seconds(60))
        return Result(termination: termination, output: output, error: error)
    }

    @Test func inspectShowsStatisticsProcessesAndNamedObjects() throws {
        try withCleanNames("toolheap") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            let blocks = try (0..<3).map { _ in try heap.unsafeAllocate(byteCount: 1000) }
            _ = try heap.findOrCreate(name: "config", initialValue: UInt64(5))
            // A process that ended holding blocks.
            let child = try Peer.spawn("named-hold", name, "4")
            defer { child.stop() }
            _ = child.readLine(timeout: .seconds(60))
            #expect(child.readLine(timeout: .seconds(60)) == "ready")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let stats = try heap.statistics()

            let result = try ipc("inspect", name)
            #expect(result.succeeded, "\(result.error)")
            let lines = result.output.split(separator: "\n").map(String.init)
            #expect(lines.contains("heap:"), "\(result.output)")
            #expect(lines.contains { $0.hasPrefix("  capacity: \(stats.capacity) (64.0K) of at most \(stats.maximumCapacity)") && $0.hasSuffix("1 store") })
            #expect(lines.contains { $0.hasPrefix("  used: \(stats.usedBytes) ") && $0.contains("in \(stats.blocks) blocks") }, "\(result.output)")
            #expect(lines.contains { $0.hasPrefix("  free: \(stats.freeBytes) ") })
            #expect(lines.contains { $0.hasPrefix("  largestFreeBlock: \(stats.largestFreeBlock) ") && $0.contains("fragmentation") })
            #expect(lines.contains("  recoveries: 0"))
            #expect(!lines.contains { $0.hasPrefix("  usedBytes:") }, "the statistics are not repeated among the details")
            #expect(lines.contains { $0.contains("pid \(getpid())  alive  3 blocks") }, "\(result.output)")
            #expect(lines.contains { $0.contains("pid \(child.pid)  ended  5 blocks") }, "4 blocks and the block it relinquished")
            #expect(lines.contains { $0.hasPrefix("  record 0 (named objects, and processes without a record)  3 blocks") }, "2 named objects, 1 chunk")
            #expect(lines.contains("named objects:"))
            #expect(lines.contains { $0.hasPrefix("  config  8 bytes  Swift.UInt64 (8 bytes") })
            #expect(lines.contains { $0.hasPrefix("  kept-\(child.pid)  8 bytes") })

            let json = try ipc("inspect", "--json", name)
            #expect(json.succeeded)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
            let details = try #require(object["details"] as? [String: String])
            #expect(details["blocks"] == String(stats.blocks) && details["usedBytes"] == String(stats.usedBytes))
            #expect(details["largestFreeBlock"] == String(stats.largestFreeBlock))
            #expect(details["namedObjects"] == "config,kept-\(child.pid)")
            #expect(details["processes"]?.contains(":\(child.pid):ended:5:") == true, "\(details)")
            for block in blocks { try heap.unsafeDeallocate(block) }
            // Inspecting opened and closed the heap: it is still there, and sound.
            try expectClean(heap)
            heap.close()
        }
    }

    @Test func checkPrintsEveryProblemAndFailsOnOne() throws {
        try withCleanNames("toolcheck") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            let a = try heap.unsafeAllocate(byteCount: 1000)
            let b = try heap.unsafeAllocate(byteCount: 1000)
            try heap.unsafeDeallocate(a)
            let clean = try ipc("check", name)
            #expect(clean.succeeded, "\(clean.output) \(clean.error)")
            #expect(clean.output == "\(name): consistent (1 block in use, 1.0K of 64.0K)\n", "\(clean.output)")
            let cleanJSON = try ipc("check", "--json", name)
            #expect(cleanJSON.succeeded)
            #expect(cleanJSON.output.contains("\"consistent\" : true") && cleanJSON.output.contains("\"problems\" : [\n\n  ]"), "\(cleanJSON.output)")

            // Two problems: a block's state, and a free block's link back.
            let offsetB = SharedMemory.payloadOffset + Int(b.bitPattern & ((1 << 34) - 1)) * 16 - 16
            scribble(name, at: offsetB + MemoryLayout<cipc_heap_block>.offset(of: \.state)!, withUnsafeBytes(of: UInt32(0x1234_5678)) { Array($0) })
            let offsetA = SharedMemory.payloadOffset + Int(a.bitPattern & ((1 << 34) - 1)) * 16
            scribble(name, at: offsetA + 8, withUnsafeBytes(of: UInt64(48)) { Array($0) })
            let problems = try heap.check().problems
            #expect(problems.count >= 2)
            let broken = try ipc("check", name)
            #expect(broken.termination == .exited(1))
            let lines = broken.output.split(separator: "\n").map(String.init)
            #expect(lines.last == "\(name): \(problems.count) problems", "\(broken.output)")
            #expect(Array(lines.dropLast()) == problems)
            #expect(lines.contains { $0.contains("state 0x12345678") })
            let brokenJSON = try ipc("check", "--json", name)
            #expect(brokenJSON.termination == .exited(1))
            let object = try #require(try JSONSerialization.jsonObject(with: Data(brokenJSON.output.utf8)) as? [String: Any])
            #expect(object["consistent"] as? Bool == false && (object["problems"] as? [String]) == problems)

            // Not a heap, or no such name: a message, exit status 1.
            let raw = try SharedMemory.create(name: name + "-raw", size: 4096)
            let notHeap = try ipc("check", name + "-raw")
            #expect(notHeap.termination == .exited(1) && notHeap.error.contains("is a raw segment, not a heap"), "\(notHeap.error)")
            raw.close()
            let missing = try ipc("check", name + "-none")
            #expect(missing.termination == .exited(1) && missing.error.hasPrefix("ipc: "), "\(missing.error)")
            heap.close()
        }
    }

    @Test func gcRemovesTheStoresOfAKilledHeapAndReclaimsOnRequest() throws {
        try withCleanNames("toolgc") { name in
            let grower = try Peer.spawn("named-grow-hold", name)
            defer { grower.stop() }
            #expect(grower.readLine(timeout: .seconds(60)) == "ready")
            let stores = TestNames.leftovers(name + "~").sorted()
            #expect(stores.count == 2)
            grower.kill(signal: SIGKILL)
            #expect(grower.wait(timeout: .seconds(10)) == .signaled(SIGKILL))

            let inspect = try ipc("inspect", name)
            #expect(inspect.succeeded && inspect.output.contains("heap: abandoned"), "\(inspect.output)")
            #expect(SharedMemory.list().contains { $0.name == name }, "inspecting did not sweep it")

            let dry = try ipc("gc", "--dry-run", "--prefix", name)
            #expect(dry.succeeded)
            #expect(dry.output.contains("would remove \(name) (heap, "), "\(dry.output)")
            for store in stores { #expect(dry.output.contains("would remove \(store) (heap store, ") && dry.output.contains("its heap is gone")) }
            #expect(TestNames.leftovers(name).count == 3, "a dry run removed something")

            let gc = try ipc("gc", "--prefix", name)
            #expect(gc.succeeded)
            #expect(gc.output.contains("removed \(name) (heap, "), "\(gc.output)")
            for store in stores { #expect(gc.output.contains("removed \(store) (heap store, ")) }
            #expect(TestNames.leftovers(name).isEmpty)

            // Blocks of an ended process, in a heap that is held: only with --reclaim.
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            let holder = try Peer.spawn("named-hold", name, "5")
            defer { holder.stop() }
            _ = holder.readLine(timeout: .seconds(60))
            #expect(holder.readLine(timeout: .seconds(60)) == "ready")
            holder.kill(signal: SIGKILL)
            #expect(holder.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(try ipc("gc", "--prefix", name).output == "nothing to remove\n")
            let blocks = try heap.statistics().blocks
            let dryReclaim = try ipc("gc", "--reclaim", "--dry-run", "--prefix", name)
            #expect(dryReclaim.output.contains("would reclaim 6 blocks (") && dryReclaim.output.contains("of ended processes (pid \(holder.pid)) in heap \(name)"), "\(dryReclaim.output)")
            #expect(try heap.statistics().blocks == blocks)
            let dryJSON = try ipc("gc", "--reclaim", "--dry-run", "--json", "--prefix", name)
            let actions = try #require(try JSONSerialization.jsonObject(with: Data(dryJSON.output.utf8)) as? [[String: Any]], "\(dryJSON.output)")
            #expect(actions.count == 1 && actions.first?["action"] as? String == "would reclaim" && actions.first?["name"] as? String == name
                && actions.first?["blocks"] as? Int == 6 && actions.first?["pids"] as? [Int] == [Int(holder.pid)], "\(dryJSON.output)")
            let reclaim = try ipc("gc", "--reclaim", "--prefix", name)
            #expect(reclaim.output.contains("reclaimed 6 blocks ("), "\(reclaim.output)")
            #expect(try heap.statistics().blocks == blocks - 6, "5 blocks and the relinquished one; the named object and its chunk stay")
            #expect(try heap.find(name: "kept-\(holder.pid)", as: UInt64.self).isNull == false)
            try expectClean(heap)
            heap.close()
        }
    }
}
