#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

@Suite("SharedObjectName", .timeLimit(.minutes(2)))
struct SharedObjectNameTests {
    @Test func uniqueNamesAreShortFixedAndValid() throws {
        let name = SharedObjectName.unique(prefix: "jobs")
        #expect(name.description.hasPrefix("jobs_"))
        #expect(name.description.utf8.count == 25)
        #expect(name.description.utf8.count <= SharedObjectName.maximumLength)
        #expect(MemoryLayout<SharedObjectName>.size == SharedObjectName.rawSize)
        let long = SharedObjectName.unique(prefix: "averyveryverylongprefix")
        #expect(long.description.utf8.count <= 30, "1 slash + 30 bytes fits macOS's 31")
        #expect(SharedObjectName.unique(prefix: "bad/prefix").description.hasPrefix("ipc_"))
        // Usable as a segment name.
        let segment = try SharedMemory.create(name: name, size: 16)
        #expect(try SharedMemory.open(name: name).size == 16)
        segment.close()
    }

    @Test func conversionsRoundTrip() throws {
        let name = SharedObjectName.unique()
        #expect(SharedObjectName(name.description) == name)
        #expect(SharedObjectName(rawBytes: name.rawBytes) == name)
        name.withRawBytes { #expect(Array($0) == name.rawBytes) }
        let json = try JSONEncoder().encode([name])
        #expect(String(decoding: json, as: UTF8.self) == "[\"\(name)\"]")
        #expect(try JSONDecoder().decode([SharedObjectName].self, from: json) == [name])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([SharedObjectName].self, from: Data("[\"a/b\"]".utf8)) }
        #expect("\(name)" == name.description)
        #expect(name.debugDescription.contains(name.description))
    }

    @Test func invalidNamesAndRawFormsAreRejected() {
        #expect(SharedObjectName("") == nil)
        #expect(SharedObjectName("a/b") == nil)
        #expect(SharedObjectName("a\0b") == nil)
        #expect(SharedObjectName(String(repeating: "x", count: 31)) == nil)
        #expect(SharedObjectName(String(repeating: "x", count: 30)) != nil)
        var raw = SharedObjectName("abc")!.rawBytes
        #expect(SharedObjectName(rawBytes: raw.dropLast()) == nil, "wrong size")
        raw[0] = 0
        #expect(SharedObjectName(rawBytes: raw) == nil, "zero length")
        raw[0] = 31
        #expect(SharedObjectName(rawBytes: raw) == nil, "length too big")
        raw[0] = 2
        #expect(SharedObjectName(rawBytes: raw) == nil, "garbage after the length")
        raw = SharedObjectName("abc")!.rawBytes
        raw[2] = UInt8(ascii: "/")
        #expect(SharedObjectName(rawBytes: raw) == nil, "slash inside")
        raw = SharedObjectName("abc")!.rawBytes
        raw[2] = 0xff
        #expect(SharedObjectName(rawBytes: raw) == nil, "not UTF-8")
    }

    @Test func orderingAndHashing() {
        let a = SharedObjectName("a")!, b = SharedObjectName("b")!, ab = SharedObjectName("ab")!
        #expect(a < ab && ab < b)
        #expect([b, ab, a].sorted() == [a, ab, b])
        #expect(Set([a, b, SharedObjectName("a")!]).count == 2)
    }

    @Test(.timeLimit(.minutes(1)))
    func hundredThousandNamesFromFourProcessesAreAllDistinct() throws {
        let start = Clock.monotonicNanoseconds() + 200_000_000
        let children = try (0..<4).map { _ in
            try ChildProcess.spawn(Peer.path, ["unique-names", "25000", "\(start)"], standardOutput: .pipe)
        }
        var all = Set<String>()
        for child in children {
            let lines = try #require(child.readToEnd()).split(separator: "\n").map(String.init)
            #expect(child.wait(timeout: .seconds(30)) == .exited(0))
            try? child.standardOutput?.close()
            #expect(lines.count == 25000)
            for line in lines {
                #expect(SharedObjectName(line) != nil)
                all.insert(line)
            }
        }
        #expect(all.count == 100_000)
    }

    @Test func aNameSentThroughAPipeOpensThePeersSegment() throws {
        let child = try Peer.spawn("send-name")
        defer { child.stop() }
        let raw = try #require(child.readBytes(SharedObjectName.rawSize))
        let name = try #require(SharedObjectName(rawBytes: raw))
        let segment = try SharedMemory.open(name: name)
        #expect(try segment.readString() == "payload for \(name)")
        try segment.write("ack")
        #expect(child.wait(timeout: .seconds(20)) == .exited(0))
        segment.close()
        #expect(!SharedMemory.exists(name: name.description))
    }
}
