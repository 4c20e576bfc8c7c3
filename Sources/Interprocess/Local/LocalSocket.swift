public import SystemPackage
import InterprocessSystem
import Synchronization

/// A connection over a Unix domain stream socket that carries whole messages, each with optional
/// file descriptors, between two processes on this machine.
///
/// ```swift
/// // Server
/// let listener = try LocalSocketListener.listen(name: "render")
/// let connection = try await listener.accept()
/// print("client:", connection.peer)                          // pid, uid, gid, from the kernel
/// let request = try await connection.receive()
/// try await connection.send(Array("done".utf8), descriptors: [resultFile])
///
/// // Client (another process)
/// let socket = try LocalSocket.blockingConnect(name: "render", timeout: .seconds(5))
/// try socket.blockingSend(Array("render page 3".utf8))       // blocking forms: not in async code
/// let reply = try socket.blockingReceive(timeout: .seconds(30))
/// ```
///
/// **Messages.** A stream has no message boundaries of its own: each message is framed by an 8-byte
/// header (length as a little-endian `UInt32`, descriptor count as a little-endian `UInt16`,
/// version 1, a reserved byte) followed by its bytes; descriptors travel with the header
/// (`SCM_RIGHTS`). A message longer than ``maximumMessageSize`` is refused by the receiver (which
/// then shuts the connection down: the stream can no longer be trusted), as is a header that is not
/// ours, or descriptors that do not match the header — a peer cannot make the receiver allocate
/// without bound or lose track of the descriptors it sent.
///
/// **Descriptor passing** hands the receiver new descriptors for the sender's open files — a memory
/// segment (``send(_:timeout:)``), a pipe end, a file, another socket — which SwiftNIO, for
/// one, does not offer. A received descriptor belongs to the receiver (see ``LocalMessage``).
///
/// **Peers.** ``peer`` holds the other process's pid, uid and gid as the kernel recorded them when
/// the connection was made (`SO_PEERCRED`); both sides have it.
///
/// **Waiting.** Every call that may wait comes `async` (``receive(timeout:)``: parks no thread — one
/// process-wide thread polls every waiting descriptor — and honours cancellation), blocking
/// (``blockingReceive(timeout:)``: unavailable in async code) and `try…` (``tryReceive()``: never
/// waits); a `timeout` (nil: none) makes a wait throw `timedOut`. The untimed blocking calls wait in
/// the kernel (one `recvmsg` or `sendmsg`, as fast as a raw socket),
/// and ``close()`` ends such a wait at once (`closed`). A
/// receive that times out or is cancelled halfway through a message keeps what it got; the next
/// receive continues the same message. A send that times out or is cancelled before any byte of its
/// message went out sends nothing; one that stops halfway leaves the stream unusable for sending,
/// so it shuts the sending direction down (the peer sees the connection end, never half a message)
/// and later sends throw `disconnected`. Several tasks may send (or receive) at once: messages are
/// never interleaved, and each message is received by one receiver.
///
/// When the peer is gone, receives throw `disconnected` (after every message it sent was received)
/// and sends throw `disconnected`; nothing raises SIGPIPE.
public final class LocalSocket: Sendable {
    /// The other process, as the kernel saw it connect.
    public let peer: PeerCredentials
    let owner: DescriptorOwner
    private let receiving = Mutex(ReceiveState())
    private let sending = Mutex(SendState())
    private let limit: Atomic<Int>

    /// The largest message ``receive(timeout:)`` accepts by default (64 MiB).
    public static let defaultMaximumMessageSize = 64 << 20
    /// Most descriptors one message carries.
    public static let maximumDescriptors = UnixSocket.maximumDescriptors
    /// Bytes of the header before each message on the stream.
    public static let headerSize = 8
    static let frameVersion: UInt8 = 1

    init(fd: FileDescriptor, name: String?) {
        owner = DescriptorOwner(fd, name: name)
        peer = (try? UnixSocket.peerCredentials(fd)).map(PeerCredentials.init) ?? PeerCredentials(pid: 0, uid: .max, gid: .max)
        limit = Atomic(Self.defaultMaximumMessageSize)
    }

    deinit { close() }

