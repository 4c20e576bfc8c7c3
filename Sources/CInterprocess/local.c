#define _GNU_SOURCE
#include "CInterprocessLocal.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <sys/syscall.h>
#endif

struct cmsghdr *cipc_CMSG_FIRSTHDR(const struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *cipc_CMSG_NXTHDR(const struct msghdr *msg, const struct cmsghdr *cmsg) {
    return CMSG_NXTHDR((struct msghdr *)msg, (struct cmsghdr *)cmsg);
}
unsigned char *cipc_CMSG_DATA(const struct cmsghdr *cmsg) { return (unsigned char *)CMSG_DATA(cmsg); }
size_t cipc_CMSG_SPACE(size_t length) { return CMSG_SPACE(length); }
size_t cipc_CMSG_LEN(size_t length) { return CMSG_LEN(length); }

const int cipc_SCM_RIGHTS = SCM_RIGHTS;
#if defined(__linux__)
const int cipc_SCM_CREDENTIALS = SCM_CREDENTIALS;
const int cipc_SO_PEERCRED = SO_PEERCRED;
const int cipc_SO_PASSCRED = SO_PASSCRED;
const int cipc_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;
const size_t cipc_credentials_size = sizeof(struct ucred);
#else
const int cipc_SCM_CREDENTIALS = -1;
const int cipc_SO_PEERCRED = -1;
const int cipc_SO_PASSCRED = -1;
const int cipc_MSG_CMSG_CLOEXEC = 0;
const size_t cipc_credentials_size = 0;
#endif
#if defined(MSG_NOSIGNAL)
const int cipc_MSG_NOSIGNAL = MSG_NOSIGNAL;
#else
const int cipc_MSG_NOSIGNAL = 0;
#endif

int cipc_peer_credentials(int fd, cipc_credentials *out) {
#if defined(__linux__)
    struct ucred cred;
    socklen_t length = sizeof cred;
    memset(&cred, 0, sizeof cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return -1;
    out->pid = (int32_t)cred.pid;
    out->uid = (uint32_t)cred.uid;
    out->gid = (uint32_t)cred.gid;
    return 0;
#else
    (void)fd; (void)out; errno = ENOSYS; return -1;
#endif
}

void cipc_read_credentials(const unsigned char *data, cipc_credentials *out) {
#if defined(__linux__)
    struct ucred cred;
    memcpy(&cred, data, sizeof cred);
    out->pid = (int32_t)cred.pid;
    out->uid = (uint32_t)cred.uid;
    out->gid = (uint32_t)cred.gid;
#else
    (void)data; memset(out, 0, sizeof *out);
#endif
}

int cipc_accept_cloexec(int fd) {
#if defined(__linux__)
    return accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
    int accepted = accept(fd, NULL, NULL);
    if (accepted < 0) return -1;
    (void)fcntl(accepted, F_SETFD, FD_CLOEXEC);
    (void)fcntl(accepted, F_SETFL, fcntl(accepted, F_GETFL) | O_NONBLOCK);
    return accepted;
#endif
}

#if defined(__linux__)
const unsigned int cipc_MFD_CLOEXEC = MFD_CLOEXEC;
const unsigned int cipc_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;
const int cipc_F_ADD_SEALS = F_ADD_SEALS;
const int cipc_F_GET_SEALS = F_GET_SEALS;
const int cipc_F_SEAL_SEAL = F_SEAL_SEAL;
const int cipc_F_SEAL_SHRINK = F_SEAL_SHRINK;
const int cipc_F_SEAL_GROW = F_SEAL_GROW;
const int cipc_F_SEAL_WRITE = F_SEAL_WRITE;

int cipc_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}
#else
const unsigned int cipc_MFD_CLOEXEC = 0;
const unsigned int cipc_MFD_ALLOW_SEALING = 0;
const int cipc_F_ADD_SEALS = -1;
const int cipc_F_GET_SEALS = -1;
const int cipc_F_SEAL_SEAL = 0;
const int cipc_F_SEAL_SHRINK = 0;
const int cipc_F_SEAL_GROW = 0;
const int cipc_F_SEAL_WRITE = 0;
int cipc_memfd_create(const char *name, unsigned int flags) { (void)name; (void)flags; errno = ENOSYS; return -1; }
#endif

int cipc_fcntl_int(int fd, int cmd, int arg) {
    if (cmd < 0) { errno = ENOSYS; return -1; }
    return fcntl(fd, cmd, arg);
}
