/*
 * The part of the heap's C ABI that is plain C: the calling thread's last error, the names of the
 * codes, and the two tables of function pointers. Everything that touches a heap is Swift
 * (Sources/InterprocessHeapABI), exported under the names interprocess_heap.h declares; initializing
 * the tables here makes the C compiler check each of those declarations against its function-pointer
 * type.
 */
#include "interprocess_heap_internal.h"

#include <string.h>

/* The outcome of the calling thread's last call; the message counts only after a failure (a success
 * writes one word: it is on the path of every malloc and free). */
static _Thread_local ipc_heap_error last_error = IPC_HEAP_OK;
static _Thread_local char last_message[256];

void ipc_heap_internal_succeeded(void) { last_error = IPC_HEAP_OK; }

void ipc_heap_internal_failed(ipc_heap_error code, const char *message) {
    last_error = code;
    size_t length = message ? strlen(message) : 0;
    if (length >= sizeof last_message) {
        length = sizeof last_message - 1;
        /* Never cut a UTF-8 sequence in two: back off over continuation bytes. */
        while (length > 0 && ((unsigned char)message[length] & 0xC0) == 0x80) length--;
    }
    if (length > 0) memcpy(last_message, message, length);
    last_message[length] = 0;
}

ipc_heap_error ipc_heap_last_error(void) { return last_error; }

const char *ipc_heap_last_error_message(void) { return last_error == IPC_HEAP_OK ? "" : last_message; }

const char *ipc_heap_error_name(int code) {
    switch (code) {
    case IPC_HEAP_OK: return "ok";
    case IPC_HEAP_ERROR_ALREADY_EXISTS: return "already_exists";
    case IPC_HEAP_ERROR_NOT_FOUND: return "not_found";
    case IPC_HEAP_ERROR_CREATE_FAILED: return "create_failed";
    case IPC_HEAP_ERROR_OPEN_FAILED: return "open_failed";
    case IPC_HEAP_ERROR_OUT_OF_MEMORY: return "out_of_memory";
    case IPC_HEAP_ERROR_STAT_FAILED: return "stat_failed";
    case IPC_HEAP_ERROR_INVALID_NAME: return "invalid_name";
    case IPC_HEAP_ERROR_INVALID_SIZE: return "invalid_size";
    case IPC_HEAP_ERROR_INVALID_ARGUMENT: return "invalid_argument";
    case IPC_HEAP_ERROR_PERMISSION_DENIED: return "permission_denied";
    case IPC_HEAP_ERROR_INCOMPATIBLE: return "incompatible";
    case IPC_HEAP_ERROR_CORRUPT: return "corrupt";
    case IPC_HEAP_ERROR_CLOSED: return "closed";
    case IPC_HEAP_ERROR_ENCODING_FAILED: return "encoding_failed";
    case IPC_HEAP_ERROR_DECODING_FAILED: return "decoding_failed";
    case IPC_HEAP_ERROR_TIMED_OUT: return "timed_out";
    case IPC_HEAP_ERROR_WOULD_BLOCK: return "would_block";
    case IPC_HEAP_ERROR_CANCELLED: return "cancelled";
    case IPC_HEAP_ERROR_OWNER_DIED: return "owner_died";
    case IPC_HEAP_ERROR_NOT_OWNER: return "not_owner";
    case IPC_HEAP_ERROR_SYSTEM: return "system_error";
    case IPC_HEAP_ERROR_DISCONNECTED: return "disconnected";
    case IPC_HEAP_ERROR_CONNECTION_REFUSED: return "connection_refused";
    case IPC_HEAP_ERROR_INVALID_POINTER: return "invalid_pointer";
    default: return "unknown";
    }
}

static const ipc_heap_functions functions = {
    .malloc = ipc_heap_malloc,
    .calloc = ipc_heap_calloc,
    .realloc = ipc_heap_realloc,
    .free = ipc_heap_free,
    .aligned_alloc = ipc_heap_aligned_alloc,
    .usable_size = ipc_heap_usable_size,
    .to_shared = ipc_heap_to_shared,
    .from_shared = ipc_heap_from_shared,
};

const ipc_heap_functions *ipc_heap_get_functions(void) { return &functions; }

void ipc_heap_get_allocation_callbacks(ipc_heap *heap, ipc_heap_allocation_callbacks *callbacks) {
    if (!callbacks) {
        ipc_heap_internal_failed(IPC_HEAP_ERROR_INVALID_ARGUMENT, "no callbacks structure to fill");
        return;
    }
    callbacks->pUserData = heap;
    callbacks->pfnAllocation = ipc_heap_allocation_callback;
    callbacks->pfnReallocation = ipc_heap_reallocation_callback;
    callbacks->pfnFree = ipc_heap_free_memory_callback;
    callbacks->pfnInternalAllocation = NULL;
    callbacks->pfnInternalFree = NULL;
    if (heap) ipc_heap_internal_succeeded();
    else ipc_heap_internal_failed(IPC_HEAP_ERROR_INVALID_ARGUMENT, "no heap (NULL)");
}
