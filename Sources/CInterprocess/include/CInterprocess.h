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
#include "CInterprocessLocal.h"

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

// The robust mutex (used by the table of placed objects below, and placed or named by users).
/// A robust mutex. `owner`: 0 when unlocked, else the owner's token, set by a single
/// compare-and-swap so that the owner's identity is never half-written; its low 32 bits are the
/// futex word waiters park on. Bit 31 (CIPC_TOKEN_FLAG) is *contended*: a waiter sets it before it
/// parks; unlock exchanges `owner` with 0 and wakes one waiter only if the bit was set; a waiter
/// that parked takes the lock with the bit set. So a waiter killed while parked costs at most one
/// spare wake-up call.
typedef struct cipc_mutex {
    uint64_t owner;         ///<  0
    uint32_t waiters;       ///<  8: threads parked or about to park (informational: wakes are
                            ///<     decided by the contended bit; too high after a parked waiter died)
    uint32_t inconsistent;  ///< 12: 1 after an owner died, until markConsistent()
    uint32_t owner_tid;     ///< 16: informational (the owner's thread id, 0 if unknown)
    uint32_t tag;           ///< 20: CIPC_TAG_MUTEX
    uint64_t recoveries;    ///< 24: how many times a dead owner's lock was taken over
    uint8_t  reserved[32];
} cipc_mutex;

// MARK: - The table of placed objects (in the header of a raw segment)
//
// What is placed where in a raw segment's payload: one entry per object placed in it (a mutex, a
// semaphore, an atomic, …: the object's tag says which kind) and one for the value frame that
// `store` / `write` keep at offset 0 (tag CIPC_TAG_STORED_VALUE; the entry covers the frame's whole
// extent, cipc_value_frame and both slots: see CInterprocessValue.h). Entries never overlap. It lives in what
// layout version 1 reserved (zero), so a segment whose table was never used reads as an empty table
// (`format` 0), and the header's checksum does not cover it (it changes). Changes are made under
// `lock` (a robust cipc_mutex): whoever takes the lock over from a holder that died repairs the
// entry it left half-made (state 1: placed if the object's tag was published, else free).

#define CIPC_PLACEMENT_CAPACITY 24u
#define CIPC_PLACEMENT_NAME_CAPACITY 32u
#define CIPC_PLACEMENT_FORMAT 1u
/// The tag of the table entry of the value frame that `store` / `write` keep at offset 0.
#define CIPC_TAG_STORED_VALUE 0x314C4156u /* "VAL1" */

/// One placed object. `state`: 0 free, 1 being placed (by the lock's holder), 2 placed.
typedef struct cipc_placement {
    uint64_t offset;       ///<  0: from the start of the payload
    uint64_t size;         ///<  8: bytes (at least 1)
    uint32_t state;        ///< 16: 0 free, 1 being placed, 2 placed (atomic)
    uint32_t tag;          ///< 20: the object's tag (CIPC_TAG_MUTEX, …, CIPC_TAG_STORED_VALUE)
    uint32_t name_length;  ///< 24: bytes of `name` (0: placed at an offset, without a name)
    uint32_t tag_offset;   ///< 28: where the tag is in the object's state (what a repair reads)
    uint8_t  name[CIPC_PLACEMENT_NAME_CAPACITY]; ///< 32: the object's name in the segment (UTF-8), zero-padded
} cipc_placement;

typedef struct cipc_placement_table {
    cipc_mutex lock;       ///<   0: held while entries change (defined below; 64 bytes)
    uint32_t format;       ///<  64: 0 never used (every entry free), 1 this layout
    uint32_t capacity;     ///<  68: CIPC_PLACEMENT_CAPACITY once `format` is 1
    uint8_t  reserved[56]; ///<  72: zero
    cipc_placement entries[CIPC_PLACEMENT_CAPACITY]; ///< 128..1664
} cipc_placement_table;

typedef struct cipc_segment_header {
    uint64_t magic;              ///<   0: CIPC_SEGMENT_MAGIC
    uint32_t version;            ///<   8: CIPC_LAYOUT_VERSION
    uint32_t header_size;        ///<  12: bytes of this header (4096)
    uint32_t kind;               ///<  16: CIPC_KIND_* (1 raw, 2 heap, 3 channel, 4 broadcast, 5 message queue, 16.. synchronization primitives)
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
    uint8_t  reserved[40];       ///< 344: zero
    cipc_placement_table placements; ///< 384..2048: what is placed where in a raw segment's payload
    cipc_holder_slot holders[CIPC_HOLDER_CAPACITY]; ///< 2048..4096
} cipc_segment_header;

