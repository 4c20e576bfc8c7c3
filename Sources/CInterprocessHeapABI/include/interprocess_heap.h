/*
 * interprocess_heap.h: the C ABI of Interprocess's SharedHeap.
 *
 * A heap in shared memory that many processes allocate from at once. Every block is an address in
 * the calling process (as malloc returns it); ipc_heap_to_shared turns it into a 64-bit word that
 * means the same block in every process that has the heap open (ipc_heap_from_shared turns it back),
 * so a block can be handed to another process through a pipe, a socket or the heap itself.
 *
 * Link with libInterprocessHeap.so (the SwiftPM product "InterprocessHeap"):
 *     swift build -c release --product InterprocessHeap
 *     cc app.c -I Sources/CInterprocessHeapABI/include -L .build/release -lInterprocessHeap \
 *        -Wl,-rpath,$PWD/.build/release
 *
 * Rules:
 *  - Every function is thread-safe. Each one that takes a heap or a name records on the calling
 *    thread whether it succeeded: ipc_heap_last_error() is IPC_HEAP_OK after a success, the reason
 *    after a failure (and ipc_heap_last_error_message() says more). Failure is a return value (NULL,
 *    0 or an error code), never a crash.
 *  - Allocation functions return NULL on failure: IPC_HEAP_ERROR_OUT_OF_MEMORY when no block fits
 *    and the heap is at its maximum capacity (the heap keeps working), IPC_HEAP_ERROR_INVALID_ARGUMENT
 *    for an alignment that is not a power of two up to IPC_HEAP_MAXIMUM_ALIGNMENT.
 *  - ipc_heap_free(heap, NULL) does nothing; ipc_heap_realloc(heap, NULL, n) allocates;
 *    ipc_heap_realloc(heap, p, 0) frees p and returns NULL (IPC_HEAP_OK). If a reallocation fails,
 *    the original block is unchanged and still the caller's.
 *  - A pointer that is not the start of a live block of this heap (freed already, from malloc, from
 *    another heap, the stack) is rejected by free, realloc and ipc_heap_to_shared with
 *    IPC_HEAP_ERROR_INVALID_POINTER: nothing is freed (an address inside a live block is caught
 *    unless the 16 bytes before it hold what looks like a live block's header). A 64-bit word that
 *    does not name a live block (stale, forged, garbage) is rejected by ipc_heap_from_shared the
 *    same way.
 *  - An address is valid in the process that got it, while it keeps the heap open. A heap handle is
 *    valid until ipc_heap_close (using it afterwards, from any thread, is undefined, as a pointer
 *    after free is); a NULL handle is IPC_HEAP_ERROR_INVALID_ARGUMENT.
 *  - Heaps are created readable and writable by the calling user only, and opened only if the
 *    calling user owns them (the Swift API has the options to share a heap with other users).
 *  - Every block is at least 16-byte aligned.
 */
#ifndef INTERPROCESS_HEAP_H
#define INTERPROCESS_HEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#define IPC_HEAP_STATIC_ASSERT(condition, message) static_assert(condition, message)
#define IPC_HEAP_ALIGNOF(type) alignof(type)
#else
#define IPC_HEAP_STATIC_ASSERT(condition, message) _Static_assert(condition, message)
#define IPC_HEAP_ALIGNOF(type) _Alignof(type)
#endif

/* A heap opened by this process (opaque). */
typedef struct ipc_heap ipc_heap;

/*
 * Error codes. The values are stable: new codes get new numbers, no number changes meaning.
 * Each names an InterprocessError.Code of the Swift library.
 */
typedef enum ipc_heap_error {
    IPC_HEAP_OK = 0,                         /* success */
    IPC_HEAP_ERROR_ALREADY_EXISTS = 1,       /* create: a heap (or another object) has that name */
    IPC_HEAP_ERROR_NOT_FOUND = 2,            /* open, remove: no heap of that name */
    IPC_HEAP_ERROR_CREATE_FAILED = 3,        /* the operating system refused to create it */
    IPC_HEAP_ERROR_OPEN_FAILED = 4,          /* the operating system refused to open or map it */
    IPC_HEAP_ERROR_OUT_OF_MEMORY = 5,        /* no block fits and the heap is at its maximum; or no room in /dev/shm */
    IPC_HEAP_ERROR_STAT_FAILED = 6,          /* the object's status could not be read */
    IPC_HEAP_ERROR_INVALID_NAME = 7,         /* empty, too long, '/' inside, not UTF-8 */
    IPC_HEAP_ERROR_INVALID_SIZE = 8,         /* a capacity out of range */
    IPC_HEAP_ERROR_INVALID_ARGUMENT = 9,     /* a NULL handle, a bad alignment, unknown flags */
    IPC_HEAP_ERROR_PERMISSION_DENIED = 10,   /* the caller may not open it, or does not trust its owner */
    IPC_HEAP_ERROR_INCOMPATIBLE = 11,        /* the name is not a heap, or of another layout version */
    IPC_HEAP_ERROR_CORRUPT = 12,             /* the heap's metadata is inconsistent (a peer scribbled on it) */
    IPC_HEAP_ERROR_CLOSED = 13,              /* the handle was closed */
    IPC_HEAP_ERROR_ENCODING_FAILED = 14,
    IPC_HEAP_ERROR_DECODING_FAILED = 15,
    IPC_HEAP_ERROR_TIMED_OUT = 16,
    IPC_HEAP_ERROR_WOULD_BLOCK = 17,
    IPC_HEAP_ERROR_CANCELLED = 18,
    IPC_HEAP_ERROR_OWNER_DIED = 19,
    IPC_HEAP_ERROR_NOT_OWNER = 20,
    IPC_HEAP_ERROR_SYSTEM = 21,              /* any other operating system failure */
    IPC_HEAP_ERROR_DISCONNECTED = 22,
    IPC_HEAP_ERROR_CONNECTION_REFUSED = 23,
    IPC_HEAP_ERROR_INVALID_POINTER = 24,     /* not a live block of this heap (stale, forged, foreign) */
    IPC_HEAP_ERROR_UNKNOWN = 255             /* a code newer than this header */
} ipc_heap_error;

