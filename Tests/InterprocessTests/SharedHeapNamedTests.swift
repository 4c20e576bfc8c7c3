#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import CInterprocess
import Dispatch
import Synchronization

/// A value bigger than the 16 bytes whose writes the journal records (the rest is written plainly).
struct Wide: Equatable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    init(_ seed: UInt64) { words = (seed, seed &+ 1, seed &+ 2, seed &+ 3, seed &+ 4) }
    static func == (a: Wide, b: Wide) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3 && a.words.4 == b.words.4
    }
}

/// The test child with `INTERPROCESS_CRASH_POINT=point`.
func spawnArmed(_ point: String, _ arguments: [String]) throws -> ChildProcess {
    var environment: [String: String] = [:]
    for (name, entry) in ProcessEnvironment.all { environment[name] = entry }
    environment["INTERPROCESS_CRASH_POINT"] = point
    return try ChildProcess.spawn(Peer.path, arguments, standardInput: .pipe, standardOutput: .pipe, standardError: .inherit, environment: environment)
}

/// Named objects of a shared heap, in one process.
@Suite("SharedHeap named objects", .serialized, .timeLimit(.minutes(3)))
struct SharedHeapNamedTests {
    @Test func findOrCreateCreatesOnceAndFindsIt() throws {
        try withCleanNames("named") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            let (counter, created) = try heap.findOrCreate(name: "requests", initialValue: UInt64(41))
            #expect(created)
            #expect(try heap.load(counter) == 41)
            try heap.withUnsafeMutablePointer(to: counter) { $0.pointee += 1 }
            let (again, createdAgain) = try heap.findOrCreate(name: "requests", initialValue: UInt64(0))
            #expect(!createdAgain && again == counter)
            #expect(try heap.load(again) == 42, "the initial value of a second findOrCreate is not used")
            #expect(try heap.find(name: "requests", as: UInt64.self) == counter)
            // Wider than the journaled 16 bytes: every byte arrives.
            let wide = try heap.findOrCreate(name: "wide", initialValue: Wide(7)).pointer
            #expect(try heap.load(wide) == Wide(7))
            #expect(try heap.byteCount(of: wide) == MemoryLayout<Wide>.size)
            // Arrays.
            let (array, arrayCreated) = try heap.findOrCreate(name: "samples", repeating: Int32(-3), count: 500)
            #expect(arrayCreated)
            #expect(try heap.byteCount(of: array) == 2000)
            try heap.withUnsafeMutableBytes(of: array) { bytes in
                #expect(bytes.bindMemory(to: Int32.self).allSatisfy { $0 == -3 })
            }
            let listed = try heap.namedObjects()
            #expect(listed.map(\.name) == ["requests", "wide", "samples"])
            #expect(listed.allSatisfy { $0.isIntact })
            #expect(listed[0].byteCount == 8 && listed[0].type.hasPrefix("Swift.UInt64 (8 bytes"))
            #expect(listed[2].byteCount == 2000 && listed[2].pointer.bitPattern == array.bitPattern)
            try expectClean(heap)
            // Destroy frees the block and the name; the old pointer is stale.
            #expect(try heap.destroy(name: "requests"))
            #expect(!heap.contains(counter))
            expectError(.invalidPointer) { try heap.load(counter) }
            expectError(.notFound) { try heap.find(name: "requests", as: UInt64.self) }
            #expect(try !heap.destroy(name: "requests"))
            #expect(try heap.destroy(name: "wide") && heap.destroy(name: "samples"))
            #expect(try heap.namedObjects().isEmpty)
            try expectClean(heap)
            // Only the directory's chunk is left.
            #expect(try heap.statistics().blocks == 1)
            heap.close()
        }
    }

    @Test func typesAreCheckedAndNamesValidated() throws {
        try withCleanNames("namedtype") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            _ = try heap.findOrCreate(name: "config", initialValue: UInt64(1))
            // Same size, another type: incompatible, for find and findOrCreate alike.
            expectError(.incompatible) { try heap.find(name: "config", as: Int64.self) }
            expectError(.incompatible) { try heap.findOrCreate(name: "config", initialValue: Int64(1)) }
            expectError(.incompatible) { try heap.find(name: "config", as: UInt64.self, type: TypeFingerprint(of: UInt64.self, version: 2)) }
            // An explicit fingerprint (a peer in another language) matches when it says the same.
            let explicit = TypeFingerprint(typeName: "Swift.UInt64", size: 8, alignment: 8)
            #expect(try heap.find(name: "config", as: UInt64.self, type: explicit) == heap.find(name: "config", as: UInt64.self))
            let versioned = try heap.findOrCreate(name: "job", initialValue: UInt32(5), type: TypeFingerprint(of: UInt32.self, version: 3)).pointer
            #expect(try heap.find(name: "job", as: UInt32.self, type: TypeFingerprint(of: UInt32.self, version: 3)) == versioned)
            expectError(.incompatible) { try heap.find(name: "job", as: UInt32.self) }
            // Names: 1 to 96 bytes, no NUL.
            expectError(.invalidName) { try heap.findOrCreate(name: "", initialValue: UInt8(0)) }
            expectError(.invalidName) { try heap.findOrCreate(name: String(repeating: "n", count: 97), initialValue: UInt8(0)) }
            expectError(.invalidName) { try heap.find(name: "a\u{0}b", as: UInt8.self) }
            let longest = String(repeating: "é", count: 48) // 96 bytes
            #expect(try heap.findOrCreate(name: longest, initialValue: UInt8(9)).created)
            #expect(try heap.load(heap.find(name: longest, as: UInt8.self)) == 9)
            // Another heap has its own names.
            let other = try SharedHeap.create(name: name + "-other", capacity: 64 * 1024)
            expectError(.notFound) { try other.find(name: "config", as: UInt64.self) }
            other.close()
            try expectClean(heap)
        }
    }

    @Test func manyNamesFillChunksWhichAreReused() throws {
        try withCleanNames("namedmany") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024)
            for round in 0..<3 {
                for index in 0..<40 {
                    let (pointer, created) = try heap.findOrCreate(name: "object-\(index)", initialValue: UInt64(index * 1000 + round))
                    #expect(created)
                    #expect(try heap.load(pointer) == UInt64(index * 1000 + round))
                }
                for index in 0..<40 { #expect(try heap.load(heap.find(name: "object-\(index)", as: UInt64.self)) == UInt64(index * 1000 + round)) }
                try expectClean(heap)
                #expect(try heap.statistics().blocks == 40 + 5, "40 objects, 5 chunks of 8")
                for index in stride(from: 39, through: 0, by: -1) { #expect(try heap.destroy(name: "object-\(index)")) }
                #expect(try heap.statistics().blocks == 5, "the chunks stay, and are reused the next round")
            }
            try expectClean(heap)
        }
    }

    @Test func threadsAndHandlesRacingCreateExactlyOne() throws {
        try withCleanNames("namedthreads") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024)
            let other = try SharedHeap.open(name: name)
            for round in 0..<20 {
                let created = Atomic<Int>(0)
                let words = Mutex<Set<UInt64>>([])
                let failures = Atomic<Int>(0)
                DispatchQueue.concurrentPerform(iterations: 8) { thread in
                    do {
                        let (pointer, made) = try (thread % 2 == 0 ? heap : other).findOrCreate(name: "round-\(round)", initialValue: UInt64(thread))
                        if made { created.add(1, ordering: .relaxed) }
                        words.withLock { _ = $0.insert(pointer.bitPattern) }
                    } catch {
                        failures.add(1, ordering: .relaxed)
                    }
                }
                #expect(failures.load(ordering: .relaxed) == 0)
                #expect(created.load(ordering: .relaxed) == 1, "round \(round)")
                #expect(words.withLock { $0.count } == 1, "round \(round): every thread got the same block")
            }
            #expect(try heap.namedObjects().count == 20)
            try expectClean(heap)
            other.close()
        }
    }

    @Test func anObjectFreedByHandLeavesANameThatDestroyRemoves() throws {
        try withCleanNames("nameddangle") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            let pointer = try heap.findOrCreate(name: "victim", initialValue: UInt64(3)).pointer
            try heap.unsafeDeallocate(pointer) // a misuse: the name owns the block
            expectError(.corrupt) { try heap.find(name: "victim", as: UInt64.self) }
            let problems = try heap.check().problems
            #expect(problems.contains { $0.contains("victim") }, "\(problems)")
            #expect(try heap.namedObjects().map(\.isIntact) == [false])
            #expect(try heap.destroy(name: "victim"))
            expectError(.notFound) { try heap.find(name: "victim", as: UInt64.self) }
            try expectClean(heap)
        }
    }

    @Test func aFullHeapSaysOutOfMemoryAndCreatesNothing() throws {
        try withCleanNames("namedfull") { name in
            let heap = try SharedHeap.create(name: name, capacity: 16 * 1024)
            _ = try heap.findOrCreate(name: "small", initialValue: UInt64(1))
            let before = try heap.statistics()
            expectError(.outOfMemory) { try heap.findOrCreate(name: "huge", repeating: UInt8(0), count: 64 * 1024) }
            expectError(.notFound) { try heap.find(name: "huge", as: UInt8.self) }
            #expect(try heap.statistics().blocks == before.blocks)
            try expectClean(heap)
        }
    }
}

