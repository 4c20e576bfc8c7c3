// CInterprocess, service part: the shared layout of a `Service` (request / response between
// processes). No logic: the protocol is documented here field by field and implemented in
// Sources/Interprocess/Channels/ServiceCore.swift. Included at the end of CInterprocess.h (it uses
// cipc_type_fingerprint and cipc_channel); every field is pinned by LayoutTests.
#ifndef CINTERPROCESS_SERVICE_H
#define CINTERPROCESS_SERVICE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Service (layout "SRV3")
//
// A service is a `cipc_service` header (512 bytes), then at `queue_offset` a request queue (a whole
// channel, `cipc_channel` and its slots, CInterprocessChannel.h, of `slot_count` slots of
// 16 + max_request_size bytes, format CIPC_CHANNEL_FORMAT_BYTES), then at `slots_offset`
// `slot_count` reply slots, `slot_stride` bytes apart (a multiple of 64), each a
// `cipc_service_slot` header (64 bytes) and room for `max_response_size` bytes of reply, then (a
// service created by this version) its table of participants (below). It lives at
// the payload offset of a segment of kind CIPC_KIND_SERVICE (6). Little-endian; the words marked
// (atomic) are only ever read and written atomically.
//
// A request. A client takes a free reply slot (its `client` word from 0 to its owner token, then
// `control` from (t, FREE) to (t + 1, PENDING) with `server` 0), sends a queue message made of a
// `cipc_service_request` (the slot's index and the ticket t + 1) and the request's bytes, and waits
// on the slot's `signal` for its reply. A server that receives the message, while it still holds
// the queue slot, moves `control` and `server` together (a 16-byte compare-and-swap) from
// (t + 1, PENDING, s) to (t + 1, SERVING, its token), and only then releases the queue slot. It
// replies by writing the bytes after the slot's header (the slot is its own while it is SERVING:
// nobody else moves it on while the server lives), then moving the pair with one 16-byte
// compare-and-swap from (t + 1, SERVING, its token) to (t + 1, REPLIED, the reply's length) (or
// FAILED: the bytes are a UTF-8 reason), then, only if `waiting` is not 0, bumping `signal` and
// waking the client (a client counts itself in `waiting` before its last look at `control`, both
// sequentially consistent, so one of the two sees the other; a client that spins sees the phase
// change). The slot's first line, which the client spins on, is written once per reply (SRV2 wrote
// it three times: WRITING, `length`, REPLIED). The client copies the reply out, moves `control` to
// (t + 1, FREE) and clears `client`. A message whose ticket is not the slot's current one, or whose slot is not PENDING, is
// stale (its client gave up): servers pass over it. Tickets only grow (56 bits), so a late reply
// never reaches a later request of the same slot.
//
// Giving up. A client that times out or is cancelled moves (t, PENDING | REPLIED | FAILED) to
// (t, FREE) and clears `client`. A client that gives up while a server has its request moves
// (t, SERVING, s) to (t, ABANDONED, s) and leaves: the server's publishing exchange then fails, the
// reply is discarded (`discarded_replies`) and the server frees the slot.
//
// Processes that die. A client that waits checks, every 50 ms, whether the server named in `server`
// (SERVING) is alive, and fails the request with `serverDied` if it is not (freeing the
// slot). A server killed after taking a queue message and before marking the slot SERVING leaves an
// orphan in the queue, which the channel redelivers to another server. A client that needs a slot
// and finds none free reclaims slots whose `client` is dead (not those SERVING by a live server,
// which may be writing into them: they are reclaimed once replied), and slots SERVING or ABANDONED
// by a server that died.
// Exclusive server. One process may hold the request queue's receiver role alone (the channel's
// `exclusive_receiver`, "Exclusive endpoints" in CInterprocessChannel.h): it takes requests
// without the queue's owner word and position compare-and-swaps; the reply slots' protocol is the
// same. Its death is repaired as the channel's exclusive receiver's: a request it was taking,
// before its reply slot went SERVING, is taken again by the next server; after, it is stale.
// Bit 31 (CIPC_TOKEN_FLAG) is never set in these token words.
//
// Participants. A service created by this version has a table of CIPC_CHANNEL_PARTICIPANTS
// `cipc_channel_participant` entries (CInterprocessChannel.h) right after its reply slots, at
// CIPC_SERVICE_PARTICIPANTS_OFFSET(slots_offset, slot_count, slot_stride) (`state_size` = that offset +
// CIPC_SERVICE_PARTICIPANTS_SIZE; a service without it, whose `state_size` ends with the reply slots,
// works and has no participants). The protocol is the channel's: one entry per process that has the
// service open, its handles, its roles — CIPC_CHANNEL_ROLE_SENDER: a *client* (it queued a request),
// CIPC_CHANNEL_ROLE_RECEIVER: a *server* (it asked for, or took, a request) — and a readiness
// descriptor's `notifier`, whose socket file is `srvready-<FNV-1a 64 of the service name, 16 hex>-
// <notifier, 16 hex>` in the user's runtime directory. The armed bits are the request queue's own
// `descriptors_armed` (at CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET of the state): bit i asks for a
// datagram to entry i's socket when the next request is queued; a client loads the word after it
// published its queue message (sequentially consistent, as a channel's sender does), a server sets
// its bit before it looks at the queue.