    /// The largest message this socket accepts, in bytes (at most `UInt32.max`).
    public var maximumMessageSize: Int {
        get { limit.load(ordering: .relaxed) }
        set { limit.store(min(max(newValue, 0), Int(UInt32.max)), ordering: .relaxed) }
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { owner.isClosed }

    /// The socket's name in errors: the path it connected to, if any.
    var name: String? { owner.name }

    // MARK: Connecting

    /// A connected pair of sockets in this process (e.g. to hand one end to a child process).
    public static func pair() throws(InterprocessError) -> (LocalSocket, LocalSocket) {
        let (a, b) = try perform(.socket, name: nil) { () throws(Errno) in try UnixSocket.pair(.stream) }
        try? a.setBlocking()
        try? b.setBlocking()
        return (LocalSocket(fd: a, name: nil), LocalSocket(fd: b, name: nil))
    }

    /// Connects to the listener at `path` if it takes the connection at once.
    /// - Throws: `notFound` (no socket file), `connectionRefused` (a socket file that nobody listens
    ///   on any more, or a listener whose queue is full), `permissionDenied`.
    public static func tryConnect(path: String) throws(InterprocessError) -> LocalSocket {
        guard let socket = try connectAttempt(path: path, queueFull: .connectionRefused) else {
            throw InterprocessError(.connectionRefused, objectName: path, detail: "the listener's queue of pending connections is full")
        }
        return socket
    }

    /// Connects to the listener at `path` without blocking a thread.
    ///
    /// Without a `timeout`, waits only while the listener's queue of pending connections is full. With
    /// one, waits at most `timeout` for a listener to appear and take the connection: a missing socket
    /// file, or one that nobody listens on, is retried until then (the server may be starting).
    /// - Throws: as ``tryConnect(path:)`` (without a timeout, except for a full queue);
    ///   `timedOut` (with the last reason in its detail); `cancelled` if the task is cancelled.
    public static func connect(path: String, timeout: Duration? = nil) async throws(InterprocessError) -> LocalSocket {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff(first: 50_000, limit: 5_000_000)
        while true {
            if Task.isCancelled { throw InterprocessError(.cancelled, objectName: path, detail: "the task was cancelled") }
            if let socket = try connectAttempt(path: path, deadline: deadline, retryMissing: timeout != nil) { return socket }
            try await backoff.sleepAsync(before: deadline, name: path)
        }
    }

    /// Connects to the listener at `path`, blocking the calling thread. The blocking form of
    /// ``connect(path:timeout:)``.
    @available(*, noasync, message: "use the async connect(path:timeout:) in async code")
    public static func blockingConnect(path: String, timeout: Duration? = nil) throws(InterprocessError) -> LocalSocket {
        let deadline = Deadline(after: timeout)
        var backoff = Backoff(first: 50_000, limit: 5_000_000)
        while true {
            if let socket = try connectAttempt(path: path, deadline: deadline, retryMissing: timeout != nil) { return socket }
            backoff.sleep(before: deadline)
        }
    }

    /// Connects without blocking a thread to the listener named `name` in the per-user runtime
    /// directory (see ``LocalSocketListener/listen(name:backlog:)``), as ``connect(path:timeout:)``.
    public static func connect(name: String, timeout: Duration? = nil) async throws(InterprocessError) -> LocalSocket {
        try await connect(path: LocalSocketListener.path(forName: name), timeout: timeout)
    }

    /// Connects to the listener named `name`, blocking the calling thread. The blocking form of
    /// ``connect(name:timeout:)``.
    @available(*, noasync, message: "use the async connect(name:timeout:) in async code")
    public static func blockingConnect(name: String, timeout: Duration? = nil) throws(InterprocessError) -> LocalSocket {
        try blockingConnect(path: LocalSocketListener.path(forName: name), timeout: timeout)
    }

    /// One round of a connecting wait: the socket, or nil to pause and try again. Throws `timedOut`
    /// once `deadline` has passed; with `retryMissing`, a missing or refusing listener is retried.
    private static func connectAttempt(path: String, deadline: Deadline, retryMissing: Bool) throws(InterprocessError) -> LocalSocket? {
        do {
            if let socket = try connectAttempt(path: path, queueFull: .timedOut) { return socket }
        } catch where retryMissing && (error.code == .notFound || error.code == .connectionRefused) {
            if deadline.hasPassed { throw timedOut(path, error) }
            return nil
        }
        if deadline.hasPassed {
            throw InterprocessError(.timedOut, objectName: path, detail: "the listener's queue stayed full")
        }
        return nil
    }

    private static func timedOut(_ path: String, _ last: InterprocessError) -> InterprocessError {
        InterprocessError(.timedOut, objectName: path, systemError: last.systemError, detail: "no listener took the connection in time (last: \(last.code))")
    }

    /// One connect: the socket, or nil when the listener's queue is full (EAGAIN).
    private static func connectAttempt(path: String, queueFull: InterprocessError.Code) throws(InterprocessError) -> LocalSocket? {
        guard let address = UnixSocket.address(path: path) else {
            throw InterprocessError(.invalidName, objectName: path.replacingNulls, detail: "a socket path has 1 to \(UnixSocket.maximumPathLength) bytes and no NUL")
        }
        let fd = try perform(.socket, name: path) { () throws(Errno) in try UnixSocket.make(.stream) }
        do {
            try UnixSocket.connect(fd, to: address)
        } catch {
            try? fd.close()
            if error == .resourceTemporarilyUnavailable { return nil } // the listener's queue is full
            throw InterprocessError(.connectStream, error, objectName: path)
        }
        // Blocking mode: untimed calls wait in the kernel; the others pass MSG_DONTWAIT.
        try? fd.setBlocking()
        return LocalSocket(fd: fd, name: path)
    }

    // MARK: Sending

    /// Sends `bytes` as one message, with `descriptors` (which stay open here: the receiver gets its
    /// own), suspending the task (no thread blocks) while the socket has no room, for at most
    /// `timeout` (nil: as long as it takes).
    /// - Throws: `disconnected` when the peer is gone; `invalidSize` for a message over 4 GiB or more
    ///   than ``maximumDescriptors`` descriptors; `timedOut` or `cancelled` — nothing was sent if no
    ///   byte of the message had gone out; otherwise the socket can no longer send (see
    ///   ``LocalSocket``).
    public func send(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], timeout: Duration? = nil) async throws(InterprocessError) {
        try await send(bytes, descriptors: descriptors, until: Deadline(after: timeout))
    }

