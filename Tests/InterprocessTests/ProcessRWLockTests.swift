#if canImport(Glibc)
import Glibc
#endif
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem
import Synchronization

/// A segment laid out as the test child's "rw-…" commands expect (see
/// ReaderWriterAndVariableCommands.swift): the lock @0, counters a/b @1024/@1032, stop flag @1088,
/// arrival counter @1112.
func makeRWSegment(_ name: String) throws -> SharedMemory {
    let segment = try SharedMemory.create(name: name, size: 4096)
    _ = try ProcessRWLock.create(in: segment, at: 0)
    return segment
}

/// The overflow count, reader slots in use and reader recoveries of the lock @0 of an rw segment
/// (offsets as in `cipc_rwlock`).
func rwState(_ segment: SharedMemory) throws -> (overflow: UInt32, slotsInUse: Int, readerRecoveries: UInt64) {
    try segment.withUnsafeBytes { bytes in
        let slots = fieldOffset(\cipc_rwlock.readers)
        let inUse = (0..<32).filter { bytes.load(fromByteOffset: slots + $0 * MemoryLayout<cipc_rwlock_reader>.stride, as: UInt64.self) != 0 }.count
        return (bytes.load(fromByteOffset: fieldOffset(\cipc_rwlock.overflow), as: UInt32.self), inUse,
                bytes.load(fromByteOffset: fieldOffset(\cipc_rwlock.reader_recoveries), as: UInt64.self))
    }
}

