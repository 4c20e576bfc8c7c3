#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

// What the readiness-descriptor suites of every kind (channel, message queue, service, broadcast)
// look at from outside: `ipc inspect`'s details, whether a descriptor is readable, and the socket
// files in this user's runtime directory.

/// The lines of `ipc inspect` whose key starts with `key` (`participant.`, `subscriber.`) and that
/// name `pid`.
func inspectLines(_ name: String, _ key: String, pid: Int32) -> [String] {
    details(name).filter { $0.key.hasPrefix(key) && $0.value.hasPrefix("pid \(pid) ") }.map(\.value)
}

/// Whether `fd` is readable within `milliseconds` (0: now). The bound is an upper bound only.
func isReadable(_ fd: FileDescriptor, within milliseconds: Int32) -> Bool {
    var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
    while true {
        let ready = poll(&entry, 1, milliseconds)
        if ready < 0 && errno == EINTR { continue }
        return ready > 0 && entry.revents & Int16(POLLIN) != 0
    }
}

/// The files of this user's runtime directory whose names start with `prefix`.
func runtimeFiles(prefix: String) -> Set<String> {
    let directory = (LocalPath.environment("INTERPROCESS_RUNTIME_DIR").flatMap { $0.isEmpty ? nil : $0 })
        ?? LocalPath.environment("XDG_RUNTIME_DIR").map { $0 + "/interprocess" }
        ?? "/tmp/interprocess-\(getuid())"
    return Set(LocalPath.entries(of: directory).filter { $0.hasPrefix(prefix) })
}

/// The readiness socket files of the object `name` (what a registration leaves in the runtime
/// directory): `<kind>-<FNV-1a 64 of the name, 16 hex>-<number>`, `kind` being `ready` (channels),
/// `mqready`, `srvready` or `bcready`.
func readinessFiles(_ name: String, kind: String) -> Set<String> {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
    let digits = String(hash, radix: 16)
    return runtimeFiles(prefix: kind + "-" + String(repeating: "0", count: 16 - digits.count) + digits + "-")
}
