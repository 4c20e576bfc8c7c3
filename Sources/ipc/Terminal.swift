/// What `ipc` prints is made safe for a terminal here.
///
/// Names come from the command line, from file names in the shared memory directory and (for
/// details) from files other users can write; any of them may hold escape sequences, line breaks or
/// bidirectional overrides that would repaint the terminal, forge lines or reorder text. Every line
/// the tool prints goes through ``escape(_:keepingNewlines:)`` (``say(_:)`` and ``complain(_:)`` call
/// it), JSON through ``escapeJSON(_:)``, and stored data that `ipc read` shows on a terminal through
/// ``escapeData(_:keepingLineBreaks:)``.
///
/// Escaping is idempotent: what it produces contains nothing it would escape again, so a value that
/// was escaped for alignment (the `ipc ls` table) passes through ``say(_:)`` unchanged. The price is
/// that a backslash is not itself escaped: a name spelled with a backslash and an `n` looks like
/// one with a line feed in it.
enum Terminal {
    /// Whether a scalar must not reach a terminal as it is: C0 controls, DEL, C1 controls, the line
    /// and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
    static func mustEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x2028, 0x2029: true
        case 0x202A...0x202E, 0x2066...0x2069: true
        case 0x200E, 0x200F, 0x061C: true
        default: false
        }
    }

    /// `text` with every scalar that ``mustEscape(_:)`` names written as a visible escape: `\t`,
    /// `\n`, `\r`, `\e` (ESC), `\u{7F}`, `\u{9B}`, `\u{202E}`… With `keepingNewlines`, line feeds
    /// stay as they are (for text whose lines are the tool's own, such as ArgumentParser's usage).
    static func escape(_ text: some StringProtocol, keepingNewlines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: mustEscape) else { return String(text) }
        var result = ""
        result.reserveCapacity(text.utf8.count + 16)
        for scalar in text.unicodeScalars {
            if keepingNewlines, scalar == "\n" {
                result.unicodeScalars.append(scalar)
            } else if mustEscape(scalar) {
                result += visible(scalar)
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// Bytes that should be UTF-8 text, escaped like ``escape(_:keepingNewlines:)``, with each byte
    /// that is not part of valid UTF-8 written as `\xFF`. With `keepingLineBreaks`, line feeds and
    /// tabs stay as they are (stored text shown by `ipc read`).
    static func escapeData(_ bytes: some Collection<UInt8>, keepingLineBreaks: Bool = false) -> String {
        var result = ""
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var pending = Array(bytes)[...]  // the bytes not yet consumed, to show the invalid ones
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded):
                let scalar = Unicode.UTF8.decode(encoded)
                pending = pending.dropFirst(encoded.count)
                if keepingLineBreaks, scalar == "\n" || scalar == "\t" {
                    result.unicodeScalars.append(scalar)
                } else if mustEscape(scalar) {
                    result += visible(scalar)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            case .error(let length):
                for byte in pending.prefix(length) { result += "\\x" + hex(byte, width: 2) }
                pending = pending.dropFirst(length)
            case .emptyInput:
                return result
            }
        }
    }

    /// JSON text (as the encoder wrote it) with the scalars that ``mustEscape(_:)`` names and that the
    /// encoder leaves raw (DEL, C1, separators, bidirectional controls) written as `\uXXXX`. They
    /// can only occur inside strings, where the escape means the same character; the encoder
    /// already escapes C0 controls there, and the line feeds and spaces between tokens stay.
    static func escapeJSON(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: { $0.value >= 0x7F && mustEscape($0) }) else { return json }
        var result = ""
        result.reserveCapacity(json.utf8.count + 16)
        for scalar in json.unicodeScalars {
            if scalar.value >= 0x7F, mustEscape(scalar) {
                result += "\\u" + hex(scalar.value, width: 4).lowercased()
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private static func visible(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\t": "\\t"
        case "\n": "\\n"
        case "\r": "\\r"
        case "\u{1B}": "\\e"
        default: "\\u{" + hex(scalar.value, width: 0) + "}"
        }
    }

    private static func hex(_ value: some BinaryInteger, width: Int) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

/// The command line as the kernel gave it, checked before ArgumentParser sees it: Swift decodes
/// `argv` with repair, which would silently turn a name that is not UTF-8 into one with U+FFFD in it
/// (and so create, open or remove a different object than the one asked for).
enum RawArguments {
    /// An argument that is not valid UTF-8.
    struct NotUTF8: Error, CustomStringConvertible {
        /// Its position (1 is the first after the program name).
        var position: Int
        var bytes: [UInt8]

        var description: String {
            "argument \(position) is not valid UTF-8: '\(Terminal.escapeData(bytes))'; "
                + "names and text must be UTF-8 (this tool refuses rather than change them)"
        }
    }

    /// The arguments after the program name, or the first one that is not valid UTF-8.
    static func decode() -> Result<[String], NotUTF8> {
        var arguments: [String] = []
        let argv = CommandLine.unsafeArgv
        for index in stride(from: 1, to: Int(CommandLine.argc), by: 1) {  // argc may even be 0
            guard let pointer = argv[index] else { break }
            var bytes: [UInt8] = []
            var offset = 0
            while pointer[offset] != 0 {
                bytes.append(UInt8(bitPattern: pointer[offset]))
                offset += 1
            }
            guard let argument = String(validating: bytes, as: UTF8.self) else {
                return .failure(NotUTF8(position: index, bytes: bytes))
            }
            arguments.append(argument)
        }
        return .success(arguments)
    }
}
