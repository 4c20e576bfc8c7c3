#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem
import Synchronization

/// Counters in shared memory wrap by design, and a value that another process wrote is never used
/// in trapping arithmetic: an impossible value is `corrupt`, never a crash (DESIGN §3, issue 10
/// point 1).
///
/// Each test writes a hostile value into a primitive's shared state (as a buggy or hostile peer
/// would) and runs the operation that used to trap *in an exit test*: the body runs in a re-spawned
/// test process, so a trap fails the expectation (the child dies of a signal) instead of killing the
/// whole test run. The body checks the outcome it can see and exits with a distinct status when it
/// is wrong; the parent then checks the shared state the operation left behind.
@Suite("Counters in shared memory", .serialized, .timeLimit(.minutes(2)))
struct CounterOverflowTests {
    // MARK: ProcessCondition

    @Test func conditionSignalAndBroadcastWrapTheSequence() async throws {
        try await withCleanNamesAsync("cntcond") { name in
            let condition = try ProcessCondition.create(name: name)
            defer { condition.close() }
            // 2^32 signals bring the sequence here; one more must wrap it to 0, not trap.
            poke(name, at: Layout.condition.sequence, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let condition = try ProcessCondition.open(name: name)
                condition.signal()
                condition.close()
            }
            #expect(peek32(name, at: Layout.condition.sequence) == 0)

            poke(name, at: Layout.condition.sequence, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let condition = try ProcessCondition.open(name: name)
                condition.broadcast()
                condition.close()
            }
            #expect(peek32(name, at: Layout.condition.sequence) == 0)
        }
    }

