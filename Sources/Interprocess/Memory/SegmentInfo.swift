#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
import CInterprocess
import InterprocessSystem
import SystemPackage

/// What a segment's header and the kernel's locks say about a named object, read without opening
/// (registering with) it. `ipc ls` and `ipc inspect` print these.
public struct SegmentInfo: Sendable, Hashable, Codable {
    /// One process handle registered in the segment's holder table.
    public struct Holder: Sendable, Hashable, Codable {
        /// The holder's process id.
        public var pid: Int32
        /// Whether the holder still holds it: decided by the kernel (the holder's lock), not by the pid.
        public var alive: Bool
        /// When the handle was opened.
        public var openedAt: Date
    }

    /// The segment's name.
    public var name: String
    /// The name the operating system knows (with its leading slash).
    public var osName: String
    /// What it holds ("raw", "mutex", …).
    public var kind: String
    /// Usable payload bytes.
    public var size: Int
    /// Bytes of the whole file, header included.
    public var totalSize: Int
    /// Where the payload starts in the file.
    public var payloadOffset: Int
    /// The lifetime rule, if the header is readable.
    public var lifetime: Lifetime?
    /// "initializing", "ready" or "removed".
    public var state: String
    /// When it was created.
    public var createdAt: Date
    /// The creating process.
    public var creatorPID: Int32
    /// Permission bits, in octal ("0600").
    public var permissions: String
    /// Owner's user id.
    public var owner: UInt32
    /// The file's group id.
    public var group: UInt32
    /// Registered holders, alive and dead (dead ones are swept by the next open or close).
    public var holders: [Holder]
    /// Whether any process holds it now (the kernel's view, including holders beyond the table).
    public var isHeld: Bool
    /// A ``Lifetime/whileReferenced`` segment that nobody holds any more: the next open, create or
    /// `ipc gc` sweeps it.
    public var isAbandoned: Bool
    /// What is wrong with it, if its header is inconsistent.
    public var problem: String?
    /// Kind-specific state (for synchronization primitives: owner, count, waiters).
    public var details: [String: String]
    /// The kind-specific state in a few words, as `ipc ls` shows it ("locked by 1234", "count 3"), or "".
    public var summary: String = ""
    /// What a raw segment's table of placed objects records (objects placed in it, and the stored
    /// value), by offset; empty for other kinds, and when the table is damaged (see ``problem``).
    public var placed: [PlacedObject] = []

    /// Describes the payload of a segment of a kind the caller knows (the registry of shared-object
    /// kinds does): details and summary, or nil for a kind it does not know. The payload is a copy,
    /// never trusted; `isAlive` tells whether an owner token recorded in it is alive.
    typealias Describer = (_ kind: SegmentKind, _ payload: UnsafeRawBufferPointer, _ isAlive: (UInt64) -> Bool) -> (details: [String: String], summary: String)?

    /// The most payload bytes a describer gets: enough for every header, and for a service's reply
    /// slots (behind its request queue) up to about 1 MiB of state.
    static let describedBytes = 1 << 20

    /// Reads the header and locks of the object `osName` (with slash), and describes its payload
    /// with `describe` if given.
    static func read(osName: String, name requested: String?, describe: Describer? = nil) throws(InterprocessError) -> SegmentInfo {
        let label = requested ?? String(osName.dropFirst())
        let fd = try perform(.openSegment, name: label) { () throws(Errno) in
            try SharedMemoryObject.open(osName, create: false, exclusive: false, readOnly: true)
        }
        defer { try? fd.close() }
        return try read(fd: fd, osName: osName, label: label, nameProblem: nil, describe: describe)
    }

