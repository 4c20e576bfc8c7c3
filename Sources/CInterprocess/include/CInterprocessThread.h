// CInterprocess, thread-local part: what Swift cannot declare — a thread-local variable — for the
// shared heap's thread caches (Sources/Interprocess/Heap/HeapCache.swift). No logic.
#ifndef CINTERPROCESS_THREAD_H
#define CINTERPROCESS_THREAD_H

#ifdef __cplusplus
extern "C" {
#endif

/// Thread-local pointers, one per heap handle that caches (the handle takes an index for its life).
#define CIPC_THREAD_SLOTS 64u

/// Each thread's own array (defined in shim.c); reached through the two functions below, which
/// compile to one load or store relative to the thread pointer.
extern __thread void *cipc_thread_slots[CIPC_THREAD_SLOTS];

/// The calling thread's pointer at `index` (taken modulo CIPC_THREAD_SLOTS); NULL until it sets one.
static inline void *cipc_thread_slot(unsigned index) {
    return cipc_thread_slots[index % CIPC_THREAD_SLOTS];
}

/// Sets the calling thread's pointer at `index` (taken modulo CIPC_THREAD_SLOTS).
static inline void cipc_set_thread_slot(unsigned index, void *value) {
    cipc_thread_slots[index % CIPC_THREAD_SLOTS] = value;
}

#ifdef __cplusplus
}
#endif
#endif
