import Dispatch
import Interprocess
import Synchronization

/// Runs `body` in a task and blocks this thread until it ends: how a command drives an `async`
/// form from the child's synchronous top level. Throws what `body` threw.
func runInTask(_ body: sending @escaping () async throws(InterprocessError) -> Void) throws(InterprocessError) {
    let done = DispatchSemaphore(value: 0)
    let failure = Mutex<InterprocessError?>(nil)
    Task {
        do throws(InterprocessError) {
            try await body()
        } catch {
            failure.withLock { $0 = error }
        }
        done.signal()
    }
    done.wait()
    if let error = failure.withLock({ $0 }) { throw error }
}
