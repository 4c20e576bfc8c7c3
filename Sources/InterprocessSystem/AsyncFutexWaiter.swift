#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess
import Synchronization

/// The process-wide waiter behind every `async` wait: one thread parks on many futex words at once
/// with Linux `futex_waitv` (5.16+) and resumes the continuation of each word that changed, timed
/// out, or was cancelled. No cooperative thread ever blocks, and no thread is burnt per waiter.
///
/// Resumption means "the word changed, re-check", like a futex wake: callers loop.
/// Where `futex_waitv` is missing (ENOSYS), the thread polls every millisecond instead.
///
/// `@unchecked Sendable`: `control` points to 64 bytes allocated once and never freed (the waiter
/// lives as long as the process) and is only accessed atomically; everything else is under `state`.
package final class AsyncFutexWaiter: @unchecked Sendable {
    package enum Outcome: Sendable, Equatable {
        case changed, timedOut, cancelled
    }

    package static let shared = AsyncFutexWaiter()

    /// Entries per futex_waitv call (the kernel's limit is 128; one is our control word).
    private static let batch = 127

    private struct Registration {
        let address: UInt
        let expected: UInt32
        let deadline: UInt64
        let continuation: CheckedContinuation<Outcome, Never>
    }

    private struct State {
        var registrations: [UInt64: Registration] = [:]
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 0
        var started = false
    }

    private let state = Mutex(State())
    /// Bumped (wrapping) and woken whenever the set of registrations changes, so the thread re-arms.
    /// `package`: a test sets it near its limit.
    package let control: UnsafeMutableRawPointer

    private init() {
        control = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        control.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        atomic32(control).initialize(to: Atomic(0))
    }

    /// Suspends until `*word != expected` (checked by the waiter thread), `deadline` passes, or the
    /// task is cancelled. The memory at `word` must stay mapped until this returns.
    package func wait(on word: UnsafeMutableRawPointer, expected: UInt32, deadline: Deadline) async -> Outcome {
        if atomic32(word).pointee.load(ordering: .acquiring) != expected { return .changed }
        if Task.isCancelled { return .cancelled }
        if deadline.hasPassed { return .timedOut }
        let id = state.withLock { state -> UInt64 in
            state.nextID &+= 1
            return state.nextID
        }
        let address = UInt(bitPattern: word)
        // The handler may run after the wait was resumed but before it returns, and then leaves the id
        // in `cancelledEarly`; it cannot run once this returns, so the id is dropped here.
        defer { _ = state.withLock { $0.cancelledEarly.remove(id) } }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let cancelled = state.withLock { state -> Bool in
                    if state.cancelledEarly.remove(id) != nil { return true }
                    state.registrations[id] = Registration(address: address, expected: expected, deadline: deadline.nanoseconds, continuation: continuation)
                    if !state.started {
                        state.started = true
                        startThread()
                    }
                    return false
                }
                if cancelled { continuation.resume(returning: .cancelled) } else { poke() }
            }
        } onCancel: {
            let registration = state.withLock { state -> Registration? in
                if let registration = state.registrations.removeValue(forKey: id) { return registration }
                state.cancelledEarly.insert(id)
                return nil
            }
            if let registration {
                registration.continuation.resume(returning: .cancelled)
                poke()
            }
        }
    }

    private func poke() {
        atomic32(control).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        Futex.wake(control, count: 1)
    }

    private func startThread() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            let waiter = Unmanaged<AsyncFutexWaiter>.fromOpaque(context!).takeRetainedValue()
            waiter.run()
            return nil
        }, context)
        precondition(rc == 0, "could not start the async futex waiter thread (\(rc))")
        pthread_detach(thread)
    }

    private func run() {
        var entries = [cipc_futex_waiter](repeating: cipc_futex_waiter(), count: Self.batch + 1)
        var haveWaitv = true
        while true {
            let controlValue = atomic32(control).pointee.load(ordering: .sequentiallyConsistent)
            // Snapshot: distinct (word, expected) pairs, and the earliest deadline.
            let (words, earliest, overflow) = state.withLock { state -> ([(UInt, UInt32)], UInt64, Bool) in
                var seen = Set<UInt>()
                var words: [(UInt, UInt32)] = []
                var earliest = UInt64.max
                var overflow = false
                for registration in state.registrations.values {
                    earliest = min(earliest, registration.deadline)
                    if seen.contains(registration.address) { continue }
                    if words.count == Self.batch { overflow = true; continue }
                    seen.insert(registration.address)
                    words.append((registration.address, registration.expected))
                }
                return (words, earliest, overflow)
            }
            var deadline = earliest
            if overflow || !haveWaitv { deadline = min(deadline, Clock.monotonicNanoseconds() + 1_000_000) }
            if haveWaitv {
                entries[0] = cipc_futex_waiter(val: UInt64(controlValue), uaddr: UInt64(UInt(bitPattern: control)), flags: cipc_FUTEX2_SIZE_U32, reserved: 0)
                for (index, word) in words.enumerated() {
                    entries[index + 1] = cipc_futex_waiter(val: UInt64(word.1), uaddr: UInt64(word.0), flags: cipc_FUTEX2_SIZE_U32, reserved: 0)
                }
                let rc = entries.withUnsafeMutableBufferPointer {
                    cipc_futex_waitv($0.baseAddress, UInt32(words.count + 1), deadline == .max ? -1 : Int64(clamping: deadline))
                }
                if rc == -1 && errno == ENOSYS { haveWaitv = false }
            } else {
                _ = Futex.wait(control, expected: controlValue, deadline: Deadline(nanoseconds: deadline))
            }
            resolve()
        }
    }

    /// Resumes every registration whose word changed or whose deadline passed.
    private func resolve() {
        let now = Clock.monotonicNanoseconds()
        let ready = state.withLock { state -> [(CheckedContinuation<Outcome, Never>, Outcome)] in
            var ready: [(CheckedContinuation<Outcome, Never>, Outcome)] = []
            for (id, registration) in state.registrations {
                let word = UnsafeMutableRawPointer(bitPattern: registration.address)!
                if atomic32(word).pointee.load(ordering: .acquiring) != registration.expected {
                    ready.append((registration.continuation, .changed))
                } else if now >= registration.deadline {
                    ready.append((registration.continuation, .timedOut))
                } else {
                    continue
                }
                state.registrations.removeValue(forKey: id)
            }
            return ready
        }
        for (continuation, outcome) in ready { continuation.resume(returning: outcome) }
    }
}
