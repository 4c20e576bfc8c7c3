import Interprocess

/// The sockets and FIFOs of the runtime directory in `ipc ls` and `ipc gc` (see ``LocalObjects``).
enum LocalListing {
    /// The `ipc ls` section: a title line naming the directory, a header, one line per object.
    static func table(_ objects: [LocalObjects.Info]) -> [String] {
        let header = ["NAME", "KIND", "STATE", "SERVER", "MODE"]
        let rows = objects.map { info in
            [info.name, info.kind, info.state, info.serverPID.map { "pid \($0)" } ?? "-", info.permissions].map { Terminal.escape($0) }
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        let lines = ([header] + rows).map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            .joined(separator: "  ")
        }
        return ["sockets and pipes in \(Terminal.escape(LocalObjects.directory)):"] + lines
    }

    /// Why `ipc gc` removes (or would remove) a socket file.
    static let staleReason = "its server is gone"
}

/// One entry of `ipc ls --json` / `ipc gc --json`: a segment, or a socket or FIFO of the runtime
/// directory (`kind` "socket" or "fifo", with `path`, `state` and `serverPID`).
enum ListEntry: Encodable {
    case segment(SegmentInfo)
    case local(LocalObjects.Info)
    /// `ipc gc --json`: a sweep or a reclamation.
    case garbage(GarbageAction)

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .segment(let info): try info.encode(to: encoder)
        case .local(let info): try info.encode(to: encoder)
        case .garbage(let action): try action.encode(to: encoder)
        }
    }
}
