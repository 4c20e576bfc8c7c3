public import SystemPackage
import CInterprocess
import InterprocessSystem
public import Synchronization

/// Request / response between processes: a server process (or several) answers the requests that
/// any number of client processes send, and each reply reaches only the request it answers.
///
/// ```swift
/// // The server:
/// let lengths = try Service<String, Int>.create(name: "lengths", capacity: 64)
/// try await lengths.serve { text in text.count }          // until the service is closed
///
/// // A client (another process):
/// let client = try Service<String, Int>.open(name: "lengths")
/// let n = try await client.request("hello", timeout: .seconds(2))     // 5
/// ```
///
/// **Messages.** `Request` and `Response` travel as a ``Channel``'s messages do: `[UInt8]` as they
/// are, `String` as UTF-8, a pair of `BitwiseCopyable` types as their raw bytes, any other
/// `Codable` types as JSON (a service chooses by both types: `Service<Int, Int>` is raw,
/// `Service<String, Int>` JSON). The creator records both types (their ``TypeFingerprint`` and
/// formats); opening the service as other types throws `incompatible`. A request longer than
/// `maxRequestSize`, or a response longer than `maxResponseSize`, is refused (`invalidSize`).
///
/// **Clients.** ``request(_:timeout:)`` (suspends the task) and ``blockingRequest(_:timeout:)``
/// (blocks the thread) send a request and wait for its reply. `timeout` bounds the whole call:
/// waiting for a free slot (at most `capacity` requests are in flight), for room in the queue, and
/// for the reply. There is no `try…` form: a request always waits for a server. A request that
/// times out (`timedOut`) or whose task is cancelled (`cancelled`) is given up: if its server
/// replies later, the reply is discarded and reaches nobody — not even a later request in the same
/// slot. Errors from the server's side: `requestFailed` (the server refused, with its reason) and
/// `serverDied` (the server that took the request died before replying).
///
/// **Servers.** ``serve(_:)`` (async) and ``blockingServe(_:)`` answer requests with a handler
/// until the service is closed and every queued request was answered; a handler that throws
/// refuses the request (its client gets `requestFailed` with the error's description). For more
/// control, ``nextCall(timeout:)``, ``blockingNextCall(timeout:)`` and ``tryNextCall()`` return one
/// ``ServiceCall``, a `~Copyable` value that must be answered exactly once: ``ServiceCall/reply(_:)``
/// and ``ServiceCall/refuse(_:)`` consume it, and one dropped without an answer refuses its request
/// (`requestFailed`, "dropped"), so that no client ever waits for a forgotten call. (A
/// `~Copyable` value cannot be an `AsyncSequence` element, hence a handler or a loop over
/// ``nextCall(timeout:)`` rather than a `for await` over calls.) Any number of server processes
/// may serve one service: each request is taken by exactly one of them. A server driven by an event
/// loop waits on ``readinessDescriptor()`` (readable when a request is queued) and answers with
/// ``tryServe(_:)``, which never waits.
///
/// **Raw values, the hot path.** When `Request` and `Response` are `BitwiseCopyable`, a request
/// that needs no wait is queued in one call, and its client looks for the reply for a few pause
/// rounds (~20) before it sets up the general wait; the servers — ``serve(_:)``,
/// ``blockingServe(_:)`` and ``ExclusiveServer``'s — take a request that is queued (or, blocking,
/// comes within such a spin) in one call and answer it straight into its reply slot. The steps,
/// and what a process killed at each leaves behind (below), are the general path's.
///
/// ## How it works
/// The state (`cipc_service` in `CInterprocessService.h`, which documents the protocol field by
/// field) is a request queue — a whole ``Channel`` ring, embedded — and `capacity` reply slots.
/// A client takes a free reply slot (its owner token in the slot's `client` word, then the slot's
/// *ticket* is advanced and the slot marked pending), queues a message naming the slot and the
/// ticket, and waits on the slot's futex word. A server takes the message from the queue and,
/// while it still holds the queue slot, marks the reply slot as served by its own token (one
/// 16-byte compare-and-swap of the ticket, the phase and the server's token); then it releases
/// the queue slot, runs the handler, writes the reply into the reply slot, publishes it (one
/// 16-byte compare-and-swap of the phase and the reply's length: the line the client waits on is
/// written once per reply) and wakes the client if it parked.
/// A message whose ticket is not the slot's current one is stale (its client gave up) and is
/// passed over. Tickets only grow: a reply can only land in the request it answers. Waits spin
/// briefly, then park; nobody makes a system call to wake nobody.
///
/// ## What a process killed at each step leaves behind
/// Owner tokens are vouched for by a kernel lock that vanishes when their process dies (as for
/// ``ProcessMutex`` and ``Channel``), so liveness is one `fcntl`, right across PID namespaces.
///
/// | Killed | What is left | Who repairs it, and what the other side sees |
/// |---|---|---|
/// | a client, before its request is queued | a reply slot held by a dead client | a client that finds no free slot takes it back (`reclaimedSlots`) |
/// | a client, with a request queued | the request, and its slot | the server serves it; its reply is discarded (`discardedReplies`); the slot is taken back as above |
/// | a client, while a server handles its request (and writes the reply) | the slot, the server's until it replies | left to the server; taken back once it replied |
/// | a server, after taking a queue message and before marking the slot | the message, held in the queue by a dead process | the queue redelivers it to another server (a channel's orphan); the client keeps waiting |
/// | a server, with the request marked as its own (handling it, writing the reply) | a request nobody will answer | its client checks its server every 50 ms and gets `serverDied` (`serverDeaths`); the request is never served twice |
/// | a server, after publishing the reply | a complete reply, maybe no wake-up | its client finds it at its next check (≤ 50 ms) |
/// | a client that gave up while a server handled its request, then that server | a slot marked abandoned by a dead server | taken back by a client that needs a slot |
///
/// So a request is answered at most once; a client whose server died learns it within about 50 ms
/// (`serverDied`: it cannot know whether the handler ran, and decides itself whether to send it
/// again); a request no server has taken waits for one (a new server takes over the queue), up to
/// the timeout. A client that dies costs its slot until another client needs one. A client that
/// gives up (times out, is cancelled) while a server handles its request leaves the slot to that
/// server, which frees it when it replies (the reply is discarded): a handler that never returns
/// keeps one slot.
///
/// **One server alone.** ``exclusiveServer()`` takes the server role for one process: it takes
/// requests from the queue without locked instructions (the request queue's exclusive receiver);
/// see ``ExclusiveServer`` for what its death leaves behind.
///
/// **Never trusting a peer.** The reply slot index and ticket of every queue message are checked
/// against the slot table, phases against the protocol, a reply's length against the slot, and a
/// client's own slot must still carry its token and ticket; a value no correct peer writes is
/// `corrupt` (a bad queue message is dropped), never an access outside the state.
///
/// **Participants.** A service keeps a channel's table of participants (``ChannelReadiness`` is
/// built on it): each process that has it open, whether it served or sent requests, its handles
/// and its readiness descriptor, which `ipc ls` and `ipc inspect` show (servers and clients, alive
/// or ended). A service created before the table existed works without it (no descriptors).
///
/// **Handles.** ``close()`` closes the *service*, for every process: new requests throw `closed`;
/// servers answer what is queued and then end (``serve(_:)`` returns). A process that is done with
/// it calls ``detach()`` (or drops its last reference): the last holder of a `.whileReferenced`
/// service removes it.
public final class Service<Request: Sendable, Response: Sendable>: @unchecked Sendable {
    // `@unchecked Sendable`: the shared state is reached through `core`'s atomics; the rest is
    // immutable or atomic.