#define CIPC_TAG_SERVICE 0x33565253u /* "SRV3" */
/// The tag of the layout whose servers moved a slot to WRITING before they wrote a reply, and wrote
/// its length at offset 32 of the slot: refused as an older layout (`incompatible`).
#define CIPC_TAG_SERVICE_V2 0x32565253u /* "SRV2" */
/// The tag of the layout before the clients' and servers' lines (counters at 64...127 written by
/// both sides, slot waiters at 384): refused as an older layout (`incompatible`).
#define CIPC_TAG_SERVICE_V1 0x31565253u /* "SRV1" */
#define CIPC_SERVICE_HEADER_SIZE 512u
#define CIPC_SERVICE_SLOT_HEADER_SIZE 64u
#define CIPC_SERVICE_REQUEST_HEADER_SIZE 16u
#define CIPC_SERVICE_MAX_SLOTS (1u << 16)
#define CIPC_SERVICE_MAX_MESSAGE_SIZE (1u << 24)
/// The table of participants: where it starts (after the reply slots) and its bytes.
#define CIPC_SERVICE_PARTICIPANTS_OFFSET(slots_offset, slot_count, slot_stride) \
    ((uint64_t)(slots_offset) + (uint64_t)(slot_count) * (uint64_t)(slot_stride))
#define CIPC_SERVICE_PARTICIPANTS_SIZE (CIPC_CHANNEL_PARTICIPANTS * CIPC_CHANNEL_PARTICIPANT_SIZE)
/// Where the armed readiness descriptors' bits are: the request queue's `descriptors_armed`.
#define CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET (CIPC_SERVICE_HEADER_SIZE + 392u)

/// The phase of a reply slot: the low 8 bits of `control` (the ticket is the high 56).
#define CIPC_SERVICE_FREE    0u /* nobody's (or being taken / let go by the process in `client`) */
#define CIPC_SERVICE_PENDING 1u /* the request is (being) queued; no server has it */
#define CIPC_SERVICE_SERVING 2u /* the server in `server` is handling it */
#define CIPC_SERVICE_WRITING 3u /* SRV2 only (its server writing the reply); never in SRV3: corrupt */
#define CIPC_SERVICE_REPLIED 4u /* the reply is in */
#define CIPC_SERVICE_FAILED  5u /* the server refused: the bytes are a UTF-8 reason */
#define CIPC_SERVICE_ABANDONED 6u /* the client gave up while the server in `server` had it: that server frees the slot */

/// A queue message starts with this; the request's bytes follow it.
typedef struct cipc_service_request {
    uint32_t slot;       ///< 0: the reply slot's index, < slot_count
    uint32_t reserved;   ///< 4
    uint64_t ticket;     ///< 8: the slot's ticket for this request
} cipc_service_request;

/// One reply slot's header; the reply's bytes follow it. `control` and `server` are one 16-byte
/// atomic pair (aligned to 16).
typedef struct cipc_service_slot {
    uint64_t control;    ///<  0: ticket << 8 | phase (atomic, paired with `server`)
    uint64_t server;     ///<  8: the handling server's token in SERVING and ABANDONED; the reply's length in REPLIED and FAILED; else 0
    uint64_t client;     ///< 16: the token of the client that holds the slot, 0 if free (atomic)
    uint32_t signal;     ///< 24: futex word of the waiting client, bumped when the reply is in (atomic)
    uint32_t waiting;    ///< 28: 1 while the client is parked (atomic)
    uint32_t length;     ///< 32: reserved (SRV2: bytes of the reply; SRV3 publishes them in `server`)
    uint32_t reserved0;  ///< 36
    uint8_t  reserved1[24]; ///< 40
} cipc_service_slot;

