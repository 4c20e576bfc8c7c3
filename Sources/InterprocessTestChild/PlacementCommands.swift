#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessToolSupport

// Commands on a segment's table of placed objects: counting on a placed atomic, placing and storing
// with crash points armed.

/// Runs one placement command; returns the exit status.
func runPlacementCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        let segment = try SharedMemory.open(name: rest[0])
        defer { segment.close() }
        switch command {
        case "place-count":
            // place-count SEGMENT N: says "ready", waits for "go", adds 1 N times to the Int64 atomic
            // named "counter" (and to the mutex-guarded plain word at offset 0 of the payload's
            // value, through the mutex named "lock"), says "done".
            let counter = try SharedAtomic<Int64>.open(in: segment, named: "counter")
            let lock = try ProcessMutex.open(in: segment, named: "lock")
            let plain = try SharedAtomic<UInt32>.open(in: segment, named: "plain")
            say("ready")
            guard awaitInstruction(upTo: 60) != nil else { return 4 }
            for _ in 0..<Int(rest[1])! {
                counter.wrappingAdd(1)
                // A read-modify-write that is only correct under the lock.
                try lock.withBlockingLock { plain.store(plain.load() &+ 1) }
            }
            say("done")
        case "place-atomic":
            // place-atomic SEGMENT NAME VALUE: places an Int64 atomic holding VALUE under NAME (crash
            // points fire inside); says "placed OFFSET".
            _ = try SharedAtomic<Int64>.create(in: segment, named: rest[1], initialValue: Int64(rest[2])!)
            let offset = try segment.placedObjects().first { $0.name == rest[1] }?.offset ?? -1
            say("placed \(offset)")
        case "place-store":
            // place-store SEGMENT TEXT: stores TEXT (crash points fire inside); says "stored".
            try segment.write(rest[1])
            say("stored")
        case "place-read":
            // place-read SEGMENT NAME: says the value of the Int64 atomic placed under NAME.
            say("\(try SharedAtomic<Int64>.open(in: segment, named: rest[1]).load())")
        default:
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        say("error \((error as? InterprocessError)?.code.description ?? "other")")
        return 1
    }
}
