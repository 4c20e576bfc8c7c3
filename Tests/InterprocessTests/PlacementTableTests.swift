#if canImport(Glibc)
import Glibc
#endif
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem

/// A segment's table of placed objects: nothing is placed over anything else (a stored value, a
/// placed object), a placer killed at any step leaves the entry or nothing, a damaged table is
/// `corrupt`; typed atomics placed by name.
@Suite("Placed objects", .serialized, .timeLimit(.minutes(3)))
struct PlacementTableTests {
    /// Where the table is in the segment's file, and where its entries start.
    static let table = fieldOffset(\cipc_segment_header.placements)
    static let entries = table + fieldOffset(\cipc_placement_table.entries)

    /// The issue's program: a store over a placed mutex used to overwrite it (and the lock then hung).
    @Test func aStoreOverAPlacedMutexIsRefusedAndTheMutexKeepsWorking() throws {
        try withCleanNames("plstore") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            let mutex = try ProcessMutex.create(in: segment, at: 0)
            struct C: Codable { var v: Int }
            do throws(InterprocessError) {
                try segment.store(C(v: 7))
                Issue.record("a store overwrote the mutex")
            } catch {
                #expect(error.code == .overlaps, "\(error)")
                #expect(error.detail.contains("a mutex at 0..<64"), "\(error)")
            }
            #expect(try mutex.blockingLock(timeout: .seconds(5)) == .acquired)
            try mutex.unlock()
            #expect(try segment.placedObjects() == [PlacedObject(kind: "mutex", offset: 0, size: 64, name: nil)])
        }
    }

    /// A value and its lock in one segment: the locks placed first (by offset, or by name at the
    /// end), the value's frame laid out by the first store over the free bytes before them. (Changed
    /// on purpose with the two-slot value frame: a frame's extent — both slots, the capacity for later
    /// values — is fixed by the first store, so a larger value is `invalidSize`, no longer a frame
    /// growing into the lock.)
    @Test func aValueAndItsLockLiveInOneSegment() throws {
        try withCleanNames("plboth") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            let lock = try ProcessMutex.create(in: segment, at: 1024)
            let named = try ProcessMutex.create(in: segment, named: "lock")
            try segment.store(["a": 1])
            // The frame takes everything before the lock: capacity (1024 − 128) / 2.
            let extent = 1024
            #expect(try segment.storedValueExtent() == 0..<extent)
            #expect(try segment.placedObjects() == [
                PlacedObject(kind: "stored value", offset: 0, size: extent, name: nil), PlacedObject(kind: "mutex", offset: 1024, size: 64),
                PlacedObject(kind: "mutex", offset: 4096 - 64, size: 64, name: "lock"),
            ])
            // Placing over the value's frame — its header or either slot — is refused, and says what is there.
            for offset in [0, 64, 512, 1024 - 64] {
                do throws(InterprocessError) {
                    _ = try ProcessMutex.create(in: segment, at: offset)
                    Issue.record("a mutex was placed over the stored value at \(offset)")
                } catch {
                    #expect(error.code == .overlaps && error.detail.contains("the stored value at 0..<\(extent)"), "\(error)")
                }
            }
            // A value larger than the frame's capacity is refused and changes nothing; smaller ones go.
            expectError(.invalidSize) { try segment.write(Array(repeating: UInt8(ascii: "x"), count: 449)) }
            #expect(try segment.load([String: Int].self) == ["a": 1])
            try segment.write(Array(repeating: UInt8(ascii: "y"), count: 448)) // exactly the capacity
            try segment.store(["b": 2])
            #expect(try segment.load([String: Int].self) == ["b": 2])
            #expect(try segment.placedObjects().first?.size == extent, "the value's entry covers its whole frame")
            // Room is left after the lock: objects still go there.
            _ = try ProcessEvent.create(in: segment, at: 2048, mode: .manualReset)
            try lock.withBlockingLock { try named.withBlockingLock {} }
        }
    }

    /// A store into a segment whose start is taken: the first store refuses a value whose frame does
    /// not fit before the first placed object (`overlaps`, naming it), and lays out the frame it can.
    @Test func theFirstStoreFitsItsFrameBeforeThePlacedObjects() throws {
        try withCleanNames("plfirst") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            _ = try ProcessMutex.create(in: segment, at: 256)
            do throws(InterprocessError) {
                try segment.write(Array(repeating: UInt8(ascii: "z"), count: 100)) // needs 128 + 208 bytes
                Issue.record("a frame was laid out over the mutex")
            } catch {
                #expect(error.code == .overlaps && error.detail.contains("a mutex at 256..<320"), "\(error)")
            }
            #expect(try segment.storedValueExtent() == nil, "nothing was laid out")
            #expect(try segment.placedObjects().map(\.kind) == ["mutex"])
            try segment.write("short") // capacity (256 − 128) / 2 = 64
            #expect(try segment.storedValueExtent() == 0..<256)
            #expect(try segment.readString() == "short")
            expectError(.invalidSize) { try segment.write(Array(repeating: UInt8(ascii: "z"), count: 65)) }
            #expect(try segment.readString() == "short")
        }
    }

    /// A segment made for a value registers it at once; an anonymous segment has a table too.
    @Test func aSegmentCreatedWithAValueAndAnAnonymousOneAreChecked() throws {
        try withCleanNames("plcreated") { name in
            let segment = try SharedMemory.create(name: name, string: "hello")
            defer { segment.close() }
            // The frame for "hello": its header and two slots of 8 bytes, the whole payload.
            #expect(try segment.placedObjects() == [PlacedObject(kind: "stored value", offset: 0, size: 144)])
            expectError(.overlaps) { try ProcessMutex.create(in: segment, at: 0) } // (was invalidArgument: 13 bytes had no room)
            expectError(.invalidArgument) { try ProcessMutex.create(in: segment, at: 128) } // 16 bytes: no room
            let anonymous = try SharedMemory.anonymous(size: 4096)
            defer { anonymous.close() }
            let mutex = try ProcessMutex.create(in: anonymous, at: 0)
            expectError(.overlaps) { try anonymous.write("over the mutex") }
            let atomic = try SharedAtomic<UInt64>.create(in: anonymous, named: "n", initialValue: 1)
            #expect(try SharedAtomic<UInt64>.open(in: anonymous, named: "n").wrappingAdd(1).newValue == 2 && atomic.load() == 2)
            try mutex.withBlockingLock {}
        }
    }

    /// Placed vs placed: every overlap is refused with the occupant named; the same kind at the same
    /// place is `alreadyExists`; opening it is fine; another kind is `incompatible`.
    @Test func placedObjectsNeverOverlap() throws {
        try withCleanNames("plover") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            let semaphore = try ProcessSemaphore.create(in: segment, at: 128, value: 2)
            for offset in [72, 104, 128, 184] {
                do throws(InterprocessError) {
                    _ = try ProcessMutex.create(in: segment, at: offset)
                    Issue.record("a mutex at \(offset) was placed over the semaphore")
                } catch {
                    #expect(error.code == .overlaps && error.detail.contains("a semaphore at 128..<192"), "\(offset): \(error)")
                }
            }
            expectError(.overlaps) { try ProcessRWLock.create(in: segment, at: 0) } // 576 bytes reach it
            expectError(.overlaps) { try SharedVariable<UInt64>.create(in: segment, at: 0) }
            expectError(.overlaps) { try SharedAtomic<Int64>.create(in: segment, at: 64) }
            expectError(.alreadyExists) { try ProcessSemaphore.create(in: segment, at: 128, value: 0) }
            #expect(try ProcessSemaphore.open(in: segment, at: 128).tryWait())
            expectError(.incompatible) { try ProcessMutex.open(in: segment, at: 128) }
            expectError(.incompatible) { try ProcessSemaphore.open(in: segment, at: 136) } // inside it
            // Right beside it on both sides: fine.
            _ = try ProcessMutex.create(in: segment, at: 64)
            _ = try ProcessEvent.create(in: segment, at: 192, mode: .manualReset)
            #expect(semaphore.tryWait() && !semaphore.tryWait(), "the semaphore kept its count")
            // Removing frees the place.
            try segment.removePlacedObject(at: 128)
            expectError(.notFound) { try segment.removePlacedObject(at: 128) }
            expectError(.corrupt) { try ProcessSemaphore.open(in: segment, at: 128) }
            _ = try ProcessCondition.create(in: segment, at: 128)
            #expect(try segment.placedObjects().map(\.kind) == ["mutex", "condition", "event"])
        }
    }

    @Test func theTableHasRoomFor24ObjectsAndNamesAreChecked() throws {
        try withCleanNames("plfull") { name in
            let segment = try SharedMemory.create(name: name, size: 8192)
            defer { segment.close() }
            let atomics = try (0..<24).map { try SharedAtomic<UInt32>.create(in: segment, named: "a\($0)", initialValue: UInt32($0)) }
            #expect(atomics.map { $0.load() } == Array(0..<24))
            expectError(.outOfMemory) { try ProcessMutex.create(in: segment, at: 0) }
            expectError(.outOfMemory) { try segment.write("x") }
            expectError(.invalidName) { try SharedAtomic<Int64>.create(in: segment, named: "") }
            expectError(.invalidName) { try SharedAtomic<Int64>.create(in: segment, named: String(repeating: "n", count: 33)) }
            expectError(.notFound) { try SharedAtomic<Int64>.open(in: segment, named: "missing") }
            expectError(.alreadyExists) { try SharedAtomic<UInt32>.create(in: segment, named: "a3") }
            expectError(.incompatible) { try SharedAtomic<Int32>.open(in: segment, named: "a3") } // another type
            expectError(.incompatible) { try ProcessMutex.open(in: segment, named: "a3") } // another kind
            #expect(try SharedAtomic<UInt32>.open(in: segment, named: "a3").load() == 3)
            // By name, the highest free places first: the start stays free for a stored value.
            #expect(try segment.placedObjects().map(\.offset) == (0..<24).map { 8192 - 192 * ($0 + 1) }.reversed())
        }
    }

    /// Several processes count on a placed atomic (lock-free) and on a plain word under a placed
    /// mutex, all found by name, beside a stored value.
    @Test func processesCountOnAPlacedAtomic() throws {
        try withCleanNames("plcount") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            // The objects first: the value's frame, laid out by the first store, takes the bytes
            // before them (changed on purpose: a frame stored first would take the whole payload).
            let counter = try SharedAtomic<Int64>.create(in: segment, named: "counter", initialValue: -5)
            _ = try ProcessMutex.create(in: segment, named: "lock")
            let plain = try SharedAtomic<UInt32>.create(in: segment, named: "plain")
            try segment.write("counters below")
            let perChild = 5000
            let children = try (0..<4).map { _ in try Peer.spawn("place-count", name, "\(perChild)") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine(timeout: .seconds(30)) == "ready") }
            for child in children { child.tell() }
            for child in children {
                #expect(child.readLine(timeout: .seconds(120)) == "done")
                #expect(child.wait(timeout: .seconds(30)) == .exited(0))
            }
            #expect(counter.load() == Int64(4 * perChild) - 5)
            #expect(plain.load() == UInt32(4 * perChild))
            #expect(try segment.readString() == "counters below")
            let info = try SharedMemory.info(name: name)
            #expect(info.placed.map(\.name) == [nil, "plain", "lock", "counter"], "\(info.placed)")
        }
    }

    /// A placer SIGKILLed at each step leaves the entry (with a complete object) or nothing, and
    /// never wedges the table: the next user takes its lock over and repairs it.
    @Test(arguments: [("place.afterClaim", false), ("place.beforeTag", false), ("place.afterTag", true)])
    func aPlacerKilledMidwayLeavesTheEntryOrNothing(point: String, placed: Bool) throws {
        try withCleanNames("plcrash") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "place-atomic", name, "c", "7")
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            if placed {
                #expect(try segment.placedObjects().map(\.name) == ["c"])
                #expect(try SharedAtomic<Int64>.open(in: segment, named: "c").load() == 7)
                expectError(.alreadyExists) { try SharedAtomic<Int64>.create(in: segment, named: "c") }
            } else {
                #expect(try segment.placedObjects() == [])
                expectError(.notFound) { try SharedAtomic<Int64>.open(in: segment, named: "c") }
                #expect(try SharedAtomic<Int64>.create(in: segment, named: "c", initialValue: 8).load() == 8)
            }
            // And another process goes on using the table.
            let (termination, output) = try Peer.run("place-read", name, "c")
            #expect(termination == .exited(0) && output == (placed ? "7\n" : "8\n"), "\(output)")
        }
    }

    /// A first storer killed after registering its frame's entry (before laying the frame out) or
    /// after laying it out leaves an entry covering the frame's whole extent: nothing can be placed
    /// over it, readers find nothing stored, and the next store goes on. (Changed on purpose: the
    /// entry no longer grows and shrinks with each value; a storer killed in a later store leaves the
    /// table as it was: see StoredValueTests.)
    @Test(arguments: ["store.afterReserve", "store.afterLayOut"])
    func aStorerKilledMidwayLeavesTheFrameCovered(point: String) throws {
        try withCleanNames("plstorecrash") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            _ = try ProcessMutex.create(in: segment, named: "lock") // at 4032
            let long = String(repeating: "L", count: 100)
            let child = try Peer.spawn(environment: "INTERPROCESS_CRASH_POINT", point, "place-store", name, long)
            #expect(child.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            child.closePipes()
            let extent = 4032 // capacity (4032 − 128) / 2 = 1952: both slots up to the lock
            #expect(try segment.placedObjects().first == PlacedObject(kind: "stored value", offset: 0, size: extent))
            #expect(try segment.storedValueExtent() == (point == "store.afterLayOut" ? 0..<extent : nil))
            expectError(.empty) { try segment.readString() }
            expectError(.overlaps) { try ProcessMutex.create(in: segment, at: 64) }
            try segment.write("again")
            #expect(try segment.readString() == "again")
            #expect(try segment.placedObjects().map(\.range) == [0..<extent, 4032..<4096])
            expectError(.overlaps) { try ProcessMutex.create(in: segment, at: 2048) }
        }
    }

    /// Whatever a hostile peer writes into the table is `corrupt` (or `incompatible`), never a crash.
    @Test func aScribbledTableIsCorrupt() throws {
        try withCleanNames("plscribble") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            _ = try ProcessMutex.create(in: segment, at: 0)
            let entry = Self.entries // entry 0: the mutex
            func le32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
            func le64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
            let damages: [(String, Int, [UInt8], InterprocessError.Code)] = [
                ("state", entry + 16, le32(7), .corrupt),
                ("size beyond the payload", entry + 8, le64(1 << 40), .corrupt),
                ("offset beyond the payload", entry, le64(4096), .corrupt),
                ("misaligned", entry, le64(4), .corrupt),
                ("name length", entry + 24, le32(33), .corrupt),
                ("tag offset outside", entry + 28, le32(64), .corrupt),
                ("capacity", Self.table + 68, le32(1000), .corrupt),
                ("format", Self.table + 64, le32(9), .incompatible),
            ]
            for (what, offset, bytes, code) in damages {
                let saved = peek(name, at: offset, count: bytes.count)
                scribble(name, at: offset, bytes)
                expectError(code) { try segment.placedObjects() }
                expectError(code) { try ProcessMutex.create(in: segment, at: 1024) }
                expectError(code) { try ProcessMutex.open(in: segment, at: 0) }
                expectError(code) { try segment.write("x") }
                #expect(try SharedMemory.info(name: name).problem?.contains("table of placed objects") == true, "\(what)")
                scribble(name, at: offset, saved)
                #expect(try segment.placedObjects().count == 1, "\(what): repaired by hand")
            }
            // A stored value anywhere but at 0.
            try segment.removePlacedObject(at: 0)
            _ = try ProcessEvent.create(in: segment, at: 1024, mode: .manualReset) // entry 0 again
            try segment.write("v") // entry 1: the stored value's frame at 0..<1024
            scribble(name, at: entry + 64, le64(64))
            expectError(.corrupt) { try segment.placedObjects() }
            expectError(.corrupt) { try segment.write("w") }
            scribble(name, at: entry + 64, le64(0))
            #expect(try segment.placedObjects().map(\.range) == [0..<1024, 1024..<1088])
            // Two entries over one another.
            scribble(name, at: entry, le64(0))
            expectError(.corrupt) { try segment.placedObjects() }
            expectError(.corrupt) { try segment.write("w") }
            // Random bytes anywhere in the table: an error or an answer, never a crash or a hang.
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<200 {
                let offset = Self.table + Int.random(in: 0..<1664, using: &generator)
                scribble(name, at: offset, [UInt8.random(in: 0...255, using: &generator)])
                _ = try? segment.placedObjects()
                _ = try? SharedAtomic<Int64>.create(in: segment, named: "n")
                _ = try? segment.write("y")
                _ = try? SharedMemory.info(name: name)
            }
        }
    }

    /// A named atomic is its own object: `ipc ls` knows its kind, value and type.
    @Test func aNamedAtomicIsASharedObject() throws {
        try withCleanNames("platom") { name in
            let atomic = try SharedAtomic<Int32>.create(name: name, initialValue: -3)
            defer { atomic.close() }
            #expect(atomic.wrappingAdd(1) == (-3, -2))
            #expect(atomic.compareExchange(expected: -2, desired: Int32.max) == (true, -2))
            #expect(atomic.wrappingAdd(1).newValue == Int32.min, "wraps")
            #expect(atomic.exchange(5) == Int32.min)
            #expect(atomic.wrappingSubtract(6).newValue == -1)
            let info = try SharedMemory.info(name: name)
            #expect(info.kind == "atomic" && info.summary == "value -1", "\(info)")
            #expect(info.details["valueType"] == "Swift.Int32 (4 bytes, aligned to 4, version 0)")
            expectError(.incompatible) { try SharedAtomic<UInt32>.open(name: name) }
            expectError(.incompatible) { try ProcessMutex.open(name: name) }
            let (again, created) = try SharedAtomic<Int32>.openOrCreate(name: name)
            #expect(!created && again.load() == -1)
            again.store(9)
            #expect(atomic.load() == 9)
        }
    }

    /// A reader started before the creator waits for the named atomic.
    @Test func anOpenWaitsForTheAtomicsCreator() async throws {
        let name = TestNames.make("platomwait")
        expectError(.timedOut) { try SharedAtomic<UInt64>.blockingOpenWhenCreated(name: name, timeout: .milliseconds(10)) }
        let atomic = try SharedAtomic<UInt64>.create(name: name, initialValue: 5)
        defer { atomic.close() }
        #expect(try await SharedAtomic<UInt64>.openWhenCreated(name: name, timeout: .seconds(20)).load() == 5)
        await #expect(throws: InterprocessError.self) { try await SharedAtomic<Int64>.openWhenCreated(name: name, timeout: .seconds(20)) }
    }
}
