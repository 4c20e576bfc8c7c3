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
    try lock.lock(mode(text))
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
    let pipe = try NamedPipe.openForWriting(path: path, timeout: .seconds(20))
    say("open")
    while awaitInstruction(upTo: 60) != nil {
        do {
            try pipe.write(Array(text.utf8), timeout: .seconds(20))
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
        let bytes = try pipe.read(timeout: .seconds(60))
        if bytes.isEmpty { break }
        say("got " + String(decoding: bytes, as: UTF8.self))
    }
    say("eof")
}

/// Writes a line to standard error.
func warn(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
