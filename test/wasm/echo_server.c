// An echo server through WasmEdge's socket functions (WASI preview 1 has no
// listening sockets): listens on 127.0.0.1, port argv[1], prints
// "listening on PORT", serves one client by sending back every byte it
// receives until the client closes, prints "echoed N bytes" and exits 0.
// Each failing call prints its name and WASI errno and exits 1.
//
// The imports are WasmEdge's `wasi_snapshot_preview1` extensions, declared by
// hand (WasmEdge's lib/host/wasi/wasifunc.cpp, the V1 signatures); wasmtime
// does not provide them, so this module runs on WasmEdge only.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
WASMEDGE("sock_bind") uint32_t sock_bind(int32_t fd, struct address *address, uint32_t port);
WASMEDGE("sock_listen") uint32_t sock_listen(int32_t fd, int32_t backlog);
WASMEDGE("sock_accept") uint32_t sock_accept(int32_t fd, int32_t *client);
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
    if (argc != 2) {
        printf("usage: echo_server.wasm PORT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    uint8_t loopback[4] = {127, 0, 0, 1};
    struct address address = {loopback, sizeof loopback};
    int32_t server;
    check("sock_open", sock_open(ADDRESS_FAMILY_INET4, SOCK_TYPE_STREAM, &server));
    check("sock_bind", sock_bind(server, &address, (uint32_t)port));
    check("sock_listen", sock_listen(server, 16));
    printf("listening on %d\n", port);
    fflush(stdout);

    int32_t client;
    check("sock_accept", sock_accept(server, &client));
    char buffer[4096];
    unsigned long total = 0;
    for (;;) {
        struct wasi_iovec in = {buffer, sizeof buffer};
        uint32_t received;
        uint16_t flags;
        check("sock_recv", sock_recv(client, &in, 1, 0, &received, &flags));
        if (received == 0) {
            break;
        }
        struct wasi_iovec out = {buffer, received};
        for (uint32_t sent = 0; out.len > 0; out.buf = (char *)out.buf + sent, out.len -= sent) {
            check("sock_send", sock_send(client, &out, 1, 0, &sent));
        }
        total += received;
    }
    printf("echoed %lu bytes\n", total);
    return 0;
}
