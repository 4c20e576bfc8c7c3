// A single-instance application: the first launch becomes the primary; every later launch hands its
// arguments (and working directory) to the primary and exits.
//
//   swift run --package-path Examples single-instance
//
// To show it with one command, the primary starts two more launches of this program itself, with
// files to open, and prints what they hand over. (Try it by hand as well: while a primary runs,
// `.build/debug/single-instance some-file` in another shell hands it `some-file`.)
import Foundation
import Interprocess

let applicationName = "com.example.interprocess.single-instance"   // one per application, per user
let demoLaunches = [["report.txt"], ["notes.txt", "--line", "12"]]

/// Starts this same program again with `arguments`: another launch.
func launch(_ arguments: [String]) throws -> Process {
    let peer = Process()
    peer.executableURL = Bundle.main.executableURL
    peer.arguments = arguments
    fflush(nil)                           // what this process printed so far comes first
    try peer.run()
    return peer
}

// Every launch runs this line. `arguments` defaults to this launch's command-line arguments.
switch try await SingleInstance.acquire(name: applicationName, timeout: .seconds(30)) {
case .secondary(let primary):
    print("launch (pid \(getpid())): an instance runs already (pid \(primary.pid)); "
        + "it has our arguments \(CommandLine.arguments.dropFirst())")
    exit(0)
case .primary(let instance):
    print("primary (pid \(getpid())): the only instance of \(applicationName)")
    let launches = try demoLaunches.map(launch)
    var received: [[String]] = []
    for await later in instance.launches {             // the arguments of every later launch, in order
        print("primary: launch by pid \(later.process.pid) asks to open \(later.arguments) in \(later.workingDirectory)")
        received.append(later.arguments)
        if received.count == demoLaunches.count { break }
    }
    instance.close()                                    // the next launch becomes the primary
    for other in launches { other.waitUntilExit() }
    let ok = Set(received) == Set(demoLaunches) && launches.allSatisfy { $0.terminationStatus == 0 }
    print(ok ? "ok: \(received.count) later launches handed their arguments to the primary" : "FAILED")
    exit(ok ? 0 : 1)
}
