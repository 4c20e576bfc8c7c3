#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// What every kind of shared object gets from the one storage type: openOrCreate (with real
/// processes racing), remove by kind, the checks of a place in a segment, and its description.
@Suite("Shared objects", .serialized, .timeLimit(.minutes(3)))
struct SharedObjectTests {
    static let kinds = ["mutex", "semaphore", "event", "condition", "rwlock", "variable", "heap"]

    /// Six processes race to open-or-create one name at the same instant: exactly one creates it,
    /// and every other opens the object it built — completely initialized (a semaphore with all its
    /// units, a set event, a variable holding its first value, locks that lock).
    @Test(arguments: kinds)
    func openOrCreateRaceHasOneCreator(_ kind: String) throws {
        try withCleanNames("ooc-\(kind)") { name in
            let count = 6
            var children: [ChildProcess] = []
            defer { for child in children { child.stop() } }
            for _ in 0..<count {
                let child = try Peer.spawn("obj-open-or-create", kind, name, "\(count)")
                children.append(child)
                #expect(child.readLine() == "ready")
            }
            let start = Clock.monotonicNanoseconds() + 100_000_000
            for child in children { child.tell("go \(start)") }
            let outcomes = children.map { $0.readLine(timeout: .seconds(60)) ?? "no answer" }
            #expect(outcomes.filter { $0 == "created ok" }.count == 1, "\(outcomes)")
            #expect(outcomes.filter { $0 == "opened ok" }.count == count - 1, "\(outcomes)")
            for child in children { child.tell() }
            for child in children { #expect(child.wait(timeout: .seconds(30)) == .exited(0)) }
        }
    }

    @Test func openOrCreateInOneProcess() throws {
        try withCleanNames("ooc-one") { name in
            let (first, created) = try ProcessSemaphore.openOrCreate(name: name, value: 2)
            defer { first.close() }
            #expect(created)
            #expect(first.tryWait())
            let (second, createdAgain) = try ProcessSemaphore.openOrCreate(name: name, value: 7)
            defer { second.close() }
            #expect(!createdAgain)
            #expect(second.value == 1, "an existing semaphore keeps its count")
            // Another kind under the name, or an event of the other mode: incompatible.
            expectError(.incompatible) { try ProcessMutex.openOrCreate(name: name) }
            expectError(.invalidArgument) { try ProcessSemaphore.openOrCreate(name: name + "-n", value: -1) }

            let (event, _) = try ProcessEvent.openOrCreate(name: name + "-e", mode: .autoReset)
            defer { event.close() }
            expectError(.incompatible) { try ProcessEvent.openOrCreate(name: name + "-e", mode: .manualReset) }
            let (same, eventCreated) = try ProcessEvent.openOrCreate(name: name + "-e", mode: .autoReset)
            #expect(!eventCreated && same.mode == .autoReset)
            same.close()

            // A raw segment of that name is not a mutex.
            let segment = try SharedMemory.create(name: name + "-raw", size: 64)
            defer { segment.close() }
            expectError(.incompatible) { try ProcessRWLock.openOrCreate(name: name + "-raw") }

            // A persistent object created by openOrCreate stays until removed.
            let (variable, variableCreated) = try SharedVariable<UInt64>.openOrCreate(name: name + "-v", initialValue: 5, lifetime: .persistent)
            #expect(variableCreated)
            variable.close()
            let (again, createdThird) = try SharedVariable<UInt64>.openOrCreate(name: name + "-v", initialValue: 9)
            #expect(!createdThird && again.tryRead() == 5)
            again.close()
            try SharedVariable<UInt64>.remove(name: name + "-v")
        }
    }

    @Test func removeChecksTheKind() throws {
        try withCleanNames("objrm") { name in
            let mutex = try ProcessMutex.create(name: name, lifetime: .persistent)
            mutex.close()
            expectError(.incompatible) { try ProcessSemaphore.remove(name: name) }
            expectError(.incompatible) { try SharedVariable<Int>.remove(name: name) }
            #expect(SharedMemory.exists(name: name))
            try ProcessMutex.remove(name: name)
            #expect(!SharedMemory.exists(name: name))
            expectError(.notFound) { try ProcessMutex.remove(name: name) }

            try ProcessSemaphore.create(name: "\(name)-0", value: 0, lifetime: .persistent).close()
            try ProcessEvent.create(name: "\(name)-1", mode: .autoReset, lifetime: .persistent).close()
            try ProcessCondition.create(name: "\(name)-2", lifetime: .persistent).close()
            try ProcessRWLock.create(name: "\(name)-3", lifetime: .persistent).close()
            expectError(.incompatible) { try ProcessCondition.remove(name: "\(name)-1") }
            try ProcessSemaphore.remove(name: "\(name)-0")
            try ProcessEvent.remove(name: "\(name)-1")
            try ProcessCondition.remove(name: "\(name)-2")
            try ProcessRWLock.remove(name: "\(name)-3")
        }
    }

    /// A place that is misaligned is told apart from one that does not fit (issue 17, point 7).
    @Test func placementErrorsSayWhatIsWrong() throws {
        try withCleanNames("objplace") { name in
            let segment = try SharedMemory.create(name: name, size: 256)
            defer { segment.close() }
            do {
                _ = try ProcessMutex.create(in: segment, at: 4)
                Issue.record("a misaligned mutex was placed")
            } catch let error as InterprocessError {
                #expect(error.code == .invalidArgument && error.detail.contains("multiple of 8"), "\(error)")
            }
            do {
                _ = try ProcessMutex.create(in: segment, at: 200)
                Issue.record("a mutex was placed past the end")
            } catch let error as InterprocessError {
                #expect(error.code == .invalidArgument && error.detail.contains("needs 64 bytes"), "\(error)")
            }
            expectError(.invalidArgument) { try ProcessRWLock.create(in: segment, at: 0) } // 576 bytes
            expectError(.invalidArgument) { try ProcessSemaphore.open(in: segment, at: -8) }
            // Nothing there yet: no valid object.
            expectError(.corrupt) { try ProcessEvent.open(in: segment, at: 64) }
            let event = try ProcessEvent.create(in: segment, at: 64, mode: .manualReset)
            #expect(try ProcessEvent.open(in: segment, at: 64).mode == .manualReset)
            // Another kind is placed there: the segment's table of placed objects says which.
            do {
                _ = try ProcessSemaphore.open(in: segment, at: 64)
                Issue.record("a semaphore opened where an event is placed")
            } catch let error as InterprocessError {
                #expect(error.code == .incompatible && error.detail.contains("an event at 64..<128"), "\(error)")
            }
            // Without the table's entry (an object placed by a version without the table), the tag decides.
            try segment.removePlacedObject(at: 64)
            expectError(.corrupt) { try ProcessEvent.open(in: segment, at: 64) } // its tag was zeroed
            event.set()
        }
    }

    /// `ipc ls` learns each kind's words from the kind.
    @Test func everyKindDescribesItself() throws {
        try withCleanNames("objdesc") { name in
            let mutex = try ProcessMutex.create(name: name + "-m")
            let semaphore = try ProcessSemaphore.create(name: name + "-s", value: 3)
            let event = try ProcessEvent.create(name: name + "-e", mode: .autoReset, initiallySet: true)
            let condition = try ProcessCondition.create(name: name + "-c")
            let lock = try ProcessRWLock.create(name: name + "-r")
            let variable = try SharedVariable<UInt32>.create(name: name + "-v", initialValue: 1)
            defer { [mutex.close, semaphore.close, event.close, condition.close, lock.close, variable.close].forEach { $0() } }
            try mutex.blockingLock()
            _ = try lock.blockingReadLock()
            let infos = Dictionary(uniqueKeysWithValues: SharedMemory.list().filter { $0.name.hasPrefix(name) }.map { ($0.name, $0) })
            #expect(infos[name + "-m"]?.kind == "mutex")
            #expect(infos[name + "-m"]?.summary == "locked by \(getpid())")
            #expect(infos[name + "-s"]?.summary == "count 3")
            #expect(infos[name + "-e"]?.summary == "set (autoReset)")
            #expect(infos[name + "-c"]?.kind == "condition")
            #expect(infos[name + "-r"]?.summary == "1 read lock")
            #expect(infos[name + "-v"]?.summary == "full (generation 1)")
            #expect(infos[name + "-v"]?.details["valueType"] == "Swift.UInt32 (4 bytes, aligned to 4, version 0)")
            try lock.readUnlock()
            try mutex.unlock()
        }
    }
}
