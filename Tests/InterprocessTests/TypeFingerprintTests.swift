#if canImport(Glibc)
import Glibc
#endif
import Testing
import CInterprocess
import Interprocess
import InterprocessSystem

/// Two value types of the same size and alignment: their bytes would fit each other's slot.
private struct Celsius: Equatable { var value: UInt64 }
private struct Fahrenheit: Equatable { var value: UInt64 }
/// A tick as a program in another language sees it.
private struct Tick: Equatable { var sequence: UInt64; var price: UInt64 }

/// Typed objects check their type (issue 11, point 3): the creator of a ``SharedVariable`` records a
/// ``TypeFingerprint`` (name, size, alignment, version) and every opener compares it with its own.
@Suite("Type fingerprints", .timeLimit(.minutes(2)))
struct TypeFingerprintTests {
    /// Where a named variable's fingerprint lies in its file: the payload, then the header's
    /// `value_type` field (offset 320 of `cipc_variable_header`).
    static let fingerprintOffset = SharedMemory.payloadOffset + 320

    @Test func sameSizeAnotherTypeIsIncompatible() throws {
        try withCleanNames("fpsize") { name in
            let celsius = try SharedVariable<Celsius>.create(name: name, initialValue: Celsius(value: 21))
            defer { celsius.close() }
            expectError(.incompatible) { try SharedVariable<Fahrenheit>.open(name: name) }
            expectError(.incompatible) { try SharedVariable<UInt64>.open(name: name) }
            expectError(.incompatible) { try SharedVariable<Fahrenheit>.openOrCreate(name: name) }
            let same = try SharedVariable<Celsius>.open(name: name)
            #expect(same.tryRead() == Celsius(value: 21))
            same.close()

            // Placed in a segment too.
            let segment = try SharedMemory.create(name: name + "-seg", size: 4096)
            defer { segment.close() }
            let placed = try SharedVariable<Int64>.create(in: segment, at: 0, initialValue: -1)
            expectError(.incompatible) { try SharedVariable<UInt64>.open(in: segment, at: 0) }
            #expect(try SharedVariable<Int64>.open(in: segment, at: 0).tryRead() == -1)
            _ = placed
        }
    }

    @Test func versionMismatchIsIncompatible() throws {
        try withCleanNames("fpver") { name in
            let v2 = TypeFingerprint(of: Celsius.self, version: 2)
            let variable = try SharedVariable<Celsius>.create(name: name, type: v2)
            defer { variable.close() }
            expectError(.incompatible) { try SharedVariable<Celsius>.open(name: name) } // version 0
            expectError(.incompatible) { try SharedVariable<Celsius>.open(name: name, type: TypeFingerprint(of: Celsius.self, version: 3)) }
            let (same, created) = try SharedVariable<Celsius>.openOrCreate(name: name, type: v2)
            #expect(!created)
            try variable.blockingPut(Celsius(value: 5))
            #expect(try same.blockingTake() == Celsius(value: 5))
            same.close()
        }
    }

    @Test func sameTypeOpensInAnotherProcess() throws {
        try withCleanNames("fpsame") { name in
            let variable = try SharedVariable<Int>.create(name: name)
            defer { variable.close() }
            // The child opens SharedVariable<Int> (the same fingerprint: "Swift.Int", 8, 8, 0).
            let taker = try Peer.spawn("var-take-n", name, "1")
            defer { taker.stop() }
            #expect(taker.readLine() == "ready")
            try variable.blockingPut(11, timeout: .seconds(10))
            #expect(taker.wait(timeout: .seconds(30)) == .exited(0))
        }
    }

