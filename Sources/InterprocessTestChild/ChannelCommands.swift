// Commands for Channel ("chan-…"). Exit codes: 0 success, 1 failure, 2 usage, 4 timed out.
//
// The numbered-message tests share a *ledger* segment (raw bytes):
//   0   order violations: a consumer got a producer's message after a later one of it (UInt64, atomic)
//   8   damaged messages: wrong length or content (UInt64, atomic)
//   16  messages received, in all (UInt64, atomic)
//   64  + 8 * ID: messages producer ID has sent (its send returned), for IDs < 56 (UInt64, atomic)
//   1024 + 4 * (ID * COUNT + SEQ): how often message SEQ of producer ID was received (UInt32, atomic)
// Message SEQ of producer ID is [UInt8]: ID and SEQ (UInt32, little-endian each) and SEQ % 61 bytes
// of (ID * 31 + SEQ + k) & 0xFF, so that boundaries and contents are checked.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization
import Dispatch

/// Runs one channel command; returns the exit status.
func runChannelCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "chan-produce":
            // chan-produce NAME LEDGER ID COUNT [async]: sends COUNT numbered messages, recording
            // each in the ledger once its send returned; says "ready" first and "done" at the end.
            try produce(name: rest[0], ledger: rest[1], id: Int(rest[2])!, count: Int(rest[3])!, async: rest.count > 4 && rest[4] == "async")
        case "chan-consume":
            // chan-consume NAME LEDGER COUNT [async]: receives numbered messages until the channel is
            // closed and drained, checking and recording each; says "ready" first, "drained N" at the end.
            try consume(name: rest[0], ledger: rest[1], count: Int(rest[2])!, async: rest.count > 3 && rest[3] == "async")
        case "chan-send":
            // chan-send NAME TEXT...: sends each TEXT (a Channel<String>), says "sending" before and
            // "sent" after.
            let channel = try Channel<String>.open(name: rest[0])
            say("sending")
            for text in rest.dropFirst() { try channel.blockingSend(text, timeout: .seconds(20)) }
            say("sent")
        case "chan-receive":
            // chan-receive NAME TIMEOUT_MS: says "receiving", then "received TEXT" or the error's code.
            let channel = try Channel<String>.open(name: rest[0])
            say("receiving")
            do throws(InterprocessError) {
                say("received \(try channel.blockingReceive(timeout: .milliseconds(Int(rest[1])!)))")
            } catch {
                say("\(error.code)")
            }
        case "chan-receive-async":
            // chan-receive-async NAME TIMEOUT_MS: as chan-receive, with the async receive.
            let channel = try Channel<String>.open(name: rest[0])
            say("receiving")
            let done = DispatchSemaphore(value: 0)
            let timeout = Int(rest[1])!
            Task {
                do throws(InterprocessError) {
                    say("received \(try await channel.receive(timeout: .milliseconds(timeout)))")
                } catch {
                    say("\(error.code)")
                }
                done.signal()
            }
            done.wait()
        case "chan-send-wait":
            // chan-send-wait NAME TEXT TIMEOUT_MS: one send that may wait (a full channel): says
            // "sending", then "sent" or the error's code.
            let channel = try Channel<String>.open(name: rest[0])
            say("sending")
            do throws(InterprocessError) {
                try channel.blockingSend(rest[1], timeout: .milliseconds(Int(rest[2])!))
                say("sent")
            } catch {
                say("\(error.code)")
            }
        case "chan-echo":
            // chan-echo IN OUT: says "ready", answers each string from IN with "echo " + it on OUT
            // until IN is closed, then says "echoed N".
            let input = try Channel<String>.open(name: rest[0])
            let output = try Channel<String>.open(name: rest[1])
            say("ready")
            var echoed = 0
            echoing: while true {
                switch Result(catching: { () throws(InterprocessError) in try input.blockingReceive(timeout: .seconds(60)) }) {
                case .success(let text):
                    try output.blockingSend("echo " + text, timeout: .seconds(60))
                    echoed += 1
                case .failure(let error) where error.code == .closed: break echoing
                case .failure(let error): throw error
                }
            }
            say("echoed \(echoed)")
        case let command where command.hasPrefix("chan-x-"):
            try runExclusiveChannelCommand(command, rest)
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
        return 0
    } catch let error as InterprocessError {
        StandardStream.write("child: \(error)\n", to: 2)
        return error.code == .timedOut ? 4 : 1
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// Message `sequence` of producer `id` (see the file's comment).
func numberedMessage(id: Int, sequence: Int) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(8 + sequence % 61)
    withUnsafeBytes(of: UInt32(id).littleEndian) { bytes.append(contentsOf: $0) }
    withUnsafeBytes(of: UInt32(sequence).littleEndian) { bytes.append(contentsOf: $0) }
    for k in 0..<(sequence % 61) { bytes.append(UInt8(truncatingIfNeeded: id * 31 + sequence + k)) }
    return bytes
}

/// The producer and sequence of a numbered message, if it is whole.
func parseNumbered(_ bytes: [UInt8]) -> (id: Int, sequence: Int)? {
    guard bytes.count >= 8 else { return nil }
    let id = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian)
    let sequence = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }.littleEndian)
    guard bytes == numberedMessage(id: id, sequence: sequence) else { return nil }
    return (id, sequence)
}

/// The ledger's words.
///
/// `@unchecked Sendable`: `base` points into the mapping that `segment` keeps alive, and every word
/// is accessed atomically.
struct Ledger: @unchecked Sendable {
    let segment: SharedMemory
    let base: UnsafeMutableRawPointer
    let count: Int

