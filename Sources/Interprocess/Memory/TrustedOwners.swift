import InterprocessSystem

/// Whose shared memory objects a process is willing to open.
///
/// /dev/shm is writable by every user, so a name can be taken by anyone first: a segment that
/// another user created may be a plant — to read what you store in it, to feed you forged data, or
/// to truncate it under your mapping. By default an open refuses (`permissionDenied`) any object
/// whose file is not owned by this process's effective user. A program that shares objects across
/// users says whom it trusts:
///
/// ```swift
/// // The creator, running as one user, gives the segment to a group both users are in:
/// let segment = try SharedMemory.create(name: "frames", size: 1 << 20,
///                                       permissions: [.ownerReadWrite, .groupReadWrite], group: 1234)
/// // The other user opens it, trusting objects of that group:
/// let peer = try SharedMemory.open(name: "frames", trusting: .group(1234))
/// ```
///
/// The current user's own objects are always trusted. Trust decides what an open accepts; the
/// file's permission bits still decide what the kernel lets each user do.
public struct TrustedOwners: Sendable, Hashable, CustomStringConvertible {
    let users: Set<UInt32>
    let groups: Set<UInt32>
    let everyone: Bool

    /// Only objects owned by this process's effective user (the default).
    public static let currentUser = TrustedOwners(users: [], groups: [], everyone: false)

    /// Objects owned by any user: for objects whose creator you trust by other means.
    public static let anyone = TrustedOwners(users: [], groups: [], everyone: true)

    /// Objects owned by one of `uids` (or by the current user).
    public static func users(_ uids: Set<UInt32>) -> TrustedOwners {
        TrustedOwners(users: uids, groups: [], everyone: false)
    }

    /// Objects whose file belongs to group `gid` (or that the current user owns). Anyone who can
    /// create a file of that group — its members — is trusted.
    public static func group(_ gid: UInt32) -> TrustedOwners {
        TrustedOwners(users: [], groups: [gid], everyone: false)
    }

    /// Trusts what either trusts.
    public func union(_ other: TrustedOwners) -> TrustedOwners {
        TrustedOwners(users: users.union(other.users), groups: groups.union(other.groups), everyone: everyone || other.everyone)
    }

    /// Whether an object whose file has this owner and group is trusted.
    public func trusts(owner: UInt32, group: UInt32) -> Bool {
        everyone || owner == ProcessIdentity.effectiveUserID || users.contains(owner) || groups.contains(group)
    }

    public var description: String {
        if everyone { return "anyone" }
        var parts = ["the current user"]
        if !users.isEmpty { parts.append("users " + users.sorted().map(String.init).joined(separator: ", ")) }
        if !groups.isEmpty { parts.append("group " + groups.sorted().map(String.init).joined(separator: ", ")) }
        return parts.joined(separator: ", ")
    }

    /// Throws `permissionDenied` unless the file is trusted.
    func check(_ status: FileStatus, name: String) throws(InterprocessError) {
        guard trusts(owner: status.owner, group: status.group) else {
            throw InterprocessError(
                .permissionDenied, objectName: name,
                detail: "its file belongs to user \(status.owner) (group \(status.group)), whom this process does not trust (it trusts \(self)); pass `trusting:` (ipc: --trust-owner / --trust-group) to share across users")
        }
    }
}
