#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess

@Suite("NamedPipe", .serialized, .timeLimit(.minutes(3)))
struct NamedPipeTests {
    @Test func createOpenRemoveAndErrors() throws {
        try withLocalDirectory("fifo") { directory in
            let path = directory + "/a.fifo"
            try NamedPipe.create(path: path)
            #expect(NamedPipe.exists(path: path))
            #expect(fileMode(path)?.type == S_IFIFO)
            #expect(fileMode(path)?.permissions == 0o600)
            expectError(.alreadyExists) { try NamedPipe.create(path: path) }

            // No reader yet: the writer is told so at once, or times out waiting for one.
            expectError(.disconnected) { try NamedPipe.tryOpenForWriting(path: path) }
            expectError(.timedOut) { try NamedPipe.blockingOpenForWriting(path: path, timeout: .milliseconds(30)) }

            let reader = try NamedPipe.openForReading(path: path)
            #expect(try reader.tryRead() == nil) // no writer yet: nothing, not end of stream
            expectError(.timedOut) { try reader.blockingRead(timeout: .milliseconds(30)) }
            let writer = try NamedPipe.tryOpenForWriting(path: path)
            #expect(try writer.tryWrite(Array("abc".utf8)) == 3)
            try writer.blockingWrite(Array("def".utf8), timeout: .seconds(5))
            #expect(try reader.blockingRead(timeout: .seconds(5)) == Array("abcdef".utf8))
            expectError(.invalidArgument) { try writer.tryRead() }
            expectError(.invalidArgument) { try reader.tryWrite([1]) }
            writer.close()
            #expect(try reader.blockingRead(timeout: .seconds(5)) == []) // end of stream
            #expect(try reader.tryRead() == [])
            reader.close()
            expectError(.closed) { try reader.tryRead() }

            try NamedPipe.remove(path: path)
            expectError(.notFound) { try NamedPipe.remove(path: path) }
            expectError(.notFound) { try NamedPipe.openForReading(path: path) }
            // Only FIFOs are opened or removed.
            let file = directory + "/plain"
            close(open(file, O_CREAT | O_WRONLY, 0o600))
            expectError(.incompatible) { try NamedPipe.remove(path: file) }
            expectError(.incompatible) { try NamedPipe.openForReading(path: file) }
            unlink(file)
        }
    }

    @Test func namesLiveInTheRuntimeDirectory() throws {
        let name = TestNames.make("pipe")
        let path = try NamedPipe.create(name: name)
        defer { try? NamedPipe.remove(path: path) }
        #expect(path.hasSuffix("/" + name + ".fifo"))
        #expect(try NamedPipe.path(forName: name) == path)
        #expect(NamedPipe.exists(path: path))
        expectError(.invalidName) { try NamedPipe.create(name: "a/b") }
        expectError(.invalidName) { try NamedPipe.create(name: "") }
    }

    @Test func bytesFlowFromAnotherProcessUntilItCloses() throws {
        try withLocalDirectory("fifo2") { directory in
            let path = directory + "/b.fifo"
            try NamedPipe.create(path: path)
            defer { try? NamedPipe.remove(path: path) }
            let reader = try NamedPipe.openForReading(path: path)
            defer { reader.close() }
            let writer = try Peer.spawn("local-pipe-write", path, "hello")
            defer { writer.stop() }
            #expect(writer.readLine() == "open")
            writer.tell()
            #expect(writer.readLine() == "wrote")
            #expect(try reader.blockingRead(timeout: .seconds(20)) == Array("hello".utf8))
            writer.closePipes() // the child's input ends: it exits, closing its end
            #expect(writer.wait(timeout: .seconds(20)) == .exited(0))
            #expect(try reader.blockingRead(timeout: .seconds(20)) == [])
        }
    }

    @Test func aWriterWhoseReaderDiedGetsAnErrorInsteadOfDying() throws {
        try withLocalDirectory("fifo3") { directory in
            let path = directory + "/c.fifo"
            try NamedPipe.create(path: path)
            defer { try? NamedPipe.remove(path: path) }

            // Nobody reads: a clear error at open.
            let early = try Peer.run("local-pipe-try-open", path)
            #expect(early.termination == .exited(0))
            #expect(early.output == "error disconnected\n")

            let reader = try Peer.spawn("local-pipe-read", path)
            defer { reader.stop() }
            #expect(reader.readLine() == "open")
            let writer = try Peer.spawn("local-pipe-write", path, "x")
            defer { writer.stop() }
            #expect(writer.readLine() == "open")
            writer.tell()
            #expect(writer.readLine() == "wrote")
            #expect(reader.readLine() == "got x")
            reader.kill(signal: SIGKILL)
            #expect(reader.wait(timeout: .seconds(20)) == .signaled(SIGKILL))
            writer.tell()
            #expect(writer.readLine() == "error disconnected")
            #expect(writer.wait(timeout: .seconds(20)) == .exited(0)) // not killed by SIGPIPE

            // The same in this process: an error, and this process lives on.
            let ownReader = try NamedPipe.openForReading(path: path)
            let ownWriter = try NamedPipe.tryOpenForWriting(path: path)
            ownReader.close()
            expectError(.disconnected) { try ownWriter.blockingWrite([1, 2, 3]) }
            expectError(.disconnected) { try ownWriter.tryWrite([1]) }
            ownWriter.close()
        }
    }

    @Test func asyncReadsAndWritesParkNoThreadAndHonourCancellation() async throws {
        try await withLocalDirectory("fifo4") { directory in
            let path = directory + "/d.fifo"
            try NamedPipe.create(path: path)
            defer { try? NamedPipe.remove(path: path) }
            let reader = try NamedPipe.openForReading(path: path)
            defer { reader.close() }

            let cancelled = Task { try await reader.read() }
            cancelled.cancel()
            await #expect(throws: InterprocessError.self) { try await cancelled.value }
            do {
                _ = try await reader.read(timeout: .milliseconds(30))
                Issue.record("read without a writer returned")
            } catch let error as InterprocessError {
                #expect(error.code == .timedOut)
            }

            let writer = try Peer.spawn("local-pipe-write", path, "async")
            defer { writer.stop() }
            #expect(writer.readLine() == "open")
            let reading = Task { try await reader.read(timeout: .seconds(20)) }
            writer.tell()
            #expect(try await reading.value == Array("async".utf8))

            // Async open and write in this process, to our own reader.
            let ownWriter = try await NamedPipe.openForWriting(path: path, timeout: .seconds(5))
            try await ownWriter.write(Array("own".utf8))
            #expect(try await reader.read(timeout: .seconds(5)) == Array("own".utf8))
            ownWriter.close()
        }
    }
}
