import InterprocessSystem
import SystemPackage

/// The per-user directory where named local objects live when they are given a name rather than a
/// path: ``LocalSocketListener/listen(name:backlog:)``, ``NamedPipe/create(name:permissions:)``,
/// ``SingleInstance``, and what `ipc ls` lists.
///
/// It is, in order: `$INTERPROCESS_RUNTIME_DIR` if set; `$XDG_RUNTIME_DIR/interprocess` if
/// `XDG_RUNTIME_DIR` is set (a systemd user session's private tmpfs); else `/tmp/interprocess-UID`.
/// It is created owner-only (0700) on first use, and refused (`permissionDenied`) if it is a
/// symbolic link, not a directory, owned by another user, or open to other users: a directory that
/// someone else made could hold their sockets under our names.
enum LocalDirectory {
    /// The directory's path (it may not exist yet).
    static var path: String {
        if let explicit = LocalPath.environment("INTERPROCESS_RUNTIME_DIR"), !explicit.isEmpty { return explicit }
        if let runtime = LocalPath.environment("XDG_RUNTIME_DIR"), runtime.hasPrefix("/"),
           let status = try? LocalPath.status(runtime), status.isDirectory, status.owner == ProcessIdentity.effectiveUserID {
            return runtime + "/interprocess"
        }
        return "/tmp/interprocess-\(ProcessIdentity.effectiveUserID)"
    }

    /// The directory, created if missing and checked.
    static func ensure() throws(InterprocessError) -> String {
        let path = Self.path
        do { try LocalPath.makeDirectory(path, permissions: .ownerReadWriteExecute) } catch {
            if error != .fileExists { throw InterprocessError(.makeDirectory, error, objectName: path, detail: "could not create the runtime directory") }
        }
        try check(path)
        return path
    }

    /// Throws `permissionDenied` unless `path` is a directory of ours that nobody else may enter.
    static func check(_ path: String) throws(InterprocessError) {
        let status = try perform(.statPath, name: path) { () throws(Errno) in try LocalPath.status(path) }
        guard status.isDirectory else {
            throw InterprocessError(.permissionDenied, objectName: path, detail: "the runtime directory is not a directory (a link or a file was put there)")
        }
        guard status.owner == ProcessIdentity.effectiveUserID else {
            throw InterprocessError(.permissionDenied, objectName: path, detail: "the runtime directory belongs to user \(status.owner)")
        }
        guard status.mode & 0o077 == 0 else {
            throw InterprocessError(.permissionDenied, objectName: path, detail: "the runtime directory is open to other users (mode \(String(status.mode & 0o777, radix: 8)))")
        }
    }

    /// The path of the object `name` with `suffix` in the directory (created if needed), after
    /// checking the name: 1 to 255 bytes, no '/', no NUL, not "." or "..".
    static func path(for name: String, suffix: String) throws(InterprocessError) -> String {
        if let problem = SharedMemory.validationProblem(name) {
            throw InterprocessError(.invalidName, objectName: name.replacingNulls, detail: problem)
        }
        return try ensure() + "/" + name + suffix
    }

    /// The suffix of a named socket's file.
    static let socketSuffix = ".sock"
    /// The suffix of a named pipe's file.
    static let pipeSuffix = ".fifo"
    /// The suffix of a single-instance application's socket file.
    static let instanceSuffix = ".instance"
    /// The suffix of the lock file beside a socket file (see `SocketFile`).
    static let lockSuffix = ".lock"
}
