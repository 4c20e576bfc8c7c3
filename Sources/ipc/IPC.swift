import ArgumentParser
import Foundation
import Interprocess
import InterprocessBenchmarks
import InterprocessToolSupport
import SystemPackage

/// `ipc`: inspect and manage Interprocess objects from the shell.
@main
struct IPC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipc",
        abstract: "Inspect and manage Interprocess shared objects.",
        subcommands: [
            List.self, Inspect.self, Check.self, Create.self, Write.self, Read.self, Remove.self, CollectGarbage.self, Send.self, Receive.self,
            MessageQueueCreate.self, Publish.self, Subscribe.self, Call.self, Serve.self, Hz.self,
            Demo.self, DemoPeer.self, DemoWorker.self, Bench.self, BenchPeer.self,
        ]
    )

    /// Like `ParsableCommand.main()`, but library and tool errors are printed as "ipc: <description>"
    /// on standard error (exit status 1) instead of ArgumentParser's "Error: …", an argument that is
    /// not valid UTF-8 is refused before anything is done (exit status 64), and ArgumentParser's
    /// error messages, which quote the arguments, are escaped for the terminal like everything else.
    static func main() {
        let arguments: [String]
        switch RawArguments.decode() {
        case .success(let decoded): arguments = decoded
        case .failure(let error):
            complain(error.description)
            exit(withError: ExitCode.validationFailure)
        }
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            if let message = ToolError.message(for: error) {
                complain(message)
                exit(withError: ExitCode.failure)
            }
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code.isSuccess {
                // Help, version, completion scripts: our own text, which may hold escapes on purpose.
                if !message.isEmpty { StandardStream.write(message + "\n") }
            } else if !message.isEmpty {
                StandardStream.write(escapeUsage(message, arguments: arguments) + "\n", to: 2)
            }
            exit(withError: code)
        }
    }

    /// ArgumentParser's message for a usage error: its lines are its own, but the arguments it quotes
    /// (whole, or the value of `--option=value`) are escaped with their line feeds.
    static func escapeUsage(_ message: String, arguments: [String]) -> String {
        var quoted = Set<String>()
        for argument in arguments {
            quoted.insert(argument)
            if argument.hasPrefix("-"), let equals = argument.firstIndex(of: "=") {
                quoted.insert(String(argument[argument.index(after: equals)...]))
            }
        }
        var text = message
        for argument in quoted.filter({ $0.unicodeScalars.contains(where: Terminal.mustEscape) }).sorted(by: { $0.count > $1.count }) {
            text = text.replacingOccurrences(of: argument, with: Terminal.escape(argument))
        }
        return Terminal.escape(text, keepingNewlines: true)
    }
}

extension ToolError {
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

/// Writes a line to standard output, unbuffered (so that a reader on a pipe sees it at once), with
/// control characters escaped (``Terminal/escape(_:keepingNewlines:)``): a name can never end the
/// line early or reach the terminal as an escape sequence.
func say(_ line: String) {
    StandardStream.write(Terminal.escape(line) + "\n")
}

/// Writes a line to standard error as "ipc: <line>", escaped like ``say(_:)``.
func complain(_ line: String) {
    StandardStream.write("ipc: " + Terminal.escape(line) + "\n", to: 2)
}