    @Test func conditionWaitWithAnImpossibleWaiterCountIsCorrupt() async throws {
        try await withCleanNamesAsync("cntcondw") { name in
            let mutex = try ProcessMutex.create(name: name + "-m")
            let condition = try ProcessCondition.create(name: name)
            defer {
                condition.close()
                mutex.close()
            }
            poke(name, at: Layout.condition.waiters, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.conditionWaitIsCorrupt(name)
            }
            await #expect(processExitsWith: .success) { [name = name as String] in
                let mutex = try ProcessMutex.open(name: name + "-m")
                let condition = try ProcessCondition.open(name: name)
                try await mutex.lock()
                do {
                    try await condition.wait(on: mutex, timeout: .milliseconds(50))
                    exit(3)
                } catch let error as InterprocessError {
                    if error.code != .corrupt { exit(4) }
                }
                // It still holds the mutex (a condition wait returns or throws holding it).
                try mutex.unlock()
            }
            // The hostile value is left as it was (the increment was undone), and the mutex is free.
            #expect(peek32(name, at: Layout.condition.waiters) == UInt32.max)
            #expect(!mutex.isLocked)
        }
    }

    @Test func conditionWaiterCountZeroedUnderAParkedWaiterWraps() async throws {
        try await withCleanNamesAsync("cntcondz") { name in
            let mutex = try ProcessMutex.create(name: name + "-m")
            let condition = try ProcessCondition.create(name: name)
            defer {
                condition.close()
                mutex.close()
            }
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.conditionWaitWhileZeroed(name)
            }
            // The count wrapped below 0: the next waiter finds it impossible and says so.
            #expect(peek32(name, at: Layout.condition.waiters) == UInt32.max)
            try await mutex.lock()
            do {
                try await condition.wait(on: mutex, timeout: .milliseconds(20))
                Issue.record("expected corrupt, but the wait returned")
            } catch {
                #expect((error as? InterprocessError)?.code == .corrupt, "\(error)")
            }
            try mutex.unlock()
        }
    }

    // MARK: ProcessSemaphore and ProcessEvent (the shared wait drivers)

    @Test func semaphoreWaitWithAnImpossibleWaiterCountIsCorrupt() async throws {
        try await withCleanNamesAsync("cntsemw") { name in
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            poke(name, at: Layout.semaphore.waiters, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.semaphoreWaitIsCorrupt(name)
            }
            #expect(peek32(name, at: Layout.semaphore.waiters) == UInt32.max)
            // A unit is still taken without waiting (no waiter count involved), and signals work.
            try semaphore.signal()
            #expect(semaphore.tryWait())
        }
    }

    @Test func asyncEventWaitWithAnImpossibleWaiterCountIsCorrupt() async throws {
        try await withCleanNamesAsync("cntevw") { name in
            let event = try ProcessEvent.create(name: name, mode: .autoReset)
            defer { event.close() }
            poke(name, at: Layout.event.waiters, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let event = try ProcessEvent.open(name: name)
                do {
                    try await event.wait(timeout: .milliseconds(50))
                    exit(3)
                } catch let error as InterprocessError {
                    if error.code != .corrupt { exit(4) }
                }
            }
            #expect(peek32(name, at: Layout.event.waiters) == UInt32.max)
        }
    }

    @Test func semaphoreCountAboveTheMaximumIsCorrupt() throws {
        try withCleanNames("cntsemc") { name in
            let semaphore = try ProcessSemaphore.create(name: name, value: 0)
            defer { semaphore.close() }
            for hostile in [UInt32(ProcessSemaphore.maximumCount) + 1, UInt32.max] {
                poke(name, at: Layout.semaphore.count, hostile)
                // Not a unit to take, not a count to add to, not a reason to wait until the timeout.
                #expect(!semaphore.tryWait())
                expectError(.corrupt) { try semaphore.blockingWait(timeout: .seconds(5)) }
                expectError(.corrupt) { try semaphore.signal() }
                #expect(peek32(name, at: Layout.semaphore.count) == hostile)
            }
            // At the maximum the count is valid: a signal beyond it is the caller's mistake.
            poke(name, at: Layout.semaphore.count, UInt32(ProcessSemaphore.maximumCount))
            expectError(.invalidArgument) { try semaphore.signal() }
            try semaphore.blockingWait(timeout: .seconds(5))
        }
    }

    // MARK: ProcessMutex

    @Test func mutexRecoveryCountWraps() async throws {
        try await withCleanNamesAsync("cntmtx") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            poke64(name, at: Layout.mutex.owner, Layout.deadIdentity)
            poke64(name, at: Layout.mutex.recoveries, UInt64.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let mutex = try ProcessMutex.open(name: name)
                guard try mutex.tryLock() == .previousOwnerDied else { exit(3) }
                try mutex.unlock()
            }
            #expect(peek64(name, at: Layout.mutex.recoveries) == 0)
            #expect(!mutex.isLocked)
        }
    }

    // MARK: ProcessRWLock

    @Test func readHoldCountWraps() async throws {
        try await withCleanNamesAsync("cntrwh") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.readLockOverMaximumHolds(name)
            }
        }
    }

    @Test func drainSequenceWraps() async throws {
        try await withCleanNamesAsync("cntrwd") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            poke(name, at: Layout.rwLock.drain, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.readerLeavesBeforeAWriter(name)
            }
            #expect(peek32(name, at: Layout.rwLock.drain) != UInt32.max)
        }
    }

    @Test func writerAndReaderRecoveryCountsWrap() async throws {
        try await withCleanNamesAsync("cntrwr") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            // A dead writer's claim, and the writer recovery count at its maximum.
            poke64(name, at: Layout.rwLock.owner, Layout.deadIdentity)
            poke64(name, at: Layout.rwLock.recoveries, UInt64.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let lock = try ProcessRWLock.open(name: name)
                guard lock.tryWriteLock() != nil else { exit(3) }
                try lock.writeUnlock()
            }
            #expect(peek64(name, at: Layout.rwLock.recoveries) == 0)

            // A dead reader's slot holding a read lock, and the reader recovery count at its maximum.
            poke64(name, at: Layout.rwLock.slotOwner(slot: 0), Layout.deadIdentity)
            poke(name, at: Layout.rwLock.holds(slot: 0), 1)
            poke64(name, at: Layout.rwLock.readerRecoveries, UInt64.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let lock = try ProcessRWLock.open(name: name)
                guard lock.tryWriteLock() != nil else { exit(3) }
                try lock.writeUnlock()
            }
            #expect(peek64(name, at: Layout.rwLock.readerRecoveries) == 0)
            #expect(lock.readerCount == 0 && !lock.isWriteLocked)
        }
    }

    // MARK: SharedVariable

    @Test func variableRecoveryCountWraps() async throws {
        try await withCleanNamesAsync("cntvarr") { name in
            let variable = try SharedVariable<UInt64>.create(name: name)
            defer { variable.close() }
            poke64(name, at: Layout.variable.putter, Layout.deadIdentity)
            poke64(name, at: Layout.variable.recoveries, UInt64.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                let variable = try SharedVariable<UInt64>.open(name: name)
                guard variable.tryPut(7) else { exit(3) }
            }
            #expect(peek64(name, at: Layout.variable.recoveries) == 0)
            #expect(variable.tryTake() == 7)
        }
    }

    @Test func registeredReaderCountWraps() async throws {
        try await withCleanNamesAsync("cntvarg") { name in
            let variable = try SharedVariable<UInt64>.create(name: name)
            defer { variable.close() }
            poke(name, at: Layout.variable.registered, UInt32.max)
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.readEmptyVariable(name)
            }
            #expect(peek32(name, at: Layout.variable.registered) == UInt32.max)
            // The variable still works.
            try await variable.put(9)
            #expect(try await variable.read(timeout: .seconds(5)) == 9)
            #expect(try await variable.take(timeout: .seconds(5)) == 9)
        }
    }

    // MARK: The async waiter's private counters

    @Test func asyncWaiterControlWordWraps() async {
        await #expect(processExitsWith: .success) {
            // The process-wide async waiter's control word, bumped on every registration change.
            atomic32(AsyncFutexWaiter.shared.control).pointee.store(UInt32.max - 1, ordering: .sequentiallyConsistent)
            let word = UnsafeMutableRawPointer.allocate(byteCount: 4, alignment: 4)
            atomic32(word).initialize(to: Atomic(0))
            for _ in 0..<3 {
                _ = await AsyncFutexWaiter.shared.wait(on: word, expected: 0, deadline: Deadline(after: .milliseconds(5)))
            }
        }
    }

    // MARK: Segments

    /// The header's payload size is checked, then used: a peer that changes it in between must not
    /// make the opener trap (or trust an unchecked size).
    @Test func payloadSizeChangedAfterValidationIsNeverUsed() async throws {
        try await withCleanNamesAsync("cntseg") { name in
            let segment = try SharedMemory.create(name: name, size: 64)
            defer { segment.close() }
            await #expect(processExitsWith: .success) { [name = name as String] in
                try Child.openWhilePayloadSizeFlips(name)
            }
            #expect(try SharedMemory.open(name: name).size == 64)
        }
    }

    /// Stored values: the current slot's length comes from the payload, and any length beyond the
    /// slot's capacity is `corrupt` (this never trapped; kept here with the other hostile counters).
    @Test func framedLengthBeyondTheSegmentIsCorrupt() throws {
        try withCleanNames("cntframe") { name in
            let segment = try SharedMemory.create(name: name, size: 256) // slots of (256 - 128) / 2 = 64 bytes
            defer { segment.close() }
            try segment.write(Array("hello".utf8)) // store 1: slot 1, whose length is at 88 + 8
            for hostile in [UInt64(65), UInt64(Int.max), UInt64(Int.max) + 1, UInt64.max - 7, UInt64.max] {
                poke64(name, at: Layout.payload + 96, hostile)
                expectError(.corrupt) { try segment.readBytes() }
            }
            poke64(name, at: Layout.payload + 96, 64)
            #expect(try segment.readBytes().count == 64)
        }
    }
}

