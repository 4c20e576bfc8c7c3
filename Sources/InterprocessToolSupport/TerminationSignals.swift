#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// `sigset_t` is plain data.
extension sigset_t: @retroactive @unchecked Sendable {}

/// SIGINT and SIGTERM, blocked so that they can be received synchronously with `sigwait` instead of
/// ending the process (no handler, no busy loop, no run loop).
///
/// Block them on the main thread before starting threads or acquiring anything that must be
/// released: threads created afterwards inherit the mask, so no thread takes the default action.
package struct TerminationSignals: Sendable {
    private let set: sigset_t

    /// Blocks SIGINT and SIGTERM in the calling thread.
    package static func block() -> TerminationSignals {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        let rc = pthread_sigmask(SIG_BLOCK, &set, nil)
        precondition(rc == 0, "pthread_sigmask failed: \(rc)")
        return TerminationSignals(set: set)
    }

    /// Waits for SIGINT or SIGTERM and returns which arrived.
    package func wait() -> Int32 {
        var set = self.set
        var signal: Int32 = 0
        while sigwait(&set, &signal) != 0 {}
        return signal
    }

    /// "SIGINT", "SIGTERM", or "signal N".
    package static func name(of signal: Int32) -> String {
        switch signal {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        default: "signal \(signal)"
        }
    }
}
