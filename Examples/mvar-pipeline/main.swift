// A pipeline of three processes joined by SharedVariables (MVars: a box that is full or empty;
// `put` waits while it is full, `take` while it is empty), all in async code.
//
//   swift run --package-path Examples mvar-pipeline
//
//   this process ──numbers──▶ square ──squares──▶ sum ──total──▶ this process
//
// A number 0 ends the stream. No thread blocks while a process waits: every wait suspends a task.
import Foundation
import Interprocess

let count: Int64 = 100

/// Starts this same program again with `arguments`: the peer process.
func startPeer(_ arguments: String...) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

/// The "square" stage: takes numbers, puts their squares.
func square(_ prefix: String) async throws {
    let numbers = try SharedVariable<Int64>.open(name: prefix + "-numbers")
    let squares = try SharedVariable<Int64>.open(name: prefix + "-squares")
    while true {
        let number = try await numbers.take(timeout: .seconds(30))
        try await squares.put(number * number, timeout: .seconds(30))
        if number == 0 { break }                        // passed the end on
    }
}

/// The "sum" stage: adds up the squares, puts the total.
func sum(_ prefix: String) async throws {
    let squares = try SharedVariable<Int64>.open(name: prefix + "-squares")
    let total = try SharedVariable<Int64>.open(name: prefix + "-total")
    var sum: Int64 = 0
    while true {
        let square = try await squares.take(timeout: .seconds(30))
        if square == 0 { break }                        // the end
        sum += square
    }
    try await total.put(sum)
}

let arguments = CommandLine.arguments
if arguments.count == 3 {
    if arguments[1] == "square" { try await square(arguments[2]) } else { try await sum(arguments[2]) }
    exit(0)
}

// Create the three variables (empty), then start the stages, which open them by name.
let prefix = "example-mvar-\(getpid())"
let numbers = try SharedVariable<Int64>.create(name: prefix + "-numbers")
let squares = try SharedVariable<Int64>.create(name: prefix + "-squares")
let total = try SharedVariable<Int64>.create(name: prefix + "-total")
let stages = [try startPeer("square", prefix), try startPeer("sum", prefix)]

for number in 1...count { try await numbers.put(number, timeout: .seconds(30)) }   // waits while full
try await numbers.put(0)                                // the end
let result = try await total.take(timeout: .seconds(30))
for stage in stages { stage.waitUntilExit() }
print("sum of the squares of 1...\(count), computed by two other processes: \(result)")
for variable in [numbers, squares, total] { variable.close() }
let expected = count * (count + 1) * (2 * count + 1) / 6
print(result == expected ? "ok: \(result) is right" : "FAILED: expected \(expected)")
exit(result == expected ? 0 : 1)
