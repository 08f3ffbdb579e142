/* A minimal qubesdb-read for the benchmark's shell reference: the Qubes
 * tool is a small C program reading one key over the VM-local socket
 * ($QUBESDB_SOCKET here), so the reference pays what the originals pay.
 * Prints the value and exits 0, or exits 1 when the key is missing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct qdb_hdr { uint8_t type; char path[64]; uint32_t data_len; };

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n <= 0) return -1;
        p += n; len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *sock = getenv("QUBESDB_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct qdb_hdr hdr;
    char value[3073];
    int fd;
    if (argc != 2 || strlen(argv[1]) >= sizeof hdr.path) return 2;
    if (!sock) sock = "/var/run/qubes/qubesdb.sock";
    strncpy(sa.sun_path, sock, sizeof sa.sun_path - 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return 1;
    memset(&hdr, 0, sizeof hdr);
    hdr.type = 0; /* QDB_CMD_READ */
    strcpy(hdr.path, argv[1]);
    if (write(fd, &hdr, sizeof hdr) != sizeof hdr) return 1;
    do {
        if (read_all(fd, &hdr, sizeof hdr) < 0) return 1;
    } while (hdr.type == 13); /* QDB_RESP_WATCH */
    if (hdr.type != 10 || hdr.data_len > 3072) return 1; /* QDB_RESP_READ */
    if (read_all(fd, value, hdr.data_len) < 0) return 1;
    value[hdr.data_len] = 0;
    puts(value);
    return 0;
}
