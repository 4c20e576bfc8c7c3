import ArgumentParser
import Interprocess

/// `ipc rm NAME...`: removes names (holders keep their memory until they close it).
struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove segments by name.",
        discussion: "Processes that hold a removed segment keep their memory until they close it. A heap goes with the stores it grew into, a channel with its loan heap."
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
                let info = try? SharedMemory.info(name: name)
                if info?.kind == SegmentKind.heap.description, let store = info?.details["store"] {
                    complain("\(name) is store \(store) of a heap: remove the heap (its store 0), and its stores go with it")
                    failed = true
                } else if info?.kind == SegmentKind.heap.description {
                    try SharedHeap.remove(name: name) // and the stores it grew into
                    say("removed \(name) (a heap, and its stores)")
                } else if info?.kind == SegmentKind.channel.description {
                    let loans = info?.details["loanHeapNonce"] != nil
                    try Channel<[UInt8]>.remove(name: name) // and its loan heap
                    say("removed \(name)" + (loans ? " (a channel, and its loan heap)" : ""))
                } else {
                    try SharedMemory.remove(name: name)
                    say("removed \(name)")
                }
            } catch {
                complain(error.description)
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}
