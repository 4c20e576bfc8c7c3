public import SystemPackage

/// The error that every Interprocess operation throws.
///
/// It names what went wrong (`code`), the object it concerns (`objectName`), the operating system's
/// error where there is one (`systemError`), and a sentence for people (`description`). Which errno
/// becomes which code is decided per system call, in one table (`InterprocessError+Errno.swift`).
///
/// ```swift
/// do {
///     let segment = try SharedMemory.open(name: "orders")
///     // …
/// } catch {
///     // `error` is an InterprocessError: every call in the `do` throws only that.
///     if error.code == .notFound {
///         // nobody created it yet
///     } else {
///         throw error
///     }
/// }
/// ```
///
/// Test the code inside the `catch`, as above. A filtered clause — `catch where error.code ==
/// .notFound` (with `do throws(InterprocessError)`) or `catch InterprocessError.Code.notFound` —
/// crashes the Swift 6.3.1 compiler in a generic `async` function that assigns a variable in the
/// `do` (a segmentation fault in its MandatoryAllocBoxToStack pass); the form above compiles
/// everywhere (`Tests/InterprocessTests/DocExampleTests.swift` compiles both contexts).
///
/// `Code` is a struct with static members rather than an enum so that new codes can be added
/// without breaking a client's `switch`.
public struct InterprocessError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Value: String, Sendable {
            case alreadyExists, notFound, createFailed, openFailed, outOfMemory, statFailed
            case invalidName, invalidSize, invalidArgument, permissionDenied, incompatible, corrupt, closed
            case encodingFailed, decodingFailed, timedOut, wouldBlock, cancelled, ownerDied, notOwner
            case systemError
            case disconnected, connectionRefused
            case invalidPointer
            case overlaps
            case serverDied, requestFailed
            case empty
        }
        fileprivate let value: Value
        fileprivate init(_ value: Value) { self.value = value }

        public var description: String { value.rawValue }

        /// An object of that name exists already (create).
        public static let alreadyExists = Code(.alreadyExists)
        /// No object of that name exists (open, remove).
        public static let notFound = Code(.notFound)
        /// The operating system refused to create the object.
        public static let createFailed = Code(.createFailed)
        /// The operating system refused to open or map the object.
        public static let openFailed = Code(.openFailed)
        /// Not enough room: the shared memory file system (or the file system of a path) is out of
        /// space or inodes, or the kernel or the address space has no memory for it.
        public static let outOfMemory = Code(.outOfMemory)
        /// The object's status could not be read (`fstat`, `lstat`).
        public static let statFailed = Code(.statFailed)
        /// The name or path is empty, too long (or has a component longer than the file system
        /// allows), or contains '/' (a name) or NUL.
        public static let invalidName = Code(.invalidName)
        /// The size is zero, too large, or does not fit.
        public static let invalidSize = Code(.invalidSize)
        /// An argument is out of its range, e.g. a descriptor to send or adopt that is not open.
        public static let invalidArgument = Code(.invalidArgument)
        /// The caller lacks permission.
        public static let permissionDenied = Code(.permissionDenied)
        /// The object is not an Interprocess object, or of another layout version or kind; or not
        /// the kind of file the call expects (a FIFO, socket, directory or link where a regular file
        /// belongs, a datagram socket where a listener was expected).
        public static let incompatible = Code(.incompatible)
        /// The object's header or data is inconsistent: truncated, scribbled over, or written by a
        /// buggy peer.
        public static let corrupt = Code(.corrupt)
        /// The handle was closed.
        public static let closed = Code(.closed)
        /// A value could not be encoded.
        public static let encodingFailed = Code(.encodingFailed)
        /// Stored bytes could not be decoded as the requested type.
        public static let decodingFailed = Code(.decodingFailed)
        /// A wait ran out of time.
        public static let timedOut = Code(.timedOut)
        /// A `try…` operation would have had to wait.
        public static let wouldBlock = Code(.wouldBlock)
        /// The waiting task was cancelled.
        public static let cancelled = Code(.cancelled)
        /// A lock's previous owner died while holding it.
        public static let ownerDied = Code(.ownerDied)
        /// The caller does not hold the lock it tried to release.
        public static let notOwner = Code(.notOwner)
        /// Any other operating system failure.
        public static let systemError = Code(.systemError)
        /// The other end of a pipe or socket is gone (closed, or its process died), or was never
        /// there: a write to a pipe that nobody reads, a connection the peer closed.
        public static let disconnected = Code(.disconnected)
        /// Nobody listens at a socket's path (a socket file left by a server that died, or a
        /// listener whose queue of pending connections is full).
        public static let connectionRefused = Code(.connectionRefused)
        /// A ``SharedPointer`` that does not point at a live block of the heap it was resolved in:
        /// freed (stale), forged, garbage, or another heap's.
        public static let invalidPointer = Code(.invalidPointer)
        /// The bytes are taken: an object placed in a segment (or the value stored in it) is where
        /// this object or value would go. The detail names what is there: its kind and its range.
        public static let overlaps = Code(.overlaps)
        /// The server process that took a request died before it replied (``Service``): the request
        /// may or may not have had its effects. The caller decides whether to send it again.
        public static let serverDied = Code(.serverDied)
        /// The server refused a request (``Service``): its handler threw, it could not decode the
        /// request or encode its response, or it dropped the call without replying. The detail is
        /// the server's reason.
        public static let requestFailed = Code(.requestFailed)
        /// Nothing is stored yet: a segment or ``SharedWatchedValue`` that no writer has stored a
        /// value in.
        public static let empty = Code(.empty)
    }

    /// What kind of failure this is.
    public var code: Code
    /// The name of the object concerned, if any.
    public var objectName: String?
    /// The operating system's error, if the failure came from a system call.
    public var systemError: Errno?
    /// Details for people.
    public var detail: String

    /// An error with `code`, about `objectName`, caused by `systemError`, explained by `detail`.
    public init(_ code: Code, objectName: String? = nil, systemError: Errno? = nil, detail: String = "") {
        self.code = code
        self.objectName = objectName
        self.systemError = systemError
        self.detail = detail
    }

    public var description: String {
        var text = code.description
        if let objectName { text += " '\(objectName)'" }
        if !detail.isEmpty { text += ": \(detail)" }
        if let systemError { text += " (\(systemError), errno \(systemError.rawValue))" }
        return text
    }
}

extension InterprocessError.Code {
    /// Lets `catch InterprocessError.Code.notFound { … }` match. (In a generic `async` function
    /// that assigns a variable in the `do`, Swift 6.3.1 crashes on that clause: test
    /// `error.code` inside a plain `catch` there, as the example of ``InterprocessError`` shows.)
    public static func ~= (pattern: InterprocessError.Code, error: any Error) -> Bool {
        (error as? InterprocessError)?.code == pattern
    }
}
