// A counter that survives a process killed while holding its lock.
//
//   swift run --package-path Examples crash-counter
//
// Two counters in a segment, `count` and `confirmed`, change together under a ProcessMutex: a whole
// increment adds 1 to both. A "victim" process takes the lock, does half an increment and is
// SIGKILLed. Three workers waiting for the lock go on: the first to get it is told that the previous
// owner died (`previousOwnerDied`), rolls the half-done increment back and marks the data consistent.
import Foundation
import Interprocess

let workerCount = 3
let increments = 1_000

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

let arguments = CommandLine.arguments
if arguments.count == 3 {
    let segment = try SharedMemory.open(name: arguments[2])
    let lock = try ProcessMutex.open(in: segment, named: "lock")
    let count = try SharedAtomic<Int64>.open(in: segment, named: "count")
    let confirmed = try SharedAtomic<Int64>.open(in: segment, named: "confirmed")
    if arguments[1] == "victim" {
        try lock.blockingLock()
        count.wrappingAdd(1)                       // half an increment…
        try ProcessSemaphore.open(in: segment, named: "holding").signal()
        while true { sleep(60) }                   // …and the parent kills us here, holding the lock
    }
    for _ in 0..<increments {
        try lock.withBlockingLock(timeout: .seconds(30), onOwnerDied: {
            // Runs holding the lock, before the body, when the previous owner died: repair, and
            // the mutex is marked consistent when this returns.
            print("worker (pid \(getpid())): the previous owner died holding the lock; count \(count.load()), "
                + "confirmed \(confirmed.load()): rolling the unfinished increment back")
            count.store(confirmed.load())
        }) {
            count.wrappingAdd(1)
            confirmed.wrappingAdd(1)
        }
    }
    segment.close()
    exit(0)
}

let name = "example-crash-counter-\(getpid())"
let segment = try SharedMemory.create(name: name, size: 4096)
let lock = try ProcessMutex.create(in: segment, named: "lock")
let count = try SharedAtomic<Int64>.create(in: segment, named: "count")
let confirmed = try SharedAtomic<Int64>.create(in: segment, named: "confirmed")
let holding = try ProcessSemaphore.create(in: segment, named: "holding", value: 0)

let victim = try startPeer("victim", name)
try holding.blockingWait(timeout: .seconds(30))          // the victim holds the lock now
let workers = try (0..<workerCount).map { _ in try startPeer("worker", name) }   // they wait for it
print("parent: killing the victim (pid \(victim.processIdentifier)) while it holds the lock")
fflush(nil)
kill(victim.processIdentifier, SIGKILL)
victim.waitUntilExit()

for worker in workers { worker.waitUntilExit() }
let failed = workers.filter { $0.terminationStatus != 0 }.count
print("parent: count \(count.load()), confirmed \(confirmed.load()), consistent \(lock.isConsistent)")
let ok = failed == 0 && lock.isConsistent
    && count.load() == Int64(workerCount * increments) && confirmed.load() == count.load()
segment.close()
print(ok ? "ok: \(workerCount) workers × \(increments) increments, none lost, the dead owner's half undone" : "FAILED")
exit(ok ? 0 : 1)