    let state: ServiceState
    @usableFromInline let core: ServiceCore
    @usableFromInline let requestCodec: ChannelCodec<Request>
    @usableFromInline let responseCodec: ChannelCodec<Response>
    /// Set by ``detach()``: the verbs then throw `closed`.
    @usableFromInline let detached = Atomic<Bool>(false)

    init(state: ServiceState, request: ChannelCodec<Request>, response: ChannelCodec<Response>) throws(InterprocessError) {
        if let size = request.fixedSize, size > state.core.maxRequestSize {
            state.close()
            throw InterprocessError(.corrupt, objectName: state.name, detail: "its request slots are smaller than one \(Request.self)")
        }
        if let size = response.fixedSize, size > state.core.maxResponseSize {
            state.close()
            throw InterprocessError(.corrupt, objectName: state.name, detail: "its reply slots are smaller than one \(Response.self)")
        }
        self.state = state
        core = state.core
        requestCodec = request
        responseCodec = response
    }

    static func parameters(
        capacity: Int, maxRequestSize: Int, maxResponseSize: Int, request: ChannelCodec<Request>, response: ChannelCodec<Response>
    ) -> ServiceParameters {
        ServiceParameters(
            capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
            requestType: request.messageType, responseType: response.messageType)
    }

    static func create(
        name: String, capacity: Int, maxRequestSize: Int, maxResponseSize: Int, request: ChannelCodec<Request>,
        response: ChannelCodec<Response>, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> Service {
        let parameters = parameters(capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize, request: request, response: response)
        return try create(name: name, parameters: parameters, codecs: (request, response), permissions: permissions, lifetime: lifetime)
    }

    static func openOrCreate(
        name: String, capacity: Int, maxRequestSize: Int, maxResponseSize: Int, request: ChannelCodec<Request>,
        response: ChannelCodec<Response>, permissions: FilePermissions, lifetime: Lifetime, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        let parameters = parameters(capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize, request: request, response: response)
        return try openOrCreate(
            name: name, parameters: parameters, codecs: (request, response), permissions: permissions, lifetime: lifetime, trusting: trust)
    }

    // MARK: The service

    /// The service's name.
    public var name: String { state.name ?? "" }
    /// How many requests can be in flight at once (reply slots; also the queue's capacity).
    public var capacity: Int { core.slotCount }
    /// The largest request, in bytes (for raw values, the value's size).
    public var maxRequestSize: Int { requestCodec.fixedSize ?? core.maxRequestSize }
    /// The largest response, in bytes (for raw values, the value's size).
    public var maxResponseSize: Int { responseCodec.fixedSize ?? core.maxResponseSize }
    /// Requests queued and not yet taken by a server (a snapshot; may include stale ones).
    public var queued: Int { core.queue.count }
    /// Whether ``close()`` was called (by any process).
    public var isClosed: Bool { core.queue.isClosed }

    /// Closes the service for every process: from now on every request throws `closed`; servers
    /// answer the requests that are queued, then ``serve(_:)`` returns and ``nextCall(timeout:)``
    /// throws `closed`. Requests in flight get their replies. Closing twice does nothing more.
    public func close() { core.queue.close() }

    /// This process stops using the service through this handle; the last holder of a
    /// `.whileReferenced` service removes it. Later calls on this handle throw `closed`. Idempotent;
    /// also done when the last reference goes away.
    public func detach() {
        detached.store(true, ordering: .relaxed)
        state.close()
    }

    /// Removes the name of the service `name` (`incompatible` if it is not a service); processes
    /// that have it open go on using it.
    public static func remove(name: String) throws(InterprocessError) {
        try SharedObjectStorage.remove(ServiceState.self, name: name)
    }

    @inlinable @inline(__always)
    func checkAttached() throws(InterprocessError) {
        if detached.load(ordering: .relaxed) { throw detachedError() }
    }

    @usableFromInline @inline(never)
    func detachedError() -> InterprocessError {
        InterprocessError(.closed, objectName: name, detail: "this handle was detached")
    }

    // MARK: Clients

    /// Sends `request` and waits for its reply, suspending the task (no thread blocks), for at most
    /// `timeout` in all — nil: as long as it takes.
    /// - Throws: `closed` if the service is closed; `invalidSize` for a request longer than
    ///   ``maxRequestSize``; `encodingFailed` — in these cases having sent nothing; `timedOut` or
    ///   `cancelled` (the request is given up: a late reply is discarded); `requestFailed` if the
    ///   server refused it; `serverDied` if the server that took it died; `decodingFailed` for a
    ///   reply that is not a valid `Response`; `corrupt` if the state was damaged.
    @inlinable
    public func request(_ request: Request, timeout: Duration? = nil) async throws(InterprocessError) -> Response {
        try checkAttached()
        if Task.isCancelled { throw cancelledError() }
        if requestCodec.fixedSize != nil {
            // A raw value: its own bytes go into the queue slot (no payload, no codec call); when
            // nothing has to wait, in one call, and the reply looked for before the general wait.
            if let ticket = try withUnsafeBytes(of: request, { bytes throws(InterprocessError) in try core.sendNow(bytes) }) {
                if let response = try collectNow(ticket) { return response }
                return try collect(ticket, try await core.awaitReply(ticket, ServiceWait(timeout: timeout)))
            }
            let wait = ServiceWait(timeout: timeout)
            let (ticket, claim) = try await core.claimRequest(wait)
            withUnsafeBytes(of: request) { core.send(ticket, claim, $0) }
            return try collect(ticket, try await core.awaitReply(ticket, wait))
        }
        let wait = ServiceWait(timeout: timeout)
        let payload = try encode(request)
        let (ticket, claim) = try await core.claimRequest(wait)
        payload.withBytes { core.send(ticket, claim, $0) }
        return try collect(ticket, try await core.awaitReply(ticket, wait))
    }

    /// Sends `request` and waits for its reply, blocking the calling thread, for at most `timeout`
    /// in all — nil: as long as it takes. The blocking form of ``request(_:timeout:)``, with its
    /// errors (but never `cancelled`).
    @available(*, noasync, message: "use the async request(_:timeout:) in async code")
    @inlinable
    public func blockingRequest(_ request: Request, timeout: Duration? = nil) throws(InterprocessError) -> Response {
        try checkAttached()
        if requestCodec.fixedSize != nil {
            if let ticket = try withUnsafeBytes(of: request, { bytes throws(InterprocessError) in try core.sendNow(bytes) }) {
                if let response = try collectNow(ticket) { return response }
                return try collect(ticket, try core.blockingAwaitReply(ticket, ServiceWait(timeout: timeout)))
            }
            let wait = ServiceWait(timeout: timeout)
            let (ticket, claim) = try core.blockingClaimRequest(wait)
            withUnsafeBytes(of: request) { core.send(ticket, claim, $0) }
            return try collect(ticket, try core.blockingAwaitReply(ticket, wait))
        }
        let wait = ServiceWait(timeout: timeout)
        let payload = try encode(request)
        let (ticket, claim) = try core.blockingClaimRequest(wait)
        payload.withBytes { core.send(ticket, claim, $0) }
        return try collect(ticket, try core.blockingAwaitReply(ticket, wait))
    }

    /// The reply of `ticket` if it is in now or within a short spin and is a raw `Response` of its
    /// size: loaded, and the slot freed, in one call (``ServiceCore/collectValue(_:size:spinning:_:)``).
    /// Nil otherwise (the general wait and ``collect(_:_:)`` see to it), having done nothing.
    @inlinable
    func collectNow(_ ticket: ServiceTicket) throws(InterprocessError) -> Response? {
        guard let size = responseCodec.fixedSize else { return nil }
        var value: Response?
        guard core.collectValue(ticket, size: size, spinning: HotPath.spinRounds, { value = $0.loadUnaligned(as: Response.self) }) else {
            return nil
        }
        guard let value else { throw core.named(ChannelCodec<Response>.mismatch()) }
        return value
    }

    /// The reply that `outcome` found, decoded.
    @inlinable
    func collect(_ ticket: ServiceTicket, _ outcome: ServiceOutcome) throws(InterprocessError) -> Response {
        let codec = responseCodec
        if let size = codec.fixedSize {
            // A raw value: loaded straight from the reply slot (no payload, no codec call: the
            // codec's closures are generic, and look up their payload's metadata on every call).
            var value: Response?
            do throws(InterprocessError) {
                try core.collect(ticket, outcome) { bytes throws(InterprocessError) in
                    guard bytes.count == size else { throw ChannelCodec<Response>.wrongSize(bytes.count, size: size) }
                    value = bytes.loadUnaligned(as: Response.self)
                }
                guard let value else { throw ChannelCodec<Response>.mismatch() }
                return value
            } catch {
                throw core.named(error)
            }
        }
        var payload: ChannelPayload<Response>?
        do throws(InterprocessError) {
            try core.collect(ticket, outcome) { bytes throws(InterprocessError) in payload = try codec.copyOut(bytes) }
            guard let payload else { throw ChannelCodec<Response>.mismatch() }
            return try codec.decode(payload)
        } catch {
            throw core.named(error)
        }
    }

    @inlinable
    func encode(_ request: Request) throws(InterprocessError) -> ChannelPayload<Request> {
        try encode(request, requestCodec, limit: core.maxRequestSize, as: "request")
    }

    @inlinable
    func encodeResponse(_ response: Response) throws(InterprocessError) -> ChannelPayload<Response> {
        try encode(response, responseCodec, limit: core.maxResponseSize, as: "response")
    }

    /// `value` encoded by `codec`, or `invalidSize` if it is longer than `limit` bytes (`what`: a
    /// request or a response).
    @inlinable
    func encode<Value>(
        _ value: Value, _ codec: ChannelCodec<Value>, limit: Int, as what: String
    ) throws(InterprocessError) -> ChannelPayload<Value> {
        let payload: ChannelPayload<Value>
        do throws(InterprocessError) {
            payload = try codec.encode(value)
        } catch {
            throw core.named(error)
        }
        guard payload.count <= limit else {
            throw InterprocessError(.invalidSize, objectName: name,
                detail: "a \(what) of \(payload.count) bytes does not fit the service's \(limit)-byte \(what)s")
        }
        return payload
    }

    // MARK: Servers

    /// Takes the next request, suspending the task (no thread blocks) while none is queued, for at
    /// most `timeout` — nil: as long as it takes. The call must be answered (``ServiceCall/reply(_:)``
    /// or ``ServiceCall/refuse(_:)``); one dropped unanswered is refused.
    /// - Throws: `closed` once the service is closed and every queued request was taken;
    ///   `timedOut`; `cancelled` — in both cases having taken nothing; `corrupt` for a damaged
    ///   queue message (dropped) or state. A request that cannot be decoded is refused (its client
    ///   gets `requestFailed`) and the wait goes on.
    @inlinable
    public func nextCall(timeout: Duration? = nil) async throws(InterprocessError) -> ServiceCall<Request, Response> {
        try await nextCall(timeout: timeout, exclusive: false)
    }

    /// ``nextCall(timeout:)``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    @inlinable
    func nextCall(timeout: Duration?, exclusive: Bool) async throws(InterprocessError) -> ServiceCall<Request, Response> {
        try checkAttached()
        if Task.isCancelled { throw cancelledError() }
        core.markServer()
        let wait = ServiceWait(timeout: timeout)
        while true {
            if let call = try call(from: try await core.claimToServe(wait, exclusive: exclusive)) { return call }
        }
    }

    /// Takes the next request, blocking the calling thread while none is queued, for at most
    /// `timeout` — nil: as long as it takes. The blocking form of ``nextCall(timeout:)``, with its
    /// errors (but never `cancelled`).
    @available(*, noasync, message: "use the async nextCall(timeout:) in async code")
    @inlinable
    public func blockingNextCall(timeout: Duration? = nil) throws(InterprocessError) -> ServiceCall<Request, Response> {
        try blockingNextCall(timeout: timeout, exclusive: false)
    }

    /// ``blockingNextCall(timeout:)``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    @available(*, noasync, message: "use the async nextCall(timeout:) in async code")
    @inlinable
    func blockingNextCall(timeout: Duration?, exclusive: Bool) throws(InterprocessError) -> ServiceCall<Request, Response> {
        try checkAttached()
        core.markServer()
        let wait = ServiceWait(timeout: timeout)
        while true {
            if let call = try call(from: try core.blockingClaimToServe(wait, exclusive: exclusive)) { return call }
        }
    }

    /// Takes the next request if one is queued now; never waits. Nil if there is none. With a
    /// readiness descriptor (``readinessDescriptor()``), an event loop calls it until nil whenever
    /// the descriptor is readable, after ``ChannelReadiness/acknowledge()``; ``tryServe(_:)`` is
    /// that loop with a handler.
    ///
    /// When the queue is empty it also looks, at most once per 50 ms in this process, for a request
    /// held by a server that died before it marked the request as its own, and takes it (what a
    /// server parked in ``nextCall(timeout:)`` does while it waits): a loop that serves only by
    /// descriptor should therefore call it on a timer as well (every 50 ms to a few seconds: how
    /// long such a request may wait), since nothing announces that request again.
    /// - Throws: `closed` once the service is closed and every queued request was taken; `corrupt`,
    ///   as ``nextCall(timeout:)``.
    @inlinable
    public func tryNextCall() throws(InterprocessError) -> ServiceCall<Request, Response>? {
        try tryNextCall(exclusive: false)
    }

    /// ``tryNextCall()``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    @inlinable
    func tryNextCall(exclusive: Bool) throws(InterprocessError) -> ServiceCall<Request, Response>? {
        try checkAttached()
        core.markServer()
        while true {
            guard let claim = try core.tryClaimToServe(exclusive: exclusive) else { return nil }
            if let call = try call(from: claim) { return call }
        }
    }

    /// The call of the request in the claimed queue slot; nil for a stale message or a request
    /// that could not be decoded (refused).
    @inlinable
    func call(from claim: ChannelClaim) throws(InterprocessError) -> ServiceCall<Request, Response>? {
        let codec = requestCodec
        if let size = codec.fixedSize { return try rawCall(from: claim, size: size) }
        var payload: Result<ChannelPayload<Request>, InterprocessError>?
        let taken: ServiceTicket?
        do throws(InterprocessError) {
            taken = try core.take(claim) { bytes in
                do throws(InterprocessError) { payload = .success(try codec.copyOut(bytes)) } catch { payload = .failure(error) }
            }
        } catch {
            throw core.named(error)
        }
        guard let ticket = taken else { return nil }
        do throws(InterprocessError) {
            guard let payload else { throw ChannelCodec<Request>.mismatch() }
            let request = try codec.decode(try payload.get())
            return ServiceCall(request: request, service: self, right: ServiceReplyRight(core: core, ticket: ticket))
        } catch {
            core.refuse(ticket, reason: "the server could not read the request: \(error)")
            return nil
        }
    }

    /// ``call(from:)`` for raw values: the request is loaded straight from the queue slot (no
    /// payload, no codec call).
    @inlinable
    func rawCall(from claim: ChannelClaim, size: Int) throws(InterprocessError) -> ServiceCall<Request, Response>? {
        guard let (ticket, request) = try rawRequest(from: claim, size: size) else { return nil }
        return ServiceCall(request: request, service: self, right: ServiceReplyRight(core: core, ticket: ticket))
    }

    /// The raw request in the claimed queue slot and its ticket, to be answered once (by a
    /// ``ServiceCall``, or by ``answer(_:_:with:)``); nil for a stale message or one of another
    /// length (refused).
    @inlinable
    func rawRequest(from claim: ChannelClaim, size: Int) throws(InterprocessError) -> (ServiceTicket, Request)? {
        var value: Request?
        var count = 0
        let taken: ServiceTicket?
        do throws(InterprocessError) {
            taken = try core.take(claim) { bytes in
                count = bytes.count
                if count == size { value = bytes.loadUnaligned(as: Request.self) }
            }
        } catch {
            throw core.named(error)
        }
        guard let ticket = taken else { return nil }
        guard let value else {
            let error = ChannelCodec<Request>.wrongSize(count, size: size)
            core.refuse(ticket, reason: "the server could not read the request: \(error)")
            return nil
        }
        return (ticket, value)
    }

    /// Answers requests with `handler` until the service is closed and every queued request was
    /// answered (then returns). A handler that throws refuses its request: the client gets
    /// `requestFailed` with the error's description. Requests are handled one at a time, in the
    /// order they were queued; run several `serve` loops (tasks or processes) to handle several at once.
    /// - Throws: `cancelled` when the task is cancelled (between requests: a request being handled
    ///   is answered first); `invalidSize` or `encodingFailed` for a response that cannot be sent
    ///   (its request is refused first); `corrupt`, as ``nextCall(timeout:)``.
    @inlinable
    public func serve(_ handler: (Request) async throws -> Response) async throws(InterprocessError) {
        try await serve(exclusive: false, handler)
    }

    /// ``serve(_:)``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    @inlinable
    func serve(exclusive: Bool, _ handler: (Request) async throws -> Response) async throws(InterprocessError) {
        let values = requestCodec.fixedSize != nil && responseCodec.fixedSize != nil
        if values { core.markServer() }
        while true {
            if values {
                // Raw values: a request queued now is taken in one call (no spin on a cooperative
                // thread) and answered straight into its reply slot; else the general wait.
                let taken: (ServiceTicket, Request)?
                do throws(InterprocessError) {
                    try checkAttached()
                    if Task.isCancelled { throw cancelledError() }
                    taken = try rawRequestNow(exclusive: exclusive, spinning: 0)
                } catch where error.code == .closed {
                    return
                }
                if let (ticket, request) = taken {
                    let response: Response
                    do {
                        response = try await handler(request)
                    } catch {
                        core.refuse(ticket, reason: "\(error)")
                        continue
                    }
                    deliver(ticket, response)
                    continue
                }
            }
            let call: ServiceCall<Request, Response>
            do throws(InterprocessError) {
                call = try await nextCall(timeout: nil, exclusive: exclusive)
            } catch where error.code == .closed {
                return
            }
            let response: Response
            do {
                response = try await handler(call.request)
            } catch {
                call.refuse("\(error)")
                continue
            }
            try call.reply(response)
        }
    }

    /// Answers requests with `handler` until the service is closed and every queued request was
    /// answered, blocking the calling thread: the blocking form of ``serve(_:)``, with its errors
    /// (but never `cancelled`).
    @available(*, noasync, message: "use the async serve(_:) in async code")
    @inlinable
    public func blockingServe(_ handler: (Request) throws -> Response) throws(InterprocessError) {
        try blockingServe(exclusive: false, handler)
    }

    /// ``blockingServe(_:)``; `exclusive`: as the holder of the server role (``ExclusiveServer``).
    @available(*, noasync, message: "use the async serve(_:) in async code")
    @inlinable
    func blockingServe(exclusive: Bool, _ handler: (Request) throws -> Response) throws(InterprocessError) {
        if requestCodec.fixedSize != nil, responseCodec.fixedSize != nil { return try blockingServeValues(exclusive: exclusive, handler) }
        while true {
            let call: ServiceCall<Request, Response>
            do throws(InterprocessError) {
                call = try blockingNextCall(timeout: nil, exclusive: exclusive)
            } catch where error.code == .closed {
                return
            }
            try answer(call, with: handler)
        }
    }

    /// ``blockingServe(exclusive:_:)`` for raw requests and responses: a request queued now, or
    /// within a short spin, is taken by ``rawRequestNow(exclusive:spinning:)`` and answered straight
    /// into its reply slot, with no ``ServiceCall``; the general wait when none comes.
    @available(*, noasync, message: "use the async serve(_:) in async code")
    @inlinable
    func blockingServeValues(exclusive: Bool, _ handler: (Request) throws -> Response) throws(InterprocessError) {
        core.markServer()
        while true {
            do throws(InterprocessError) {
                try checkAttached()
                if let (ticket, request) = try rawRequestNow(exclusive: exclusive, spinning: HotPath.spinRounds) {
                    try answer(ticket, request, with: handler)
                    continue
                }
                try answer(try blockingNextCall(timeout: nil, exclusive: exclusive), with: handler)
            } catch where error.code == .closed {
                return
            }
        }
    }

    /// A raw request queued now or within `rounds` pause rounds, and its ticket, to be answered
    /// once: taken in one call by the exclusive server (``ServiceCore/exclusiveTakeNow(size:spinning:_:)``),
    /// claimed with the general path's first attempt by a shared one. Nil when none came, or the
    /// one claimed was stale or of another length (refused): the caller waits the general way.
    @inlinable
    func rawRequestNow(exclusive: Bool, spinning rounds: Int) throws(InterprocessError) -> (ServiceTicket, Request)? {
        let size = MemoryLayout<Request>.size
        if exclusive {
            var request: Request?
            guard let ticket = core.exclusiveTakeNow(size: size, spinning: rounds, { request = $0.loadUnaligned(as: Request.self) }),
                  let request
            else { return nil }
            return (ticket, request)
        }
        guard let claim = try core.claimToServeNow(spinning: rounds) else { return nil }
        return try rawRequest(from: claim, size: size)
    }

    /// ``answer(_:with:)`` for a raw request taken by ``rawRequestNow(exclusive:spinning:)`` (no
    /// ``ServiceCall``: the ticket is answered here, once) and a raw response.
    @inlinable
    func answer(_ ticket: ServiceTicket, _ request: Request, with handler: (Request) throws -> Response) throws(InterprocessError) {
        let response: Response
        do {
            response = try handler(request)
        } catch {
            core.refuse(ticket, reason: "\(error)")
            return
        }
        deliver(ticket, response)
    }

    /// Delivers the raw `response` to the request of `ticket` (a client that gave up meanwhile
    /// never sees it).
    @inlinable
    func deliver(_ ticket: ServiceTicket, _ response: Response) {
        _ = withUnsafeBytes(of: response) { core.deliver(ticket, failed: false, $0) }
    }

    /// Answers `call` with what `handler` makes of its request, or refuses it with the error the
    /// handler threw (what ``blockingServe(_:)`` and ``tryServe(_:)`` do with each call).
    @inlinable
    func answer(_ call: consuming ServiceCall<Request, Response>, with handler: (Request) throws -> Response) throws(InterprocessError) {
        let response: Response
        do {
            response = try handler(call.request)
        } catch {
            call.refuse("\(error)")
            return
        }
        try call.reply(response)
    }

    // MARK: Helpers

    @usableFromInline
    func cancelledError() -> InterprocessError {
        InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled")
    }
}

/// The right to answer one request, held by its ``ServiceCall``: answered exactly once, because
/// answering consumes it, and dropping it unanswered refuses the request. Its fields are trivial
/// (an unmanaged, retained reference) so that answering can `discard` it.
///
/// `@unchecked Sendable`: it owns one retain of an immutable, `Sendable` core, and a ticket.
@usableFromInline
struct ServiceReplyRight: ~Copyable, @unchecked Sendable {
    @usableFromInline let core: Unmanaged<ServiceCore>
    @usableFromInline let ticket: ServiceTicket

