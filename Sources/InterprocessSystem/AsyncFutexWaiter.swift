#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CInterprocess
import Synchronization

/// The process-wide waiter behind every `async` wait: a few threads park on many futex words at
/// once with Linux `futex_waitv` (5.16+) and resume the continuation of each wait whose word changed,
/// timed out, or was cancelled. No cooperative thread ever blocks, and no thread is burnt per waiter.
///
/// Resumption with `.changed` means "the word changed or was woken, re-check", like a futex wake:
/// callers loop.
///
/// ## Threads
/// `futex_waitv` takes at most 128 words, so the waiter grows *worker* threads on demand, each
/// parked on up to 127 words plus its own control word. A new word goes to the first worker with
/// room (the first worker serves every word of a process that waits on fewer than 128), and a new
/// worker starts when all are full. Workers never exit: an idle one is parked on its control word
/// alone and costs no CPU.
///
/// ## The index
/// Under one lock (``AsyncWaitTable``, shared with ``AsyncDescriptorWaiter``): every wait by id, and
/// every watched *word* — a futex address with the value its waits expect — with the worker and slot
/// it is armed in and a list of its waits (linked through the waits, so that adding or removing one
/// is O(1)). Many waits on one word with one expected value share one word, one slot. Waits on one
/// address that expect different values are different words: the kernel returns at once for all but
/// the one that matches, and those resume.
///
/// ## Deadlines
/// Each worker keeps a min-heap of its waits' deadlines and parks until the earliest (absolute
/// `CLOCK_MONOTONIC`, as `futex_waitv` takes it). A wait that leaves early stays in the heap until
/// its deadline comes up or the heap is rebuilt (when more than half of it is stale), so removal is
/// O(1) and a timeout O(log n).
///
/// ## The wake path
/// A wake on a word returns the worker's `futex_waitv` with that entry's index: the worker resumes
/// that word's waits (`.changed`; a wake means re-check even if the value came back), then re-arms.
/// Other words woken at the same moment are not lost: their values differ, so the re-arm returns
/// EAGAIN, and only then does the worker compare its own words' values (at most 127 loads; an
/// EAGAIN that the control word explains re-arms first, once). A word nobody waits for any more
/// (cancelled) is skipped. Every pass also pops the deadlines that passed. Nothing scans every
/// registration.
///
/// A registration that adds a word, or a deadline earlier than the one the worker is parked with,
/// sets the worker's `needsRearm` and (on that transition only) bumps and wakes its control word;
/// a wait added to a word already armed costs no wake-up at all.
///
/// ## Costs
/// - A wait: two dictionary entries and, for a new word, one wake of its worker (a system call),
///   which then re-arms. A wait on a word already watched: no system call.
/// - A wake: O(1) bookkeeping under the lock, then the worker's re-arm, whose kernel cost grows
///   with the worker's words (measured here: ~0.2–0.35 µs a word in shared memory, 25–45 µs for a
///   full worker). It runs after the continuations are resumed; a worker re-arming 16 words or more
///   yields the CPU first, since the thread that runs the resumed task is often woken onto the same
///   CPU. `ipc bench --scenario async-wake` measures the latency against a blocked thread's.
/// - A broadcast that changes many words of one worker costs that worker about three re-arms,
///   however many of its words changed (the first wake, the EAGAIN compare, the park).
/// - Threads: one per 127 distinct words at the peak (8 for 1,000), never fewer afterwards.