    /// A program in another language states the fingerprint; the bytes in the file are exactly the
    /// documented `cipc_type_fingerprint` (README).
    @Test func anExplicitFingerprintIsRecordedAsDocumented() throws {
        try withCleanNames("fpexplicit") { name in
            let tick = TypeFingerprint(typeName: "feed.Tick", size: 16, alignment: 8, version: 7)
            let variable = try SharedVariable<Tick>.create(name: name, initialValue: Tick(sequence: 1, price: 99), type: tick)
            defer { variable.close() }
            let bytes = peek(name, at: Self.fingerprintOffset, count: 128)
            func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
                T(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) })
            }
            #expect(load(0, UInt64.self) == fnv1a64(Array("feed.Tick".utf8)))
            #expect(load(8, UInt32.self) == 16 && load(12, UInt32.self) == 8 && load(16, UInt32.self) == 7)
            #expect(load(20, UInt32.self) == 9)
            #expect(Array(bytes[24..<33]) == Array("feed.Tick".utf8) && bytes[33...].allSatisfy { $0 == 0 })

            #expect(try SharedVariable<Tick>.open(name: name, type: tick).tryRead() == Tick(sequence: 1, price: 99))
            expectError(.incompatible) { try SharedVariable<Tick>.open(name: name) } // Swift's own name differs
            // A fingerprint that cannot describe the value type is refused before anything is opened.
            expectError(.invalidArgument) { try SharedVariable<Tick>.open(name: name, type: TypeFingerprint(typeName: "feed.Tick", size: 8, alignment: 8)) }
            expectError(.invalidArgument) { try SharedVariable<Tick>.open(name: name, type: TypeFingerprint(typeName: "", size: 16, alignment: 8)) }
            expectError(.invalidArgument) { try SharedVariable<Tick>.create(name: name + "-x", type: TypeFingerprint(typeName: "t", size: 16, alignment: 3)) }
        }
    }

    /// Names longer than the 104 bytes that are stored are told apart by their length and hash.
    @Test func longNamesAreComparedWhole() throws {
        try withCleanNames("fplong") { name in
            let stem = String(repeating: "LongModuleName.Namespace.", count: 8)
            let a = TypeFingerprint(typeName: stem + "A", size: 8, alignment: 8)
            let b = TypeFingerprint(typeName: stem + "B", size: 8, alignment: 8)
            let variable = try SharedVariable<UInt64>.create(name: name, type: a)
            defer { variable.close() }
            expectError(.incompatible) { try SharedVariable<UInt64>.open(name: name, type: b) }
            try SharedVariable<UInt64>.open(name: name, type: a).close()
            let description = try SharedMemory.info(name: name).details["valueType"] ?? ""
            #expect(description.hasPrefix(String((stem + "A").prefix(104)) + "…"), "\(description)")
        }
    }

    /// Private and local types get names without the per-process addresses Swift prints for them.
    @Test func privateTypesHaveStableNames() {
        struct Local { var x: Int }
        let fingerprints = [TypeFingerprint(of: Celsius.self), TypeFingerprint(of: Local.self)]
        for fingerprint in fingerprints {
            #expect(fingerprint.typeName.contains("(unknown context)") && !fingerprint.typeName.contains("$"), "\(fingerprint)")
        }
        #expect(fingerprints[0].typeName.hasSuffix(".Celsius") && fingerprints[1].typeName.hasSuffix(".Local"))
        #expect(TypeFingerprint(of: UInt64.self) == TypeFingerprint(typeName: "Swift.UInt64", size: 8, alignment: 8, version: 0))
        #expect(TypeFingerprint(of: (UInt32, UInt32).self).typeName == "(Swift.UInt32, Swift.UInt32)")
    }

    /// Whatever a peer writes into the fingerprint, opening is `corrupt` or `incompatible`, and
    /// `ipc inspect` describes it — never a crash, never an open.
    @Test func aGarbageFingerprintIsRefused() throws {
        try withCleanNames("fpgarbage") { name in
            let variable = try SharedVariable<UInt64>.create(name: name)
            defer { variable.close() }
            let original = peek(name, at: Self.fingerprintOffset, count: 128)
            func withFingerprint(_ edit: (inout [UInt8]) -> Void, expect codes: Set<String>) {
                var bytes = original
                edit(&bytes)
                scribble(name, at: Self.fingerprintOffset, bytes)
                do {
                    try SharedVariable<UInt64>.open(name: name).close()
                    Issue.record("a damaged fingerprint opened")
                } catch {
                    #expect(codes.contains(error.code.description), "\(error)")
                }
                _ = try? SharedMemory.info(name: name)
            }
            func put32(_ value: UInt32, at offset: Int) -> (inout [UInt8]) -> Void {
                { bytes in withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<(offset + 4), with: $0) } }
            }
            withFingerprint(put32(0xFFFF_FFFF, at: 20), expect: ["corrupt"])                  // name length
            withFingerprint(put32(0, at: 20), expect: ["corrupt"])                            // no name
            withFingerprint(put32(3, at: 12), expect: ["corrupt"])                            // alignment
            withFingerprint({ $0[0] ^= 1 }, expect: ["corrupt"])                              // name hash
            withFingerprint({ $0[127] = 7 }, expect: ["corrupt"])                             // padding
            withFingerprint(put32(2, at: 16), expect: ["incompatible"])                       // version
            withFingerprint(put32(4, at: 8), expect: ["incompatible"])                        // size
            withFingerprint({ bytes in                                                          // another name, consistent
                let other = Array("Swift.Int64".utf8)
                bytes.replaceSubrange(24..<128, with: other + [UInt8](repeating: 0, count: 104 - other.count))
                withUnsafeBytes(of: fnv1a64(other).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
                withUnsafeBytes(of: UInt32(other.count).littleEndian) { bytes.replaceSubrange(20..<24, with: $0) }
            }, expect: ["incompatible"])
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<200 {
                withFingerprint({ bytes in
                    for _ in 0..<Int.random(in: 1...8, using: &generator) {
                        bytes[Int.random(in: 0..<128, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                    }
                    if bytes == original { bytes[0] ^= 0x80 }
                }, expect: ["corrupt", "incompatible"])
            }
            scribble(name, at: Self.fingerprintOffset, original)
            try SharedVariable<UInt64>.open(name: name).close()
        }
    }
}

