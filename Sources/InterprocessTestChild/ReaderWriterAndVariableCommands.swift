#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

// Commands for ProcessRWLock ("rw-…") and SharedVariable ("var-…").
//
// An "rw segment" holds: the reader-writer lock @0, counters a/b @1024 and @1032, a stop flag @1088
// (UInt64), a start flag @1096 (UInt64) and an arrival counter @1112 (UInt32, atomic). Shared
// variables hold `Int`.

/// Runs one reader-writer lock or shared variable command; returns the exit status (0 success,
/// 1 failure, 2 usage, 4 timed out).
func runReaderWriterAndVariableCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "rw-read-barrier":
            try readBarrier(segmentName: rest[0], readers: Int(rest[1])!, timeoutMilliseconds: Int(rest[2])!)
        case "rw-count": try rwCount(segmentName: rest[0], iterations: Int(rest[1])!)
        case "rw-check": try rwCheck(segmentName: rest[0], iterations: Int(rest[1])!)
        case "rw-read-loop": try readLoop(segmentName: rest[0])
        case "rw-read-churn": try readChurn(segmentName: rest[0])
        case "rw-write-hold": try writeHold(name: rest[0])
        case "rw-read-hold": try readHold(name: rest[0])
        case "var-take":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("waiting")
            say("took \(try variable.blockingTake(timeout: .milliseconds(Int(rest[1])!)))")
        case "var-read":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("waiting")
            say("read \(try variable.blockingRead(timeout: .milliseconds(Int(rest[1])!)))")
        case "var-put":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("putting")
            try variable.blockingPut(Int(rest[1])!, timeout: .milliseconds(Int(rest[2])!))
            say("put")
        case "var-swap":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("swapping")
            say("swapped \(try variable.blockingSwap(Int(rest[1])!, timeout: .milliseconds(Int(rest[2])!)))")
        case "var-take-n":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("ready")
            var sum = 0
            for _ in 0..<Int(rest[1])! { sum += try variable.blockingTake(timeout: .seconds(20)) }
            say("sum \(sum)")
        case "var-put-n":
            let variable = try SharedVariable<Int>.open(name: rest[0])
            say("ready")
            for value in 1...Int(rest[1])! { try variable.blockingPut(value, timeout: .seconds(20)) }
            say("done")
        case "var-churn": try variableChurn(name: rest[0], iterations: Int(rest[1])!)
        case "var-modify-hold":
            // Takes the value into a modify (holding the putter word, the variable empty), says
            // "modifying", adds 1 when told, says "modified".
            let variable = try SharedVariable<Int>.open(name: rest[0])
            try variable.blockingModify(timeout: .seconds(20)) { value in
                say("modifying")
                awaitInstruction(upTo: 60)
                value += 1
            }
            say("modified")
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
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

private func arrivals(_ bytes: UnsafeMutableRawBufferPointer) -> UnsafeMutablePointer<Atomic<UInt32>> {
    atomic32(bytes.baseAddress! + 1112)
}

/// Takes a read lock, counts itself in, and keeps the lock until `readers` processes hold it at
/// once (or times out: exit 4).
private func readBarrier(segmentName: String, readers: Int, timeoutMilliseconds: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let lock = try ProcessRWLock.open(in: segment, at: 0)
    try lock.blockingReadLock(timeout: .seconds(20))
    try segment.withUnsafeMutableBytes { _ = arrivals($0).pointee.add(1, ordering: .sequentiallyConsistent) }
    say("locked")
    let deadline = Deadline(after: .milliseconds(timeoutMilliseconds))
    while try segment.withUnsafeMutableBytes({ arrivals($0).pointee.load(ordering: .sequentiallyConsistent) }) < UInt32(readers) {
        if deadline.hasPassed { throw InterprocessError(.timedOut) }
        usleep(1000)
    }
    try lock.readUnlock()
}

/// Says "ready" and waits (≤ 20 s) for the start flag, so that all children run at once.
private func waitForStart(_ segment: SharedMemory) throws {
    say("ready")
    let deadline = Deadline(after: .seconds(20))
    while try segment.withUnsafeBytes({ $0.load(fromByteOffset: 1096, as: UInt64.self) }) == 0 {
        if deadline.hasPassed { throw InterprocessError(.timedOut) }
        usleep(100)
    }
}

/// Under the write lock: increments a, dawdles ~1 µs (a reader let in now would see a ≠ b), then
/// increments b.
private func rwIncrement(_ segment: SharedMemory) throws {
    try segment.withUnsafeMutableBytes { bytes in
        bytes.storeBytes(of: bytes.load(fromByteOffset: 1024, as: UInt64.self) + 1, toByteOffset: 1024, as: UInt64.self)
        for _ in 0..<50 { SpinPolicy.pause() }
        bytes.storeBytes(of: bytes.load(fromByteOffset: 1032, as: UInt64.self) + 1, toByteOffset: 1032, as: UInt64.self)
    }
}

