#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Dispatch

// Commands on the shared-object framework: openOrCreate races, opens that wait for a creator.

/// Runs one shared-object command; returns the exit status.
func runObjectCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "obj-open-or-create": try openOrCreate(kind: rest[0], name: rest[1], count: Int(rest[2])!)
        case "obj-open-when-created": openWhenCreated(kind: rest[0], name: rest[1], form: rest[2], timeoutMilliseconds: Int(rest[3])!)
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

/// obj-open-when-created KIND NAME FORM TIMEOUT_MS: says "waiting", then opens the object of KIND
/// with `openWhenCreated` (FORM `async`) or `blockingOpenWhenCreated` (FORM `blocking`), waiting at
/// most TIMEOUT_MS; checks that it is initialized as the test creates it (a segment holding "ready",
/// a semaphore of one unit, a set manual-reset event, a variable holding 42, locks that lock, a
/// channel holding "ready", a broadcast of 8 slots and 4 subscribers, a service of 4 slots and
/// 64-byte requests), says
/// "opened ok" (or "opened uninitialized") or "error CODE", holds it until told, closes it.
private func openWhenCreated(kind: String, name: String, form: String, timeoutMilliseconds: Int) {
    let timeout = Duration.milliseconds(timeoutMilliseconds)
    say("waiting")
    let result: Result<(initialized: Bool, close: () -> Void), InterprocessError>
    if form == "async" {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<(initialized: Bool, close: () -> Void), InterprocessError>?
        Task {
            do throws(InterprocessError) {
                outcome = .success(try await openWhenCreatedAsync(kind: kind, name: name, timeout: timeout))
            } catch {
                outcome = .failure(error)
            }
            done.signal()
        }
        done.wait()
        result = outcome!
    } else {
        result = Result { () throws(InterprocessError) in try openWhenCreatedBlocking(kind: kind, name: name, timeout: timeout) }
    }
    switch result {
    case .success(let (initialized, close)):
        say("opened \(initialized ? "ok" : "uninitialized")")
        awaitInstruction(upTo: 60)
        close()
    case .failure(let error):
        say("error \(error.code)")
    }
}

private func openWhenCreatedAsync(kind: String, name: String, timeout: Duration) async throws(InterprocessError) -> (initialized: Bool, close: () -> Void) {
    switch kind {
    case "segment":
        let segment = try await SharedMemory.openWhenCreated(name: name, timeout: timeout)
        return ((try? segment.readString()) == "ready", segment.close)
    case "mutex":
        let mutex = try await ProcessMutex.openWhenCreated(name: name, timeout: timeout)
        return ((try? mutex.tryLock()) == .acquired && (try? mutex.unlock()) != nil, mutex.close)
    case "semaphore":
        let semaphore = try await ProcessSemaphore.openWhenCreated(name: name, timeout: timeout)
        return (semaphore.tryWait(), semaphore.close)
    case "event":
        let event = try await ProcessEvent.openWhenCreated(name: name, timeout: timeout)
        return (event.tryWait(), event.close)
    case "condition":
        let condition = try await ProcessCondition.openWhenCreated(name: name, timeout: timeout)
        condition.signal()
        return (true, condition.close)
    case "rwlock":
        let lock = try await ProcessRWLock.openWhenCreated(name: name, timeout: timeout)
        return (lock.tryReadLock() == .acquired && (try? lock.readUnlock()) != nil, lock.close)
    case "variable":
        let variable = try await SharedVariable<UInt64>.openWhenCreated(name: name, timeout: timeout)
        return (variable.tryRead() == 42, variable.close)
    case "heap":
        let heap = try await SharedHeap.openWhenCreated(name: name, timeout: timeout)
        return ((try? heap.check().isConsistent) == true, heap.close)
    case "channel":
        let channel = try await Channel<String>.openWhenCreated(name: name, timeout: timeout)
        return ((try? channel.tryReceive()) == "ready", channel.detach)
    case "broadcast":
        let broadcast = try await Broadcast<String>.openWhenCreated(name: name, timeout: timeout)
        return (broadcast.capacity == 8 && broadcast.maxSubscribers == 4, broadcast.detach)
    case "service":
        let service = try await Service<String, String>.openWhenCreated(name: name, timeout: timeout)
        return (service.capacity == 4 && service.maxRequestSize == 64, service.detach)
    default:
        fail("unknown kind \(kind)", code: 2)
    }
}

private func openWhenCreatedBlocking(kind: String, name: String, timeout: Duration) throws(InterprocessError) -> (initialized: Bool, close: () -> Void) {
    switch kind {
    case "segment":
        let segment = try SharedMemory.blockingOpenWhenCreated(name: name, timeout: timeout)
        return ((try? segment.readString()) == "ready", segment.close)
    case "mutex":
        let mutex = try ProcessMutex.blockingOpenWhenCreated(name: name, timeout: timeout)
        return ((try? mutex.tryLock()) == .acquired && (try? mutex.unlock()) != nil, mutex.close)
    case "semaphore":
        let semaphore = try ProcessSemaphore.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (semaphore.tryWait(), semaphore.close)
    case "event":
        let event = try ProcessEvent.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (event.tryWait(), event.close)
    case "condition":
        let condition = try ProcessCondition.blockingOpenWhenCreated(name: name, timeout: timeout)
        condition.signal()
        return (true, condition.close)
    case "rwlock":
        let lock = try ProcessRWLock.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (lock.tryReadLock() == .acquired && (try? lock.readUnlock()) != nil, lock.close)
    case "variable":
        let variable = try SharedVariable<UInt64>.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (variable.tryRead() == 42, variable.close)
    case "heap":
        let heap = try SharedHeap.blockingOpenWhenCreated(name: name, timeout: timeout)
        return ((try? heap.check().isConsistent) == true, heap.close)
    case "channel":
        let channel = try Channel<String>.blockingOpenWhenCreated(name: name, timeout: timeout)
        return ((try? channel.tryReceive()) == "ready", channel.detach)
    case "broadcast":
        let broadcast = try Broadcast<String>.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (broadcast.capacity == 8 && broadcast.maxSubscribers == 4, broadcast.detach)
    case "service":
        let service = try Service<String, String>.blockingOpenWhenCreated(name: name, timeout: timeout)
        return (service.capacity == 4 && service.maxRequestSize == 64, service.detach)
    default:
        fail("unknown kind \(kind)", code: 2)
    }
}
