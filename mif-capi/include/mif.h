/*
 * mif.h - the MIF API of hosts steered by mif (libmif.so.0, pkg-config mif).
 *
 * Applications see the host's provisioning domains (PvDs, RFC 7556), choose
 * one per socket or per process, resolve names through a PvD's own
 * resolvers and connect with Happy Eyeballs across PvDs. See docs/api.md.
 *
 * Errors: calls return -1 (or NULL) with errno set, and mif_last_error()
 * says what went wrong in words (per thread, valid until the next call).
 *   ENOENT       no PvD of that name
 *   EPERM        the caller's policy does not allow it to choose that PvD
 *   ENETUNREACH  the PvD is not available for the socket's family now
 *   EISCONN      the socket is already connected
 *   EINVAL       not a PvD name (1 to 15 bytes)
 *   ENOPROTOOPT  mif does not steer this socket's network namespace
 *   ECONNREFUSED, ENOENT (no socket) ...: the daemon is not reachable
 *
 * Lists are opaque and read with accessors; strings they return live as
 * long as the list. Structs the caller fills start with their size.
 */
#ifndef MIF_H
#define MIF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The socket option mif's kernel programs serve, usable without libmif:
 *   setsockopt(fd, SOL_MIF, MIF_PVD, "wwan0", 5);
 *   char name[16]; socklen_t len = sizeof name;
 *   getsockopt(fd, SOL_MIF, MIF_PVD, name, &len);  ("" with len 1: not steered) */
#define SOL_MIF 0x6d6966
#define MIF_PVD 1

const char *mif_last_error(void);

/* One socket's PvD: call before connect(), sendto() or bind(). No daemon
 * round trip and no privilege: the kernel checks the caller's policy. */
int mif_socket_set_pvd(int fd, const char *pvd);
/* Writes the PvD the socket uses (chosen or given by policy) into buf;
 * returns its length, 0 when mif does not steer the socket. */
int mif_socket_get_pvd(int fd, char *buf, size_t len);

/* Every socket this process opens from now on uses pvd (Android's
 * setprocnetwork): the daemon moves the process into a cgroup of its own
 * for that PvD, if the process's policy allows the choice. */
int mif_set_process_pvd(const char *pvd);

/* The PvDs now. */
typedef struct MifPvdList mif_pvd_list;
typedef struct MifPvd mif_pvd;
typedef struct MifStrings mif_strings;

mif_pvd_list *mif_pvds(void);
size_t mif_pvd_list_count(const mif_pvd_list *list);
const mif_pvd *mif_pvd_list_get(const mif_pvd_list *list, size_t i);
void mif_pvd_list_free(mif_pvd_list *list);

const char *mif_pvd_name(const mif_pvd *pvd);
const char *mif_pvd_interface(const mif_pvd *pvd);
/* "ethernet", "wifi", "cellular", "vpn", "point-to-point", ... */
const char *mif_pvd_kind(const mif_pvd *pvd);
/* 1 when usable for family (AF_INET, AF_INET6) now. */
int mif_pvd_available(const mif_pvd *pvd, int family);
/* "validated", "captive", "failing", "probing", ...; NULL: not validated. */
const char *mif_pvd_validation(const mif_pvd *pvd, int family);
/* Owned by the PvD: do not free. */
const mif_strings *mif_pvd_addresses(const mif_pvd *pvd);
const mif_strings *mif_pvd_resolvers(const mif_pvd *pvd);
const mif_strings *mif_pvd_domains(const mif_pvd *pvd);

size_t mif_strings_count(const mif_strings *list);
const char *mif_strings_get(const mif_strings *list, size_t i);
/* Frees a list from mif_resolve (only). */
void mif_strings_free(mif_strings *list);

/* The addresses of host through pvd's resolvers, IPv6 first. */
mif_strings *mif_resolve(const char *pvd, const char *host);

/* Happy Eyeballs across PvDs (RFC 8305 with the MIF extension). */
struct mif_connect_options {
    uint32_t size;                /* sizeof(struct mif_connect_options) */
    uint32_t attempt_delay_ms;    /* between attempt starts; 0: 250 */
    uint32_t timeout_ms;          /* the whole call; 0: 30000 */
    uint32_t resolution_delay_ms; /* wait for the first PvD's answer; 0: 50 */
    const char *pvd;              /* only this PvD; NULL: those allowed */
};

struct mif_connection {
    int fd;             /* the connected socket, the caller's to close */
    char pvd[16];       /* the PvD it leaves by */
    char address[46];   /* the address it connected to */
    uint16_t port;
    uint32_t attempts;  /* attempts started, the winner included */
};

/* Returns the connected socket (also in out->fd), or -1. options and out
 * may be NULL. */
int mif_connect(const char *host, uint16_t port,
                const struct mif_connect_options *options,
                struct mif_connection *out);

/* Changes as they happen: poll mif_watch_fd() for reading, then call
 * mif_watch_next(), which returns MIF_EVENT_PVD (the PvD's name in pvd),
 * MIF_EVENT_POLICIES, 0 when the daemon went away, or -1. */
#define MIF_EVENT_PVD 1
#define MIF_EVENT_POLICIES 2
typedef struct MifWatch mif_watch;
mif_watch *mif_watch_open(void);
int mif_watch_fd(const mif_watch *watch);
int mif_watch_next(mif_watch *watch, char *pvd, size_t len);
void mif_watch_close(mif_watch *watch);

#ifdef __cplusplus
}
#endif

#endif /* MIF_H */
