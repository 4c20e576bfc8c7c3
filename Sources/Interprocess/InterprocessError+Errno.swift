import InterprocessSystem
package import SystemPackage

// What an errno means, one table per system operation: every layer of the library turns a failed
// system call into an `InterprocessError` here, and nowhere else.
//
// The same errno means different things after different calls (ENXIO from opening a FIFO for
// writing is "no reader yet", from opening a segment it is "a socket, not a segment"; EINVAL from
// `ftruncate` is a size, from `fchown` a group), so each operation has its own table, as in
// iceoryx2's per-call errno tables and swift-nio's NIOFS `FileSystemError+Syscall.swift`.
//
// An errno that a table does not name gets the operation's default code, or the code of what the
// caller is in the middle of (`createFailed` while creating a segment, `openFailed` while opening
// one: `perform(_:name:detail:otherwise:_:)`), and is always kept in `systemError`.
//
// Only errnos that can mean nothing but a bug in this library trap (``ErrnoMeaning/bug(_:)``):
// EFAULT everywhere (the library passes only its own buffers), and EBADF / ENOTSOCK where the
// descriptor is the library's own (a `DescriptorOwner` or a segment's registration keeps it open
// for as long as a call uses it). Nothing a peer, the caller or the environment can cause traps:
// EBADF from a descriptor the caller handed over (``SystemOperation/adoptDescriptor``, the
// descriptors a message carries in ``SystemOperation/sendStream``) is `invalidArgument`; EINVAL is
// never a bug (a listener shut down by `close()` answers `accept` with it, for one).

/// A system operation whose errno the library reports.
package enum SystemOperation: String, CaseIterable, Sendable {
    // MARK: Named segments (Memory/)

    /// `open(/dev/shm, O_TMPFILE)`: the unnamed file of a new segment.
    case createSegment
    /// `fchown` of a new segment to a group.
    case setGroup
    /// `fchmod` / `chmod` of a new segment, socket or FIFO.
    case setPermissions
    /// `pwrite` of a new segment's header.
    case writeHeader
    /// `ftruncate` of a new segment's file to its size.
    case resize
    /// `posix_fallocate` of a segment's pages (at create, and at open: a sparse file that claims
    /// more than the file system holds).
    case reserve
    /// `mmap` of a segment.
    case map
    /// `linkat` through `/proc/self/fd`: naming a new segment.
    case linkSegment
    /// `open` of an existing segment's file (`/dev/shm/NAME`, `O_NOFOLLOW | O_NONBLOCK`), and the
    /// check that it is a regular file.
    case openSegment
    /// `fstat` of a descriptor the library opened.
    case status
    /// `pread` of a segment's header.
    case readHeader
    /// `fcntl(F_OFD_SETLK / F_OFD_GETLK)` on a byte of a segment's file (holder and gate locks).
    case lockSegment
    /// The owner lease on a segment's file (`OwnerLease`: a reopen and a byte lock).
    case leaseSegment
    /// `shm_unlink` of a segment's name.
    case unlinkSegment
    /// `fcntl(F_DUPFD_CLOEXEC)` of a segment's descriptor.
    case duplicate

    // MARK: Anonymous segments

    /// `memfd_create`.
    case createMemoryFile
    /// `fcntl(F_ADD_SEALS)` of a new anonymous segment.
    case seal
    /// `fstat` of a descriptor the caller handed over (``SharedMemory/adopt(_:)``).
    case adoptDescriptor
    /// `fcntl(F_GET_SEALS)` of a descriptor the caller handed over.
    case readSeals

    // MARK: Files of local IPC (Local/)

    /// `mkdir` of the per-user runtime directory.
    case makeDirectory
    /// `lstat` of a path.
    case statPath
    /// `unlink` of a FIFO, a socket file or a lock file.
    case unlinkPath
    /// `mkfifo`.
    case makeFIFO
    /// `open` of a FIFO's end (`O_NONBLOCK | O_NOFOLLOW`).
    case openFIFO
    /// `read` from a FIFO.
    case pipeRead
    /// `write` to a FIFO.
    case pipeWrite
    /// `open` of the lock file beside a socket file (`O_CREAT | O_NOFOLLOW`).
    case openLockFile
    /// `open` of the file a ``FileLock`` locks (`O_NOFOLLOW | O_NONBLOCK`).
    case openFileLock
    /// `fcntl(F_OFD_SETLK / F_OFD_SETLKW / F_OFD_GETLK)` on the whole file of a ``FileLock``.
    case lockFile

    // MARK: Unix domain sockets

    /// `socket`, `socketpair`, `setsockopt`.
    case socket
    /// `bind` to a path.
    case bind
    /// `listen` (or, for a datagram socket, the socket option it sets) on a newly bound socket.
    case listen
    /// `connect` of a stream socket to a listener.
    case connectStream
    /// `connect` of a datagram socket to a bound socket.
    case connectDatagram
    /// `accept4`.
    case accept
    /// `sendmsg` on a stream connection.
    case sendStream
    /// `sendmsg` of a datagram.
    case sendDatagram
    /// `recvmsg` (stream or datagram).
    case receive
}

