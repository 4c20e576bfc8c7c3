#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import InterprocessSystem
import Synchronization

/// Makes one process the single running instance of an application: later launches hand their
/// arguments to it and step aside.
///
/// ```swift
/// switch try await SingleInstance.acquire(name: "com.example.editor") {   // or blockingAcquire
/// case .secondary:
///     exit(0)                                  // the running editor has our arguments
/// case .primary(let instance):
///     Task {
///         for await launch in instance.launches {
///             open(launch.arguments, relativeTo: launch.workingDirectory)
///         }
///     }
///     runTheEditor()
/// }
/// ```
///
/// ``acquire(name:arguments:timeout:)`` either makes this process the **primary**, which then
/// receives the argument lists of every later launch as an `AsyncSequence` (``launches``), or finds
/// the running primary, hands it this launch's arguments and working directory, waits for its
/// acknowledgement, and reports that this process is **secondary**. Of any number of launches
/// started at once, exactly one becomes primary and every other one reaches it.
///
/// **No stale lock.** The primary is whoever holds a kernel lock (an open-file-description lock
/// beside the socket file, see ``LocalSocketListener``), which the kernel drops the moment the
/// primary dies, however it dies. The next launch then becomes primary at once — it replaces the
/// dead primary's socket file — with no "try again" and nothing for the user to delete. A launch
/// that handed its arguments to a primary that died before acknowledging them tries again (and
/// may become primary itself).
///
/// The socket lives in the per-user runtime directory (``LocalObjects/directory``) as
/// `NAME.instance`, owner-only; the primary also refuses connections from other users. The name is
/// per user: two users each get their own primary.
public final class SingleInstance: Sendable {
    /// What ``acquire(name:arguments:timeout:)`` found.
    public enum Role: Sendable {
        /// This process is the primary instance.
        case primary(SingleInstance)
        /// Another process is the primary instance; it received this launch's arguments. Its
        /// credentials, as the kernel vouches for them.
        case secondary(primary: PeerCredentials)
    }

    /// One later launch of the application.
    public struct Launch: Sendable, Hashable, Codable {
        /// Its arguments (without the program's path, by default).
        public var arguments: [String]
        /// Its working directory, to resolve relative paths among the arguments.
        public var workingDirectory: String
        /// The launching process, as the kernel vouches for it (not sent by the process itself).
        public var process: PeerCredentials

        /// A launch with these parts.
        public init(arguments: [String], workingDirectory: String, process: PeerCredentials) {
            self.arguments = arguments
            self.workingDirectory = workingDirectory
            self.process = process
        }
    }

    /// The application's name, as given to ``acquire(name:arguments:timeout:)``.
    public let name: String
    /// The argument lists of later launches, in the order they arrived. One consumer; it ends when
    /// ``close()`` is called.
    public let launches: AsyncStream<Launch>
    private let listener: LocalSocketListener
    private let continuation: AsyncStream<Launch>.Continuation
    private let server: Mutex<Task<Void, Never>?>

    /// The largest launch message a primary accepts.
    static let maximumLaunchSize = 1 << 20
    static let acknowledgement = Array("ok".utf8)

    private init(name: String, listener: LocalSocketListener) {
        self.name = name
        self.listener = listener
        let (stream, continuation) = AsyncStream.makeStream(of: Launch.self, bufferingPolicy: .unbounded)
        launches = stream
        self.continuation = continuation
        server = Mutex(nil)
        let task = Task.detached { [listener, continuation] in
            await Self.serve(listener, continuation)
        }
        server.withLock { $0 = task }
    }

    deinit { close() }

    /// Becomes the primary instance of `name`, or hands `arguments` to the running primary. No
    /// thread is blocked while it waits for the primary's acknowledgement.
    ///
    /// - Parameters:
    ///   - name: the application's name (1 to 255 bytes, no '/'); per user.
    ///   - arguments: what to hand to the primary (by default this process's arguments, without the
    ///     program's path).
    ///   - timeout: how long to wait for a primary that is starting up or busy to acknowledge.
    /// - Throws: `timedOut` if no primary acknowledged in time and none could be become;
    ///   `cancelled`; `invalidName`, `permissionDenied` (the runtime directory is not safe).
    public static func acquire(
        name: String, arguments: [String] = Array(CommandLine.arguments.dropFirst()), timeout: Duration = .seconds(10)
    ) async throws(InterprocessError) -> Role {
        let deadline = Deadline(after: timeout)
        let path = try LocalDirectory.path(for: name, suffix: LocalDirectory.instanceSuffix)
        let payload = try encodeLaunch(arguments, name: name)
        var backoff = Backoff(first: 200_000, limit: 20_000_000)
        var last: InterprocessError?
        while true {
            if Task.isCancelled { throw InterprocessError(.cancelled, objectName: name, detail: "the task was cancelled") }
            if let role = try await attempt(name: name, path: path, payload: payload, deadline: deadline, last: &last) { return role }
            if deadline.hasPassed { throw gaveUp(name, last) }
            try await backoff.sleepAsync(before: deadline, name: name)
        }
    }

    /// Becomes the primary instance of `name`, or hands `arguments` to the running primary, blocking
    /// the calling thread while it waits. The blocking form of
    /// ``acquire(name:arguments:timeout:)``.
    @available(*, noasync, message: "use the async acquire(name:arguments:timeout:) in async code")
    public static func blockingAcquire(
        name: String, arguments: [String] = Array(CommandLine.arguments.dropFirst()), timeout: Duration = .seconds(10)
    ) throws(InterprocessError) -> Role {
        let deadline = Deadline(after: timeout)
        let path = try LocalDirectory.path(for: name, suffix: LocalDirectory.instanceSuffix)
        let payload = try encodeLaunch(arguments, name: name)
        var backoff = Backoff(first: 200_000, limit: 20_000_000)
        var last: InterprocessError?
        while true {
            if let role = try blockingAttempt(name: name, path: path, payload: payload, deadline: deadline, last: &last) { return role }
            if deadline.hasPassed { throw gaveUp(name, last) }
            backoff.sleep(before: deadline)
        }
    }

