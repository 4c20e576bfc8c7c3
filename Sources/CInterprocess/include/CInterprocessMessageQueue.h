// CInterprocess, message-queue part: the shared layout of a `MessageQueue` (a bounded queue of
// messages with priorities between processes, like POSIX and Boost message queues). No logic: the
// protocol is documented here field by field and implemented in
// Sources/Interprocess/Channels/MessageQueueCore.swift. Included at the end of CInterprocess.h (it
// uses cipc_type_fingerprint and the channel's formats); every field is pinned by LayoutTests and
// the README's table.
#ifndef CINTERPROCESS_MESSAGE_QUEUE_H
#define CINTERPROCESS_MESSAGE_QUEUE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Message queue (layout "MSQ1")
//
// A message queue is a `cipc_mqueue` header (512 bytes), then the *ready heap* (`capacity` uint32 at
// `ready_offset`), the *free stack* (`capacity` uint32 at `free_offset`) and, at `slots_offset` (a
// multiple of 64), `capacity` slots `slot_stride` bytes apart, each a `cipc_mqueue_slot` header (32
// bytes) and room for `max_message_size` bytes. It lives at the payload offset of a segment of kind
// CIPC_KIND_MQUEUE (5). Integers are little-endian.
//
// The source of truth is each slot's `state` (with `owner`, `priority`, `sequence`):
//   FREE      no message; the slot can be claimed by a sender
//   WRITING   a sender (`owner`, its owner token: see "Owner tokens" in CInterprocess.h) copies a
//             message in, outside the lock
//   READY     holds a message of `priority`, published as number `sequence` (a queue-wide counter:
//             FIFO within one priority)
//   READING   a receiver (`owner`) copies the message out, outside the lock
// The ready heap (a binary max-heap of the READY slots' indices, ordered by priority, higher first,
// then by sequence, lower first; `ready_count` entries) and the free stack (`free_count` indices of
// FREE slots) are caches of those states, changed only under `lock`.
//
// Lock. `lock` is a robust lock word: 0 when free, else the holder's owner token, bit 31
// (CIPC_TOKEN_FLAG) *contended* (a waiter parks on the word's low half). A process that takes the
// lock from a holder that died rebuilds the heap and the free stack from the slot states, and
// repairs the slots of dead processes: WRITING becomes FREE (the message was not sent), READING
// becomes READY again (the message is redelivered, in its place). The lock is held only to change
// states and caches, never while bytes are copied or while anybody waits.
//
// Send: under the lock pop a FREE slot, set `owner`, then `state` = WRITING; copy the bytes and
// `length` without the lock; under the lock set `sequence` (from `next_sequence`), `priority`, then
// `state` = READY, and push it on the heap. Receive: under the lock pop the heap's top, set `owner`,
// then `state` = READING; copy the bytes out without the lock; under the lock set `state` = FREE and
// push it on the free stack.
//
// Waiting. Receivers park on `receive_signal`, senders on `send_signal`, each counted in
// `receivers_waiting` / `senders_waiting`. Every publish bumps `receive_signal` (every release
// `send_signal`) and wakes one waiter if the count is not 0. `closed` (1) is set by `close()`: sends
// fail from then on; receivers take what is left.
//
// Participants. A queue created by this version has a table of CIPC_CHANNEL_PARTICIPANTS
// `cipc_channel_participant` entries (CInterprocessChannel.h) right after its slots (`state_size` =
// slots_offset + capacity * slot_stride + the table; a queue without it works and has no
// participants). The protocol is the channel's: one entry per process, roles, handles and a readiness
// descriptor's `notifier`, whose socket file is `mqready-<FNV-1a 64 of the queue name, 16 hex>-<notifier,
// 16 hex>` in the user's runtime directory; bit i of `descriptors_armed` asks for a datagram there
// when the next message is published (a sender loads the word after it published and bumped
// `receive_signal`, on the same line).

#define CIPC_KIND_MQUEUE 5u  /* one cipc_mqueue, its heap, its free stack and its slots */
#define CIPC_TAG_MQUEUE 0x3151534Du /* "MSQ1" */
#define CIPC_MQUEUE_HEADER_SIZE 512u
#define CIPC_MQUEUE_SLOT_HEADER_SIZE 32u
#define CIPC_MQUEUE_MAX_CAPACITY (1u << 20)
#define CIPC_MQUEUE_MAX_MESSAGE_SIZE (1u << 24)

/// Slot states (`cipc_mqueue_slot.state`).
#define CIPC_MQUEUE_FREE    0u
#define CIPC_MQUEUE_WRITING 1u
#define CIPC_MQUEUE_READY   2u
#define CIPC_MQUEUE_READING 3u

/// One slot's header; the message's bytes follow it.
typedef struct cipc_mqueue_slot {
    uint32_t state;      ///<  0: CIPC_MQUEUE_FREE / WRITING / READY / READING (atomic)
    uint32_t length;     ///<  4: bytes of the message (written by its sender while WRITING)
    uint64_t owner;      ///<  8: the owner token of the sender (WRITING) or receiver (READING), else 0 (atomic)
    uint64_t sequence;   ///< 16: publication number (READY, READING): FIFO within a priority
    uint32_t priority;   ///< 24: the message's priority (READY, READING): higher first
    uint32_t reserved;   ///< 28
} cipc_mqueue_slot;