/// What an errno means after one ``SystemOperation``.
package enum ErrnoMeaning: Equatable, Sendable {
    /// The error code, and a sentence for people if the errno needs one.
    case error(InterprocessError.Code, String? = nil)
    /// Only a bug in this library can cause it: the process traps.
    case bug(String)
}

extension SystemOperation {
    /// The code of an errno that the operation's table does not name.
    package var defaultCode: InterprocessError.Code {
        switch self {
        case .createSegment, .setGroup, .setPermissions, .writeHeader, .resize, .linkSegment,
             .createMemoryFile, .seal, .makeDirectory, .makeFIFO, .openLockFile, .socket, .bind, .listen:
            .createFailed
        case .reserve, .map, .openSegment, .readHeader, .lockSegment, .leaseSegment, .openFIFO,
             .openFileLock, .connectStream, .connectDatagram:
            .openFailed
        case .status, .adoptDescriptor, .statPath:
            .statFailed
        case .readSeals:
            .incompatible
        case .unlinkSegment, .duplicate, .unlinkPath, .pipeRead, .pipeWrite, .lockFile, .accept,
             .sendStream, .sendDatagram, .receive:
            .systemError
        }
    }

    /// What `errno` means after this operation; nil where the table does not name it (then
    /// ``defaultCode``, or the caller's).
    package func meaning(of errno: Errno) -> ErrnoMeaning? {
        if errno == Errno.badAddress { return .bug("a buffer or address the library passed is invalid") }
        switch self {
        case .createSegment:
            switch errno {
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the shared memory file system is full")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.createFailed, "the shared memory directory does not exist")
            case Errno.isDirectory, Errno.notSupported, Errno.invalidArgument:
                return .error(.createFailed, "the shared memory file system cannot create unnamed files (O_TMPFILE)")
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.createFailed, tooManyFiles)
            default: return nil
            }
        case .setGroup:
            switch errno {
            case Errno.notPermitted, Errno.permissionDenied, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.invalidArgument: return .error(.invalidArgument, "the group is not valid here (not mapped in this user namespace)")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .setPermissions:
            switch errno {
            case Errno.notPermitted, Errno.permissionDenied, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound, "it disappeared meanwhile")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .writeHeader:
            switch errno {
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the shared memory file system is full")
            case Errno.fileTooLarge: return .error(.invalidSize)
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .resize:
            switch errno {
            case Errno.fileTooLarge, Errno.invalidArgument: return .error(.invalidSize, "more than a file can hold")
            case Errno.noSpace, Errno.diskQuotaExceeded, Errno.noMemory: return .error(.outOfMemory)
            case Errno.notPermitted, Errno.permissionDenied: return .error(.permissionDenied)
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .reserve:
            switch errno {
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the shared memory file system cannot hold it")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.fileTooLarge, Errno.invalidArgument: return .error(.invalidSize, "more than a file can hold")
            case Errno.notPermitted: return .error(.permissionDenied, "the file is sealed against growing")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .map:
            switch errno {
            case Errno.noMemory, Errno.resourceTemporarilyUnavailable: return .error(.outOfMemory, "no room in the address space")
            case Errno.invalidArgument, Errno.overflow: return .error(.invalidSize)
            case Errno.permissionDenied, Errno.notPermitted:
                return .error(.permissionDenied, "the file refuses a writable mapping (sealed against writes, or open read-only)")
            case Errno.operationNotSupportedByDevice: return .error(.incompatible, "its file system cannot map it")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .linkSegment:
            switch errno {
            case Errno.fileExists: return .error(.alreadyExists)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the shared memory file system is full")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.noSuchFileOrDirectory, Errno.notDirectory:
                return .error(.createFailed, "/proc is not mounted (a new segment is named through /proc/self/fd)")
            default: return nil
            }
        case .openSegment:
            switch errno {
            case Errno.noSuchFileOrDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong, Errno.invalidArgument: return .error(.invalidName)
            // ELOOP: a symbolic link (O_NOFOLLOW); ENXIO: a socket; ENODEV: a device; EISDIR: a
            // directory; ENOTSUP: what `SharedMemoryObject.open` throws for any other file that
            // is not a regular file (a FIFO).
            case SharedMemoryObject.notRegularFile, Errno.isDirectory, Errno.tooManySymbolicLinkLevels,
                 Errno.noSuchAddressOrDevice, Errno.operationNotSupportedByDevice:
                return .error(.incompatible, "not a regular file (a FIFO, directory, device, socket or link is never an Interprocess segment)")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.openFailed, tooManyFiles)
            default: return nil
            }
        case .status:
            switch errno {
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .readHeader:
            switch errno {
            case Errno.badFileDescriptor: return ownDescriptor
            case Errno.isDirectory, Errno.illegalSeek: return .error(.incompatible, "not a regular file")
            default: return nil
            }
        case .lockSegment:
            switch errno {
            case Errno.invalidArgument: return .error(.openFailed, noOFDLocks)
            case Errno.noLocks: return .error(.openFailed, "the kernel's table of locks is full")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .leaseSegment:
            switch errno {
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.openFailed, tooManyFiles)
            case Errno.resourceBusy: return .error(.openFailed, "no free owner token (64 tries)")
            case Errno.invalidArgument: return .error(.openFailed, noOFDLocks)
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .unlinkSegment:
            switch errno {
            case Errno.noSuchFileOrDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            default: return nil
            }
        case .duplicate:
            switch errno {
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.systemError, tooManyFiles)
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .createMemoryFile:
            switch errno {
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.notPermitted, Errno.permissionDenied: return .error(.permissionDenied)
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.createFailed, tooManyFiles)
            case Errno.invalidArgument, Errno.noFunction: return .error(.createFailed, "this kernel cannot create sealable memory files (memfd_create)")
            default: return nil
            }
        case .seal:
            switch errno {
            case Errno.invalidArgument: return .error(.createFailed, "this kernel cannot seal memory files")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .adoptDescriptor:
            switch errno {
            case Errno.badFileDescriptor: return .error(.invalidArgument, "not an open descriptor")
            default: return nil
            }
        case .readSeals:
            switch errno {
            case Errno.badFileDescriptor: return .error(.invalidArgument, "not an open descriptor")
            default: return .error(.incompatible, "not a sealable memory file (a named file could be truncated under the mapping)")
            }
        case .makeDirectory, .makeFIFO:
            switch errno {
            case Errno.fileExists: return .error(.alreadyExists)
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound, "its directory does not exist")
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.invalidName, "too many symbolic links in the path")
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the file system is full")
            case Errno.noMemory: return .error(.outOfMemory)
            default: return nil
            }
        case .statPath:
            switch errno {
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.invalidName, "too many symbolic links in the path")
            case Errno.noMemory: return .error(.outOfMemory)
            default: return nil
            }
        case .unlinkPath:
            switch errno {
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.isDirectory: return .error(.incompatible, "a directory")
            default: return nil
            }
        case .openFIFO:
            switch errno {
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.incompatible, "a symbolic link, not a FIFO")
            case Errno.isDirectory: return .error(.incompatible, "a directory, not a FIFO")
            // ENXIO when opening for reading, or for writing something that is not a FIFO: a
            // socket or a device (the caller tells a FIFO without a reader apart first).
            case Errno.noSuchAddressOrDevice, Errno.operationNotSupportedByDevice: return .error(.incompatible, "a socket or a device, not a FIFO")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.openFailed, tooManyFiles)
            default: return nil
            }
        case .pipeRead:
            switch errno {
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .pipeWrite:
            switch errno {
            case Errno.brokenPipe: return .error(.disconnected, "no process has the pipe open for reading any more")
            case Errno.badFileDescriptor: return ownDescriptor
            default: return nil
            }
        case .openLockFile:
            switch errno {
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound, "its directory does not exist")
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            // Something else was put at the lock file's name: it is never followed or used.
            case Errno.tooManySymbolicLinkLevels, Errno.isDirectory, Errno.noSuchAddressOrDevice, Errno.operationNotSupportedByDevice:
                return .error(.permissionDenied, "the socket's lock file is not a regular file of this user")
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the file system is full")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.createFailed, tooManyFiles)
            default: return nil
            }
        case .openFileLock:
            switch errno {
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.permissionDenied, "the path is a symbolic link")
            case Errno.isDirectory: return .error(.incompatible, "a directory (only regular files are locked)")
            case Errno.noSuchAddressOrDevice, Errno.operationNotSupportedByDevice:
                return .error(.incompatible, "a socket or a device (only regular files are locked)")
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the file system is full")
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.openFailed, tooManyFiles)
            default: return nil
            }
        case .lockFile:
            switch errno {
            // The descriptor is the lock's own; EBADF here means it is open read-only (the file
            // allowed no more), which an exclusive lock needs to be writable.
            case Errno.badFileDescriptor:
                return .error(.permissionDenied, "the file is open read-only here, which allows only shared locks")
            case Errno.noLocks: return .error(.systemError, "the kernel's table of locks is full")
            case Errno.invalidArgument: return .error(.systemError, noOFDLocks)
            case Errno.deadlock: return .error(.systemError, "the kernel refused the wait as a deadlock")
            default: return nil
            }
        case .socket:
            switch errno {
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.createFailed, tooManyFiles)
            case Errno.noBufferSpace, Errno.noMemory: return .error(.outOfMemory)
            case Errno.permissionDenied, Errno.notPermitted: return .error(.permissionDenied)
            case Errno.badFileDescriptor, Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .bind:
            switch errno {
            case Errno.addressInUse: return .error(.alreadyExists, "another socket appeared there meanwhile")
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound, "its directory does not exist")
            case Errno.permissionDenied, Errno.notPermitted, Errno.readOnlyFileSystem: return .error(.permissionDenied)
            case Errno.fileNameTooLong, Errno.invalidArgument: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.invalidName, "too many symbolic links in the path")
            case Errno.noSpace, Errno.diskQuotaExceeded: return .error(.outOfMemory, "the file system is full")
            case Errno.noMemory, Errno.noBufferSpace: return .error(.outOfMemory)
            case Errno.badFileDescriptor, Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .listen:
            switch errno {
            case Errno.addressInUse: return .error(.alreadyExists)
            case Errno.badFileDescriptor, Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .connectStream, .connectDatagram:
            switch errno {
            case Errno.connectionRefused:
                return .error(.connectionRefused, "nobody listens there (a socket file left by a server that is gone)")
            case Errno.protocolWrongTypeForSocket:
                return .error(.incompatible, self == .connectStream ? "a datagram socket, not a listener" : "a stream socket, not a datagram socket")
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted: return .error(.permissionDenied)
            case Errno.fileNameTooLong, Errno.invalidArgument: return .error(.invalidName)
            case Errno.tooManySymbolicLinkLevels: return .error(.invalidName, "too many symbolic links in the path")
            case Errno.noMemory, Errno.noBufferSpace: return .error(.outOfMemory)
            case Errno.connectionReset: return .error(.disconnected, "the listener closed the connection at once")
            case Errno.badFileDescriptor, Errno.notSocket, Errno.socketIsConnected: return ownDescriptor
            default: return nil
            }
        case .accept:
            switch errno {
            case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: return .error(.systemError, tooManyFiles)
            case Errno.noBufferSpace, Errno.noMemory: return .error(.outOfMemory)
            case Errno.notPermitted: return .error(.permissionDenied)
            case Errno.badFileDescriptor, Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .sendStream:
            switch errno {
            case Errno.brokenPipe, Errno.connectionReset, Errno.socketNotConnected: return .error(.disconnected, "the peer closed the connection")
            case Errno.noBufferSpace, Errno.noMemory: return .error(.outOfMemory)
            // The descriptors a message carries are the caller's: one of them is not open.
            case Errno.badFileDescriptor: return .error(.invalidArgument, "a descriptor to send is not open")
            case Errno.tooManyReferences: return .error(.systemError, "too many descriptors in flight (more than the open-file limit)")
            case Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .sendDatagram:
            switch errno {
            case Errno.messageTooLong, Errno.noBufferSpace: return .error(.invalidSize, "too big for a datagram")
            case Errno.connectionRefused, Errno.socketNotConnected, Errno.brokenPipe, Errno.connectionReset:
                return .error(.disconnected, "nobody is bound at the destination any more")
            case Errno.noSuchFileOrDirectory, Errno.notDirectory: return .error(.notFound)
            case Errno.permissionDenied, Errno.notPermitted: return .error(.permissionDenied)
            case Errno.protocolWrongTypeForSocket: return .error(.incompatible, "the destination is not a datagram socket")
            case Errno.addressRequired, Errno.socketIsConnected: return .error(.invalidArgument)
            case Errno.noMemory: return .error(.outOfMemory)
            case Errno.badFileDescriptor: return .error(.invalidArgument, "a descriptor to send is not open")
            case Errno.tooManyReferences: return .error(.systemError, "too many descriptors in flight (more than the open-file limit)")
            case Errno.notSocket: return ownDescriptor
            default: return nil
            }
        case .receive:
            switch errno {
            case Errno.connectionReset, Errno.socketNotConnected: return .error(.disconnected, "the peer closed the connection")
            case Errno.noBufferSpace, Errno.noMemory: return .error(.outOfMemory)
            case Errno.badFileDescriptor, Errno.notSocket: return ownDescriptor
            default: return nil
            }
        }
    }

    /// EBADF or ENOTSOCK on a descriptor the library opened and keeps open while it is used.
    private var ownDescriptor: ErrnoMeaning { .bug("the library's own descriptor is not open (or not a socket)") }
    private var tooManyFiles: String { "too many open files (in this process or in the system)" }
    private var noOFDLocks: String { "this kernel lacks open-file-description locks (F_OFD_SETLK, Linux 3.15)" }
}

