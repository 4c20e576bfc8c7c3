#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

// Commands of the heap's client-record recycling tests (Tests/InterprocessTests/SharedHeapRecycleTests.swift).

/// Runs one recycling command; returns the exit status (0 success, 1 failure, 2 usage).
func runHeapRecycleCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "recycle-leave":
            // recycle-leave NAME BLOCKS [hold]: opens the heap, allocates BLOCKS blocks (64 bytes to
            // 4 KB) and puts two more small ones into its thread's cache, says "record R BLOCKS" (its
            // client record, and the blocks the statistics count against it), then ends without
            // freeing or closing anything — or, with "hold", waits until told (or killed) first.
            let heap = try SharedHeap.open(name: rest[0])
            let count = Int(rest[1])!
            for index in 0..<count { _ = try heap.unsafeAllocate(byteCount: [64, 700, 4000][index % 3]) }
            let cached = try (0..<2).map { _ in try heap.unsafeAllocate(byteCount: 32) }
            for block in cached { try heap.unsafeDeallocate(block) }
            let mine = try heap.statistics().clients.first { $0.pid == getpid() && $0.isAlive }
            say("record \(mine?.record ?? -1) \(mine?.blocks ?? -1)")
            if rest.count > 2 { _ = awaitInstruction(upTo: 120) }
            exit(0)
        case "recycle-fill":
            // recycle-fill NAME TIMES HOLDING: opens and closes the heap TIMES times in this one
            // process (each time a new token, so a new client record: the one before has ended);
            // the first HOLDING times it leaves 2 blocks behind. Says "filled" when done.
            let times = Int(rest[1])!
            let holding = Int(rest[2])!
            for index in 0..<times {
                let heap = try SharedHeap.open(name: rest[0])
                if index < holding {
                    _ = try heap.unsafeAllocate(byteCount: 100)
                    _ = try heap.unsafeAllocate(byteCount: 2000)
                }
                heap.close()
            }
            say("filled")
        case "recycle-open":
            // recycle-open NAME: opens the heap and says "record R" (its client record), or the code
            // of the error opening it threw.
            do {
                let heap = try SharedHeap.open(name: rest[0])
                let mine = try heap.statistics().clients.first { $0.pid == getpid() && $0.isAlive }
                say("record \(mine?.record ?? 0)")
                heap.close()
            } catch {
                say(error.code.description)
            }
        default: return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}
