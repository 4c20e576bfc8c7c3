import InterprocessSystem
import SystemPackage
import Synchronization

/// Owns one descriptor for an object that several threads and tasks may use at once (a pipe end, a
/// socket, a lock file), so that ``close()`` never closes a descriptor that an operation is still
/// using (its number could be reused by an unrelated file meanwhile).
///
/// Operations bracket their use with ``begin()`` / ``end()``. ``close()`` marks the owner closed,
/// wakes every `async` wait on the descriptor, runs `onClose` (e.g. a socket shutdown, which wakes
/// blocked waits too), and closes the descriptor at once if nobody uses it, else when the last user
/// ends. Operations that find the owner closed throw `closed`.
final class DescriptorOwner: Sendable {
    private struct State {
        var fd: FileDescriptor?
        var users = 0
        var closing = false
    }

    private let state: Mutex<State>
    let name: String?

    init(_ fd: FileDescriptor, name: String?) {
        state = Mutex(State(fd: fd))
        self.name = name
    }

    var isClosed: Bool { state.withLock { $0.closing } }

    /// The descriptor, counted as in use until ``end()``; throws `closed` after ``close()``.
    func begin() throws(InterprocessError) -> FileDescriptor {
        let fd = state.withLock { state -> FileDescriptor? in
            guard !state.closing, let fd = state.fd else { return nil }
            state.users += 1
            return fd
        }
        guard let fd else { throw closedError() }
        return fd
    }

    /// Ends one use; closes the descriptor if it was the last use after ``close()``.
    func end() {
        let toClose = state.withLock { state -> FileDescriptor? in
            state.users -= 1
            guard state.closing, state.users == 0, let fd = state.fd else { return nil }
            state.fd = nil
            return fd
        }
        try? toClose?.close()
    }

    /// Runs `body` with the descriptor in use.
    func withDescriptor<R>(_ body: (FileDescriptor) throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        let fd = try begin()
        defer { end() }
        return try body(fd)
    }

    /// Closes the descriptor (now, or when the last operation using it ends). Idempotent.
    /// `beforeClosing` runs once, with the descriptor, while it is still open.
    func close(beforeClosing: (FileDescriptor) -> Void = { _ in }) {
        let (fd, closeNow) = state.withLock { state -> (FileDescriptor?, Bool) in
            guard !state.closing, let fd = state.fd else { return (nil, false) }
            state.closing = true
            if state.users == 0 { state.fd = nil }
            return (fd, state.users == 0)
        }
        guard let fd else { return }
        beforeClosing(fd)
        AsyncDescriptorWaiter.shared.resumeAll(waitingOn: fd)
        if closeNow { try? fd.close() }
    }

    func closedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "it was closed")
    }
}

/// One attempt at an operation on a non-blocking descriptor.
enum IOAttempt<Value> {
    /// Finished.
    case done(Value)
    /// Could not go on now: wait until the descriptor is ready for this, then attempt again.
    case wait(DescriptorEvent)
    /// Another call on the same object is in the middle of this operation (e.g. a receive waiting in
    /// the kernel): try again shortly.
    case busy
}

/// The drivers behind the `async` and blocking forms (timed or not) of every descriptor operation. The
/// `try…` forms call their attempt once and turn `.wait` into `nil` / `false` / `wouldBlock`.
enum DescriptorIO {
    /// How long a blocking wait sleeps before it looks again whether its owner was closed.
    static let closeCheckInterval: UInt64 = 50_000_000
    /// How long a call pauses when another call is in the middle of the same operation.
    static let busyPause: UInt64 = 1_000_000

    /// Attempts until done, waiting in `poll` between attempts, until `deadline`. Throws `timedOut`,
    /// or `closed` if the owner is closed meanwhile.
    @available(*, noasync, message: "use the async form")
    static func blocking<Value>(
        _ owner: DescriptorOwner, deadline: Deadline,
        _ attempt: (FileDescriptor) throws(InterprocessError) -> IOAttempt<Value>
    ) throws(InterprocessError) -> Value {
        let fd = try owner.begin()
        defer { owner.end() }
        while true {
            if owner.isClosed { throw owner.closedError() }
            let step: IOAttempt<Value>
            do { step = try attempt(fd) } catch { throw owner.isClosed ? owner.closedError() : error }
            switch step {
            case .done(let value): return value
            case .wait(let event):
                let slice = min(deadline, Deadline.after(nanoseconds: closeCheckInterval))
                if !DescriptorWait.wait(fd, for: event, deadline: slice), deadline.hasPassed {
                    if owner.isClosed { throw owner.closedError() }
                    // One last attempt: the state may have changed as the time ran out.
                    if case .done(let value) = try attempt(fd) { return value }
                    throw InterprocessError(.timedOut, objectName: owner.name, detail: "the wait timed out")
                }
            case .busy:
                if deadline.hasPassed { throw InterprocessError(.timedOut, objectName: owner.name, detail: "the wait timed out") }
                Clock.sleep(nanoseconds: busyPause, before: deadline)
            }
        }
    }