/* The largest alignment the allocation functions accept. */
#define IPC_HEAP_MAXIMUM_ALIGNMENT 4096

/* Flags of ipc_heap_create and ipc_heap_open_or_create. */
#define IPC_HEAP_PERSISTENT 1u   /* the name stays until ipc_heap_remove (default: removed by the last closer) */

/* ---- Errors of the calling thread ---- */

/* The code of the last ipc_heap_* call on this thread (IPC_HEAP_OK if it succeeded). */
ipc_heap_error ipc_heap_last_error(void);
/* What went wrong in the last failed call on this thread, for people ("" after a success). Valid until
 * the thread's next ipc_heap_* call. */
const char *ipc_heap_last_error_message(void);
/* The name of a code ("ok", "out_of_memory", "invalid_pointer", ...); "unknown" for any other value. */
const char *ipc_heap_error_name(int code);

/* ---- Heaps ---- */

/* Creates the heap `name` with `capacity` bytes (rounded up to pages), growing up to
 * `maximum_capacity` bytes (0: never grows). Flags: 0 or IPC_HEAP_PERSISTENT. Stores the handle in
 * *out_heap and returns IPC_HEAP_OK, or returns an error and leaves *out_heap NULL. */
ipc_heap_error ipc_heap_create(const char *name, size_t capacity, size_t maximum_capacity, uint32_t flags,
                               ipc_heap **out_heap);
/* Opens the heap `name` that some process created (owned by the calling user). */
ipc_heap_error ipc_heap_open(const char *name, ipc_heap **out_heap);
/* Opens the heap `name`, or creates it if there is none; *out_created (if not NULL) tells which. */
ipc_heap_error ipc_heap_open_or_create(const char *name, size_t capacity, size_t maximum_capacity, uint32_t flags,
                                       ipc_heap **out_heap, int *out_created);
/* Closes the handle (NULL: nothing). The last process to close a heap that is not persistent removes
 * it. Addresses of its blocks become invalid in this process; the blocks stay allocated. */
void ipc_heap_close(ipc_heap *heap);
/* Removes the name of a heap (persistent or not): processes that have it open go on using it. */
ipc_heap_error ipc_heap_remove(const char *name);

/* ---- Allocation: malloc & co. with the heap first ---- */

void *ipc_heap_malloc(ipc_heap *heap, size_t size);
void *ipc_heap_calloc(ipc_heap *heap, size_t count, size_t size);
void *ipc_heap_realloc(ipc_heap *heap, void *pointer, size_t size);
void ipc_heap_free(ipc_heap *heap, void *pointer);
/* `alignment`: a power of two up to IPC_HEAP_MAXIMUM_ALIGNMENT (any `size`). */
void *ipc_heap_aligned_alloc(ipc_heap *heap, size_t alignment, size_t size);
/* The bytes the block at `pointer` holds (what it was allocated or reallocated with); 0 and
 * IPC_HEAP_ERROR_INVALID_POINTER if it is not a live block of this heap. */
size_t ipc_heap_usable_size(ipc_heap *heap, const void *pointer);

/* ---- Blocks between processes ---- */

/* The 64-bit word that names the block at `pointer` in every process (Swift's SharedPointer);
 * 0 if `pointer` is NULL or not a live block of this heap. */
uint64_t ipc_heap_to_shared(ipc_heap *heap, const void *pointer);
/* This process's address of the block a word names; NULL if `shared` is 0 or not a live block. */
void *ipc_heap_from_shared(ipc_heap *heap, uint64_t shared);

/* ---- Inspection ---- */

/* Walks the whole heap: the number of inconsistencies found (0: consistent), or -1 on failure. */
int64_t ipc_heap_check(ipc_heap *heap);

/* ---- The same functions as plain function pointers ---- */