/// ## Cancellation
/// Exact, through ``AsyncWaitTable``: a wait cancelled while registered is removed under the lock
/// and resumed with `.cancelled` by the cancelling thread; it consumes nothing, since the worker can
/// no longer resume it. If it was its word's last wait, the worker is woken to leave that futex (so
/// that it does not swallow a wake meant for a peer's waiter). A wait whose task was cancelled
/// before it registered never parks.
///
/// ## Without futex_waitv
/// Where `futex_waitv` is missing (ENOSYS on kernels before 5.16; EPERM or ENOSYS under a seccomp
/// policy that does not know it), each worker parks on its control word only, for at most 1 ms while
/// it has words, and compares its words' values after each pass: a change is seen within about a
/// millisecond, and each worker with words costs about a thousand wake-ups and value scans (≤ 127
/// loads) a second. Deadlines and cancellation stay exact.
///
/// The waited-on memory must stay mapped until the wait returns: the worker reads a word only while
/// one of its waits is registered. A word unmapped between a worker's snapshot and its
/// `futex_waitv` (its waits were cancelled meanwhile) fails the call with EFAULT, and the worker
/// re-arms without it.
package final class AsyncFutexWaiter: Sendable {
    package enum Outcome: Sendable, Equatable {
        case changed, timedOut, cancelled
    }

    package static let shared = AsyncFutexWaiter()

    /// Words per worker (the kernel's limit is 128 entries per `futex_waitv`; one is the control word).
    package static let batch = 127

    /// A worker that resumed a wait and re-arms at least this many words yields the CPU first (see
    /// ``run(_:)``).
    private static let yieldBeforeRearm = 16

    /// How often a worker compares its words' values where `futex_waitv` is missing (ns).
    private static let fallbackPoll: UInt64 = 1_000_000

    private let table: AsyncWaitTable<Core>
    private let firstControl: ControlWord

    /// The first worker's control word, bumped (wrapping) and woken whenever that worker must re-arm.
    /// `package`: a test sets it near its limit.
    package var control: UnsafeMutableRawPointer { firstControl.pointer }

    /// A waiter of its own (tests: one whose threads no other test touches). `futexWaitv: false`
    /// forces the fallback, as if the kernel lacked `futex_waitv`.
    package init(futexWaitv: Bool = true) {
        firstControl = ControlWord.allocate()
        table = AsyncWaitTable(Core(firstControl: firstControl, futexWaitv: futexWaitv))
    }

    /// Suspends until `*word != expected` (checked by a worker thread) or a wake on `word`, the
    /// `deadline` passes, or the task is cancelled. The memory at `word` (4-byte aligned) must stay
    /// mapped until this returns.
    package func wait(on word: UnsafeMutableRawPointer, expected: UInt32, deadline: Deadline) async -> Outcome {
        if atomic32(word).pointee.load(ordering: .acquiring) != expected { return .changed }
        if Task.isCancelled { return .cancelled }
        if deadline.hasPassed { return .timedOut }
        let address = UInt(bitPattern: word)
        precondition(address % 4 == 0, "a futex word must be 4-byte aligned")
        // Inside, a deadline is its CLOCK_MONOTONIC nanoseconds (`.max`: never), which the heaps order
        // and `futex_waitv` takes.
        let request = Core.Request(word: Core.Word(address: address, expected: expected), deadline: deadline.nanoseconds)
        return await table.wait(request) { wakeup in
            switch wakeup {
            case .poke(let control): control.poke()
            case .start(let worker): self.startWorker(worker)
            }
        }
    }

    /// What the waiter holds right now (tests and the benchmark).
    package struct Census: Sendable, Equatable {
        /// Registered waits, distinct words they wait on, and worker threads started.
        package var waits: Int
        package var words: Int
        package var workers: Int
        /// The workers' kernel thread ids (0 for one not yet running).
        package var threadIDs: [Int32]
        /// Whether every worker has taken up every change (it is parked with all its words, or
        /// about to park).
        package var armed: Bool
    }

    package var census: Census {
        table.withCore { core in
            Census(
                waits: core.waits.count, words: core.words.count, workers: core.workers.count,
                threadIDs: core.workers.map(\.threadID), armed: !core.workers.contains(where: \.needsRearm))
        }
    }

    private func startWorker(_ worker: Int) {
        final class Start {
            let waiter: AsyncFutexWaiter
            let worker: Int
            init(_ waiter: AsyncFutexWaiter, _ worker: Int) { self.waiter = waiter; self.worker = worker }
        }
        let context = Unmanaged.passRetained(Start(self, worker)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, 256 * 1024)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { context in
            let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
            start.waiter.run(start.worker)
            return nil
        }, context)
        precondition(rc == 0, "could not start an async futex waiter thread (\(rc))")
    }

    /// A worker's loop: settle what the last park reported, snapshot, park.
    private func run(_ me: Int) {
        let threadID = ProcessIdentity.currentThreadID
        table.withCore { $0.workers[me].threadID = threadID }
        var armed: [Core.Word] = []
        var entries: [cipc_futex_waiter] = []
        var ready: [(CheckedContinuation<Outcome, Never>, Outcome)] = []
        var woken = Core.Woken.nothing
        while true {
            let now = Clock.monotonicNanoseconds()
            let park = table.withCore { core in
                core.settle(me, woken, armed: armed, now: now, into: &ready)
                return core.snapshot(me)
            }
            // Resume first: the re-arm below is on no waiter's critical path.
            for (continuation, outcome) in ready { continuation.resume(returning: outcome) }
            // A re-arm of many words takes tens of µs in the kernel (~0.2–0.35 µs a shared word here),
            // and the thread that runs a resumed task is often woken onto this CPU: let it run first.
            if !ready.isEmpty && (park.words ?? armed).count >= Self.yieldBeforeRearm { sched_yield() }
            ready.removeAll(keepingCapacity: true)
            if let words = park.words {
                armed = words
                entries.removeAll(keepingCapacity: true)
                entries.append(Core.entry(park.controlWord.pointer, park.controlValue))
                for word in armed { entries.append(Core.entry(UnsafeMutableRawPointer(bitPattern: word.address)!, word.expected)) }
            } else {
                entries[0].val = UInt64(park.controlValue)
            }
            if park.futexWaitv {
                let rc = entries.withUnsafeMutableBufferPointer {
                    cipc_futex_waitv($0.baseAddress, UInt32($0.count), Deadline(nanoseconds: park.deadline).kernelNanoseconds)
                }
                woken = rc >= 0 ? (rc == 0 ? .control : .word(Int(rc) - 1)) : Core.Woken(failure: errno, after: woken, park)
            } else {
                let deadline = armed.isEmpty ? park.deadline : min(park.deadline, now &+ Self.fallbackPoll)
                _ = Futex.wait(park.controlWord.pointer, expected: park.controlValue, deadline: Deadline(nanoseconds: deadline))
                woken = .compare
            }
        }
    }
}

