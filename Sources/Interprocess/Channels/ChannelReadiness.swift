public import SystemPackage
import CInterprocess
import InterprocessSystem
import Synchronization

/// A file descriptor that becomes readable when a message arrives on a ``Channel`` or a
/// ``MessageQueue``, or is published to a ``Broadcast`` subscription: how an event loop (epoll,
/// `poll`, SwiftNIO, libdispatch sources) waits for a channel, a queue or a subscription without a
/// thread of its own. Get one with ``Channel/readinessDescriptor()``,
/// ``MessageQueue/readinessDescriptor()`` or ``Broadcast/Subscription/readinessDescriptor()``: all
/// work the same way, and everything said here of a channel holds for a message queue (its socket
/// files are named `mqready-…` instead of `ready-…`; its senders load `descriptors_armed` after
/// they published under the queue's lock) and for a subscription, with these differences: one
/// descriptor per *subscription* (not per process), registered in the subscription's own place of
/// the broadcast's subscriber table rather than a table of participants; socket files `bcready-…`;
/// closing the subscription closes its descriptor; every subscription is woken by every publish
/// (no other receiver takes its messages); and a dead subscriber's registration is swept by a
/// publisher whose datagram is refused, a publisher waiting for it, or a subscriber taking its
/// place (see `CInterprocessBroadcast.h`). A ``Service`` server gets one from
/// ``Service/readinessDescriptor()``: readable when a request is queued, then
/// ``Service/tryServe(_:)`` in place of `tryReceive` (socket files `srvready-…`).
///
/// ```swift
/// let channel = try Channel<String>.open(name: "events")
/// let readiness = try channel.readinessDescriptor()
/// // Add readiness.fileDescriptor to the loop (readable); whenever it is readable:
/// readiness.acknowledge()                        // empty it and ask for the next wake-up
/// while let message = try channel.tryReceive() { print(message) }
/// ```
///
/// **The protocol.** Whenever the descriptor is readable, call ``acknowledge()`` *first*, then
/// receive with `tryReceive` until it returns nil (or throws `closed`). Done in that order, no
/// message is ever left unannounced: a message published before the acknowledgement is taken by the
/// receives that follow it, and one published after it makes the descriptor readable again. Right
/// after creating the descriptor, receive until nil once as well: messages already in the channel
/// do not make it readable. A loop that stops receiving before nil (to bound its work per turn)
/// must come back to the channel by itself: the descriptor only says that something *arrived*.
/// Readiness is level-triggered until acknowledged (one datagram, or a few); spurious wake-ups are
/// possible (another receiver took the message), so an empty `tryReceive` is normal. ``Channel/close()``
/// makes every descriptor readable: the loop's `tryReceive` then drains the rest and throws `closed`.
///
/// **How it works.** The descriptor is a Unix datagram socket bound to a file in this user's runtime
/// directory (`$INTERPROCESS_RUNTIME_DIR`, `$XDG_RUNTIME_DIR/interprocess` or
/// `/tmp/interprocess-UID`; mode 0600 in a 0700 directory), named from a hash of the channel
/// name and a random number that the process records in its entry of the channel's table of
/// participants. ``acknowledge()`` reads what is queued on the socket and then sets the entry's bit
/// in the channel's `descriptors_armed` word. A sender, after it published a message, loads that
/// word (the only cost while nobody waits by descriptor: one load, on a cache line the send reads
/// anyway); when it is not zero it takes every set bit at once (an exchange) and sends one datagram
/// to each named socket. The bit is set before `tryReceive` looks at the ring and the message is
/// published before the sender looks at the bit (both sequentially consistent): either the sender
/// sees the bit, or the receiver sees the message.
///
/// **Other users.** A sender reaches only sockets in its *own* user's runtime directory: a sender
/// running as another user finds no socket under the name it builds (or is refused), and does not
/// wake the descriptor. Such a message is still delivered — to the next receive, the next wake-up
/// by a same-user sender, or ``Channel/close()`` — so a loop that shares a channel with senders of
/// other users should also call `tryReceive` on a timer.
///
/// **What a process killed at each step leaves behind.**
/// - Registering: after claiming its entry of the table, an entry of a dead process; after recording
///   the number, the same (no file yet); after binding the socket, also the socket file. Whoever
///   next claims an entry (opens the channel), finds the socket refusing a datagram, or lets go of
///   its last handle *sweeps* the entry, as does `ipc gc`:
///   clears its bit, removes the socket file (when it is this user's and nobody is bound to it) and
///   frees the entry. `ipc inspect` shows such entries as `ended` until then.
/// - Armed (waiting): the same; the first sender to find its bit set and the socket gone sweeps it.
/// - A **sender** killed after publishing a message and before its datagram is sent (a few
///   instructions) leaves that message unannounced: it is delivered at the next wake-up (any later
///   message, or ``Channel/close()``). A loop that must not depend on a later message calls
///   `tryReceive` on a timer too.
/// - Closing: the bit is cleared, the socket closed, its file removed, and only then the number
///   cleared: killed in between, the entry still names the file and the sweep removes it.
///
/// `Sendable`: the descriptor is immutable, closing is guarded by an atomic, and the table is
/// changed through atomics.
public final class ChannelReadiness: Sendable {
    /// The descriptor to wait on for reading (non-blocking, close-on-exec). Valid until ``close()``;
    /// do not close it yourself.
    public let fileDescriptor: FileDescriptor
    private let participants: any ReadinessTable
    private let index: Int
    private let number: UInt64
    private let path: String
    private let closed = Atomic<Bool>(false)

