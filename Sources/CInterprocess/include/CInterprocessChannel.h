// CInterprocess, channel part: the shared layout of a `Channel` (a bounded multi-producer,
// multi-consumer queue of messages between processes). No logic: the protocol is documented here
// field by field and implemented in Sources/Interprocess/Channels/ChannelRing.swift. Included at the
// end of CInterprocess.h (it uses cipc_type_fingerprint); every field is pinned by LayoutTests.
#ifndef CINTERPROCESS_CHANNEL_H
#define CINTERPROCESS_CHANNEL_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Channel (layout "CHN1")
//
// A channel is a `cipc_channel` header (512 bytes) followed by `capacity` slots, `slot_stride` bytes
// apart (a multiple of 64), each a `cipc_channel_slot` header (32 bytes) and room for
// `max_message_size` bytes of message. It lives at the payload offset of a segment of kind
// CIPC_KIND_CHANNEL (3). All integers are little-endian; the words marked (atomic) are only ever
// read and written atomically.
//
// Positions. Every message gets a *position*, a 63-bit number: `send_position` is the next position
// a sender will claim, `receive_position` the next a receiver will claim. Position p lives in slot
// p mod capacity. A slot's `sequence` says which position it serves and whether its message is in:
//   sequence == 2p       the slot is free for position p (or p's sender is writing it)
//   sequence == 2p + 1   the slot holds the message of position p (or p's receiver is copying it)
// A slot starts at 2i (free for position i); a receiver that is done with position p sets it to
// 2(p + capacity): free for the same slot's next position. (Vyukov's bounded MPMC queue, with the
// sequence doubled so that "free" and "full" differ for any capacity, even 1.)
//
// Claims. Whoever works on a slot first records itself in the slot's `owner` word — its owner token
// (see "Owner tokens" in CInterprocess.h: a kernel lock vouches that it is alive) — and only then
// advances the position by a compare-and-swap; it clears `owner` when it is done with the slot. So a
// position that was claimed and not finished always names its claimer, and a slot held by a process
// that died is recovered from the slot's own state (see the doc comment of `Channel`):
//   sequence even (2q), send_position <= q      nothing was claimed: `owner` is cleared
//   sequence even (2q), send_position > q       a sender died writing: the slot is published with
//                                               length CIPC_CHANNEL_SKIPPED, receivers pass over it
//   sequence odd (2q+1), receive_position <= q  nothing was taken: `owner` is cleared
//   sequence odd (2q+1), receive_position > q   a receiver died before releasing: `owner` becomes
//                                               CIPC_CHANNEL_ORPHAN and the message is redelivered
// Bit 31 of `owner` (CIPC_TOKEN_FLAG) is *contended*: a waiter that parks because a slot is owned sets
// it; the owner, clearing `owner` with an exchange, wakes the waiters when it was set.
//
// Waiting. Receivers park on `receive_signal`, senders on `send_signal`, each counted in
// `receivers_waiting` / `senders_waiting` while parked. A sender that publishes a message bumps
// `receive_signal` and wakes one receiver only if `receivers_waiting` is not 0 and the message is
// the one at `receive_position` (a receiver parks only while that one is not in; a waiter that was
// woken and claims a position wakes the next waiter if the next message is in). A receiver that frees a slot does the
// same for senders (only if `send_position` waits for that slot), so nothing but a load is spent on
// waking while nobody waits, and a stream makes one wake-up call per park, not one per message. Bit 63 of `send_position` (CIPC_CHANNEL_CLOSED) is set by `close()`: no position is claimed
// after it, and receivers that find every claimed position taken see the end.
//
// Exclusive endpoints (layout "CHN2"). A process may hold a channel's *sender* role (or its
// *receiver* role) alone: it records its owner token in `exclusive_sender` (`exclusive_receiver`)
// by a compare-and-swap from 0, and from then on sends (receives) without claims: no owner word, no
// compare-and-swap, no locked instruction per message. Every other send (receive) checks the role
// word after it took a slot's owner word and before it advances the position (both sequentially
// consistent, so either it sees the role taken and lets the slot go, or the role's taker, which
// waits after taking it until no slot of its side is owned by a live process, sees its claim), and
// waits while the role is held.
//   The exclusive sender keeps its next position in `exclusive_position` (send_position is left as
//   it was when it took the role, and written back when it gives the role up). A send: check the
//   slot is free for p (its sequence 2p), store exclusive_position = p + 1 (the position is being
//   written), check that bit 62 of send_position (CIPC_CHANNEL_CLOSING) is clear (else set
//   exclusive_position back to p: closed), write the length and bytes, publish the sequence 2p + 1
//   (a release store). While the role is held, receivers read exclusive_position where they would
//   read send_position.
//   The exclusive receiver: check the slot holds p's message (2p + 1), copy it out, store the
//   sequence 2(p + capacity), store receive_position = p + 1 (release stores).
//   Closing: `close()` sets CIPC_CHANNEL_CLOSING, then, if an exclusive sender holds the role, makes
//   every thread of the processes that registered for it execute a memory barrier (membarrier
//   GLOBAL_EXPEDITED), then sets CIPC_CHANNEL_CLOSED: after it, the exclusive sender's
//   exclusive_position is final or it sees CLOSING. (Where membarrier is refused, close leaves
//   CLOSED to the exclusive sender: its next send or its giving up the role sets it.)
//   Waking: a waiter that parks while the other side's role is held makes the same barrier after
//   it counted itself and before its last look, so the role holder's plain loads of the waiter
//   counts cannot miss it (where membarrier is refused, it parks for at most 1 ms at a time).
//   A holder that dies: whoever next needs the role (a waiter's periodic check, a process taking
//   the role) takes it from the dead token with a compare-and-swap and repairs from the slots: for
//   a dead sender, send_position becomes the first position at or after max(send_position,
//   receive_position) whose slot does not hold its message (a message being written when it died is
//   not sent); for a dead receiver, receive_position moves past a slot it released already (the
//   message it took is lost with it; one it was copying is still in, and is received again).

