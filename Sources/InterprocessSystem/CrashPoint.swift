#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Named steps inside multi-step protocols where a test can have the process SIGKILL itself, to
/// prove that a peer dying at exactly that instruction wedges and corrupts nothing.
///
/// Enabled only by the environment variable `INTERPROCESS_CRASH_POINT=<name>` (read once); otherwise
/// `reached` costs one load and a compare of a nil optional.
package enum CrashPoint {
    private static let armed: String? = {
        guard let value = getenv("INTERPROCESS_CRASH_POINT") else { return nil }
        return String(cString: value)
    }()

    @inline(__always)
    package static func reached(_ name: StaticString) {
        guard let armed else { return }
        if armed == name.description { raise(SIGKILL) }
    }
}