    /// ``send(_:descriptors:timeout:)`` with a deadline.
    func send(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], until deadline: Deadline) async throws(InterprocessError) {
        let id = try enqueue(bytes, descriptors)
        do {
            try await DescriptorIO.suspending(owner, deadline: deadline) { fd throws(InterprocessError) in try sendAttempt(fd, id) }
        } catch {
            abandon(id)
            throw error
        }
    }

    /// Sends one message, blocking the calling thread while the socket has no room, for at most
    /// `timeout` (nil: as long as it takes: one `sendmsg` that waits in the kernel, which
    /// ``close()`` ends). The blocking form of ``send(_:descriptors:timeout:)``.
    @available(*, noasync, message: "use the async send(_:descriptors:timeout:) in async code")
    public func blockingSend(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], timeout: Duration? = nil) throws(InterprocessError) {
        try blockingSend(bytes, descriptors: descriptors, until: Deadline(after: timeout))
    }

    /// ``blockingSend(_:descriptors:timeout:)`` with a deadline.
    @available(*, noasync)
    func blockingSend(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], until deadline: Deadline) throws(InterprocessError) {
        let id = try enqueue(bytes, descriptors)
        do {
            try DescriptorIO.blockingSocket(owner, deadline: deadline) { fd, wait throws(InterprocessError) in try sendAttempt(fd, id, wait: wait) }
        } catch {
            abandon(id)
            throw error
        }
    }

    /// Sends one message if the socket takes it now; never waits.
    ///
    /// - Returns: false if nothing of it could be sent (the socket's buffer is full). True if it was
    ///   sent — or, for a message bigger than what the socket buffers (about 200 KB on Linux), if its
    ///   first part was: the rest then stays queued in this socket and goes out, in order, with the
    ///   next send call of any form or ``flush(timeout:)``.
    public func trySend(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = []) throws(InterprocessError) -> Bool {
        let id = try enqueue(bytes, descriptors)
        do {
            _ = try DescriptorIO.once(owner) { fd throws(InterprocessError) in try sendAttempt(fd, id) }
        } catch {
            abandon(id)
            throw error
        }
        return sending.withLock { state -> Bool in
            if id <= state.completed { return true }
            guard let index = state.queue.firstIndex(where: { $0.id == id }) else { return true }
            if state.queue[index].sent > 0 || (index == 0 && state.writing) {
                // Its first part went out: keep the rest (its descriptors went with the first part).
                state.queue[index].descriptors = []
                return true
            }
            state.queue.remove(at: index)
            return false
        }
    }

    /// Bytes of messages accepted by ``trySend(_:descriptors:)`` that are still queued in this socket.
    public var queuedBytes: Int {
        sending.withLock { state in state.queue.reduce(0) { $0 + $1.count - $1.sent } }
    }

    /// Sends what ``trySend(_:descriptors:)`` left queued, suspending the task (no thread blocks)
    /// while the socket has no room, for at most `timeout` (nil: as long as it takes).
    /// - Throws: `timedOut`, `cancelled` (what is left stays queued), `disconnected`.
    public func flush(timeout: Duration? = nil) async throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        guard let last = sending.withLock({ $0.queue.last?.id }) else { return }
        try await DescriptorIO.suspending(owner, deadline: deadline) { fd throws(InterprocessError) in try sendAttempt(fd, last) }
    }

    /// Sends what ``trySend(_:descriptors:)`` left queued, blocking the calling thread. The blocking
    /// form of ``flush(timeout:)``.
    @available(*, noasync, message: "use the async flush(timeout:) in async code")
    public func blockingFlush(timeout: Duration? = nil) throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        guard let last = sending.withLock({ $0.queue.last?.id }) else { return }
        try DescriptorIO.blocking(owner, deadline: deadline) { fd throws(InterprocessError) in try sendAttempt(fd, last) }
    }

    /// A queued message: its header and its bytes (the caller's array itself, not a copy, when it
    /// passed an array), sent with one gathering `sendmsg`.
    private struct Frame {
        let id: UInt64
        let header: [UInt8]
        let payload: [UInt8]
        var descriptors: [FileDescriptor]
        var sent = 0
        var count: Int { header.count + payload.count }
    }

    private struct SendState {
        var queue: [Frame] = []
        var nextID: UInt64 = 0
        /// Every frame with an id up to this one is sent.
        var completed: UInt64 = 0
        var broken: String?
        /// A call is writing the head frame (without the lock).
        var writing = false
    }

    private func enqueue(_ bytes: some Collection<UInt8>, _ descriptors: [FileDescriptor]) throws(InterprocessError) -> UInt64 {
        guard bytes.count <= Int(UInt32.max) else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "\(bytes.count) bytes; a message holds at most \(UInt32.max)")
        }
        guard descriptors.count <= Self.maximumDescriptors else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "\(descriptors.count) descriptors; a message carries at most \(Self.maximumDescriptors)")
        }
        var header = [UInt8]()
        header.reserveCapacity(Self.headerSize)
        withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { header.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt16(descriptors.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(Self.frameVersion)
        header.append(0)
        let payload = Array(bytes) // no copy when `bytes` is an array
        return try sending.withLock { state throws(InterprocessError) -> UInt64 in
            if let broken = state.broken { throw InterprocessError(.disconnected, objectName: name, detail: broken) }
            state.nextID += 1
            state.queue.append(Frame(id: state.nextID, header: header, payload: payload, descriptors: descriptors))
            return state.nextID
        }
    }

    /// Sends queued frames in order until frame `id` is sent (done) or the socket is full (wait).
    private enum HeadStep {
        case finished, busy
        case write(Frame)
    }

    /// Sends queued frames in order until frame `id` is sent (done), the socket is full (wait), or
    /// another call is writing (busy). The `sendmsg` runs without the lock (it may wait in the
    /// kernel): one caller at a time writes the head frame, marked by `writing`.
    private func sendAttempt(_ fd: FileDescriptor, _ id: UInt64, wait: Bool = false) throws(InterprocessError) -> IOAttempt<Void> {
        while true {
            let step = try sending.withLock { state throws(InterprocessError) -> HeadStep in
                if id <= state.completed { return .finished }
                if let broken = state.broken { throw InterprocessError(.disconnected, objectName: name, detail: broken) }
                if state.writing { return .busy }
                guard let head = state.queue.first else { return .finished }
                state.writing = true
                return .write(head)
            }
            let head: Frame
            switch step {
            case .finished: return .done(())
            case .busy: return .busy
            case .write(let frame): head = frame
            }
            let result = head.header.withUnsafeBytes { header in
                head.payload.withUnsafeBytes { payload in
                    Result { () throws(Errno) -> Int? in
                        let sent = head.sent
                        let first = sent < header.count ? UnsafeRawBufferPointer(rebasing: header[sent...]) : UnsafeRawBufferPointer(rebasing: payload[(sent - header.count)...])
                        let second = sent < header.count ? payload : UnsafeRawBufferPointer(start: nil, count: 0)
                        return try UnixSocket.send(fd, first, second, descriptors: sent == 0 ? head.descriptors : [], wait: wait)
                    }
                }
            }
            let progressed = try sending.withLock { state throws(InterprocessError) -> Bool in
                state.writing = false
                let count: Int?
                do throws(Errno) { count = try result.get() } catch {
                    let failure = InterprocessError(.sendStream, error, objectName: name)
                    // A descriptor to send that is not open (EBADF) fails the whole `sendmsg`: if it
                    // was the frame's first, nothing went out, its caller drops it, and the
                    // connection stays usable. Any other failure ends the sending side.
                    if head.sent > 0 || failure.code != .invalidArgument {
                        state.broken = "the connection was closed by the peer (\(error))"
                    }
                    throw failure
                }
                guard let count, state.queue.first?.id == head.id else { return false }
                state.queue[0].sent += count
                if state.queue[0].sent == head.count {
                    state.completed = head.id
                    state.queue.removeFirst()
                }
                return true
            }
            if !progressed { return .wait(.writable) }
        }
    }

    /// After a failed, timed-out or cancelled send of frame `id`: a frame not started is dropped; one
    /// that went out in part breaks the sending side (shut down, so that the peer never waits for the
    /// rest of a message).
    private func abandon(_ id: UInt64) {
        let shutDown = sending.withLock { state -> Bool in
            guard id > state.completed, let index = state.queue.firstIndex(where: { $0.id == id }) else { return false }
            // Another call is writing it: that call finishes it, or breaks the connection itself.
            if index == 0 && state.writing { return false }
            if state.queue[index].sent == 0 {
                state.queue.remove(at: index)
                return false
            }
            if state.broken == nil { state.broken = "an earlier send stopped in the middle of a message; the connection can no longer send" }
            state.queue.removeAll()
            return true
        }
        if shutDown, let fd = try? owner.begin() {
            UnixSocket.shutdownSending(fd)
            owner.end()
        }
    }

    // MARK: Receiving

    /// Receives the next message, suspending the task (no thread blocks) until one has arrived, for
    /// at most `timeout` (nil: as long as it takes).
    /// - Throws: `disconnected` when the peer closed the connection (or died) and every message it
    ///   sent was received; `invalidSize` / `corrupt` for a message this socket refuses (the
    ///   connection is then shut down, and every later receive throws the same error); `timedOut` or
    ///   `cancelled` (part of a message that arrived is kept for the next receive).
    public func receive(timeout: Duration? = nil) async throws(InterprocessError) -> LocalMessage {
        try await receive(until: Deadline(after: timeout))
    }

    /// ``receive(timeout:)`` with a deadline.
    func receive(until deadline: Deadline) async throws(InterprocessError) -> LocalMessage {
        try await DescriptorIO.suspending(owner, deadline: deadline) { fd throws(InterprocessError) in try receiveAttempt(fd) }
    }

    /// Receives the next message, blocking the calling thread, for at most `timeout` (nil: as long as
    /// it takes: one `recvmsg` that waits in the kernel, which ``close()`` ends). The blocking form of
    /// ``receive(timeout:)``.
    @available(*, noasync, message: "use the async receive(timeout:) in async code")
    public func blockingReceive(timeout: Duration? = nil) throws(InterprocessError) -> LocalMessage {
        try blockingReceive(until: Deadline(after: timeout))
    }

    /// ``blockingReceive(timeout:)`` with a deadline.
    @available(*, noasync)
    func blockingReceive(until deadline: Deadline) throws(InterprocessError) -> LocalMessage {
        try DescriptorIO.blockingSocket(owner, deadline: deadline) { fd, wait throws(InterprocessError) in try receiveAttempt(fd, wait: wait) }
    }

    /// Receives a message if a whole one is there; never waits.
    /// - Returns: nil if no whole message has arrived (what has is kept for the next receive).
    public func tryReceive() throws(InterprocessError) -> LocalMessage? {
        try DescriptorIO.once(owner) { fd throws(InterprocessError) in try receiveAttempt(fd) }
    }

    /// The receiving side: a read-ahead buffer, so that a small message usually takes one `recvmsg`
    /// (several, when several are queued), and a message too big for the buffer read straight into its
    /// own array.
    ///
    /// Descriptors ride on a message's first bytes: the kernel attaches them to the first buffer of
    /// the `sendmsg` that sent the header, hands them out with the first read that touches those
    /// bytes, and never returns bytes past a buffer that carried descriptors in the same read. So the
    /// descriptors of one read belong to the last message that *starts* within the bytes it returned;
    /// descriptors in a read where no message starts are a protocol violation (`corrupt`).
    private struct ReceiveState {
        static let capacity = 64 << 10

        /// Buffered bytes are `buffer[start..<end]`; `base` is the stream offset of `buffer[0]`.
        var buffer: [UInt8] = []
        var start = 0
        var end = 0
        var base: UInt64 = 0
        /// Descriptors by the stream offset of the message they came with.
        var descriptors: [UInt64: [FileDescriptor]] = [:]
        /// A message too big for the buffer, being read straight into `payload`.
        /// `next` is the stream offset of the message after it.
        var direct: (payload: [UInt8], count: Int, descriptors: [FileDescriptor], expected: Int, next: UInt64)?
        var failure: InterprocessError?
        /// A placeholder while a receive step runs outside the lock.
        var reading = false
        /// The last message was too big for the buffer: with nothing buffered, read only the next
        /// header, so that a big payload goes straight into its own array.
        var lastWasDirect = false

        mutating func fail(_ error: InterprocessError) -> InterprocessError {
            for fds in descriptors.values { for fd in fds { try? fd.close() } }
            descriptors = [:]
            if let direct { for fd in direct.descriptors { try? fd.close() } }
            direct = nil
            failure = error
            return error
        }

        /// Whether nothing of a message has arrived.
        var isEmpty: Bool { start == end && direct == nil }
    }

    /// One receive step. The state is taken out of the lock while the step runs (its `recvmsg` may
    /// wait in the kernel), leaving a placeholder marked `reading`: other receivers find it busy.
    private func receiveAttempt(_ fd: FileDescriptor, wait: Bool = false) throws(InterprocessError) -> IOAttempt<LocalMessage> {
        let maximum = maximumMessageSize
        // Moved out with `swap`, so that the buffer has one owner and is never copied on write.
        var local = ReceiveState()
        let took = receiving.withLock { state -> Bool in
            if state.reading { return false }
            swap(&local, &state)
            state.reading = true
            return true
        }
        guard took else { return .busy }
        let outcome = Result { () throws(InterprocessError) -> IOAttempt<LocalMessage> in try receiveStep(fd, &local, maximum, wait) }
        // Closed meanwhile: what this step holds is released here.
        if owner.isClosed { _ = local.fail(InterprocessError(.closed, objectName: name, detail: "it was closed")) }
        receiving.withLock { state in swap(&local, &state) }
        do {
            return try outcome.get()
        } catch {
            if error.code == .corrupt || error.code == .invalidSize {
                // The stream can no longer be trusted: drop the connection.
                UnixSocket.shutdownBoth(fd)
            }
            throw error
        }
    }

    private func receiveStep(_ fd: FileDescriptor, _ state: inout ReceiveState, _ maximum: Int, _ wait: Bool) throws(InterprocessError) -> IOAttempt<LocalMessage> {
        if let failure = state.failure { throw failure }
        while true {
            if state.direct != nil {
                if let message = try continueDirect(fd, &state, wait) { return .done(message) }
                return .wait(.readable)
            }
            if let message = try takeBuffered(&state, maximum) { return .done(message) }
            if state.direct != nil { continue }
            guard try fill(fd, &state, wait) else { return .wait(.readable) }
        }
    }

    /// The message at the front of the buffer, if it is all there; or, for one too big for the
    /// buffer, switches to reading it directly (and returns nil).
    private func takeBuffered(_ state: inout ReceiveState, _ maximum: Int) throws(InterprocessError) -> LocalMessage? {
        guard state.end - state.start >= Self.headerSize else { return nil }
        let (length, expected) = try header(at: state.start, &state, maximum)
        let messageStart = state.base &+ UInt64(state.start)
        if Self.headerSize + length > ReceiveState.capacity {
            // Too big for the buffer: what is buffered starts its payload, the rest is read into it.
            // Every byte is written by the copy below and the reads that follow before it is used.
            var payload = [UInt8](unsafeUninitializedCapacity: length) { _, count in count = length }
            let have = state.end - state.start - Self.headerSize
            let bodyStart = state.start + Self.headerSize
            payload.withUnsafeMutableBytes { target in
                state.buffer.withUnsafeBytes { source in
                    target.baseAddress!.copyMemory(from: source.baseAddress! + bodyStart, byteCount: have)
                }
            }
            let next = messageStart &+ UInt64(Self.headerSize + length)
            state.direct = (payload, have, state.descriptors.removeValue(forKey: messageStart) ?? [], expected, next)
            state.start = state.end
            return nil
        }
        guard state.end - state.start >= Self.headerSize + length else { return nil }
        let bytes = Array(state.buffer[(state.start + Self.headerSize)..<(state.start + Self.headerSize + length)])
        let descriptors = state.descriptors.removeValue(forKey: messageStart) ?? []
        state.start += Self.headerSize + length
        state.lastWasDirect = false
        guard descriptors.count == expected else {
            for fd in descriptors { try? fd.close() }
            throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "the message announced \(expected) descriptors and \(descriptors.count) arrived"))
        }
        return LocalMessage(bytes: bytes, descriptors: descriptors, sender: peer)
    }

    /// Reads more into the buffer; false when nothing is there (EAGAIN).
    private func fill(_ fd: FileDescriptor, _ state: inout ReceiveState, _ wait: Bool) throws(InterprocessError) -> Bool {
        if state.buffer.isEmpty { state.buffer = [UInt8](repeating: 0, count: ReceiveState.capacity) }
        if state.start > 0 {
            // Move what is left to the front.
            let count = state.end - state.start
            let from = state.start
            state.buffer.withUnsafeMutableBytes { raw in
                if count > 0 { raw.baseAddress!.copyMemory(from: raw.baseAddress! + from, byteCount: count) }
            }
            state.base &+= UInt64(from)
            state.start = 0
            state.end = count
        }
        let oldEnd = state.end
        let limit = state.lastWasDirect && oldEnd == 0 ? Self.headerSize : ReceiveState.capacity
        let result = state.buffer.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) -> SocketReception? in
                try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[oldEnd..<limit]), wait: wait)
            }
        }
        guard let reception = try received(result, &state) else { return false }
        if reception.count == 0 {
            if state.isEmpty {
                throw InterprocessError(.disconnected, objectName: name, detail: "the peer closed the connection")
            }
            throw state.fail(InterprocessError(.disconnected, objectName: name, detail: "the peer closed the connection in the middle of a message"))
        }
        state.end += reception.count
        if !reception.descriptors.isEmpty {
            // They belong to the last message that starts within the bytes just read.
            var position = state.start
            var owner: Int?
            while position < state.end {
                if position >= oldEnd { owner = position }
                guard state.end - position >= Self.headerSize else { break }
                let length = state.buffer.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position, as: UInt32.self))) }
                position += Self.headerSize + length
            }
            guard let owner else {
                for fd in reception.descriptors { try? fd.close() }
                throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "descriptors arrived in the middle of a message"))
            }
            let key = state.base &+ UInt64(owner)
            guard state.descriptors[key] == nil else {
                for fd in reception.descriptors { try? fd.close() }
                throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "two sets of descriptors for one message"))
            }
            state.descriptors[key] = reception.descriptors
        }
        return true
    }

    /// Reads the rest of a message too big for the buffer straight into its payload: the message
    /// when complete, nil when the rest is not there yet.
    private func continueDirect(_ fd: FileDescriptor, _ state: inout ReceiveState, _ wait: Bool) throws(InterprocessError) -> LocalMessage? {
        while var direct = state.direct, direct.count < direct.payload.count {
            let done = direct.count
            state.direct = nil // no copy of the payload while it is written to
            let result = direct.payload.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) -> SocketReception? in
                    try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]), wait: wait)
                }
            }
            state.direct = direct
            guard let reception = try received(result, &state) else { return nil }
            if reception.count == 0 {
                throw state.fail(InterprocessError(.disconnected, objectName: name, detail: "the peer closed the connection in the middle of a message"))
            }
            if !reception.descriptors.isEmpty {
                for fd in reception.descriptors { try? fd.close() }
                throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "descriptors arrived in the middle of a message"))
            }
            direct.count += reception.count
            state.direct = direct
        }
        guard let direct = state.direct else { return nil }
        state.direct = nil
        // The buffer was emptied when the direct read began; the next message starts after this one.
        state.base = direct.next
        state.start = 0
        state.end = 0
        state.lastWasDirect = true
        guard direct.descriptors.count == direct.expected else {
            for fd in direct.descriptors { try? fd.close() }
            throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "the message announced \(direct.expected) descriptors and \(direct.descriptors.count) arrived"))
        }
        return LocalMessage(bytes: direct.payload, descriptors: direct.descriptors, sender: peer)
    }

    /// Checks one `recvmsg`: errors, and more descriptors than a message may carry.
    private func received(_ result: Result<SocketReception?, Errno>, _ state: inout ReceiveState) throws(InterprocessError) -> SocketReception? {
        let reception: SocketReception?
        do { reception = try result.get() } catch {
            let failure = InterprocessError(.receive, error, objectName: name)
            throw failure.code == .disconnected ? state.fail(failure) : failure
        }
        guard let reception else { return nil }
        if reception.controlTruncated {
            for fd in reception.descriptors { try? fd.close() }
            throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "more descriptors arrived than a message may carry; the excess was lost"))
        }
        return reception
    }

    /// The length and descriptor count of the header at `offset` in the buffer, checked.
    private func header(at offset: Int, _ state: inout ReceiveState, _ maximum: Int) throws(InterprocessError) -> (length: Int, descriptors: Int) {
        let (length, count, version) = state.buffer.withUnsafeBytes { raw in
            (Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))),
             Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))),
             raw[offset + 6])
        }
        guard version == Self.frameVersion else {
            throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "not an Interprocess message (header version \(version))"))
        }
        guard count <= Self.maximumDescriptors else {
            throw state.fail(InterprocessError(.corrupt, objectName: name, detail: "a message announcing \(count) descriptors"))
        }
        guard length <= maximum else {
            throw state.fail(InterprocessError(.invalidSize, objectName: name, detail: "a message of \(length) bytes; this socket accepts at most \(maximum)"))
        }
        return (length, count)
    }

    // MARK: Closing

    /// Closes the connection: the peer's receives throw `disconnected` once it has received what was
    /// sent, its sends throw `disconnected`. Waits in progress on this socket end with `closed`.
    /// Descriptors of a message half received are closed. Idempotent; also done when the last
    /// reference goes away.
    public func close() {
        owner.close { fd in UnixSocket.shutdownBoth(fd) } // also ends a receive waiting in the kernel
        receiving.withLock { state in
            _ = state.fail(InterprocessError(.closed, objectName: name, detail: "it was closed"))
        }
    }
}
