public import SystemPackage
import InterprocessSystem

/// Anonymous segments: memory with no name in any file system, shared by handing its descriptor to
/// another process over a ``LocalSocket``.
///
/// ```swift
/// // Process A
/// let segment = try SharedMemory.anonymous(size: 1 << 20)
/// try segment.write("frame 1")
/// try await connection.send(segment)
///
/// // Process B
/// let segment = try await connection.receiveSegment(timeout: .seconds(5))   // or blockingReceiveSegment
/// let text = try segment.readString()                  // "frame 1": the same memory
/// ```
///
/// After the hand-over, both sides use the ordinary ``SharedMemory`` API (``size``,
/// ``withUnsafeMutableBytes(_:)``, ``write(_:)``, ``load(_:)``…); ``name`` is empty and
/// ``isAnonymous`` is true. The memory lives while any process holds its descriptor or its
/// mapping, and vanishes with the last: nothing to remove, nothing left behind by a crash, no name
/// for another process (or user) to guess or plant.
///
/// **Sealed against shrinking.** The segment is a Linux memory file (`memfd_create`) sealed with
/// `F_SEAL_SHRINK`, `F_SEAL_GROW` and `F_SEAL_SEAL`: its size is fixed for good, so no holder —
/// however buggy or hostile — can truncate it under another's mapping. That is the difference from
/// a named segment, whose file any process with write access can truncate while others use it,
/// making their next access fault with SIGBUS (see ``SharedMemory``). A receiver accepts only a
/// memory file carrying the shrink seal, with a valid header, and makes every page exist before it
/// maps it; the contents remain writable by every holder, as with any shared memory.
extension SharedMemory {
    /// Whether this is an anonymous segment (no name; see ``anonymous(size:)``).
    public var isAnonymous: Bool { handle.isAnonymous }

    /// Creates an anonymous segment of `size` zero-filled bytes: no name, sealed against shrinking
    /// and growing, its memory reserved now (too big for the machine fails here with `outOfMemory`,
    /// never with SIGBUS later). Linux only (`createFailed` elsewhere).
    public static func anonymous(size: Int) throws(InterprocessError) -> SharedMemory {
        guard size > 0, size <= SegmentHandle.maximumPayloadSize else {
            throw InterprocessError(.invalidSize, objectName: nil, detail: "a segment holds 1 to \(SegmentHandle.maximumPayloadSize) bytes, not \(size)")
        }
        let total = SegmentHeader.size + size
        let fd = try perform(.createMemoryFile, name: nil, detail: "could not create an anonymous memory file") { () throws(Errno) in
            try MemoryFile.create(label: "interprocess")
        }
        do throws(InterprocessError) {
            let page = UnsafeMutableRawBufferPointer.allocate(byteCount: SegmentHeader.size, alignment: 64)
            defer { page.deallocate() }
            let header = SegmentHeader(page.baseAddress!)
            header.initialize(name: "", kind: .raw, lifetime: .whileReferenced, payloadSize: size)
            header.stateWord.pointee.store(SegmentState.ready.rawValue, ordering: .relaxed)
            try perform(.writeHeader, name: nil) { () throws(Errno) in try fd.write(UnsafeRawBufferPointer(page), at: 0) }
            try perform(.resize, name: nil, detail: "\(total) bytes") { () throws(Errno) in try fd.truncate(to: Int64(total)) }
            try perform(.reserve, name: nil, detail: "could not reserve \(total) bytes", otherwise: .createFailed) { () throws(Errno) in
                try fd.reserve(bytes: Int64(total))
            }
            try perform(.seal, name: nil) { () throws(Errno) in try MemoryFile.addSeals(fd, [.shrink, .grow, .seal]) }
            let mapping = try perform(.map, name: nil, detail: "could not map \(total) bytes", otherwise: .createFailed) { () throws(Errno) in
                try MemoryMapping(fd: fd, length: total)
            }
            return SharedMemory(handle: .anonymous(fd: fd, payloadSize: size, mapping: mapping))
        } catch {
            try? fd.close()
            throw error
        }
    }

