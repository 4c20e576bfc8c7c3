import Foundation
import Interprocess
import InterprocessToolSupport

/// What `ipc inspect` and `ipc check` show of a heap, which they open (and so register with and
/// claim a client record of, like any process that opens it).
enum HeapReport {
    /// Opens the heap `name` for a report: a heap's store 0, not abandoned (opening an abandoned
    /// heap would sweep it: `ipc gc` is the way to remove it).
    static func open(_ name: String, info: SegmentInfo, trusting trust: TrustedOwners) throws -> SharedHeap {
        guard info.kind == SegmentKind.heap.description else { throw ToolError("\(name) is a \(info.kind) segment, not a heap") }
        if let store = info.details["store"] {
            throw ToolError("\(name) is store \(store) of a heap: name the heap (its store 0)")
        }
        if info.isAbandoned {
            throw ToolError("\(name) is abandoned (its holders all died): opening it would sweep it; `ipc gc` removes it")
        }
        return try SharedHeap.open(name: name, trusting: trust)
    }

    /// The statistics, per-process usage and named objects, as `ipc inspect` prints them.
    static func lines(_ statistics: SharedHeap.Statistics, _ named: [SharedHeap.NamedObject]) -> [String] {
        var lines = [
            "heap:",
            "  capacity: \(statistics.capacity) (\(Format.bytes(statistics.capacity))) of at most \(statistics.maximumCapacity) (\(Format.bytes(statistics.maximumCapacity))), \(statistics.stores) store\(statistics.stores == 1 ? "" : "s")",
            "  used: \(statistics.usedBytes) (\(Format.bytes(statistics.usedBytes))) in \(statistics.blocks) block\(statistics.blocks == 1 ? "" : "s"), \(statistics.requestedBytes) requested",
            "  free: \(statistics.freeBytes) (\(Format.bytes(statistics.freeBytes))) in \(statistics.freeBlocks) block\(statistics.freeBlocks == 1 ? "" : "s")",
            "  largestFreeBlock: \(statistics.largestFreeBlock) (\(Format.bytes(statistics.largestFreeBlock))), fragmentation \(String(format: "%.2f", statistics.fragmentation))",
            "  overhead: \(statistics.overheadBytes)",
            "  recoveries: \(statistics.recoveries)",
        ]
        let own = ProcessInfo.processInfo.processIdentifier
        let clients = statistics.clients.filter { !($0.pid == own && $0.isAlive && $0.blocks == 0) }
        lines.append("processes:\(clients.isEmpty ? " none" : "")")
        for client in clients {
            let who = client.record == 0 ? "record 0 (named objects, and processes without a record)"
                : client.isEndedProcesses ? "ended processes (their records recycled)"
                : "record \(client.record)  pid \(client.pid)  \(client.isAlive ? "alive" : "ended")"
            lines.append("  \(who)  \(client.blocks) block\(client.blocks == 1 ? "" : "s")  \(Format.bytes(client.bytes))")
        }
        lines.append("named objects:\(named.isEmpty ? " none" : "")")
        for object in named {
            lines.append("  \(object.name)  \(object.byteCount) bytes  \(object.type)\(object.isIntact ? "" : "  (its block was freed by hand)")")
        }
        return lines
    }

    /// The same for JSON: added to the segment's details, as strings.
    static func details(_ statistics: SharedHeap.Statistics, _ named: [SharedHeap.NamedObject]) -> [String: String] {
        var details = [
            "usedBytes": "\(statistics.usedBytes)", "requestedBytes": "\(statistics.requestedBytes)",
            "freeBytes": "\(statistics.freeBytes)", "largestFreeBlock": "\(statistics.largestFreeBlock)",
            "blocks": "\(statistics.blocks)", "freeBlocks": "\(statistics.freeBlocks)",
            "overheadBytes": "\(statistics.overheadBytes)", "fragmentation": String(format: "%.4f", statistics.fragmentation),
            "namedObjects": named.map(\.name).joined(separator: ","),
        ]
        details["processes"] = statistics.clients.map { client in
            "\(client.record):\(client.pid):\(client.isAlive ? "alive" : "ended"):\(client.blocks):\(client.bytes)"
        }.joined(separator: ",")
        return details
    }
}