    @usableFromInline
    init(core: ServiceCore, ticket: ServiceTicket) {
        self.core = .passRetained(core)
        self.ticket = ticket
    }

    /// Delivers the reply whose bytes `withBytes` lends; whether the client got it. (Not generic,
    /// and not inlinable: it ends the right with `discard`.)
    @usableFromInline
    consuming func deliver(_ withBytes: ((UnsafeRawBufferPointer) -> Bool) -> Bool) -> Bool {
        let core = core
        let ticket = ticket
        discard self
        defer { core.release() }
        // The core is kept alive by our retain until the `defer`: borrowed, not retained again
        // for the closure (a reference captured by the closure cost a retain and a release).
        return withBytes { bytes in core._withUnsafeGuaranteedRef { $0.deliver(ticket, failed: false, bytes) } }
    }

    /// Refuses the request with `reason`; whether the client got it.
    @usableFromInline
    consuming func refuse(_ reason: String) -> Bool {
        let core = core
        let ticket = ticket
        discard self
        defer { core.release() }
        return core.takeUnretainedValue().refuse(ticket, reason: reason)
    }

    @inlinable
    deinit {
        core.takeUnretainedValue().refuse(ticket, reason: "the server dropped the request without answering it")
        core.release()
    }
}

/// One request that a server took (``Service/nextCall(timeout:)``), to be answered exactly once:
/// ``reply(_:)`` or ``refuse(_:)`` consume it, and the compiler refuses a second answer. A call
/// dropped unanswered (a thrown error, a forgotten branch) refuses its request, so its client gets
/// `requestFailed` rather than waiting.
public struct ServiceCall<Request: Sendable, Response: Sendable>: ~Copyable, Sendable {
    /// What the client asked.
    public let request: Request
    @usableFromInline let service: Service<Request, Response>
    @usableFromInline var right: ServiceReplyRight

