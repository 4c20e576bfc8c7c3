/*
 * Not part of the C ABI: what the Swift side of libInterprocessHeap calls to record the outcome of a
 * call on the calling thread (read back with ipc_heap_last_error and ipc_heap_last_error_message).
 * C programs include interprocess_heap.h only.
 */
#ifndef INTERPROCESS_HEAP_INTERNAL_H
#define INTERPROCESS_HEAP_INTERNAL_H

#include "interprocess_heap.h"

/* Records success on the calling thread. */
void ipc_heap_internal_succeeded(void);
/* Records a failure on the calling thread: its code and a message (copied, truncated to fit). */
void ipc_heap_internal_failed(ipc_heap_error code, const char *message);

#endif /* INTERPROCESS_HEAP_INTERNAL_H */
