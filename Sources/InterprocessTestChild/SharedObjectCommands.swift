#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

// Commands on the shared-object framework: openOrCreate races.

/// Runs one shared-object command; returns the exit status.
func runObjectCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "obj-open-or-create": try openOrCreate(kind: rest[0], name: rest[1], count: Int(rest[2])!)
        default: return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// obj-open-or-create KIND NAME COUNT: says "ready", waits for "go DEADLINE" (a monotonic time in
/// ns shared by every racer), then at DEADLINE opens or creates the object of KIND, checks that it
/// is completely initialized as the creator makes it (COUNT racers: a semaphore of COUNT units, a
/// set manual-reset event, a variable holding 42, locks that lock), says "created ok" or "opened
/// ok", holds it until told, closes it.
private func openOrCreate(kind: String, name: String, count: Int) throws {
    say("ready")
    guard let line = awaitInstruction(upTo: 60), let deadline = UInt64(line.split(separator: " ").last ?? "") else {
        fail("no start line")
    }
    waitUntil(deadline)
    let created: Bool
    let initialized: Bool
    let close: () -> Void
    switch kind {
    case "mutex":
        let (mutex, isNew) = try ProcessMutex.openOrCreate(name: name)
        let acquisition = try mutex.blockingLock(timeout: .seconds(30))
        try mutex.unlock()
        (created, initialized, close) = (isNew, acquisition == .acquired, mutex.close)
    case "semaphore":
        let (semaphore, isNew) = try ProcessSemaphore.openOrCreate(name: name, value: count)
        (created, initialized, close) = (isNew, semaphore.tryWait(), semaphore.close)
    case "event":
        let (event, isNew) = try ProcessEvent.openOrCreate(name: name, mode: .manualReset, initiallySet: true)
        (created, initialized, close) = (isNew, event.tryWait(), event.close)
    case "condition":
        let (condition, isNew) = try ProcessCondition.openOrCreate(name: name)
        condition.signal()
        (created, initialized, close) = (isNew, true, condition.close)
    case "rwlock":
        let (lock, isNew) = try ProcessRWLock.openOrCreate(name: name)
        let acquisition = try lock.blockingReadLock(timeout: .seconds(30))
        try lock.readUnlock()
        (created, initialized, close) = (isNew, acquisition == .acquired, lock.close)
    case "variable":
        let (variable, isNew) = try SharedVariable<UInt64>.openOrCreate(name: name, initialValue: 42)
        (created, initialized, close) = (isNew, variable.tryRead() == 42, variable.close)
    case "heap":
        let (heap, isNew) = try SharedHeap.openOrCreate(name: name, capacity: 64 * 1024)
        let sound = (try? heap.check().isConsistent) == true && heap.capacity == 64 * 1024
        (created, initialized, close) = (isNew, sound, heap.close)
    default:
        fail("unknown kind \(kind)", code: 2)
    }
    say("\(created ? "created" : "opened") \(initialized ? "ok" : "uninitialized")")
    awaitInstruction(upTo: 60)
    close()
}
