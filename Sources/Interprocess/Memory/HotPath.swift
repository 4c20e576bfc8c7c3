public import CInterprocess
import InterprocessSystem
public import Synchronization

/// The steps of `CrashPoint` and the fast side's barrier of `AsymmetricFence`, inlined where
/// this module's hot paths take them. A package function of another module of this package is
/// called, never inlined, even when it is `@inlinable` (no cross-module optimization of package
/// code without unsafe flags, which a package that others depend on cannot use), and a channel's
/// send + receive passes seven crash points and two fences: ~20 % of its instructions were the
/// calls. Both test a C word (`cipc_crash_points_word`, `cipc_fence_word`) through a C inline
/// function.
///
/// Inlinable (and the reason this file imports `CInterprocess` publicly): the exclusive endpoints'
/// fast paths (``ExclusiveSender``, ``ExclusiveReceiver``) run in the user's module.
@usableFromInline
enum HotPath {
    /// A crash point's step: one relaxed load and a compare while no point is armed, else
    /// `CrashPoint.reachedSlowly` (which may stop or kill this process there).
    @inlinable @inline(__always)
    static func crashPoint(_ name: StaticString) {
        if cipc_crash_points_state() != 1 { reachedSlowly(name) }
    }

    /// A crash point that some test armed: `CrashPoint.reachedSlowly` (a package function, which
    /// inlinable code cannot name).
    @usableFromInline @inline(never)
    static func reachedSlowly(_ name: StaticString) {
        CrashPoint.reachedSlowly(name)
    }

    /// The fast side's barrier between its store and its load: a compiler barrier when this process
    /// registered as a fast side (`AsymmetricFence.registerFastSide`), a full fence when it did not.
    @inlinable @inline(__always)
    static func lightFence() {
        if cipc_fence_state() == 1 { cipc_compiler_barrier() } else { atomicMemoryFence(ordering: .sequentiallyConsistent) }
    }

    /// One spin-loop hint (`SpinPolicy.pause`, which is a call from this module: the wait drivers'
    /// spins and the hot paths' short spins use this one).
    @inlinable @inline(__always)
    static func pause() {
        cipc_cpu_relax()
    }

    /// Pause rounds of the hot paths' short spins, before the general wait (which spins on, yields
    /// and parks): `SpinPolicy.contendedSpinRounds`, ~20 (none on one CPU).
    @usableFromInline static let spinRounds = SpinPolicy.contendedSpinRounds

    /// Looks at `ready` until it holds, pausing between looks at most `rounds` times; whether it held.
    @inlinable @inline(__always)
    static func spin(rounds: Int, until ready: () -> Bool) -> Bool {
        var rounds = rounds
        while !ready() {
            guard rounds > 0 else { return false }
            rounds &-= 1
            pause()
        }
        return true
    }
}