/// After the start flag, increments a then b under the write lock, `iterations` times.
private func rwCount(segmentName: String, iterations: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let lock = try ProcessRWLock.open(in: segment, at: 0)
    try waitForStart(segment)
    for _ in 0..<iterations {
        try lock.blockingWriteLock(timeout: .seconds(20))
        try rwIncrement(segment)
        try lock.writeUnlock()
    }
    say("done")
}

/// After the start flag, checks under read locks that no writer is halfway (a == b), `iterations`
/// times.
private func rwCheck(segmentName: String, iterations: Int) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let lock = try ProcessRWLock.open(in: segment, at: 0)
    try waitForStart(segment)
    for _ in 0..<iterations {
        try lock.blockingReadLock(timeout: .seconds(20))
        let (a, b) = try segment.withUnsafeBytes { ($0.load(fromByteOffset: 1024, as: UInt64.self), $0.load(fromByteOffset: 1032, as: UInt64.self)) }
        // Read twice: a writer inside would be caught between the loads too.
        let again = try segment.withUnsafeBytes { $0.load(fromByteOffset: 1024, as: UInt64.self) }
        if a != b || again != a { fail("a writer was inside with a reader: a=\(a) b=\(b) then a=\(again)") }
        try lock.readUnlock()
    }
    say("done")
}

/// Keeps taking and releasing read locks (holding each ~300 µs, asleep, and re-taking at once)
/// until the stop flag is set; says "ready" after the first. Says "done N" with the number of read
/// locks taken.
private func readLoop(segmentName: String) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let lock = try ProcessRWLock.open(in: segment, at: 0)
    let stopAt = Deadline(after: .seconds(30))
    var count = 0
    while !stopAt.hasPassed {
        if try segment.withUnsafeBytes({ $0.load(fromByteOffset: 1088, as: UInt64.self) }) != 0 { break }
        try lock.blockingReadLock(timeout: .seconds(20))
        count += 1
        if count == 1 { say("ready") }
        usleep(300)
        try lock.readUnlock()
    }
    say("done \(count)")
}

/// Takes and releases read locks back to back, without pausing (so that a kill lands anywhere in
/// the read path), until the stop flag is set or 30 s pass; says "ready" after the first. Says
/// "done N" with the number of read locks taken.
private func readChurn(segmentName: String) throws {
    let segment = try SharedMemory.open(name: segmentName)
    let lock = try ProcessRWLock.open(in: segment, at: 0)
    let stopAt = Deadline(after: .seconds(30))
    var count = 0
    while true {
        if count % 64 == 0 {
            if try segment.withUnsafeBytes({ $0.load(fromByteOffset: 1088, as: UInt64.self) }) != 0 { break }
            if stopAt.hasPassed { break }
        }
        try lock.blockingReadLock(timeout: .seconds(20))
        count += 1
        if count == 1 { say("ready") }
        try lock.readUnlock()
    }
    say("done \(count)")
}

/// Says "claiming", then takes the named lock's write lock and holds it (see `holdLock` in
/// SyncCommands.swift).
private func writeHold(name: String) throws {
    let lock = try ProcessRWLock.open(name: name)
    say("claiming")
    try holdLock(lock: { try lock.blockingWriteLock() }, unlock: lock.writeUnlock)
}

/// Takes a read lock on the named lock and holds it (see `holdLock` in SyncCommands.swift).
private func readHold(name: String) throws {
    let lock = try ProcessRWLock.open(name: name)
    try holdLock(lock: { try lock.blockingReadLock() }, unlock: lock.readUnlock)
}

/// Puts, reads, swaps, modifies and takes in a loop with short timeouts (a partner may be killed
/// at any moment, taking a value with it or leaving one behind: a timeout now and then is fine).
/// Fails if 25 operations in a row time out — the variable would be wedged. Says "ready" first,
/// "done T" with the number of timeouts at the end.
private func variableChurn(name: String, iterations: Int) throws {
    let variable = try SharedVariable<Int>.open(name: name)
    let timeout = Duration.milliseconds(200)
    var timeouts = 0
    var inARow = 0
    func attempt(_ operation: () throws -> Void) throws {
        do {
            try operation()
            inARow = 0
        } catch let error as InterprocessError where error.code == .timedOut {
            timeouts += 1
            inARow += 1
            if inARow >= 25 { fail("wedged: \(inARow) timeouts in a row") }
        }
    }
    say("ready")
    for i in 0..<iterations {
        try attempt { try variable.blockingPut(i, timeout: timeout) }
        switch i % 4 {
        case 0: try attempt { _ = try variable.blockingRead(timeout: timeout) }
        case 1: try attempt { _ = try variable.blockingSwap(i &+ 1, timeout: timeout) }
        case 2: try attempt { try variable.blockingModify(timeout: timeout) { $0 &+= 1 } }
        default: _ = variable.tryRead()
        }
        try attempt { _ = try variable.blockingTake(timeout: timeout) }
    }
    say("done \(timeouts)")
}