/// What a segment holds (the header's `kind` field). Opening a segment as another kind is an error.
#define CIPC_KIND_RAW       1u  /* SharedMemory: bytes */
#define CIPC_KIND_HEAP      2u  /* reserved: a shared heap */
#define CIPC_KIND_CHANNEL   3u  /* one cipc_channel and its slots (CInterprocessChannel.h) */
#define CIPC_KIND_BROADCAST 4u  /* one cipc_broadcast, its subscribers and slots (CInterprocessBroadcast.h) */
/* CIPC_KIND_MQUEUE (5): CInterprocessMessageQueue.h */
#define CIPC_KIND_SERVICE   6u  /* one cipc_service, its request queue and reply slots (CInterprocessService.h) */
#define CIPC_KIND_MUTEX     16u /* one cipc_mutex at the payload offset */
#define CIPC_KIND_SEMAPHORE 17u /* one cipc_semaphore */
#define CIPC_KIND_EVENT     18u /* one cipc_event */
#define CIPC_KIND_CONDITION 19u /* one cipc_condition */
#define CIPC_KIND_RWLOCK    20u /* one cipc_rwlock */
#define CIPC_KIND_VARIABLE  21u /* one cipc_variable_header and its value */
#define CIPC_KIND_ATOMIC    22u /* one cipc_atomic */
#define CIPC_KIND_WATCHED_VALUE 23u /* one cipc_watched_value and its frame's slots (CInterprocessValue.h) */

// Every layout in this file is pinned, field by field (size, alignment, offset), by the Swift test
// Tests/InterprocessTests/LayoutTests.swift, which also checks the README's tables against it: moving
// a field is a deliberate, versioned change (a new CIPC_LAYOUT_VERSION or a new tag), made here, in
// that test and in the README together.

_Static_assert(sizeof(cipc_holder_slot) == 32, "holder slot layout");
_Static_assert(sizeof(cipc_segment_header) == CIPC_HEADER_SIZE, "segment header layout");
_Static_assert(offsetof(cipc_segment_header, state) == 24, "state offset");
_Static_assert(offsetof(cipc_segment_header, name) == 88, "name offset");
_Static_assert(offsetof(cipc_segment_header, holders) == 2048, "holders offset");
_Static_assert(sizeof(cipc_placement) == 64 && offsetof(cipc_placement, tag) == 20, "placement layout");
_Static_assert(offsetof(cipc_placement, state) == 16 && offsetof(cipc_placement, name) == 32, "placement offsets");
_Static_assert(sizeof(cipc_placement_table) == 1664, "placement table layout");
_Static_assert(offsetof(cipc_placement_table, format) == 64 && offsetof(cipc_placement_table, entries) == 128, "placement table offsets");
_Static_assert(offsetof(cipc_segment_header, placements) == 384, "placements offset");

// MARK: - Type fingerprints
//
// A typed object (a shared variable's value; a channel's message next) records what type it holds,
// so that opening it as another type is an error (`incompatible`) even when the sizes agree. The
// creator writes the fingerprint before the object is published; every opener compares all of it
// with its own. A program in another language passes the fingerprint its Swift peers use: the type
// name as Swift prints it (`String(reflecting:)`, e.g. "Swift.UInt64", "MyApp.Job"; a private or
// local type's "(unknown context at $…)" reads "(unknown context)"), or whatever name both sides
// agree on, with the value's size, alignment and a version number.

#define CIPC_TYPE_NAME_CAPACITY 104u

typedef struct cipc_type_fingerprint {
    uint64_t name_hash;    ///<  0: FNV-1a 64 of the whole type name (all `name_length` bytes)
    uint32_t size;         ///<  8: bytes of one value
    uint32_t alignment;    ///< 12: its alignment (a power of 2)
    uint32_t version;      ///< 16: the version its user gave the type's layout (0 unless given)
    uint32_t name_length;  ///< 20: bytes of the type name (UTF-8), 1..CIPC_TYPE_NAME_MAX
    uint8_t  name[CIPC_TYPE_NAME_CAPACITY]; ///< 24: the name's first bytes (all of it if it fits), zero-padded
} cipc_type_fingerprint;

