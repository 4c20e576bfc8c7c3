// CInterprocess, shared heap part: the layout of a `SharedHeap` (issue 12). No logic.
//
// A heap is one or more *stores*: named segments (kind 2, "heap"), each mapped at a different address
// in each process. Every location in the heap is therefore named by a *reference*, never a pointer:
//
//     reference = store index << 48 | byte offset within the store's payload      (0 = none)
//
// A store's payload starts with `cipc_heap_store_header`; store 0 (the segment named like the heap)
// continues with `cipc_heap_header` (the lock, the free lists, the journal), and every store then holds
// a sequence of blocks, each starting with a `cipc_heap_block`, ending with an end marker. Sizes are
// counted in granules of CIPC_HEAP_GRANULE bytes; every block starts at a granule boundary, and a block's
// payload follows its 16-byte header. All integers are little-endian; fields that change after creation
// are read and written atomically, through pointers, and changed only by the holder of `lock`, except
// `next_tag` (a hint), `recoveries` (a count), a thread's cache (`cipc_heap_cache`: its heads, and
// the state, info and link of a block moving between in use and CACHED), and the owner byte of a
// block in use that recycling re-tags from an ended process's record to CIPC_HEAP_ENDED_CLIENT (one
// compare-and-swap) — every other change is recorded in `journal` first.
#ifndef CINTERPROCESS_HEAP_H
#define CINTERPROCESS_HEAP_H

#include <stdint.h>
#include <stddef.h>
#include "CInterprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CIPC_TAG_HEAP       0x31504548u /* "HEP1": cipc_heap_header.tag */
#define CIPC_TAG_HEAP_STORE 0x31545348u /* "HST1": cipc_heap_store_header.tag */
#define CIPC_HEAP_VERSION 3u /* 3: owner CIPC_HEAP_ENDED_CLIENT (recycled client records) */

/// Bytes per granule: the unit of block sizes, and the alignment of every payload.
#define CIPC_HEAP_GRANULE 16u
/// The smallest block, in granules: a header and the two links of a free block.
#define CIPC_HEAP_MIN_BLOCK 2u
/// Blocks smaller than this many granules are freed onto *quick* lists (one per exact size), not
/// merged with their neighbours until the heap consolidates (when an allocation finds no fit).
#define CIPC_HEAP_QUICK_LIMIT 32u
/// Size classes of the free lists: exact sizes below 32 granules, then 8 classes per power of two.
#define CIPC_HEAP_CLASSES 248u
#define CIPC_HEAP_MAX_STORES 64u
#define CIPC_HEAP_CLIENTS 64u
/// The owner (`cipc_heap_block.info` bits 0..7) of a block in use whose process ended and whose client
/// record was recycled for another process: "ended processes", which one is no longer known.
#define CIPC_HEAP_ENDED_CLIENT 0xFFu
#define CIPC_HEAP_JOURNAL_CAPACITY 48u
/// Where `cipc_heap_header` starts in store 0's payload (right after its store header).
#define CIPC_HEAP_HEADER_OFFSET 64u

// References and shared pointers.
#define CIPC_HEAP_REF_OFFSET_MASK 0x0000FFFFFFFFFFFFull
#define CIPC_HEAP_REF_STORE_SHIFT 48u
/// A SharedPointer word: bits 0..33 the payload's offset in granules, bits 34..39 the store, bits
/// 40..63 the allocation's tag (never 0, so the word of a live block is never 0).
#define CIPC_HEAP_POINTER_GRANULE_BITS 34u
#define CIPC_HEAP_POINTER_STORE_SHIFT 34u
#define CIPC_HEAP_POINTER_TAG_SHIFT 40u
#define CIPC_HEAP_TAG_MASK 0x00FFFFFFu