    /// Makes an anonymous segment of a descriptor received from another process (see
    /// ``LocalMessage/descriptors``). Takes ownership of `descriptor`: the segment closes it, and so
    /// does a failure.
    ///
    /// - Throws: `incompatible` for anything but a memory file sealed against shrinking that holds an
    ///   Interprocess segment; `corrupt` for a damaged header; `outOfMemory` when its pages cannot be
    ///   reserved; `permissionDenied` when it cannot be mapped writable (a write seal).
    public static func adopt(_ descriptor: FileDescriptor) throws(InterprocessError) -> SharedMemory {
        do {
            return try adoptChecked(descriptor)
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    private static func adoptChecked(_ fd: FileDescriptor) throws(InterprocessError) -> SharedMemory {
        let label = "(anonymous)"
        let status = try perform(.adoptDescriptor, name: label) { () throws(Errno) in try fd.status() }
        guard status.isRegularFile else {
            throw InterprocessError(.incompatible, objectName: label, detail: "the descriptor is not a memory file")
        }
        // Only a file that nobody can shrink is safe to map: a peer could otherwise truncate it
        // under this process's mapping (SIGBUS).
        let seals = try perform(.readSeals, name: label) { () throws(Errno) in try MemoryFile.seals(fd) }
        guard seals.contains(.shrink) else {
            throw InterprocessError(.incompatible, objectName: label, detail: "the memory file is not sealed against shrinking")
        }
        guard status.size >= Int64(SegmentHeader.size), status.size <= Int64(Int.max) else {
            throw InterprocessError(.corrupt, objectName: label, detail: "\(status.size) bytes cannot hold a segment")
        }
        let checked = try SegmentHandle.readHeader(fd: fd, name: label)
        let header = SegmentHeader(checked.page.baseAddress!)
        try header.validate(fileSize: status.size, name: "", kind: .raw)
        guard header.state == SegmentState.ready.rawValue else {
            throw InterprocessError(.corrupt, objectName: label, detail: "the header's state is \(header.state)")
        }
        let payloadSize = Int(header.pointer.pointee.payload_size)
        do { try fd.reserve(bytes: status.size) } catch {
            // A grow seal refuses even a reservation within the size on some kernels: the pages of a
            // sealed file that the sender reserved are there already.
            if error != .notPermitted {
                throw InterprocessError(.reserve, error, objectName: label, detail: "could not reserve its \(status.size) bytes")
            }
        }
        let mapping = try perform(.map, name: label, detail: "could not map \(status.size) bytes") { () throws(Errno) in
            try MemoryMapping(fd: fd, length: Int(status.size))
        }
        return SharedMemory(handle: .anonymous(fd: fd, payloadSize: payloadSize, mapping: mapping))
    }

    /// A new descriptor (close-on-exec) for this segment's memory, to hand to another process by
    /// other means than ``LocalSocket/send(_:timeout:)``. Anonymous segments only; the caller
    /// owns the descriptor.
    public func duplicateDescriptor() throws(InterprocessError) -> FileDescriptor {
        guard isAnonymous else {
            throw InterprocessError(.invalidArgument, objectName: name, detail: "a named segment is shared by its name; only anonymous segments are handed over as descriptors")
        }
        return try handle.duplicateDescriptor()
    }
}

/// The bytes of a message that carries a segment's descriptor.
let segmentMessageTag = Array("IPCSEGMT-ANON".utf8)

extension LocalSocket {
    /// Hands `segment` (an anonymous one) to the peer, which receives it with
    /// ``receiveSegment(timeout:)``, suspending the task (no thread blocks) while the socket has no
    /// room, for at most `timeout` (nil: as long as it takes). This process keeps its own handle: both
    /// see the same memory.
    public func send(_ segment: SharedMemory, timeout: Duration? = nil) async throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        let fd = try segment.duplicateDescriptor()
        defer { try? fd.close() }
        try await send(segmentMessageTag, descriptors: [fd], until: deadline)
    }

    /// Hands `segment` to the peer, blocking the calling thread while the socket has no room. The
    /// blocking form of ``send(_:timeout:)``.
    @available(*, noasync, message: "use the async send(_:timeout:) in async code")
    public func blockingSend(_ segment: SharedMemory, timeout: Duration? = nil) throws(InterprocessError) {
        let deadline = Deadline(after: timeout)
        let fd = try segment.duplicateDescriptor()
        defer { try? fd.close() }
        try blockingSend(segmentMessageTag, descriptors: [fd], until: deadline)
    }

    /// Receives a segment that the peer sent with ``send(_:timeout:)``, suspending the task (no thread
    /// blocks), for at most `timeout` (nil: as long as it takes).
    /// - Throws: `incompatible` if the next message is not a segment (it is then dropped); as
    ///   ``receive(timeout:)``.
    public func receiveSegment(timeout: Duration? = nil) async throws(InterprocessError) -> SharedMemory {
        try Self.segment(from: await receive(timeout: timeout), name: name)
    }

    /// Receives a segment, blocking the calling thread. The blocking form of
    /// ``receiveSegment(timeout:)``.
    @available(*, noasync, message: "use the async receiveSegment(timeout:) in async code")
    public func blockingReceiveSegment(timeout: Duration? = nil) throws(InterprocessError) -> SharedMemory {
        try Self.segment(from: blockingReceive(timeout: timeout), name: name)
    }

    /// Receives a segment if a whole message is there; never waits.
    public func tryReceiveSegment() throws(InterprocessError) -> SharedMemory? {
        guard let message = try tryReceive() else { return nil }
        return try Self.segment(from: message, name: name)
    }

    private static func segment(from message: LocalMessage, name: String?) throws(InterprocessError) -> SharedMemory {
        guard message.bytes == segmentMessageTag, message.descriptors.count == 1 else {
            message.closeDescriptors()
            throw InterprocessError(.incompatible, objectName: name, detail: "the message is not a segment hand-over (\(message.bytes.count) bytes, \(message.descriptors.count) descriptors)")
        }
        return try SharedMemory.adopt(message.descriptors[0])
    }
}
