import ArgumentParser
import Interprocess
import InterprocessSystem

/// `ipc read NAME`: prints what `ipc write` (or `SharedMemory.write`) stored.
struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the text (or bytes) stored in a segment."
    )

    @Argument(help: "The segment's name.")
    var name: String

    @Flag(help: "Write the stored bytes exactly, without a trailing newline.")
    var raw = false

    func run() throws {
        let segment = try SharedMemory.open(name: name)
        defer { segment.close() }
        let bytes = try segment.readBytes()
        if !raw, let text = String(validating: bytes, as: UTF8.self) {
            say(text)
        } else {
            StandardStream.write(bytes: bytes)
        }
    }
}
