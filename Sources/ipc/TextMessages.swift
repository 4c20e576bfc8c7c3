import Foundation
import Interprocess
import InterprocessToolSupport

/// What `ipc send` and `ipc publish` share: the messages (each TEXT, or each line of standard
/// input) checked against the format the object carries, and `--create`'s open-or-create loop.
enum TextMessages {
    /// Passes the UTF-8 bytes of each text (none given: of each line of standard input) to
    /// `deliver`, in order, and returns how many it passed. To an object of JSON messages each
    /// message must be JSON, checked before it is passed (`name` is the object's, for the error).
    static func deliverEach(
        _ texts: [String], format: ChannelMessageFormat, name: String, _ deliver: ([UInt8]) async throws -> Void
    ) async throws -> Int {
        var delivered = 0
        var remaining = texts[...]
        while true {
            let text: String
            if texts.isEmpty {
                guard let line = readLine(strippingNewline: true) else { break }
                text = line
            } else {
                guard let next = remaining.popFirst() else { break }
                text = next
            }
            let bytes = Array(text.utf8)
            if format == .json, (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) == nil {
                throw ToolError("message \(delivered + 1) is not JSON, which '\(name)' carries: \(text)")
            }
            try await deliver(bytes)
            delivered += 1
        }
        return delivered
    }

    /// Opens `name` with `open`; if there is none, makes it with `create` (which leaves a
    /// persistent object and detaches from it) and opens that. Of racing tools exactly one creates;
    /// one that finds it gone again tries again, up to 64 times.
    static func openCreatingIfMissing<Object>(
        name: String, open: () throws(InterprocessError) -> Object, create: () throws(InterprocessError) -> Void
    ) throws(InterprocessError) -> Object {
        for _ in 0..<64 {
            switch Result(catching: open) {
            case .success(let object): return object
            case .failure(let error) where error.code == .notFound: break
            case .failure(let error): throw error
            }
            switch Result(catching: create) {
            case .success: break
            case .failure(let error) where error.code == .alreadyExists: break
            case .failure(let error): throw error
            }
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }
}