    init(participants: any ReadinessTable, name: String) throws(InterprocessError) {
        guard let index = participants.join() else { throw participants.noEntryError(name: name) }
        var generator = SystemRandomNumberGenerator()
        var number: UInt64 = 0
        while number == 0 { number = generator.next() }
        let fd: FileDescriptor
        let path: String
        do throws(InterprocessError) {
            guard participants.claimNotifier(index, number) else { throw participants.duplicateError(name: name) }
            HotPath.crashPoint(participants.crashPoints.numbered)
            _ = try LocalDirectory.ensure()
            guard let candidate = participants.socketPath(number), let address = UnixSocket.address(path: candidate) else {
                participants.setNotifier(index, 0)
                throw InterprocessError(.invalidArgument, objectName: name,
                    detail: "the runtime directory's path (\(LocalDirectory.path)) is too long for a socket address")
            }
            path = candidate
            do throws(Errno) {
                fd = try UnixSocket.make(.datagram)
            } catch {
                participants.setNotifier(index, 0)
                throw InterprocessError(.socket, error, objectName: name, detail: "could not make the readiness socket")
            }
            do throws(Errno) {
                try UnixSocket.bind(fd, to: address)
                try LocalPath.setPermissions(path, .ownerReadWrite)
            } catch {
                try? fd.close()
                try? LocalPath.unlink(path)
                participants.setNotifier(index, 0)
                throw InterprocessError(.bind, error, objectName: name, detail: "could not bind the readiness socket at \(path)")
            }
            HotPath.crashPoint(participants.crashPoints.bound)
        } catch {
            participants.leave()
            throw error
        }
        self.fileDescriptor = fd
        self.participants = participants
        self.index = index
        self.number = number
        self.path = path
        participants.arm(index)
        HotPath.crashPoint(participants.crashPoints.armed)
    }

    deinit { close() }

    /// Empties the descriptor and asks for a wake-up at the next message. Call it whenever the
    /// descriptor is readable, *before* receiving with `tryReceive` until nil (see the protocol
    /// above). Does nothing after ``close()``.
    public func acknowledge() {
        guard !closed.load(ordering: .acquiring) else { return }
        var buffer: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &buffer) { raw in
            while true {
                guard (try? UnixSocket.receive(fileDescriptor, into: raw)) != nil else { return }
            }
        }
        participants.arm(index)
    }

    /// How many wake-ups senders have sent to this descriptor (the table's count).
    public var wakeUps: UInt64 { participants.pokeCount(index) }

    /// Stops the wake-ups, closes the descriptor and removes its socket file. Idempotent; also done
    /// when the last reference goes away. (Take the descriptor out of your event loop first.)
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        participants.disarm(index)
        try? fileDescriptor.close()
        try? LocalPath.unlink(path)
        HotPath.crashPoint(participants.crashPoints.unlinked)
        participants.setNotifier(index, 0)
        participants.leave()
    }
}

extension Channel {
    /// A descriptor that becomes readable when a message arrives, for an event loop (epoll, `poll`,
    /// SwiftNIO): see ``ChannelReadiness`` for the protocol — when it is readable, call
    /// ``ChannelReadiness/acknowledge()``, then `tryReceive` until nil. One per process and channel
    /// at a time; close it (or drop it) when done.
    /// - Throws: `alreadyExists` if this process has one open for this channel; `incompatible` for a
    ///   channel created without a table of participants (by an older version, or a placed one);
    ///   `outOfMemory` if the table's 64 entries are taken; `closed` on a detached handle;
    ///   `permissionDenied` if the runtime directory is not this user's own; `systemError` if the
    ///   socket cannot be made.
    public func readinessDescriptor() throws(InterprocessError) -> ChannelReadiness {
        try checkAttached()
        guard let participants = state.participants, participants.socketPrefix != nil else {
            throw InterprocessError(.incompatible, objectName: name,
                detail: "this channel has no table of participants (created by an older version, or without a name)")
        }
        return try ChannelReadiness(participants: participants, name: name)
    }
}