    /// Reads the header and locks of the object open as `fd` (read-only), named `label`.
    /// Never trusted: everything here reads copies (pread) and reports what it finds.
    static func read(
        fd: FileDescriptor, osName: String, label: String, nameProblem: String?, describe: Describer? = nil
    ) throws(InterprocessError) -> SegmentInfo {
        let status = try perform(.status, name: label) { () throws(Errno) in try fd.status() }
        let bytes = try perform(.readHeader, name: label) { () throws(Errno) in try fd.read(count: SegmentHeader.size, at: 0) }
        guard bytes.count >= 8, bytes.withUnsafeBytes({ $0.loadUnaligned(as: UInt64.self) }) == CIPC_SEGMENT_MAGIC else {
            throw InterprocessError(.incompatible, objectName: label, detail: "not an Interprocess segment")
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: SegmentHeader.size, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: SegmentHeader.size)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let header = SegmentHeader(buffer)
        let h = header.pointer.pointee
        var problem: String? = nameProblem
        if problem != nil {
        } else if bytes.count < SegmentHeader.size {
            problem = "truncated: \(status.size) bytes, less than the \(SegmentHeader.size)-byte header"
        } else {
            do { try header.validate(fileSize: status.size, name: label, kind: nil) } catch {
                problem = error.detail
            }
            if problem == nil, h.state != SegmentState.ready.rawValue, ((try? fd.status())?.linkCount ?? 0) > 0 {
                problem = "the header's state is \(h.state) on a named segment (only 'ready' is valid)"
            }
        }
        let isHeld = (try? FileLock.isLocked(fd, byte: LockByte.live)) ?? true
        var holders: [Holder] = []
        for index in 0..<SegmentHeader.holderCapacity {
            let slot = header.slot(index).pointee
            guard slot.pid != 0 else { continue }
            let alive = (try? FileLock.isLocked(fd, byte: LockByte.slotBase + Int64(index))) ?? true
            holders.append(Holder(pid: Int32(bitPattern: slot.pid), alive: alive, openedAt: Date(nanoseconds: slot.opened_ns)))
        }
        let state = SegmentState(rawValue: h.state)
        let lifetime = Lifetime(code: h.lifetime)
        var info = SegmentInfo(
            name: label, osName: osName,
            kind: SegmentKind(rawValue: h.kind).description,
            size: Int(clamping: h.payload_size), totalSize: Int(status.size), payloadOffset: Int(clamping: h.payload_offset),
            lifetime: lifetime,
            state: state.map { "\($0)" } ?? "invalid(\(h.state))",
            createdAt: Date(nanoseconds: h.created_ns), creatorPID: Int32(bitPattern: h.creator_pid),
            permissions: "0" + String(status.mode & 0o777, radix: 8), owner: status.owner, group: status.group,
            holders: holders, isHeld: isHeld,
            isAbandoned: problem == nil && state == .ready && lifetime == .whileReferenced && !isHeld && status.linkCount > 0,
            problem: problem, details: [:])
        if info.problem == nil, h.kind == SegmentKind.raw.rawValue, bytes.count >= SegmentHeader.size {
            let table = UnsafeRawPointer(buffer + PlacementTable.offsetInHeader)
            do throws(PlacementTable.Problem) {
                let entries = try PlacementTable.entries(of: table, payloadSize: info.size, skippingPlacing: true) { index in
                    table.loadUnaligned(
                        fromByteOffset: fieldOffset(\cipc_placement_table.entries) + index * MemoryLayout<cipc_placement>.stride
                            + fieldOffset(\cipc_placement.state),
                        as: UInt32.self)
                }
                info.placed = entries.sorted { $0.offset < $1.offset }.map(\.object)
            } catch {
                info.problem = "its table of placed objects: " + error.detail
                info.isAbandoned = false // damage is reported, never swept
            }
        }
        if let describe, problem == nil, status.size > Int64(SegmentHeader.size),
           let payload = try? fd.read(count: min(Int(status.size) - SegmentHeader.size, Self.describedBytes), at: Int64(SegmentHeader.size)) {
            // Owners recorded in the state are alive while their token's lock is held: asked through
            // our own descriptor (never a pid).
            let description = payload.withUnsafeBytes {
                describe(SegmentKind(rawValue: h.kind), $0) { OwnerLease.isAlive($0, checkingWith: fd) }
            }
            if let description {
                info.details = description.details
                info.summary = description.summary
            }
        }
        return info
    }
}

extension Date {
    init(nanoseconds: UInt64) {
        self.init(timeIntervalSince1970: Double(nanoseconds) / 1e9)
    }
}

extension SharedMemory {
    /// Finds objects nobody will use again — ``Lifetime/whileReferenced`` segments whose holders all
    /// died, creations whose creator died, removals whose remover died — and removes them.
    /// - Parameters:
    ///   - dryRun: only report what would be removed.
    ///   - prefix: only consider names that start with it.
    ///   - trust: whose segments to consider (see ``TrustedOwners``).
    /// - Returns: what was (or would be) removed.
    ///
    /// Only segments owned by a trusted user (by default this process's) are considered, and only
    /// complete, undamaged ones are ever removed: a damaged header is reported by ``list()`` (its
    /// ``SegmentInfo/problem``), never swept.
    @discardableResult
    public static func collectGarbage(dryRun: Bool = false, prefix: String = "", trusting trust: TrustedOwners = .currentUser) -> [SegmentInfo] {
        var removed: [SegmentInfo] = []
        for fileName in SharedMemoryObject.listNames() where fileName.hasPrefix(prefix) {
            let osName = "/" + fileName
            guard let info = try? SegmentInfo.read(osName: osName, name: fileName) else { continue }
            guard info.isAbandoned, trust.trusts(owner: info.owner, group: info.group) else { continue }
            if dryRun {
                removed.append(info)
            } else if (try? SegmentHandle.sweepIfAbandoned(name: fileName, osName: osName, trusting: trust)) == true {
                removed.append(info)
            }
        }
        return removed
    }
}
