// Commands for the local IPC tests (file locks, named pipes, local sockets, anonymous segments,
// single instance). This file imports Interprocess only (not InterprocessSystem), so that
// `FileLock` means the public type.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import SystemPackage

/// Runs one `local-…` command; returns the exit status (0 success, 1 failure, 2 usage, 4 timed out).
func runLocalCommand(_ command: String, _ rest: [String]) -> Int32 {
    do {
        switch command {
        case "local-lock-hold": try lockHold(path: rest[0], mode: rest[1])
        case "local-lock-try": try lockTry(path: rest[0], mode: rest[1])
        case "local-pipe-write": try pipeWrite(path: rest[0], text: rest[1])
        case "local-pipe-try-open": try pipeTryOpen(path: rest[0])
        case "local-pipe-read": try pipeRead(path: rest[0])
        case "local-serve": try serve(path: rest[0])
        case "local-connect": try connect(path: rest[0])
        case "local-dgram": try datagram(path: rest[0])
        case "local-segment-receive": try segmentReceive(path: rest[0])
        case "local-segment-send": try segmentSend(path: rest[0])
        case "local-single": try singleInstance(name: rest[0], tag: rest[1], start: UInt64(rest[2])!)
        default: return 2
        }
        return 0
    } catch let error as InterprocessError {
        say("error \(error.code)")
        if error.code == .timedOut { return 4 }
        warn("child: \(error)")
        return 1
    } catch {
        warn("child: \(error)")
        return 1
    }
}

private func mode(_ text: String) -> FileLock.Mode { text == "shared" ? .shared : .exclusive }

/// local-lock-hold PATH MODE: take the lock, say "locked", hold it until told (at most 60 s),
/// release it, say "unlocked", linger until told again.
private func lockHold(path: String, mode text: String) throws {
    let lock = try FileLock(path: path)
    try lock.blockingLock(mode(text))
    say("locked")
    awaitInstruction(upTo: 60)
    lock.unlock()
    say("unlocked")
    awaitInstruction(upTo: 60)
    lock.close()
}

/// local-lock-try PATH MODE: say "yes" if the lock could be taken at once, else "no".
private func lockTry(path: String, mode text: String) throws {
    let lock = try FileLock(path: path)
    say(try lock.tryLock(mode(text)) ? "yes" : "no")
    lock.close()
}

/// local-pipe-write PATH TEXT: open the FIFO for writing (waiting ≤ 20 s for a reader), say "open";
/// then, for each line the test sends, write TEXT and say "wrote" — until a write fails: then say
/// "error CODE" and exit 0 (alive: no SIGPIPE killed us). Ends when the test closes our input.
private func pipeWrite(path: String, text: String) throws {
    let pipe = try NamedPipe.blockingOpenForWriting(path: path, timeout: .seconds(20))
    say("open")
    while awaitInstruction(upTo: 60) != nil {
        do {
            try pipe.blockingWrite(Array(text.utf8), timeout: .seconds(20))
            say("wrote")
        } catch {
            say("error \(error.code)")
            return
        }
    }
}

/// local-pipe-try-open PATH: say "opened" or "error CODE".
private func pipeTryOpen(path: String) throws {
    do {
        _ = try NamedPipe.tryOpenForWriting(path: path)
        say("opened")
    } catch {
        say("error \(error.code)")
    }
}

/// local-pipe-read PATH: open the FIFO for reading, say "open", then say "got TEXT" for each read
/// and "eof" at end of stream.
private func pipeRead(path: String) throws {
    let pipe = try NamedPipe.openForReading(path: path)
    say("open")
    while true {
        let bytes = try pipe.blockingRead(timeout: .seconds(60))
        if bytes.isEmpty { break }
        say("got " + String(decoding: bytes, as: UTF8.self))
    }
    say("eof")
}

/// local-serve PATH: listen at PATH, say "listening"; accept one connection (≤ 30 s), say
/// "accepted PID UID"; then for each message say "got TEXT" and answer "echo TEXT" — a message
/// "pipe" comes with a pipe's writing end, into which it writes "via descriptor" — until the peer
/// hangs up ("peer gone").
private func serve(path: String) throws {
    let listener = try LocalSocketListener.listen(path: path)
    defer { listener.close() }
    say("listening")
    let connection = try listener.blockingAccept(timeout: .seconds(30))
    say("accepted \(connection.peer.pid) \(connection.peer.uid)")
    while true {
        let received = Result { () throws(InterprocessError) -> LocalMessage in try connection.blockingReceive(timeout: .seconds(30)) }
        if case .failure(let error) = received, error.code == .disconnected {
            say("peer gone")
            return
        }
        let message = try received.get()
        let text = message.string ?? "?"
        if text == "pipe", let fd = message.descriptors.first {
            let bytes = Array("via descriptor".utf8)
            _ = bytes.withUnsafeBytes { write(fd.rawValue, $0.baseAddress, $0.count) }
        }
        message.closeDescriptors()
        say("got \(text)")
        try connection.blockingSend(Array("echo \(text)".utf8), timeout: .seconds(20))
    }
}

