#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

// Shared heap commands (Tests/InterprocessTests/SharedHeapTests.swift).

/// Runs one heap command; returns the exit status (0 success, 1 failure, 2 usage).
func runHeapCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "heap-stress": return try heapStress(name: rest[0], threads: Int(rest[1])!, operations: Int(rest[2])!, sizes: rest[3])
        case "heap-churn": try heapChurn(name: rest[0], live: Int(rest[1])!)
        case "heap-op": try heapOperation(name: rest[0], operation: rest[1])
        case "heap-peer": try heapPeer(name: rest[0])
        case "heap-measure": try heapMeasure(name: rest[0], iterations: Int(rest[1])!)
        case "heap-spin":
            // heap-spin NAME ITERATIONS: 64-byte allocate + free on an existing heap; says the
            // wall-clock nanoseconds per pair (for throughput with several processes at once).
            let heap = try SharedHeap.open(name: rest[0])
            let iterations = Int(rest[1])!
            let start = Clock.monotonicNanoseconds()
            for _ in 0..<iterations { try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64)) }
            say("\((Clock.monotonicNanoseconds() - start) / UInt64(iterations)) ns per allocate+free")
            heap.close()
        case "heap-create":
            // heap-create NAME CAPACITY MAXIMUM: a persistent heap, left for others.
            try SharedHeap.create(name: rest[0], capacity: Int(rest[1])!, maximumCapacity: Int(rest[2])!, lifetime: .persistent).close()
        case "heap-cache-hold":
            // heap-cache-hold NAME COUNT: allocates COUNT 64-byte blocks and frees them (into this
            // thread's cache), says "cached N" (the heap's cached blocks), then waits until killed
            // or told "quit" (then closes the heap, which gives the cache back, and says "bye").
            let heap = try SharedHeap.open(name: rest[0])
            let blocks = try (0..<Int(rest[1])!).map { _ in try heap.unsafeAllocate(byteCount: 64) }
            for block in blocks { try heap.unsafeDeallocate(block) }
            say("cached \(try heap.statistics().cachedBlocks)")
            _ = awaitInstruction(upTo: 120)
            heap.close()
            say("bye")
        case "heap-check":
            // heap-check NAME: says the problems check() finds (none: "clean") and the statistics.
            let heap = try SharedHeap.open(name: rest[0])
            let report = try heap.check()
            say(report.isConsistent ? "clean" : report.problems.joined(separator: "\n"))
            if let statistics = report.statistics { say("\(statistics)") }
            heap.close()
        default: return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// A block's contents: its 8-byte id over and over (the last word cut short), so that a block that
/// overwrites another, or one handed out twice, shows.
func fillBlock(_ bytes: UnsafeMutableRawBufferPointer, id: UInt64) {
    guard let base = bytes.baseAddress else { return }
    let words = bytes.count / 8
    base.initializeMemory(as: UInt64.self, repeating: id, count: words) // payloads are 16-byte aligned
    withUnsafeBytes(of: id) { word in
        (base + words * 8).copyMemory(from: word.baseAddress!, byteCount: bytes.count - words * 8)
    }
}

/// Whether the first `count` bytes hold the pattern of `id` (compared with `memcmp`, word by word).
func blockIsIntact(_ bytes: UnsafeMutableRawBufferPointer, id: UInt64, count: Int) -> Bool {
    guard count <= bytes.count else { return false }
    let reference = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 8)
    defer { reference.deallocate() }
    fillBlock(UnsafeMutableRawBufferPointer(rebasing: reference[0..<count]), id: id)
    return memcmp(bytes.baseAddress!, reference.baseAddress!, count) == 0
}

/// A new block of `count` bytes, or nil when the heap is full.
func allocateUnlessFull(_ heap: SharedHeap, _ count: Int) throws(InterprocessError) -> SharedPointer<UInt8>? {
    do {
        return try heap.unsafeAllocate(byteCount: count)
    } catch {
        if error.code == .outOfMemory { return nil }
        throw error
    }
}

