#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import SystemPackage

@Suite("Anonymous segments", .serialized, .timeLimit(.minutes(3)))
struct AnonymousSegmentTests {
    @Test func anAnonymousSegmentHasTheSegmentAPIAndNoName() throws {
        let segment = try SharedMemory.anonymous(size: 10_000)
        #expect(segment.isAnonymous)
        #expect(segment.name.isEmpty)
        #expect(segment.size == 10_000)
        try segment.write("hello")
        #expect(try segment.readString() == "hello")
        try segment.store([1, 2, 3])
        #expect(try segment.load([Int].self) == [1, 2, 3])
        try segment.withUnsafeMutableBytes { $0[9_999] = 7 }
        #expect(try segment.withUnsafeBytes { $0[9_999] } == 7)
        // No name in any file system: /proc shows a memory file, deleted from the start.
        let fd = try segment.duplicateDescriptor()
        #expect(descriptorLink(fd.rawValue).hasPrefix("/memfd:"))
        // Sealed: nobody can shrink or grow it.
        #expect(ftruncate(fd.rawValue, 4096) == -1 && errno == EPERM)
        #expect(ftruncate(fd.rawValue, 1 << 20) == -1 && errno == EPERM)
        // A second handle on the same memory (as a receiver gets).
        let again = try SharedMemory.adopt(fd)
        #expect(try again.load([Int].self) == [1, 2, 3])
        #expect(try again.withUnsafeBytes { $0[9_999] } == 7)
        try again.write("changed")
        #expect(try segment.readString() == "changed")
        again.close()
        segment.close()
        expectError(.closed) { try segment.readString() }
        expectError(.invalidSize) { try SharedMemory.anonymous(size: 0) }

        try withCleanNames("anonnamed") { name in
            let named = try SharedMemory.create(name: name, size: 64)
            expectError(.invalidArgument) { try named.duplicateDescriptor() }
            named.close()
        }
    }

    @Test func onlySealedMemoryFilesAreAdopted() throws {
        // A regular file: a peer could truncate it under the mapping.
        let path = "/tmp/" + TestNames.make("anonfile")
        let file = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        #expect(file >= 0)
        unlink(path)
        #expect(ftruncate(file, 8192) == 0)
        expectError(.incompatible) { try SharedMemory.adopt(FileDescriptor(rawValue: file)) }
        #expect(fcntl(file, F_GETFD) == -1) // adopt closed it

        // A memory file without the shrink seal.
        let unsealed = try MemoryFile.create(label: "test")
        try unsealed.truncate(to: 8192)
        expectError(.incompatible) { try SharedMemory.adopt(unsealed) }

        // A sealed memory file that does not hold a segment.
        let foreign = try MemoryFile.create(label: "test")
        try foreign.truncate(to: 8192)
        try MemoryFile.addSeals(foreign, [.shrink])
        expectError(.incompatible) { try SharedMemory.adopt(foreign) }

        // A message that is not a segment hand-over.
        let (a, b) = try LocalSocket.pair()
        try a.blockingSend(Array("not a segment".utf8))
        expectError(.incompatible) { try b.blockingReceiveSegment(timeout: .seconds(5)) }
        #expect(try b.tryReceiveSegment() == nil)
        a.close(); b.close()
    }

    @Test func aSegmentPassedToAnotherProcessIsSharedAndCannotBeShrunk() throws {
        try withLocalDirectory("anon") { directory in
            let path = directory + "/seg.sock"
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            let child = try Peer.spawn("local-segment-receive", path)
            defer { child.stop() }
            let connection = try listener.blockingAccept(timeout: .seconds(20))
            defer { connection.close() }

            let segment = try SharedMemory.anonymous(size: 64 * 1024)
            defer { segment.close() }
            try segment.write("from parent")
            try connection.blockingSend(segment, timeout: .seconds(20))
            // Neither side has a name for it.
            #expect(child.readLine()?.hasPrefix("fd /memfd:") == true)
            // The peer's attempts to change its size fail: no SIGBUS for us, ever.
            #expect(child.readLine() == "shrink EPERM")
            #expect(child.readLine() == "grow EPERM")
            #expect(child.readLine() == "read from parent")
            #expect(child.readLine() == "wrote")
            #expect(try segment.readString() == "from child")
            #expect(segment.size == 64 * 1024)
            child.tell()
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            // The child is gone; the memory is still ours.
            try segment.write("after")
            #expect(try segment.readString() == "after")
        }
    }

    @Test func aSegmentReceivedFromAnotherProcessIsTheSameMemory() async throws {
        try await withLocalDirectory("anon2") { directory in
            let path = directory + "/seg.sock"
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            let child = try Peer.spawn("local-segment-send", path)
            defer { child.stop() }
            let connection = try await listener.accept(timeout: .seconds(20))
            defer { connection.close() }
            let segment = try await connection.receiveSegment(timeout: .seconds(20))
            defer { segment.close() }
            #expect(child.readLine() == "sent")
            #expect(segment.isAnonymous)
            #expect(try segment.readString() == "from child")
            try segment.write("from parent")
            child.tell()
            #expect(child.readLine() == "read from parent")
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
        }
    }
}

/// What /proc/self/fd shows for a descriptor.
private func descriptorLink(_ fd: Int32) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    let n = readlink("/proc/self/fd/\(fd)", &buffer, 255)
    return String(decoding: buffer.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
