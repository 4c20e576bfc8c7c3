// A config broadcaster: one writer and two reader processes share a config through a
// SharedWatchedValue; each reader receives every new version as it is stored.
//
//   swift run --package-path Examples config-broadcaster
//
// The early reader starts before the config exists and waits for it to be created; the late reader
// starts once the writer has stored a few versions, and receives the current config first. A reader
// that is slow may skip versions (it always gets the latest), so both end at the final version.
import Foundation
import Interprocess

let finalRevision = 8

struct Config: Codable, Sendable {              // travels as JSON
    var revision: Int
    var logLevel: String
    var workers: Int
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

if CommandLine.arguments.count == 4, CommandLine.arguments[1] == "reader" {
    let (name, firstAtLeast) = (CommandLine.arguments[2], Int(CommandLine.arguments[3]) ?? 1)
    // Waits (suspending the task) until a process has created the config: readers may come first.
    let config = try await SharedWatchedValue<Config>.openWhenCreated(name: name, timeout: .seconds(30))
    var seen: [Int] = []
    for try await current in config.updates {          // the current config, then each newer one
        seen.append(current.revision)
        if current.revision == finalRevision { break }  // `updates` never ends by itself
    }
    config.close()
    print("reader (pid \(getpid())) saw revisions \(seen)")
    // The first is the current one (not older than what was stored before this reader started);
    // then only newer ones, never the same one twice; the last is the final one.
    let right = (seen.first ?? 0) >= firstAtLeast && zip(seen, seen.dropFirst()).allSatisfy { $0 < $1 }
        && seen.last == finalRevision
    exit(right ? 0 : 1)
}

let name = "example-config-\(getpid())"
let early = try startPeer("reader", name, "1")         // before the config exists
let config = try SharedWatchedValue<Config>.create(
    name: name, initialValue: Config(revision: 1, logLevel: "info", workers: 2))
print("writer (pid \(getpid())) stored revision 1")
var late: Process?
for revision in 2...finalRevision {
    // Only pacing, as a config changes now and then: readers are right at any pace.
    try await Task.sleep(for: .milliseconds(40))
    try config.store(Config(revision: revision, logLevel: revision.isMultiple(of: 2) ? "debug" : "info",
                            workers: 2 + revision))
    print("writer (pid \(getpid())) stored revision \(revision) (version \(config.version))")
    fflush(nil)                                        // shown as it happens, also into a file
    if revision == 3 { late = try startPeer("reader", name, "3") }  // it must get 3 or newer first
}

let readers = [early, late!]
for reader in readers { reader.waitUntilExit() }
config.close()                                         // the last holder removes the config
let allRight = readers.allSatisfy { $0.terminationStatus == 0 }
print(allRight ? "ok: both readers, early and late, ended at revision \(finalRevision)" : "FAILED")
exit(allRight ? 0 : 1)
