import Testing
import Interprocess

/// The error-handling form that the README and ``InterprocessError``'s doc comment show, compiled
/// where the filtered forms (`catch where error.code == …`, `catch InterprocessError.Code.notFound`)
/// crash Swift 6.3.1: a generic `async` method that assigns a variable inside the `do` (issue 17,
/// point 7). That this file builds is half of the test; the other half runs it.
private struct Loader<Value: Codable & Sendable & Equatable> {
    func load(name: String) async throws -> Value? {
        var result: Value? = nil
        do {
            let segment = try SharedMemory.open(name: name)
            defer { segment.close() }
            result = try segment.load(Value.self)
        } catch {
            if error.code == .notFound { result = nil } else { throw error }
        }
        return result
    }
}

@Suite("Doc examples")
struct DocExampleTests {
    @Test func theDocumentedNotFoundFormCompilesAndWorksInAGenericAsyncFunction() async throws {
        let name = TestNames.make("doc-notfound")
        #expect(try await Loader<[Int]>().load(name: name) == nil)
        let segment = try SharedMemory.create(name: name, storing: [1, 2, 3])
        defer { segment.close() }
        #expect(try await Loader<[Int]>().load(name: name) == [1, 2, 3])
        await #expect(throws: InterprocessError.self) { try await Loader<String>().load(name: name) }
    }
}