#define CIPC_TAG_CHANNEL 0x324E4843u /* "CHN2" */
/// The layout before exclusive endpoints: refused as an older layout (`incompatible`).
#define CIPC_TAG_CHANNEL_V1 0x314E4843u /* "CHN1" */
#define CIPC_CHANNEL_HEADER_SIZE 512u
#define CIPC_CHANNEL_SLOT_HEADER_SIZE 32u
/// Bit 63 of `send_position`: the channel is closed.
#define CIPC_CHANNEL_CLOSED 0x8000000000000000ull
/// Bit 62 of `send_position`: `close()` has begun (exclusive senders stop at it; see above).
#define CIPC_CHANNEL_CLOSING 0x4000000000000000ull
/// A slot `owner` (never a token: tokens are at least 2^32): the slot holds a message whose receiver
/// died before it released the slot; the next receiver takes it (redelivery).
#define CIPC_CHANNEL_ORPHAN 1ull
/// A slot `length`: no message (its sender died while writing it); receivers pass over it.
#define CIPC_CHANNEL_SKIPPED 0xFFFFFFFFu
/// Bit 31 of a slot `length` (never set by an inline message, whose length is at most
/// CIPC_CHANNEL_MAX_MESSAGE_SIZE, nor part of CIPC_CHANNEL_SKIPPED's meaning): the message is not in
/// the slot but in a block of the channel's loan heap, whose SharedPointer word is the slot's `loan`;
/// the low 31 bits are the message's length (at most CIPC_CHANNEL_MAX_LOAN_SIZE). A reader of an
/// older version sees a length longer than a slot and reports the message `corrupt`.
#define CIPC_CHANNEL_LOANED 0x80000000u
#define CIPC_CHANNEL_MAX_LOAN_SIZE 0x7FFFFFFEu
#define CIPC_CHANNEL_MAX_CAPACITY (1u << 20)
#define CIPC_CHANNEL_MAX_MESSAGE_SIZE (1u << 24)

