// POSIX message queues: mq_open is variadic (mode and attributes), and Swift's Glibc module has no
// <mqueue.h>, so Swift calls these instead. The
// channel benchmark's baseline (`ipc bench`). No logic.
#include "CInterprocess.h"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#if defined(__linux__)
#include <mqueue.h>
#endif

int cipc_mq_open(const char *name, int oflag, unsigned int mode, long capacity, long message_size) {
#if defined(__linux__)
    if (oflag & O_CREAT) {
        struct mq_attr attributes = { 0 };
        attributes.mq_maxmsg = capacity;
        attributes.mq_msgsize = message_size;
        return (int)mq_open(name, oflag, (mode_t)mode, &attributes);
    }
    return (int)mq_open(name, oflag);
#else
    (void)name; (void)oflag; (void)mode; (void)capacity; (void)message_size;
    errno = ENOSYS;
    return -1;
#endif
}

int cipc_mq_send(int queue, const void *bytes, size_t count) {
#if defined(__linux__)
    return mq_send((mqd_t)queue, (const char *)bytes, count, 0);
#else
    (void)queue; (void)bytes; (void)count;
    errno = ENOSYS;
    return -1;
#endif
}

long cipc_mq_receive(int queue, void *buffer, size_t capacity) {
#if defined(__linux__)
    return (long)mq_receive((mqd_t)queue, (char *)buffer, capacity, NULL);
#else
    (void)queue; (void)buffer; (void)capacity;
    errno = ENOSYS;
    return -1;
#endif
}

int cipc_mq_close(int queue) {
#if defined(__linux__)
    return mq_close((mqd_t)queue);
#else
    (void)queue;
    errno = ENOSYS;
    return -1;
#endif
}

int cipc_mq_unlink(const char *name) {
#if defined(__linux__)
    return mq_unlink(name);
#else
    (void)name;
    errno = ENOSYS;
    return -1;
#endif
}