/// The block of `pointer` resized to `count` bytes, or nil (and unchanged) when the heap is full.
func reallocateUnlessFull(_ heap: SharedHeap, _ pointer: SharedPointer<UInt8>, _ count: Int) throws(InterprocessError) -> SharedPointer<UInt8>? {
    do {
        return try heap.unsafeReallocate(pointer, byteCount: count)
    } catch {
        if error.code == .outOfMemory { return nil }
        throw error
    }
}

/// The block sizes of a workload: "small" (8–480 bytes, the quick lists), "mixed" (8 bytes–16 KB).
func randomSize(_ sizes: String, using generator: inout some RandomNumberGenerator) -> Int {
    if sizes == "small" { return Int.random(in: 1...480, using: &generator) }
    switch Int.random(in: 0..<10, using: &generator) {
    case 0..<5: return Int.random(in: 1...128, using: &generator)
    case 5..<8: return Int.random(in: 129...2048, using: &generator)
    default: return Int.random(in: 2049...16384, using: &generator)
    }
}

/// heap-stress NAME THREADS OPERATIONS SIZES: THREADS threads each do OPERATIONS random allocations,
/// reallocations and frees (at most 64 blocks live per thread), every block filled with a pattern
/// unique to it and checked before it is reallocated or freed; frees everything at the end. Says
/// "ok ALLOCATIONS" (exit 0), or what went wrong (exit 1). `outOfMemory` is counted, not a failure.
private func heapStress(name: String, threads: Int, operations: Int, sizes: String) throws -> Int32 {
    let heap = try SharedHeap.open(name: name)
    let failures = Mutex<[String]>([])
    let allocations = Atomic<Int>(0)
    let pid = UInt64(UInt32(bitPattern: getpid()))
    DispatchQueue.concurrentPerform(iterations: threads) { thread in
        var generator = SystemRandomNumberGenerator()
        var live: [(pointer: SharedPointer<UInt8>, id: UInt64, count: Int)] = []
        var counter: UInt64 = 0
        func fail(_ text: String) { failures.withLock { $0.append("thread \(thread): \(text)") } }
        func nextID() -> UInt64 {
            counter += 1
            return pid << 40 | UInt64(thread) << 32 | counter
        }
        for _ in 0..<operations {
            let choice = Int.random(in: 0..<10, using: &generator)
            do {
                if live.isEmpty || (choice < 5 && live.count < 64) {
                    let count = randomSize(sizes, using: &generator)
                    guard let pointer = try allocateUnlessFull(heap, count) else { continue }
                    let id = nextID()
                    try heap.withUnsafeMutableBytes(of: pointer) { fillBlock($0, id: id) }
                    live.append((pointer, id, count))
                    allocations.add(1, ordering: .relaxed)
                } else if choice < 7 {
                    let index = Int.random(in: 0..<live.count, using: &generator)
                    let block = live[index]
                    guard try heap.withUnsafeMutableBytes(of: block.pointer, { blockIsIntact($0, id: block.id, count: block.count) }) else {
                        fail("block \(block.id) was overwritten before it was reallocated"); return
                    }
                    let count = randomSize(sizes, using: &generator)
                    guard let moved = try reallocateUnlessFull(heap, block.pointer, count) else { continue }
                    guard try heap.withUnsafeMutableBytes(of: moved, { blockIsIntact($0, id: block.id, count: min(count, block.count)) }) else {
                        fail("reallocating block \(block.id) from \(block.count) to \(count) bytes lost its contents"); return
                    }
                    let id = nextID()
                    try heap.withUnsafeMutableBytes(of: moved) { fillBlock($0, id: id) }
                    live[index] = (moved, id, count)
                } else {
                    let block = live.remove(at: Int.random(in: 0..<live.count, using: &generator))
                    guard try heap.withUnsafeMutableBytes(of: block.pointer, { blockIsIntact($0, id: block.id, count: block.count) }) else {
                        fail("block \(block.id) was overwritten before it was freed"); return
                    }
                    try heap.unsafeDeallocate(block.pointer)
                }
            } catch {
                fail("\(error)")
                return
            }
        }
        for block in live {
            do {
                guard try heap.withUnsafeMutableBytes(of: block.pointer, { blockIsIntact($0, id: block.id, count: block.count) }) else {
                    fail("block \(block.id) was overwritten"); return
                }
                try heap.unsafeDeallocate(block.pointer)
            } catch {
                fail("\(error)")
                return
            }
        }
    }
    heap.close()
    let problems = failures.withLock { $0 }
    if !problems.isEmpty {
        say(problems.joined(separator: "\n"))
        return 1
    }
    say("ok \(allocations.load(ordering: .relaxed))")
    return 0
}