    @usableFromInline
    init(request: Request, service: Service<Request, Response>, right: consuming ServiceReplyRight) {
        self.request = request
        self.service = service
        self.right = right
    }

    /// Sends `response` to the client. Returns whether it got there: false if the client gave up
    /// (timed out, was cancelled or died) meanwhile — the response is then discarded, and reaches
    /// nobody else.
    /// - Throws: `invalidSize` for a response longer than the service's `maxResponseSize`, or
    ///   `encodingFailed`: the request is then refused (its client gets `requestFailed`).
    @discardableResult @inlinable
    public consuming func reply(_ response: Response) throws(InterprocessError) -> Bool {
        let service = service
        let right = right
        if service.responseCodec.fixedSize != nil {
            // A raw value: its own bytes go into the reply slot (no payload, no codec call).
            return right.deliver { deliver in withUnsafeBytes(of: response) { deliver($0) } }
        }
        let payload: ChannelPayload<Response>
        do throws(InterprocessError) {
            payload = try service.encodeResponse(response)
        } catch {
            _ = right.refuse("the server could not send its response: \(error)")
            throw error
        }
        return right.deliver { payload.withBytes($0) }
    }

    /// Refuses the request: its client gets `requestFailed` with `reason` (cut to the service's
    /// `maxResponseSize` bytes). Returns whether the client got it.
    @discardableResult @inlinable
    public consuming func refuse(_ reason: String) -> Bool {
        let right = right
        return right.refuse(reason)
    }
}

// MARK: - Any message types, as bytes (for `ipc call` / `ipc serve`)

extension Service where Request == [UInt8], Response == [UInt8] {
    /// Opens a service whatever its message types, to send requests and answer them as bytes. For
    /// the `ipc` tool, which knows the formats (``requestFormat``, ``responseFormat``).
    package static func openAnyType(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try Service(state: SharedObjectStorage.open(ServiceState.self, name: name, expecting: nil, trusting: trust), request: .bytes, response: .bytes)
    }
}

extension Service {
    /// How the requests are encoded, as the creator recorded it.
    package var requestFormat: ChannelMessageFormat { ChannelMessageFormat(recorded: state.geometry.requestFormat) }
    /// How the responses are encoded, as the creator recorded it.
    package var responseFormat: ChannelMessageFormat { ChannelMessageFormat(recorded: state.geometry.responseFormat) }
    /// The request and response types the creator recorded.
    package var typeDescription: (request: String, response: String) { (state.geometry.requestType, state.geometry.responseType) }
}

extension ChannelMessageFormat {
    init(recorded format: UInt32) {
        switch format {
        case CIPC_CHANNEL_FORMAT_VALUE: self = .rawValue
        case CIPC_CHANNEL_FORMAT_JSON: self = .json
        case CIPC_CHANNEL_FORMAT_TEXT: self = .text
        default: self = .bytes
        }
    }
}

// MARK: - Creating and opening, by message types

extension Service where Request: Codable, Response: Codable {
    /// Creates a service whose requests and responses travel as JSON, of up to `maxRequestSize` and
    /// `maxResponseSize` bytes, with room for `capacity` requests in flight. Throws `alreadyExists`
    /// if the name is taken, `invalidArgument` for a capacity outside 1...65,536 or a size outside
    /// 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Service {
        try create(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                   request: .json, response: .json, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a service of these types (`incompatible` if it was created for others). Only a
    /// service of a trusted owner opens (by default: this process's user; see ``TrustedOwners``).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try open(name: name, codecs: (request: .json, response: .json), trusting: trust)
    }

