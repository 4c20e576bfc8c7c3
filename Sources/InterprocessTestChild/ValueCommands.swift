#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Dispatch
import Synchronization

// Commands for stored values ("val-…"): SharedMemory.write/readBytes (KIND "raw") and
// SharedWatchedValue<CheckedValue> (KIND "watched"), and the config broadcaster of issue 17.
//
// A *checked* value is numbered by a seed and carries a checksum, so that a reader recognises a
// torn copy. Its body is one of 16 precomputed bodies (by seed mod 16) of very different sizes — raw
// ones 1 KB to 62 KB, so that a copy takes long enough for a writer to overtake it, watched ones (JSON)
// up to 3 KB — and stores cost little more than the copy. The first value a test stores itself is
// "start" (raw) or seed -1 (watched), which readers accept too.

/// A value of a watched value: its body by seed mod 16 (0 to ~3 KB) and a checksum of seed and body.
struct CheckedValue: Codable, Sendable, Equatable {
    var seed: Int
    var body: String
    var checksum: UInt64

    init(seed: Int) {
        self.seed = seed
        body = checkedBodies.text[seed & 15]
        checksum = checkedSum(seed: seed, bodyHash: checkedBodies.textHash[seed & 15])
    }

    /// The fingerprint both sides use (the tests' type has another module's name).
    static let type = TypeFingerprint(typeName: "tests.CheckedValue", size: 0, alignment: 1)

    var isWhole: Bool {
        if seed == -1 { return body == "start" && checksum == 0 } // the tests' first value
        return body == checkedBodies.text[seed & 15] && checksum == checkedSum(seed: seed, bodyHash: checkedBodies.textHash[seed & 15])
    }
}

/// The 16 bodies of each kind, and their hashes.
let checkedBodies: (raw: [[UInt8]], rawHash: [UInt64], text: [String], textHash: [UInt64]) = {
    let raw = (0..<16).map { k in (0..<(1024 + k * 3907)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k &* 7) } }
    let text = (0..<16).map { k in String(decoding: (0..<(k * 191)).map { UInt8(0x21 + ($0 &+ k &* 13) % 90) }, as: UTF8.self) }
    return (raw, raw.map(fnv), text, text.map { fnv(Array($0.utf8)) })
}()

func fnv(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}

/// The checksum of a seed and a body's hash.
func checkedSum(seed: Int, bodyHash: UInt64) -> UInt64 { bodyHash ^ (UInt64(bitPattern: Int64(seed)) &* 0x9E37_79B9_7F4A_7C15) }

/// A raw checked value: 8 bytes of seed, 8 of checksum, then body seed mod 16.
func checkedBytes(seed: Int) -> [UInt8] {
    withUnsafeBytes(of: Int64(seed).littleEndian, Array.init)
        + withUnsafeBytes(of: checkedSum(seed: seed, bodyHash: checkedBodies.rawHash[seed & 15]).littleEndian, Array.init)
        + checkedBodies.raw[seed & 15]
}

/// The seed of raw checked bytes, or nil if they are torn (wrong length, body or checksum).
func seed(ofChecked bytes: [UInt8]) -> Int? {
    guard bytes.count >= 16 else { return nil }
    let seed = Int(Int64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }))
    let sum = UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) })
    guard seed >= 0, bytes.count == 16 + checkedBodies.raw[seed & 15].count,
          bytes.withUnsafeBytes({ all in checkedBodies.raw[seed & 15].withUnsafeBytes { body in
              memcmp(all.baseAddress! + 16, body.baseAddress!, body.count) == 0 } }),
          sum == checkedSum(seed: seed, bodyHash: checkedBodies.rawHash[seed & 15]) else { return nil }
    return seed
}

/// The config of the broadcaster example.
struct BroadcastConfig: Codable, Sendable {
    var level: Int
    var final = false

    /// The fingerprint both sides use (the tests' type has another module's name).
    static let type = TypeFingerprint(typeName: "tests.BroadcastConfig", size: 0, alignment: 1)
}

