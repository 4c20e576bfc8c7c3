// Two processes share a Codable value in one segment; a mutex placed in the same segment guards it.
//
//   swift run --package-path Examples shared-value
//
// The first process creates the segment, places a mutex in it and stores a value, then starts a
// second copy of this program, which opens the segment by name, reads the value, changes it and
// stores it back. The first reads the change once the second has exited.
import Foundation
import Interprocess

struct Settings: Codable, CustomStringConvertible {
    var theme: String
    var fontSize: Int
    var revision: Int
    var description: String { "theme \(theme), font size \(fontSize), revision \(revision)" }
}

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "editor" {
    // The second process: open what the first created, by name.
    let segment = try SharedMemory.open(name: CommandLine.arguments[2])
    let lock = try ProcessMutex.open(in: segment, named: "lock")
    try lock.withBlockingLock {
        var settings = try segment.load(Settings.self)
        print("editor (pid \(getpid())) reads:  \(settings)")
        settings.theme = "dark"
        settings.fontSize += 2
        settings.revision += 1
        try segment.store(settings)        // a longer value is fine: the frame grows in place
        print("editor (pid \(getpid())) stores: \(settings)")
    }
    segment.close()
    exit(0)
}

// The first process. A name unique to this run (a real application uses a fixed name).
let name = "example-shared-value-\(getpid())"
let segment = try SharedMemory.create(name: name, size: 4096)   // keep the handle: it keeps the segment
// The mutex goes at the end of the segment, the stored value starts at offset 0: they never overlap.
let lock = try ProcessMutex.create(in: segment, named: "lock")
try lock.withBlockingLock { try segment.store(Settings(theme: "light", fontSize: 12, revision: 1)) }
print("owner  (pid \(getpid())) stores: \(try segment.load(Settings.self))")

let editor = try startPeer("editor", name)
editor.waitUntilExit()
guard editor.terminationStatus == 0 else { fatalError("the editor failed") }

let settings = try lock.withBlockingLock { try segment.load(Settings.self) }
print("owner  (pid \(getpid())) reads:  \(settings)")
lock.close()
segment.close()                       // the last holder closes: the segment is removed
print(settings.revision == 2 ? "ok: the value went from one process to the other and back" : "FAILED")
