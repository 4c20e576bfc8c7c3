import InterprocessSystem

// An open that waits for a creator: `openWhenCreated` (async) and `blockingOpenWhenCreated`, for
// every named kind. A reader started before the writer waits for the name instead of polling on
// `notFound` itself, and the order in which a writer creates its objects no longer decides whether
// a reader fails.
//
// How it waits: it polls the name with a doubling pause, 0.1 ms up to 10 ms (``Backoff``). The cost
// while nothing exists: one failed `shm_open` (a path lookup in /dev/shm) every 10 ms per waiter once
// the backoff has grown, and up to 10 ms between the creation and the open. It needs no descriptor,
// no thread and no inotify watch (whose limit is per user and shared with every other program).
//
// Why it never opens a half-created object: a named object is built in a file with no name and given
// its name only when complete (``SegmentHandle``), so each attempt is an ordinary open — with its
// trust rules (``TrustedOwners``), its kind and validation checks — that either finds nothing
// (`notFound`: wait and try again) or a complete object. Every other error ends the wait at once
// (another user's object stays `permissionDenied`, another kind `incompatible`).

/// The waiting loop behind every `openWhenCreated` / `blockingOpenWhenCreated`.
enum CreatorWait {
    /// Tries `open` until it finds the object (anything but `notFound` ends the wait), suspending the
    /// task between attempts; `timedOut` after `timeout`, `cancelled` (nothing opened) when the task
    /// is cancelled.
    static func open<Object>(
        name: String, what: String, timeout: Duration?, _ open: () throws(InterprocessError) -> Object
    ) async throws(InterprocessError) -> Object {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff()
        while true {
            if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
            if let object = try attempt(name: name, what: what, deadline: deadline, timeout: timeout, open) { return object }
            try await backoff.sleepAsync(before: deadline, name: name)
        }
    }

    /// The blocking form of ``open(name:what:timeout:_:)``: sleeps the calling thread between attempts.
    @available(*, noasync)
    static func blockingOpen<Object>(
        name: String, what: String, timeout: Duration?, _ open: () throws(InterprocessError) -> Object
    ) throws(InterprocessError) -> Object {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff()
        while true {
            if let object = try attempt(name: name, what: what, deadline: deadline, timeout: timeout, open) { return object }
            backoff.sleep(before: deadline)
        }
    }

    /// One attempt: the object, or nil if there is none yet; `timedOut` once `deadline` has passed.
    private static func attempt<Object>(
        name: String, what: String, deadline: Deadline, timeout: Duration?, _ open: () throws(InterprocessError) -> Object
    ) throws(InterprocessError) -> Object? {
        do throws(InterprocessError) {
            return try open()
        } catch {
            guard error.code == .notFound else { throw error }
        }
        if deadline.hasPassed {
            throw InterprocessError(.timedOut, objectName: name, detail: "no \(what) of this name was created within \(timeout ?? .zero)")
        }
        return nil
    }
}

extension SharedMemory {
    /// Opens the segment `name`, suspending the task (no thread blocks) until a process has created
    /// it, for at most `timeout` (nil: as long as it takes). A segment is named only once it is
    /// complete, so this never sees a half-created one; the checks of ``open(name:trusting:)-(String,_)``
    /// apply to what it finds (another user's segment is `permissionDenied` at once, not waited
    /// for). It polls the name, pausing up to 10 ms between attempts.
    /// - Throws: `timedOut` (nothing was opened), `cancelled` (nothing was opened); any error of
    ///   ``open(name:trusting:)-(String,_)`` other than `notFound`.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> SharedMemory {
        try await CreatorWait.open(name: name, what: "segment", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> SharedMemory {
        try CreatorWait.blockingOpen(name: name, what: "segment", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension ProcessMutex {
    /// Opens the named mutex, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``: never a half-created object, the
    /// checks of ``open(name:trusting:)``, `timedOut` and `cancelled` having opened nothing.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> ProcessMutex {
        try await CreatorWait.open(name: name, what: "mutex", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> ProcessMutex {
        try CreatorWait.blockingOpen(name: name, what: "mutex", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension ProcessSemaphore {
    /// Opens the named semaphore, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> ProcessSemaphore {
        try await CreatorWait.open(name: name, what: "semaphore", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> ProcessSemaphore {
        try CreatorWait.blockingOpen(name: name, what: "semaphore", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension ProcessEvent {
    /// Opens the named event, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> ProcessEvent {
        try await CreatorWait.open(name: name, what: "event", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> ProcessEvent {
        try CreatorWait.blockingOpen(name: name, what: "event", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension ProcessCondition {
    /// Opens the named condition, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> ProcessCondition {
        try await CreatorWait.open(name: name, what: "condition", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> ProcessCondition {
        try CreatorWait.blockingOpen(name: name, what: "condition", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension ProcessRWLock {
    /// Opens the named reader-writer lock, suspending the task until a process has created it, for
    /// at most `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)``.
    public static func openWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) async throws(InterprocessError) -> ProcessRWLock {
        try await CreatorWait.open(name: name, what: "reader-writer lock", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, trusting trust: TrustedOwners = .currentUser, timeout: Duration? = nil
    ) throws(InterprocessError) -> ProcessRWLock {
        try CreatorWait.blockingOpen(name: name, what: "reader-writer lock", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, trusting: trust)
        }
    }
}

extension SharedVariable {
    /// Opens the named variable, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)`` and the checks of
    /// ``open(name:type:trusting:)`` (`incompatible` at once if it records another value type).
    public static func openWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) async throws(InterprocessError) -> SharedVariable {
        try await CreatorWait.open(name: name, what: "variable", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:type:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:type:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) throws(InterprocessError) -> SharedVariable {
        try CreatorWait.blockingOpen(name: name, what: "variable", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }
}

extension SharedAtomic {
    /// Opens the named atomic, suspending the task until a process has created it, for at most
    /// `timeout` (nil: as long as it takes). The rules of
    /// ``SharedMemory/openWhenCreated(name:trusting:timeout:)`` and the checks of
    /// ``open(name:type:trusting:)`` (`incompatible` at once if it records another value type).
    public static func openWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) async throws(InterprocessError) -> SharedAtomic {
        try await CreatorWait.open(name: name, what: "atomic", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }

    /// The blocking form of ``openWhenCreated(name:type:trusting:timeout:)``: blocks the calling thread.
    @available(*, noasync, message: "use the async openWhenCreated(name:type:trusting:timeout:) in async code")
    public static func blockingOpenWhenCreated(
        name: String, type: TypeFingerprint = TypeFingerprint(of: Value.self), trusting trust: TrustedOwners = .currentUser,
        timeout: Duration? = nil
    ) throws(InterprocessError) -> SharedAtomic {
        try CreatorWait.blockingOpen(name: name, what: "atomic", timeout: timeout) { () throws(InterprocessError) in
            try open(name: name, type: type, trusting: trust)
        }
    }
}
