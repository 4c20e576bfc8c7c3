#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import SystemPackage

@Suite("LocalSocket", .serialized, .timeLimit(.minutes(3)))
struct LocalSocketTests {
    @Test func aRoundTripWithAnotherProcessAndCredentialsOnBothSides() throws {
        try withLocalDirectory("sock") { directory in
            let path = directory + "/a.sock"
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            let child = try Peer.spawn("local-connect", path)
            defer { child.stop() }
            let connection = try listener.blockingAccept(timeout: .seconds(20))
            defer { connection.close() }
            // Each side knows the other from the kernel.
            #expect(connection.peer.pid == child.pid)
            #expect(connection.peer.uid == getuid())
            #expect(connection.peer.gid == getgid())
            #expect(child.readLine() == "connected \(getpid()) \(getuid())")
            let message = try connection.blockingReceive(timeout: .seconds(20))
            #expect(message.string == "hello from \(child.pid)")
            #expect(message.sender == connection.peer)
            #expect(message.descriptors.isEmpty)
            try connection.blockingSend(Array("hi".utf8), timeout: .seconds(20))
            #expect(child.readLine() == "reply hi")
            child.tell()
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            // The child closed: receives say so.
            expectError(.disconnected) { try connection.blockingReceive(timeout: .seconds(20)) }
            expectError(.disconnected) { try connection.blockingReceive(timeout: .seconds(20)) }
        }
    }

    @Test func theSocketFileIsOwnerOnlyAndRemovedOnClose() throws {
        try withLocalDirectory("sock2") { directory in
            let path = directory + "/b.sock"
            let listener = try LocalSocketListener.listen(path: path)
            #expect(fileMode(path)?.type == S_IFSOCK)
            #expect(fileMode(path)?.permissions == 0o600)
            #expect(fileMode(path + ".lock")?.permissions == 0o600)
            #expect(directoryEntries(directory) == ["b.sock", "b.sock.lock"])
            expectError(.alreadyExists) { try LocalSocketListener.listen(path: path) }
            listener.close()
            #expect(directoryEntries(directory).isEmpty)
            expectError(.notFound) { try LocalSocket.tryConnect(path: path) }
            expectError(.closed) { try listener.tryAccept() }

            // Names live in the runtime directory.
            let name = TestNames.make("named")
            let named = try LocalSocketListener.listen(name: name)
            #expect(named.path == (try LocalSocketListener.path(forName: name)))
            #expect(named.path.hasSuffix("/\(name).sock"))
            let client = try LocalSocket.blockingConnect(name: name, timeout: .seconds(5))
            let server = try named.blockingAccept(timeout: .seconds(5))
            try client.blockingSend(Array("x".utf8))
            #expect(try server.blockingReceive(timeout: .seconds(5)).bytes == Array("x".utf8))
            client.close()
            server.close()
            named.close()
            #expect(fileMode(named.path) == nil)

            let tooLong = directory + "/" + String(repeating: "n", count: 120)
            expectError(.invalidName) { try LocalSocketListener.listen(path: tooLong) }
        }
    }

    @Test func aLiveServersSocketFileIsNeverReplaced() throws {
        try withLocalDirectory("sock3") { directory in
            let path = directory + "/c.sock"
            let server = try Peer.spawn("local-serve", path)
            defer { server.stop() }
            #expect(server.readLine() == "listening")
            let before = fileIdentity(path)
            expectError(.alreadyExists) { try LocalSocketListener.listen(path: path) }
            expectError(.alreadyExists) { try LocalDatagramSocket.bind(path: path) }
            #expect(fileIdentity(path) == before)
            // The live server still serves.
            let socket = try LocalSocket.blockingConnect(path: path, timeout: .seconds(20))
            #expect(server.readLine() == "accepted \(getpid()) \(getuid())")
            #expect(socket.peer.pid == server.pid)
            try socket.blockingSend(Array("still there".utf8), timeout: .seconds(20))
            #expect(server.readLine() == "got still there")
            #expect(try socket.blockingReceive(timeout: .seconds(20)).string == "echo still there")
            socket.close()
            #expect(server.readLine() == "peer gone")
            #expect(server.wait(timeout: .seconds(20)) == .exited(0))
            #expect(directoryEntries(directory).isEmpty) // the server removed its files

            // Nor is anything that is not a socket.
            let file = directory + "/plain"
            close(open(file, O_CREAT | O_WRONLY, 0o600))
            expectError(.alreadyExists) { try LocalSocketListener.listen(path: file) }
            #expect(fileMode(file)?.type == S_IFREG)
            unlink(file)
        }
    }

