#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// Running peers where pids mean nothing to us: in another PID namespace (`unshare -p`), or as
/// another user behind a /proc mounted `hidepid=2`. Each check says why the machine forbids it.
enum Namespaces {
    static let unshare = "/usr/bin/unshare"
    static let pidNamespace = ["-p", "-f", "--kill-child", "--mount-proc"]

    /// Nil if `unshare -p -f --mount-proc` works here, else why not.
    static let pidNamespaceRefusal: String? = refusal(of: pidNamespace + ["/bin/true"])

    /// Nil if a private /proc with `hidepid=2` can be mounted in a new mount namespace, else why not.
    static let hidepidRefusal: String? = refusal(of: ["-m", "/bin/sh", "-c", "mount -t proc -o hidepid=2 proc /proc"])

    private static func refusal(of arguments: [String]) -> String? {
        guard access(unshare, X_OK) == 0 else { return "\(unshare) is missing" }
        do {
            let result = try ChildProcess.run(unshare, arguments, timeout: .seconds(20))
            if result.termination == .exited(0) { return nil }
            return "unshare \(arguments.joined(separator: " ")): \(result.termination.map { "\($0)" } ?? "timed out") \(result.standardError)"
        } catch {
            return "could not run \(unshare): \(error)"
        }
    }

    /// Whether the test may go on; prints why not (a skip, not a failure).
    static func available(_ refusal: String?, for test: String = #function) -> Bool {
        if let refusal { print("skipped \(test): the machine forbids it: \(refusal)") }
        return refusal == nil
    }

    /// Starts the test child as PID 1 of a new PID namespace (with its own /proc), its standard input
    /// and output on pipes. Killing the returned process (`unshare`) kills the child too.
    static func spawnInPIDNamespace(_ arguments: String...) throws -> ChildProcess {
        try ChildProcess.spawn(
            unshare, pidNamespace + [Peer.path] + arguments,
            standardInput: .pipe, standardOutput: .pipe, standardError: .inherit)
    }

    /// Waits until at most `holders` live processes hold the named object (a child killed through
    /// `unshare` dies a moment after `unshare` is reaped).
    static func awaitHolders(_ name: String, atMost holders: Int = 1) -> Bool {
        pollUntil { ((try? SharedMemory.info(name: name))?.holders.filter(\.alive).count ?? 0) <= holders }
    }
}

/// Owners' liveness comes from the kernel (a lock on a byte of the segment file per process), not
/// from pids: right for owners in other PID namespaces and owners that /proc hides.
@Suite("Owner liveness", .serialized, .timeLimit(.minutes(3)))
struct OwnerLivenessTests {
    @Test func aMutexOwnerInAnotherPIDNamespaceKeepsItsLock() throws {
        guard Namespaces.available(Namespaces.pidNamespaceRefusal) else { return }
        try withCleanNames("nsmtx") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            let child = try Namespaces.spawnInPIDNamespace("mutex-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            #expect(details(name)["ownerAlive"] == "yes")
            #expect(details(name)["ownerPID"] == "1", "the pid it sees in its own namespace")
            expectError(.timedOut) { try mutex.blockingLock(timeout: .milliseconds(300)) }
            #expect(try mutex.tryLock() == nil)
            #expect(mutex.isConsistent, "nobody took it over")
            child.stop()
            #expect(try mutex.blockingLock(timeout: .seconds(5)) == .previousOwnerDied)
            mutex.markConsistent()
            try mutex.unlock()
            #expect(Namespaces.awaitHolders(name))
        }
    }

    @Test func anRWLockWriterInAnotherPIDNamespaceKeepsItsLock() throws {
        guard Namespaces.available(Namespaces.pidNamespaceRefusal) else { return }
        try withCleanNames("nsrww") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Namespaces.spawnInPIDNamespace("rw-write-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "claiming")
            #expect(child.readLine() == "locked acquired")
            #expect(details(name)["writerAlive"] == "yes")
            expectError(.timedOut) { try lock.blockingReadLock(timeout: .milliseconds(300)) }
            expectError(.timedOut) { try lock.blockingWriteLock(timeout: .milliseconds(300)) }
            #expect(lock.tryReadLock() == nil)
            #expect(lock.tryWriteLock() == nil)
            #expect(lock.isConsistent, "nobody took it over")
            child.stop()
            #expect(try lock.blockingWriteLock(timeout: .seconds(5)) == .previousOwnerDied)
            lock.markConsistent()
            try lock.writeUnlock()
            #expect(Namespaces.awaitHolders(name))
        }
    }

    @Test func anRWLockReaderInAnotherPIDNamespaceKeepsItsReadLock() throws {
        guard Namespaces.available(Namespaces.pidNamespaceRefusal) else { return }
        try withCleanNames("nsrwr") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            let child = try Namespaces.spawnInPIDNamespace("rw-read-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "locked acquired")
            #expect(details(name)["readers"] == "1" && details(name)["readerSlotsDead"] == "0")
            // A writer waits for a live reader, wherever it lives.
            expectError(.timedOut) { try lock.blockingWriteLock(timeout: .milliseconds(300)) }
            #expect(lock.tryWriteLock() == nil)
            #expect(lock.readerCount == 1)
            #expect(details(name)["readerRecoveries"] == "0")
            child.stop()
            #expect(try lock.blockingWriteLock(timeout: .seconds(5)) == .acquired)
            try lock.writeUnlock()
            #expect(details(name)["readerRecoveries"] == "1")
            #expect(Namespaces.awaitHolders(name))
        }
    }