/// heap-churn NAME LIVE: says "ready", then allocates, reallocates and frees (mixed sizes, at most
/// LIVE blocks live, each checked before it is freed) until it is killed. Exits 1 at the first
/// damaged block or unexpected error.
private func heapChurn(name: String, live limit: Int) throws {
    let heap = try SharedHeap.open(name: name)
    say("ready")
    var generator = SystemRandomNumberGenerator()
    var live: [(pointer: SharedPointer<UInt8>, id: UInt64, count: Int)] = []
    var counter = UInt64(UInt32(bitPattern: getpid())) << 32
    while true {
        if live.isEmpty || (live.count < limit && Bool.random(using: &generator)) {
            let count = randomSize("mixed", using: &generator)
            guard let pointer = try allocateUnlessFull(heap, count) else { continue }
            counter += 1
            let id = counter
            try heap.withUnsafeMutableBytes(of: pointer) { fillBlock($0, id: id) }
            live.append((pointer, id, count))
        } else if Int.random(in: 0..<4, using: &generator) == 0 {
            let index = Int.random(in: 0..<live.count, using: &generator)
            let block = live[index]
            let count = randomSize("mixed", using: &generator)
            guard let moved = try reallocateUnlessFull(heap, block.pointer, count) else { continue }
            guard try heap.withUnsafeMutableBytes(of: moved, { blockIsIntact($0, id: block.id, count: min(count, block.count)) }) else {
                fail("reallocating block \(block.id) lost its contents")
            }
            live[index] = (moved, block.id, min(count, block.count))
        } else {
            let block = live.remove(at: Int.random(in: 0..<live.count, using: &generator))
            guard try heap.withUnsafeMutableBytes(of: block.pointer, { blockIsIntact($0, id: block.id, count: block.count) }) else {
                fail("block \(block.id) was overwritten")
            }
            try heap.unsafeDeallocate(block.pointer)
        }
    }
}

/// heap-op NAME OPERATION: does what passes through the journaled writes of one kind of operation
/// (with `INTERPROCESS_CRASH_POINT=heap.OPERATION#N` armed, it dies at the Nth), then frees what it
/// allocated and says "done". Operations: the labels of the heap's steps.
private func heapOperation(name: String, operation: String) throws {
    let heap = try SharedHeap.open(name: name)
    switch operation {
    case "claim":
        break // opening claimed a client record
    case "allocate":
        // A quick block to take: allocate and free one first.
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
    case "allocate-split":
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 5000, alignment: 256))
    case "free":
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
    case "free-merge":
        // Free the middle of three blocks after its neighbours: it merges on both sides.
        let a = try heap.unsafeAllocate(byteCount: 1000)
        let b = try heap.unsafeAllocate(byteCount: 1000)
        let c = try heap.unsafeAllocate(byteCount: 1000)
        let d = try heap.unsafeAllocate(byteCount: 1000)
        try heap.unsafeDeallocate(a)
        try heap.unsafeDeallocate(c)
        try heap.unsafeDeallocate(b)
        try heap.unsafeDeallocate(d)
    case "reallocate":
        // Shrink (splitting off a tail that merges with the free space after it), then grow back.
        let a = try heap.unsafeAllocate(byteCount: 3000)
        let b = try heap.unsafeReallocate(a, byteCount: 1000)
        let c = try heap.unsafeReallocate(b, byteCount: 4000)
        try heap.unsafeDeallocate(c)
    case "consolidate":
        // Quick blocks everywhere, then one allocation that needs them merged.
        var small: [SharedPointer<UInt8>] = []
        while let block = try? heap.unsafeAllocate(byteCount: 200) { small.append(block) }
        for block in small { try heap.unsafeDeallocate(block) }
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 20_000))
    case "grow":
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: heap.capacity))
    case "cache-allocate":
        // (A heap of at least 1 MB: threads cache.) One into the cache, then taken from it.
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
    case "cache-free", "cache-create":
        // The first allocation makes this thread's cache record; the free goes into it.
        try heap.unsafeDeallocate(try heap.unsafeAllocate(byteCount: 64))
    case "cache-flush":
        // Closing gives the cache back: its blocks, then its record.
        let blocks = try (0..<3).map { _ in try heap.unsafeAllocate(byteCount: 64) }
        for block in blocks { try heap.unsafeDeallocate(block) }
    case "cache-reclaim":
        break // opening reclaimed the caches of processes that died
    default:
        fail("unknown heap operation \(operation)", code: 2)
    }
    heap.close()
    say("done")
}