extension TypeFingerprintTests {
    /// A variable of the layout before fingerprints (tag "VAR1") is refused as an older layout, not
    /// misread; `ipc inspect` still describes the segment.
    @Test func aVariableOfTheOlderLayoutIsIncompatible() throws {
        try withCleanNames("fpold") { name in
            let variable = try SharedVariable<UInt64>.create(name: name)
            defer { variable.close() }
            scribble(name, at: SharedMemory.payloadOffset + 20, Array("VAR1".utf8))
            do {
                try SharedVariable<UInt64>.open(name: name).close()
                Issue.record("a VAR1 variable opened")
            } catch let error as InterprocessError {
                #expect(error.code == .incompatible && error.detail.contains("older layout"), "\(error)")
            }
            #expect(try SharedMemory.info(name: name).kind == "variable")
        }
    }
}

extension TypeFingerprintTests {
    /// The rest of a variable's header is checked too: a value size, offset or slot count that no
    /// creator writes is `corrupt`.
    @Test func aDamagedVariableHeaderIsCorrupt() throws {
        try withCleanNames("fphdr") { name in
            let variable = try SharedVariable<UInt64>.create(name: name, initialValue: 3)
            defer { variable.close() }
            let header = SharedMemory.payloadOffset
            for (field, garbage) in [
                (fieldOffset(\cipc_variable_header.value_size), UInt32(4)),
                (fieldOffset(\cipc_variable_header.value_alignment), UInt32(16)),
                (fieldOffset(\cipc_variable_header.value_offset), UInt32(0xFFFF_0000)),
                (fieldOffset(\cipc_variable_header.reader_capacity), UInt32(1 << 30)),
            ] {
                let original = peek(name, at: header + field, count: 4)
                scribble(name, at: header + field, withUnsafeBytes(of: garbage.littleEndian) { Array($0) })
                expectError(.corrupt) { try SharedVariable<UInt64>.open(name: name) }
                #expect(try SharedMemory.info(name: name).kind == "variable")
                scribble(name, at: header + field, original)
            }
            #expect(try SharedVariable<UInt64>.open(name: name).tryRead() == 3)
        }
    }
}

/// FNV-1a 64, written out here as a program in another language would.
private func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}
