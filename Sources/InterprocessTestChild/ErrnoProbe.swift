// The errno-probe command: one library call whose failure the tests provoke for real, in a setting
// only a child can have (another user, a small tmpfs in its own mount namespace, a low open-file
// limit). This file imports Interprocess only (not InterprocessSystem), so that `FileLock` means
// the public type.
import Interprocess
import SystemPackage

/// errno-probe [--no-descriptors-left] OPERATION ARGUMENT [SIZE]: runs the operation and says "ok",
/// or "error CODE ERRNO" (ERRNO 0 when the error carries none). Returns the exit status: 0 either
/// way, 2 on bad usage. `--no-descriptors-left` first opens /dev/null until the open-file limit is
/// reached (run it under a low limit), so that the operation's first open fails with EMFILE.
///
/// Operations: `segment-create NAME SIZE`, `segment-open NAME`, `fifo-create PATH`,
/// `fifo-read PATH`, `lock PATH`, `connect PATH`, `listen PATH`.
func runErrnoProbe(_ options: [String]) -> Int32 {
    var arguments = options
    if arguments.first == "--no-descriptors-left" {
        arguments.removeFirst()
        var held: [FileDescriptor] = []
        while let fd = try? FileDescriptor.open("/dev/null", .readOnly) {
            held.append(fd)
            if held.count > 100_000 { return 2 } // no limit in force
        }
    }
    guard arguments.count >= 2 else { return 2 }
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
