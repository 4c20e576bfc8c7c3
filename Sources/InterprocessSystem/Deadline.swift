#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// When a wait must end: an absolute CLOCK_MONOTONIC time, or ``never``.
///
/// The one time type of every wait. A caller's `Duration` timeout becomes a deadline once, at the
/// public API (``init(after:)``), and that deadline travels unchanged to the kernel: the futex waits
/// take it as absolute monotonic time (`FUTEX_WAIT_BITSET`, `futex_waitv`), so a wait that a signal
/// interrupts (EINTR) or that wakes spuriously parks again for exactly what is left; `poll`, which
/// only takes a relative timeout, gets ``pollMilliseconds`` computed right before each call.
package struct Deadline: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// CLOCK_MONOTONIC nanoseconds; `UInt64.max` for ``never``.
    package let nanoseconds: UInt64

    @inline(__always)
    package init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    /// No deadline: wait as long as it takes.
    package static var never: Deadline { Deadline(nanoseconds: .max) }

    /// The current monotonic time (a deadline that has just passed).
    package static var now: Deadline { Deadline(nanoseconds: Clock.monotonicNanoseconds()) }

    /// `timeout` from now (nil: ``never``). Saturates: a timeout too long to represent is ``never``;
    /// a zero or negative one is now (already passed: a wait makes one attempt and times out).
    @inline(__always)
    package init(after timeout: Duration?) {
        guard let timeout else {
            self = .never
            return
        }
        self = Deadline.now.advanced(by: timeout)
    }

    /// `nanoseconds` from now, saturating at ``never``.
    package static func after(nanoseconds: UInt64) -> Deadline {
        Deadline.now.advanced(byNanoseconds: nanoseconds)
    }

    /// This deadline moved `duration` later, saturating (a negative duration: unchanged).
    package func advanced(by duration: Duration) -> Deadline {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return self }
        let whole = UInt64(clamping: seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if whole.overflow { return .never }
        let total = whole.partialValue.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        if total.overflow { return .never }
        return advanced(byNanoseconds: total.partialValue)
    }

    /// This deadline moved `delta` nanoseconds later, saturating at ``never``.
    package func advanced(byNanoseconds delta: UInt64) -> Deadline {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(delta)
        return overflow ? .never : Deadline(nanoseconds: sum)
    }

    /// Whether this is ``never``.
    @inline(__always)
    package var isNever: Bool { nanoseconds == .max }

    /// Whether the deadline has passed (one clock read; never for ``never``).
    package var hasPassed: Bool { !isNever && Clock.monotonicNanoseconds() >= nanoseconds }

    /// Nanoseconds left from now: 0 once passed, `UInt64.max` for ``never``.
    package var remainingNanoseconds: UInt64 {
        if isNever { return .max }
        let now = Clock.monotonicNanoseconds()
        return nanoseconds > now ? nanoseconds - now : 0
    }

    /// What is left as a `poll` timeout, computed now: whole milliseconds rounded up (so that a wait
    /// never ends before the deadline), -1 for ``never``, 0 once passed.
    package var pollMilliseconds: CInt {
        if isNever { return -1 }
        let left = remainingNanoseconds
        return left == 0 ? 0 : CInt(clamping: left / 1_000_000 + (left % 1_000_000 == 0 ? 0 : 1))
    }

    /// The absolute time as the futex shims take it (`cipc_futex_wait`, `cipc_futex_waitv`):
    /// CLOCK_MONOTONIC nanoseconds, -1 for ``never``.
    @inline(__always)
    package var kernelNanoseconds: Int64 { isNever ? -1 : Int64(clamping: nanoseconds) }

    package static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    package var description: String { isNever ? "never" : "monotonic \(nanoseconds) ns" }
}