/// The longest type name a fingerprint describes.
#define CIPC_TYPE_NAME_MAX 4096u

_Static_assert(sizeof(cipc_type_fingerprint) == 128, "type fingerprint layout");

// MARK: - Synchronization primitives (64 bytes each — a reader-writer lock 576, a shared variable a
// 448-byte header and its value — 8-byte aligned; 64-byte alignment recommended)
//
// Each primitive's shared state is one of these structs, in a named segment of its own (at the
// payload offset) or anywhere in memory that the user shares. `tag` (always at offset 20) tells what
// the memory holds, so that attaching to the wrong memory is an error instead of a misreading; the
// creator writes it last, with release ordering. Futex words are 32-bit.

#define CIPC_TAG_MUTEX     0x3158544Du /* "MTX1" */
#define CIPC_TAG_SEMAPHORE 0x314D4553u /* "SEM1" */
#define CIPC_TAG_EVENT     0x31545645u /* "EVT1" */
#define CIPC_TAG_CONDITION 0x31444E43u /* "CND1" */
#define CIPC_TAG_RWLOCK    0x31574C52u /* "RLW1" */
#define CIPC_TAG_VARIABLE  0x32524156u /* "VAR2": with a type fingerprint */
/// The tag of the shared variables of layout "VAR1" (no fingerprint, a 320-byte header), which this
/// version does not open (`incompatible`).
#define CIPC_TAG_VARIABLE_V1 0x31524156u /* "VAR1" */

// Owner tokens. A process's identity in a segment file (recorded as a mutex owner, a reader-writer
// lock's writer or reader, a shared variable's putter or reader) is a 64-bit *token*: high 32 bits
// the pid as that process sees it (display only: it means nothing in another PID namespace), low 32
// bits random, non-zero, with bit 31 clear. The process holds an open-file-description lock
// (F_OFD_SETLK) on byte CIPC_TOKEN_LOCK_BASE + (token & CIPC_TOKEN_LOCK_MASK) of the file for as
// long as it may own anything in it; no other process holds that byte (a token is taken only with a
// try-lock that proves it). A recorded token is alive exactly while F_OFD_GETLK (type F_WRLCK) on its
// byte reports a lock — no pids, no /proc. In the words that hold tokens, bit 31 (CIPC_TOKEN_FLAG) is
// a flag: *contended* in `cipc_mutex.owner` and `cipc_rwlock.owner`, *cleaning* in
// `cipc_rwlock_reader.owner`; it is never part of a token.
#define CIPC_TOKEN_FLAG 0x80000000ull
#define CIPC_TOKEN_LOCK_BASE (1ull << 62)
#define CIPC_TOKEN_LOCK_MASK (((1ull << 62) - 1) & ~CIPC_TOKEN_FLAG)


/// A counting semaphore. `count` is the futex word.
typedef struct cipc_semaphore {
    uint32_t count;     ///<  0
    uint32_t waiters;   ///<  4
    uint32_t reserved0[3];
    uint32_t tag;       ///< 20: CIPC_TAG_SEMAPHORE
    uint8_t  reserved[40];
} cipc_semaphore;

/// An event. `state` (the futex word): 0 reset, 1 set. `mode`: 1 manual reset, 2 auto reset.
typedef struct cipc_event {
    uint32_t state;     ///<  0
    uint32_t waiters;   ///<  4
    uint32_t mode;      ///<  8
    uint32_t reserved0[2];
    uint32_t tag;       ///< 20: CIPC_TAG_EVENT
    uint8_t  reserved[40];
} cipc_event;

/// A condition variable. `sequence` (the futex word) is bumped by every signal and broadcast.
typedef struct cipc_condition {
    uint32_t sequence;  ///<  0
    uint32_t waiters;   ///<  4
    uint32_t reserved0[3];
    uint32_t tag;       ///< 20: CIPC_TAG_CONDITION
    uint8_t  reserved[40];
} cipc_condition;

