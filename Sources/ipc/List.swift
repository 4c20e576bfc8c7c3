import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc ls`: every Interprocess segment this user can read, by file name.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List shared segments (kind, size, lifetime, holders, problems), then local sockets and pipes."
    )

    @Flag(help: "Print a JSON array of segment descriptions.")
    var json = false

    func run() throws {
        let segments = Listing.segments()
        let local = LocalObjects.list()
        if json {
            StandardStream.write(try Format.json(segments.map(ListEntry.segment) + local.map(ListEntry.local)))
        } else if segments.isEmpty {
            say("no segments")
        } else {
            Format.table(segments).forEach(say)
        }
        if !json && !local.isEmpty {
            say("")
            LocalListing.table(local).forEach(say)
        }
    }
}
