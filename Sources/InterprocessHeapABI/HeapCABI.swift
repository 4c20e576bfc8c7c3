public import CInterprocessHeapABI
package import Interprocess

// The C ABI of SharedHeap: the functions `interprocess_heap.h` declares, exported under those names
// from libInterprocessHeap.so (the product "InterprocessHeap"). The header documents what each does;
// these are thin: a handle is an `Unmanaged<SharedHeap>`, an address goes through the heap's
// address-based entry points (`SharedHeap+Addresses.swift`), and every call records its outcome on
// the calling thread (`interprocess_heap.c`). Nothing here traps: every failure is a return value
// and an error code. (The plain-C half — the error slot, the code names, the function tables — is
// in `interprocess_heap.c`, whose initializers make the C compiler check these signatures against
// the header; `signatureChecks` below checks them from the Swift side.)

/// Maps ``InterprocessError`` codes to the stable numbers of `ipc_heap_error`.
package enum HeapCABI {
    /// The C code of `code` (`IPC_HEAP_ERROR_UNKNOWN` for a code newer than the header).
    package static func errorCode(_ code: InterprocessError.Code) -> ipc_heap_error {
        switch code {
        case .alreadyExists: IPC_HEAP_ERROR_ALREADY_EXISTS
        case .notFound: IPC_HEAP_ERROR_NOT_FOUND
        case .createFailed: IPC_HEAP_ERROR_CREATE_FAILED
        case .openFailed: IPC_HEAP_ERROR_OPEN_FAILED
        case .outOfMemory: IPC_HEAP_ERROR_OUT_OF_MEMORY
        case .statFailed: IPC_HEAP_ERROR_STAT_FAILED
        case .invalidName: IPC_HEAP_ERROR_INVALID_NAME
        case .invalidSize: IPC_HEAP_ERROR_INVALID_SIZE
        case .invalidArgument: IPC_HEAP_ERROR_INVALID_ARGUMENT
        case .permissionDenied: IPC_HEAP_ERROR_PERMISSION_DENIED
        case .incompatible: IPC_HEAP_ERROR_INCOMPATIBLE
        case .corrupt: IPC_HEAP_ERROR_CORRUPT
        case .closed: IPC_HEAP_ERROR_CLOSED
        case .encodingFailed: IPC_HEAP_ERROR_ENCODING_FAILED
        case .decodingFailed: IPC_HEAP_ERROR_DECODING_FAILED
        case .timedOut: IPC_HEAP_ERROR_TIMED_OUT
        case .wouldBlock: IPC_HEAP_ERROR_WOULD_BLOCK
        case .cancelled: IPC_HEAP_ERROR_CANCELLED
        case .ownerDied: IPC_HEAP_ERROR_OWNER_DIED
        case .notOwner: IPC_HEAP_ERROR_NOT_OWNER
        case .systemError: IPC_HEAP_ERROR_SYSTEM
        case .disconnected: IPC_HEAP_ERROR_DISCONNECTED
        case .connectionRefused: IPC_HEAP_ERROR_CONNECTION_REFUSED
        case .invalidPointer: IPC_HEAP_ERROR_INVALID_POINTER
        default: IPC_HEAP_ERROR_UNKNOWN
        }
    }

    /// Records `error` as the calling thread's last error and returns its code.
    @discardableResult
    static func fail(_ error: InterprocessError) -> ipc_heap_error {
        let code = errorCode(error.code)
        error.description.withCString { ipc_heap_internal_failed(code, $0) }
        return code
    }

    @discardableResult
    static func fail(_ code: InterprocessError.Code, _ detail: String) -> ipc_heap_error {
        fail(InterprocessError(code, detail: detail))
    }

    /// Runs `body` on the heap behind `handle` (no retain/release: the caller keeps the handle open
    /// for the call, as the header requires), recording the outcome; `failure` if it throws or
    /// `handle` is NULL.
    @inline(__always)
    static func with<R>(_ handle: OpaquePointer?, failure: R, _ body: (SharedHeap) throws(InterprocessError) -> R) -> R {
        guard let handle else {
            fail(.invalidArgument, "no heap (NULL)")
            return failure
        }
        return Unmanaged<SharedHeap>.fromOpaque(UnsafeRawPointer(handle))._withUnsafeGuaranteedRef { heap in
            do throws(InterprocessError) {
                let result = try body(heap)
                ipc_heap_internal_succeeded()
                return result
            } catch {
                fail(error)
                return failure
            }
        }
    }

    /// A C size as a Swift count: sizes beyond `Int.max` cannot be allocated.
    @inline(__always)
    static func byteCount(_ size: Int) throws(InterprocessError) -> Int {
        guard size >= 0 else { throw InterprocessError(.outOfMemory, detail: "\(UInt(bitPattern: size)) bytes is more than any heap can hold") }
        return size
    }

    /// A C string as a heap name.
    static func name(_ name: UnsafePointer<CChar>?) throws(InterprocessError) -> String {
        guard let name else { throw InterprocessError(.invalidArgument, detail: "no name (NULL)") }
        guard let string = String(validatingCString: name) else { throw InterprocessError(.invalidName, detail: "the name is not UTF-8") }
        return string
    }

    /// The capacities and lifetime of a create call.
    static func creation(capacity: Int, maximumCapacity: Int, flags: UInt32) throws(InterprocessError) -> (Int, Int?, Lifetime) {
        guard flags & ~IPC_HEAP_PERSISTENT == 0 else {
            throw InterprocessError(.invalidArgument, detail: "unknown flags 0x\(String(flags, radix: 16))")
        }
        guard capacity >= 0, maximumCapacity >= 0 else { throw InterprocessError(.invalidSize, detail: "a capacity beyond \(Int.max) bytes") }
        return (capacity, maximumCapacity == 0 ? nil : maximumCapacity, flags & IPC_HEAP_PERSISTENT != 0 ? .persistent : .whileReferenced)
    }

    /// Stores a new handle for `heap` (retained until `ipc_heap_close`).
    static func handle(_ heap: SharedHeap) -> OpaquePointer {
        OpaquePointer(Unmanaged.passRetained(heap).toOpaque())
    }

    /// Runs an open or create call: stores the handle (or NULL) and returns the code.
    static func open(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ body: () throws(InterprocessError) -> SharedHeap) -> ipc_heap_error {
        guard let out else { return fail(.invalidArgument, "no place for the handle (NULL)") }
        out.pointee = nil
        do throws(InterprocessError) {
            out.pointee = handle(try body())
            ipc_heap_internal_succeeded()
            return IPC_HEAP_OK
        } catch {
            return fail(error)
        }
    }
}

