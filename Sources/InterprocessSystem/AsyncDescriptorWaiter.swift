#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
package import SystemPackage
import CInterprocess
import Synchronization

/// The process-wide waiter behind every `async` operation on a descriptor (sockets, FIFOs): one
/// thread waits in `poll` on every registered descriptor at once and resumes the continuation of
/// each one that became ready, timed out, or was cancelled. No cooperative thread ever blocks, and no
/// thread is burnt per waiter — the descriptor counterpart of ``AsyncFutexWaiter``.
///
/// Why `poll` and not epoll (as swift-subprocess's AsyncIO does): several tasks may wait on one
/// descriptor at once (a reader and a writer of one socket), which epoll allows only once per
/// descriptor; the set is rebuilt from the registrations on each round, so a registration is just a
/// dictionary entry; and `poll` exists on every platform we keep code paths for. The cost is linear
/// in the number of waiters per wake-up, which is small for local IPC.
///
/// Resumption with `.ready` means "try the operation again" (level-triggered, like `poll`): callers
/// loop, and a descriptor that another reader drained simply waits again.
///
/// Registration, ids and cancellation are ``AsyncWaitTable``'s, shared with ``AsyncFutexWaiter``.
package final class AsyncDescriptorWaiter: Sendable {
    package enum Outcome: Sendable, Equatable {
        case ready, timedOut, cancelled
    }

    package static let shared = AsyncDescriptorWaiter()

    /// The registrations, in one dictionary: `poll` takes the whole set each round anyway.
    private struct Core: AsyncWaitCore {
        struct Request {
            let fd: CInt
            let events: Int16
            let deadline: Deadline
        }

        struct Registration {
            let request: Request
            let continuation: CheckedContinuation<Outcome, Never>
        }

        enum Wakeup {
            case start, poke
        }

        static var cancelled: Outcome { .cancelled }

        var registrations: [UInt64: Registration] = [:]
        var started = false

        mutating func register(_ request: Request, id: UInt64, continuation: CheckedContinuation<Outcome, Never>) -> Wakeup? {
            registrations[id] = Registration(request: request, continuation: continuation)
            if started { return .poke }
            started = true
            return .start
        }

        mutating func unregister(_ id: UInt64) -> (continuation: CheckedContinuation<Outcome, Never>, wakeup: Wakeup?)? {
            guard let registration = registrations.removeValue(forKey: id) else { return nil }
            return (registration.continuation, .poke)
        }
    }

    private let table = AsyncWaitTable(Core())
    /// Written (one byte) whenever the set of registrations changes, so that the thread re-arms.
    private let wakeRead: CInt
    private let wakeWrite: CInt

    /// How often the thread looks at the registrations when it has no wake-up pipe, in ms.
    private static let pollIntervalWithoutPipe: CInt = 10

    private init() {
        var fds: [CInt] = [-1, -1]
        if cipc_pipe_cloexec(&fds) != 0 {
            // No descriptor left (EMFILE / ENFILE) when the first async wait came: work without the
            // wake-up pipe, looking at the registrations every few milliseconds, rather than trap
            // over something the environment caused.
            fds = [-1, -1]
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds where fd >= 0 { _ = cipc_fcntl_int(fd, F_SETFL, cipc_fcntl_int(fd, F_GETFL, 0) | O_NONBLOCK) }
    }

    /// Suspends until `fd` is ready for `event` (or has an error or hang-up), `deadline` passes, or
    /// the task is cancelled. The descriptor must stay open until this returns; an
    /// owner that closes it first calls ``resumeAll(waitingOn:)``.
    package func wait(for fd: FileDescriptor, _ event: DescriptorEvent, deadline: Deadline) async -> Outcome {
        if Task.isCancelled { return .cancelled }
        if deadline.hasPassed { return .timedOut }
        let events = event == .readable ? Int16(POLLIN) : Int16(POLLOUT)
        return await table.wait(Core.Request(fd: fd.rawValue, events: events, deadline: deadline)) { wakeup in
            switch wakeup {
            case .start: self.startThread()
            case .poke: self.poke()
            }
        }
    }

    /// Resumes (`.ready`) every wait on `fd`: its owner is about to close it. The waiters' next
    /// attempt finds the owner closed.
    package func resumeAll(waitingOn fd: FileDescriptor) {
        let ready = table.withCore { core -> [CheckedContinuation<Outcome, Never>] in
            let ids = core.registrations.filter { $0.value.request.fd == fd.rawValue }.map(\.key)
            return ids.compactMap { core.registrations.removeValue(forKey: $0)?.continuation }
        }
        for continuation in ready { continuation.resume(returning: .ready) }
        if !ready.isEmpty { poke() }
    }

    private func poke() {
        guard wakeWrite >= 0 else { return } // the thread looks again within its poll interval
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1) // a full pipe already guarantees a wake-up
    }

    private func startThread() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            let waiter = Unmanaged<AsyncDescriptorWaiter>.fromOpaque(context!).takeRetainedValue()
            waiter.run()
            return nil
        }, context)
        precondition(rc == 0, "could not start the async descriptor waiter thread (\(rc))")
        pthread_detach(thread)
    }

    private func run() {
        var drain = [UInt8](repeating: 0, count: 256)
        while true {
            // Snapshot: distinct (descriptor, events) pairs, and the earliest deadline.
            let (entries, earliest) = table.withCore { core -> ([pollfd], Deadline) in
                var merged: [CInt: Int16] = [:]
                var earliest = Deadline.never
                for registration in core.registrations.values {
                    earliest = min(earliest, registration.request.deadline)
                    merged[registration.request.fd, default: 0] |= registration.request.events
                }
                return (merged.map { pollfd(fd: $0.key, events: $0.value, revents: 0) }, earliest)
            }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)] + entries
            var timeout = earliest.pollMilliseconds
            if wakeRead < 0 { timeout = timeout < 0 ? Self.pollIntervalWithoutPipe : min(timeout, Self.pollIntervalWithoutPipe) }
            let rc = poll(&fds, nfds_t(fds.count), timeout)
            if rc < 0 && errno != EINTR && errno != EAGAIN {
                // Cannot happen with valid arguments; do not spin.
                Clock.sleep(nanoseconds: 1_000_000)
            }
            if wakeRead >= 0, fds[0].revents != 0 {
                while drain.withUnsafeMutableBytes({ read(wakeRead, $0.baseAddress, $0.count) }) > 0 {}
            }
            var ready: [CInt: Int16] = [:]
            for entry in fds.dropFirst() where entry.revents != 0 { ready[entry.fd] = entry.revents }
            resolve(ready)
        }
    }

    /// Resumes every registration whose descriptor is ready or whose deadline passed.
    private func resolve(_ ready: [CInt: Int16]) {
        let now = Deadline.now
        let failure = Int16(POLLERR) | Int16(POLLHUP) | Int16(POLLNVAL)
        let resumed = table.withCore { core -> [(CheckedContinuation<Outcome, Never>, Outcome)] in
            var resumed: [(CheckedContinuation<Outcome, Never>, Outcome)] = []
            for (id, registration) in core.registrations {
                let request = registration.request
                if let revents = ready[request.fd], revents & (request.events | failure) != 0 {
                    resumed.append((registration.continuation, .ready))
                } else if now >= request.deadline {
                    resumed.append((registration.continuation, .timedOut))
                } else {
                    continue
                }
                core.registrations.removeValue(forKey: id)
            }
            return resumed
        }
        for (continuation, outcome) in resumed { continuation.resume(returning: outcome) }
    }
}
