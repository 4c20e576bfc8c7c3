// A service server's readiness descriptor: the channel's (``ChannelReadiness`` and
// ``ChannelParticipants`` serve channels, message queues and services), reached through the
// service's table of participants (``ServiceParticipants``), and `tryServe`, the loop an event loop
// runs when it is readable.

extension Service {
    /// A descriptor that becomes readable when a request is queued, for a *server* driven by an
    /// event loop (epoll, `poll`, SwiftNIO): the same ``ChannelReadiness`` a channel gives, with the
    /// same protocol — when it is readable, call ``ChannelReadiness/acknowledge()`` first, then
    /// ``tryServe(_:)`` (or ``tryNextCall()`` until nil). Right after creating it, serve until
    /// nothing once as well: requests already queued do not make it readable. ``close()`` makes it
    /// readable too (then ``tryServe(_:)`` answers what is left and throws `closed`).
    ///
    /// ```swift
    /// let lengths = try Service<String, Int>.open(name: "lengths")
    /// let readiness = try lengths.readinessDescriptor()
    /// // Add readiness.fileDescriptor to the loop (readable); whenever it is readable:
    /// readiness.acknowledge()                                // first
    /// let answered = try lengths.tryServe { text in text.count }   // then until nothing is queued
    /// ```
    ///
    /// **No lost wake-up.** ``ChannelReadiness/acknowledge()`` sets this process's bit in the
    /// request queue's `descriptors_armed` word before ``tryServe(_:)`` looks at the queue, and a
    /// client publishes its request in the queue before it loads that word (both sequentially
    /// consistent): either the client sees the bit and wakes the descriptor, or the server sees the
    /// request. While no descriptor is armed a request costs the one load it already made (the
    /// queue is a channel ring, which loads the word after every publish).
    ///
    /// **What it does not cover.** Only clients of the same user wake it (as for a channel). A
    /// request taken by a server killed before it marked the request as its own goes back to the
    /// queue only when a server looks for it: ``tryNextCall()`` does, at most every 50 ms, but no
    /// client announces it again — so a loop that serves only by descriptor also calls
    /// ``tryServe(_:)`` on a timer (every 50 ms to a few seconds: how long such a request may wait).
    /// A client killed after queueing its request and before waking the descriptor leaves a
    /// request announced by the next one (nobody waits for its reply: it is discarded).
    ///
    /// There is no descriptor for replies: a client's ``request(_:timeout:)`` waits for its own
    /// reply (a futex word per reply slot), and the API has no "send now, collect later" form whose
    /// reply an event loop would wait for.
    ///
    /// One per process and service at a time (it counts as one of the process's handles in the
    /// table of participants); close it (or drop it) when done.
    /// - Throws: `alreadyExists` if this process has one open for this service; `incompatible` for a
    ///   service created without a table of participants (by an older version); `outOfMemory` if the
    ///   table's 64 entries are taken; `closed` on a detached handle; `permissionDenied` if the
    ///   runtime directory is not this user's own; `systemError` if the socket cannot be made.
    public func readinessDescriptor() throws(InterprocessError) -> ChannelReadiness {
        try checkAttached()
        guard let participants = state.participants, participants.socketPrefix != nil else {
            throw InterprocessError(.incompatible, objectName: name,
                detail: "this service has no table of participants (created by an older version)")
        }
        core.markServer()
        return try ChannelReadiness(participants: participants, name: name)
    }

    /// Answers, with `handler`, every request queued now, and returns how many it answered (0:
    /// none was queued); never waits for a request. The `try…` form of ``blockingServe(_:)``, for
    /// an event loop: when the service's ``readinessDescriptor()`` is readable, call
    /// ``ChannelReadiness/acknowledge()``, then this. A handler that throws refuses its request
    /// (its client gets `requestFailed` with the error's description; it counts as answered).
    /// The handler runs on the calling thread, one request at a time; requests that clients queue
    /// while it runs are answered too, so a busy service can keep it going: a loop that must bound
    /// its turn uses ``tryNextCall()`` instead (and comes back to the service by itself, since the
    /// descriptor only says that a request *arrived*).
    /// - Throws: `closed` once the service is closed and every queued request was answered (after
    ///   answering those it took); `invalidSize` or `encodingFailed` for a response that cannot be
    ///   sent (its request is refused first); `corrupt`, as ``nextCall(timeout:)``.
    @discardableResult
    public func tryServe(_ handler: (Request) throws -> Response) throws(InterprocessError) -> Int {
        try tryServe(exclusive: false, handler)
    }

    /// ``tryServe(_:)``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    func tryServe(exclusive: Bool, _ handler: (Request) throws -> Response) throws(InterprocessError) -> Int {
        var answered = 0
        while let call = try tryNextCall(exclusive: exclusive) {
            answered += 1
            try answer(call, with: handler)
        }
        return answered
    }
}
