#define _GNU_SOURCE
#include "CInterprocess.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#if defined(F_OFD_GETLK)
const int cipc_F_OFD_GETLK = F_OFD_GETLK;
const int cipc_F_OFD_SETLK = F_OFD_SETLK;
const int cipc_F_OFD_SETLKW = F_OFD_SETLKW;
#else
const int cipc_F_OFD_GETLK = -1;
const int cipc_F_OFD_SETLK = -1;
const int cipc_F_OFD_SETLKW = -1;
#endif

int cipc_fcntl_lock(int fd, int cmd, short type, int64_t start, int64_t len, short *type_out) {
    if (cmd < 0) { errno = ENOSYS; return -1; }
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)start;
    fl.l_len = (off_t)len;
    fl.l_pid = 0; // required to be 0 for OFD locks
    int rc = fcntl(fd, cmd, &fl);
    if (rc == 0 && type_out) *type_out = fl.l_type;
    return rc;
}

#if defined(O_TMPFILE)
const int cipc_O_TMPFILE = O_TMPFILE;
#else
const int cipc_O_TMPFILE = 0;
#endif

int cipc_pipe_cloexec(int fds[2]) {
#if defined(__linux__)
    return pipe2(fds, O_CLOEXEC);
#else
    if (pipe(fds) != 0) return -1;
    (void)fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    (void)fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
#endif
}

// The words the library's hot paths test inline (CInterprocess.h, "Words the hot paths test inline").
int cipc_crash_points_word = 0;
int cipc_fence_word = 0;

#if defined(__linux__)
const uint32_t cipc_FUTEX2_SIZE_U32 = 0x02;

int cipc_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns) {
    struct timespec ts, *tsp = NULL;
    if (deadline_ns >= 0) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000LL);
        ts.tv_nsec = (long)(deadline_ns % 1000000000LL);
        tsp = &ts;
    }
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (FUTEX_WAIT a relative one).
    return (int)syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
}

int cipc_futex_wake(uint32_t *word, int32_t count) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

int cipc_futex_waitv(cipc_futex_waiter *waiters, uint32_t count, int64_t deadline_ns) {
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
    struct timespec ts, *tsp = NULL;
    if (deadline_ns >= 0) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000LL);
        ts.tv_nsec = (long)(deadline_ns % 1000000000LL);
        tsp = &ts;
    }
    return (int)syscall(SYS_futex_waitv, waiters, count, 0, tsp, CLOCK_MONOTONIC);
}

int32_t cipc_gettid(void) {
    return (int32_t)syscall(SYS_gettid);
}

// <linux/membarrier.h>'s commands, spelled out (the header is not everywhere the libc is).
#define CIPC_MEMBARRIER_CMD_GLOBAL_EXPEDITED (1 << 1)
#define CIPC_MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED (1 << 2)
#ifdef SYS_membarrier
int cipc_membarrier_register_global(void) {
    return (int)syscall(SYS_membarrier, CIPC_MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0);
}

int cipc_membarrier_global(void) {
    return (int)syscall(SYS_membarrier, CIPC_MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}
#else
int cipc_membarrier_register_global(void) { errno = ENOSYS; return -1; }
int cipc_membarrier_global(void) { errno = ENOSYS; return -1; }
#endif

#else
const uint32_t cipc_FUTEX2_SIZE_U32 = 0x02;
int cipc_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns) {
    (void)word; (void)expected; (void)deadline_ns; errno = ENOSYS; return -1;
}
int cipc_futex_wake(uint32_t *word, int32_t count) { (void)word; (void)count; errno = ENOSYS; return -1; }
int cipc_futex_waitv(cipc_futex_waiter *w, uint32_t c, int64_t d) { (void)w; (void)c; (void)d; errno = ENOSYS; return -1; }
int32_t cipc_gettid(void) { return 0; }
int cipc_membarrier_register_global(void) { errno = ENOSYS; return -1; }
int cipc_membarrier_global(void) { errno = ENOSYS; return -1; }
#endif

// The shared heap's thread-local slots (CInterprocessThread.h).
__thread void *cipc_thread_slots[CIPC_THREAD_SLOTS];