/// A reader-writer lock with writer preference. `owner`: 0 when no writer, else the writer's
/// token exactly like `cipc_mutex.owner`, with the same *contended* bit 31 (set by readers and writers
/// before they park on its low half, the futex word; the writer's unlock wakes them all only if it is
/// set). A writer first claims `owner` (new readers then back off), then waits on `drain` (the second
/// futex word, bumped by readers that leave while a writer claims) until the read holds of all
/// reader slots and `overflow` add up to 0, then sets `write_held`.
///
/// Read holds are counted per process: a process's first read lock claims a slot (`owner` 0 → its
/// identity) and keeps it while it lives; each read lock/unlock increments/decrements the slot's
/// `holds`. A dead process's slot is freed by a waiting writer or by a process that needs a slot:
/// `owner` dead → the cleaner's identity | CIPC_RWLOCK_CLEANING, `holds` → 0, `owner` → 0 (or the
/// claimer's identity). Processes that find every slot taken by live processes count their read
/// holds in `overflow`, which is not recovered if they die holding one. Only the writer holding the
/// claim parks on `drain`; whoever takes over a dead writer's claim resets `drain_waiters` to 0.
typedef struct cipc_rwlock_reader {
    uint64_t owner;     ///< 0: the process's token (bit 31: being cleaned), 0 = free
    uint32_t holds;     ///< 8: read locks the process holds
    uint32_t reserved;  ///< 12
} cipc_rwlock_reader;

#define CIPC_RWLOCK_READERS 32u
#define CIPC_RWLOCK_SIZE 576u
/// Set in a reader slot's `owner` (bit 31: never part of a token) while a cleaner frees it.
#define CIPC_RWLOCK_CLEANING CIPC_TOKEN_FLAG

typedef struct cipc_rwlock {
    uint64_t owner;             ///<  0: writer token (bit 31: contended), 0 = none
    uint32_t drain;             ///<  8: bumped by readers leaving while a writer claims (futex word)
    uint32_t waiters;           ///< 12: threads parked on `owner` (informational)
    uint32_t drain_waiters;     ///< 16: writers parked on `drain`
    uint32_t tag;               ///< 20: CIPC_TAG_RWLOCK
    uint64_t recoveries;        ///< 24: how many times a dead writer's claim was cleared
    uint32_t write_held;        ///< 32: 1 while the writer is inside (readers drained)
    uint32_t inconsistent;      ///< 36: 1 after a writer died inside, until markConsistent()
    uint32_t overflow;          ///< 40: read holds of processes that found no free slot
    uint32_t reader_capacity;   ///< 44: CIPC_RWLOCK_READERS
    uint64_t reader_recoveries; ///< 48: dead readers' slots freed while they held read locks
    uint32_t state_size;        ///< 56: CIPC_RWLOCK_SIZE
    uint32_t reserved;          ///< 60
    cipc_rwlock_reader readers[CIPC_RWLOCK_READERS]; ///< 64
} cipc_rwlock;

/// One registered reader of a shared variable: a reader that found it empty and waits for the next
/// put. Free when `owner` is 0; `since` is the generation of the empty state it saw (UINT64_MAX
/// while not yet set).
typedef struct cipc_variable_reader {
    uint64_t owner;  ///< 0: reader token, 0 = free
    uint64_t since;  ///< 8
} cipc_variable_reader;

#define CIPC_VARIABLE_READERS 16u
#define CIPC_VARIABLE_HEADER_SIZE 448u

/// The header of a shared variable (an MVar); the value's bytes follow at `value_offset` (the header
/// size rounded up to the value's alignment, at least 8).
/// `state`: bit 0 full, bit 1 readers pending (takers wait), bits 2..63 generation (bumped by every
/// put); its low 32 bits are the futex word. `putter` is the token of the process that holds the
/// right to fill the slot (a put, swap or modify in progress), 0 when nobody does. `value_type` is
/// the value's type fingerprint; its size and alignment equal `value_size` and `value_alignment`.
typedef struct cipc_variable_header {
    uint64_t state;              ///<   0
    uint32_t waiters;            ///<   8: threads parked on `state`
    uint32_t value_size;         ///<  12: MemoryLayout<Value>.size
    uint32_t value_alignment;    ///<  16: MemoryLayout<Value>.alignment
    uint32_t tag;                ///<  20: CIPC_TAG_VARIABLE
    uint64_t putter;             ///<  24
    uint32_t registered_readers; ///<  32: claimed reader slots (a hint; too high after a crash)
    uint32_t reader_capacity;    ///<  36: CIPC_VARIABLE_READERS
    uint32_t value_offset;       ///<  40: from the start of this header
    uint32_t reserved0;          ///<  44
    uint64_t recoveries;         ///<  48: dead putters and dead readers cleared
    uint64_t reserved1;          ///<  56
    cipc_variable_reader readers[CIPC_VARIABLE_READERS]; ///< 64..320
    cipc_type_fingerprint value_type; ///< 320..448
} cipc_variable_header;

