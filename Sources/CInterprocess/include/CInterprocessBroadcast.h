// CInterprocess, broadcast part: the shared layout of a `Broadcast` (publish / subscribe: every
// subscriber receives every message published after it subscribed). No logic: the protocol is
// documented here field by field and implemented in Sources/Interprocess/Channels/BroadcastRing.swift.
// Included at the end of CInterprocess.h (it uses cipc_type_fingerprint and the channel's formats);
// every field is pinned by LayoutTests.
#ifndef CINTERPROCESS_BROADCAST_H
#define CINTERPROCESS_BROADCAST_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Broadcast (layout "BCS2"; "BCS1", without readiness descriptors, is refused: `incompatible`)
//
// A broadcast is a `cipc_broadcast` header (512 bytes), then `max_subscribers` subscriber places
// (`cipc_broadcast_subscriber`, 64 bytes each: one cache line), then `capacity` slots, `slot_stride`
// bytes apart (a multiple of 64), each a `cipc_broadcast_slot` header (16 bytes) and room for
// `max_message_size` bytes. It lives at the payload offset of a segment of kind
// CIPC_KIND_BROADCAST (4). All integers are little-endian; words marked (atomic) are only ever read
// and written atomically.
//
// Positions. Message number p (from 0) is written to slot p mod capacity. `head` is the number of
// messages published: positions below it are complete. A slot's `sequence` says what it holds:
//   0          never written
//   2p + 1     the message of position p is being written (a seqlock's odd value)
//   2p + 2     the message of position p is complete
// A subscriber reads position q < head by loading `sequence` (2q + 2), the length and the bytes,
// then `sequence` again: if it changed, the publisher overwrote the slot meanwhile and the copy is
// thrown away.
//
// Publishing. Publishers take turns through `publisher` (the owner token of the publishing process,
// see "Owner tokens" in CInterprocess.h; 0: free). The holder writes `sequence` = 2p + 1, the length,
// the bytes, `sequence` = 2p + 2, then adds 1 to `head`, wakes parked subscribers (if
// `subscribers_waiting`), and clears `publisher` (an exchange: a publisher that parks because the
// turn is held first sets bit 31, CIPC_TOKEN_FLAG, *contended*, and the holder wakes the parked
// publishers when it was set). Before it overwrites position p - capacity, a
// publisher of policy CIPC_BROADCAST_BLOCK_PUBLISHER waits until every live subscriber's `position`
// is past it; with CIPC_BROADCAST_DROP_OLDEST it never waits, and a subscriber that finds its
// position overwritten skips to the oldest message still there and is told how many it missed.
// A publisher that finds `publisher` held by a dead token takes it over and repairs from `head`'s
// slot: sequence 2·head + 2 (the dead one finished writing): `head` is advanced (the message is
// published, `completed_publishes`); 2·head + 1 (it died writing): the slot is written again by the
// new holder (the message is lost, `abandoned_publishes`).
//
// Subscribers. A subscriber takes a free place (`owner` 0 → its token with bit 31 set: joining),
// stores its starting `position` (head minus the history it asked for), sets `owner` to its token,
// and adds 1 to `subscribers_generation` (a publisher that caches the slowest position rescans when
// it changed). A joining place (bit 31) holds nobody back. It advances `position` (a compare-and-swap,
// so that threads sharing one subscription take each message once) after each message, and wakes a
// parked publisher if `publishers_waiting`. Leaving clears `owner`. A place whose owner token is dead
// is cleared by a publisher that waits for it, or by a process looking for a free place
// (`departed_subscribers`).
//
// Waiting. Subscribers park on `publish_signal` (counted in `subscribers_waiting`), publishers on
// `space_signal` (counted in `publishers_waiting`); a change is announced by bumping the word and a
// futex wake only when the count is not 0. Bit 63 of `head` (CIPC_BROADCAST_CLOSED) is set by
// `close()`: no message is published after it, and subscribers that reach `head` see the end.
//
// Readiness descriptors (layout BCS2). A subscription that waits by descriptor (`readinessDescriptor()`)
// records in its place a random `notifier` number, which names a Unix datagram socket file in the
// subscribing user's runtime directory (`bcready-<FNV-1a 64 of the broadcast's name>-<number>`, built
// by every process from its own copy of the name: a path is never read from shared memory). To ask
// for a wake-up it stores `armed` = 1 in its place, *then* sets bit (place index mod 64) of the
// header's `descriptors_armed` (both sequentially consistent), then looks at `head`. A publisher,
// after it advanced `head` (sequentially consistent), loads `descriptors_armed` — its one extra load
// while nobody waits by descriptor, on the line of `head` — and when it is not 0 takes it whole (an
// exchange); for each bit b taken it exchanges `armed` to 0 in places b, b + 64, b + 128, … and sends
// one datagram to each place that was armed, adding 1 to its `pokes`. `close()` does the same.
// Either the publisher's load comes after the subscriber's bit (it sees the bit, and the place's
// `armed` stored before it) or the subscriber's look at `head` comes after the publisher's advance
// (it sees the message): no wake-up is lost. A place is freed with `armed` 0 and no `notifier`;
// whoever frees the place of a dead subscriber (a publisher whose datagram is refused, a publisher
// waiting for it, a joining subscriber) first marks it (owner: its own token with bit 31), clears
// `armed`, removes the dead socket file (only a socket of this user that nobody is bound to), and
// zeroes `notifier` and `pokes`.

