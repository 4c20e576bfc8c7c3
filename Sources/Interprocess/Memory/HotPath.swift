import CInterprocess
import InterprocessSystem
import Synchronization

/// The steps of `CrashPoint` and the fast side's barrier of `AsymmetricFence`, inlined where
/// this module's hot paths take them. A package function of another module of this package is
/// called, never inlined, even when it is `@inlinable` (no cross-module optimization of package
/// code without unsafe flags, which a package that others depend on cannot use), and a channel's
/// send + receive passes seven crash points and two fences: ~20 % of its instructions were the
/// calls. Both test a C word (`cipc_crash_points_word`, `cipc_fence_word`) through a C inline
/// function.
enum HotPath {
    /// A crash point's step: one relaxed load and a compare while no point is armed, else
    /// `CrashPoint.reachedSlowly` (which may stop or kill this process there).
    @inline(__always)
    static func crashPoint(_ name: StaticString) {
        if cipc_crash_points_state() != 1 { CrashPoint.reachedSlowly(name) }
    }

    /// The fast side's barrier between its store and its load: a compiler barrier when this process
    /// registered as a fast side (`AsymmetricFence.registerFastSide`), a full fence when it did not.
    @inline(__always)
    static func lightFence() {
        if cipc_fence_state() == 1 { cipc_compiler_barrier() } else { atomicMemoryFence(ordering: .sequentiallyConsistent) }
    }
}
