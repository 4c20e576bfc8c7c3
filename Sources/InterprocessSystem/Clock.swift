#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Clocks in nanoseconds.
package enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds: for deadlines.
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

    /// A monotonic deadline `duration` from now, saturating (nil duration: no deadline).
    package static func deadline(after duration: Duration?) -> UInt64 {
        guard let duration else { return .max }
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return monotonicNanoseconds() }
        let nanos = UInt64(clamping: seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if nanos.overflow { return .max }
        let total = nanos.partialValue.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        if total.overflow { return .max }
        let deadline = monotonicNanoseconds().addingReportingOverflow(total.partialValue)
        return deadline.overflow ? .max : deadline.partialValue
    }

    /// Sleeps the calling thread (not for async code).
    package static func sleep(nanoseconds: UInt64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var rest = timespec()
        while nanosleep(&ts, &rest) == -1 && errno == EINTR { ts = rest }
    }
}
