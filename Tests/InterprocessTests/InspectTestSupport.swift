import Interprocess

// What `ipc inspect` shows of a segment, and the loan tests' message pattern: shared by the suites.

/// The details `ipc inspect` shows for the named segment (empty if it cannot be read).
func details(_ name: String) -> [String: String] {
    (try? SharedMemory.info(name: name).details) ?? [:]
}

/// One numeric detail of the named segment, nil if it is absent or not a number.
func detail(_ name: String, _ key: String) -> Int? { Int(details(name)[key] ?? "") }

/// Byte i of message SEED (as the test child's loan commands write it).
func pattern(_ seed: Int, _ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: seed &+ 7 &* index) }

/// Message SEED of `count` bytes (``pattern(_:_:)``).
func message(_ seed: Int, count: Int) -> [UInt8] { (0..<count).map { pattern(seed, $0) } }

/// Blocks of a channel's loan heap in use now (opened for a look, then closed).
func blocksInUse(_ channel: Channel<[UInt8]>) throws -> Int {
    let heap = try SharedHeap.open(name: channel.loanHeapName)
    defer { heap.close() }
    return try heap.statistics().blocks
}
