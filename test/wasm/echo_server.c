// An echo server through WasmEdge's socket functions (WASI preview 1 has no
// listening sockets): listens on 127.0.0.1, port argv[1], prints
// "listening on PORT", serves one client by sending back every byte it
// receives until the client closes, prints "echoed N bytes" and exits 0.
// Each failing call prints its name and WASI errno and exits 1.
//
// WasmEdge only: its socket functions come from wasmedge_socket.h.
#include "wasmedge_socket.h"

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