    @Test func aStaleSocketFileLeftByAKilledServerIsReplaced() throws {
        try withLocalDirectory("sock4") { directory in
            let path = directory + "/d.sock"
            let server = try Peer.spawn("local-serve", path)
            defer { server.stop() }
            #expect(server.readLine() == "listening")
            server.kill(signal: SIGKILL)
            #expect(server.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            // Its files are left, and nobody answers.
            #expect(fileMode(path)?.type == S_IFSOCK)
            expectError(.connectionRefused) { try LocalSocket.tryConnect(path: path) }
            // No "try again": the next server takes the path at once.
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            let client = try LocalSocket.tryConnect(path: path)
            let connection = try listener.blockingAccept(timeout: .seconds(20))
            try client.blockingSend([1, 2, 3])
            #expect(try connection.blockingReceive(timeout: .seconds(20)).bytes == [1, 2, 3])
            client.close()
            connection.close()
            listener.close()
            #expect(directoryEntries(directory).isEmpty)
        }
    }

    @Test func descriptorsTravelWithMessagesToAnotherProcess() throws {
        try withLocalDirectory("sock5") { directory in
            let path = directory + "/e.sock"
            let server = try Peer.spawn("local-serve", path)
            defer { server.stop() }
            #expect(server.readLine() == "listening")
            let socket = try LocalSocket.blockingConnect(path: path, timeout: .seconds(20))
            defer { socket.close() }
            #expect(server.readLine()?.hasPrefix("accepted") == true)
            var fds: [Int32] = [-1, -1]
            #expect(pipe(&fds) == 0)
            defer { close(fds[0]) }
            try socket.blockingSend(Array("pipe".utf8), descriptors: [FileDescriptor(rawValue: fds[1])], timeout: .seconds(20))
            close(fds[1]) // the child has its own descriptor for the writing end now
            #expect(server.readLine() == "got pipe")
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = read(fds[0], &buffer, 64)
            #expect(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self) == "via descriptor")
            // The child closed its copy after writing: end of file.
            #expect(read(fds[0], &buffer, 64) == 0)
            #expect(try socket.blockingReceive(timeout: .seconds(20)).string == "echo pipe")
            socket.close()
            #expect(server.readLine() == "peer gone")
            #expect(server.wait(timeout: .seconds(20)) == .exited(0))
        }
    }

