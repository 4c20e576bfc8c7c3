import ArgumentParser
import Interprocess
import InterprocessSystem
import SystemPackage

/// `ipc`: inspect and manage Interprocess objects from the shell.
@main
struct IPC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipc",
        abstract: "Inspect and manage Interprocess shared objects.",
        subcommands: [
            List.self, Inspect.self, Create.self, Write.self, Read.self, Remove.self, CollectGarbage.self,
            Demo.self, DemoPeer.self, Bench.self, BenchPeer.self,
        ]
    )

    /// Like `ParsableCommand.main()`, but library and tool errors are printed as "ipc: <description>"
    /// on standard error (exit status 1) instead of ArgumentParser's "Error: …".
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if let message = ToolError.message(for: error) {
                StandardStream.write("ipc: \(message)\n", to: 2)
                exit(withError: ExitCode.failure)
            }
            exit(withError: error)
        }
    }
}

/// A failure of the tool itself (not of the library), reported as "ipc: <message>".
struct ToolError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }

    /// The line to print for errors that are ours to report; nil for ArgumentParser's own
    /// (usage errors, help, exit codes), which it prints itself.
    static func message(for error: any Error) -> String? {
        switch error {
        case let error as InterprocessError: error.description
        case let error as ToolError: error.description
        case let error as Errno: "\(error) (errno \(error.rawValue))"
        default: nil
        }
    }
}

/// Writes a line to standard output, unbuffered (so that a reader on a pipe sees it at once).
func say(_ line: String) {
    StandardStream.write(line + "\n")
}

/// Writes a line to standard error.
func complain(_ line: String) {
    StandardStream.write("ipc: \(line)\n", to: 2)
}