_Static_assert(sizeof(cipc_mutex) == 64, "mutex layout");
_Static_assert(sizeof(cipc_semaphore) == 64, "semaphore layout");
_Static_assert(sizeof(cipc_event) == 64, "event layout");
_Static_assert(sizeof(cipc_condition) == 64, "condition layout");
_Static_assert(offsetof(cipc_mutex, tag) == 20 && offsetof(cipc_semaphore, tag) == 20, "tag offset");
_Static_assert(offsetof(cipc_mutex, owner) == 0 && offsetof(cipc_mutex, waiters) == 8, "mutex offsets");
_Static_assert(offsetof(cipc_mutex, inconsistent) == 12 && offsetof(cipc_mutex, recoveries) == 24, "mutex offsets");
_Static_assert(CIPC_TOKEN_FLAG == 0x80000000ull && CIPC_TOKEN_LOCK_BASE == 0x4000000000000000ull, "token layout");
_Static_assert(CIPC_TOKEN_LOCK_BASE + CIPC_TOKEN_LOCK_MASK <= 0x7FFFFFFFFFFFFFFFull, "token lock bytes fit a 63-bit file offset");
_Static_assert(sizeof(cipc_rwlock_reader) == 16 && CIPC_RWLOCK_READERS == 32, "rwlock reader layout");
_Static_assert(sizeof(cipc_rwlock) == CIPC_RWLOCK_SIZE, "rwlock layout");
_Static_assert(offsetof(cipc_rwlock, tag) == 20 && offsetof(cipc_rwlock, write_held) == 32, "rwlock offsets");
_Static_assert(offsetof(cipc_rwlock, overflow) == 40 && offsetof(cipc_rwlock, reader_recoveries) == 48, "rwlock offsets");
_Static_assert(offsetof(cipc_rwlock, state_size) == 56 && offsetof(cipc_rwlock, readers) == 64, "rwlock readers offset");
_Static_assert(offsetof(cipc_rwlock, owner) == 0 && offsetof(cipc_rwlock, waiters) == 12 && offsetof(cipc_rwlock, drain_waiters) == 16, "rwlock offsets");
_Static_assert(CIPC_RWLOCK_CLEANING == CIPC_TOKEN_FLAG, "the cleaning mark is the token flag bit");
// MARK: - Atomics (SharedAtomic<Value>: 192 bytes, 8-byte aligned; 64-byte alignment recommended)

#define CIPC_TAG_ATOMIC 0x314D5441u /* "ATM1" */

/// One atomic integer. `value` is 8 bytes whatever the value's size: a 4-byte value is its low
/// half (little-endian). The value has its cache line to itself; `value_type` is the type fingerprint
/// of the value (its size is `value_size`).
typedef struct cipc_atomic {
    uint64_t value;        ///<  0: the value (atomic)
    uint32_t value_size;   ///<  8: 4 or 8
    uint32_t reserved0[2]; ///< 12: zero
    uint32_t tag;          ///< 20: CIPC_TAG_ATOMIC
    uint8_t  reserved[40]; ///< 24: zero
    cipc_type_fingerprint value_type; ///< 64..192
} cipc_atomic;

_Static_assert(sizeof(cipc_atomic) == 192 && offsetof(cipc_atomic, tag) == 20, "atomic layout");
_Static_assert(offsetof(cipc_atomic, value_type) == 64, "atomic type offset");

_Static_assert(sizeof(cipc_variable_reader) == 16, "variable reader layout");
_Static_assert(sizeof(cipc_variable_header) == CIPC_VARIABLE_HEADER_SIZE, "variable header layout");
_Static_assert(offsetof(cipc_variable_header, tag) == 20 && offsetof(cipc_variable_header, putter) == 24, "variable offsets");
_Static_assert(offsetof(cipc_variable_header, readers) == 64 && offsetof(cipc_variable_header, value_type) == 320, "variable readers and type offsets");
_Static_assert(offsetof(cipc_variable_header, waiters) == 8 && offsetof(cipc_variable_header, recoveries) == 48, "variable offsets");

