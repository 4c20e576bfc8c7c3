#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Named steps inside multi-step protocols where a test can have the process SIGKILL itself, to
/// prove that a peer dying at exactly that instruction wedges and corrupts nothing — or stop itself
/// (SIGSTOP), so that a test can act at exactly that moment and then let it go on (SIGCONT): how a
/// test makes a race certain without a clock deciding it.
///
/// Enabled only by the environment variables `INTERPROCESS_CRASH_POINT=<name>` and
/// `INTERPROCESS_STOP_POINT=<name>` (read once); otherwise `reached` costs one load and a compare of
/// a nil optional.
package enum CrashPoint {
    private static let armed: (crash: String?, stop: String?)? = {
        let crash = getenv("INTERPROCESS_CRASH_POINT").map { String(cString: $0) }
        let stop = getenv("INTERPROCESS_STOP_POINT").map { String(cString: $0) }
        return crash == nil && stop == nil ? nil : (crash, stop)
    }()

    @inline(__always)
    package static func reached(_ name: StaticString) {
        guard let armed else { return }
        if armed.crash == name.description { raise(SIGKILL) }
        if armed.stop == name.description { raise(SIGSTOP) }
    }

    /// The crash point armed by `INTERPROCESS_CRASH_POINT`, for code that numbers its points itself
    /// (the shared heap names each write of its journal: `heap.free#3`); nil when none is armed.
    package static var armedCrashName: String? { armed?.crash }

    /// SIGKILLs this process now: the caller has matched ``armedCrashName`` itself.
    package static func crashNow() { raise(SIGKILL) }
}