#define CIPC_TAG_BROADCAST 0x32534342u /* "BCS2": with readiness descriptors */
/// The tag of the first layout (no readiness fields; its publishers would not wake descriptors).
#define CIPC_TAG_BROADCAST_V1 0x31534342u /* "BCS1" */
#define CIPC_BROADCAST_HEADER_SIZE 512u
#define CIPC_BROADCAST_SLOT_HEADER_SIZE 16u
#define CIPC_BROADCAST_SUBSCRIBER_SIZE 64u
/// Bit 63 of `head`: the broadcast is closed.
#define CIPC_BROADCAST_CLOSED 0x8000000000000000ull
#define CIPC_BROADCAST_MAX_CAPACITY (1u << 20)
#define CIPC_BROADCAST_MAX_MESSAGE_SIZE (1u << 24)
#define CIPC_BROADCAST_MAX_SUBSCRIBERS 4096u

/// What a publisher does when the ring is full of messages a subscriber has not read (`policy`).
#define CIPC_BROADCAST_BLOCK_PUBLISHER 1u /* it waits for the slowest live subscriber */
#define CIPC_BROADCAST_DROP_OLDEST     2u /* it overwrites; the subscriber is told how many it missed */

// `format` is one of CIPC_CHANNEL_FORMAT_* (CInterprocessChannel.h), `message_type` the message
// type's fingerprint: an opener that expects another type or format gets `incompatible`.

/// One slot's header; the message's bytes follow it.
typedef struct cipc_broadcast_slot {
    uint64_t sequence;   ///<  0: 0 never written, 2p+1 writing position p, 2p+2 holds position p (atomic)
    uint32_t length;     ///<  8: bytes of the message (atomic)
    uint32_t reserved;   ///< 12
} cipc_broadcast_slot;

/// One subscriber place (a cache line of its own: only its subscriber writes `position`).
typedef struct cipc_broadcast_subscriber {
    uint64_t owner;      ///<  0: the subscriber's token (bit 31: joining), or 0: free (atomic)
    uint64_t position;   ///<  8: the next position it reads (atomic)
    uint64_t missed;     ///< 16: messages it missed (overwritten before it read them) (atomic)
    uint64_t received;   ///< 24: messages it received (atomic)
    uint64_t notifier;   ///< 32: the number naming its readiness socket file, or 0: none (atomic)
    uint64_t pokes;      ///< 40: datagrams publishers sent to that socket (atomic)
    uint64_t armed;      ///< 48: 1: send a datagram at the next publish (then 0); 0: not armed (atomic)
    uint64_t reserved;   ///< 56
} cipc_broadcast_subscriber;