// MARK: - Open-file-description locks (fcntl is variadic)

/// Lock commands: the open-file-description locks of Linux (F_OFD_*), or -1 where there are none.
extern const int cipc_F_OFD_GETLK;
extern const int cipc_F_OFD_SETLK;
extern const int cipc_F_OFD_SETLKW;

/// `fcntl(fd, cmd, &flock)` for a lock of `type` (F_RDLCK, F_WRLCK, F_UNLCK) on `[start, start+len)`.
/// Returns 0 or -1 with errno set. For a GETLK command, `*type_out` receives the type of a
/// conflicting lock or F_UNLCK.
int cipc_fcntl_lock(int fd, int cmd, short type, int64_t start, int64_t len, short *type_out);

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start (Linux; elsewhere pipe + fcntl,
/// which leaves a window in which a concurrent spawn inherits them).
int cipc_pipe_cloexec(int fds[2]);

/// O_TMPFILE (a macro of two flags that Swift does not import); 0 where the platform has none.
extern const int cipc_O_TMPFILE;

// MARK: - Futex (syscall is variadic)

/// Waits while `*word == expected`, until `deadline_ns`: an absolute CLOCK_MONOTONIC time, as for
/// `cipc_futex_waitv` (negative: forever; `FUTEX_WAIT_BITSET`). Shared (not private) futex, so that
/// it works across processes. Returns 0 or -1 with errno (EAGAIN: the word differed; ETIMEDOUT: the
/// deadline passed; EINTR: call again with the same deadline).
int cipc_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns);

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

/// The calling thread's kernel id (`gettid`, which Glibc's Swift module does not export).
int32_t cipc_gettid(void);

// MARK: - Asymmetric fences (membarrier)

/// Registers the calling process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: from now on another process's
/// `cipc_membarrier_global()` makes every running thread of this one execute a full memory barrier.
/// Returns 0, or -1 with errno (ENOSYS, EINVAL: the kernel has none; EPERM: a seccomp filter).
int cipc_membarrier_register_global(void);

/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: returns once every running thread of every
/// registered process has executed a full memory barrier (a thread that is not running does at its
/// next context switch). Returns 0, or -1 with errno.
int cipc_membarrier_global(void);

/// A compiler barrier (no instruction): memory accesses are not moved across it. The fast side of an
/// asymmetric fence needs its store and its following load kept in program order; the processor
/// keeps them so except for the store buffer, which the slow side's membarrier drains.
static inline void cipc_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

// MARK: - Words the hot paths test inline

/// Process-local words that Swift code in every module tests inline on its hot paths (a Swift
/// global of another module is reached through a call): `cipc_crash_points_word` is
/// `CrashPoint`'s state (0: the environment was not read yet, 1: no point armed, 2: one is);
/// `cipc_fence_word` is `AsymmetricFence`'s registration (0: not tried, 1: registered, 2: refused).
extern int cipc_crash_points_word;
extern int cipc_fence_word;

static inline int cipc_crash_points_state(void) { return __atomic_load_n(&cipc_crash_points_word, __ATOMIC_RELAXED); }
static inline void cipc_set_crash_points_state(int state) { __atomic_store_n(&cipc_crash_points_word, state, __ATOMIC_RELAXED); }
static inline int cipc_fence_state(void) { return __atomic_load_n(&cipc_fence_word, __ATOMIC_RELAXED); }
static inline void cipc_set_fence_state(int state) { __atomic_store_n(&cipc_fence_word, state, __ATOMIC_RELAXED); }

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

#include "CInterprocessHeap.h" // the shared heap's layout (it needs cipc_mutex, above)
// The channel layout uses the type fingerprint above.
#include "CInterprocessChannel.h"
// Stored values (SharedMemory.store, SharedWatchedValue) use cipc_mutex and the type fingerprint.
#include "CInterprocessValue.h"
// The message queue's layout (it uses the type fingerprint and the channel's formats).
#include "CInterprocessMessageQueue.h"
// The broadcast layout too (and the channel's message formats).
#include "CInterprocessBroadcast.h"
// The service layout embeds a channel (its request queue).
#include "CInterprocessService.h"
// Thread-local slots of the shared heap's thread caches.
#include "CInterprocessThread.h"

#endif