/// A worker's control word: 4 bytes on a 64-byte line of their own, allocated once and never freed
/// (workers live as long as the process).
///
/// `@unchecked Sendable`: the pointer never changes and the word is only accessed atomically.
private struct ControlWord: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer

    static func allocate() -> ControlWord {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
        atomic32(pointer).initialize(to: Atomic(0))
        return ControlWord(pointer: pointer)
    }

    var value: UInt32 { atomic32(pointer).pointee.load(ordering: .sequentiallyConsistent) }

    /// Makes the worker parked on it (or about to park with its old value) return and re-arm.
    func poke() {
        atomic32(pointer).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        Futex.wake(pointer, count: 1)
    }
}

extension AsyncFutexWaiter {
    /// The index: waits, words, workers (see the type's documentation). Everything here runs under
    /// the table's lock.
    private struct Core: AsyncWaitCore {
        /// A futex address and the value its waits expect.
        struct Word: Hashable {
            let address: UInt
            let expected: UInt32

            /// Whether the word no longer holds the expected value. Read only while a wait on it is
            /// registered (its memory is mapped).
            var differs: Bool {
                atomic32(UnsafeMutableRawPointer(bitPattern: address)!).pointee.load(ordering: .acquiring) != expected
            }
        }

        struct Request {
            let word: Word
            let deadline: UInt64
        }

        enum Wakeup {
            /// Wake this worker: it must re-arm.
            case poke(ControlWord)
            /// Start this (new) worker.
            case start(Int)
        }

        static var cancelled: Outcome { .cancelled }

        /// One registered wait, linked into its word's list (0: none; ids start at 1).
        struct Wait {
            let word: Word
            let deadline: UInt64
            let continuation: CheckedContinuation<Outcome, Never>
            var previous: UInt64 = 0
            var next: UInt64 = 0
        }

        /// A watched word: where it is armed, and its waits.
        struct Watch {
            let worker: Int
            var slot: Int
            var first: UInt64
            var count: Int
        }

        /// One worker thread's share.
        struct Worker {
            let control: ControlWord
            /// The words it parks on, by slot (≤ ``AsyncFutexWaiter/batch``).
            var words: [Word] = []
            var deadlines = DeadlineHeap()
            /// Its registered waits with a deadline (the heap's live entries).
            var timedWaits = 0
            /// `words` changed since the worker last copied them.
            var wordsChanged = true
            /// A change the worker has not armed with yet; a poke (or its start) is on its way.
            var needsRearm = true
            /// The deadline it is parked with.
            var armedDeadline = UInt64.max
            var threadID: Int32 = 0
        }

        var waits: [UInt64: Wait] = [:]
        var words: [Word: Watch] = [:]
        var workers: [Worker] = []
        /// The first worker's control word (allocated early: a test reaches it before any wait).
        let firstControl: ControlWord
        /// Cleared when the kernel refuses `futex_waitv`.
        var futexWaitv: Bool

