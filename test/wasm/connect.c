// A TCP client through WasmEdge's socket functions (WASI preview 1 has none):
// connects to IPv4 address argv[1], port argv[2], sends argv[3] and a newline,
// prints "reply: <line>" for the first line it receives and exits 0. Each
// failing call prints its name and WASI errno and exits 1.
//
// The imports are WasmEdge's `wasi_snapshot_preview1` extensions, declared by
// hand (WasmEdge's lib/host/wasi/wasifunc.cpp, the V1 signatures); wasmtime
// does not provide them, so this module runs on WasmEdge only.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WASMEDGE(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))

// __wasi_address_family_t and __wasi_sock_type_t of WasmEdge's api.hpp.
enum { ADDRESS_FAMILY_INET4 = 1, SOCK_TYPE_STREAM = 2 };

// __wasi_address_t: a buffer holding the 4 bytes of an IPv4 address.
struct address {
    uint8_t *buf;
    uint32_t buf_len;
};

// __wasi_ciovec_t / __wasi_iovec_t.
struct wasi_iovec {
    void *buf;
    uint32_t len;
};

WASMEDGE("sock_open") uint32_t sock_open(uint32_t family, uint32_t type, int32_t *fd);
WASMEDGE("sock_connect") uint32_t sock_connect(int32_t fd, struct address *address, uint32_t port);
WASMEDGE("sock_send")
uint32_t sock_send(int32_t fd, const struct wasi_iovec *data, uint32_t count, uint32_t flags, uint32_t *sent);
WASMEDGE("sock_recv")
uint32_t sock_recv(int32_t fd, struct wasi_iovec *data, uint32_t count, uint32_t flags, uint32_t *received,
                   uint16_t *out_flags);

static void check(const char *call, uint32_t errno_) {
    if (errno_ != 0) {
        printf("%s failed: WASI errno %u\n", call, errno_);
        exit(1);
    }
}

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