    /// The `async` form of ``blocking(_:deadline:_:)``: waits through the process-wide
    /// ``AsyncDescriptorWaiter`` (no cooperative thread blocks). Throws `cancelled` when the task is
    /// cancelled, before the first attempt or while waiting.
    static func suspending<Value>(
        _ owner: DescriptorOwner, deadline: Deadline,
        _ attempt: (FileDescriptor) throws(InterprocessError) -> IOAttempt<Value>
    ) async throws(InterprocessError) -> Value {
        if Task.isCancelled {
            throw InterprocessError(.cancelled, objectName: owner.name, detail: "the task was cancelled")
        }
        let fd = try owner.begin()
        defer { owner.end() }
        while true {
            if owner.isClosed { throw owner.closedError() }
            let step: IOAttempt<Value>
            do { step = try attempt(fd) } catch { throw owner.isClosed ? owner.closedError() : error }
            switch step {
            case .done(let value): return value
            case .busy:
                if deadline.hasPassed {
                    throw InterprocessError(.timedOut, objectName: owner.name, detail: "the wait timed out")
                }
                do { try await Task.sleep(nanoseconds: busyPause) } catch {
                    throw InterprocessError(.cancelled, objectName: owner.name, detail: "the task was cancelled")
                }
            case .wait(let event):
                switch await AsyncDescriptorWaiter.shared.wait(for: fd, event, deadline: deadline) {
                case .ready: continue
                case .cancelled:
                    throw InterprocessError(.cancelled, objectName: owner.name, detail: "the task was cancelled")
                case .timedOut:
                    if owner.isClosed { throw owner.closedError() }
                    if case .done(let value) = try attempt(fd) { return value }
                    throw InterprocessError(.timedOut, objectName: owner.name, detail: "the wait timed out")
                }
            }
        }
    }

    /// For a socket in blocking mode: attempts that wait in the kernel (a blocking `recvmsg` or
    /// `sendmsg`, one system call where the poll-based drivers need two or three), until done. The
    /// owner's ``DescriptorOwner/close(beforeClosing:)`` shuts the socket down, which ends such a
    /// wait at once; it then throws `closed`.
    @available(*, noasync, message: "use the async form")
    static func inKernel<Value>(
        _ owner: DescriptorOwner, _ attempt: (FileDescriptor) throws(InterprocessError) -> IOAttempt<Value>
    ) throws(InterprocessError) -> Value {
        let fd = try owner.begin()
        defer { owner.end() }
        while true {
            if owner.isClosed { throw owner.closedError() }
            let step: IOAttempt<Value>
            do { step = try attempt(fd) } catch {
                throw owner.isClosed ? owner.closedError() : error
            }
            switch step {
            case .done(let value):
                return value
            case .wait(let event):
                // Not expected in blocking mode; wait like the poll-based driver.
                _ = DescriptorWait.wait(fd, for: event, deadline: .after(nanoseconds: closeCheckInterval))
            case .busy:
                Clock.sleep(nanoseconds: busyPause)
            }
        }
    }

    /// The blocking driver of a socket in blocking mode: without a deadline, attempts that wait in
    /// the kernel (``inKernel(_:_:)``, `wait` true); with one, ``blocking(_:deadline:_:)``'s `poll`
    /// between attempts that do not wait (`wait` false).
    @available(*, noasync, message: "use the async form")
    static func blockingSocket<Value>(
        _ owner: DescriptorOwner, deadline: Deadline,
        _ attempt: (FileDescriptor, _ wait: Bool) throws(InterprocessError) -> IOAttempt<Value>
    ) throws(InterprocessError) -> Value {
        if deadline.isNever {
            return try inKernel(owner) { fd throws(InterprocessError) in try attempt(fd, true) }
        }
        return try blocking(owner, deadline: deadline) { fd throws(InterprocessError) in try attempt(fd, false) }
    }

    /// One attempt, never waiting: the value, or nil if it would have had to wait.
    static func once<Value>(
        _ owner: DescriptorOwner, _ attempt: (FileDescriptor) throws(InterprocessError) -> IOAttempt<Value>
    ) throws(InterprocessError) -> Value? {
        let fd = try owner.begin()
        defer { owner.end() }
        if case .done(let value) = try attempt(fd) { return value }
        return nil
    }
}

/// Sleeps between polls of something that has no descriptor to wait on (a FIFO's other end, a
/// file lock): a doubling pause from `first` up to `limit`.
struct Backoff {
    private(set) var pause: UInt64
    let limit: UInt64

    init(first: UInt64 = 100_000, limit: UInt64 = 10_000_000) {
        pause = first
        self.limit = limit
    }

    /// The next pause, capped so that it does not sleep past `deadline`.
    mutating func next(before deadline: Deadline) -> UInt64 {
        let wait = min(pause, deadline.remainingNanoseconds)
        pause = min(pause * 2, limit)
        return wait
    }

    /// Sleeps the calling thread (blocking forms only).
    @available(*, noasync)
    mutating func sleep(before deadline: Deadline) {
        Clock.sleep(nanoseconds: next(before: deadline))
    }

    /// Suspends the task (async forms); throws `cancelled` if it is cancelled.
    mutating func sleepAsync(before deadline: Deadline, name: String?) async throws(InterprocessError) {
        do {
            try await Task.sleep(nanoseconds: next(before: deadline))
        } catch {
            throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled")
        }
    }
}