        init(firstControl: ControlWord, futexWaitv: Bool) {
            self.firstControl = firstControl
            self.futexWaitv = futexWaitv
        }

        // MARK: Registration (any thread)

        mutating func register(_ request: Request, id: UInt64, continuation: CheckedContinuation<Outcome, Never>) -> Wakeup? {
            var wakeup: Wakeup?
            let worker: Int
            if var watch = words[request.word] {
                worker = watch.worker
                waits[watch.first]!.previous = id
                waits[id] = Wait(word: request.word, deadline: request.deadline, continuation: continuation, next: watch.first)
                watch.first = id
                watch.count += 1
                words[request.word] = watch
            } else {
                (worker, wakeup) = workerWithRoom()
                workers[worker].words.append(request.word)
                workers[worker].wordsChanged = true
                words[request.word] = Watch(worker: worker, slot: workers[worker].words.count - 1, first: id, count: 1)
                waits[id] = Wait(word: request.word, deadline: request.deadline, continuation: continuation)
                if wakeup == nil { wakeup = rearm(worker) }
            }
            if request.deadline != .max {
                workers[worker].deadlines.push(request.deadline, id)
                workers[worker].timedWaits += 1
                if request.deadline < workers[worker].armedDeadline, wakeup == nil { wakeup = rearm(worker) }
            }
            return wakeup
        }

        mutating func unregister(_ id: UInt64) -> (continuation: CheckedContinuation<Outcome, Never>, wakeup: Wakeup?)? {
            guard let (wait, worker, dropped) = remove(id) else { return nil }
            // Its word's last wait: the worker leaves that futex now rather than at its next pass.
            return (wait.continuation, dropped ? rearm(worker) : nil)
        }

        /// The first worker with room, or a new one (to be started).
        private mutating func workerWithRoom() -> (Int, Wakeup?) {
            if let worker = workers.firstIndex(where: { $0.words.count < AsyncFutexWaiter.batch }) { return (worker, nil) }
            let control = workers.isEmpty ? firstControl : ControlWord.allocate()
            workers.append(Worker(control: control))
            return (workers.count - 1, .start(workers.count - 1))
        }

        /// Marks that `worker` must re-arm; the poke to send, on the first such mark since it last
        /// armed (later ones ride on it).
        private mutating func rearm(_ worker: Int) -> Wakeup? {
            if workers[worker].needsRearm { return nil }
            workers[worker].needsRearm = true
            return .poke(workers[worker].control)
        }

        /// Removes a registered wait: unlinks it from its word, drops the word with its last wait.
        private mutating func remove(_ id: UInt64) -> (wait: Wait, worker: Int, droppedWord: Bool)? {
            guard let wait = waits.removeValue(forKey: id) else { return nil }
            var watch = words[wait.word]!
            let worker = watch.worker
            if wait.previous != 0 { waits[wait.previous]!.next = wait.next } else { watch.first = wait.next }
            if wait.next != 0 { waits[wait.next]!.previous = wait.previous }
            watch.count -= 1
            if watch.count == 0 {
                words[wait.word] = nil
                // Swap the last word into the freed slot.
                let last = workers[worker].words.removeLast()
                if last != wait.word {
                    workers[worker].words[watch.slot] = last
                    words[last]!.slot = watch.slot
                }
                workers[worker].wordsChanged = true
            } else {
                words[wait.word] = watch
            }
            if wait.deadline != .max {
                workers[worker].timedWaits -= 1
                let heap = workers[worker].deadlines.count
                if heap > 64 && heap > 2 * workers[worker].timedWaits {
                    let live = waits
                    workers[worker].deadlines.removeAll { live[$0] == nil }
                }
            }
            return (wait, worker, watch.count == 0)
        }

        // MARK: The worker's side

        /// What a park returned.
        enum Woken {
            case nothing
            /// The control word: re-arm only.
            case control
            /// EAGAIN, and the control word had moved: re-arm only.
            case controlMoved
            /// The word at this index of the armed words was woken.
            case word(Int)
            /// Some armed word differs (EAGAIN), or the fallback's poll: compare them all.
            case compare
            /// EFAULT: a word's memory is gone.
            case fault
            /// The kernel has no `futex_waitv`.
            case missing

