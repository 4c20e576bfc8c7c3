#if canImport(Glibc)
import Glibc
#endif
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem

/// A buggy or hostile peer can write anything into shared memory. Whatever it writes, every
/// operation must answer with success or a typed error — never crash, hang or read out of bounds.
@Suite("Hostile peers", .serialized, .timeLimit(.minutes(2)))
struct HostilePeerTests {
    @Test func randomBytesAnywhereInTheHeader() throws {
        try withCleanNames("fuzzhdr") { prefix in
            var generator = SystemRandomNumberGenerator()
            var outcomes: [String: Int] = [:]
            for round in 0..<300 {
                let name = "\(prefix)-\(round)"
                try SharedMemory.create(name: name, size: 128, lifetime: .persistent).close()
                let count = Int.random(in: 1...8, using: &generator)
                let offset = Int.random(in: 0..<(4096 - count), using: &generator)
                scribble(name, at: offset, (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
                do {
                    let segment = try SharedMemory.open(name: name)
                    _ = try? segment.readBytes()
                    segment.close()
                    outcomes["opened", default: 0] += 1
                } catch let error as InterprocessError {
                    outcomes[error.code.description, default: 0] += 1
                }
                _ = try? SharedMemory.info(name: name)
                _ = SharedMemory.exists(name: name)
                if (try? SharedMemory.remove(name: name)) == nil { try? SharedMemoryObject.unlink("/" + name) }
            }
            #expect(outcomes.keys.allSatisfy { ["opened", "corrupt", "incompatible"].contains($0) }, "\(outcomes)")
            #expect(outcomes["corrupt", default: 0] > 0)
        }
    }

    @Test func garbageInTheHolderTableAndState() throws {
        try withCleanNames("fuzzslots") { name in
            let segment = try SharedMemory.create(name: name, size: 64)
            // Pids of processes that never held it, including ours and absurd ones.
            for (index, pid) in [UInt32(1), UInt32(getpid()), 0xFFFF_FFFF, 77777].enumerated() {
                scribble(name, at: 2048 + (index + 5) * 32, withUnsafeBytes(of: pid.littleEndian) { Array($0) })
            }
            let info = try SharedMemory.info(name: name)
            #expect(info.holders.filter { !$0.alive }.count == 4, "forged slots hold no lock: they show as dead")
            let again = try SharedMemory.open(name: name) // sweeps the forged slots
            #expect(try SharedMemory.info(name: name).holders.count == 2)
            again.close()
            segment.close()
            #expect(!SharedMemory.exists(name: name))
        }
    }

    @Test func garbageInPrimitiveStateNeverCrashesOrHangs() throws {
        try withCleanNames("fuzzsync") { name in
            let segment = try SharedMemory.create(name: name, size: 4096)
            defer { segment.close() }
            var generator = SystemRandomNumberGenerator()
            let mutex = try ProcessMutex.create(in: segment, at: 0)
            let semaphore = try ProcessSemaphore.create(in: segment, at: 64, value: 0)
            let event = try ProcessEvent.create(in: segment, at: 128, mode: .autoReset)
            let condition = try ProcessCondition.create(in: segment, at: 192)
            for _ in 0..<50 {
                // Random words over everything but the tags (a wrong tag is refused at open).
                try segment.withUnsafeMutableBytes { bytes in
                    for base in [0, 64, 128, 192] {
                        for offset in [0, 4, 8, 12, 16, 24] {
                            bytes.storeBytes(of: UInt32.random(in: 0...UInt32.max, using: &generator), toByteOffset: base + offset, as: UInt32.self)
                        }
                    }
                    bytes.storeBytes(of: UInt32(ProcessEvent.Mode.autoReset.rawValue), toByteOffset: 128 + fieldOffset(\cipc_event.mode), as: UInt32.self)
                }
                // Each operation returns or fails with a typed error, within its timeout.
                _ = try? mutex.blockingLock(timeout: .milliseconds(60))
                try? mutex.unlock()
                _ = try? mutex.tryLock()
                _ = semaphore.tryWait()
                try? semaphore.signal()
                try? semaphore.blockingWait(timeout: .milliseconds(5))
                _ = event.tryWait()
                event.set()
                try? event.blockingWait(timeout: .milliseconds(5))
                condition.signal()
                condition.broadcast()
                _ = SharedMemory.list()
            }
            // A garbage tag is refused.
            try segment.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(0xDEAD_BEEF), toByteOffset: fieldOffset(\cipc_mutex.tag), as: UInt32.self) }
            expectError(.corrupt) { try ProcessMutex.open(in: segment, at: 0) }
        }
    }
}
