#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess

/// Named steps inside multi-step protocols where a test can have the process SIGKILL itself, to
/// prove that a peer dying at exactly that instruction wedges and corrupts nothing — or stop itself
/// (SIGSTOP), so that a test can act at exactly that moment and then let it go on (SIGCONT): how a
/// test makes a race certain without a clock deciding it.
///
/// Enabled only by the environment variables `INTERPROCESS_CRASH_POINT=<name>` and
/// `INTERPROCESS_STOP_POINT=<name>` (read once); otherwise a step costs one relaxed load of a C word
/// and a compare, inlined where the step is (`HotPath.crashPoint` in the library). (A lazily
/// initialized global here cost a `swift_once` call and a copy of two optional strings at every
/// step: 17 % of a channel send + receive in one process; the word is C's `cipc_crash_points_word`
/// — 0 not read yet, 1 no point armed, 2 one is — because a package function of this module, even
/// `@inlinable`, is called from the others, not inlined.)
package enum CrashPoint {
    private static let armed: (crash: String?, stop: String?)? = {
        let crash = getenv("INTERPROCESS_CRASH_POINT").map { String(cString: $0) }
        let stop = getenv("INTERPROCESS_STOP_POINT").map { String(cString: $0) }
        return crash == nil && stop == nil ? nil : (crash, stop)
    }()

    /// What a step does once `cipc_crash_points_word` is not 1 (the step itself tests the word
    /// inline: `HotPath.crashPoint` in the library): reads the environment the first time, then
    /// stops or kills this process if `name` is the armed point.
    @inline(never)
    package static func reachedSlowly(_ name: StaticString) {
        guard let armed else {
            cipc_set_crash_points_state(1)
            return
        }
        cipc_set_crash_points_state(2)
        if armed.crash == name.description { raise(SIGKILL) }
        if armed.stop == name.description { raise(SIGSTOP) }
    }

    /// The crash point armed by `INTERPROCESS_CRASH_POINT`, for code that numbers its points itself
    /// (the shared heap names each write of its journal: `heap.free#3`); nil when none is armed.
    package static var armedCrashName: String? { armed?.crash }

    /// SIGKILLs this process now: the caller has matched ``armedCrashName`` itself.
    package static func crashNow() { raise(SIGKILL) }
}