/// What a message's bytes are (`format`).
#define CIPC_CHANNEL_FORMAT_BYTES 1u /* bytes as sent ([UInt8]) */
#define CIPC_CHANNEL_FORMAT_VALUE 2u /* the raw bytes of one fixed-size value (a BitwiseCopyable type) */
#define CIPC_CHANNEL_FORMAT_JSON  3u /* a Codable value as JSON (UTF-8) */
#define CIPC_CHANNEL_FORMAT_TEXT  4u /* a string as UTF-8 */

// Loans. A message longer than a slot travels through the channel's *loan heap*: a SharedHeap named
// after the channel (NAME~loans, see Channel+Loans.swift) whose nonce the first process that needs it
// records in `loan_heap_nonce` (a compare-and-swap from 0; an opener checks that the heap of that name
// has that nonce). The sender allocates a block there, fills it, and publishes a slot whose `length`
// is CIPC_CHANNEL_LOANED | the byte count and whose `loan` is the block's pointer word; the receiver
// records itself as the block's owner (under the heap's lock) before it releases the slot, and frees
// the block when it is done. A block of the loan heap is garbage when the process its heap records as
// owner has ended and no published slot (odd sequence, LOANED length) names it.

// The message type a channel was created for is a type fingerprint (CInterprocess.h) at
// `message_type`, with `format`: an opener that expects another type or format gets `incompatible`.

/// One slot's header; the message's bytes follow it.
typedef struct cipc_channel_slot {
    uint64_t sequence;   ///<  0: 2p free for position p, 2p+1 holds position p's message (atomic)
    uint64_t owner;      ///<  8: the claimer's token (bit 31: contended), CIPC_CHANNEL_ORPHAN, or 0 (atomic)
    uint32_t length;     ///< 16: bytes of the message, or CIPC_CHANNEL_SKIPPED (atomic)
    uint32_t reserved0;  ///< 20
    uint64_t loan;       ///< 24: with CIPC_CHANNEL_LOANED in `length`, the SharedPointer word of the
                         ///<     message's block in the channel's loan heap (written before the
                         ///<     sequence is published; meaningless otherwise)
} cipc_channel_slot;

// Participants. A channel created by this version has a table of CIPC_CHANNEL_PARTICIPANTS entries
// right after its slots (`state_size` = slots_offset + capacity * slot_stride + the table; a channel
// without it, `state_size` without the table, works and has no participants). Each process that
// has the channel open claims one entry (a compare-and-swap of `owner` from 0 to its owner token)
// and records there how many handles it has open, whether it sent or received (roles, for `ipc ls` /
// `ipc inspect`) and, if it waits on a readiness descriptor, that descriptor's `notifier`: a random
// non-zero number that names its socket file in the user's runtime directory,
// `ready-<FNV-1a 64 of the channel name, 16 hex>-<notifier, 16 hex>`. Bit i of `descriptors_armed`
// says that entry i wants a datagram there when the next message is published: a sender that
// published takes all set bits at once (an exchange with 0) and sends one datagram to each. An entry
// whose owner is dead is cleared by whoever finds it (its bit cleared, its socket file removed, then
// `owner` set to 0). Nothing in an entry is followed blindly: the path is built from this process's
// own channel name and a number, inside this user's runtime directory.
//
// Waiters of a process. A channel waiter (a send or receive that parks) counts itself in the
// header's `receivers_waiting` / `senders_waiting` and, if its process has an entry, in the entry's
// count of the same name: global first, then the entry, on the way in; the entry first, then
// global, on the way out. So an entry never counts more than its process contributes to the
// global count, and whoever sweeps a dead process's entry takes the entry's counts (an exchange
// with 0: of two sweepers, one gets them) and subtracts them from the global counts, never below
// 0: a waiter killed while parked no longer makes every later send (receive) a wake-up call. What
// is left wrong is always an over-count (a spare wake-up call per send while it lasts, never a lost
// wake-up). Dead entries are swept as above (joining, a refused datagram, the last handle let
// go, `ipc gc`) and, so that nobody has to, by a waker whose wake-up call woke nobody while a
// count said someone waits: it sweeps the dead entries that still count waiters (at most every
// 50 ms per process and channel). What is left:
//   killed between the two increments ("channel.wait.countedGlobally") or between the two
//   decrements ("channel.wait.uncountedEntry"): one that no entry names, for good;
//   a sweeper killed after taking the counts ("channel.participants.sweep.countsTaken"): those counts.
// A process's own entry count is raised only while the entry is its own (under its process-local
// lock), lowered never below 0; an entry freed by a live process whose threads still wait keeps
// nothing (its counts are zeroed when it is claimed again, not subtracted). A process of an older
// version (these 8 bytes were reserved, and zero) counts globally only and leaves its entry's
// counts 0, as does a process without an entry (table full) and a ring without a table (a
// service's request queue): an over-count again, never an under-count. No layout tag change.
#define CIPC_CHANNEL_PARTICIPANTS 64u
#define CIPC_CHANNEL_PARTICIPANT_SIZE 64u
/// `roles` bits.
#define CIPC_CHANNEL_ROLE_SENDER 1u
#define CIPC_CHANNEL_ROLE_RECEIVER 2u

