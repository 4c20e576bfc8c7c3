import ArgumentParser
import Foundation
import Interprocess

/// `ipc write NAME TEXT` / `ipc write NAME --file F`: stores framed bytes, creating a persistent
/// segment just big enough if the name does not exist.
struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store text or a file's bytes in a segment (created, persistent, if missing).",
        discussion: """
            The bytes are framed: an 8-byte little-endian length, then the bytes, at the payload \
            offset (see `ipc inspect`).
            """
    )

    @Argument(help: "The segment's name.")
    var name: String

    @Argument(help: "The text to store (UTF-8).")
    var text: String?

    @Option(help: ArgumentHelp("Store this file's bytes instead ('-': standard input).", valueName: "path"))
    var file: String?

    func validate() throws {
        switch (text, file) {
        case (nil, nil): throw ValidationError("give the TEXT to store or --file PATH")
        case (.some, .some): throw ValidationError("give either TEXT or --file, not both")
        default: break
        }
    }

    func run() throws {
        let bytes = try payload()
        if let segment = try Self.openIfPresent(name) {
            defer { segment.close() }
            try segment.write(bytes)
            say("wrote \(bytes.count) bytes to \(name)")
        } else {
            let segment = try SharedMemory.create(name: name, bytes: bytes, lifetime: .persistent)
            let size = segment.size
            segment.close()
            say("created \(name) (\(size) bytes, persistent) and wrote \(bytes.count) bytes")
        }
    }

    /// The segment, or nil if there is none of that name.
    private static func openIfPresent(_ name: String) throws(InterprocessError) -> SharedMemory? {
        do {
            return try SharedMemory.open(name: name)
        } catch where error.code == .notFound {
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
