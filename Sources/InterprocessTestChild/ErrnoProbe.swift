// The errno-probe command: one library call whose failure the tests provoke for real, in a setting
// only a child can have (another user, a small tmpfs in its own mount namespace, a low open-file
// limit). This file imports Interprocess only (not InterprocessSystem), so that `FileLock` means
// the public type.
import Interprocess
import SystemPackage
import Dispatch

/// errno-probe [--descriptors-left N] OPERATION ARGUMENT [SIZE]: runs the operation and says "ok",
/// or "error CODE ERRNO" (ERRNO 0 when the error carries none). Returns the exit status: 0 either
/// way, 2 on bad usage. `--descriptors-left N` first opens /dev/null until the open-file limit is
/// reached (run it under a low limit) and closes N of them again, so that the operation's N+1st
/// open fails with EMFILE.
///
/// Operations: `segment-create NAME SIZE`, `segment-open NAME`, `fifo-create PATH`,
/// `fifo-read PATH`, `lock PATH`, `connect PATH`, `listen PATH`.
func runErrnoProbe(_ options: [String]) -> Int32 {
    var arguments = options
    if arguments.first == "--descriptors-left" {
        guard arguments.count > 1, let left = Int(arguments[1]) else { return 2 }
        arguments.removeFirst(2)
        guard let held = useUpDescriptors() else { return 2 }
        for fd in held.suffix(left) { try? fd.close() }
    }
    guard arguments.count >= 2 else { return 2 }
    if arguments[0] == "fifo-wait-async" { return waitAsyncWithoutDescriptors(path: arguments[1]) }
    let argument = arguments[1]
    do throws(InterprocessError) {
        switch arguments[0] {
        case "segment-create":
            guard arguments.count == 3, let size = Int(arguments[2]) else { return 2 }
            try SharedMemory.create(name: argument, size: size).close()
        case "segment-open":
            try SharedMemory.open(name: argument).close()
        case "fifo-create":
            try NamedPipe.create(path: argument)
            try NamedPipe.remove(path: argument)
        case "fifo-read":
            try NamedPipe.openForReading(path: argument).close()
        case "lock":
            try FileLock(path: argument, create: false).close()
        case "connect":
            try LocalSocket.tryConnect(path: argument).close()
        case "listen":
            try LocalSocketListener.listen(path: argument).close()
        default:
            return 2
        }
        say("ok")
    } catch {
        say("error \(error.code) \(error.systemError?.rawValue ?? 0)")
    }
    return 0
}

/// Opens /dev/null until the open-file limit is reached and returns what it opened; nil if there
/// seems to be no limit.
private func useUpDescriptors() -> [FileDescriptor]? {
    var held: [FileDescriptor] = []
    while let fd = try? FileDescriptor.open("/dev/null", .readOnly) {
        held.append(fd)
        if held.count > 100_000 { return nil }
    }
    return held
}

/// fifo-wait-async PATH: opens the FIFO's reading end and, in a task (libdispatch, under the
/// Swift runtime, needs descriptors of its own to start a worker and traps without them), uses up
/// every descriptor left, then waits for data with the async read: first 100 ms for nothing (says
/// "waiting" when that timed out, so the wait went through the process-wide async waiter, created
/// with no descriptor left for its wake-up pipe), then up to 20 s for what the test writes ("got
/// COUNT").
private func waitAsyncWithoutDescriptors(path: String) -> Int32 {
    let pipe: NamedPipe
    do { pipe = try NamedPipe.openForReading(path: path) } catch {
        say("error \(error.code) \(error.systemError?.rawValue ?? 0)")
        return 1
    }
    let done = DispatchSemaphore(value: 0)
    Task {
        guard useUpDescriptors() != nil else {
            say("no open-file limit")
            done.signal()
            return
        }
        do throws(InterprocessError) {
            do throws(InterprocessError) { _ = try await pipe.read(timeout: .milliseconds(100)) } catch where error.code == .timedOut {}
            say("waiting")
            say("got \(try await pipe.read(timeout: .seconds(20)).count)")
        } catch {
            say("error \(error.code) \(error.systemError?.rawValue ?? 0)")
        }
        done.signal()
    }
    done.wait()
    return 0
}