/// The bodies of the exit tests that block (a blocking wait is unavailable in the async closure of
/// an exit test). Each ends the process with a distinct status when an outcome is wrong.
private enum Child {
    static func conditionWaitIsCorrupt(_ name: String) throws {
        let mutex = try ProcessMutex.open(name: name + "-m")
        let condition = try ProcessCondition.open(name: name)
        try mutex.blockingLock()
        exitUnless(code: .corrupt, 3) { () throws(InterprocessError) in try condition.blockingWait(on: mutex, timeout: .milliseconds(50)) }
        // It still holds the mutex (a condition wait returns or throws holding it).
        try mutex.unlock()
    }

    static func conditionWaitWhileZeroed(_ name: String) throws {
        let mutex = try ProcessMutex.open(name: name + "-m")
        let condition = try ProcessCondition.open(name: name)
        // A peer zeroes the waiter count while we are parked: our decrement must wrap.
        zeroWhenParked(name, at: Layout.condition.waiters)
        try mutex.blockingLock()
        exitUnless(code: .timedOut, 3) { () throws(InterprocessError) in try condition.blockingWait(on: mutex, timeout: .milliseconds(300)) }
        try mutex.unlock()
    }

    static func semaphoreWaitIsCorrupt(_ name: String) throws {
        let semaphore = try ProcessSemaphore.open(name: name)
        exitUnless(code: .corrupt, 3) { () throws(InterprocessError) in try semaphore.blockingWait(timeout: .milliseconds(50)) }
        exitUnless(code: .corrupt, 4) { () throws(InterprocessError) in try semaphore.blockingWait(timeout: .milliseconds(50)) }
    }