// Block states (`cipc_heap_block.state`).
/// In use: this bit | the allocation's 24-bit tag (non-zero).
#define CIPC_HEAP_IN_USE 0x80000000u
/// Free, merged with its neighbours, on the list of its size class.
#define CIPC_HEAP_FREE   0x45455246u /* "FREE" */
/// Free, on the quick list of its exact size; its neighbours treat it as in use.
#define CIPC_HEAP_QUICK  0x4B435551u /* "QUCK" */
/// The end marker of a store (a header only, size 1).
#define CIPC_HEAP_END    0x20444E45u /* "END " */
/// Free, in one thread's cache of one process (see `cipc_heap_cache`); its neighbours treat it as in
/// use. `info`: the caching process's client index (bits 0..7) | the tag it had last (bits 8..31).
#define CIPC_HEAP_CACHED 0x48434143u /* "CACH" */
/// A cache record (`cipc_heap_cache` in its payload). `info`: its process's client index (bits 0..7).
#define CIPC_HEAP_CACHE_RECORD 0x43455243u /* "CREC" */

/// The header of every block (and of the end marker).
typedef struct cipc_heap_block {
    uint32_t prev_size; ///<  0: granules of the block before this one while that block is FREE, else 0
    uint32_t size;      ///<  4: granules of this block, header included (>= 2; 1 for the end marker)
    uint32_t state;     ///<  8: CIPC_HEAP_IN_USE | tag, CIPC_HEAP_FREE, CIPC_HEAP_QUICK or CIPC_HEAP_END
    uint32_t info;      ///< 12: in use: client index or CIPC_HEAP_ENDED_CLIENT (bits 0..7) | unused
                        ///<     bytes at the payload's end (bits 8..15); free or quick: the tag the
                        ///<     block had last (a hint)
} cipc_heap_block;

/// A block that is FREE or QUICK: its header, then two references in what would be its payload.
typedef struct cipc_heap_free_block {
    cipc_heap_block header;
    uint64_t next;      ///< 16: the next block on its list, 0 at the end
    uint64_t prev;      ///< 24: the previous block on its list, 0 at the head (quick lists: always 0)
} cipc_heap_free_block;

/// The start of every store's payload.
typedef struct cipc_heap_store_header {
    uint32_t tag;         ///<  0: CIPC_TAG_HEAP_STORE
    uint32_t index;       ///<  4: the store's index in its heap (0 for the segment named like the heap)
    uint64_t nonce;       ///<  8: the heap's nonce (a store of another heap is not ours)
    uint64_t size;        ///< 16: payload bytes of the store's segment
    uint64_t first_block; ///< 24: offset of the first block
    uint64_t end_block;   ///< 32: offset of the end marker (size - 16)
    uint64_t reserved[3]; ///< 40
} cipc_heap_store_header;

/// One process that allocates from the heap: blocks record the index of their allocator's record.
/// Record 0 stands for named objects and for processes that found no free record. A process that
/// finds no free record recycles those of ended processes: their blocks are re-tagged
/// CIPC_HEAP_ENDED_CLIENT, then each record's token is set to 0 (journaled).
typedef struct cipc_heap_client {
    uint64_t token;     ///< 0: the process's owner token in store 0's file (see CIPC_TOKEN_*), 0 = free
    uint32_t pid;       ///< 8: its pid as it saw it (display only)
    uint32_t caches;    ///< 12: cache records the process made (0: it caches nothing; may overcount)
} cipc_heap_client;

/// The payload of a cache record: one thread's cache of small free blocks, in one process. Only that
/// thread writes it, without the heap's lock and without the journal; everyone else reads it only
/// once its process is dead (and then does not need to: cached blocks are found by their state).
typedef struct cipc_heap_cache {
    uint64_t heads[CIPC_HEAP_QUICK_LIMIT]; ///< 0: by exact size in granules, a list of CACHED blocks
                                           ///<    linked through their `next` (0 at the end)
} cipc_heap_cache;

/// One undo record: what `target` held before the operation wrote it.
typedef struct cipc_heap_journal_entry {
    uint64_t target;    ///< 0: a reference | width in bytes (4 or 8) << 56
    uint64_t old_value; ///< 8
} cipc_heap_journal_entry;

