import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc read NAME`: prints what `ipc write` (or `SharedMemory.write`) stored: to a pipe or file as
/// it is (text with a newline, other bytes exactly), to a terminal with control characters escaped.
struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the text (or bytes) stored in a segment.",
        discussion: """
            On a terminal, control characters and bytes that are not UTF-8 are shown escaped (\\e, \\u{9B}, \\xFF); \
            line feeds and tabs are kept. Use --raw for the exact bytes.
            """
    )

    @Argument(help: "The segment's name.")
    var name: String

    @OptionGroup var trust: TrustOptions

    @Flag(help: "Write the stored bytes exactly, without a trailing newline (even to a terminal).")
    var raw = false

    func run() throws {
        let segment = try SharedMemory.open(name: name, trusting: trust.trusted)
        defer { segment.close() }
        let bytes = try segment.readBytes()
        if raw {
            StandardStream.write(bytes: bytes)
        } else if StandardStream.isTerminal() {
            // Whoever wrote the segment chose these bytes: on a terminal, show escape sequences and
            // other controls (and bytes that are not UTF-8) visibly; keep lines and tabs.
            StandardStream.write(Terminal.escapeData(bytes, keepingLineBreaks: true) + "\n")
        } else if let text = String(validating: bytes, as: UTF8.self) {
            StandardStream.write(text + "\n")
        } else {
            StandardStream.write(bytes: bytes)
        }
    }
}