typedef void *(*ipc_heap_malloc_function)(ipc_heap *heap, size_t size);
typedef void *(*ipc_heap_calloc_function)(ipc_heap *heap, size_t count, size_t size);
typedef void *(*ipc_heap_realloc_function)(ipc_heap *heap, void *pointer, size_t size);
typedef void (*ipc_heap_free_function)(ipc_heap *heap, void *pointer);
typedef void *(*ipc_heap_aligned_alloc_function)(ipc_heap *heap, size_t alignment, size_t size);
typedef size_t (*ipc_heap_usable_size_function)(ipc_heap *heap, const void *pointer);
typedef uint64_t (*ipc_heap_to_shared_function)(ipc_heap *heap, const void *pointer);
typedef void *(*ipc_heap_from_shared_function)(ipc_heap *heap, uint64_t shared);

/* A table of the allocation functions, for code that takes an allocator as function pointers. Later
 * versions only add fields at the end. */
typedef struct ipc_heap_functions {
    ipc_heap_malloc_function malloc;
    ipc_heap_calloc_function calloc;
    ipc_heap_realloc_function realloc;
    ipc_heap_free_function free;
    ipc_heap_aligned_alloc_function aligned_alloc;
    ipc_heap_usable_size_function usable_size;
    ipc_heap_to_shared_function to_shared;
    ipc_heap_from_shared_function from_shared;
} ipc_heap_functions;

/* The table (static: never freed). */
const ipc_heap_functions *ipc_heap_get_functions(void);

/* ---- Vulkan-style allocation callbacks ---- */

/*
 * Laid out like VkAllocationCallbacks (checked below without the Vulkan headers): a pointer to one
 * can be passed where Vulkan wants `const VkAllocationCallbacks *`. `scope` is a
 * VkSystemAllocationScope (a C enum, int-sized); the heap ignores it. The function pointers follow
 * Vulkan's rules: allocation and reallocation honour `alignment` (a power of two, at most
 * IPC_HEAP_MAXIMUM_ALIGNMENT) and return NULL when they cannot; reallocation of NULL allocates,
 * reallocation to size 0 frees and returns NULL, a failed reallocation leaves the original alone;
 * free of NULL does nothing. The internal notifications are NULL. (Vulkan declares its callbacks
 * VKAPI_PTR, which is the C calling convention on every 64-bit platform; only 32-bit ARM differs.)
 */
typedef void *(*ipc_heap_allocation_function)(void *user_data, size_t size, size_t alignment, int scope);
typedef void *(*ipc_heap_reallocation_function)(void *user_data, void *original, size_t size, size_t alignment, int scope);
typedef void (*ipc_heap_free_callback)(void *user_data, void *memory);
typedef void (*ipc_heap_internal_allocation_notification)(void *user_data, size_t size, int type, int scope);
typedef void (*ipc_heap_internal_free_notification)(void *user_data, size_t size, int type, int scope);

typedef struct ipc_heap_allocation_callbacks {
    void *pUserData;                                                   /* the ipc_heap */
    ipc_heap_allocation_function pfnAllocation;
    ipc_heap_reallocation_function pfnReallocation;
    ipc_heap_free_callback pfnFree;
    ipc_heap_internal_allocation_notification pfnInternalAllocation;   /* NULL */
    ipc_heap_internal_free_notification pfnInternalFree;               /* NULL */
} ipc_heap_allocation_callbacks;

/* VkAllocationCallbacks: six pointers, in this order, nothing else. */
IPC_HEAP_STATIC_ASSERT(sizeof(ipc_heap_allocation_callbacks) == 6 * sizeof(void *), "layout of VkAllocationCallbacks");
IPC_HEAP_STATIC_ASSERT(IPC_HEAP_ALIGNOF(ipc_heap_allocation_callbacks) == IPC_HEAP_ALIGNOF(void *), "alignment of VkAllocationCallbacks");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pUserData) == 0 * sizeof(void *), "VkAllocationCallbacks.pUserData");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pfnAllocation) == 1 * sizeof(void *), "VkAllocationCallbacks.pfnAllocation");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pfnReallocation) == 2 * sizeof(void *), "VkAllocationCallbacks.pfnReallocation");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pfnFree) == 3 * sizeof(void *), "VkAllocationCallbacks.pfnFree");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pfnInternalAllocation) == 4 * sizeof(void *), "VkAllocationCallbacks.pfnInternalAllocation");
IPC_HEAP_STATIC_ASSERT(offsetof(ipc_heap_allocation_callbacks, pfnInternalFree) == 5 * sizeof(void *), "VkAllocationCallbacks.pfnInternalFree");
/* VkSystemAllocationScope, VkInternalAllocationType: C enums, passed as int. */
IPC_HEAP_STATIC_ASSERT(sizeof(int) == 4, "Vulkan's enums are 32-bit");

/* Fills *callbacks with the heap's allocation callbacks (pUserData = heap). */
void ipc_heap_get_allocation_callbacks(ipc_heap *heap, ipc_heap_allocation_callbacks *callbacks);

/* The callbacks themselves, for code that wants them one by one. */
void *ipc_heap_allocation_callback(void *user_data, size_t size, size_t alignment, int scope);
void *ipc_heap_reallocation_callback(void *user_data, void *original, size_t size, size_t alignment, int scope);
void ipc_heap_free_memory_callback(void *user_data, void *memory);

#ifdef __cplusplus
}
#endif

#endif /* INTERPROCESS_HEAP_H */
