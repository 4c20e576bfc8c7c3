import Dispatch
import Foundation
import InterprocessToolSupport
import Synchronization

/// Runs a command's work in a task that SIGINT and SIGTERM cancel, for commands that wait on a
/// channel (`ipc send`, `ipc recv`).
///
/// Killed by a signal while parked, a process leaves its channel's count of parked waiters one too
/// high for good (every later send then makes a spare wake-up call). Cancelled instead, the library's
/// async wait ends having taken or sent nothing and counts itself out; then the process ends with
/// status 128 + the signal, as a shell expects. Work that does not see the cancellation in time (a
/// read of standard input) is ended after a second all the same.
enum Interruptible {
    private final class State: Sendable {
        let error = Mutex<(any Error)?>(nil)
        let signal = Atomic<Int32>(0)
        let finished = DispatchSemaphore(value: 0)
    }

    static func run(_ work: @escaping @Sendable () async throws -> Void) throws {
        // Blocked before the task starts, so that no thread takes the default action.
        let signals = TerminationSignals.block()
        let state = State()
        let task = Task {
            do { try await work() } catch { state.error.withLock { $0 = error } }
            state.finished.signal()
        }
        Thread.detachNewThread {
            let signal = signals.wait()
            state.signal.store(signal, ordering: .sequentiallyConsistent)
            task.cancel()
            if state.finished.wait(timeout: .now() + 1) == .timedOut { exit(128 + signal) }
            state.finished.signal() // for the main thread, which waits too
        }
        state.finished.wait()
        let signal = state.signal.load(ordering: .sequentiallyConsistent)
        if signal != 0 {
            // Let the signal thread finish its wait before the process ends.
            _ = state.finished.wait(timeout: .now() + 1)
            exit(128 + signal)
        }
        if let error = state.error.withLock({ $0 }) { throw error }
    }
}
