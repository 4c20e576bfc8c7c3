// CInterprocess, local IPC part: what Swift cannot call or see for Unix domain sockets, descriptor
// passing and sealed memory files — the CMSG_* macros, `struct ucred` (hidden behind _GNU_SOURCE),
// memfd_create and the F_SEAL_* constants. No logic.
#ifndef CINTERPROCESS_LOCAL_H
#define CINTERPROCESS_LOCAL_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Ancillary data (the CMSG_* macros as functions)

struct cmsghdr *cipc_CMSG_FIRSTHDR(const struct msghdr *msg);
struct cmsghdr *cipc_CMSG_NXTHDR(const struct msghdr *msg, const struct cmsghdr *cmsg);
unsigned char *cipc_CMSG_DATA(const struct cmsghdr *cmsg);
size_t cipc_CMSG_SPACE(size_t length);
size_t cipc_CMSG_LEN(size_t length);

/// SOL_SOCKET-level ancillary types and options: SCM_RIGHTS, SCM_CREDENTIALS (Linux; -1 elsewhere),
/// SO_PEERCRED / SO_PASSCRED (Linux; -1 elsewhere), MSG_CMSG_CLOEXEC (0 where missing), MSG_NOSIGNAL
/// (0 where missing).
extern const int cipc_SCM_RIGHTS;
extern const int cipc_SCM_CREDENTIALS;
extern const int cipc_SO_PEERCRED;
extern const int cipc_SO_PASSCRED;
extern const int cipc_MSG_CMSG_CLOEXEC;
extern const int cipc_MSG_NOSIGNAL;

/// The credentials of a Unix domain socket's peer (Linux `struct ucred`).
typedef struct cipc_credentials {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} cipc_credentials;

/// getsockopt(fd, SOL_SOCKET, SO_PEERCRED): the peer's credentials as of connect / socketpair.
/// Returns 0 or -1 with errno (ENOSYS where the platform has no SO_PEERCRED).
int cipc_peer_credentials(int fd, cipc_credentials *out);

/// Reads the `struct ucred` carried by an SCM_CREDENTIALS control message.
void cipc_read_credentials(const unsigned char *data, cipc_credentials *out);

/// Bytes of `struct ucred` (the payload of an SCM_CREDENTIALS message), 0 where there is none.
extern const size_t cipc_credentials_size;

/// accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK) (Linux; elsewhere accept + fcntl, which
/// leaves a window in which a concurrent spawn inherits the descriptor). -1 with errno on failure.
int cipc_accept_cloexec(int fd);

// MARK: - Sealed anonymous memory (Linux memfd)

/// memfd_create(name, flags). Returns a descriptor or -1 with errno (ENOSYS where missing).
int cipc_memfd_create(const char *name, unsigned int flags);

extern const unsigned int cipc_MFD_CLOEXEC;
extern const unsigned int cipc_MFD_ALLOW_SEALING;
/// fcntl commands and seal bits (-1 / 0 where the platform has none).
extern const int cipc_F_ADD_SEALS;
extern const int cipc_F_GET_SEALS;
extern const int cipc_F_SEAL_SEAL;
extern const int cipc_F_SEAL_SHRINK;
extern const int cipc_F_SEAL_GROW;
extern const int cipc_F_SEAL_WRITE;

/// fcntl(fd, cmd, arg) for integer-argument commands (fcntl is variadic).
int cipc_fcntl_int(int fd, int cmd, int arg);

#ifdef __cplusplus
}
#endif
#endif