    init(name: String, count: Int) throws {
        segment = try SharedMemory.open(name: name)
        base = try segment.withUnsafeMutableBytes { $0.baseAddress! } // the mapping lives as long as `segment`
        self.count = count
    }

    var violations: UnsafeMutablePointer<Atomic<UInt64>> { atomic64(base) }
    var damaged: UnsafeMutablePointer<Atomic<UInt64>> { atomic64(base + 8) }
    var received: UnsafeMutablePointer<Atomic<UInt64>> { atomic64(base + 16) }
    func sent(_ id: Int) -> UnsafeMutablePointer<Atomic<UInt64>> { atomic64(base + 64 + 8 * id) }
    func cell(_ id: Int, _ sequence: Int) -> UnsafeMutablePointer<Atomic<UInt32>>? {
        let offset = 1024 + 4 * (id * count + sequence)
        guard id >= 0, id < 56, sequence >= 0, sequence < count, offset + 4 <= segment.size else { return nil }
        return atomic32(base + offset)
    }
}

private func produce(name: String, ledger: String, id: Int, count: Int, async: Bool) throws {
    let channel = try Channel<[UInt8]>.open(name: name)
    try produceNumbered(ledger: ledger, id: id, count: count, async: async) { message throws(InterprocessError) in
        try channel.blockingSend(message, timeout: .seconds(60))
    } send: { message throws(InterprocessError) in
        try await channel.send(message, timeout: .seconds(60))
    }
}

private func consume(name: String, ledger: String, count: Int, async: Bool) throws {
    let channel = try Channel<[UInt8]>.open(name: name)
    try consumeNumbered(ledger: ledger, count: count, async: async, messages: channel.messages) { () throws(InterprocessError) in
        (try channel.blockingReceive(timeout: .seconds(60)), nil)
    }
}

// MARK: - Numbered messages through a channel or a message queue

/// Sends `count` numbered messages of producer `id`, with `blockingSend` or (`async`) with `send` on
/// a task, recording each in the ledger once its send returned; says "ready" first and "done" at
/// the end. (chan-produce, mq-produce)
func produceNumbered(
    ledger ledgerName: String, id: Int, count: Int, async: Bool, blockingSend: ([UInt8]) throws(InterprocessError) -> Void,
    send: @escaping @Sendable ([UInt8]) async throws(InterprocessError) -> Void
) throws {
    let ledger = try Ledger(name: ledgerName, count: count)
    say("ready")
    if async {
        try runInTask { () throws(InterprocessError) in
            for sequence in 0..<count {
                try await send(numberedMessage(id: id, sequence: sequence))
                ledger.sent(id).pointee.store(UInt64(sequence + 1), ordering: .releasing)
            }
        }
    } else {
        for sequence in 0..<count {
            try blockingSend(numberedMessage(id: id, sequence: sequence))
            ledger.sent(id).pointee.store(UInt64(sequence + 1), ordering: .releasing)
        }
    }
    say("done")
}

/// Receives numbered messages until the channel or queue is closed and drained, with
/// `blockingReceive` or (`async`) from `messages` on a task, checking and recording each in the
/// ledger (a message that comes with a priority must come with its producer's, `id % 4`); says
/// "ready" first, "drained N" at the end. (chan-consume, mq-consume)
func consumeNumbered<Messages: AsyncSequence<[UInt8], InterprocessError> & Sendable>(
    ledger ledgerName: String, count: Int, async: Bool, messages: Messages,
    blockingReceive: () throws(InterprocessError) -> (message: [UInt8], priority: Int?)
) throws {
    let ledger = try Ledger(name: ledgerName, count: count)
    var last: [Int: Int] = [:]
    var drained = 0
    func record(_ message: [UInt8], _ priority: Int?) {
        guard let (id, sequence) = parseNumbered(message), let cell = ledger.cell(id, sequence), priority.map({ $0 == id % 4 }) ?? true else {
            ledger.damaged.pointee.add(1, ordering: .relaxed)
            return
        }
        if let previous = last[id], sequence <= previous { ledger.violations.pointee.add(1, ordering: .relaxed) }
        last[id] = sequence
        cell.pointee.add(1, ordering: .relaxed)
        ledger.received.pointee.add(1, ordering: .relaxed)
        drained += 1
    }
    say("ready")
    if async {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<(Int, InterprocessError?)>((0, nil))
        Task {
            var mine: [Int: Int] = [:]
            var total = 0
            do throws(InterprocessError) {
                for try await message in messages {
                    guard let (id, sequence) = parseNumbered(message), let cell = ledger.cell(id, sequence) else {
                        ledger.damaged.pointee.add(1, ordering: .relaxed)
                        continue
                    }
                    if let previous = mine[id], sequence <= previous { ledger.violations.pointee.add(1, ordering: .relaxed) }
                    mine[id] = sequence
                    cell.pointee.add(1, ordering: .relaxed)
                    ledger.received.pointee.add(1, ordering: .relaxed)
                    total += 1
                }
                outcome.withLock { $0 = (total, nil) }
            } catch {
                outcome.withLock { $0 = (total, error) }
            }
            done.signal()
        }
        done.wait()
        let (total, error) = outcome.withLock { $0 }
        if let error { throw error }
        drained = total
    } else {
        receiving: while true {
            switch Result(catching: blockingReceive) {
            case .success(let (message, priority)): record(message, priority)
            case .failure(let error) where error.code == .closed: break receiving
            case .failure(let error): throw error
            }
        }
    }
    say("drained \(drained)")
}