typedef struct cipc_broadcast {
    // Fixed at creation: an opener checks them once and keeps its own copy.
    uint32_t capacity;            ///<   0: slots, 1...CIPC_BROADCAST_MAX_CAPACITY
    uint32_t max_message_size;    ///<   4: 1...CIPC_BROADCAST_MAX_MESSAGE_SIZE
    uint32_t slot_stride;         ///<   8: 16 + max_message_size rounded up to 64
    uint32_t slots_offset;        ///<  12: 512 + 64 * max_subscribers
    uint32_t format;              ///<  16: CIPC_CHANNEL_FORMAT_*
    uint32_t tag;                 ///<  20: CIPC_TAG_BROADCAST, written last by the creator
    uint64_t state_size;          ///<  24: slots_offset + capacity * slot_stride
    uint32_t policy;              ///<  32: CIPC_BROADCAST_BLOCK_PUBLISHER or CIPC_BROADCAST_DROP_OLDEST
    uint32_t max_subscribers;     ///<  36: subscriber places, 1...CIPC_BROADCAST_MAX_SUBSCRIBERS
    uint8_t  reserved0[24];       ///<  40
    // Counters, written when something changes hands or is recovered (a read-mostly line).
    uint64_t subscribers_generation; ///< 64: bumped by every subscriber that joins (atomic)
    uint64_t departed_subscribers;   ///< 72: places of dead subscribers cleared (atomic)
    uint64_t completed_publishes;    ///< 80: messages a dead publisher wrote whole, published by the next (atomic)
    uint64_t abandoned_publishes;    ///< 88: messages whose publisher died writing them (not published) (atomic)
    uint64_t dropped_messages;       ///< 96: messages dropped because their slot was damaged (atomic)
    uint8_t  reserved1[24];          ///< 104
    cipc_type_fingerprint message_type; ///< 128: the message type; opened as another, `incompatible`
    // The publishers' line.
    uint64_t head;                ///< 256: messages published; bit 63 CIPC_BROADCAST_CLOSED (atomic)
    uint64_t publisher;           ///< 264: token of the process publishing (bit 31: contended), or 0 (atomic)
    uint64_t descriptors_armed;   ///< 272: bit b: a place of index b mod 64 may be armed (atomic)
    uint8_t  reserved2[40];       ///< 280
    uint32_t publish_signal;      ///< 320: futex word of parked subscribers, bumped to wake them (atomic)
    uint32_t subscribers_waiting; ///< 324: subscribers parked or about to park (atomic)
    uint8_t  reserved3[56];       ///< 328
    uint32_t space_signal;        ///< 384: futex word of parked publishers (atomic)
    uint32_t publishers_waiting;  ///< 388: publishers parked or about to park (atomic)
    uint8_t  reserved4[120];      ///< 392
} cipc_broadcast;

_Static_assert(sizeof(cipc_broadcast_slot) == CIPC_BROADCAST_SLOT_HEADER_SIZE, "broadcast slot layout");
_Static_assert(sizeof(cipc_broadcast_subscriber) == CIPC_BROADCAST_SUBSCRIBER_SIZE, "broadcast subscriber layout");
_Static_assert(sizeof(cipc_broadcast) == CIPC_BROADCAST_HEADER_SIZE, "broadcast header layout");
_Static_assert(offsetof(cipc_broadcast, tag) == 20, "the tag is at offset 20, as in every shared object");
_Static_assert(offsetof(cipc_broadcast, message_type) == 128, "broadcast message type offset");
_Static_assert(offsetof(cipc_broadcast, head) == 256 && offsetof(cipc_broadcast, publish_signal) == 320, "broadcast hot lines");
_Static_assert(offsetof(cipc_broadcast, space_signal) == 384, "broadcast publishers' wait line");
_Static_assert(offsetof(cipc_broadcast, descriptors_armed) == 272, "broadcast armed descriptors: on the line of head");
_Static_assert(offsetof(cipc_broadcast_subscriber, notifier) == 32 && offsetof(cipc_broadcast_subscriber, pokes) == 40
               && offsetof(cipc_broadcast_subscriber, armed) == 48, "broadcast subscriber readiness fields");

#ifdef __cplusplus
}
#endif
#endif
