import Synchronization

/// What an async waiter keeps under its lock: its registrations, however it indexes them
/// (``AsyncFutexWaiter`` by futex word and thread, ``AsyncDescriptorWaiter`` in one dictionary).
/// ``AsyncWaitTable`` does the rest, which both share: ids, the continuation dance, and exact
/// cancellation.
package protocol AsyncWaitCore: Sendable {
    /// What one wait asks for (a word and its expected value, a descriptor and its events), with
    /// its deadline.
    associatedtype Request: Sendable
    /// How a wait ends; ``cancelled`` is one of them.
    associatedtype Outcome: Sendable
    /// What the caller must do once the lock is released for the waiter thread(s) to see a change:
    /// wake a thread, start one.
    associatedtype Wakeup: Sendable

    /// The outcome of a cancelled wait.
    static var cancelled: Outcome { get }

    /// Stores a wait under `id` (unique for the table's life), to be resumed exactly once through
    /// `continuation` by the waiter's thread, or handed back by ``unregister(_:)``.
    mutating func register(_ request: Request, id: UInt64, continuation: CheckedContinuation<Outcome, Never>) -> Wakeup?

    /// Removes the wait `id` if it is still registered (not yet resumed) and returns its
    /// continuation, for the caller to resume with ``cancelled``.
    mutating func unregister(_ id: UInt64) -> (continuation: CheckedContinuation<Outcome, Never>, wakeup: Wakeup?)?
}

/// The registration table that both async waiters share: a lock around the waiter's
/// ``AsyncWaitCore``, ids, and the suspension of a wait with exact cancellation. The waiter's own
/// threads lock the same core (``withCore(_:)``) to resume what is ready.
///
/// Cancellation is exact both ways. A wait that is cancelled while registered is removed under the
/// lock and resumed with ``AsyncWaitCore/cancelled`` by the cancelling thread, so that it consumes
/// nothing (the waiter thread can no longer resume it). A wait whose task is cancelled before it
/// registers (the handler runs first) leaves its id in `cancelledEarly`, and the registration finds it
/// there and resumes at once, never parking.
package final class AsyncWaitTable<Core: AsyncWaitCore>: Sendable {
    private struct Locked: Sendable {
        var core: Core
        /// Ids whose cancellation handler ran before they registered.
        var cancelledEarly: Set<UInt64> = []
    }

    private let state: Mutex<Locked>
    private let lastID = Atomic<UInt64>(0)

    package init(_ core: sending Core) {
        state = Mutex(Locked(core: core))
    }

    /// Runs `body` on the core under the table's lock.
    @inline(__always)
    package func withCore<Result: Sendable>(_ body: (inout Core) -> Result) -> Result {
        state.withLock { body(&$0.core) }
    }

    /// Registers `request` and suspends until the waiter resumes it, or until the task is cancelled
    /// (then ``AsyncWaitCore/cancelled``). `wake` runs outside the lock with what registering or
    /// cancelling asked for.
    package func wait(_ request: Core.Request, wake: @Sendable (Core.Wakeup) -> Void) async -> Core.Outcome {
        let id = lastID.wrappingAdd(1, ordering: .relaxed).newValue
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Core.Outcome, Never>) in
                let (cancelled, wakeup) = state.withLock { state -> (Bool, Core.Wakeup?) in
                    if state.cancelledEarly.remove(id) != nil { return (true, nil) }
                    return (false, state.core.register(request, id: id, continuation: continuation))
                }
                if cancelled {
                    continuation.resume(returning: Core.cancelled)
                } else if let wakeup {
                    wake(wakeup)
                }
            }
        } onCancel: {
            let removed = state.withLock { state -> (continuation: CheckedContinuation<Core.Outcome, Never>, wakeup: Core.Wakeup?)? in
                if let removed = state.core.unregister(id) { return removed }
                state.cancelledEarly.insert(id)
                return nil
            }
            if let removed {
                removed.continuation.resume(returning: Core.cancelled)
                if let wakeup = removed.wakeup { wake(wakeup) }
            }
        }
        // The handler may have run after the wait was resumed, leaving the id in `cancelledEarly`. It
        // cannot run any more, and it ran only if the task is cancelled (the flag is set before the
        // handlers run): an uncancelled wait skips the lock.
        if Task.isCancelled { _ = state.withLock { $0.cancelledEarly.remove(id) } }
        return outcome
    }
}