typedef struct cipc_channel_participant {
    uint64_t owner;      ///<  0: the process's owner token, or 0: a free entry (atomic)
    uint32_t roles;      ///<  8: CIPC_CHANNEL_ROLE_* it has acted in (atomic)
    uint32_t handles;    ///< 12: its handles open on the channel, readiness descriptors included (atomic)
    uint64_t notifier;   ///< 16: its readiness socket's number, or 0: none (atomic)
    uint64_t pokes;      ///< 24: datagrams sent to its readiness socket (atomic)
    uint32_t receivers_waiting; ///< 32: its threads counted in the header's `receivers_waiting` (atomic; see "Waiters of a process")
    uint32_t senders_waiting;   ///< 36: the same for `senders_waiting` (atomic)
    uint8_t  reserved[24]; ///< 40
} cipc_channel_participant;

typedef struct cipc_channel {
    // Fixed at creation: an opener checks them once and keeps its own copy.
    uint32_t capacity;          ///<   0: slots, 1...CIPC_CHANNEL_MAX_CAPACITY
    uint32_t max_message_size;  ///<   4: 1...CIPC_CHANNEL_MAX_MESSAGE_SIZE
    uint32_t slot_stride;       ///<   8: 32 + max_message_size rounded up to 64
    uint32_t slots_offset;      ///<  12: CIPC_CHANNEL_HEADER_SIZE
    uint32_t format;            ///<  16: CIPC_CHANNEL_FORMAT_*
    uint32_t tag;               ///<  20: CIPC_TAG_CHANNEL, written last by the creator
    uint64_t state_size;        ///<  24: slots_offset + capacity * slot_stride
    uint64_t loan_heap_nonce;   ///<  32: the nonce of the channel's loan heap, 0 until one is recorded (atomic)
    uint64_t exclusive_sender;  ///<  40: the token of the process that holds the sender role alone, or 0 (atomic)
    uint64_t exclusive_receiver;///<  48: the same for the receiver role (atomic)
    uint8_t  reserved0[8];      ///<  56
    // Counters, written only when something is recovered (a read-mostly line).
    uint32_t orphans;           ///<  64: a hint: slots marked CIPC_CHANNEL_ORPHAN not yet redelivered (atomic)
    uint32_t reserved1;         ///<  68
    uint64_t abandoned_sends;   ///<  72: sends whose sender died writing (slot skipped) (atomic)
    uint64_t orphaned_receives; ///<  80: receives whose receiver died before releasing (atomic)
    uint64_t redeliveries;      ///<  88: orphaned messages taken by another receiver (atomic)
    uint64_t cleared_claims;    ///<  96: claims of dead processes cleared with nothing lost (atomic)
    uint64_t dropped_messages;  ///< 104: messages dropped because their slot was damaged (atomic)
    uint8_t  reserved2[16];     ///< 112
    cipc_type_fingerprint message_type; ///< 128: the message type; opened as another, `incompatible`
    // The hot words, each on a cache line of its own.
    uint64_t send_position;     ///< 256: next position to send; bit 63 CIPC_CHANNEL_CLOSED, bit 62 CIPC_CHANNEL_CLOSING (atomic)
    uint64_t exclusive_position;///< 264: while an exclusive sender holds the role, its next position (atomic)
    uint8_t  reserved3[48];
    uint64_t receive_position;  ///< 320: next position to receive (atomic)
    uint8_t  reserved4[56];
    uint32_t receive_signal;    ///< 384: futex word of parked receivers, bumped to wake them (atomic)
    uint32_t receivers_waiting; ///< 388: receivers parked or about to park (atomic)
    uint64_t descriptors_armed; ///< 392: bit i: participant i waits on its readiness descriptor (atomic)
    uint8_t  reserved5[48];
    uint32_t send_signal;       ///< 448: futex word of parked senders (atomic)
    uint32_t senders_waiting;   ///< 452: senders parked or about to park (atomic)
    uint8_t  reserved6[56];
} cipc_channel;