            init(failure: Int32, after previous: Woken, _ park: Park) {
                switch failure {
                case EAGAIN:
                    // Because the control word moved (a registration came in since the snapshot), which
                    // says nothing of the other words: re-arm first, and compare only if the kernel still
                    // finds one that differs — but not twice in a row, so that a stream of registrations
                    // cannot keep a changed word waiting.
                    if case .controlMoved = previous { self = .compare } else { self = park.controlHasMoved() ? .controlMoved : .compare }
                case EFAULT: self = .fault
                case ENOSYS, EPERM: self = .missing
                default: self = .nothing // ETIMEDOUT (the heap says which), EINTR
                }
            }
        }

        /// What a worker parks with.
        struct Park {
            let futexWaitv: Bool
            let controlWord: ControlWord
            let controlValue: UInt32
            let deadline: UInt64
            /// The worker's words, if they changed since its last snapshot.
            let words: [Word]?

            func controlHasMoved() -> Bool { controlWord.value != controlValue }
        }

        /// Resumes what the last park of `worker` reported, and every wait of it whose deadline passed.
        mutating func settle(_ worker: Int, _ woken: Woken, armed: [Word], now: UInt64, into ready: inout [(CheckedContinuation<Outcome, Never>, Outcome)]) {
            switch woken {
            case .nothing, .control, .controlMoved:
                break
            case .word(let index):
                // The entry was armed then; its waits may have left since (and the word come back, on
                // this worker or another: a wake on it is theirs too).
                if index < armed.count { resume(armed[index], .changed, into: &ready) }
            case .compare:
                for word in workers[worker].words where word.differs { resume(word, .changed, into: &ready) }
            case .fault:
                // No word is gone that the worker still watches, or the caller broke the contract
                // (unmapped memory with a wait registered): resume its words to re-check rather than
                // failing again and again.
                if !workers[worker].wordsChanged {
                    for word in workers[worker].words { resume(word, .changed, into: &ready) }
                }
            case .missing:
                futexWaitv = false
            }
            while let top = workers[worker].deadlines.min, top.deadline <= now {
                workers[worker].deadlines.popMin()
                if let (wait, _, _) = remove(top.id) { ready.append((wait.continuation, .timedOut)) }
            }
        }

        /// Resumes every wait on `word` with `outcome`.
        private mutating func resume(_ word: Word, _ outcome: Outcome, into ready: inout [(CheckedContinuation<Outcome, Never>, Outcome)]) {
            while let first = words[word]?.first, let (wait, _, _) = remove(first) {
                ready.append((wait.continuation, outcome))
            }
        }

        /// Marks `worker` armed with what it holds now, and returns what to park with: its words
        /// if they changed since its last snapshot (to copy outside the lock), the control value,
        /// the earliest deadline.
        mutating func snapshot(_ worker: Int) -> Park {
            let control = workers[worker].control
            workers[worker].needsRearm = false
            let controlValue = control.value
            var words: [Word]?
            if workers[worker].wordsChanged {
                workers[worker].wordsChanged = false
                words = workers[worker].words
            }
            // Waits that left early leave their deadlines behind.
            while let top = workers[worker].deadlines.min, waits[top.id] == nil { workers[worker].deadlines.popMin() }
            let deadline = workers[worker].deadlines.min?.deadline ?? .max
            workers[worker].armedDeadline = deadline
            return Park(futexWaitv: futexWaitv, controlWord: control, controlValue: controlValue, deadline: deadline, words: words)
        }

        /// One `futex_waitv` entry: a shared 32-bit futex.
        static func entry(_ address: UnsafeMutableRawPointer, _ value: UInt32) -> cipc_futex_waiter {
            cipc_futex_waiter(val: UInt64(value), uaddr: UInt64(UInt(bitPattern: address)), flags: cipc_FUTEX2_SIZE_U32, reserved: 0)
        }
    }
}

/// A binary min-heap of (deadline, wait id).
private struct DeadlineHeap {
    private var entries: [(deadline: UInt64, id: UInt64)] = []

    var count: Int { entries.count }
    var min: (deadline: UInt64, id: UInt64)? { entries.first }

    mutating func push(_ deadline: UInt64, _ id: UInt64) {
        entries.append((deadline, id))
        siftUp(entries.count - 1)
    }

    mutating func popMin() {
        let last = entries.removeLast()
        guard !entries.isEmpty else { return }
        entries[0] = last
        siftDown(0)
    }

    /// Drops the entries `stale` says are, and restores the heap order (O(n)).
    mutating func removeAll(where stale: (UInt64) -> Bool) {
        entries.removeAll { stale($0.id) }
        for index in stride(from: entries.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { return }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            var smallest = parent
            let left = 2 * parent + 1, right = left + 1
            if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
            if smallest == parent { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
