// The errno tables (Sources/Interprocess/InterprocessError+Errno.swift): every mapping a test can
// provoke for real is provoked — in this process, as another user, in a small tmpfs of a child's
// own mount namespace, under a low open-file limit — and checked for its code *and* its errno (the
// errno shows that the table, not a check before the call, decided). The rest of each table is
// checked row by row, with the rule that nothing but a bug of the library may trap.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import SystemPackage

/// Expects `body` to fail with `code`, carrying `errno` as its system error (or none, for nil).
func expectMapped<R>(
    _ code: InterprocessError.Code, _ errno: Errno?, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws(InterprocessError) -> R
) {
    do {
        _ = try body()
        Issue.record("expected \(code), but it succeeded", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        #expect(error.systemError == errno, "\(error)", sourceLocation: sourceLocation)
    }
}

// MARK: - The tables themselves

@Suite("Errno tables")
struct ErrnoTableTests {
    /// What each operation's table says, row by row: the rows that no test below can provoke, and
    /// the ones it does (so that a change to either shows here first).
    static let rows: [(SystemOperation, Errno, InterprocessError.Code)] = [
        (.createSegment, .permissionDenied, .permissionDenied), (.createSegment, .notPermitted, .permissionDenied),
        (.createSegment, .readOnlyFileSystem, .permissionDenied), (.createSegment, .noSpace, .outOfMemory),
        (.createSegment, .diskQuotaExceeded, .outOfMemory), (.createSegment, .noMemory, .outOfMemory),
        (.createSegment, .noSuchFileOrDirectory, .createFailed), (.createSegment, .isDirectory, .createFailed),
        (.createSegment, .notSupported, .createFailed), (.createSegment, .invalidArgument, .createFailed),
        (.createSegment, .tooManyOpenFiles, .createFailed), (.createSegment, .tooManyOpenFilesInSystem, .createFailed),
        (.setGroup, .notPermitted, .permissionDenied), (.setGroup, .invalidArgument, .invalidArgument),
        (.setGroup, .ioError, .createFailed),
        (.setPermissions, .notPermitted, .permissionDenied), (.setPermissions, .readOnlyFileSystem, .permissionDenied),
        (.writeHeader, .noSpace, .outOfMemory), (.writeHeader, .fileTooLarge, .invalidSize), (.writeHeader, .ioError, .createFailed),
        (.resize, .fileTooLarge, .invalidSize), (.resize, .invalidArgument, .invalidSize), (.resize, .noSpace, .outOfMemory),
        (.resize, .notPermitted, .permissionDenied),
        (.reserve, .noSpace, .outOfMemory), (.reserve, .noMemory, .outOfMemory), (.reserve, .diskQuotaExceeded, .outOfMemory),
        (.reserve, .fileTooLarge, .invalidSize), (.reserve, .invalidArgument, .invalidSize), (.reserve, .notPermitted, .permissionDenied),
        (.reserve, .ioError, .openFailed),
        (.map, .noMemory, .outOfMemory), (.map, .resourceTemporarilyUnavailable, .outOfMemory), (.map, .invalidArgument, .invalidSize),
        (.map, .overflow, .invalidSize), (.map, .permissionDenied, .permissionDenied), (.map, .notPermitted, .permissionDenied),
        (.map, .operationNotSupportedByDevice, .incompatible),
        (.linkSegment, .fileExists, .alreadyExists), (.linkSegment, .permissionDenied, .permissionDenied),
        (.linkSegment, .noSpace, .outOfMemory), (.linkSegment, .fileNameTooLong, .invalidName),
        (.linkSegment, .noSuchFileOrDirectory, .createFailed), (.linkSegment, .tooManyLinks, .createFailed),
        (.openSegment, .noSuchFileOrDirectory, .notFound), (.openSegment, .permissionDenied, .permissionDenied),
        (.openSegment, .notPermitted, .permissionDenied), (.openSegment, .readOnlyFileSystem, .permissionDenied),
        (.openSegment, .fileNameTooLong, .invalidName), (.openSegment, .invalidArgument, .invalidName),
        (.openSegment, SharedMemoryObject.notRegularFile, .incompatible), (.openSegment, .isDirectory, .incompatible),
        (.openSegment, .tooManySymbolicLinkLevels, .incompatible), (.openSegment, .noSuchAddressOrDevice, .incompatible),
        (.openSegment, .operationNotSupportedByDevice, .incompatible), (.openSegment, .noMemory, .outOfMemory),
        (.openSegment, .tooManyOpenFiles, .openFailed),
        (.status, .overflow, .statFailed), (.status, .noMemory, .statFailed),
        (.readHeader, .ioError, .openFailed), (.readHeader, .isDirectory, .incompatible),
        (.lockSegment, .invalidArgument, .openFailed), (.lockSegment, .noLocks, .openFailed),
        (.leaseSegment, .tooManyOpenFiles, .openFailed), (.leaseSegment, .resourceBusy, .openFailed),
        (.leaseSegment, .noMemory, .outOfMemory),
        (.unlinkSegment, .noSuchFileOrDirectory, .notFound), (.unlinkSegment, .permissionDenied, .permissionDenied),
        (.unlinkSegment, .notPermitted, .permissionDenied), (.unlinkSegment, .resourceBusy, .systemError),
        (.duplicate, .tooManyOpenFiles, .systemError),
        (.createMemoryFile, .noMemory, .outOfMemory), (.createMemoryFile, .notPermitted, .permissionDenied),
        (.createMemoryFile, .tooManyOpenFiles, .createFailed), (.createMemoryFile, .noFunction, .createFailed),
        (.seal, .invalidArgument, .createFailed), (.seal, .notPermitted, .createFailed),
        (.adoptDescriptor, .badFileDescriptor, .invalidArgument), (.adoptDescriptor, .ioError, .statFailed),
        (.readSeals, .invalidArgument, .incompatible), (.readSeals, .badFileDescriptor, .invalidArgument),
        (.makeDirectory, .fileExists, .alreadyExists), (.makeDirectory, .noSuchFileOrDirectory, .notFound),
        (.makeDirectory, .readOnlyFileSystem, .permissionDenied), (.makeDirectory, .noSpace, .outOfMemory),
        (.makeDirectory, .tooManySymbolicLinkLevels, .invalidName), (.makeDirectory, .tooManyLinks, .createFailed),
        (.statPath, .noSuchFileOrDirectory, .notFound), (.statPath, .notDirectory, .notFound),
        (.statPath, .permissionDenied, .permissionDenied), (.statPath, .fileNameTooLong, .invalidName),
        (.statPath, .noMemory, .outOfMemory), (.statPath, .ioError, .statFailed),
        (.unlinkPath, .noSuchFileOrDirectory, .notFound), (.unlinkPath, .permissionDenied, .permissionDenied),
        (.unlinkPath, .readOnlyFileSystem, .permissionDenied), (.unlinkPath, .isDirectory, .incompatible),
        (.unlinkPath, .resourceBusy, .systemError),
        (.makeFIFO, .fileExists, .alreadyExists), (.makeFIFO, .notDirectory, .notFound), (.makeFIFO, .readOnlyFileSystem, .permissionDenied),
        (.makeFIFO, .noSpace, .outOfMemory), (.makeFIFO, .diskQuotaExceeded, .outOfMemory),
        (.openFIFO, .noSuchFileOrDirectory, .notFound), (.openFIFO, .permissionDenied, .permissionDenied),
        (.openFIFO, .readOnlyFileSystem, .permissionDenied), (.openFIFO, .tooManySymbolicLinkLevels, .incompatible),
        (.openFIFO, .isDirectory, .incompatible), (.openFIFO, .noSuchAddressOrDevice, .incompatible),
        (.openFIFO, .operationNotSupportedByDevice, .incompatible), (.openFIFO, .tooManyOpenFiles, .openFailed),
        (.pipeRead, .ioError, .systemError),
        (.pipeWrite, .brokenPipe, .disconnected), (.pipeWrite, .ioError, .systemError),
        (.openLockFile, .notDirectory, .notFound), (.openLockFile, .permissionDenied, .permissionDenied),
        (.openLockFile, .tooManySymbolicLinkLevels, .permissionDenied), (.openLockFile, .isDirectory, .permissionDenied),
        (.openLockFile, .noSuchAddressOrDevice, .permissionDenied), (.openLockFile, .noSpace, .outOfMemory),
        (.openLockFile, .tooManyOpenFiles, .createFailed),
        (.openFileLock, .noSuchFileOrDirectory, .notFound), (.openFileLock, .readOnlyFileSystem, .permissionDenied),
        (.openFileLock, .tooManySymbolicLinkLevels, .permissionDenied), (.openFileLock, .isDirectory, .incompatible),
        (.openFileLock, .noSuchAddressOrDevice, .incompatible), (.openFileLock, .noSpace, .outOfMemory),
        (.lockFile, .badFileDescriptor, .permissionDenied), (.lockFile, .noLocks, .systemError),
        (.lockFile, .invalidArgument, .systemError), (.lockFile, .deadlock, .systemError),
        (.socket, .tooManyOpenFiles, .createFailed), (.socket, .noBufferSpace, .outOfMemory), (.socket, .noMemory, .outOfMemory),
        (.socket, .permissionDenied, .permissionDenied), (.socket, .addressFamilyNotSupported, .createFailed),
        (.bind, .addressInUse, .alreadyExists), (.bind, .noSuchFileOrDirectory, .notFound), (.bind, .permissionDenied, .permissionDenied),
        (.bind, .readOnlyFileSystem, .permissionDenied), (.bind, .fileNameTooLong, .invalidName), (.bind, .noSpace, .outOfMemory),
        (.listen, .addressInUse, .alreadyExists), (.listen, .protocolNotAvailable, .createFailed),
        (.connectStream, .connectionRefused, .connectionRefused), (.connectStream, .protocolWrongTypeForSocket, .incompatible),
        (.connectStream, .noSuchFileOrDirectory, .notFound), (.connectStream, .permissionDenied, .permissionDenied),
        (.connectStream, .noBufferSpace, .outOfMemory), (.connectStream, .connectionReset, .disconnected),
        (.connectStream, .timedOut, .openFailed),
        (.connectDatagram, .connectionRefused, .connectionRefused), (.connectDatagram, .protocolWrongTypeForSocket, .incompatible),
        (.accept, .tooManyOpenFiles, .systemError), (.accept, .noBufferSpace, .outOfMemory), (.accept, .notPermitted, .permissionDenied),
        (.accept, .invalidArgument, .systemError), (.accept, .protocolError, .systemError),
        (.sendStream, .brokenPipe, .disconnected), (.sendStream, .connectionReset, .disconnected),
        (.sendStream, .socketNotConnected, .disconnected), (.sendStream, .noBufferSpace, .outOfMemory),
        (.sendStream, .badFileDescriptor, .invalidArgument), (.sendStream, .tooManyReferences, .systemError),
        (.sendDatagram, .messageTooLong, .invalidSize), (.sendDatagram, .noBufferSpace, .invalidSize),
        (.sendDatagram, .connectionRefused, .disconnected), (.sendDatagram, .socketNotConnected, .disconnected),
        (.sendDatagram, .noSuchFileOrDirectory, .notFound), (.sendDatagram, .permissionDenied, .permissionDenied),
        (.sendDatagram, .protocolWrongTypeForSocket, .incompatible), (.sendDatagram, .addressRequired, .invalidArgument),
        (.sendDatagram, .badFileDescriptor, .invalidArgument), (.sendDatagram, .tooManyReferences, .systemError),
        (.receive, .connectionReset, .disconnected), (.receive, .socketNotConnected, .disconnected),
        (.receive, .noMemory, .outOfMemory), (.receive, .invalidArgument, .systemError),
    ]

    @Test func everyRowOfTheTables() {
        for (operation, errno, code) in Self.rows {
            let error = InterprocessError(operation, errno, objectName: "x")
            #expect(error.code == code, "\(operation) \(errno): \(error)")
            #expect(error.systemError == errno)
        }
    }

    /// Nothing a peer, the caller or the environment causes traps: only EFAULT (the library's own
    /// buffers), and EBADF / ENOTSOCK / EISCONN on descriptors the library opened itself.
    @Test func onlyBugsOfTheLibraryTrap() {
        let ownDescriptorErrnos: Set<Errno> = [.badFileDescriptor, .notSocket, .socketIsConnected]
        // Operations on descriptors the caller handed over, or that carry the caller's descriptors.
        let callersDescriptors: Set<SystemOperation> = [.adoptDescriptor, .readSeals, .sendStream, .sendDatagram, .lockFile]
        for operation in SystemOperation.allCases {
            for raw in CInt(1)...CInt(133) {
                let errno = Errno(rawValue: raw)
                guard case .bug = operation.meaning(of: errno) else { continue }
                #expect(errno == .badAddress || ownDescriptorErrnos.contains(errno), "\(operation) traps on \(errno)")
                #expect(errno != .badFileDescriptor || !callersDescriptors.contains(operation), "\(operation) traps on the caller's EBADF")
            }
            #expect(operation.meaning(of: .badAddress) == .bug("a buffer or address the library passed is invalid"))
            // EINVAL is never a bug: a listener shut down by close() answers accept with it.
            if case .bug = operation.meaning(of: .invalidArgument) { Issue.record("\(operation) traps on EINVAL") }
        }
    }

    @Test func anErrnoATableDoesNotNameGetsTheDefaultOrWhatTheCallerIsDoing() {
        let unnamed = Errno.notRecoverable
        for operation in SystemOperation.allCases {
            #expect(operation.meaning(of: unnamed) == nil || operation == .readSeals, "\(operation)")
            let error = InterprocessError(operation, unnamed, objectName: "x")
            #expect(error.code == operation.defaultCode)
            #expect(error.systemError == unnamed)
        }
        #expect(SystemOperation.reserve.defaultCode == .openFailed)
        #expect(InterprocessError(.reserve, unnamed, objectName: "x", otherwise: .createFailed).code == .createFailed)
        // `otherwise` is only for errnos the table does not name.
        #expect(InterprocessError(.reserve, .noSpace, objectName: "x", otherwise: .createFailed).code == .outOfMemory)
        let defaults: [SystemOperation: InterprocessError.Code] = [
            .createSegment: .createFailed, .linkSegment: .createFailed, .openSegment: .openFailed, .status: .statFailed,
            .unlinkSegment: .systemError, .makeFIFO: .createFailed, .openFIFO: .openFailed, .pipeWrite: .systemError,
            .openFileLock: .openFailed, .lockFile: .systemError, .bind: .createFailed, .connectStream: .openFailed,
            .accept: .systemError, .sendStream: .systemError, .receive: .systemError, .readSeals: .incompatible,
        ]
        for (operation, code) in defaults { #expect(operation.defaultCode == code, "\(operation)") }
    }

    @Test func theErrorKeepsTheNameTheErrnoAndBothSentences() {
        let error = InterprocessError(.reserve, .noSpace, objectName: "orders", detail: "could not reserve 8192 bytes")
        #expect(error.objectName == "orders")
        #expect(error.systemError == .noSpace)
        #expect(error.detail == "could not reserve 8192 bytes: the shared memory file system cannot hold it")
        #expect(error.description.hasPrefix("outOfMemory 'orders': could not reserve 8192 bytes: "))
        #expect(error.description.hasSuffix("errno 28)"))
        // Without a caller's sentence, the table's; without the table's, the caller's.
        #expect(InterprocessError(.pipeWrite, .brokenPipe, objectName: nil).detail == "no process has the pipe open for reading any more")
        #expect(InterprocessError(.unlinkSegment, .resourceBusy, objectName: nil, detail: "busy").detail == "busy")
    }

    @Test func anErrnoOnlyABugCanCauseTraps() async {
        await #expect(processExitsWith: .failure) {
            _ = InterprocessError(.receive, .badAddress, objectName: nil)
        }
        await #expect(processExitsWith: .failure) {
            _ = InterprocessError(.status, .badFileDescriptor, objectName: nil)
        }
    }
}

