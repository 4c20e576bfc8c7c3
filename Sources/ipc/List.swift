import ArgumentParser
import Interprocess
import InterprocessSystem

/// `ipc ls`: every Interprocess segment this user can read, by file name.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List shared segments: kind, size, lifetime, holders, problems."
    )

    @Flag(help: "Print a JSON array of segment descriptions.")
    var json = false

    func run() throws {
        let segments = Listing.segments()
        if json {
            StandardStream.write(try Format.json(segments))
        } else if segments.isEmpty {
            say("no segments")
        } else {
            Format.table(segments).forEach(say)
        }
    }
}