    @Test func framingDescriptorsAndLimitsWithinOneProcess() throws {
        let (a, b) = try LocalSocket.pair()
        defer { a.close(); b.close() }
        #expect(a.peer.pid == getpid())
        #expect(try b.tryReceive() == nil)
        expectError(.timedOut) { try b.blockingReceive(timeout: .milliseconds(20)) }
        // Many messages, empty ones, and one bigger than the socket buffers, in order.
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let sender = Thread {
            for index in 0..<100 { try? a.blockingSend(Array("m\(index)".utf8)) }
            try? a.blockingSend([])
            try? a.blockingSend(big)
        }
        for index in 0..<100 { #expect(try b.blockingReceive(timeout: .seconds(20)).string == "m\(index)") }
        #expect(try b.blockingReceive(timeout: .seconds(20)).bytes.isEmpty)
        #expect(try b.blockingReceive(timeout: .seconds(20)).bytes == big)
        sender.join()

        // Three descriptors in one message, each usable on the other side.
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            var fds: [Int32] = [-1, -1]
            #expect(pipe(&fds) == 0)
            pipes.append(fds)
        }
        try a.blockingSend(Array("three".utf8), descriptors: pipes.map { FileDescriptor(rawValue: $0[1]) })
        let message = try b.blockingReceive(timeout: .seconds(20))
        #expect(message.descriptors.count == 3)
        for (index, fd) in message.descriptors.enumerated() {
            var byte = UInt8(index)
            #expect(write(fd.rawValue, &byte, 1) == 1)
            var back: UInt8 = 99
            #expect(read(pipes[index][0], &back, 1) == 1)
            #expect(back == UInt8(index))
        }
        message.closeDescriptors()
        for fds in pipes { close(fds[0]); close(fds[1]) }

        // Queued together, descriptors stay with their own message (one read may return several).
        for round in 0..<20 {
            var fds: [Int32] = [-1, -1]
            #expect(pipe(&fds) == 0)
            try a.blockingSend(Array("before \(round)".utf8))
            try a.blockingSend(Array("with \(round)".utf8), descriptors: [FileDescriptor(rawValue: fds[1])])
            try a.blockingSend(Array("after \(round)".utf8))
            let before = try b.blockingReceive(timeout: .seconds(5))
            let with = try b.blockingReceive(timeout: .seconds(5))
            let after = try b.blockingReceive(timeout: .seconds(5))
            #expect(before.string == "before \(round)" && before.descriptors.isEmpty)
            #expect(with.string == "with \(round)" && with.descriptors.count == 1)
            #expect(after.string == "after \(round)" && after.descriptors.isEmpty)
            with.closeDescriptors()
            close(fds[0]); close(fds[1])
        }

        // Big and small messages alternate, with and without descriptors (a big one is read
        // straight into its own array; the header after it alone).
        let sizes = [100_000, 3, 70_000, 0, 65_528, 65_529, 10]
        let alternating = Thread {
            for (index, size) in sizes.enumerated() {
                var fds: [Int32] = [-1, -1]
                _ = pipe(&fds)
                let payload = [UInt8](repeating: UInt8(index), count: size)
                try? a.blockingSend(payload, descriptors: index % 2 == 0 ? [FileDescriptor(rawValue: fds[1])] : [])
                close(fds[0]); close(fds[1])
            }
        }
        for (index, size) in sizes.enumerated() {
            let message = try b.blockingReceive(timeout: .seconds(20))
            #expect(message.bytes == [UInt8](repeating: UInt8(index), count: size), "message \(index)")
            #expect(message.descriptors.count == (index % 2 == 0 ? 1 : 0), "message \(index)")
            message.closeDescriptors()
        }
        alternating.join()

        // Limits: a message over the receiver's maximum breaks the connection for good.
        b.maximumMessageSize = 16
        #expect(try a.trySend(Array(repeating: 1, count: 17)))
        expectError(.invalidSize) { try b.blockingReceive(timeout: .seconds(20)) }
        expectError(.invalidSize) { try b.blockingReceive(timeout: .seconds(20)) }
        expectError(.invalidSize) { try a.blockingSend(Array(repeating: 0, count: 1), descriptors: Array(repeating: FileDescriptor(rawValue: 0), count: 65)) }
    }

    @Test func untimedCallsWaitInTheKernelAndEndWhenTheSocketCloses() throws {
        let (a, b) = try LocalSocket.pair()
        defer { a.close() }
        // A receive waiting in the kernel gets what another thread sends.
        let got = Box<String>()
        let receiver = Thread { got.value = (try? b.blockingReceive())?.string }
        try a.blockingSend(Array("wake".utf8))
        receiver.join()
        #expect(got.value == "wake")
        // One waiting when its socket is closed (before or after it started waiting) ends `closed`.
        let code = Box<InterprocessError.Code>()
        let blocked = Thread {
            do { _ = try b.blockingReceive() } catch let error as InterprocessError { code.value = error.code } catch {}
        }
        b.close()
        blocked.join()
        #expect(code.value == .closed)

        let (c, d) = try LocalDatagramSocket.pair()
        defer { c.close() }
        let datagramCode = Box<InterprocessError.Code>()
        let datagramReceiver = Thread {
            do { _ = try d.blockingReceive() } catch let error as InterprocessError { datagramCode.value = error.code } catch {}
        }
        d.close()
        datagramReceiver.join()
        #expect(datagramCode.value == .closed)
    }