/// Runs one stored-value command; returns the exit status (0 success, 1 failure, 2 usage).
func runValueCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "val-store":
            // val-store KIND NAME SEED: stores checked value SEED (crash points stop it midway).
            say("storing")
            if rest[0] == "raw" {
                try SharedMemory.open(name: rest[1]).write(checkedBytes(seed: Int(rest[2])!))
            } else {
                try SharedWatchedValue<CheckedValue>.open(name: rest[1], type: CheckedValue.type).store(CheckedValue(seed: Int(rest[2])!))
            }
            say("stored")
        case "val-read-once":
            // val-read-once KIND NAME: reads the value once; says "read SEED" if it is whole
            // (seed -1: the tests' first value), fails if it is torn.
            say("reading")
            if rest[0] == "raw" {
                let bytes = try SharedMemory.open(name: rest[1]).readBytes()
                guard let seed = bytes == Array("start".utf8) ? -1 : seed(ofChecked: bytes) else { fail("torn value of \(bytes.count) bytes") }
                say("read \(seed)")
            } else {
                let value = try SharedWatchedValue<CheckedValue>.open(name: rest[1], type: CheckedValue.type).load()
                guard value.isWhole else { fail("torn value") }
                say("read \(value.seed)")
            }
        case "val-writer":
            // val-writer KIND NAME COUNT: stores checked values 0..<COUNT, then says "done".
            say("ready")
            let count = Int(rest[2])!
            if rest[0] == "raw" {
                let segment = try SharedMemory.open(name: rest[1])
                let values = (0..<count).map(checkedBytes(seed:)) // built before, so that stores follow each other fast
                for value in values { try segment.write(value) }
            } else {
                let value = try SharedWatchedValue<CheckedValue>.open(name: rest[1], type: CheckedValue.type)
                let values = (0..<count).map(CheckedValue.init(seed:))
                for next in values { try value.store(next) }
            }
            say("done")
        case "val-reader":
            // val-reader KIND NAME LAST: reads until it sees checked value LAST; every value must be
            // whole and never older than the one before (watched: strictly newer, by version).
            // Says "ok N" (N values read) or fails.
            try readChecked(kind: rest[0], name: rest[1], last: Int(rest[2])!)
        case "val-config":
            // val-config NAME: the config broadcaster's reader (issue 17): prints every config it
            // receives until the final one.
            let name = rest[0]
            say("waiting")
            try runInTask { () throws(InterprocessError) in
                try await broadcastReader(name: name)
            }
        default:
            StandardStream.write("child: unknown command \(command)\n", to: 2)
            return 2
        }
        return 0
    } catch {
        StandardStream.write("child: \(error)\n", to: 2)
        return 1
    }
}

/// The reader of the config broadcaster: the whole program a reader needs.
func broadcastReader(name: String) async throws(InterprocessError) {
    let config = try await SharedWatchedValue<BroadcastConfig>.openWhenCreated(name: name, type: BroadcastConfig.type, timeout: .seconds(60))
    for try await current in config.updates {
        say("config \(current.level)")
        if current.final { break }
    }
}

private func readChecked(kind: String, name: String, last: Int) throws(InterprocessError) {
    var previous = Int.min
    var reads = 0
    say("ready")
    if kind == "raw" {
        let segment = try SharedMemory.open(name: name)
        while previous != last {
            let bytes = try segment.readBytes() // `empty` would be a missing value: a failure
            let seed = bytes == Array("start".utf8) ? -1 : seed(ofChecked: bytes)
            guard let seed else { fail("torn value of \(bytes.count) bytes after seed \(previous)") }
            guard seed >= previous else { fail("seed \(seed) after \(previous)") }
            previous = seed
            reads += 1
            usleep(100) // not a busy loop: the test process runs beside it (2 CPUs)
        }
    } else {
        let value = try SharedWatchedValue<CheckedValue>.open(name: name, type: CheckedValue.type)
        var version: UInt64 = 0
        while previous != last {
            let snapshot = try value.blockingNext(after: version, timeout: .seconds(60))
            guard snapshot.value.isWhole else { fail("torn value at version \(snapshot.version)") }
            guard snapshot.version > version, snapshot.value.seed > previous else {
                fail("version \(snapshot.version) seed \(snapshot.value.seed) after version \(version) seed \(previous)")
            }
            version = snapshot.version
            previous = snapshot.value.seed
            reads += 1
        }
    }
    say("ok \(reads)")
}
