#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

// Named objects and reclaiming in a shared heap (Tests/InterprocessTests/SharedHeapNamedTests.swift).

/// Runs one `named-` command; returns the exit status (0 success, 1 failure, 2 usage).
func runHeapNamedCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "named-find-or-create":
            // named-find-or-create HEAP OBJECT VALUE START_NS [COUNT]: at the start line (0: at
            // once), findOrCreate(OBJECT, UInt64(VALUE)) — or COUNT values VALUE; says "created V"
            // or "found V", V the (first) value it holds.
            let heap = try SharedHeap.open(name: rest[0])
            waitUntil(UInt64(rest[3])!)
            let (pointer, created) = rest.count > 4
                ? try heap.findOrCreate(name: rest[1], repeating: UInt64(rest[2])!, count: Int(rest[4])!)
                : try heap.findOrCreate(name: rest[1], initialValue: UInt64(rest[2])!)
            say("\(created ? "created" : "found") \(try heap.load(pointer))")
            heap.close()
        case "named-destroy":
            // named-destroy HEAP OBJECT: says "destroyed" or "absent".
            let heap = try SharedHeap.open(name: rest[0])
            say(try heap.destroy(name: rest[1]) ? "destroyed" : "absent")
            heap.close()
        case "named-hold":
            // named-hold HEAP COUNT: allocates COUNT 100-byte blocks (kept), creates the named object
            // "kept-PID", relinquishes one more 200-byte block and says its word, then "ready"; holds
            // everything until told (or killed).
            let heap = try SharedHeap.open(name: rest[0])
            var kept: [SharedPointer<UInt8>] = []
            for _ in 0..<Int(rest[1])! { kept.append(try heap.unsafeAllocate(byteCount: 100)) }
            _ = try heap.findOrCreate(name: "kept-\(getpid())", initialValue: UInt64(getpid()))
            say(String(try heap.allocate(byteCount: 200).relinquish().bitPattern))
            say("ready")
            awaitInstruction(upTo: 300)
            heap.close()
        case "named-grow-hold":
            // named-grow-hold HEAP: creates a whileReferenced heap, grows it to 3 stores, says
            // "ready", holds it until told (or killed).
            let heap = try SharedHeap.create(name: rest[0], capacity: 32 * 1024, maximumCapacity: 1 << 20)
            var blocks: [SharedPointer<UInt8>] = []
            while try heap.statistics().stores < 3 { blocks.append(try heap.unsafeAllocate(byteCount: 20_000)) }
            say("ready")
            awaitInstruction(upTo: 300)
            heap.close()
        default:
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}
