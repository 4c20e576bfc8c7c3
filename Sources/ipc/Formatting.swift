import Foundation
import Interprocess

/// Text and JSON renderings shared by the subcommands.
enum Format {
    /// A byte count for people: "512B", "4.0K", "16.0M" (powers of 1024).
    static func bytes(_ count: Int) -> String {
        let units = ["K", "M", "G", "T", "P"]
        guard count >= 1024 else { return "\(count)B" }
        var value = Double(count) / 1024
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return String(format: "%.1f", value) + units[unit]
    }

    /// A local time, "2025-01-31 14:05:09".
    static func time(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = .current
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: date)
    }

    /// "2 alive, 1 dead", or "none".
    static func holders(_ info: SegmentInfo) -> String {
        guard !info.holders.isEmpty else { return info.isHeld ? "held (not in table)" : "none" }
        let alive = info.holders.filter(\.alive).count
        return "\(alive) alive, \(info.holders.count - alive) dead"
    }

    /// What is notable about a segment: "corrupt: …", "abandoned", a state other than ready, or "".
    static func note(_ info: SegmentInfo) -> String {
        if let problem = info.problem { return "corrupt: \(problem)" }
        if info.isAbandoned { return "abandoned" }
        if info.state != "ready" { return info.state }
        return info.summary // the kind's own words ("locked by 1234, 2 waiting", "count 3")
    }

    /// Why `ipc gc` removes (or would remove) a segment.
    static func staleReason(_ info: SegmentInfo) -> String {
        switch info.state {
        case "initializing": "its creator died while creating it"
        case "removed": "its remover died while removing it"
        default: "holders all dead"
        }
    }

    /// The `ipc ls` table: a header and one line per segment, columns aligned.
    static func table(_ segments: [SegmentInfo]) -> [String] {
        let header = ["NAME", "KIND", "SIZE", "LIFETIME", "HOLDERS", "CREATED", "STATE"]
        // Escaped here rather than only by `say`, so that the columns line up.
        let rows = segments.map { info in
            [
                info.name, info.kind, bytes(info.size), info.lifetime?.description ?? "?", holders(info),
                time(info.createdAt), note(info),
            ]
            .map { Terminal.escape($0) }
        }
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        return ([header] + rows).map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            .joined(separator: "  ")
            .trimmingTrailingSpaces()
        }
    }

    /// Pretty JSON (or, `compact`, one line: for output with an object per line) with sorted keys and
    /// ISO 8601 dates, followed by a newline; the characters that the encoder leaves raw but a terminal
    /// would act on are escaped too (``Terminal/escapeJSON(_:)``).
    static func json(_ value: some Encodable, compact: Bool = false) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = compact ? [.sortedKeys, .withoutEscapingSlashes] : [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        return Terminal.escapeJSON(String(decoding: data, as: UTF8.self)) + "\n"
    }
}

extension SegmentInfo {
    /// The name of the segment's file in the shared memory directory: what `ipc` shows and acts on.
    /// The header's own name is only a claim by whoever wrote the file.
    var fileName: String { String(osName.dropFirst()) }
}

/// The segments `ipc ls` shows.
enum Listing {
    /// Every segment this user can read, named by its file. A segment whose header names another
    /// segment is read again by its file name, so that it carries the library's verdict on that
    /// (`corrupt`: "the header names the segment …"), exactly as `ipc inspect FILE` would show it.
    static func segments() -> [SegmentInfo] {
        SharedMemory.list().compactMap { info in
            guard info.name != info.fileName else { return info }
            return try? SharedMemory.info(name: info.fileName)  // nil: it went away meanwhile
        }
        .sorted { $0.name < $1.name }
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