    @Test func aSharedVariablePutterInAnotherPIDNamespaceKeepsItsClaim() throws {
        guard Namespaces.available(Namespaces.pidNamespaceRefusal) else { return }
        try withCleanNames("nsvar") { name in
            let variable = try SharedVariable<Int>.create(name: name, initialValue: 1)
            defer { variable.close() }
            let child = try Namespaces.spawnInPIDNamespace("var-modify-hold", name)
            defer { child.stop() }
            #expect(child.readLine() == "modifying")
            #expect(details(name)["putterAlive"] == "yes")
            #expect(details(name)["putter"] == "1")
            // The child holds the putter word (empty variable, a modify in progress): no put may
            // slip in.
            expectError(.timedOut) { try variable.blockingPut(5, timeout: .milliseconds(300)) }
            #expect(!variable.tryPut(6))
            #expect(variable.isEmpty)
            child.stop()
            // Its claim dies with it.
            try variable.blockingPut(7, timeout: .seconds(5))
            #expect(try variable.blockingTake(timeout: .seconds(1)) == 7)
            #expect(Namespaces.awaitHolders(name))
        }
    }

    /// The waiter runs as uid 65534 with a private /proc mounted `hidepid=2`: the owner (this
    /// process, root) is invisible to it in /proc.
    @Test func anOwnerHiddenFromTheWaitersProcKeepsItsLock() throws {
        guard Namespaces.available(Namespaces.hidepidRefusal) else { return }
        try withCleanNames("hidepid") { name in
            let mutex = try ProcessMutex.create(name: name, permissions: FilePermissions(rawValue: 0o666))
            defer { mutex.close() }
            func waiter() throws -> (termination: ChildProcess.Termination?, output: String) {
                let script = "mount -t proc -o hidepid=2 proc /proc && exec \"$0\" --as-nobody mutex-lock-within \"$1\" 300"
                let result = try ChildProcess.run(
                    Namespaces.unshare, ["-m", "/bin/sh", "-c", script, Peer.path, name], timeout: .seconds(30))
                return (result.termination, result.standardOutput + result.standardError)
            }
            try mutex.blockingLock()
            let hidden = try waiter()
            #expect(hidden.termination == .exited(4), "the waiter must time out; it said: \(hidden.output)")
            #expect(mutex.isLocked && mutex.isConsistent, "nobody took it over")
            try mutex.unlock()
            // The same waiter takes the lock once it is free (the setup works).
            let free = try waiter()
            #expect(free.termination == .exited(0) && free.output.contains("locked acquired"), "\(free.output)")
        }
    }

    @Test func aMutexWaiterKilledWhileParkedCostsAtMostOneSpareWakeUp() throws {
        try withCleanNames("mtxheal") { name in
            let mutex = try ProcessMutex.create(name: name)
            defer { mutex.close() }
            try mutex.blockingLock()
            let child = try Peer.spawn("mutex-hold", name)
            defer { child.stop() }
            // Parked behind us: counted, and announced in the lock word.
            #expect(pollUntil { waiters(name) == 1 && details(name)["contended"] != "no" })
            child.kill(signal: SIGKILL)
            child.wait(timeout: .seconds(10))
            try mutex.unlock() // may wake nobody: the one spare call
            // A lone process from now on.
            try mutex.blockingLock()
            try mutex.unlock()
            #expect(details(name)["contended"] == "no", "\(details(name))")
            let before = mutex.unlockWakes.load(ordering: .relaxed)
            for _ in 0..<1000 {
                try mutex.blockingLock()
                try mutex.unlock()
            }
            let wakes = mutex.unlockWakes.load(ordering: .relaxed) - before
            #expect(wakes == 0, "\(wakes) of 1000 uncontended unlocks made a wake-up system call")
        }
    }

    @Test func anRWLockWaiterKilledWhileParkedLeavesNoContention() throws {
        try withCleanNames("rwheal") { name in
            let lock = try ProcessRWLock.create(name: name)
            defer { lock.close() }
            try lock.blockingWriteLock()
            let reader = try Peer.spawn("rw-read-hold", name)
            let writer = try Peer.spawn("rw-write-hold", name)
            defer { reader.stop(); writer.stop() }
            #expect(writer.readLine() == "claiming")
            #expect(pollUntil { waiters(name) == 2 && details(name)["contended"] != "no" })
            reader.kill(signal: SIGKILL)
            writer.kill(signal: SIGKILL)
            reader.wait(timeout: .seconds(10))
            writer.wait(timeout: .seconds(10))
            try lock.writeUnlock() // the one spare wake-up call
            #expect(try lock.blockingWriteLock(timeout: .seconds(1)) == .acquired)
            try lock.writeUnlock()
            #expect(try lock.blockingReadLock(timeout: .seconds(1)) == .acquired)
            try lock.readUnlock()
            #expect(details(name)["contended"] == "no", "\(details(name))")
            let before = lock.unlockWakes.load(ordering: .relaxed)
            for _ in 0..<200 {
                try lock.blockingWriteLock()
                try lock.writeUnlock()
            }
            let wakes = lock.unlockWakes.load(ordering: .relaxed) - before
            #expect(wakes == 0, "\(wakes) of 200 uncontended write unlocks made a wake-up system call")
        }
    }
}