/// The undo journal of the operation in progress. Before each write to the heap's metadata, its
/// holder records the old value in `entries[count]` and only then increments `count`; the operation
/// ends by setting `count` to 0. Whoever takes the lock over from a dead holder restores the recorded
/// values in reverse order, so that the dead holder's operation never happened.
typedef struct cipc_heap_journal {
    uint32_t count;     ///< 0: records of the operation in progress (0: none)
    uint32_t reserved;  ///< 4
    uint64_t sequence;  ///< 8: operations completed (wraps; informational)
    cipc_heap_journal_entry entries[CIPC_HEAP_JOURNAL_CAPACITY]; ///< 16
} cipc_heap_journal;

#define CIPC_HEAP_JOURNAL_WIDTH_SHIFT 56u

/// The heap's own header, at CIPC_HEAP_HEADER_OFFSET in store 0's payload.
typedef struct cipc_heap_header {
    uint32_t tag;               ///<    0: CIPC_TAG_HEAP
    uint32_t version;           ///<    4: CIPC_HEAP_VERSION
    uint64_t nonce;             ///<    8: random, non-zero: this heap's identity (names its stores)
    uint64_t maximum_capacity;  ///<   16: bytes all stores' payloads may add up to
    uint64_t capacity;          ///<   24: bytes of the published stores' payloads
    uint32_t store_count;       ///<   32: published stores (1..CIPC_HEAP_MAX_STORES)
    uint32_t next_tag;          ///<   36: the tag the next allocation takes (a hint, not journaled)
    uint64_t growth_size;       ///<   40: the smallest store that growth adds
    uint64_t recoveries;        ///<   48: journals undone after their writer died (not journaled)
    uint64_t reserved0;         ///<   56
    cipc_mutex lock;            ///<   64: the robust lock every change is made under
    uint64_t class_bitmap[4];   ///<  128: bit c set exactly while heads[c] != 0
    uint64_t directory;         ///<  160: pointer word of the first chunk of named objects (0: none)
    uint64_t reserved1[3];      ///<  168
    uint64_t quick_heads[CIPC_HEAP_QUICK_LIMIT]; ///< 192: quick lists, by exact size in granules
    uint64_t heads[256];        ///<  448: free lists, by size class (CIPC_HEAP_CLASSES used)
    cipc_heap_client clients[CIPC_HEAP_CLIENTS]; ///< 2496
    cipc_heap_journal journal;  ///< 3520
} cipc_heap_header;

// Named objects (SharedHeap.findOrCreate / find / destroy): a chain of directory chunks, each a block
// of the heap, the first named by `cipc_heap_header.directory`, each naming the next. A chunk's
// entries name one object each: a block of the heap, by its pointer word. Chunks are never freed.

#define CIPC_TAG_HEAP_DIRECTORY 0x31524448u /* "HDR1": cipc_heap_directory.tag */
/// An entry in use (`cipc_heap_name.state`); 0 = free (its other fields mean nothing then).
#define CIPC_HEAP_NAME_LIVE 0x454D414Eu /* "NAME" */
/// The longest name of a named object, in bytes of UTF-8.
#define CIPC_HEAP_NAME_CAPACITY 96u
/// Entries per directory chunk.
#define CIPC_HEAP_DIRECTORY_ENTRIES 8u

/// One named object.
typedef struct cipc_heap_name {
    uint32_t state;         ///<   0: CIPC_HEAP_NAME_LIVE, or 0 (free)
    uint32_t name_length;   ///<   4: bytes of the name, 1..CIPC_HEAP_NAME_CAPACITY
    uint64_t name_hash;     ///<   8: FNV-1a 64 of the name
    uint64_t object;        ///<  16: the pointer word of the object's block
    uint64_t byte_count;    ///<  24: bytes the object was created with (its block holds exactly these)
    uint8_t  name[CIPC_HEAP_NAME_CAPACITY]; ///< 32: the name, zero-padded
    cipc_type_fingerprint type; ///< 128: what the object holds (checked by every find)
} cipc_heap_name;

/// A chunk of the directory of named objects: the payload of a block of the heap.
typedef struct cipc_heap_directory {
    uint32_t tag;           ///<   0: CIPC_TAG_HEAP_DIRECTORY
    uint32_t capacity;      ///<   4: CIPC_HEAP_DIRECTORY_ENTRIES
    uint64_t next;          ///<   8: the pointer word of the next chunk, 0 for the last
    uint64_t reserved[6];   ///<  16
    cipc_heap_name entries[CIPC_HEAP_DIRECTORY_ENTRIES]; ///< 64
} cipc_heap_directory;

