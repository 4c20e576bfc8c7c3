import ArgumentParser
import Interprocess
import InterprocessSystem

/// `ipc bench-peer ROLE --segment NAME …` (hidden): the other process(es) of `ipc bench`.
///
/// A peer opens the bench's segment, does its part of one scenario (see ``BenchRole``), records
/// what it measured in its slot of the segment, and exits 0. It never outlives its bounds: it ends
/// itself with SIGALRM after `--life-limit` seconds, a spinning peer gives up when its parent
/// changes (the bench died), and the bench kills it if it overstays.
struct BenchPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-peer",
        abstract: "A peer process that `ipc bench` starts.",
        shouldDisplay: false
    )

    @Argument(help: "What to do: \(BenchRole.allCases.map(\.rawValue).joined(separator: ", ")).")
    var role: BenchRole

    @Option(help: "The bench's segment.")
    var segment: String

    @Option(help: "This peer's result slot (and pair number).")
    var slot = 0

    @Option(help: "Operations to do (contention roles), values to put (loaded putter).")
    var count = 0

    @Option(help: "Peers that start together (contention roles), takers to stop (loaded putter).")
    var parties = 1

    @Option(name: .customLong("in"), help: "Descriptor to read from (pipe and socket roles).")
    var input: Int32 = -1

    @Option(name: .customLong("out"), help: "Descriptor to write to (pipe and socket roles).")
    var output: Int32 = -1

    @Option(name: .customLong("life-limit"), help: "Seconds after which this process ends itself.")
    var lifeLimit = 120

    func validate() throws {
        guard (0..<BenchLayout.slotCount).contains(slot), slot < BenchLayout.pairCount || !role.isPair else {
            throw ValidationError("--slot \(slot) is out of range")
        }
        guard count >= 0, lifeLimit > 0, parties > 0 else {
            throw ValidationError("--count, --parties and --life-limit must be positive")
        }
    }

    func run() throws {
        PeerLifetime.limit(seconds: lifeLimit)
        let memory = try SharedMemory.open(name: segment)
        defer { memory.close() }
        guard memory.size >= BenchLayout.size else { throw ToolError("\(segment) is not a bench segment") }
        let work = PeerWork(
            memory: memory, slot: slot, count: count, parties: parties, input: input, output: output,
            deadline: Deadline(after: .seconds(lifeLimit)))
        try memory.withUnsafeMutableBytes { buffer in
            try work.run(role, base: buffer.baseAddress!)
        }
    }
}

extension BenchRole: ExpressibleByArgument {
    var isPair: Bool { rawValue.hasPrefix("pair-") }
}

/// The peer's side of each role.
struct PeerWork {
    let memory: SharedMemory
    let slot: Int
    let count: Int
    let parties: Int
    let input: Int32
    let output: Int32
    let deadline: Deadline