typedef struct cipc_service {
    // Fixed at creation: an opener checks them once and keeps its own copy.
    uint32_t slot_count;        ///<   0: reply slots = requests in flight at most, 1...CIPC_SERVICE_MAX_SLOTS
    uint32_t max_request_size;  ///<   4: 1...CIPC_SERVICE_MAX_MESSAGE_SIZE
    uint32_t max_response_size; ///<   8: 1...CIPC_SERVICE_MAX_MESSAGE_SIZE
    uint32_t slot_stride;       ///<  12: 64 + max_response_size rounded up to 64
    uint32_t request_format;    ///<  16: CIPC_CHANNEL_FORMAT_*
    uint32_t tag;               ///<  20: CIPC_TAG_SERVICE, written last by the creator
    uint64_t state_size;        ///<  24: slots_offset + slot_count * slot_stride [+ CIPC_SERVICE_PARTICIPANTS_SIZE]
    uint32_t response_format;   ///<  32: CIPC_CHANNEL_FORMAT_*
    uint32_t queue_offset;      ///<  36: CIPC_SERVICE_HEADER_SIZE
    uint64_t queue_size;        ///<  40: the request queue's bytes (its state_size)
    uint64_t slots_offset;      ///<  48: queue_offset + queue_size
    uint64_t reserved0;         ///<  56
    // The clients' line: written by clients (and by a server that frees a slot abandoned while it
    // wrote, rarely): a request writes no word of the header that a server writes, so that the two
    // sides do not pass a header line back and forth on every request (they did in "SRV1").
    uint64_t requests;          ///<  64: requests queued (atomic)
    uint64_t server_deaths;     ///<  72: requests failed because their server died (atomic)
    uint64_t reclaimed_slots;   ///<  80: slots of clients that died, taken back (atomic)
    uint32_t slot_signal;       ///<  88: futex word of clients waiting for a free slot, bumped when a slot is let go (atomic)
    uint32_t slot_waiters;      ///<  92: clients parked or about to park for a slot (atomic)
    uint32_t slot_hint;         ///<  96: where the next client looks for a free slot (atomic)
    uint8_t  reserved1[28];     ///< 100
    cipc_type_fingerprint request_type;  ///< 128: opened as another type, `incompatible`
    cipc_type_fingerprint response_type; ///< 256
    // The servers' line: written by servers (and by a client that gives up on a reply, rarely).
    uint64_t replies;           ///< 384: replies (and refusals) written for a waiting client (atomic)
    uint64_t discarded_replies; ///< 392: replies whose client had given up or died (atomic)
    uint64_t stale_requests;    ///< 400: queue messages passed over: their client gave up (atomic)
    uint8_t  reserved2[104];    ///< 408
} cipc_service;

_Static_assert(sizeof(cipc_service_request) == CIPC_SERVICE_REQUEST_HEADER_SIZE, "service request header");
_Static_assert(sizeof(cipc_service_slot) == CIPC_SERVICE_SLOT_HEADER_SIZE, "service slot layout");
_Static_assert(offsetof(cipc_service_slot, client) == 16 && offsetof(cipc_service_slot, signal) == 24, "service slot offsets");
_Static_assert(offsetof(cipc_service_slot, length) == 32, "service slot length");
_Static_assert(sizeof(cipc_service) == CIPC_SERVICE_HEADER_SIZE, "service header layout");
_Static_assert(offsetof(cipc_service, tag) == 20, "the tag is at offset 20, as in every shared object");
_Static_assert(offsetof(cipc_service, requests) == 64 && offsetof(cipc_service, slot_signal) == 88 && offsetof(cipc_service, slot_hint) == 96,
               "the clients' line");
_Static_assert(offsetof(cipc_service, request_type) == 128 && offsetof(cipc_service, response_type) == 256, "service types");
_Static_assert(offsetof(cipc_service, replies) == 384 && offsetof(cipc_service, stale_requests) == 400, "the servers' line");
_Static_assert(CIPC_SERVICE_DESCRIPTORS_ARMED_OFFSET == CIPC_SERVICE_HEADER_SIZE + offsetof(cipc_channel, descriptors_armed),
               "a service's armed readiness descriptors are its request queue's word");
_Static_assert(CIPC_SERVICE_PARTICIPANTS_SIZE == 4096u, "a service's table of participants: 64 entries of 64 bytes");
_Static_assert(sizeof(cipc_channel_participant) == CIPC_CHANNEL_PARTICIPANT_SIZE, "a service's participants are a channel's");

#ifdef __cplusplus
}
#endif
#endif
