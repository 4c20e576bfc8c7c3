// Processes meet at a named object in a shared heap: every one runs the same `findOrCreate` line,
// exactly one creates the object, and all get the same block — no pointer is passed around.
//
//   swift run --package-path Examples heap-named
//
// This process creates the heap; three workers race to find-or-create a "visitors" array in it and
// each signs its own entry; this process then finds the array by its name and reads it.
import Foundation
import Interprocess

let workerCount = 3

/// One worker's entry: plain values only (no references, no String): it lives in shared memory.
struct Visitor: BitwiseCopyable { var pid: Int32; var createdTheArray: Bool }

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 4, CommandLine.arguments[1] == "worker",
   let index = Int(CommandLine.arguments[3]), (0..<workerCount).contains(index) {
    let heap = try SharedHeap.open(name: CommandLine.arguments[2])
    // The same line in every process: of racing callers exactly one creates it.
    let (visitors, created) = try heap.findOrCreate(
        name: "visitors", repeating: Visitor(pid: 0, createdTheArray: false), count: workerCount)
    // Each worker writes only its own entry, so no lock is needed (else: a ProcessMutex).
    try heap.withUnsafeMutablePointer(to: visitors) { $0[index] = Visitor(pid: getpid(), createdTheArray: created) }
    heap.close()
    exit(0)
}

let name = "example-heap-\(getpid())"
let heap = try SharedHeap.create(name: name, capacity: 1 << 20)
let workers = try (0..<workerCount).map { try startPeer("worker", name, String($0)) }   // started together: they race
for worker in workers { worker.waitUntilExit() }

let visitors = try heap.find(name: "visitors", as: Visitor.self)     // by name; .notFound if nobody made it
let count = try heap.byteCount(of: visitors) / MemoryLayout<Visitor>.stride
let entries = try heap.withUnsafeMutablePointer(to: visitors) { Array(UnsafeBufferPointer(start: $0, count: count)) }
for (index, visitor) in entries.enumerated() {
    print("entry \(index): worker pid \(visitor.pid)\(visitor.createdTheArray ? ", created the array" : ", found it")")
}
for object in try heap.namedObjects() {
    print("named object \"\(object.name)\": \(object.byteCount) bytes of \(object.type)")
}
try heap.destroy(name: "visitors")                                  // frees the block and the name
heap.close()                                                        // the last holder removes the heap

let ok = entries.count == workerCount && entries.filter(\.createdTheArray).count == 1
    && entries.allSatisfy { $0.pid != 0 }
print(ok ? "ok: \(workerCount) processes, one object, created exactly once" : "FAILED")
exit(ok ? 0 : 1)
