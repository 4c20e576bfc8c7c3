import ArgumentParser
import Foundation
import Interprocess
import InterprocessToolSupport

/// `ipc write NAME TEXT` / `ipc write NAME --file F`: stores framed bytes, creating a persistent
/// segment just big enough if the name does not exist.
struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store text or a file's bytes in a segment (created, persistent, if missing).",
        discussion: """
            The bytes go into the segment's value frame (a 128-byte header and two slots, so that \
            readers never see a torn value; see the README), at the payload offset (see `ipc inspect`). \
            A new segment holds values of up to --capacity bytes (by default, this one's size); a \
            longer value is refused and the stored one stays.
            """
    )

    @Argument(help: "The segment's name.")
    var name: String

    @Argument(help: "The text to store (UTF-8).")
    var text: String?

    @Option(help: ArgumentHelp("Store this file's bytes instead ('-': standard input).", valueName: "path"))
    var file: String?

    @Option(help: ArgumentHelp("When creating the segment, make room for values of up to this many bytes.", valueName: "bytes"))
    var capacity: Int?

    @OptionGroup var trust: TrustOptions

    func validate() throws {
        switch (text, file) {
        case (nil, nil): throw ValidationError("give the TEXT to store or --file PATH")
        case (.some, .some): throw ValidationError("give either TEXT or --file, not both")
        default: break
        }
        if let capacity, capacity < 0 { throw ValidationError("--capacity must be at least 0") }
    }

    func run() throws {
        let bytes = try payload()
        // Open, else create, else open again…: another process may create the name between our
        // open and our create (then we write into its segment), or remove it between our create
        // and our open (then we create it). Like `SharedMemory.openOrCreate`, but a new segment is
        // created already holding the bytes, with room for --capacity (by default just these).
        for _ in 0..<64 {
            if let segment = try Self.openIfPresent(name, trusting: trust.trusted) {
                defer { segment.close() }
                try segment.write(bytes)
                say("wrote \(bytes.count) bytes to \(name)")
                return
            }
            if let size = try Self.createIfAbsent(name, holding: bytes, capacity: capacity) {
                say("created \(name) (\(size) bytes, persistent) and wrote \(bytes.count) bytes")
                return
            }
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }

    /// The segment, or nil if there is none of that name.
    private static func openIfPresent(_ name: String, trusting trust: TrustedOwners) throws(InterprocessError) -> SharedMemory? {
        do {
            return try SharedMemory.open(name: name, trusting: trust)
        } catch where error.code == .notFound {
            return nil
        }
    }

    /// Creates a persistent segment holding `bytes` and returns its size; nil if the name exists.
    private static func createIfAbsent(_ name: String, holding bytes: [UInt8], capacity: Int?) throws(InterprocessError) -> Int? {
        do {
            let segment = try SharedMemory.create(
                name: name, bytes: bytes, capacity: capacity.map { max($0, bytes.count) }, lifetime: .persistent)
            defer { segment.close() }
            return segment.size
        } catch where error.code == .alreadyExists {
            return nil
        }
    }

    private func payload() throws -> [UInt8] {
        if let text { return Array(text.utf8) }
        let path = file!
        if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
        do {
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ToolError("cannot read '\(path)': \(error.localizedDescription)")
        }
    }
}
