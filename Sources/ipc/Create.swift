import ArgumentParser
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// `ipc create NAME --size BYTES`: a persistent segment, or with `--hold` one that lives while this
/// command runs.
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a segment.",
        discussion: """
            Without --hold the segment is persistent: it stays until `ipc rm`. With --hold it lives \
            while referenced: this command holds it until Ctrl-C (SIGINT) or SIGTERM, and closing it \
            as the last holder removes it.
            """
    )

    @Argument(help: "The segment's name.")
    var name: String

    @Option(
        name: .long, parsing: .unconditional,
        help: ArgumentHelp("Usable bytes: 4096, 64K, 16M, 1G (powers of 1024; KiB/MiB/GiB too).", valueName: "bytes"))
    var size: String

    @Option(help: ArgumentHelp("Permission bits in octal.", valueName: "octal"))
    var mode = "600"

    @Option(help: ArgumentHelp("Give the file to this group id (share with its members: they open it with --trust-group).", valueName: "gid"))
    var group: UInt32?

    @Flag(help: "Hold the segment (lifetime: while referenced) until SIGINT or SIGTERM.")
    var hold = false

    func validate() throws {
        guard ByteCount.parse(size) != nil else {
            throw ValidationError(
                "invalid size '\(size)': expected a positive number of bytes, optionally followed by K, M or G "
                    + "(powers of 1024), e.g. 4096, 64K, 16M")
        }
        guard Self.permissions(mode) != nil else {
            throw ValidationError("invalid mode '\(mode)': expected octal permission bits such as 600 or 644")
        }
    }

    func run() throws {
        let bytes = ByteCount.parse(size)!
        let permissions = Self.permissions(mode)!
        guard hold else {
            let segment = try SharedMemory.create(name: name, size: bytes, permissions: permissions, group: group, lifetime: .persistent)
            segment.close()
            say("created \(name) (\(bytes) bytes, persistent)")
            return
        }
        // Block the signals before the segment exists, so that no signal can end the process while
        // it holds the segment without closing it.
        let signals = TerminationSignals.block()
        let segment = try SharedMemory.create(name: name, size: bytes, permissions: permissions, group: group, lifetime: .whileReferenced)
        say("holding \(name) (pid \(ProcessIdentity.currentPID)); stop with Ctrl-C")
        let signal = signals.wait()
        segment.close()
        say("received \(TerminationSignals.name(of: signal)); closed \(name)")
    }

    /// Octal permission bits ("600", "0644"), or nil.
    static func permissions(_ text: String) -> FilePermissions? {
        guard !text.isEmpty, text.count <= 4, let bits = UInt16(text, radix: 8), bits <= 0o777 else { return nil }
        return FilePermissions(rawValue: CModeT(bits))
    }
}

/// Byte counts written by people: "4096", "64K", "64KiB", "16m", "1G".
enum ByteCount {
    private static let multipliers: [String: Int] = [
        "": 1, "b": 1,
        "k": 1 << 10, "kib": 1 << 10,
        "m": 1 << 20, "mib": 1 << 20,
        "g": 1 << 30, "gib": 1 << 30,
    ]

    /// The number of bytes, or nil for anything else than a positive count that fits an `Int`.
    static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces
        let digits = trimmed.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let number = Int(digits),
              let multiplier = multipliers[trimmed.dropFirst(digits.count).lowercased()]
        else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow, bytes > 0 else { return nil }
        return bytes
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        let start = firstIndex(where: { $0 != " " }) ?? endIndex
        let end = lastIndex(where: { $0 != " " }).map { index(after: $0) } ?? start
        return self[start..<end]
    }
}