    static func readLockOverMaximumHolds(_ name: String) throws {
        let lock = try ProcessRWLock.open(name: name)
        // Our first read lock claims slot 0 (all slots are free); then a peer scribbles its holds.
        try lock.blockingReadLock()
        try lock.readUnlock()
        poke(name, at: Layout.rwLock.holds(slot: 0), UInt32.max)
        try lock.blockingReadLock()
        // Whatever the damaged count makes of the release, it is an answer, not a crash.
        _ = try? lock.readUnlock()
    }

    static func readerLeavesBeforeAWriter(_ name: String) throws {
        let lock = try ProcessRWLock.open(name: name)
        try lock.blockingReadLock()
        let writer = Thread {
            do {
                try lock.blockingWriteLock(timeout: .seconds(20))
                try lock.writeUnlock()
            } catch {
                exit(3)
            }
        }
        writer.start()
        let deadline = Deadline(after: .seconds(20))
        while !lock.isWriteLocked {
            if deadline.hasPassed { exit(4) }
            usleep(1000)
        }
        // The writer claims and waits for us: leaving bumps the drain word past UInt32.max.
        try lock.readUnlock()
        while lock.isWriteLocked {
            if deadline.hasPassed { exit(5) }
            usleep(1000)
        }
    }

    static func readEmptyVariable(_ name: String) throws {
        let variable = try SharedVariable<UInt64>.open(name: name)
        // Registering wraps the count to 0, leaving wraps it back.
        exitUnless(code: .timedOut, 3) { () throws(InterprocessError) in try variable.blockingRead(timeout: .milliseconds(30)) }
    }

    static func openWhilePayloadSizeFlips(_ name: String) throws {
        let fd = open("/dev/shm/" + name, O_RDWR)
        guard fd >= 0, let page = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              Int(bitPattern: page) != -1
        else { exit(3) }
        let address = UInt(bitPattern: page + 48)
        let valid = atomic64(page + 48).pointee.load(ordering: .relaxed)
        let deadline = Deadline(after: .milliseconds(1500))
        // A peer flips the payload size between its real value and an absurd one.
        let flipper = Thread {
            let word = atomic64(UnsafeMutableRawPointer(bitPattern: address)!)
            while !deadline.hasPassed {
                for _ in 0..<64 {
                    word.pointee.store(UInt64.max, ordering: .relaxed)
                    word.pointee.store(valid, ordering: .relaxed)
                }
            }
        }
        flipper.start()
        var opened = 0
        while !deadline.hasPassed {
            do throws(InterprocessError) {
                let segment = try SharedMemory.open(name: name)
                if segment.size != 64 { exit(4) }
                segment.close()
                opened += 1
            } catch {
                if error.code != .corrupt { exit(5) }
            }
        }
        usleep(10_000)
        atomic64(page + 48).pointee.store(valid, ordering: .relaxed)
        if opened == 0 { exit(6) }
    }
}

