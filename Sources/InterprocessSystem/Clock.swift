#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Clocks in nanoseconds.
package enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds: for measuring (deadlines are ``Deadline``s).
    @inline(__always)
    package static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// CLOCK_REALTIME in nanoseconds since the epoch: for timestamps that people read.
    package static func realtimeNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Sleeps the calling thread (not for async code).
    package static func sleep(nanoseconds: UInt64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var rest = timespec()
        while nanosleep(&ts, &rest) == -1 && errno == EINTR { ts = rest }
    }

    /// Sleeps the calling thread for `nanoseconds`, but not past `deadline` (not for async code).
    package static func sleep(nanoseconds: UInt64, before deadline: Deadline) {
        sleep(nanoseconds: min(nanoseconds, deadline.remainingNanoseconds))
    }
}
