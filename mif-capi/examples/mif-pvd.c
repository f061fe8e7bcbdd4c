/*
 * mif-pvd: the MIF API from C, as docs/api.md shows it.
 *
 *   mif-pvd list                      the PvDs and their properties
 *   mif-pvd choose PVD ADDR PORT      a TCP socket on PVD, connected
 *   mif-pvd connect HOST PORT         Happy Eyeballs across PvDs
 *
 * Each connecting command prints the PvD getsockopt reports and the first
 * line the peer sends. Build: cc mif-pvd.c $(pkg-config --cflags --libs mif)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <mif.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s (errno %d)\n", what, mif_last_error(), errno);
    return 1;
}

static void print_strings(const char *label, const mif_strings *list)
{
    printf("  %s:", label);
    for (size_t i = 0; i < mif_strings_count(list); i++)
        printf(" %s", mif_strings_get(list, i));
    printf("\n");
}

static int list(void)
{
    mif_pvd_list *pvds = mif_pvds();
    if (!pvds)
        return fail("mif_pvds");
    for (size_t i = 0; i < mif_pvd_list_count(pvds); i++) {
        const mif_pvd *p = mif_pvd_list_get(pvds, i);
        const char *v4 = mif_pvd_validation(p, AF_INET);
        printf("%s interface=%s kind=%s ipv4=%d ipv6=%d validation4=%s\n",
               mif_pvd_name(p), mif_pvd_interface(p), mif_pvd_kind(p),
               mif_pvd_available(p, AF_INET), mif_pvd_available(p, AF_INET6),
               v4 ? v4 : "-");
        print_strings("addresses", mif_pvd_addresses(p));
        print_strings("resolvers", mif_pvd_resolvers(p));
    }
    mif_pvd_list_free(pvds);
    return 0;
}

/* Prints the socket's PvD and the peer's first line. */
static int report(int fd)
{
    char pvd[16], line[256];
    if (mif_socket_get_pvd(fd, pvd, sizeof pvd) < 0)
        return fail("mif_socket_get_pvd");
    ssize_t n = read(fd, line, sizeof line - 1);
    if (n < 0)
        return fail("read");
    line[n] = 0;
    line[strcspn(line, "\n")] = 0;
    printf("pvd=%s reply=%s\n", pvd, line);
    return 0;
}

static int choose(const char *pvd, const char *addr, const char *port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(atoi(port)) };
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", addr);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || mif_socket_set_pvd(fd, pvd) < 0)
        return fail("mif_socket_set_pvd");
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        perror("connect");
        return 1;
    }
    int rc = report(fd);
    close(fd);
    return rc;
}

static int race(const char *host, const char *port)
{
    struct mif_connect_options options = {
        .size = sizeof options,
        .attempt_delay_ms = 250,
    };
    struct mif_connection won;
    int fd = mif_connect(host, (uint16_t)atoi(port), &options, &won);
    if (fd < 0)
        return fail("mif_connect");
    printf("won=%s address=%s attempts=%u\n", won.pvd, won.address, won.attempts);
    int rc = report(fd);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "list"))
        return list();
    if (argc == 5 && !strcmp(argv[1], "choose"))
        return choose(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "connect"))
        return race(argv[2], argv[3]);
    fprintf(stderr, "usage: mif-pvd list | choose PVD ADDR PORT | connect HOST PORT\n");
    return 2;
}