/// A directory that another process scribbled over: `corrupt`, never a crash; `check()` names it.
@Suite("SharedHeap named objects scribbled", .serialized, .timeLimit(.minutes(3)))
struct SharedHeapNamedScribbleTests {
    static let payload = SharedMemory.payloadOffset
    static let header = payload + Int(CIPC_HEAP_HEADER_OFFSET)
    static let directoryWord = header + MemoryLayout<cipc_heap_header>.offset(of: \.directory)!

    /// The file offset of the payload a pointer word of store 0 names.
    static func fileOffset(_ word: UInt64) -> Int { payload + Int(word & ((1 << 34) - 1)) * 16 }

    static func read64(_ name: String, at offset: Int) -> UInt64 {
        let fd = open("/dev/shm/" + name, O_RDONLY)
        defer { close(fd) }
        var value: UInt64 = 0
        _ = pread(fd, &value, 8, off_t(offset))
        return value
    }

    static func bytes<T>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    @Test func scribbledEntriesAndChunksAreCorrupt() throws {
        try withCleanNames("namedscrib") { name in
            let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
            _ = try heap.findOrCreate(name: "alpha", initialValue: UInt64(1))
            _ = try heap.findOrCreate(name: "beta", initialValue: UInt64(2))
            let chunkWord = Self.read64(name, at: Self.directoryWord)
            #expect(chunkWord != 0)
            let chunk = Self.fileOffset(chunkWord)
            let entries = chunk + MemoryLayout<cipc_heap_directory>.offset(of: \.entries)!
            let stride = MemoryLayout<cipc_heap_name>.stride
            func field(_ index: Int, _ path: PartialKeyPath<cipc_heap_name>) -> Int { entries + index * stride + MemoryLayout<cipc_heap_name>.offset(of: path)! }
            /// Writes `garbage` at `offset`, expects every reader to say corrupt and check() to
            /// name the directory, then restores the bytes. With `onlyBeta`, only beta's own entry
            /// is damaged (its object word): the rest of the directory works on.
            func expectCorrupt(at offset: Int, _ garbage: [UInt8], onlyBeta: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) throws {
                let fd = open("/dev/shm/" + name, O_RDONLY)
                var saved = [UInt8](repeating: 0, count: garbage.count)
                _ = saved.withUnsafeMutableBytes { pread(fd, $0.baseAddress, garbage.count, off_t(offset)) }
                close(fd)
                scribble(name, at: offset, garbage)
                expectError(.corrupt, sourceLocation: sourceLocation) { try heap.find(name: "beta", as: UInt64.self) }
                expectError(.corrupt, sourceLocation: sourceLocation) { try heap.findOrCreate(name: "beta", initialValue: UInt64(3)) }
                if onlyBeta {
                    #expect(try heap.load(heap.find(name: "alpha", as: UInt64.self)) == 1, sourceLocation: sourceLocation)
                    #expect(try heap.namedObjects().map(\.isIntact) == [true, false], sourceLocation: sourceLocation)
                } else {
                    expectError(.corrupt, sourceLocation: sourceLocation) { try heap.findOrCreate(name: "gamma", initialValue: UInt64(3)) }
                    expectError(.corrupt, sourceLocation: sourceLocation) { try heap.destroy(name: "alpha") }
                    expectError(.corrupt, sourceLocation: sourceLocation) { try heap.namedObjects() }
                }
                let problems = try heap.check().problems
                #expect(problems.contains { $0.contains("directory") || $0.contains("named object") }, "\(problems)", sourceLocation: sourceLocation)
                scribble(name, at: offset, saved)
                #expect(try heap.check().isConsistent, "restored", sourceLocation: sourceLocation)
            }
            try expectCorrupt(at: field(1, \.state), Self.bytes(UInt32(0xDEAD_BEEF)))
            try expectCorrupt(at: field(1, \.name_length), Self.bytes(UInt32(97)))
            try expectCorrupt(at: field(1, \.name_length), Self.bytes(UInt32(0)))
            try expectCorrupt(at: field(0, \.name_hash), Self.bytes(UInt64(12345)))
            try expectCorrupt(at: field(0, \.name) + 10, [0x41])              // a byte past the name
            try expectCorrupt(at: field(1, \.type) + 12, Self.bytes(UInt32(3))) // alignment 3
            try expectCorrupt(at: field(1, \.byte_count), Self.bytes(UInt64.max))
            // The object's word: to another block of the heap, to garbage.
            try expectCorrupt(at: field(1, \.object), Self.bytes(UInt64(0xFFFF_FFFF_FFFF_FFFF)), onlyBeta: true)
            try expectCorrupt(at: field(1, \.object), Self.bytes(chunkWord), onlyBeta: true)
            try expectCorrupt(at: field(1, \.byte_count), Self.bytes(UInt64(16)), onlyBeta: true)
            // Both entries named alike.
            try expectCorrupt(at: field(1, \.name), Array("alpha".utf8))
            // The chunk: its tag, its capacity, its link (to itself: a cycle; to garbage).
            try expectCorrupt(at: chunk, Self.bytes(UInt32(0)))
            try expectCorrupt(at: chunk + 4, Self.bytes(UInt32(9)))
            try expectCorrupt(at: chunk + 8, Self.bytes(chunkWord))
            try expectCorrupt(at: chunk + 8, Self.bytes(UInt64(0x1234_5678)))
            // The header's word.
            try expectCorrupt(at: Self.directoryWord, Self.bytes(chunkWord ^ (1 << 40)))
            try expectCorrupt(at: Self.directoryWord, Self.bytes(UInt64(16)))
            #expect(try heap.load(heap.find(name: "beta", as: UInt64.self)) == 2)
            try expectClean(heap)
        }
    }
}