extension InterprocessError {
    /// The error for `errno` after `operation`, on `objectName`. `detail` says what was being done;
    /// the table adds what the errno means there. `otherwise` replaces the operation's default code
    /// for an errno its table does not name. Traps for an errno that only a bug in this library
    /// can cause (see ``ErrnoMeaning/bug(_:)``).
    package init(
        _ operation: SystemOperation, _ errno: Errno, objectName: String?, detail: String = "",
        otherwise fallback: Code? = nil
    ) {
        switch operation.meaning(of: errno) {
        case .bug(let reason):
            fatalError("Interprocess: \(operation.rawValue) failed with \(errno) (errno \(errno.rawValue)): \(reason)")
        case .error(let code, let explanation):
            self.init(code, objectName: objectName, systemError: errno, detail: Self.join(detail, explanation))
        case nil:
            self.init(fallback ?? operation.defaultCode, objectName: objectName, systemError: errno, detail: detail)
        }
    }

    private static func join(_ detail: String, _ explanation: String?) -> String {
        guard let explanation, !explanation.isEmpty else { return detail }
        return detail.isEmpty ? explanation : detail + ": " + explanation
    }
}

/// Runs the system call `body` and reports its errno through `operation`'s table (see
/// ``InterprocessError/init(_:_:objectName:detail:otherwise:)``).
@inline(__always)
func perform<R>(
    _ operation: SystemOperation, name: String?, detail: @autoclosure () -> String = "",
    otherwise fallback: InterprocessError.Code? = nil, _ body: () throws(Errno) -> R
) throws(InterprocessError) -> R {
    do { return try body() } catch {
        throw InterprocessError(operation, error, objectName: name, detail: detail(), otherwise: fallback)
    }
}
