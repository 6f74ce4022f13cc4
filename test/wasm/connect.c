// A TCP client through WasmEdge's socket functions (WASI preview 1 has none):
// connects to IPv4 address argv[1], port argv[2], sends argv[3] and a newline,
// prints "reply: <line>" for the first line it receives and exits 0. Each
// failing call prints its name and WASI errno and exits 1.
//
// WasmEdge only: its socket functions come from wasmedge_socket.h.
#include <string.h>

#include "wasmedge_socket.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        printf("usage: connect.wasm IPV4 PORT MESSAGE\n");
        return 2;
    }
    uint8_t ip[4];
    if (sscanf(argv[1], "%hhu.%hhu.%hhu.%hhu", &ip[0], &ip[1], &ip[2], &ip[3]) != 4) {
        printf("not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int32_t fd;
    check("sock_open", sock_open(ADDRESS_FAMILY_INET4, SOCK_TYPE_STREAM, &fd));
    struct address address = {ip, sizeof ip};
    check("sock_connect", sock_connect(fd, &address, (uint32_t)atoi(argv[2])));

    char message[256];
    int length = snprintf(message, sizeof message, "%s\n", argv[3]);
    struct wasi_iovec out = {message, (uint32_t)length};
    for (uint32_t sent = 0; out.len > 0; out.buf = (char *)out.buf + sent, out.len -= sent) {
        check("sock_send", sock_send(fd, &out, 1, 0, &sent));
    }

    char reply[256];
    uint32_t have = 0;
    while (have < sizeof reply - 1 && !memchr(reply, '\n', have)) {
        struct wasi_iovec in = {reply + have, sizeof reply - 1 - have};
        uint32_t received;
        uint16_t flags;
        check("sock_recv", sock_recv(fd, &in, 1, 0, &received, &flags));
        if (received == 0) {
            break;
        }
        have += received;
    }
    reply[have] = '\0';
    reply[strcspn(reply, "\n")] = '\0';
    printf("reply: %s\n", reply);
    return 0;
}
