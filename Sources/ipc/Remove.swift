import ArgumentParser
import Interprocess

/// `ipc rm NAME...`: removes names (holders keep their memory until they close it).
struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove segments by name.",
        discussion: "Processes that hold a removed segment keep their memory until they close it."
    )

    @Argument(help: "The names to remove.")
    var names: [String]

    func validate() throws {
        if names.isEmpty { throw ValidationError("give at least one NAME to remove") }
    }

    func run() throws {
        var failed = false
        for name in names {
            do {
                try SharedMemory.remove(name: name)
                say("removed \(name)")
            } catch {
                complain(error.description)
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}
