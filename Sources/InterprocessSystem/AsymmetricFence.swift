import CInterprocess
import Synchronization

/// A store→load barrier split unevenly between two sides (Linux `membarrier`): a *fast side* that
/// runs on every message and pays nothing — no locked instruction, no fence — and a *slow side*
/// (a waiter about to park, a closer) that pays a system call instead.
///
/// The pattern it serves is Dekker's: the fast side stores A and then loads B, the slow side stores
/// B and then loads A, and at least one of them must see the other's store. Plain x86 stores may
/// still sit in the store buffer when the following load runs, so without a barrier both can miss.
/// With ``heavy()`` on the slow side between its store and its load, every thread of every
/// registered process executes a full barrier at some point during the call: either the fast side's
/// store came before that point (and the slow side's load sees it), or its load comes after it (and
/// sees the slow side's store). The fast side only has to have been registered, once per process,
/// *before* it relies on this (``registerFastSide()``). The fast side's own barrier, between its
/// store and its load, is in the library, inlined where it runs (`HotPath.lightFence`): a compiler
/// barrier once this process is registered, a full fence if it is not.
///
/// Both calls fail on kernels without `membarrier` (before 4.16 for the expedited global command) and
/// under seccomp filters that refuse it; callers then fall back to fences on the fast side, or to
/// bounded waits on the slow side.
package enum AsymmetricFence {
    /// Registers this process as a fast side (idempotent; one system call the first time). Whether
    /// it is registered: if not, the fast side must use a full fence instead. The state is
    /// `cipc_fence_word` (0: not tried; 1: registered; 2: refused), a C word so that the library's
    /// hot paths test it inline (`HotPath.lightFence`).
    package static func registerFastSide() -> Bool {
        switch cipc_fence_state() {
        case 1: return true
        case 2: return false
        default:
            let registered = cipc_membarrier_register_global() == 0
            cipc_set_fence_state(registered ? 1 : 2)
            return registered
        }
    }

    /// The slow side's barrier: returns true once every running thread of every registered process
    /// has executed a full memory barrier; false if the kernel refused (then nothing is promised).
    @inline(never)
    package static func heavy() -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return cipc_membarrier_global() == 0
    }
}
