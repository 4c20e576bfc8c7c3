import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc inspect NAME`: everything the header and the kernel's locks say about one segment.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe one segment: header, holders, kind-specific state."
    )

    @Argument(help: "The segment's name (without the leading slash).")
    var name: String

    @Flag(help: "Print a JSON object.")
    var json = false

    @OptionGroup var trust: TrustOptions

    func run() throws {
        var info = try SharedMemory.info(name: name)
        // A heap (its store 0) that processes hold: its statistics and named objects, from the heap
        // opened for a moment. An abandoned one is not opened (that would sweep it).
        var heapLines: [String] = []
        if info.kind == SegmentKind.heap.description, info.details["store"] == nil, info.problem == nil {
            if info.isAbandoned {
                heapLines = ["heap: abandoned (its holders all died): not opened, which would sweep it; `ipc gc` removes it"]
            } else {
                do {
                    let heap = try HeapReport.open(name, info: info, trusting: trust.trusted)
                    defer { heap.close() }
                    let statistics = try heap.statistics()
                    let named = try heap.namedObjects()
                    heapLines = HeapReport.lines(statistics, named)
                    // JSON: in the details (text: in a section of their own, below them).
                    if json { info.details.merge(HeapReport.details(statistics, named)) { _, new in new } }
                } catch {
                    heapLines = ["heap: cannot be read: \(ToolError.message(for: error) ?? "\(error)")"]
                    if json { info.details["heapError"] = ToolError.message(for: error) ?? "\(error)" }
                }
            }
        }
        if json {
            StandardStream.write(try Format.json(info))
            return
        }
        var lines: [(String, String)] = [
            ("name", info.name),
            ("osName", info.osName),
            ("kind", info.kind),
            ("size", "\(info.size) (\(Format.bytes(info.size)))"),
            ("totalSize", "\(info.totalSize)"),
            ("payloadOffset", "\(info.payloadOffset)"),
            ("lifetime", info.lifetime?.description ?? "unknown"),
            ("state", info.state),
            ("createdAt", Format.time(info.createdAt)),
            ("creatorPID", "\(info.creatorPID)"),
            ("permissions", info.permissions),
            ("owner", "\(info.owner)"),
            ("isHeld", info.isHeld ? "yes" : "no"),
            ("isAbandoned", info.isAbandoned ? "yes" : "no"),
        ]
        if !info.summary.isEmpty { lines.append(("summary", info.summary)) }
        if let problem = info.problem { lines.append(("problem", problem)) }
        lines.append(("holders", info.holders.isEmpty ? "none" : Format.holders(info)))
        let width = lines.map(\.0.count).max()! + 1
        for (key, value) in lines {
            say((key + ":").padding(toLength: width, withPad: " ", startingAt: 0) + " " + value)
        }
        for holder in info.holders {
            say("  pid \(holder.pid)  \(holder.alive ? "alive" : "dead")  opened \(Format.time(holder.openedAt))")
        }
        if !info.placed.isEmpty {
            say("placed:")
            for object in info.placed {
                say("  \(object.offset)..<\(object.offset + object.size)  \(object.kind)" + (object.name.map { " '\($0)'" } ?? ""))
            }
        }
        if !info.details.isEmpty {
            say("details:")
            for (key, value) in info.details.sorted(by: { $0.key < $1.key }) { say("  \(key): \(value)") }
        }
        for line in heapLines { say(line) }
    }
}