_Static_assert(sizeof(cipc_heap_name) == 256 && offsetof(cipc_heap_name, type) == 128, "named object entry layout");
_Static_assert(sizeof(cipc_heap_directory) == 64 + 256 * CIPC_HEAP_DIRECTORY_ENTRIES, "directory chunk layout");
_Static_assert(offsetof(cipc_heap_header, directory) == 160, "heap header offsets");

_Static_assert(sizeof(cipc_heap_block) == CIPC_HEAP_GRANULE, "block header layout");
_Static_assert(offsetof(cipc_heap_block, info) == offsetof(cipc_heap_block, state) + 4, "block header layout");
_Static_assert(sizeof(cipc_heap_free_block) == CIPC_HEAP_MIN_BLOCK * CIPC_HEAP_GRANULE, "free block layout");
_Static_assert(offsetof(cipc_heap_free_block, next) == 16 && offsetof(cipc_heap_free_block, prev) == 24, "free block links");
_Static_assert(sizeof(cipc_heap_store_header) == CIPC_HEAP_HEADER_OFFSET, "store header layout");
_Static_assert(offsetof(cipc_heap_store_header, first_block) == 24 && offsetof(cipc_heap_store_header, end_block) == 32, "store header offsets");
_Static_assert(sizeof(cipc_heap_client) == 16, "client record layout");
_Static_assert(CIPC_HEAP_CLIENTS <= CIPC_HEAP_ENDED_CLIENT, "the owner of ended processes is no client record");
_Static_assert(sizeof(cipc_heap_cache) == 8 * CIPC_HEAP_QUICK_LIMIT, "cache record layout");
_Static_assert(sizeof(cipc_heap_journal_entry) == 16, "journal entry layout");
_Static_assert(sizeof(cipc_heap_journal) == 16 + 16 * CIPC_HEAP_JOURNAL_CAPACITY, "journal layout");
_Static_assert(offsetof(cipc_heap_header, lock) == 64 && offsetof(cipc_heap_header, lock) % 64 == 0, "lock on its own cache line");
_Static_assert(offsetof(cipc_heap_header, class_bitmap) == 128, "heap header offsets");
_Static_assert(offsetof(cipc_heap_header, quick_heads) == 192, "heap header offsets");
_Static_assert(offsetof(cipc_heap_header, heads) == 448, "heap header offsets");
_Static_assert(offsetof(cipc_heap_header, clients) == 2496, "heap header offsets");
_Static_assert(offsetof(cipc_heap_header, journal) == 3520, "heap header offsets");
_Static_assert(sizeof(cipc_heap_header) == 3520 + sizeof(cipc_heap_journal), "heap header size");
_Static_assert((CIPC_HEAP_HEADER_OFFSET + offsetof(cipc_heap_header, lock)) % 64 == 0, "the lock is 64-byte aligned in the payload");
_Static_assert(CIPC_HEAP_CLASSES <= 256 && CIPC_HEAP_QUICK_LIMIT <= CIPC_HEAP_CLASSES, "class counts");
_Static_assert(CIPC_HEAP_MAX_STORES <= (1u << (CIPC_HEAP_POINTER_TAG_SHIFT - CIPC_HEAP_POINTER_STORE_SHIFT)), "store index fits a pointer word");
_Static_assert((CIPC_HEAP_IN_USE & CIPC_HEAP_FREE) == 0 && (CIPC_HEAP_IN_USE & CIPC_HEAP_QUICK) == 0 && (CIPC_HEAP_IN_USE & CIPC_HEAP_END) == 0
               && (CIPC_HEAP_IN_USE & CIPC_HEAP_CACHED) == 0 && (CIPC_HEAP_IN_USE & CIPC_HEAP_CACHE_RECORD) == 0, "state words are told apart by bit 31");

#ifdef __cplusplus
}
#endif
#endif