typedef struct cipc_mqueue {
    // Fixed at creation: an opener checks them once and keeps its own copy.
    uint32_t capacity;          ///<   0: slots, 1...CIPC_MQUEUE_MAX_CAPACITY
    uint32_t max_message_size;  ///<   4: 1...CIPC_MQUEUE_MAX_MESSAGE_SIZE
    uint32_t slot_stride;       ///<   8: 32 + max_message_size rounded up to 64
    uint32_t slots_offset;      ///<  12: free_offset + 4 * capacity rounded up to 64
    uint32_t format;            ///<  16: CIPC_CHANNEL_FORMAT_* (as a channel's)
    uint32_t tag;               ///<  20: CIPC_TAG_MQUEUE, written last by the creator
    uint64_t state_size;        ///<  24: slots_offset + capacity * slot_stride
    uint32_t ready_offset;      ///<  32: CIPC_MQUEUE_HEADER_SIZE: the ready heap (capacity uint32)
    uint32_t free_offset;       ///<  36: ready_offset + 4 * capacity: the free stack (capacity uint32)
    uint8_t  reserved0[24];     ///<  40
    // Counters, written only when something is repaired (a read-mostly line).
    uint64_t rebuilds;          ///<  64: heap and free stack rebuilt from the slot states (atomic)
    uint64_t abandoned_sends;   ///<  72: WRITING slots of dead senders freed: not sent (atomic)
    uint64_t redeliveries;      ///<  80: READING slots of dead receivers made READY again (atomic)
    uint64_t dropped_messages;  ///<  88: messages dropped because their length was damaged (atomic)
    uint8_t  reserved1[32];     ///<  96
    cipc_type_fingerprint message_type; ///< 128: the message type; opened as another, `incompatible`
    // The lock and what it guards.
    uint64_t lock;              ///< 256: 0 or the holder's owner token (bit 31: contended) (atomic)
    uint32_t lock_waiters;      ///< 264: threads parked on the lock (informative) (atomic)
    uint32_t closed;            ///< 268: 1 once closed (atomic)
    uint64_t next_sequence;     ///< 272: the next publication number (under the lock)
    uint32_t ready_count;       ///< 280: entries of the ready heap (under the lock; read as a snapshot)
    uint32_t free_count;        ///< 284: entries of the free stack (under the lock)
    uint64_t sent;              ///< 288: messages published, in all (under the lock)
    uint64_t received;          ///< 296: messages received (slot released), in all (under the lock)
    uint32_t top_priority;      ///< 304: the priority of the heap's top while ready_count > 0 (under the lock; for `ipc inspect`)
    uint8_t  reserved2[12];     ///< 308
    uint32_t receive_signal;    ///< 320: futex word of parked receivers, bumped by every publish (atomic)
    uint32_t receivers_waiting; ///< 324: receivers parked or about to park (atomic)
    uint64_t descriptors_armed; ///< 328: bit i: participant i waits on its readiness descriptor (atomic)
    uint8_t  reserved3[48];     ///< 336
    uint32_t send_signal;       ///< 384: futex word of parked senders, bumped by every release (atomic)
    uint32_t senders_waiting;   ///< 388: senders parked or about to park (atomic)
    uint8_t  reserved4[56];     ///< 392
    uint8_t  reserved5[64];     ///< 448
} cipc_mqueue;

_Static_assert(sizeof(cipc_mqueue_slot) == CIPC_MQUEUE_SLOT_HEADER_SIZE, "message queue slot layout");
_Static_assert(offsetof(cipc_mqueue_slot, owner) == 8 && offsetof(cipc_mqueue_slot, sequence) == 16 && offsetof(cipc_mqueue_slot, priority) == 24, "message queue slot offsets");
_Static_assert(sizeof(cipc_mqueue) == CIPC_MQUEUE_HEADER_SIZE, "message queue header layout");
_Static_assert(offsetof(cipc_mqueue, tag) == 20, "the tag is at offset 20, as in every shared object");
_Static_assert(offsetof(cipc_mqueue, rebuilds) == 64 && offsetof(cipc_mqueue, message_type) == 128, "message queue counters and type");
_Static_assert(offsetof(cipc_mqueue, lock) == 256 && offsetof(cipc_mqueue, next_sequence) == 272 && offsetof(cipc_mqueue, received) == 296 && offsetof(cipc_mqueue, top_priority) == 304, "message queue lock line");
_Static_assert(offsetof(cipc_mqueue, receive_signal) == 320 && offsetof(cipc_mqueue, send_signal) == 384, "message queue waiting lines");
_Static_assert(offsetof(cipc_mqueue, descriptors_armed) == 328, "armed readiness descriptors on the receivers' line");

#ifdef __cplusplus
}
#endif
#endif