// MARK: - Heaps

/// `ipc_heap_create` (interprocess_heap.h): ``SharedHeap/create(name:capacity:maximumCapacity:permissions:lifetime:)``.
@_cdecl("ipc_heap_create")
public func ipcHeapCreate(
    _ name: UnsafePointer<CChar>?, _ capacity: Int, _ maximumCapacity: Int, _ flags: UInt32, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> ipc_heap_error {
    HeapCABI.open(out) { () throws(InterprocessError) in
        let (capacity, maximum, lifetime) = try HeapCABI.creation(capacity: capacity, maximumCapacity: maximumCapacity, flags: flags)
        return try SharedHeap.create(name: try HeapCABI.name(name), capacity: capacity, maximumCapacity: maximum, lifetime: lifetime)
    }
}

/// `ipc_heap_open` (interprocess_heap.h): ``SharedHeap/open(name:trusting:)``.
@_cdecl("ipc_heap_open")
public func ipcHeapOpen(_ name: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> ipc_heap_error {
    HeapCABI.open(out) { () throws(InterprocessError) in try SharedHeap.open(name: try HeapCABI.name(name)) }
}

/// `ipc_heap_open_or_create` (interprocess_heap.h): ``SharedHeap/openOrCreate(name:capacity:maximumCapacity:permissions:lifetime:trusting:)``.
@_cdecl("ipc_heap_open_or_create")
public func ipcHeapOpenOrCreate(
    _ name: UnsafePointer<CChar>?, _ capacity: Int, _ maximumCapacity: Int, _ flags: UInt32,
    _ out: UnsafeMutablePointer<OpaquePointer?>?, _ created: UnsafeMutablePointer<CInt>?
) -> ipc_heap_error {
    created?.pointee = 0
    return HeapCABI.open(out) { () throws(InterprocessError) in
        let (capacity, maximum, lifetime) = try HeapCABI.creation(capacity: capacity, maximumCapacity: maximumCapacity, flags: flags)
        let (heap, wasCreated) = try SharedHeap.openOrCreate(
            name: try HeapCABI.name(name), capacity: capacity, maximumCapacity: maximum, lifetime: lifetime)
        created?.pointee = wasCreated ? 1 : 0
        return heap
    }
}

/// `ipc_heap_close` (interprocess_heap.h): ``SharedHeap/close()``, and the handle is released.
@_cdecl("ipc_heap_close")
public func ipcHeapClose(_ handle: OpaquePointer?) {
    guard let handle else {
        ipc_heap_internal_succeeded()
        return
    }
    let heap = Unmanaged<SharedHeap>.fromOpaque(UnsafeRawPointer(handle))
    heap.takeUnretainedValue().close()
    heap.release()
    ipc_heap_internal_succeeded()
}

/// `ipc_heap_remove` (interprocess_heap.h): ``SharedHeap/remove(name:)``.
@_cdecl("ipc_heap_remove")
public func ipcHeapRemove(_ name: UnsafePointer<CChar>?) -> ipc_heap_error {
    do throws(InterprocessError) {
        try SharedHeap.remove(name: try HeapCABI.name(name))
        ipc_heap_internal_succeeded()
        return IPC_HEAP_OK
    } catch {
        return HeapCABI.fail(error)
    }
}

// MARK: - malloc & co.

/// `ipc_heap_malloc` (interprocess_heap.h).
@_cdecl("ipc_heap_malloc")
public func ipcHeapMalloc(_ handle: OpaquePointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    HeapCABI.with(handle, failure: nil) { heap throws(InterprocessError) in
        try heap.allocateAddress(byteCount: try HeapCABI.byteCount(size), alignment: 16)
    }
}

/// `ipc_heap_calloc` (interprocess_heap.h): the bytes are zero; `count × size` overflowing is
/// `IPC_HEAP_ERROR_OUT_OF_MEMORY`.
@_cdecl("ipc_heap_calloc")
public func ipcHeapCalloc(_ handle: OpaquePointer?, _ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    HeapCABI.with(handle, failure: nil) { heap throws(InterprocessError) in
        let (total, overflow) = UInt(bitPattern: count).multipliedReportingOverflow(by: UInt(bitPattern: size))
        guard !overflow, total <= UInt(Int.max) else {
            throw InterprocessError(.outOfMemory, detail: "\(UInt(bitPattern: count)) × \(UInt(bitPattern: size)) bytes is more than any heap can hold")
        }
        return try heap.allocateAddress(byteCount: Int(total), alignment: 16, zeroed: true)
    }
}

/// `ipc_heap_realloc` (interprocess_heap.h): NULL allocates, size 0 frees and returns NULL.
@_cdecl("ipc_heap_realloc")
public func ipcHeapRealloc(_ handle: OpaquePointer?, _ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    HeapCABI.with(handle, failure: nil) { heap throws(InterprocessError) in
        try reallocate(heap, pointer, size: size, alignment: 16)
    }
}

/// `ipc_heap_free` (interprocess_heap.h): NULL does nothing; a pointer that is not a live block of
/// the heap is rejected (`IPC_HEAP_ERROR_INVALID_POINTER`) and nothing is freed.
@_cdecl("ipc_heap_free")
public func ipcHeapFree(_ handle: OpaquePointer?, _ pointer: UnsafeMutableRawPointer?) {
    HeapCABI.with(handle, failure: ()) { heap throws(InterprocessError) in try heap.deallocate(address: pointer) }
}

/// `ipc_heap_aligned_alloc` (interprocess_heap.h): `alignment` a power of two up to 4096.
@_cdecl("ipc_heap_aligned_alloc")
public func ipcHeapAlignedAlloc(_ handle: OpaquePointer?, _ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    HeapCABI.with(handle, failure: nil) { heap throws(InterprocessError) in
        try heap.allocateAddress(byteCount: try HeapCABI.byteCount(size), alignment: try checkedAlignment(alignment))
    }
}

/// `ipc_heap_usable_size` (interprocess_heap.h).
@_cdecl("ipc_heap_usable_size")
public func ipcHeapUsableSize(_ handle: OpaquePointer?, _ pointer: UnsafeRawPointer?) -> Int {
    HeapCABI.with(handle, failure: 0) { heap throws(InterprocessError) in
        guard let pointer else { throw InterprocessError(.invalidPointer, objectName: heap.name, detail: "NULL") }
        return try heap.byteCount(atAddress: pointer)
    }
}

// MARK: - Between processes

/// `ipc_heap_to_shared` (interprocess_heap.h): the block's ``SharedPointer`` word.
@_cdecl("ipc_heap_to_shared")
public func ipcHeapToShared(_ handle: OpaquePointer?, _ pointer: UnsafeRawPointer?) -> UInt64 {
    HeapCABI.with(handle, failure: 0) { heap throws(InterprocessError) in
        guard let pointer else { throw InterprocessError(.invalidPointer, objectName: heap.name, detail: "NULL") }
        return try heap.sharedPointer(forAddress: pointer).bitPattern
    }
}

/// `ipc_heap_from_shared` (interprocess_heap.h): this process's address of a ``SharedPointer`` word.
@_cdecl("ipc_heap_from_shared")
public func ipcHeapFromShared(_ handle: OpaquePointer?, _ shared: UInt64) -> UnsafeMutableRawPointer? {
    HeapCABI.with(handle, failure: nil) { heap throws(InterprocessError) in
        try heap.address(of: SharedPointer<UInt8>(bitPattern: shared))
    }
}

/// `ipc_heap_check` (interprocess_heap.h): ``SharedHeap/check()``, as a count of problems.
@_cdecl("ipc_heap_check")
public func ipcHeapCheck(_ handle: OpaquePointer?) -> Int64 {
    HeapCABI.with(handle, failure: -1) { heap throws(InterprocessError) in Int64(try heap.check().problems.count) }
}

// MARK: - Vulkan-style callbacks

/// `ipc_heap_allocation_callback` (interprocess_heap.h): `PFN_vkAllocationFunction` with the heap
/// as `pUserData`.
@_cdecl("ipc_heap_allocation_callback")
public func ipcHeapAllocationCallback(_ userData: UnsafeMutableRawPointer?, _ size: Int, _ alignment: Int, _ scope: CInt) -> UnsafeMutableRawPointer? {
    HeapCABI.with(OpaquePointer(userData), failure: nil) { heap throws(InterprocessError) in
        try heap.allocateAddress(byteCount: try HeapCABI.byteCount(size), alignment: try checkedAlignment(alignment))
    }
}

/// `ipc_heap_reallocation_callback` (interprocess_heap.h): `PFN_vkReallocationFunction` with the
/// heap as `pUserData`.
@_cdecl("ipc_heap_reallocation_callback")
public func ipcHeapReallocationCallback(
    _ userData: UnsafeMutableRawPointer?, _ original: UnsafeMutableRawPointer?, _ size: Int, _ alignment: Int, _ scope: CInt
) -> UnsafeMutableRawPointer? {
    HeapCABI.with(OpaquePointer(userData), failure: nil) { heap throws(InterprocessError) in
        try reallocate(heap, original, size: size, alignment: try checkedAlignment(alignment))
    }
}

/// `ipc_heap_free_memory_callback` (interprocess_heap.h): `PFN_vkFreeFunction` with the heap as
/// `pUserData`.
@_cdecl("ipc_heap_free_memory_callback")
public func ipcHeapFreeMemoryCallback(_ userData: UnsafeMutableRawPointer?, _ memory: UnsafeMutableRawPointer?) {
    HeapCABI.with(OpaquePointer(userData), failure: ()) { heap throws(InterprocessError) in try heap.deallocate(address: memory) }
}

// MARK: - Shared by the entry points

/// realloc's rules: NULL allocates, size 0 frees and returns NULL.
@inline(__always)
private func reallocate(_ heap: SharedHeap, _ pointer: UnsafeMutableRawPointer?, size: Int, alignment: Int) throws(InterprocessError) -> UnsafeMutableRawPointer? {
    if size == 0, let pointer {
        try heap.deallocate(address: pointer)
        return nil
    }
    return try heap.reallocateAddress(pointer, byteCount: try HeapCABI.byteCount(size), alignment: alignment)
}

/// An alignment the heap takes: a power of two up to ``SharedHeap/maximumAlignment`` (smaller
/// than 16 is 16: every block is).
@inline(__always)
private func checkedAlignment(_ alignment: Int) throws(InterprocessError) -> Int {
    guard alignment > 0, alignment & (alignment &- 1) == 0, alignment <= SharedHeap.maximumAlignment else {
        throw InterprocessError(.invalidArgument, detail: "alignment \(UInt(bitPattern: alignment)) is not a power of two up to \(SharedHeap.maximumAlignment)")
    }
    return max(alignment, 16)
}

/// Never called: compiles only if every exported function has the type that the header's
/// function-pointer types give it.
private func signatureChecks() {
    let _: ipc_heap_malloc_function = ipcHeapMalloc
    let _: ipc_heap_calloc_function = ipcHeapCalloc
    let _: ipc_heap_realloc_function = ipcHeapRealloc
    let _: ipc_heap_free_function = ipcHeapFree
    let _: ipc_heap_aligned_alloc_function = ipcHeapAlignedAlloc
    let _: ipc_heap_usable_size_function = ipcHeapUsableSize
    let _: ipc_heap_to_shared_function = ipcHeapToShared
    let _: ipc_heap_from_shared_function = ipcHeapFromShared
    let _: ipc_heap_allocation_function = ipcHeapAllocationCallback
    let _: ipc_heap_reallocation_function = ipcHeapReallocationCallback
    let _: ipc_heap_free_callback = ipcHeapFreeMemoryCallback
    let _: @convention(c) (UnsafePointer<CChar>?, Int, Int, UInt32, UnsafeMutablePointer<OpaquePointer?>?) -> ipc_heap_error = ipcHeapCreate
    let _: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<OpaquePointer?>?) -> ipc_heap_error = ipcHeapOpen
    let _: @convention(c) (UnsafePointer<CChar>?, Int, Int, UInt32, UnsafeMutablePointer<OpaquePointer?>?, UnsafeMutablePointer<CInt>?) -> ipc_heap_error = ipcHeapOpenOrCreate
    let _: @convention(c) (OpaquePointer?) -> Void = ipcHeapClose
    let _: @convention(c) (OpaquePointer?) -> Int64 = ipcHeapCheck
    // The imported declarations of the header, against the same types.
    let _: @convention(c) (UnsafePointer<CChar>?, Int, Int, UInt32, UnsafeMutablePointer<OpaquePointer?>?) -> ipc_heap_error = ipc_heap_create
    let _: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<OpaquePointer?>?) -> ipc_heap_error = ipc_heap_open
    let _: @convention(c) (UnsafePointer<CChar>?, Int, Int, UInt32, UnsafeMutablePointer<OpaquePointer?>?, UnsafeMutablePointer<CInt>?) -> ipc_heap_error = ipc_heap_open_or_create
    let _: @convention(c) (OpaquePointer?) -> Void = ipc_heap_close
    let _: @convention(c) (UnsafePointer<CChar>?) -> ipc_heap_error = ipc_heap_remove
    let _: @convention(c) (UnsafePointer<CChar>?) -> ipc_heap_error = ipcHeapRemove
    let _: @convention(c) (OpaquePointer?) -> Int64 = ipc_heap_check
}