/// local-connect PATH: connect (≤ 20 s), say "connected PID UID" (the server's, from the kernel),
/// send "hello from PID", say "reply TEXT" for the answer, then wait until told (≤ 60 s).
private func connect(path: String) throws {
    let socket = try LocalSocket.blockingConnect(path: path, timeout: .seconds(20))
    say("connected \(socket.peer.pid) \(socket.peer.uid)")
    try socket.blockingSend(Array("hello from \(getpid())".utf8), timeout: .seconds(20))
    let reply = try socket.blockingReceive(timeout: .seconds(20))
    say("reply \(reply.string ?? "?")")
    awaitInstruction(upTo: 60)
    socket.close()
}

/// local-dgram PATH: send the datagram "ping from PID" to the socket bound at PATH, say "sent",
/// then say "reply TEXT PID" for the answer (the answering process's pid, from the kernel).
private func datagram(path: String) throws {
    let socket = try LocalDatagramSocket.connect(path: path)
    try socket.blockingSend(Array("ping from \(getpid())".utf8), timeout: .seconds(20))
    say("sent")
    let reply = try socket.blockingReceive(timeout: .seconds(20))
    say("reply \(reply.string ?? "?") \(reply.sender?.pid ?? -1)")
    socket.close()
}

/// local-segment-receive PATH: connect, receive a segment's descriptor; say "fd LINK" (what
/// /proc/self/fd shows for it), "shrink ERRNO" and "grow ERRNO" (what ftruncate to a smaller and a
/// bigger size did: "ok" or the errno), adopt it, say "read TEXT" (its string), write "from child"
/// into it, say "wrote", wait until told.
private func segmentReceive(path: String) throws {
    let socket = try LocalSocket.blockingConnect(path: path, timeout: .seconds(20))
    let message = try socket.blockingReceive(timeout: .seconds(20))
    guard let fd = message.descriptors.first else { throw InterprocessError(.corrupt, detail: "no descriptor") }
    var link = [CChar](repeating: 0, count: 256)
    let n = readlink("/proc/self/fd/\(fd.rawValue)", &link, 255)
    say("fd " + String(decoding: link.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
    var st = stat()
    fstat(fd.rawValue, &st)
    say("shrink " + (ftruncate(fd.rawValue, st.st_size - 4096) == 0 ? "ok" : errnoName(errno)))
    say("grow " + (ftruncate(fd.rawValue, st.st_size + 4096) == 0 ? "ok" : errnoName(errno)))
    let segment = try SharedMemory.adopt(fd)
    say("read \(try segment.readString())")
    try segment.write("from child")
    say("wrote")
    awaitInstruction(upTo: 60)
    segment.close()
    socket.close()
}

/// local-segment-send PATH: connect, create an anonymous segment holding "from child", send it, say
/// "sent"; when told, say "read TEXT" (what the segment holds then).
private func segmentSend(path: String) throws {
    let socket = try LocalSocket.blockingConnect(path: path, timeout: .seconds(20))
    let segment = try SharedMemory.anonymous(size: 8192)
    try segment.write("from child")
    try socket.blockingSend(segment, timeout: .seconds(20))
    say("sent")
    awaitInstruction(upTo: 60)
    say("read \(try segment.readString())")
    segment.close()
    socket.close()
}

/// local-single NAME TAG START_NS: at the start line, acquire the single instance NAME with the
/// arguments ["launch", TAG]. Secondary: say "secondary PRIMARY_PID" and exit 0. Primary: say
/// "primary", then "launch ARGS… PID" for every later launch, until told; then close.
private func singleInstance(name: String, tag: String, start: UInt64) throws {
    waitUntil(start)
    switch try SingleInstance.blockingAcquire(name: name, arguments: ["launch", tag], timeout: .seconds(30)) {
    case .secondary(let primary):
        say("secondary \(primary.pid)")
    case .primary(let instance):
        say("primary")
        let printer = Task.detached {
            for await launch in instance.launches {
                say((launch.arguments + ["\(launch.process.pid)"]).joined(separator: " "))
            }
        }
        awaitInstruction(upTo: 120)
        instance.close()
        _ = printer
    }
}

private func errnoName(_ code: Int32) -> String {
    switch code {
    case EPERM: "EPERM"
    case EINVAL: "EINVAL"
    case EACCES: "EACCES"
    default: "errno \(code)"
    }
}

/// Writes a line to standard error.
func warn(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
