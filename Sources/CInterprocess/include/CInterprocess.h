// CInterprocess: the C shim of Interprocess.
//
// Only what Swift cannot call itself (variadic fcntl and syscall, futex constants) and the C structs
// of layouts that other processes — and other languages — read. No logic lives here.
#ifndef CINTERPROCESS_H
#define CINTERPROCESS_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Segment header (layout version 1)
//
// Every Interprocess segment starts with this header; the payload starts at `payload_offset`
// (4096 in version 1). All integers are little-endian on the platforms we support. Fields that
// change after creation (`state`, the holder slots' `pid`) are accessed atomically through pointers.

/// "IPCSEGMT" read as a little-endian 64-bit integer.
#define CIPC_SEGMENT_MAGIC 0x544D474553435049ULL
#define CIPC_LAYOUT_VERSION 1u
#define CIPC_HEADER_SIZE 4096u
#define CIPC_NAME_CAPACITY 256u
#define CIPC_HOLDER_CAPACITY 64u

/// One process handle that holds the segment open. Free when `pid` is 0. Whether the holder is alive
/// is decided by the kernel: the holder keeps an open-file-description lock on byte
/// `CIPC_LOCK_SLOT_BASE + index` of the segment's file, which vanishes when the holder dies.
typedef struct cipc_holder_slot {
    uint32_t pid;          ///< holder's process id; 0 = free
    uint32_t reserved0;
    uint64_t start_time;   ///< holder's process start time (Linux: clock ticks since boot)
    uint64_t opened_ns;    ///< CLOCK_REALTIME nanoseconds when the handle was opened
    uint64_t reserved1;
} cipc_holder_slot;

typedef struct cipc_segment_header {
    uint64_t magic;              ///<   0: CIPC_SEGMENT_MAGIC
    uint32_t version;            ///<   8: CIPC_LAYOUT_VERSION
    uint32_t header_size;        ///<  12: bytes of this header (4096)
    uint32_t kind;               ///<  16: 1 raw, 2 heap, 3 channel, 16.. synchronization primitives
    uint32_t lifetime;           ///<  20: 1 while referenced, 2 persistent
    uint32_t state;              ///<  24: 0 initializing, 1 ready, 2 removed (atomic)
    uint32_t holder_capacity;    ///<  28: CIPC_HOLDER_CAPACITY
    uint64_t total_size;         ///<  32: size of the whole file in bytes
    uint64_t payload_offset;     ///<  40: where the payload starts (4096)
    uint64_t payload_size;       ///<  48: usable payload bytes
    uint64_t created_ns;         ///<  56: CLOCK_REALTIME nanoseconds at creation
    uint64_t creator_start_time; ///<  64: creator's process start time
    uint32_t creator_pid;        ///<  72
    uint32_t name_length;        ///<  76: bytes used in `name`
    uint64_t checksum;           ///<  80: FNV-1a 64 of bytes [0, 344) with `state` and `checksum` as 0
    uint8_t  name[CIPC_NAME_CAPACITY]; ///< 88: the segment's name (UTF-8, not NUL-terminated)
    uint8_t  reserved[2048 - 88 - CIPC_NAME_CAPACITY];
    cipc_holder_slot holders[CIPC_HOLDER_CAPACITY]; ///< 2048..4096
} cipc_segment_header;

_Static_assert(sizeof(cipc_holder_slot) == 32, "holder slot layout");
_Static_assert(sizeof(cipc_segment_header) == CIPC_HEADER_SIZE, "segment header layout");
_Static_assert(offsetof(cipc_segment_header, state) == 24, "state offset");
_Static_assert(offsetof(cipc_segment_header, name) == 88, "name offset");
_Static_assert(offsetof(cipc_segment_header, holders) == 2048, "holders offset");

// MARK: - Open-file-description locks (fcntl is variadic)

/// Lock commands: the open-file-description locks of Linux (F_OFD_*), or -1 where there are none.
extern const int cipc_F_OFD_GETLK;
extern const int cipc_F_OFD_SETLK;
extern const int cipc_F_OFD_SETLKW;

/// `fcntl(fd, cmd, &flock)` for a lock of `type` (F_RDLCK, F_WRLCK, F_UNLCK) on `[start, start+len)`.
/// Returns 0 or -1 with errno set. For a GETLK command, `*type_out` receives the type of a
/// conflicting lock or F_UNLCK.
int cipc_fcntl_lock(int fd, int cmd, short type, int64_t start, int64_t len, short *type_out);

// MARK: - Futex (syscall is variadic)

/// Waits while `*word == expected`, up to `timeout_ns` relative nanoseconds (negative: forever).
/// Shared (not private) futex, so that it works across processes. Returns 0 or -1 with errno
/// (EAGAIN: the word differed; ETIMEDOUT; EINTR).
int cipc_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/// Wakes up to `count` waiters parked on `word`. Returns the number woken or -1 with errno.
int cipc_futex_wake(uint32_t *word, int32_t count);

/// One entry of `cipc_futex_waitv` (the kernel's `struct futex_waitv`).
typedef struct cipc_futex_waiter {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
} cipc_futex_waiter;

/// Parks on up to 128 words at once (Linux 5.16+). `deadline_ns` is an absolute CLOCK_MONOTONIC
/// time (negative: forever). Returns the index of the woken entry, or -1 with errno
/// (EAGAIN: a word differed; ETIMEDOUT; EINTR; ENOSYS: no futex_waitv).
int cipc_futex_waitv(cipc_futex_waiter *waiters, uint32_t count, int64_t deadline_ns);

/// Flags of a 32-bit shared futex entry for `cipc_futex_waitv`.
extern const uint32_t cipc_FUTEX2_SIZE_U32;

/// The current thread's kernel thread id.
int32_t cipc_gettid(void);

/// A spin-loop hint (x86 `pause`, ARM `yield`).
static inline void cipc_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __cplusplus
}
#endif
#endif