    /// Opens the service, or creates it as `create(name:capacity:maxRequestSize:maxResponseSize:permissions:lifetime:)`
    /// does if there is none; `created` says which. Of racing processes exactly one creates it.
    public static func openOrCreate(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                         request: .json, response: .json, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Service where Request == String, Response == String {
    /// Creates a service of strings (UTF-8) of up to `maxRequestSize` and `maxResponseSize` bytes,
    /// with room for `capacity` requests in flight. Throws `alreadyExists` if the name is taken,
    /// `invalidArgument` for a capacity outside 1...65,536 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Service {
        try create(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                   request: .text, response: .text, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a service of strings (`incompatible` if it was created for other types).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try open(name: name, codecs: (request: .text, response: .text), trusting: trust)
    }

    /// Opens the service, or creates it as `create(name:capacity:maxRequestSize:maxResponseSize:permissions:lifetime:)`
    /// does if there is none; `created` says which.
    public static func openOrCreate(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                         request: .text, response: .text, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Service where Request == [UInt8], Response == [UInt8] {
    /// Creates a service of byte messages of up to `maxRequestSize` and `maxResponseSize` bytes,
    /// with room for `capacity` requests in flight. Throws `alreadyExists` if the name is taken,
    /// `invalidArgument` for a capacity outside 1...65,536 or a size outside 1...16 MiB.
    public static func create(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Service {
        try create(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                   request: .bytes, response: .bytes, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a service of byte messages (`incompatible` if it was created for other types).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try open(name: name, codecs: (request: .bytes, response: .bytes), trusting: trust)
    }

    /// Opens the service, or creates it as `create(name:capacity:maxRequestSize:maxResponseSize:permissions:lifetime:)`
    /// does if there is none; `created` says which.
    public static func openOrCreate(
        name: String, capacity: Int, maxRequestSize: Int = 1024, maxResponseSize: Int = 1024,
        permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced, trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxRequestSize: maxRequestSize, maxResponseSize: maxResponseSize,
                         request: .bytes, response: .bytes, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Service where Request: BitwiseCopyable, Response: BitwiseCopyable {
    /// Creates a service whose requests and responses are copied byte for byte (every process must
    /// agree on the types' layouts), with room for `capacity` requests in flight. Throws
    /// `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside 1...65,536.
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Service {
        try create(name: name, capacity: capacity, maxRequestSize: rawSize(Request.self), maxResponseSize: rawSize(Response.self),
                   request: .raw, response: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a service of raw values (`incompatible` if it was created for other types, even ones of
    /// the same sizes).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try open(name: name, codecs: (request: .raw, response: .raw), trusting: trust)
    }

    /// Opens the service, or creates it as `create(name:capacity:permissions:lifetime:)` does if
    /// there is none; `created` says which.
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxRequestSize: rawSize(Request.self), maxResponseSize: rawSize(Response.self),
                         request: .raw, response: .raw, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

extension Service where Request: BitwiseCopyable & Codable, Response: BitwiseCopyable & Codable {
    /// Creates a service whose requests and responses are copied byte for byte (types that are
    /// both `BitwiseCopyable` and `Codable` travel raw), with room for `capacity` requests in flight.
    /// Throws `alreadyExists` if the name is taken, `invalidArgument` for a capacity outside 1...65,536.
    public static func create(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced
    ) throws(InterprocessError) -> Service {
        try create(name: name, capacity: capacity, maxRequestSize: rawSize(Request.self), maxResponseSize: rawSize(Response.self),
                   request: .raw, response: .raw, permissions: permissions, lifetime: lifetime)
    }

    /// Opens a service of raw values (`incompatible` if it was created for other types).
    public static func open(name: String, trusting trust: TrustedOwners = .currentUser) throws(InterprocessError) -> Service {
        try open(name: name, codecs: (request: .raw, response: .raw), trusting: trust)
    }

    /// Opens the service, or creates it as `create(name:capacity:permissions:lifetime:)` does if
    /// there is none; `created` says which.
    public static func openOrCreate(
        name: String, capacity: Int, permissions: FilePermissions = .ownerReadWrite, lifetime: Lifetime = .whileReferenced,
        trusting trust: TrustedOwners = .currentUser
    ) throws(InterprocessError) -> (service: Service, created: Bool) {
        try openOrCreate(name: name, capacity: capacity, maxRequestSize: rawSize(Request.self), maxResponseSize: rawSize(Response.self),
                         request: .raw, response: .raw, permissions: permissions, lifetime: lifetime, trusting: trust)
    }
}

/// A raw value's slot size: at least one byte, even for an empty type.
private func rawSize<T>(_: T.Type) -> Int { max(MemoryLayout<T>.size, 1) }