// MARK: - Provoked for real

@Suite("Errno provoked for real", .serialized, .timeLimit(.minutes(3)))
struct ProvokedErrnoTests {
    /// Runs `errno-probe ARGUMENTS` in the test child with `options` before the command (e.g.
    /// `--as-nobody`), started through `launcher` if one is given (a program whose last argument
    /// runs the child, e.g. `prlimit … --`). Returns how it ended and its one line: "ok" or
    /// "error CODE ERRNO" (empty if the child never got to say anything).
    private func probe(
        launcher: [String] = [], options: [String] = [], _ arguments: String...
    ) throws -> (termination: ChildProcess.Termination?, line: String) {
        let command = launcher.first ?? Peer.path
        let all = (launcher.isEmpty ? [] : Array(launcher.dropFirst()) + [Peer.path]) + options + ["errno-probe"] + arguments
        let result = try ChildProcess.run(command, all, timeout: .seconds(30))
        if !result.standardError.isEmpty { print("child stderr: \(result.standardError)") }
        return (result.termination, result.standardOutput.split(separator: "\n").first.map(String.init) ?? "")
    }

    // MARK: Segments

    @Test func segmentNamesThatAreNotSegments() throws {
        try withCleanNames("errno-shm") { prefix in
            // ENOENT
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try SharedMemory.open(name: prefix + "-missing") }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try SharedMemory.remove(name: prefix + "-missing") }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try SharedMemory.info(name: prefix + "-missing") }
            // EEXIST, from linkat: the name is given only to a complete segment.
            let segment = try SharedMemory.create(name: prefix, size: 64)
            expectMapped(.alreadyExists, .fileExists) { () throws(InterprocessError) in try SharedMemory.create(name: prefix, size: 64) }
            // ELOOP: a symbolic link is never followed (O_NOFOLLOW), even to a real segment.
            let link = prefix + "-link"
            #expect(symlink("/dev/shm/" + prefix, "/dev/shm/" + link) == 0)
            defer { unlink("/dev/shm/" + link) }
            expectMapped(.incompatible, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in try SharedMemory.open(name: link) }
            expectMapped(.incompatible, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in try SharedMemory.remove(name: link) }
            expectMapped(.incompatible, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in try SharedMemory.info(name: link) }
            segment.close()
            // EISDIR
            let directory = prefix + "-dir"
            #expect(mkdir("/dev/shm/" + directory, 0o700) == 0)
            defer { rmdir("/dev/shm/" + directory) }
            expectMapped(.incompatible, .isDirectory) { () throws(InterprocessError) in try SharedMemory.open(name: directory) }
            // ENXIO: a socket (it used to be openFailed).
            let socketName = prefix + "-sock"
            let socket = try LocalDatagramSocket.bind(path: "/dev/shm/" + socketName)
            defer { socket.close() }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try SharedMemory.open(name: socketName) }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try SharedMemory.remove(name: socketName) }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try SharedMemory.info(name: socketName) }
        }
    }

    @Test func adoptingADescriptorThatIsNotOpen() {
        // It used to be statFailed: the caller passed something that is not a descriptor.
        expectMapped(.invalidArgument, .badFileDescriptor) { () throws(InterprocessError) in
            try SharedMemory.adopt(FileDescriptor(rawValue: 999_999))
        }
    }

    @Test func anotherUsersSegmentIsPermissionDenied() throws {
        guard canActAsAnotherUser(#function) else { return }
        try withCleanNames("errno-acces") { prefix in
            let segment = try SharedMemory.create(name: prefix, size: 64) // 0600, ours (root)
            defer { segment.close() }
            let result = try probe(options: ["--as-nobody"], "segment-open", prefix)
            #expect(result.line == "error permissionDenied \(EACCES)", "\(result)")
        }
    }

    /// ENOSPC from `open(O_TMPFILE)` in a tmpfs that has no inode left (a child in its own mount
    /// namespace mounts it over /dev/shm): outOfMemory, never a crash.
    @Test func aFileSystemWithoutRoomForAFileIsOutOfMemory() throws {
        guard Namespaces.available(Namespaces.hidepidRefusal) else { return }
        let name = TestNames.make("errno-inodes")
        let script = "mount -t tmpfs -o size=1m,nr_inodes=1 none /dev/shm && exec \"$0\" errno-probe segment-create \"$1\" 4096"
        let result = try ChildProcess.run(Namespaces.unshare, ["-m", "/bin/sh", "-c", script, Peer.path, name], timeout: .seconds(30))
        #expect(result.termination == .exited(0), "\(result.standardError)")
        #expect(result.standardOutput == "error outOfMemory \(ENOSPC)\n", "\(result.standardOutput)")
    }

    /// ENOSPC from `posix_fallocate` at open: a complete segment of 8 MiB copied sparse into a
    /// 1 MiB tmpfs claims more than the file system holds. The open fails with outOfMemory instead
    /// of mapping holes that would raise SIGBUS on first touch.
    @Test func aSparseSegmentBiggerThanItsFileSystemIsOutOfMemoryAtOpen() throws {
        guard Namespaces.available(Namespaces.hidepidRefusal) else { return }
        let name = TestNames.make("errno-sparse")
        let script = """
            set -e
            mount -t tmpfs -o size=16m none /dev/shm
            "$0" create-exit "$1" 8388608 persistent x
            mount -t tmpfs -o size=16m none /mnt
            cp --sparse=always /dev/shm/"$1" /mnt/"$1"
            mount -t tmpfs -o size=1m none /dev/shm
            cp --sparse=always /mnt/"$1" /dev/shm/"$1"
            exec "$0" errno-probe segment-open "$1"
            """
        let result = try ChildProcess.run(Namespaces.unshare, ["-m", "/bin/sh", "-c", script, Peer.path, name], timeout: .seconds(30))
        #expect(result.termination == .exited(0), "\(result.standardError)")
        #expect(result.standardOutput == "error outOfMemory \(ENOSPC)\n", "\(result.standardOutput)")
    }

    /// EMFILE: a child that has used up its open-file limit (64) before the call. The errno is
    /// kept and explained; nothing traps.
    @Test func tooManyOpenFilesIsReportedAndNeverACrash() throws {
        guard access("/usr/bin/prlimit", X_OK) == 0 else {
            print("\(#function): skipped — /usr/bin/prlimit is missing")
            return
        }
        let full = ["/usr/bin/prlimit", "--nofile=64:64", "--"]
        try withCleanNames("errno-emfile") { prefix in
            let create = try probe(launcher: full, "--descriptors-left", "0", "segment-create", prefix, "4096")
            #expect(create.termination == .exited(0) && create.line == "error createFailed \(EMFILE)", "\(create)")
        }
        try withLocalDirectory("errno-emfile") { directory in
            let listen = try probe(launcher: full, "--descriptors-left", "0", "listen", directory + "/s.sock")
            #expect(listen.termination == .exited(0) && listen.line == "error createFailed \(EMFILE)", "\(listen)")
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo)
            defer { unlink(fifo) }
            let read = try probe(launcher: full, "--descriptors-left", "0", "fifo-read", fifo)
            #expect(read.termination == .exited(0) && read.line == "error openFailed \(EMFILE)", "\(read)")
            // One descriptor left: the listener's lock file takes it, and the socket that probes a
            // stale socket file at the path finds none (it used to report EINVAL, as if the path
            // were bad).
            let stale = directory + "/stale.sock"
            let bound = try UnixSocket.make(.stream)
            try UnixSocket.bind(bound, to: UnixSocket.address(path: stale)!)
            try bound.close()
            defer { unlink(stale) }
            let probing = try probe(launcher: full, "--descriptors-left", "1", "listen", stale)
            #expect(probing.termination == .exited(0) && probing.line == "error createFailed \(EMFILE)", "\(probing)")
            #expect(fileMode(stale)?.type == S_IFSOCK, "the stale socket file is left for the next listener")
        }
    }

    /// The async waiter's wake-up pipe is made at the first async wait; with no descriptor left
    /// then (EMFILE), the waiter works without it instead of trapping.
    @Test func theAsyncWaiterStartsWithNoDescriptorLeft() throws {
        guard access("/usr/bin/prlimit", X_OK) == 0 else {
            print("\(#function): skipped — /usr/bin/prlimit is missing")
            return
        }
        try withLocalDirectory("errno-waiter") { directory in
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo)
            defer { unlink(fifo) }
            let child = try ChildProcess.spawn(
                "/usr/bin/prlimit", ["--nofile=64:64", "--", Peer.path, "errno-probe", "fifo-wait-async", fifo],
                standardInput: .pipe, standardOutput: .pipe, standardError: .inherit)
            defer { child.stop() }
            #expect(child.readLine() == "waiting")
            let writer = try NamedPipe.tryOpenForWriting(path: fifo)
            defer { writer.close() }
            try writer.blockingWrite(Array("hi".utf8), timeout: .seconds(5))
            #expect(child.readLine() == "got 2")
            #expect(child.wait(timeout: .seconds(20)) == .exited(0))
        }
    }

    // MARK: FIFOs, file locks and sockets

    @Test func pathsThatAreMissingTooLongOrNotDirectories() throws {
        try withLocalDirectory("errno-paths") { directory in
            let missing = directory + "/missing"
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try NamedPipe.openForReading(path: missing) }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try NamedPipe.remove(path: missing) }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try Interprocess.FileLock(path: missing, create: false) }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try LocalSocket.tryConnect(path: missing) }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try LocalDatagramSocket.connect(path: missing) }
            expectMapped(.notFound, .noSuchFileOrDirectory) { () throws(InterprocessError) in try NamedPipe.create(path: missing + "/fifo") }
            // ENOTDIR: a path through a regular file (NamedPipe.create used to say createFailed).
            let file = directory + "/file"
            let fd = open(file, O_CREAT | O_WRONLY, 0o600)
            #expect(fd >= 0)
            close(fd)
            defer { unlink(file) }
            expectMapped(.notFound, .notDirectory) { () throws(InterprocessError) in try NamedPipe.create(path: file + "/fifo") }
            expectMapped(.notFound, .notDirectory) { () throws(InterprocessError) in try NamedPipe.openForReading(path: file + "/fifo") }
            expectMapped(.notFound, .notDirectory) { () throws(InterprocessError) in try Interprocess.FileLock(path: file + "/lock") }
            expectMapped(.notFound, .notDirectory) { () throws(InterprocessError) in try LocalSocketListener.listen(path: file + "/sock") }
            // ENAMETOOLONG: a component longer than NAME_MAX.
            let long = directory + "/" + String(repeating: "n", count: 300)
            expectMapped(.invalidName, .fileNameTooLong) { () throws(InterprocessError) in try NamedPipe.create(path: long) }
            expectMapped(.invalidName, .fileNameTooLong) { () throws(InterprocessError) in try NamedPipe.openForReading(path: long) }
            expectMapped(.invalidName, .fileNameTooLong) { () throws(InterprocessError) in try Interprocess.FileLock(path: long) }
            // EEXIST
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo)
            defer { unlink(fifo) }
            expectMapped(.alreadyExists, .fileExists) { () throws(InterprocessError) in try NamedPipe.create(path: fifo) }
        }
    }

    @Test func thingsThatAreNotWhatTheCallExpects() throws {
        try withLocalDirectory("errno-kinds") { directory in
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo)
            defer { unlink(fifo) }
            // ELOOP: links are never followed.
            let link = directory + "/link"
            #expect(symlink(fifo, link) == 0)
            defer { unlink(link) }
            expectMapped(.incompatible, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in try NamedPipe.openForReading(path: link) }
            expectMapped(.permissionDenied, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in try Interprocess.FileLock(path: link) }
            // A link planted at a socket's lock file (it used to be createFailed).
            #expect(symlink(directory + "/elsewhere", directory + "/planted.sock.lock") == 0)
            defer { unlink(directory + "/planted.sock.lock") }
            expectMapped(.permissionDenied, .tooManySymbolicLinkLevels) { () throws(InterprocessError) in
                try LocalSocketListener.listen(path: directory + "/planted.sock")
            }
            // EISDIR
            expectMapped(.incompatible, .isDirectory) { () throws(InterprocessError) in try Interprocess.FileLock(path: directory) }
            expectMapped(.incompatible, .isDirectory) { () throws(InterprocessError) in try NamedPipe.tryOpenForWriting(path: directory) }
            // ENXIO: a socket is neither a FIFO nor a lockable file (these used to say disconnected).
            let socketPath = directory + "/dgram.sock"
            let socket = try LocalDatagramSocket.bind(path: socketPath)
            defer { socket.close() }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try Interprocess.FileLock(path: socketPath) }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try NamedPipe.openForReading(path: socketPath) }
            expectMapped(.incompatible, .noSuchAddressOrDevice) { () throws(InterprocessError) in try NamedPipe.tryOpenForWriting(path: socketPath) }
            // …while ENXIO from a FIFO that nobody reads means just that.
            expectMapped(.disconnected, nil) { () throws(InterprocessError) in try NamedPipe.tryOpenForWriting(path: fifo) }
            // EPROTOTYPE: a stream connect to a datagram socket and the reverse.
            expectMapped(.incompatible, .protocolWrongTypeForSocket) { () throws(InterprocessError) in try LocalSocket.tryConnect(path: socketPath) }
            let listener = try LocalSocketListener.listen(path: directory + "/stream.sock")
            defer { listener.close() }
            expectMapped(.incompatible, .protocolWrongTypeForSocket) { () throws(InterprocessError) in
                try LocalDatagramSocket.connect(path: directory + "/stream.sock")
            }
            // ECONNREFUSED: a socket file that nobody listens on.
            let stale = directory + "/stale.sock"
            let bound = try UnixSocket.make(.stream)
            try UnixSocket.bind(bound, to: UnixSocket.address(path: stale)!)
            try bound.close()
            defer { unlink(stale) }
            expectMapped(.connectionRefused, .connectionRefused) { () throws(InterprocessError) in try LocalSocket.tryConnect(path: stale) }
        }
    }

    @Test func peersThatAreGoneAndMessagesThatCannotGo() throws {
        try withLocalDirectory("errno-peers") { directory in
            // EPIPE on a FIFO whose reader closed.
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo)
            defer { unlink(fifo) }
            let reader = try NamedPipe.openForReading(path: fifo)
            let writer = try NamedPipe.tryOpenForWriting(path: fifo)
            defer { writer.close() }
            reader.close()
            expectMapped(.disconnected, .brokenPipe) { () throws(InterprocessError) in try writer.tryWrite([1, 2, 3]) }
            // EPIPE on a connection whose peer closed.
            let (a, b) = try LocalSocket.pair()
            b.close()
            defer { a.close() }
            expectMapped(.disconnected, .brokenPipe) { () throws(InterprocessError) in try a.blockingSend([1], timeout: .seconds(5)) }
            // EBADF among the descriptors a message carries: the caller's mistake, never a trap (it
            // used to be systemError).
            let (c, d) = try LocalSocket.pair()
            defer { c.close(); d.close() }
            expectMapped(.invalidArgument, .badFileDescriptor) { () throws(InterprocessError) in
                try c.blockingSend([1], descriptors: [FileDescriptor(rawValue: 999_999)], timeout: .seconds(5))
            }
            #expect(try c.trySend([2]), "the connection is still usable: nothing of the refused message went out")
            #expect(try d.blockingReceive(timeout: .seconds(5)).bytes == [2])
            let (e, f) = try LocalDatagramSocket.pair()
            defer { e.close(); f.close() }
            expectMapped(.invalidArgument, .badFileDescriptor) { () throws(InterprocessError) in
                try e.trySend([1], descriptors: [FileDescriptor(rawValue: 999_999)])
            }
            // EMSGSIZE: a datagram bigger than the socket can carry.
            expectMapped(.invalidSize, .messageTooLong) { () throws(InterprocessError) in try e.trySend([UInt8](repeating: 0, count: 4 << 20)) }
        }
    }

    /// EACCES from files of another mode: root's owner-only FIFO, lock file and socket, and a
    /// directory only root may write, as seen by uid 65534.
    @Test func anotherUsersFilesArePermissionDenied() throws {
        guard canActAsAnotherUser(#function) else { return }
        try withLocalDirectory("errno-acces") { directory in
            #expect(chmod(directory, 0o755) == 0)
            let fifo = directory + "/fifo"
            try NamedPipe.create(path: fifo) // 0600
            defer { unlink(fifo) }
            let lockPath = directory + "/file.lock"
            let lock = try Interprocess.FileLock(path: lockPath) // 0600
            defer { lock.close(); unlink(lockPath) }
            let listener = try LocalSocketListener.listen(path: directory + "/s.sock") // 0600
            defer { listener.close() }
            for (operation, path) in [("fifo-read", fifo), ("lock", lockPath), ("connect", directory + "/s.sock"), ("fifo-create", directory + "/new")] {
                let result = try probe(options: ["--as-nobody"], operation, path)
                #expect(result.line == "error permissionDenied \(EACCES)", "\(operation): \(result)")
            }
        }
    }
}
