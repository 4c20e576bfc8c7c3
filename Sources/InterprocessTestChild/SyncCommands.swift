#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

// Synchronization commands. A "sync segment" holds: mutex @0, semaphore A @64, semaphore B @128,
// condition @192, counters a/b @512 and @520, flag @576.

/// Runs one synchronization command; returns the exit status (0 success, 4 timed out).
func runSyncCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "mutex-hold": try mutexHold(name: rest[0], offset: rest.count > 1 ? Int(rest[1])! : nil)
        case "mutex-lock-within": try mutexLockWithin(name: rest[0], timeoutMilliseconds: Int(rest[1])!)
        case "mutex-count": try mutexCount(segmentName: rest[0], iterations: Int(rest[1])!)
        case "sem-wait": try ProcessSemaphore.open(name: rest[0]).waitAfterSaying(timeoutMilliseconds: Int(rest[1])!)
        case "event-wait": try eventWait(name: rest[0], timeoutMilliseconds: Int(rest[1])!)
        case "cond-wait": try conditionWait(segmentName: rest[0], timeoutMilliseconds: Int(rest[1])!)
        case "sem-pong": try semaphorePong(segmentName: rest[0], rounds: Int(rest[1])!)
        default: return 2
        }
        return 0
    } catch let error as InterprocessError {
        if error.code == .timedOut { return 4 }
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// Takes a lock with `lock`, says "locked <acquisition>", holds it until the test writes a line
/// (or closes our input; at most 60 s), releases it with `unlock`, says "unlocked", then lingers
/// until told again (the test kills us or closes our input). Serves every "…-hold" command.
func holdLock(lock: () throws -> ProcessMutex.Acquisition, unlock: () throws -> Void) throws {
    let acquisition = try lock()
    say("locked \(acquisition)")
    awaitInstruction(upTo: 60)
    try unlock()
    say("unlocked")
    awaitInstruction(upTo: 60)
}

/// Locks the named mutex — or, with an offset, the mutex at that offset in the segment NAME — and
/// holds it (see ``holdLock(lock:unlock:)``).
private func mutexHold(name: String, offset: Int?) throws {
    let segment = try offset.map { _ in try SharedMemory.open(name: name) }
    let mutex = try segment.map { try ProcessMutex.open(in: $0, at: offset!) } ?? ProcessMutex.open(name: name)
    try holdLock(lock: { try mutex.blockingLock() }, unlock: mutex.unlock)
    segment?.close()
}

/// Tries to lock the named mutex within the timeout: says "locked <acquisition>" and unlocks, or
/// exits 4 (timed out). Trusts the mutex whoever owns it (it may run as another user).
private func mutexLockWithin(name: String, timeoutMilliseconds: Int) throws {
    let mutex = try ProcessMutex.open(name: name, trusting: .anyone)
    let acquisition = try mutex.blockingLock(timeout: .milliseconds(timeoutMilliseconds))
    say("locked \(acquisition)")
    try mutex.unlock()
}

/// Increments a then b under the lock. After a dead owner, repairs (b = a) and marks consistent.
/// Says "done N" with the number of recoveries it saw.
private func mutexCount(segmentName: String, iterations: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let mutex = try ProcessMutex.open(in: segment, at: 0)
    var recoveries = 0
    say("ready")
    for _ in 0..<iterations {
        let acquisition = try mutex.blockingLock()
        let repaired = try segment.withUnsafeMutableBytes { bytes -> Bool in
            var repaired = false
            if acquisition == .previousOwnerDied {
                bytes.storeBytes(of: bytes.load(fromByteOffset: 512, as: UInt64.self), toByteOffset: 520, as: UInt64.self)
                repaired = true
            }
            let a = bytes.load(fromByteOffset: 512, as: UInt64.self)
            let b = bytes.load(fromByteOffset: 520, as: UInt64.self)
            if a != b { fail("inconsistent a=\(a) b=\(b) without an owner death") }
            bytes.storeBytes(of: a + 1, toByteOffset: 512, as: UInt64.self)
            bytes.storeBytes(of: b + 1, toByteOffset: 520, as: UInt64.self)
            return repaired
        }
        if repaired {
            recoveries += 1
            mutex.markConsistent()
        }
        try mutex.unlock()
    }
    say("done \(recoveries)")
}

// The waits below exit 0 when they get what they wait for, and 4 when they time out or when the
// test tells them to stop waiting (a line on our input).

extension ProcessSemaphore {
    fileprivate func waitAfterSaying(timeoutMilliseconds: Int) throws {
        exitWhenTold(status: 4)
        say("waiting")
        try blockingWait(timeout: .milliseconds(timeoutMilliseconds))
    }
}

private func eventWait(name: String, timeoutMilliseconds: Int) throws {
    let event = try ProcessEvent.open(name: name)
    exitWhenTold(status: 4)
    say("waiting")
    try event.blockingWait(timeout: .milliseconds(timeoutMilliseconds))
}

/// Under the mutex, waits on the condition until the flag is non-zero.
private func conditionWait(segmentName: String, timeoutMilliseconds: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let mutex = try ProcessMutex.open(in: segment, at: 0)
    let condition = try ProcessCondition.open(in: segment, at: 192)
    let deadline = Deadline(after: .milliseconds(timeoutMilliseconds))
    try mutex.blockingLock()
    say("waiting")
    while try segment.withUnsafeBytes({ $0.load(fromByteOffset: 576, as: UInt64.self) }) == 0 {
        if deadline.hasPassed {
            throw InterprocessError(.timedOut)
        }
        do {
            try condition.blockingWait(on: mutex, timeout: .milliseconds(200))
        } catch {
            if error.code != .timedOut { throw error }
        }
    }
    try mutex.unlock()
}

/// ROUNDS times: wait on semaphore A, then signal semaphore B.
private func semaphorePong(segmentName: String, rounds: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let ping = try ProcessSemaphore.open(in: segment, at: 64)
    let pong = try ProcessSemaphore.open(in: segment, at: 128)
    for _ in 0..<rounds {
        try ping.blockingWait(timeout: .seconds(20))
        try pong.signal()
    }
}
