#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
package import Synchronization

/// Named steps inside multi-step protocols where a test can have the process SIGKILL itself, to
/// prove that a peer dying at exactly that instruction wedges and corrupts nothing — or stop itself
/// (SIGSTOP), so that a test can act at exactly that moment and then let it go on (SIGCONT): how a
/// test makes a race certain without a clock deciding it.
///
/// Enabled only by the environment variables `INTERPROCESS_CRASH_POINT=<name>` and
/// `INTERPROCESS_STOP_POINT=<name>` (read once); otherwise `reached` costs a call of one relaxed
/// load and a compare (the optimizer does not inline it across modules): a statically initialized
/// word says whether the variables were read and found unset. (A lazily initialized global here cost a `swift_once` call and a copy of two
/// optional strings at every step: 17 % of a channel send + receive in one process.)
package enum CrashPoint {
    /// 0: the environment was not read yet; 1: no point is armed; 2: one is (see ``armed``).
    @usableFromInline static let state: Atomic<Int> = Atomic(0)

    private static let armed: (crash: String?, stop: String?)? = {
        let crash = getenv("INTERPROCESS_CRASH_POINT").map { String(cString: $0) }
        let stop = getenv("INTERPROCESS_STOP_POINT").map { String(cString: $0) }
        return crash == nil && stop == nil ? nil : (crash, stop)
    }()

    @inlinable @inline(__always)
    package static func reached(_ name: StaticString) {
        if state.load(ordering: .relaxed) == 1 { return }
        reachedSlowly(name)
    }

    @usableFromInline @inline(never)
    static func reachedSlowly(_ name: StaticString) {
        guard let armed else {
            state.store(1, ordering: .relaxed)
            return
        }
        state.store(2, ordering: .relaxed)
        if armed.crash == name.description { raise(SIGKILL) }
        if armed.stop == name.description { raise(SIGSTOP) }
    }

    /// The crash point armed by `INTERPROCESS_CRASH_POINT`, for code that numbers its points itself
    /// (the shared heap names each write of its journal: `heap.free#3`); nil when none is armed.
    package static var armedCrashName: String? { armed?.crash }

    /// SIGKILLs this process now: the caller has matched ``armedCrashName`` itself.
    package static func crashNow() { raise(SIGKILL) }
}