/// Polls `condition` every millisecond until it holds or `timeout` passes; returns whether it held.
func pollUntil(timeout: Duration = .seconds(10), _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Deadline(after: timeout)
    while !deadline.hasPassed {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}

@Suite("ProcessRWLock", .serialized, .timeLimit(.minutes(3)))
struct ProcessRWLockTests {
    @Test func uncontendedLockingAndErrors() throws {
        try withCleanNames("rwl") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            #expect(lock.name == name)
            #expect(!lock.isWriteLocked && lock.readerCount == 0)
            #expect(try lock.blockingReadLock() == .acquired)
            #expect(lock.tryReadLock() == .acquired)
            #expect(lock.readerCount == 2)
            #expect(lock.tryWriteLock() == nil, "readers inside")
            #expect(!lock.isWriteLocked, "a failed try gives its claim back")
            try lock.readUnlock()
            try lock.readUnlock()
            expectError(.notOwner) { try lock.readUnlock() }
            expectError(.notOwner) { try lock.writeUnlock() }
            #expect(try lock.blockingWriteLock() == .acquired)
            #expect(lock.isWriteLocked)
            #expect(lock.tryReadLock() == nil)
            #expect(lock.tryWriteLock() == nil)
            #expect(try SharedMemory.info(name: name).details["writeLocked"] == "yes")
            try lock.writeUnlock()
            #expect(lock.tryWriteLock() == .acquired)
            try lock.writeUnlock()
            #expect(try lock.withBlockingReadLock{ 1 } == 1)
            #expect(try lock.withBlockingWriteLock{ 2 } == 2)
            #expect(!lock.isWriteLocked && lock.readerCount == 0)
            expectError(.timedOut) { try lock.withBlockingWriteLock { try lock.blockingReadLock(timeout: .milliseconds(20)) } }
            #expect(!lock.isWriteLocked)
            // Opening it as another kind of object is an error.
            expectError(.incompatible) { try ProcessMutex.open(name: name) }
            expectError(.incompatible) { try SharedMemory.open(name: name) }
            let info = try SharedMemory.info(name: name)
            #expect(info.kind == "rwlock")
            #expect(info.details["readers"] == "0")
            #expect(info.details["writer"] == "-")
            let again = try ProcessRWLock.open(name: name)
            #expect(again.readerCount == 0)
            again.close()
        }
    }

    @Test func placementInAUserSegmentIsChecked() throws {
        try withCleanNames("rwlplace") { name in
            #expect(ProcessRWLock.stateSize == 576)
            let segment = try SharedMemory.create(name: name, size: 2048)
            defer { segment.close() }
            expectError(.invalidArgument) { try ProcessRWLock.create(in: segment, at: 4) }
            expectError(.invalidArgument) { try ProcessRWLock.create(in: segment, at: 1600) }
            expectError(.corrupt) { try ProcessRWLock.open(in: segment, at: 64) }
            _ = try ProcessMutex.create(in: segment, at: 1024)
            expectError(.incompatible) { try ProcessRWLock.open(in: segment, at: 1024) } // the table says: a mutex
            let lock = try ProcessRWLock.create(in: segment, at: 64)
            // A header with another slot count or state size (another layout) is refused.
            let stateSize = 64 + fieldOffset(\cipc_rwlock.state_size)
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(64), toByteOffset: stateSize, as: UInt32.self) }
            expectError(.corrupt) { try ProcessRWLock.open(in: segment, at: 64) }
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(576), toByteOffset: stateSize, as: UInt32.self) }
            let again = try ProcessRWLock.open(in: segment, at: 64)
            try lock.blockingWriteLock()
            #expect(again.tryReadLock() == nil)
            try again.writeUnlock() // same process: ownership is per process
            // Read locks are per process too: one instance's lock is released through another.
            try lock.blockingReadLock()
            #expect(again.readerCount == 1)
            try again.readUnlock()
            expectError(.notOwner) { try lock.readUnlock() }
            segment.close()
            try lock.blockingReadLock()
            try lock.readUnlock()
        }
    }

    @Test func manyReadersHoldItAtOnceAcrossProcesses() throws {
        try withCleanNames("rwlshare") { name in
            let segment = try makeRWSegment(name)
            defer { segment.close() }
            let lock = try ProcessRWLock.open(in: segment, at: 0)
            // Each child takes a read lock, counts itself in and keeps the lock until the count
            // reaches 5: this process counts once for its own read lock and once more after it has
            // seen all four readers inside at the same time. A lock that let only one reader in at a
            // time would make the children time out.
            let arrivals = { (delta: UInt32) in
                try segment.withUnsafeMutableBytes { atomic32($0.baseAddress! + 1112).pointee.add(delta, ordering: .sequentiallyConsistent).newValue }
            }
            try lock.blockingReadLock(timeout: .seconds(5))
            _ = try arrivals(1)
            let children = try (0..<3).map { _ in try Peer.spawn("rw-read-barrier", name, "5", "10000") }
            defer { children.forEach { $0.stop() } }
            for child in children { #expect(child.readLine() == "locked") }
            #expect(try arrivals(0) == 4)
            #expect(lock.readerCount == 4)
            #expect(lock.tryWriteLock() == nil)
            _ = try arrivals(1)
            for child in children { #expect(child.wait(timeout: .seconds(20)) == .exited(0)) }
            #expect(lock.readerCount == 1)
            try lock.readUnlock()
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .acquired)
            try lock.writeUnlock()
        }
    }

    @Test func writersExcludeReadersAndEachOtherAcrossProcesses() throws {
        try withCleanNames("rwlcount") { name in
            let segment = try makeRWSegment(name)
            defer { segment.close() }
            // Writers increment a, dawdle, increment b; readers check a == b. All start together.
            let writers = try (0..<2).map { _ in try Peer.spawn("rw-count", name, "10000") }
            let checkers = try (0..<2).map { _ in try Peer.spawn("rw-check", name, "20000") }
            defer { (writers + checkers).forEach { $0.stop() } }
            for child in writers + checkers { #expect(child.readLine() == "ready") }
            let lock = try ProcessRWLock.open(in: segment, at: 0)
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(1), toByteOffset: 1096, as: UInt64.self) }
            for _ in 0..<10000 {
                try lock.blockingWriteLock(timeout: .seconds(20))
                try segment.withUnsafeMutableBytes { bytes in
                    bytes.storeBytes(of: bytes.load(fromByteOffset: 1024, as: UInt64.self) + 1, toByteOffset: 1024, as: UInt64.self)
                    for _ in 0..<50 { SpinPolicy.pause() }
                    bytes.storeBytes(of: bytes.load(fromByteOffset: 1032, as: UInt64.self) + 1, toByteOffset: 1032, as: UInt64.self)
                }
                try lock.writeUnlock()
            }
            for child in writers + checkers {
                #expect(child.wait(timeout: .seconds(60)) == .exited(0))
            }
            let (a, b) = try segment.withUnsafeBytes { ($0.load(fromByteOffset: 1024, as: UInt64.self), $0.load(fromByteOffset: 1032, as: UInt64.self)) }
            #expect(a == 30_000)
            #expect(b == 30_000)
            #expect(lock.readerCount == 0 && !lock.isWriteLocked)
        }
    }

    @Test func aWriterIsNotStarvedByAStreamOfReaders() throws {
        try withCleanNames("rwlstarve") { name in
            let segment = try makeRWSegment(name)
            defer { segment.close() }
            let readers = try (0..<2).map { _ in try Peer.spawn("rw-read-loop", name) }
            defer { readers.forEach { $0.stop() } }
            for reader in readers { #expect(reader.readLine() == "ready") }
            let lock = try ProcessRWLock.open(in: segment, at: 0)
            for _ in 0..<5 {
                let start = Clock.monotonicNanoseconds()
                #expect(try lock.blockingWriteLock(timeout: .seconds(20)) == .acquired)
                let took = elapsed(since: start)
                #expect(took < promptly, "the writer waited \(took) s")
                try lock.writeUnlock()
                Clock.sleep(nanoseconds: 10_000_000)
            }
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(1), toByteOffset: 1088, as: UInt64.self) }
            for reader in readers {
                let line = reader.readLine()
                #expect(line?.hasPrefix("done ") == true)
                #expect(reader.wait(timeout: .seconds(20)) == .exited(0))
            }
        }
    }

    @Test func timedLocksReturnOnTimeAndAnAbandonedClaimLetsReadersIn() throws {
        try withCleanNames("rwltime") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            // A writer elsewhere, holding until told: both kinds of lock time out.
            let writer = try Peer.spawn("rw-write-hold", name)
            defer { writer.stop() }
            #expect(writer.readLine() == "claiming")
            #expect(writer.readLine() == "locked acquired")
            var start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try lock.blockingReadLock(timeout: .milliseconds(150)) }
            var took = elapsed(since: start)
            #expect(took >= 0.149 && took < promptly, "\(took) s")
            start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try lock.blockingWriteLock(timeout: .milliseconds(100)) }
            took = elapsed(since: start)
            #expect(took >= 0.099 && took < promptly, "\(took) s")
            writer.tell("release")
            #expect(writer.readLine() == "unlocked")
            // A reader elsewhere: a writer claims, waits for it, times out and gives the claim back —
            // then readers get in again.
            let reader = try Peer.spawn("rw-read-hold", name)
            defer { reader.stop() }
            #expect(reader.readLine() == "locked acquired")
            start = Clock.monotonicNanoseconds()
            expectError(.timedOut) { try lock.blockingWriteLock(timeout: .milliseconds(150)) }
            took = elapsed(since: start)
            #expect(took >= 0.149 && took < promptly, "\(took) s")
            #expect(!lock.isWriteLocked)
            #expect(lock.tryReadLock() == .acquired)
            try lock.readUnlock()
            reader.tell("release")
            #expect(reader.readLine() == "unlocked")
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .acquired)
            try lock.writeUnlock()
        }
    }

    @Test func asyncLocksHonourCancellationAndAcquireNothing() async throws {
        try await onOwnQueue { executor in
            let prefix = TestNames.make("rwlasync")
            let lock = try ProcessRWLock.create(name: prefix)
            defer { lock.close() }
            // Cancelled while waiting for a writer (which holds until told): returns promptly, holds nothing.
            let writer = try Peer.spawn("rw-write-hold", prefix)
            defer { writer.stop() }
            #expect(writer.readLine() == "claiming")
            #expect(writer.readLine() == "locked acquired")
            let waitingReader = Task(executorPreference: executor) { try await lock.readLock() }
            let waitingWriter = Task(executorPreference: executor) { try await lock.writeLock() }
            #expect(await eventually { waiters(prefix) == 2 }, "both tasks parked behind the writer")
            var start = Clock.monotonicNanoseconds()
            waitingReader.cancel()
            waitingWriter.cancel()
            await #expect(throws: InterprocessError.self) { try await waitingReader.value }
            await #expect(throws: InterprocessError.self) { try await waitingWriter.value }
            #expect(elapsed(since: start) < promptly)
            #expect(lock.readerCount == 0, "the cancelled reader holds nothing")
            #expect(try SharedMemory.info(name: prefix).details["writer"] == "\(writer.pid)", "the cancelled writer took nothing")
            writer.tell("release")
            #expect(writer.readLine() == "unlocked")
            #expect(try await lock.readLock(timeout: .seconds(10)) == .acquired)
            #expect(lock.readerCount == 1, "the cancelled reader holds nothing")
            try lock.readUnlock()
            // Cancelled while waiting for readers to leave: the claim is given back.
            let reader = try Peer.spawn("rw-read-hold", prefix)
            defer { reader.stop() }
            #expect(reader.readLine() == "locked acquired")
            let draining = Task(executorPreference: executor) { try await lock.writeLock() }
            #expect(await eventually { (try? SharedMemory.info(name: prefix).details["drainingWriters"]) == "1" },
                    "the task claimed the lock and parked, waiting for the reader")
            #expect(lock.isWriteLocked, "claimed, waiting for the reader")
            start = Clock.monotonicNanoseconds()
            draining.cancel()
            do {
                _ = try await draining.value
                Issue.record("the cancelled writer got the lock")
            } catch let error as InterprocessError {
                #expect(error.code == .cancelled)
            }
            #expect(elapsed(since: start) < promptly)
            #expect(!lock.isWriteLocked)
            #expect(lock.tryReadLock() == .acquired)
            try lock.readUnlock()
            reader.tell("release")
            #expect(reader.readLine() == "unlocked")
            #expect(try await lock.writeLock(timeout: .seconds(10)) == .acquired)
            try lock.writeUnlock()
            writer.stop()
            reader.stop()
            lock.close()
            #expect(TestNames.leftovers(prefix).isEmpty)
        }
    }

    @Test func aWriterKilledWhileHoldingIsTakenOverAndReported() throws {
        try withCleanNames("rwldead") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Peer.spawn("rw-write-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "claiming")
            #expect(child.readLine() == "locked acquired")
            #expect(lock.tryWriteLock() == nil, "a live writer keeps it")
            #expect(try SharedMemory.info(name: name).details["writer"] == "\(child.pid)")
            child.kill(signal: SIGKILL)
            let start = Clock.monotonicNanoseconds()
            #expect(try lock.blockingWriteLock(timeout: .seconds(20)) == .previousOwnerDied)
            let took = elapsed(since: start)
            #expect(took < promptly, "took over after \(took) s; documented bound is 50 ms")
            #expect(!lock.isConsistent)
            try lock.writeUnlock()
            // Inconsistent until repaired: readers are told, the convenience forms refuse.
            #expect(try lock.blockingReadLock(timeout: .seconds(5)) == .previousOwnerDied)
            try lock.readUnlock()
            expectError(.ownerDied) { try lock.withBlockingReadLock { Issue.record("read inconsistent data") } }
            expectError(.ownerDied) { try lock.withBlockingWriteLock { Issue.record("ran on inconsistent data") } }
            #expect(lock.readerCount == 0 && !lock.isWriteLocked)
            var repaired = false
            try lock.withBlockingWriteLock(onOwnerDied: { repaired = true }) {}
            #expect(repaired && lock.isConsistent)
            #expect(try lock.blockingReadLock(timeout: .seconds(5)) == .acquired)
            try lock.readUnlock()
            #expect(try SharedMemory.info(name: name).details["recoveries"] == "1")
        }
    }

    @Test func aReaderClearsADeadWritersLock() throws {
        try withCleanNames("rwldeadread") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Peer.spawn("rw-write-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "claiming")
            #expect(child.readLine() == "locked acquired")
            child.kill(signal: SIGKILL)
            let start = Clock.monotonicNanoseconds()
            #expect(try lock.blockingReadLock(timeout: .seconds(20)) == .previousOwnerDied)
            #expect(elapsed(since: start) < promptly)
            #expect(!lock.isWriteLocked)
            try lock.readUnlock()
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .previousOwnerDied)
            lock.markConsistent()
            try lock.writeUnlock()
        }
    }

    @Test func aWriterKilledWhileWaitingForReadersLeavesItConsistent() throws {
        try withCleanNames("rwldeadclaim") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            try lock.blockingReadLock()
            let child = try Peer.spawn("rw-write-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "claiming")
            #expect(pollUntil { lock.isWriteLocked }, "the child claims the lock and waits for our reader")
            #expect(lock.tryReadLock() == nil, "writer preference: a claim keeps new readers out")
            child.stop() // killed and reaped while waiting for readers
            #expect(lock.tryReadLock() == .acquired, "the dead claim is cleared; the writer was never inside")
            try lock.readUnlock()
            try lock.readUnlock()
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .acquired)
            #expect(lock.isConsistent)
            try lock.writeUnlock()
        }
    }

    @Test func aReaderKilledWhileHoldingIsFreedForWriters() throws {
        try withCleanNames("rwldeadreader") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Peer.spawn("rw-read-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            #expect(lock.readerCount == 1)
            #expect(lock.tryWriteLock() == nil, "a live reader keeps writers out")
            var info = try SharedMemory.info(name: name)
            #expect(info.details["readers"] == "1" && info.details["readerSlotsInUse"] == "1")
            child.kill(signal: SIGKILL)
            #expect(pollUntil(timeout: .seconds(5)) { (try? SharedMemory.info(name: name).details["readerSlotsDead"]) == "1" })
            info = try SharedMemory.info(name: name)
            #expect(info.details["readers"] == "0" && info.details["deadReaders"] == "1")
            let start = Clock.monotonicNanoseconds()
            #expect(try lock.blockingWriteLock(timeout: .seconds(20)) == .acquired, "a dead reader leaves the data consistent")
            let took = elapsed(since: start)
            #expect(took < promptly, "the writer waited \(took) s for a dead reader; documented bound is 50 ms")
            #expect(lock.readerCount == 0)
            try lock.writeUnlock()
            info = try SharedMemory.info(name: name)
            #expect(info.details["readerRecoveries"] == "1")
            #expect(info.details["readerSlotsInUse"] == "0", "the writer freed the dead reader's slot")
            // tryWriteLock frees the slot of a dead reader whose pid is gone (killed and reaped).
            let second = try Peer.spawn("rw-read-hold", name)
            defer { second.stop() }
            #expect(second.readLine() == "locked acquired")
            #expect(lock.tryWriteLock() == nil)
            second.stop()
            #expect(lock.tryWriteLock() == .acquired)
            try lock.writeUnlock()
            #expect(try lock.blockingReadLock(timeout: .seconds(1)) == .acquired)
            try lock.readUnlock()
            #expect(try SharedMemory.info(name: name).details["readerRecoveries"] == "2")
        }
    }

    @Test func readersKilledAtRandomMomentsNeverWedgeWriters() throws {
        try withCleanNames("rwlchurn") { name in
            let segment = try makeRWSegment(name)
            defer { segment.close() }
            let lock = try ProcessRWLock.open(in: segment, at: 0)
            var generator = SystemRandomNumberGenerator()
            // 20 rounds of two readers each: 40 processes, more than the 32 slots, so dead readers'
            // slots are reused too.
            for round in 0..<20 {
                let readers = [
                    try Peer.spawn("rw-read-churn", name),
                    try Peer.spawn(round % 2 == 0 ? "rw-read-loop" : "rw-read-churn", name),
                ]
                defer { readers.forEach { $0.stop() } }
                for reader in readers { #expect(reader.readLine() == "ready") }
                for _ in 0..<3 {
                    #expect(try lock.blockingWriteLock(timeout: .seconds(2)) == .acquired)
                    try lock.writeUnlock()
                    usleep(UInt32.random(in: 0...3000, using: &generator))
                }
                usleep(UInt32.random(in: 0...5000, using: &generator))
                for reader in readers { reader.kill(signal: SIGKILL) }
                let start = Clock.monotonicNanoseconds()
                #expect(try lock.blockingWriteLock(timeout: .seconds(20)) == .acquired, "round \(round)")
                let took = elapsed(since: start)
                #expect(took < promptly, "round \(round): the writer waited \(took) s")
                #expect(lock.readerCount == 0)
                try lock.writeUnlock()
            }
            let state = try rwState(segment)
            #expect(state.overflow == 0)
            #expect(state.readerRecoveries >= 1, "no reader was ever killed holding a read lock: the test tested nothing")
            #expect(lock.tryReadLock() == .acquired)
            try lock.readUnlock()
        }
    }

    @Test func readersBeyondTheSlotsOverflowAndDeadSlotsAreReused() throws {
        try withCleanNames("rwloverflow") { name in
            let segment = try makeRWSegment(name)
            defer { segment.close() }
            let lock = try ProcessRWLock.open(in: segment, at: 0)
            // Fill all 32 slots with live processes (tokens whose locks `live` holds), holding nothing.
            let slot = { (index: Int) in fieldOffset(\cipc_rwlock.readers) + index * MemoryLayout<cipc_rwlock_reader>.stride }
            let live = try LiveTokens(segment: name)
            let tokens = try (0..<32).map { try live.make(UInt64(1) << 32 | UInt64($0 + 1)) }
            try segment.withUnsafeMutableBytes { bytes in
                for index in 0..<32 { bytes.storeBytes(of: tokens[index], toByteOffset: slot(index), as: UInt64.self) }
            }
            #expect(try lock.blockingReadLock(timeout: .seconds(1)) == .acquired)
            #expect(try lock.blockingReadLock(timeout: .seconds(1)) == .acquired)
            var state = try rwState(segment)
            #expect(state.overflow == 2 && state.slotsInUse == 32)
            #expect(lock.readerCount == 2)
            #expect(lock.tryWriteLock() == nil)
            try lock.readUnlock()
            try lock.readUnlock()
            expectError(.notOwner) { try lock.readUnlock() }
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .acquired)
            try lock.writeUnlock()
            // Slot 5 now names a dead process (pid 1 with a token nobody holds) holding two locks.
            let dead = UInt64(1) << 32 | 0x0DEA_DBEF
            try segment.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: dead, toByteOffset: slot(5), as: UInt64.self)
                bytes.storeBytes(of: UInt32(2), toByteOffset: slot(5) + fieldOffset(\cipc_rwlock_reader.holds), as: UInt32.self)
            }
            #expect(lock.readerCount == 2)
            let start = Clock.monotonicNanoseconds()
            #expect(try lock.blockingWriteLock(timeout: .seconds(20)) == .acquired)
            #expect(elapsed(since: start) < promptly)
            try lock.writeUnlock()
            state = try rwState(segment)
            #expect(state.readerRecoveries == 1 && state.slotsInUse == 31)
            // The freed slot is this process's now: no overflow.
            #expect(try lock.blockingReadLock(timeout: .seconds(1)) == .acquired)
            state = try rwState(segment)
            #expect(state.overflow == 0 && state.slotsInUse == 32)
            #expect(try segment.withUnsafeBytes { $0.load(fromByteOffset: slot(5) + fieldOffset(\cipc_rwlock_reader.holds), as: UInt32.self) } == 1)
            try lock.readUnlock()
            // A dead process's slot holding nothing is reused by a process that needs one.
            try segment.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: dead, toByteOffset: slot(9), as: UInt64.self)
            }
            let child = try Peer.spawn("rw-read-loop", name)
            defer { child.stop() }
            #expect(child.readLine() == "ready")
            // The slot's token shows the child's pid in its high half.
            #expect(try segment.withUnsafeBytes { $0.load(fromByteOffset: slot(9) + 4, as: UInt32.self) } == UInt32(bitPattern: child.pid))
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(1), toByteOffset: 1088, as: UInt64.self) }
            #expect(child.readLine()?.hasPrefix("done ") == true)
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            #expect(lock.readerCount == 0)
            withExtendedLifetime(live) {}
        }
    }
}
