// Running the `ipc` tool, and shell command lines that call it, from a test: as a user would.
import InterprocessSystem
import InterprocessToolSupport
import Testing

/// How a command line ended and what it wrote.
typealias ToolRun = (termination: ChildProcess.Termination?, output: String, error: String)

/// The `ipc` executable built next to the tests.
func ipcPath() throws -> String {
    try #require(BuiltExecutable.path(of: "ipc"), "the ipc executable is not built next to the tests")
}

/// Runs `ipc arguments…` to completion (killed after 30 s, an upper bound only).
func ipc(_ arguments: String...) throws -> ToolRun {
    let result = try ChildProcess.run(try ipcPath(), arguments, timeout: .seconds(30))
    return (result.termination, result.standardOutput, result.standardError)
}

/// Runs a shell command line with `$IPC` set to the tool (killed after 30 s, an upper bound only).
func shell(_ script: String) throws -> ToolRun {
    var environment: [String: String] = [:]
    for (key, value) in ProcessEnvironment.all { environment[key] = value }
    environment["IPC"] = try ipcPath()
    let result = try ChildProcess.run("/bin/sh", ["-c", script], timeout: .seconds(30), environment: environment)
    return (result.termination, result.standardOutput, result.standardError)
}