    func run(_ role: BenchRole, base: UnsafeMutableRawPointer) throws {
        let control = BenchControl(base: base)
        switch role {
        case .pongSpin:
            try pongSpin(base, control)
        case .pongSemaphore:
            let ping = try ProcessSemaphore.open(in: memory, at: BenchLayout.pingSemaphore)
            let pong = try ProcessSemaphore.open(in: memory, at: BenchLayout.pongSemaphore)
            try pongSemaphores(ping, pong, control, pair: 0)
        case .pongEvent:
            let ping = try ProcessEvent.open(in: memory, at: BenchLayout.pingEvent)
            let pong = try ProcessEvent.open(in: memory, at: BenchLayout.pongEvent)
            try pongEvents(ping, pong, control)
        case .pongPipe, .pongSocket, .pairPongPipe:
            try pongBytes(control)
        case .contendProcessMutex:
            let mutex = try ProcessMutex.open(in: memory, at: BenchLayout.processMutex)
            try contend(control, base) { () throws -> UInt64 in try Self.increment(mutex, base + BenchLayout.counter, count) }
        case .contendPthread:
            let mutex = RobustPthreadMutex.open(at: base + BenchLayout.pthreadMutex)
            try contend(control, base) { () throws -> UInt64 in try Self.increment(mutex, base + BenchLayout.counter, count) }
        case .pairPingSemaphore:
            let ping = try ProcessSemaphore.open(in: memory, at: BenchLayout.pairPing(slot))
            let pong = try ProcessSemaphore.open(in: memory, at: BenchLayout.pairPong(slot))
            try pingSemaphores(ping, pong, control)
        case .pairPongSemaphore:
            let ping = try ProcessSemaphore.open(in: memory, at: BenchLayout.pairPing(slot))
            let pong = try ProcessSemaphore.open(in: memory, at: BenchLayout.pairPong(slot))
            try pongSemaphores(ping, pong, control, pair: slot)
        case .pairPingPipe:
            try pingBytes(control)
        case .pongVariable:
            let ping = try SharedVariable<UInt64>.open(in: memory, at: BenchLayout.pingVariable)
            let pong = try SharedVariable<UInt64>.open(in: memory, at: BenchLayout.pongVariable)
            control.markReady()
            try VariableRoundTrip.echo(ping, pong)
        case .hog:
            try hog(control)
        case .loadedPutVariable:
            let variable = try SharedVariable<UInt64>.open(in: memory, at: BenchLayout.pingVariable)
            try loadedPut(control) { value throws in try variable.blockingPut(value) }
        case .loadedTakeVariable:
            let variable = try SharedVariable<UInt64>.open(in: memory, at: BenchLayout.pingVariable)
            try loadedTake(control) { () throws -> UInt64 in try variable.blockingTake() }
        case .loadedPutPosix:
            let buffer = PosixSlot.open(base: base)
            try loadedPut(control) { value throws in try buffer.put(value) }
        case .loadedTakePosix:
            let buffer = PosixSlot.open(base: base)
            try loadedTake(control) { () throws -> UInt64 in try buffer.take() }
        }
    }

    // MARK: Loaded

