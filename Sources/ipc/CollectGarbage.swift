import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc gc`: removes segments nobody will use again.
struct CollectGarbage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove abandoned segments (every holder died), half-made or half-removed ones, and stale socket files."
    )

    @OptionGroup var trust: TrustOptions

    @Flag(help: "Only report what would be removed.")
    var dryRun = false

    @Flag(help: "Print a JSON array of the segments removed (or that would be).")
    var json = false

    @Option(help: "Only consider segments whose name starts with this prefix.")
    var prefix = ""

    func run() throws {
        // Shown by file name, never by the name the header claims.
        let removed = SharedMemory.collectGarbage(dryRun: dryRun, prefix: prefix, trusting: trust.trusted).map { info in
            var info = info
            info.name = info.fileName
            return info
        }
        let removedLocal = LocalObjects.collectGarbage(dryRun: dryRun, prefix: prefix)
        if json {
            StandardStream.write(try Format.json(removed.map(ListEntry.segment) + removedLocal.map(ListEntry.local)))
            return
        }
        guard !removed.isEmpty || !removedLocal.isEmpty else {
            say("nothing to remove")
            return
        }
        for info in removed.sorted(by: { $0.name < $1.name }) {
            say("\(dryRun ? "would remove" : "removed") \(info.name) (\(info.kind), \(Format.bytes(info.size)); \(Format.staleReason(info)))")
        }
        for info in removedLocal {
            say("\(dryRun ? "would remove" : "removed") \(info.path) (socket; \(LocalListing.staleReason))")
        }
    }
}
