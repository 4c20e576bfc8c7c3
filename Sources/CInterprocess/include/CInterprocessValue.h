// CInterprocess, value part: the shared layout of a stored value — what `SharedMemory.store` /
// `write` keep in a segment, and what a `SharedWatchedValue` is made of. No logic: the protocol is
// documented here and implemented in Sources/Interprocess/Values/ValueFrame.swift. Included at the
// end of CInterprocess.h (it uses cipc_mutex and cipc_type_fingerprint); every field is pinned by
// LayoutTests.
#ifndef CINTERPROCESS_VALUE_H
#define CINTERPROCESS_VALUE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Value frame (layout "VFR1")
//
// A frame is a `cipc_value_frame` header (128 bytes) followed by two slots of `slot_capacity` bytes
// each (a multiple of 8): slot 0 at offset 128, slot 1 at 128 + slot_capacity. Its whole extent is
// 128 + 2 * slot_capacity bytes. All integers are little-endian; the words marked (atomic) are only
// ever read and written atomically.
//
// `sequence` (atomic) is the publish counter: 0 while nothing was stored; otherwise the value of
// store number `sequence` is in slot `sequence & 1`, `length[sequence & 1]` bytes long. Its low 32
// bits are the futex word that watchers park on.
//
// A store (writers take turns through `writer`, a robust `cipc_mutex`: a writer that dies holding it
// is taken over): with `s` = sequence, write the bytes into slot (s+1) & 1 — the slot nobody may
// read as current — then `length[(s+1) & 1]`, then publish `sequence` = s+1 (release), then wake the
// watchers if `waiters` is not 0. A writer killed before the publish leaves the old value; after it,
// the new one.
//
// A read (a seqlock: readers never write, never block a writer): s1 = sequence (acquire); 0 means
// nothing stored; n = length[s1 & 1] (n > slot_capacity: corrupt, unless the sequence moved); copy
// n bytes of slot s1 & 1; then (after an acquire fence) s2 = sequence: if s2 == s1 the copy is whole,
// otherwise a writer may have reused the slot meanwhile: start again.
//
// `tag` is 0 in a frame that was never laid out (a zero-filled segment: nothing stored yet) and
// CIPC_TAG_VALUE_FRAME once `slot_capacity` is set (written last, with release ordering).

#define CIPC_TAG_VALUE_FRAME 0x31524656u /* "VFR1" */
#define CIPC_VALUE_FRAME_HEADER_SIZE 128u

typedef struct cipc_value_frame {
    cipc_mutex writer;        ///<   0: writers take turns (robust: a dead writer's lock is taken over)
    uint64_t sequence;        ///<  64: (atomic) publish counter, 0 = nothing stored; low half: futex word
    uint32_t waiters;         ///<  72: (atomic) watchers parked on `sequence`
    uint32_t tag;             ///<  76: (atomic) CIPC_TAG_VALUE_FRAME once laid out, else 0
    uint64_t slot_capacity;   ///<  80: bytes of each slot, a multiple of 8
    uint64_t length[2];       ///<  88: (atomic) bytes of the value in slot 0 and slot 1
    uint64_t recoveries;      ///< 104: stores that took the lock over from a writer that died
    uint64_t reserved[2];     ///< 112
} cipc_value_frame;

_Static_assert(sizeof(cipc_value_frame) == CIPC_VALUE_FRAME_HEADER_SIZE, "value frame layout");
_Static_assert(offsetof(cipc_value_frame, sequence) == 64 && offsetof(cipc_value_frame, waiters) == 72, "value frame offsets");
_Static_assert(offsetof(cipc_value_frame, tag) == 76 && offsetof(cipc_value_frame, slot_capacity) == 80, "value frame offsets");
_Static_assert(offsetof(cipc_value_frame, length) == 88 && offsetof(cipc_value_frame, recoveries) == 104, "value frame offsets");

// MARK: - Watched value (layout "WCH1")
//
// A `SharedWatchedValue`: the payload of a segment of kind CIPC_KIND_WATCHED_VALUE is this header,
// then (at offset 192, inside it) a value frame and its two slots. Values are JSON; `value_type` is
// the fingerprint of the Swift type both sides agree on (size 0 and alignment 1 for a JSON type).

#define CIPC_TAG_WATCHED_VALUE 0x31484357u /* "WCH1" */
#define CIPC_WATCHED_VALUE_HEADER_SIZE 320u
/// `format`: the stored bytes are JSON.
#define CIPC_VALUE_FORMAT_JSON 1u

typedef struct cipc_watched_value {
    uint32_t format;                   ///<   0: CIPC_VALUE_FORMAT_JSON
    uint32_t reserved0[4];             ///<   4
    uint32_t tag;                      ///<  20: CIPC_TAG_WATCHED_VALUE (written last by the creator)
    uint64_t reserved1[5];             ///<  24
    cipc_type_fingerprint value_type;  ///<  64
    cipc_value_frame frame;            ///< 192: the frame; its slots follow the header
} cipc_watched_value;

_Static_assert(sizeof(cipc_watched_value) == CIPC_WATCHED_VALUE_HEADER_SIZE, "watched value layout");
_Static_assert(offsetof(cipc_watched_value, tag) == 20 && offsetof(cipc_watched_value, value_type) == 64, "watched value offsets");
_Static_assert(offsetof(cipc_watched_value, frame) == 192, "watched value frame offset");

#ifdef __cplusplus
}
#endif

#endif
