// A message queue's readiness descriptor: the channel's (``ChannelReadiness`` and
// ``ChannelParticipants`` serve both kinds), reached through the queue's table of participants.

extension MessageQueue {
    /// A descriptor that becomes readable when a message arrives, for an event loop (epoll, `poll`,
    /// SwiftNIO): the same ``ChannelReadiness`` a channel gives, with the same protocol — when it is
    /// readable, call ``ChannelReadiness/acknowledge()``, then ``tryReceive()`` (or
    /// ``tryReceiveWithPriority()``) until nil; the messages come out in priority order. Every
    /// publish after the acknowledgement makes it readable, and so does ``close()``. One per process
    /// and queue at a time; close it (or drop it) when done.
    /// - Throws: `alreadyExists` if this process has one open for this queue; `incompatible` for a
    ///   queue created without a table of participants (by an older version, or a placed one without
    ///   a name); `outOfMemory` if the table's 64 entries are taken; `closed` on a detached handle;
    ///   `permissionDenied` if the runtime directory is not this user's own; `systemError` if the
    ///   socket cannot be made.
    public func readinessDescriptor() throws(InterprocessError) -> ChannelReadiness {
        try checkAttached()
        guard let participants = state.participants, participants.socketPrefix != nil else {
            throw InterprocessError(.incompatible, objectName: name,
                detail: "this message queue has no table of participants (created by an older version, or without a name)")
        }
        return try ChannelReadiness(participants: participants, name: name)
    }
}