    @Test func aPeerThatSendsGarbageCannotConfuseTheReceiver() throws {
        try withLocalDirectory("sock6") { directory in
            let path = directory + "/f.sock"
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            // A raw client: a header that is not ours.
            let raw = try rawConnect(path)
            let connection = try listener.blockingAccept(timeout: .seconds(20))
            var garbage: [UInt8] = [5, 0, 0, 0, 0, 0, 9, 0, 1, 2, 3, 4, 5]
            #expect(write(raw, &garbage, garbage.count) == garbage.count)
            expectError(.corrupt) { try connection.blockingReceive(timeout: .seconds(20)) }
            close(raw)
            connection.close()

            // A length beyond the maximum: refused before anything is allocated.
            let raw2 = try rawConnect(path)
            let connection2 = try listener.blockingAccept(timeout: .seconds(20))
            var huge: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 1, 0]
            #expect(write(raw2, &huge, huge.count) == huge.count)
            expectError(.invalidSize) { try connection2.blockingReceive(timeout: .seconds(20)) }
            close(raw2)
            connection2.close()

            // A peer that hangs up in the middle of a message.
            let raw3 = try rawConnect(path)
            let connection3 = try listener.blockingAccept(timeout: .seconds(20))
            var half: [UInt8] = [10, 0, 0, 0, 0, 0, 1, 0, 1, 2]
            #expect(write(raw3, &half, half.count) == half.count)
            close(raw3)
            expectError(.disconnected) { try connection3.blockingReceive(timeout: .seconds(20)) }
            connection3.close()
        }
    }

    @Test func datagramsCarryTheSendersCredentialsAndCanBeAnswered() throws {
        try withLocalDirectory("sock7") { directory in
            let path = directory + "/g.sock"
            let server = try LocalDatagramSocket.bind(path: path)
            defer { server.close() }
            #expect(fileMode(path)?.permissions == 0o600)
            #expect(server.address?.path == path)
            let child = try Peer.spawn("local-dgram", path)
            defer { child.stop() }
            #expect(child.readLine() == "sent")
            let message = try server.blockingReceive(timeout: .seconds(20))
            #expect(message.string == "ping from \(child.pid)")
            #expect(message.sender == PeerCredentials(pid: child.pid, uid: getuid(), gid: getgid()))
            let address = try #require(message.senderAddress)
            try server.blockingSend(Array("pong".utf8), to: address, timeout: .seconds(20))
            #expect(child.readLine() == "reply pong \(getpid())")
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
            // The child is gone: its address no longer takes datagrams.
            expectError(.disconnected) { try server.blockingSend(Array("late".utf8), to: address, timeout: .seconds(5)) }
            #expect(try server.tryReceive() == nil)

            // In one process: a pair, descriptors, and a stale file replaced.
            let (a, b) = try LocalDatagramSocket.pair()
            var fds: [Int32] = [-1, -1]
            #expect(pipe(&fds) == 0)
            #expect(try a.trySend(Array("fd".utf8), descriptors: [FileDescriptor(rawValue: fds[1])]))
            let withFD = try b.blockingReceive(timeout: .seconds(5))
            #expect(withFD.descriptors.count == 1)
            #expect(withFD.sender?.pid == getpid())
            withFD.closeDescriptors()
            close(fds[0]); close(fds[1])
            a.close(); b.close()
        }
    }

    @Test func asyncAcceptAndReceiveParkNoThreadAndHonourCancellation() async throws {
        try await withLocalDirectory("sock8") { directory in
            let path = directory + "/h.sock"
            let listener = try LocalSocketListener.listen(path: path)
            defer { listener.close() }
            let cancelled = Task { try await listener.accept() }
            cancelled.cancel()
            await #expect(throws: InterprocessError.self) { try await cancelled.value }
            do {
                _ = try await listener.accept(timeout: .milliseconds(20))
                Issue.record("accepted without a client")
            } catch let error as InterprocessError {
                #expect(error.code == .timedOut)
            }
            let accepting = Task { try await listener.accept(timeout: .seconds(20)) }
            let client = try await LocalSocket.connect(path: path, timeout: .seconds(20))
            let server = try await accepting.value
            let receiving = Task { try await server.receive(timeout: .seconds(20)) }
            try await client.send(Array("async".utf8))
            #expect(try await receiving.value.string == "async")
            // A receive waiting when its socket closes ends with `closed` (whether it was already
            // parked or not: both ways are `closed`).
            let waiting = Task { try await server.receive() }
            server.close()
            do {
                _ = try await waiting.value
                Issue.record("a receive on a closed socket returned")
            } catch let error as InterprocessError {
                #expect(error.code == .closed)
            }
            client.close()
        }
    }
}

/// A plain Unix stream socket connected to `path` (not an Interprocess socket), for hostile tests.
private func rawConnect(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
    }
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    #expect(rc == 0, "connect: errno \(errno)")
    return fd
}

/// The device and inode of what `path` names (not following links).
private func fileIdentity(_ path: String) -> [UInt64]? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return [UInt64(st.st_dev), UInt64(st.st_ino)]
}

/// A value set by one thread and read by another after a join.
private final class Box<Value>: @unchecked Sendable {
    // `@unchecked Sendable`: written by one thread before `Thread.join`, read after it.
    var value: Value?
}

/// A thread that runs `body` and can be joined.
private final class Thread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&handle, nil, { context in
            let thread = Unmanaged<Thread>.fromOpaque(context!).takeRetainedValue()
            thread.body()
            return nil
        }, context)
    }

    func join() { pthread_join(handle, nil) }
}
