// The exclusive server of a service: one process takes the requests alone, without claims on the
// request queue. It is the request queue's exclusive receiver (ChannelRing+Exclusive.swift, "Exclusive
// endpoints" in CInterprocessChannel.h); the reply slots' protocol is unchanged.

extension Service {
    /// Takes the service's server role for this process alone, and returns the server that answers
    /// with it: the fastest way for one server to answer a service (it takes each request from the
    /// queue with plain loads and release stores, no locked instruction). While it lives, every
    /// other server of the service — in any process, this one's other handles included — waits until
    /// it is dropped (a `try…` form finds nothing). Clients are not affected.
    ///
    /// ```swift
    /// var server = try lengths.exclusiveServer()     // `var`: its calls are mutating
    /// try server.blockingServe { text in text.count }  // until the service is closed
    /// // dropped here: the role goes back to the service
    /// ```
    ///
    /// Taking the role waits (briefly) until servers that were taking a request finish, and
    /// repairs after those that died. See ``ExclusiveServer`` for what a process killed while it
    /// holds the role leaves behind.
    /// - Throws: `wouldBlock` if a live process (this one included) holds the server role;
    ///   `closed` if this handle was detached; `corrupt` if the role word was damaged.
    public func exclusiveServer() throws(InterprocessError) -> ExclusiveServer<Request, Response> {
        try checkAttached()
        do throws(InterprocessError) {
            try core.queue.takeExclusiveRole(.receiver)
        } catch {
            throw core.named(error)
        }
        core.markServer()
        return ExclusiveServer(service: self)
    }
}

/// The server role of a ``Service``, held by this process alone (``Service/exclusiveServer()``):
/// requests taken without claims, for one server.
///
/// A shared server takes a request's queue slot and position with two compare-and-swaps and
/// releases it with sequentially consistent stores, so that any number of servers can serve at
/// once and a server that dies with a queue slot names itself in it. The holder of the role is the
/// only server: it takes the request at the queue's receive position, marks its reply slot as its
/// own (the same 16-byte compare-and-swap as any server), frees the queue slot and advances the
/// position with release stores. Clients that park for room in the queue make the other half of
/// the barrier (a `membarrier` system call, only when they park). The forms and errors are
/// ``Service``'s: ``nextCall(timeout:)``, ``blockingNextCall(timeout:)``, ``tryNextCall()``,
/// ``serve(_:)``, ``blockingServe(_:)``, ``tryServe(_:)``, and the ``ServiceCall`` they return is
/// answered as any.
///
/// **One owner, checked by the compiler.** The server is `~Copyable` and its calls are `mutating`:
/// it cannot be shared between tasks or threads, only moved. It gives the role back when it is
/// dropped (`deinit`); calls it took and has not answered yet are answered as any (they do not need
/// the role).
///
/// **What a process killed while it holds the role leaves behind.** The role word names a dead
/// process; whoever next needs the role — a server waiting for it (within ~50 ms), or a process
/// taking it — takes it over from the dead token with a compare-and-swap and repairs from the
/// queue. Killed while taking a request, before marking its reply slot, the request is still in the
/// queue and is taken by the next server (its client keeps waiting); killed after marking the slot
/// (before or after freeing the queue slot), the request is the dead server's: its client gets
/// `serverDied` within about 50 ms, and a copy left in the queue is passed over as stale. So a
/// request is still answered at most once, as with shared servers (see ``Service``).
public struct ExclusiveServer<Request: Sendable, Response: Sendable>: ~Copyable, Sendable {
    @usableFromInline let service: Service<Request, Response>

    init(service: Service<Request, Response>) {
        self.service = service
    }

    deinit {
        service.core.queue.giveUpExclusiveRole(.receiver)
    }

    /// The service it serves.
    public var name: String { service.name }

    /// Takes the next request, suspending the task while none is queued, for at most `timeout` (nil:
    /// as long as it takes). ``Service/nextCall(timeout:)``'s errors.
    @inlinable
    public mutating func nextCall(timeout: Duration? = nil) async throws(InterprocessError) -> ServiceCall<Request, Response> {
        try await service.nextCall(timeout: timeout, exclusive: true)
    }

    /// Takes the next request, blocking the calling thread while none is queued, for at most
    /// `timeout` (nil: as long as it takes). ``Service/blockingNextCall(timeout:)``'s errors.
    @available(*, noasync, message: "use the async nextCall(timeout:) in async code")
    @inlinable
    public mutating func blockingNextCall(timeout: Duration? = nil) throws(InterprocessError) -> ServiceCall<Request, Response> {
        try service.blockingNextCall(timeout: timeout, exclusive: true)
    }

    /// Takes the next request if one is queued now; never waits. Nil if there is none.
    /// ``Service/tryNextCall()``'s errors.
    @inlinable
    public mutating func tryNextCall() throws(InterprocessError) -> ServiceCall<Request, Response>? {
        try service.tryNextCall(exclusive: true)
    }

    /// Answers requests with `handler` until the service is closed and every queued request was
    /// answered (then returns). ``Service/serve(_:)``'s behaviour and errors.
    @inlinable
    public mutating func serve(_ handler: (Request) async throws -> Response) async throws(InterprocessError) {
        try await service.serve(exclusive: true, handler)
    }

    /// Answers requests with `handler` until the service is closed and every queued request was
    /// answered, blocking the calling thread. ``Service/blockingServe(_:)``'s behaviour and errors.
    @available(*, noasync, message: "use the async serve(_:) in async code")
    @inlinable
    public mutating func blockingServe(_ handler: (Request) throws -> Response) throws(InterprocessError) {
        try service.blockingServe(exclusive: true, handler)
    }

    /// Answers, with `handler`, every request queued now, and returns how many it answered; never
    /// waits. ``Service/tryServe(_:)``'s behaviour and errors.
    @discardableResult
    public mutating func tryServe(_ handler: (Request) throws -> Response) throws(InterprocessError) -> Int {
        try service.tryServe(exclusive: true, handler)
    }
}
