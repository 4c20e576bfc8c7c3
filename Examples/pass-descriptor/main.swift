// Passing open files between processes over a local (Unix domain) socket.
//
//   swift run --package-path Examples pass-descriptor
//
// This process listens on a socket, starts a client (this program again) and sends it two
// descriptors: the write end of a pipe, and an anonymous shared memory segment — memory with no name
// anywhere, which only a process given its descriptor can map. The client writes into both.
import Foundation
import Interprocess
import SystemPackage

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "client" {
    let connection = try LocalSocket.blockingConnect(name: CommandLine.arguments[2], timeout: .seconds(30))
    let message = try connection.blockingReceive(timeout: .seconds(30))
    guard message.descriptors.count == 1, let pipe = message.descriptors.first else { fatalError("no pipe") }
    _ = try pipe.writeAll(Array("hello through a pipe this process never opened\n".utf8))
    try pipe.close()                                    // the reader sees the end of the pipe
    let segment = try connection.blockingReceiveSegment(timeout: .seconds(30))   // mapped at once
    try segment.write("written by pid \(getpid()) into memory that has no name")
    segment.close()
    try connection.blockingSend(Array("done".utf8))
    connection.close()
    exit(0)
}

// A socket name unique to this run; the file lives in the per-user runtime directory, owner-only.
let listener = try LocalSocketListener.listen(name: "example-pass-descriptor-\(getpid())")
let client = try startPeer("client", "example-pass-descriptor-\(getpid())")
let connection = try listener.blockingAccept(timeout: .seconds(30))
print("server (pid \(getpid())): client connected, \(connection.peer) (from the kernel)")

let (readEnd, writeEnd) = try FileDescriptor.pipe()
try connection.blockingSend(Array("a pipe".utf8), descriptors: [writeEnd])
try writeEnd.close()                                    // the client has its own copy now
let memory = try SharedMemory.anonymous(size: 4096)
try connection.blockingSend(memory)                      // its descriptor, sealed against shrinking

let reply = try connection.blockingReceive(timeout: .seconds(30))
var fromPipe: [UInt8] = []
var chunk = [UInt8](repeating: 0, count: 256)
while true {                                            // everything is in the pipe by now
    let count = try chunk.withUnsafeMutableBytes { try readEnd.read(into: $0) }
    if count == 0 { break }                             // the end: every write end is closed
    fromPipe += chunk[..<count]
}
try readEnd.close()
let fromMemory = try memory.readString()
print("server: from the pipe:   \(String(decoding: fromPipe, as: UTF8.self))", terminator: "")
print("server: from the memory: \(fromMemory)")
client.waitUntilExit()
connection.close()
listener.close()                                        // removes the socket file
memory.close()
let ok = reply.string == "done" && !fromPipe.isEmpty && fromMemory.hasPrefix("written by")
    && client.terminationStatus == 0
print(ok ? "ok: a pipe and a segment went to another process as descriptors" : "FAILED")
exit(ok ? 0 : 1)
