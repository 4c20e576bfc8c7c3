import InterprocessSystem

/// The named local objects of this user — listening sockets, bound datagram sockets, single-instance
/// sockets, FIFOs — in the per-user runtime directory, as `ipc ls` and `ipc gc` see them.
///
/// Objects created by path elsewhere are not listed (only their creator knows where they are).
public enum LocalObjects {
    /// The per-user runtime directory where objects created by name live: `$INTERPROCESS_RUNTIME_DIR`
    /// if set; else `$XDG_RUNTIME_DIR/interprocess`; else `/tmp/interprocess-UID`. Created owner-only
    /// (0700) on first use; refused if it is a link, another user's, or open to others.
    public static var directory: String { LocalDirectory.path }

    /// One socket file or FIFO in the runtime directory.
    public struct Info: Sendable, Hashable, Codable {
        /// The file's name in the runtime directory.
        public var name: String
        /// Its full path.
        public var path: String
        /// "socket" or "fifo".
        public var kind: String
        /// For a socket: "listening" (a live server holds its lock), "stale" (its server is gone:
        /// `ipc gc` removes it, the next server replaces it), or "unknown" (no lock file, and it
        /// answers a connection: a server that is not ours). For a FIFO: "fifo".
        public var state: String
        /// The pid of the server that holds a socket's lock (what it wrote when it started).
        public var serverPID: Int32?
        /// Permission bits, in octal ("0600").
        public var permissions: String
        /// The file owner's user id.
        public var owner: UInt32
    }

    /// The sockets and FIFOs in the runtime directory, by name.
    public static func list() -> [Info] {
        let directory = LocalDirectory.path
        guard (try? LocalDirectory.check(directory)) != nil else { return [] }
        return LocalPath.entries(of: directory).compactMap { info(directory: directory, name: $0) }
    }

    /// Removes socket files (and their lock files) in the runtime directory whose server is gone:
    /// no process holds the lock and nobody answers a connection. Never removes a FIFO, a live
    /// server's socket, or anything that is not a socket.
    /// - Parameters:
    ///   - dryRun: only report what would be removed.
    ///   - prefix: only consider names that start with it.
    /// - Returns: what was (or would be) removed.
    @discardableResult
    public static func collectGarbage(dryRun: Bool = false, prefix: String = "") -> [Info] {
        list().filter { $0.kind == "socket" && $0.state == "stale" && $0.name.hasPrefix(prefix) }.filter { info in
            dryRun || SocketFile.removeIfStale(path: info.path)
        }
    }

    private static func info(directory: String, name: String) -> Info? {
        let path = directory + "/" + name
        guard let status = try? LocalPath.status(path) else { return nil }
        let permissions = "0" + String(status.mode & 0o777, radix: 8)
        if status.isFIFO {
            return Info(name: name, path: path, kind: "fifo", state: "fifo", serverPID: nil, permissions: permissions, owner: status.owner)
        }
        guard status.isSocket else { return nil }
        var state = "unknown"
        var pid: Int32?
        if let lock = SocketFile.lockStatus(path: path) {
            state = lock.held ? "listening" : "stale"
            pid = lock.held ? lock.pid : nil
        } else if case .refused = SocketFile.probe(path: path, kind: .stream), case .refused = SocketFile.probe(path: path, kind: .datagram) {
            state = "stale"
        }
        return Info(name: name, path: path, kind: "socket", state: state, serverPID: pid, permissions: permissions, owner: status.owner)
    }
}
