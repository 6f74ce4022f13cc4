// WasmEdge's socket functions, which WASI preview 1 lacks: its
// `wasi_snapshot_preview1` extensions declared by hand (WasmEdge's
// lib/host/wasi/wasifunc.cpp, the V1 signatures), shared by the socket test
// modules. wasmtime does not provide them: modules using them run on WasmEdge
// only. Each call returns a WASI errno; `check` exits 1 naming a failed call.
#ifndef WASMEDGE_SOCKET_H
#define WASMEDGE_SOCKET_H

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

#endif