    /// Stops being the primary: no more launches are received (``launches`` ends), and the socket
    /// file and the lock are released, so that the next launch becomes primary. Idempotent; also
    /// done when the last reference goes away.
    public func close() {
        server.withLock { task in
            task?.cancel()
            task = nil
        }
        listener.close()
        continuation.finish()
    }

    // MARK: Secondary side

    /// One round: become primary, or reach the primary. Nil when neither worked now (a primary
    /// starting up, or one that just died): try again.
    private static func attempt(
        name: String, path: String, payload: [UInt8], deadline: Deadline, last: inout InterprocessError?
    ) async throws(InterprocessError) -> Role? {
        if let instance = try becomePrimary(name: name, path: path) { return .primary(instance) }
        do {
            let socket = try LocalSocket.tryConnect(path: path)
            defer { socket.close() }
            try await socket.send(payload, until: deadline)
            let reply = try await socket.receive(until: deadline)
            return try acknowledged(reply, by: socket, name: name)
        } catch {
            guard retryable(error) else { throw error }
            last = error
        }
        return nil
    }

    /// The blocking form of ``attempt(name:path:payload:deadline:last:)``.
    @available(*, noasync)
    private static func blockingAttempt(
        name: String, path: String, payload: [UInt8], deadline: Deadline, last: inout InterprocessError?
    ) throws(InterprocessError) -> Role? {
        if let instance = try becomePrimary(name: name, path: path) { return .primary(instance) }
        do {
            let socket = try LocalSocket.tryConnect(path: path)
            defer { socket.close() }
            try socket.blockingSend(payload, until: deadline)
            let reply = try socket.blockingReceive(until: deadline)
            return try acknowledged(reply, by: socket, name: name)
        } catch {
            guard retryable(error) else { throw error }
            last = error
        }
        return nil
    }

    /// The secondary role if `reply` is the primary's acknowledgement; `incompatible` otherwise.
    private static func acknowledged(_ reply: LocalMessage, by socket: LocalSocket, name: String) throws(InterprocessError) -> Role {
        if reply.bytes == acknowledgement { return .secondary(primary: socket.peer) }
        reply.closeDescriptors()
        throw InterprocessError(.incompatible, objectName: name, detail: "the primary answered something else than an acknowledgement")
    }

    /// Errors that mean "the primary is starting up, busy, or just died": try again.
    private static func retryable(_ error: InterprocessError) -> Bool {
        [.notFound, .connectionRefused, .disconnected, .timedOut, .alreadyExists, .incompatible].contains(error.code)
    }

    private static func becomePrimary(name: String, path: String) throws(InterprocessError) -> SingleInstance? {
        do {
            let listener = try LocalSocketListener.listen(path: path)
            return SingleInstance(name: name, listener: listener)
        } catch {
            if error.code == .alreadyExists { return nil } // a live primary holds the lock
            throw error
        }
    }

    private static func gaveUp(_ name: String, _ last: InterprocessError?) -> InterprocessError {
        InterprocessError(.timedOut, objectName: name, systemError: last?.systemError,
            detail: "no primary instance acknowledged in time" + (last.map { " (last: \($0.description))" } ?? ""))
    }

    private struct LaunchMessage: Codable {
        var arguments: [String]
        var workingDirectory: String
    }

    private static func encodeLaunch(_ arguments: [String], name: String) throws(InterprocessError) -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = Array(try JSONEncoder().encode(LaunchMessage(arguments: arguments, workingDirectory: LocalPath.currentDirectory ?? "")))
        } catch {
            throw InterprocessError(.encodingFailed, objectName: name, detail: "\(error)")
        }
        guard bytes.count <= maximumLaunchSize else {
            throw InterprocessError(.invalidSize, objectName: name, detail: "the arguments take \(bytes.count) bytes; at most \(maximumLaunchSize) are handed over")
        }
        return bytes
    }

    // MARK: Primary side

    /// Accepts launches until cancelled: each connection from this user sends one launch message,
    /// which is delivered to `launches` and then acknowledged.
    private static func serve(_ listener: LocalSocketListener, _ continuation: AsyncStream<Launch>.Continuation) async {
        await withTaskGroup(of: Void.self) { group in
            while !Task.isCancelled {
                let connection: LocalSocket
                do throws(InterprocessError) { connection = try await listener.accept() } catch {
                    if error.code == .cancelled || error.code == .closed { break }
                    // E.g. out of descriptors: do not spin.
                    try? await Task.sleep(nanoseconds: 10_000_000)
                    continue
                }
                group.addTask {
                    await handle(connection, continuation)
                }
            }
            group.cancelAll()
        }
    }

    private static func handle(_ connection: LocalSocket, _ continuation: AsyncStream<Launch>.Continuation) async {
        defer { connection.close() }
        guard connection.peer.uid == ProcessIdentity.effectiveUserID else { return }
        connection.maximumMessageSize = maximumLaunchSize
        guard let message = try? await connection.receive(timeout: .seconds(10)) else { return }
        message.closeDescriptors()
        guard message.descriptors.isEmpty,
              let launch = try? JSONDecoder().decode(LaunchMessage.self, from: Data(message.bytes))
        else { return }
        continuation.yield(Launch(arguments: launch.arguments, workingDirectory: launch.workingDirectory, process: connection.peer))
        try? await connection.send(acknowledgement, timeout: .seconds(10))
    }
}
