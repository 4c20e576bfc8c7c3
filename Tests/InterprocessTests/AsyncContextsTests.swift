#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// Issue 16: the `async` verbs must be callable from every context a program calls them from. The
/// `InterprocessAsyncContexts` executable calls each of them from top-level code, an `async`
/// function, an actor's method and a `Task { }`; that the package builds is the compile-time half of
/// this test, running it (against names unique to this run) the other.
@Suite("Async verbs in every context")
struct AsyncContextsTests {
    @Test func everyAsyncVerbRunsFromEachContext() throws {
        try withCleanNames("async-contexts") { prefix in
            guard let path = BuiltExecutable.path(of: "InterprocessAsyncContexts") else {
                Issue.record("InterprocessAsyncContexts not found near \(BuiltExecutable.directory)")
                return
            }
            let lockFile = "/tmp/\(prefix).lock"
            let result = try ChildProcess.run(path, [prefix, lockFile], timeout: .seconds(120))
            #expect(result.termination == .exited(0), "stderr: \(result.standardError)")
            #expect(result.standardOutput == """
                top-level code: ok
                async function: ok
                actor method: ok
                task: ok
                done

                """)
            let left = LocalObjects.list().filter { $0.name.hasPrefix(prefix) }
            #expect(left.isEmpty, "left in \(LocalObjects.directory): \(left.map(\.name))")
            // After a failure: what the run left behind (its /dev/shm objects go in withCleanNames).
            _ = LocalObjects.collectGarbage(prefix: prefix)
            for name in left where name.kind == "fifo" { try? NamedPipe.remove(path: name.path) }
            #expect(access(lockFile, F_OK) != 0, "\(lockFile) was left")
            unlink(lockFile)
        }
    }
}
