import InterprocessSystem
import SystemPackage

/// What every kind with readiness descriptors shares (``ChannelParticipants`` for channels and
/// message queues, ``BroadcastNotifiers`` for broadcast subscriptions): how a registration's socket
/// file is named, how a publisher sends it a datagram, and how a dead registration's file is
/// removed. A path is never read from shared memory: it is built from this process's own copy of
/// the object's name, a kind prefix, and a number (`<runtime directory>/<kind>-<FNV-1a 64 of the
/// name>-<number>`, in hex), inside this user's runtime directory.
enum ReadinessSocket {
    /// FNV-1a, 64 bits, of the name's UTF-8: the same in every process.
    static func nameHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// `<runtime directory>/<kind>-<name hash>-`: what the socket files of the object `name`'s
    /// readiness descriptors start with (`kind` keeps objects of two kinds with one name apart).
    static func prefix(kind: String, name: String) -> String {
        LocalDirectory.path + "/" + kind + "-" + hex(nameHash(name)) + "-"
    }

    /// One socket per process for sending the datagrams (nil if it cannot be made).
    private static let pokingSocket: FileDescriptor? = try? UnixSocket.make(.datagram)

    /// Sends one datagram to the socket file at `path`: `.success` when it was sent (or the
    /// socket's queue is full, so it is readable already), the error otherwise; nil when there is
    /// no sending socket or `path` is too long for an address.
    static func poke(_ path: String) -> Result<Void, Errno>? {
        guard let socket = pokingSocket, let address = UnixSocket.address(path: path) else { return nil }
        let byte: [UInt8] = [1]
        return byte.withUnsafeBytes { bytes in
            do throws(Errno) {
                _ = try UnixSocket.send(socket, bytes, to: address)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    /// Whether a failed datagram means the socket is gone (removed, or nobody bound to it), as when
    /// its process died; another user's directory (permission denied) is not.
    static func isGone(_ error: Errno) -> Bool {
        error == .connectionRefused || error == .noSuchFileOrDirectory
    }

    /// Removes the socket file at `path` if it is this user's socket and nobody is bound to it (a
    /// dead registration's): never a file of another kind, never a live registration's.
    static func removeIfDead(_ path: String) {
        guard let status = try? LocalPath.status(path), status.isSocket, status.owner == ProcessIdentity.effectiveUserID else { return }
        if case .refused = SocketFile.probe(path: path, kind: .datagram) { try? LocalPath.unlink(path) }
    }
}

/// A table that registers readiness descriptors (``ChannelReadiness``): a channel's or a message
/// queue's table of participants (one entry per process), or a broadcast subscription's place. The
/// descriptor claims an entry, records its number there, binds its socket, and arms and disarms
/// the entry; everything about the shared memory is the table's.
protocol ReadinessTable: AnyObject, Sendable {
    /// Claims (or holds once more) an entry for this registration: its index, or nil if none is free.
    func join() -> Int?
    /// Lets go of what ``join()`` took.
    func leave()
    /// Records `number` as entry `index`'s socket if it has none (false: it has one).
    func claimNotifier(_ index: Int, _ number: UInt64) -> Bool
    /// Records `number` (0: none) as entry `index`'s socket.
    func setNotifier(_ index: Int, _ number: UInt64)
    /// The socket file of the descriptor numbered `number` (nil if the path cannot be built).
    func socketPath(_ number: UInt64) -> String?
    /// Asks for a datagram at the next message (sequentially consistent, before the caller looks).
    func arm(_ index: Int)
    /// Stops asking.
    func disarm(_ index: Int)
    /// Datagrams sent to entry `index`'s socket.
    func pokeCount(_ index: Int) -> UInt64
    /// The error when ``join()`` found no entry.
    func noEntryError(name: String) -> InterprocessError
    /// The error when the entry already has a descriptor.
    func duplicateError(name: String) -> InterprocessError
    /// The names of the crash points that registering and closing a descriptor reach (by default
    /// `channel.readiness.*`).
    var crashPoints: ReadinessCrashPoints { get }
}

extension ReadinessTable {
    var crashPoints: ReadinessCrashPoints { .channel }
}

/// The crash points (``CrashPoint``) of a readiness descriptor's steps, named after the kind of
/// table it registers in: after recording its number, after binding its socket, after arming, and
/// after removing its socket file when it closes.
struct ReadinessCrashPoints: Sendable {
    let numbered: StaticString
    let bound: StaticString
    let armed: StaticString
    let unlinked: StaticString

    /// A channel's, a message queue's and a service's table of participants.
    static let channel = ReadinessCrashPoints(
        numbered: "channel.readiness.numbered", bound: "channel.readiness.bound", armed: "channel.readiness.armed",
        unlinked: "channel.readiness.unlinked")
    /// A broadcast subscription's place.
    static let broadcast = ReadinessCrashPoints(
        numbered: "broadcast.readiness.numbered", bound: "broadcast.readiness.bound", armed: "broadcast.readiness.armed",
        unlinked: "broadcast.readiness.unlinked")
}

extension ChannelParticipants: ReadinessTable {
    func noEntryError(name: String) -> InterprocessError {
        InterprocessError(.outOfMemory, objectName: name, detail: "all \(Self.count) entries of the table of participants are taken")
    }

    func duplicateError(name: String) -> InterprocessError {
        InterprocessError(.alreadyExists, objectName: name, detail: "this process already has a readiness descriptor for \(name): share that one")
    }
}