// MARK: - Helpers

/// Offsets in a named primitive's file (its state starts after the 4096-byte segment header), from
/// the structs in `CInterprocess.h`.
/// Where the fields are in a named primitive's file: the payload offset, then the field's offset in
/// its C struct (`CInterprocess.h`, pinned by `LayoutTests`).
private enum Layout {
    static let payload = SharedMemory.payloadOffset
    enum condition {
        static let sequence = payload + fieldOffset(\cipc_condition.sequence)
        static let waiters = payload + fieldOffset(\cipc_condition.waiters)
    }
    enum semaphore {
        static let count = payload + fieldOffset(\cipc_semaphore.count)
        static let waiters = payload + fieldOffset(\cipc_semaphore.waiters)
    }
    enum event {
        static let waiters = payload + fieldOffset(\cipc_event.waiters)
    }
    enum mutex {
        static let owner = payload + fieldOffset(\cipc_mutex.owner)
        static let recoveries = payload + fieldOffset(\cipc_mutex.recoveries)
    }
    enum rwLock {
        static let owner = payload + fieldOffset(\cipc_rwlock.owner)
        static let drain = payload + fieldOffset(\cipc_rwlock.drain)
        static let recoveries = payload + fieldOffset(\cipc_rwlock.recoveries)
        static let readerRecoveries = payload + fieldOffset(\cipc_rwlock.reader_recoveries)
        static func slotOwner(slot: Int) -> Int {
            payload + fieldOffset(\cipc_rwlock.readers) + MemoryLayout<cipc_rwlock_reader>.stride * slot + fieldOffset(\cipc_rwlock_reader.owner)
        }
        static func holds(slot: Int) -> Int {
            payload + fieldOffset(\cipc_rwlock.readers) + MemoryLayout<cipc_rwlock_reader>.stride * slot + fieldOffset(\cipc_rwlock_reader.holds)
        }
    }
    enum variable {
        static let putter = payload + fieldOffset(\cipc_variable_header.putter)
        static let registered = payload + fieldOffset(\cipc_variable_header.registered_readers)
        static let recoveries = payload + fieldOffset(\cipc_variable_header.recoveries)
    }

    /// An owner word (pid | start-time epoch << 32) naming a process that does not exist: pids never
    /// reach 2^31 − 16 (Linux's pid_max is at most 2^22).
    static let deadIdentity: UInt64 = UInt64(12345) << 32 | 0x7FFF_FFF0
}

private func poke(_ name: String, at offset: Int, _ value: UInt32) {
    scribble(name, at: offset, withUnsafeBytes(of: value.littleEndian) { Array($0) })
}

private func poke64(_ name: String, at offset: Int, _ value: UInt64) {
    scribble(name, at: offset, withUnsafeBytes(of: value.littleEndian) { Array($0) })
}

/// In an exit test's body: runs `body` and ends the process with `status` unless it threw an
/// `InterprocessError` with `code`.
private func exitUnless<R>(code: InterprocessError.Code, _ status: Int32, _ body: () throws(InterprocessError) -> R) {
    do throws(InterprocessError) {
        _ = try body()
        exit(status)
    } catch {
        if error.code != code { exit(status + 10) }
    }
}

/// In an exit test's body: a thread that waits until the 32-bit word at `offset` of `name` says
/// one thread is parked, then writes 0 into it (as a hostile peer would).
private func zeroWhenParked(_ name: String, at offset: Int) {
    Thread.detachNewThread {
        let deadline = Deadline(after: .seconds(20))
        while peek32(name, at: offset) != 1 {
            if deadline.hasPassed { exit(9) }
            usleep(200)
        }
        usleep(2000)
        poke(name, at: offset, 0)
    }
}