/// heap-peer NAME: opens the heap, says "ready", then serves one instruction per line until "quit"
/// (or the end of its input): "size WORD" says the block's byte count (or the error code);
/// "check WORD ID COUNT" says "intact" or "damaged"; "alloc COUNT" allocates, fills (id = the word)
/// and says the word; "free WORD" frees and says "freed" (or the error code); "problems" says the
/// number of problems check() finds.
private func heapPeer(name: String) throws {
    let heap = try SharedHeap.open(name: name)
    say("ready")
    while let line = awaitInstruction(upTo: 120) {
        let words = line.split(separator: " ").map(String.init)
        guard let verb = words.first else { continue }
        func pointer(_ index: Int) -> SharedPointer<UInt8> { SharedPointer(bitPattern: UInt64(words[index])!) }
        do {
            switch verb {
            case "quit":
                heap.close()
                say("bye")
                return
            case "size":
                say(String(try heap.byteCount(of: pointer(1))))
            case "check":
                let intact = try heap.withUnsafeMutableBytes(of: pointer(1)) { blockIsIntact($0, id: UInt64(words[2])!, count: Int(words[3])!) }
                say(intact ? "intact" : "damaged")
            case "alloc":
                let block = try heap.unsafeAllocate(byteCount: Int(words[1])!)
                try heap.withUnsafeMutableBytes(of: block) { fillBlock($0, id: block.bitPattern) }
                say(String(block.bitPattern))
            case "free":
                try heap.unsafeDeallocate(pointer(1))
                say("freed")
            case "problems":
                say(String(try heap.check().problems.count))
            default:
                say("unknown")
            }
        } catch {
            say((error as? InterprocessError)?.code.description ?? "\(error)")
        }
    }
    heap.close()
}

/// heap-measure NAME ITERATIONS: creates a heap and says how long 64-byte allocate + free takes
/// (thread CPU time, the best of 5 rounds) through the pointer words, through `SharedAllocation`,
/// and with glibc's malloc + free, and the ratios. A measurement to run as a release build, not a test.
private func heapMeasure(name: String, iterations: Int) throws {
    let heap = try SharedHeap.create(name: name, capacity: 1 << 20)
    defer { heap.close() }
    func cpuNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
    func best(_ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<5 {
            let start = cpuNanoseconds()
            try body()
            best = min(best, Double(cpuNanoseconds() - start) / Double(iterations))
        }
        return best
    }
    var sink = 0
    let glibc = best {
        for _ in 0..<iterations {
            let pointer = malloc(64)
            pointer!.storeBytes(of: 1, as: UInt8.self)
            sink ^= Int(bitPattern: pointer)
            free(pointer)
        }
    }
    let words = try best {
        for _ in 0..<iterations {
            let pointer = try heap.unsafeAllocate(byteCount: 64)
            try heap.unsafeDeallocate(pointer)
        }
    }
    let owned = try best {
        for _ in 0..<iterations {
            let allocation = try heap.allocate(byteCount: 64)
            allocation[0] = 1
            try allocation.deallocate()
        }
    }
    func format(_ value: Double) -> String { String(Int((value * 10).rounded())).reversed().enumerated().map { $0.offset == 1 ? "\($0.element)." : "\($0.element)" }.reversed().joined() }
    say("glibc malloc+free 64 B: \(format(glibc)) ns\(sink == 1 ? " " : "")")
    say("SharedHeap unsafeAllocate+unsafeDeallocate 64 B: \(format(words)) ns (\(format(words / glibc))x)")
    say("SharedHeap allocate+deallocate (SharedAllocation) 64 B: \(format(owned)) ns (\(format(owned / glibc))x)")
}
