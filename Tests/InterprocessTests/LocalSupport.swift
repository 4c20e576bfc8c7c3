// Support for the local IPC tests (file locks, pipes, sockets, single instance). Files that use the
// public `FileLock` import Interprocess but not InterprocessSystem, whose package `FileLock` has the
// same name.
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// A fresh directory under /tmp, owner-only, unique to this run and test: "/tmp/ipct-PID-TAG-N".
/// `body` gets its path; afterwards the test expects it empty (everything created was removed), and
/// removes it and anything left in it.
func withLocalDirectory(
    _ tag: String, expectEmpty: Bool = true, sourceLocation: SourceLocation = #_sourceLocation, _ body: (String) throws -> Void
) throws {
    let path = "/tmp/" + TestNames.make(tag)
    #expect(mkdir(path, 0o700) == 0, "mkdir \(path): errno \(errno)", sourceLocation: sourceLocation)
    defer {
        let left = directoryEntries(path)
        if expectEmpty { #expect(left.isEmpty, "left in \(path): \(left)", sourceLocation: sourceLocation) }
        for name in left { unlink(path + "/" + name) }
        rmdir(path)
    }
    try body(path)
}

/// The async form of ``withLocalDirectory(_:expectEmpty:sourceLocation:_:)``.
func withLocalDirectory(
    _ tag: String, expectEmpty: Bool = true, sourceLocation: SourceLocation = #_sourceLocation, _ body: (String) async throws -> Void
) async throws {
    let path = "/tmp/" + TestNames.make(tag)
    #expect(mkdir(path, 0o700) == 0, "mkdir \(path): errno \(errno)", sourceLocation: sourceLocation)
    defer {
        let left = directoryEntries(path)
        if expectEmpty { #expect(left.isEmpty, "left in \(path): \(left)", sourceLocation: sourceLocation) }
        for name in left { unlink(path + "/" + name) }
        rmdir(path)
    }
    try await body(path)
}

/// The names in a directory, without "." and "..".
func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// The permission bits and type of what `path` names (not following a link), or nil.
func fileMode(_ path: String) -> (type: mode_t, permissions: mode_t)? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return (st.st_mode & S_IFMT, st.st_mode & 0o7777)
}