_Static_assert(sizeof(cipc_channel_slot) == CIPC_CHANNEL_SLOT_HEADER_SIZE, "channel slot layout");
_Static_assert(offsetof(cipc_channel_slot, owner) == 8 && offsetof(cipc_channel_slot, length) == 16, "channel slot offsets");
_Static_assert(sizeof(cipc_channel) == CIPC_CHANNEL_HEADER_SIZE, "channel header layout");
_Static_assert(offsetof(cipc_channel, tag) == 20, "the tag is at offset 20, as in every shared object");
_Static_assert(offsetof(cipc_channel, loan_heap_nonce) == 32 && offsetof(cipc_channel_slot, loan) == 24, "loan fields");
_Static_assert(offsetof(cipc_channel, orphans) == 64 && offsetof(cipc_channel, dropped_messages) == 104, "channel counters");
_Static_assert(offsetof(cipc_channel, message_type) == 128, "channel message type offset");
_Static_assert(offsetof(cipc_channel, send_position) == 256 && offsetof(cipc_channel, receive_position) == 320, "positions on lines of their own");
_Static_assert(offsetof(cipc_channel, exclusive_sender) == 40 && offsetof(cipc_channel, exclusive_receiver) == 48, "role words on the read-mostly line");
_Static_assert(offsetof(cipc_channel, exclusive_position) == 264, "the exclusive sender's position on the send position's line");
_Static_assert(offsetof(cipc_channel, receive_signal) == 384 && offsetof(cipc_channel, receivers_waiting) == 388, "receivers' line");
_Static_assert(offsetof(cipc_channel, descriptors_armed) == 392, "armed readiness descriptors on the receivers' line");
_Static_assert(sizeof(cipc_channel_participant) == CIPC_CHANNEL_PARTICIPANT_SIZE, "channel participant layout");
_Static_assert(offsetof(cipc_channel_participant, roles) == 8 && offsetof(cipc_channel_participant, notifier) == 16, "channel participant offsets");
_Static_assert(offsetof(cipc_channel_participant, receivers_waiting) == 32 && offsetof(cipc_channel_participant, senders_waiting) == 36, "a participant's waiter counts");
_Static_assert(offsetof(cipc_channel, send_signal) == 448 && offsetof(cipc_channel, senders_waiting) == 452, "senders' line");

// MARK: - POSIX message queues (a baseline of the channel benchmark)

/// `mq_open(name, oflag)`, or with O_CREAT `mq_open(name, oflag, mode, &{capacity, message_size})`
/// (variadic in C). Returns the queue descriptor or -1 with errno (ENOSYS where there are none).
int cipc_mq_open(const char *name, int oflag, unsigned int mode, long capacity, long message_size);
/// `mq_send(queue, bytes, count, 0)`, `mq_receive(queue, buffer, capacity, NULL)`, `mq_close`,
/// `mq_unlink` (<mqueue.h>, which Swift's Glibc module does not include).
int cipc_mq_send(int queue, const void *bytes, size_t count);
long cipc_mq_receive(int queue, void *buffer, size_t capacity);
int cipc_mq_close(int queue);
int cipc_mq_unlink(const char *name);

#ifdef __cplusplus
}
#endif
#endif
