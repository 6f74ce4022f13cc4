// An echo server on a listener the runtime preopened (WASI preview 1 has no
// way to open one): takes the first descriptor of WASMSHIM_LISTEN_FDS, which
// the wasmtime shim sets when the container declares WASMSHIM_TCP_LISTEN,
// prints "accepting on fd N", serves one client by sending back every byte
// it receives until the client closes, prints "echoed N bytes" and exits 0.
// Each failing call prints its name and errno and exits 1.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void check(const char *call, int ok) {
    if (!ok) {
        printf("%s failed: errno %d (%s)\n", call, errno, strerror(errno));
        exit(1);
    }
}

int main(void) {
    const char *fds = getenv("WASMSHIM_LISTEN_FDS");
    if (fds == NULL) {
        printf("WASMSHIM_LISTEN_FDS is not set: declare WASMSHIM_TCP_LISTEN\n");
        return 2;
    }
    int server = atoi(fds);
    printf("accepting on fd %d\n", server);
    fflush(stdout);

    struct sockaddr address;
    socklen_t address_len = sizeof address;
    int client = accept(server, &address, &address_len);
    check("accept", client >= 0);
    char buffer[4096];
    unsigned long total = 0;
    for (;;) {
        ssize_t received = recv(client, buffer, sizeof buffer, 0);
        check("recv", received >= 0);
        if (received == 0) {
            break;
        }
        for (ssize_t sent = 0; sent < received;) {
            // write(2) on a socket: fd_write, as send(2) is sock_send.
            ssize_t n = write(client, buffer + sent, (size_t)(received - sent));
            check("write", n > 0);
            sent += n;
        }
        total += (unsigned long)received;
    }
    check("shutdown", shutdown(client, SHUT_RDWR) == 0);
    check("close", close(client) == 0);
    printf("echoed %lu bytes\n", total);
    return 0;
}
