// A producer and a consumer in two processes, passing numbers through a bounded buffer of 8 slots
// in a shared segment, on two counting semaphores: `free` counts empty slots, `filled` full ones.
//
//   swift run --package-path Examples producer-consumer
//
// The producer waits while all 8 slots are full, the consumer while all are empty.
import Foundation
import Interprocess

let slotCount = 8
let itemCount = 1_000

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

/// The buffer's objects, as each process sees them: everything is placed in the segment by name.
struct Buffer {
    let free: ProcessSemaphore
    let filled: ProcessSemaphore
    let slots: [SharedAtomic<Int64>]    // one atomic per slot: no byte offsets to compute

    init(creatingIn segment: SharedMemory) throws {
        free = try ProcessSemaphore.create(in: segment, named: "free", value: slotCount)
        filled = try ProcessSemaphore.create(in: segment, named: "filled", value: 0)
        slots = try (0..<slotCount).map { try SharedAtomic<Int64>.create(in: segment, named: "slot \($0)") }
    }

    init(openingIn segment: SharedMemory) throws {
        free = try ProcessSemaphore.open(in: segment, named: "free")
        filled = try ProcessSemaphore.open(in: segment, named: "filled")
        slots = try (0..<slotCount).map { try SharedAtomic<Int64>.open(in: segment, named: "slot \($0)") }
    }
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "consumer" {
    let segment = try SharedMemory.open(name: CommandLine.arguments[2])
    let buffer = try Buffer(openingIn: segment)
    var sum: Int64 = 0, outOfOrder = 0
    for index in 0..<itemCount {
        try buffer.filled.blockingWait(timeout: .seconds(30))  // an item is there
        let number = buffer.slots[index % slotCount].load()
        try buffer.free.signal()                                // its slot is free again
        sum += number
        if number != Int64(index + 1) { outOfOrder += 1 }
    }
    print("consumer (pid \(getpid())): received \(itemCount) numbers, sum \(sum), \(outOfOrder) out of order")
    segment.close()
    exit(sum == Int64(itemCount * (itemCount + 1) / 2) && outOfOrder == 0 ? 0 : 1)
}

let name = "example-producer-consumer-\(getpid())"
let segment = try SharedMemory.create(name: name, size: 4096)
let buffer = try Buffer(creatingIn: segment)
print("producer (pid \(getpid())): sending 1...\(itemCount) through \(slotCount) slots")
let consumer = try startPeer("consumer", name)

for number in 1...itemCount {
    try buffer.free.blockingWait(timeout: .seconds(30))         // a slot is free
    buffer.slots[(number - 1) % slotCount].store(Int64(number))
    try buffer.filled.signal()                                  // wakes the consumer if it waits
}
consumer.waitUntilExit()
segment.close()
print(consumer.terminationStatus == 0 ? "ok: every number arrived once, in order" : "FAILED")
exit(consumer.terminationStatus)