    /// Burns its CPU (no system call, no pause) from ready until the bench says stop.
    private func hog(_ control: BenchControl) throws {
        let parent = PeerLifetime.parentPID
        control.markReady()
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while !control.shouldStop {
            for _ in 0..<4096 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407 }
            blackHole(state)
            guard PeerLifetime.parentPID == parent, !deadline.hasPassed else {
                throw ToolError("bench-peer: the bench went away")
            }
        }
    }

    /// Puts 0..<count, then one quit value per taker (`parties`); records the count and the times.
    private func loadedPut(_ control: BenchControl, _ put: (UInt64) throws -> Void) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        for value in 0..<UInt64(count) { try put(value) }
        for _ in 0..<parties { try put(LoadedBench.quit) }
        control.record(slot: slot, count: UInt64(count), start: start, end: Clock.monotonicNanoseconds())
    }

    /// Takes values until the quit value; records how many it took, their sum and when it was done.
    private func loadedTake(_ control: BenchControl, _ take: () throws -> UInt64) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var taken: UInt64 = 0
        var sum: UInt64 = 0
        while true {
            let value = try take()
            if value == LoadedBench.quit { break }
            taken &+= 1
            sum &+= value
        }
        control.record(slot: slot, count: taken, start: start, end: Clock.monotonicNanoseconds(), extra: sum)
    }

    // MARK: Ping-pong (the ponging side)

    /// Answers each odd value in the floor word with the next value, spinning; ends at the quit value.
    private func pongSpin(_ base: UnsafeMutableRawPointer, _ control: BenchControl) throws {
        let word = atomic32(base + BenchLayout.floorWord)
        let parent = PeerLifetime.parentPID
        control.markReady()
        var expected: UInt32 = 1
        while true {
            var spins: UInt32 = 0
            var value = word.pointee.load(ordering: .acquiring)
            while value != expected {
                if value == SpinRoundTrip.quit { return }
                if value == SpinRoundTrip.parked {
                    // Between chunks: sleep until the bench pings again.
                    if Futex.wait(UnsafeMutableRawPointer(word), expected: value, deadline: deadline) == .timedOut {
                        throw ToolError("bench-peer: the bench went away")
                    }
                    value = word.pointee.load(ordering: .acquiring)
                    continue
                }
                SpinPolicy.pause()
                spins &+= 1
                if spins & 0xFFFF == 0 {
                    guard PeerLifetime.parentPID == parent, !deadline.hasPassed else {
                        throw ToolError("bench-peer: the bench went away")
                    }
                }
                value = word.pointee.load(ordering: .acquiring)
            }
            word.pointee.store(expected &+ 1, ordering: .releasing)
            expected &+= 2
        }
    }

    /// Waits on `ping`, signals `pong`; ends when woken with the pair's quit flag set.
    private func pongSemaphores(_ ping: ProcessSemaphore, _ pong: ProcessSemaphore, _ control: BenchControl, pair: Int) throws {
        let quit = control.word(BenchLayout.quit(pair: pair))
        control.markReady()
        while true {
            try ping.blockingWait()
            if quit.pointee.load(ordering: .relaxed) != 0 { return }
            try pong.signal()
        }
    }

    private func pongEvents(_ ping: ProcessEvent, _ pong: ProcessEvent, _ control: BenchControl) throws {
        let quit = control.word(BenchLayout.quit(pair: 0))
        control.markReady()
        while true {
            try ping.blockingWait()
            if quit.pointee.load(ordering: .relaxed) != 0 { return }
            pong.set()
        }
    }

    /// Answers every byte read with a byte written, until end of file.
    private func pongBytes(_ control: BenchControl) throws {
        guard input >= 0, output >= 0 else { throw ValidationError("--in and --out are required") }
        control.markReady()
        while try BenchIO.readByte(input) {
            try BenchIO.writeByte(output)
        }
    }

    // MARK: Oversubscribed (the pinging side of a pair)

    /// Round trips until the bench says stop; records the count and times, then releases the ponger.
    private func pingSemaphores(_ ping: ProcessSemaphore, _ pong: ProcessSemaphore, _ control: BenchControl) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var trips: UInt64 = 0
        while !control.shouldStop {
            try ping.signal()
            try pong.blockingWait()
            trips &+= 1
        }
        control.record(slot: slot, count: trips, start: start, end: Clock.monotonicNanoseconds())
        control.word(BenchLayout.quit(pair: slot)).pointee.store(1, ordering: .sequentiallyConsistent)
        try ping.signal()
    }

    /// The same through pipes; closing our write end releases the ponger.
    private func pingBytes(_ control: BenchControl) throws {
        guard input >= 0, output >= 0 else { throw ValidationError("--in and --out are required") }
        let output = BenchDescriptor(self.output)
        control.markReady()
        try control.awaitGo(deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        var trips: UInt64 = 0
        while !control.shouldStop {
            try BenchIO.writeByte(output.fd)
            guard try BenchIO.readByte(input) else { throw ToolError("bench-peer: the ponger closed its pipe") }
            trips &+= 1
        }
        control.record(slot: slot, count: trips, start: start, end: Clock.monotonicNanoseconds())
        output.close()
    }

    // MARK: Contention

    /// Ready, go, wait for the other contenders, run `body` (which returns the operations done)
    /// and record the times.
    private func contend(_ control: BenchControl, _ base: UnsafeMutableRawPointer, _ body: () throws -> UInt64) throws {
        control.markReady()
        try control.awaitGo(deadline: deadline)
        try control.arrive(parties: parties, deadline: deadline)
        let start = Clock.monotonicNanoseconds()
        let done = try body()
        control.record(slot: slot, count: done, start: start, end: Clock.monotonicNanoseconds())
    }

    @inline(never)
    private static func increment(_ mutex: ProcessMutex, _ counter: UnsafeMutableRawPointer, _ count: Int) throws -> UInt64 {
        for _ in 0..<count {
            try mutex.blockingLock()
            counter.storeBytes(of: counter.load(as: UInt64.self) &+ 1, as: UInt64.self)
            try mutex.unlock()
        }
        return UInt64(count)
    }

    @inline(never)
    private static func increment(_ mutex: RobustPthreadMutex, _ counter: UnsafeMutableRawPointer, _ count: Int) throws -> UInt64 {
        for _ in 0..<count {
            try mutex.lock()
            counter.storeBytes(of: counter.load(as: UInt64.self) &+ 1, as: UInt64.self)
            mutex.unlock()
        }
        return UInt64(count)
    }
}