/// Named objects with real processes: racing creators, and creators and destroyers SIGKILLed at
/// every journaled write.
@Suite("SharedHeap named objects, processes", .serialized, .timeLimit(.minutes(5)))
struct SharedHeapNamedProcessTests {
    @Test func racingProcessesCreateExactlyOneObject() throws {
        try withCleanNames("namedrace") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024)
            for round in 0..<3 {
                let object = "meeting-point-\(round)"
                let start = Clock.monotonicNanoseconds() + 300_000_000
                let children = try (0..<6).map { index in
                    try Peer.spawn("named-find-or-create", name, object, String(100 + index), String(start))
                }
                defer { children.forEach { $0.stop() } }
                var answers: [String] = []
                for child in children {
                    answers.append(child.readLine(timeout: .seconds(60)) ?? "no answer")
                    #expect(child.wait(timeout: .seconds(30)) == .exited(0))
                }
                let creators = answers.filter { $0.hasPrefix("created ") }
                #expect(creators.count == 1, "\(answers)")
                let value = String(creators.first?.dropFirst("created ".count) ?? "-")
                #expect(answers.allSatisfy { $0.hasSuffix(" \(value)") }, "every process got the creator's object: \(answers)")
                #expect(try heap.load(heap.find(name: object, as: UInt64.self)) == UInt64(value))
            }
            #expect(try heap.namedObjects().count == 3)
            try expectClean(heap)
        }
    }

    /// A child is SIGKILLed right after each journaled write of a `findOrCreate` (and after its last
    /// write): the next process undoes it all — no name, no block — and the heap is sound; run to
    /// completion, it created the object. `first`: the directory has no chunk yet (one is created);
    /// `second`: the chunk exists; `grow`: the object (64 KB) fits only after the heap grows, which
    /// ends an operation of its own in the middle (so a kill after it leaves the heap grown).
    @Test(arguments: ["first", "second", "grow"])
    func aCreatorKilledAtEveryWriteLeavesTheObjectOrNothing(scenario: String) throws {
        try withCleanNames("namedkillc") { prefix in
            func run(_ write: String) throws -> Bool {
                let name = "\(prefix)-\(write)"
                let heap = try SharedHeap.create(name: name, capacity: 64 * 1024, maximumCapacity: 1 << 20)
                defer { heap.close() }
                if scenario != "first" { _ = try heap.findOrCreate(name: "other", initialValue: UInt64(9)) }
                let before = try heap.statistics().blocks
                let count = scenario == "grow" ? ["8192"] : []
                let child = try spawnArmed("heap.find-or-create#\(write)", ["named-find-or-create", name, "meeting", "77", "0"] + count)
                let outcome = child.wait(timeout: .seconds(60))
                child.closePipes()
                #expect(outcome == .exited(0) || outcome == .signaled(SIGKILL), "#\(write): \(String(describing: outcome))")
                try expectClean(heap)
                if outcome == .exited(0) {
                    #expect(try heap.load(heap.find(name: "meeting", as: UInt64.self)) == 77)
                    #expect(try heap.statistics().blocks == before + (scenario == "first" ? 2 : 1))
                    if scenario == "grow" { #expect(try heap.statistics().stores == 2, "it grew to fit") }
                } else {
                    expectError(.notFound) { try heap.find(name: "meeting", as: UInt64.self) }
                    #expect(try heap.statistics().blocks == before, "#\(write): the creation was undone whole")
                    #expect(try heap.statistics().recoveries == 1)
                    // The heap goes on: the object can be created now.
                    #expect(try heap.findOrCreate(name: "meeting", initialValue: UInt64(78)).created)
                    try expectClean(heap)
                }
                if scenario != "first" { #expect(try heap.load(heap.find(name: "other", as: UInt64.self)) == 9) }
                return outcome == .exited(0)
            }
            var write = 1
            while try !run(String(write)) {
                write += 1
                guard write < 48 else { Issue.record("findOrCreate never completed"); return }
            }
            #expect(write > (scenario == "first" ? 8 : 4), "findOrCreate made only \(write - 1) journaled writes")
            #expect(try !run("end"), "killed after its last write")
        }
    }

    /// A child is SIGKILLed right after each journaled write of a `destroy` (and after its last):
    /// the object is still there with every byte as it was; run to completion, name and block are
    /// gone. `small`: the block goes to a quick list (which writes a link into it); `large`: it
    /// merges with its free neighbours.
    @Test(arguments: ["small", "large"])
    func aDestroyerKilledAtEveryWriteLeavesTheObjectOrNothing(size: String) throws {
        try withCleanNames("namedkilld") { prefix in
            func run(_ write: String) throws -> Bool {
                let name = "\(prefix)-\(write)"
                let heap = try SharedHeap.create(name: name, capacity: 64 * 1024)
                defer { heap.close() }
                let count = size == "small" ? 1 : 300
                let before = try heap.statistics().blocks
                let pointer = try heap.findOrCreate(name: "doomed", repeating: UInt64(0xABCD_EF01_2345_6789), count: count).pointer
                // Free neighbours on both sides for the large block to merge with.
                if size == "large" {
                    let a = try heap.unsafeAllocate(byteCount: 1000)
                    try heap.unsafeDeallocate(a)
                }
                let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", "heap.destroy#\(write)", "named-destroy", name, "doomed")
                let outcome = child.wait(timeout: .seconds(60))
                child.closePipes()
                #expect(outcome == .exited(0) || outcome == .signaled(SIGKILL), "#\(write): \(String(describing: outcome))")
                try expectClean(heap)
                if outcome == .exited(0) {
                    expectError(.notFound) { try heap.find(name: "doomed", as: UInt64.self) }
                    #expect(!heap.contains(pointer))
                    #expect(try heap.statistics().blocks == before + 1, "only the directory's chunk")
                } else {
                    let found = try heap.find(name: "doomed", as: UInt64.self)
                    #expect(found == pointer)
                    try heap.withUnsafeMutableBytes(of: found) { bytes in
                        #expect(bytes.count == count * 8)
                        #expect(bytes.bindMemory(to: UInt64.self).allSatisfy { $0 == 0xABCD_EF01_2345_6789 }, "#\(write): the object's bytes changed")
                    }
                    #expect(try heap.destroy(name: "doomed"))
                    try expectClean(heap)
                }
                return outcome == .exited(0)
            }
            var write = 1
            while try !run(String(write)) {
                write += 1
                guard write < 48 else { Issue.record("destroy never completed"); return }
            }
            #expect(write > 2, "destroy made only \(write - 1) journaled writes")
            #expect(try !run("end"), "killed after its last write")
        }
    }

    /// What a killed process held: the blocks it allocated are reclaimed on request — not its named
    /// object, not the block this process adopted from it.
    @Test func blocksOfAKilledProcessAreReclaimedButNotNamedOrAdoptedOnes() throws {
        try withCleanNames("namedreclaim") { name in
            let heap = try SharedHeap.create(name: name, capacity: 256 * 1024)
            let child = try Peer.spawn("named-hold", name, "10")
            defer { child.stop() }
            let word = UInt64(child.readLine(timeout: .seconds(60)) ?? "") ?? 0
            #expect(child.readLine(timeout: .seconds(60)) == "ready")
            let adopted = try heap.adopt(SharedPointer<UInt8>(bitPattern: word))
            #expect(try heap.reclaimBlocksOfEndedProcesses().blocks == 0, "the child is alive")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            let stats = try heap.statistics()
            let dead = try #require(stats.clients.first { !$0.isAlive && $0.record != 0 })
            #expect(dead.pid == child.pid && dead.blocks == 10, "its 10 blocks; not the named object or the directory chunk")
            #expect(stats.clients.first { $0.record == 0 }?.blocks == 2, "the named object and the chunk belong to no process")
            #expect(stats.clients.first { $0.isAlive }?.blocks == 1, "the adopted block is this process's")
            let dry = try heap.reclaimBlocksOfEndedProcesses(dryRun: true)
            #expect(dry.blocks == 10 && dry.processes == [child.pid])
            #expect(try heap.statistics().blocks == stats.blocks, "a dry run frees nothing")
            let result = try heap.reclaimBlocksOfEndedProcesses()
            #expect(result == dry)
            #expect(try heap.statistics().blocks == 3)
            #expect(try heap.load(heap.find(name: "kept-\(child.pid)", as: UInt64.self)) == UInt64(child.pid))
            let adoptedCount = adopted.byteCount
            #expect(adoptedCount == 200)
            try adopted.deallocate()
            try expectClean(heap)
            #expect(try heap.reclaimBlocksOfEndedProcesses().blocks == 0)
        }
    }

    /// The last holder of a heap that grew is killed: the heap is abandoned and its stores are
    /// orphans; `collectGarbage` sweeps the one, `collectOrphanStores` the others.
    @Test func orphanStoresOfAKilledHeapAreCollected() throws {
        try withCleanNames("namedorphan") { name in
            let child = try Peer.spawn("named-grow-hold", name)
            defer { child.stop() }
            #expect(child.readLine(timeout: .seconds(60)) == "ready")
            let stores = TestNames.leftovers(name + "~").sorted()
            #expect(stores.count == 2)
            #expect(SharedHeap.collectOrphanStores(prefix: name).isEmpty, "its heap is held")
            child.kill(signal: SIGKILL)
            #expect(child.wait(timeout: .seconds(10)) == .signaled(SIGKILL))
            #expect(SharedHeap.collectOrphanStores(dryRun: true, prefix: name).map(\.name).sorted() == stores, "the heap is abandoned")
            #expect(SharedHeap.collectOrphanStores(prefix: name).isEmpty, "the heap is still there")
            #expect(TestNames.leftovers(name).count == 3)
            #expect(SharedMemory.collectGarbage(prefix: name).map(\.name) == [name])
            #expect(SharedHeap.collectOrphanStores(prefix: name).map(\.name).sorted() == stores)
            #expect(TestNames.leftovers(name).isEmpty)
        }
    }
}
