// An echo server on WASI preview 2 sockets (wasi:sockets/tcp), the component
// twin of ../echo_server.c: listens on 127.0.0.1, port argv[1], prints
// "listening on PORT", serves one client by sending back every byte it
// receives until the client closes, prints "echoed N bytes" and exits 0.
// A failing call prints its name and the error code and exits 1.
//
// Built with the bindings wit-bindgen generates for world sockets-echo of
// ../../wit, then made a wasi:cli/command component (test/src/modules.rs).
#include <stdio.h>
#include <stdlib.h>

#include "sockets_echo.h"

static void fail(const char *call, int code) {
    printf("%s failed: error %d\n", call, code);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        printf("usage: echo.wasm PORT\n");
        return 2;
    }
    wasi_sockets_network_error_code_t err;
    wasi_sockets_instance_network_own_network_t network =
        wasi_sockets_instance_network_instance_network();
    wasi_sockets_tcp_create_socket_own_tcp_socket_t server;
    if (!wasi_sockets_tcp_create_socket_create_tcp_socket(WASI_SOCKETS_NETWORK_IP_ADDRESS_FAMILY_IPV4,
                                                          &server, &err)) {
        fail("create-tcp-socket", err);
    }
    wasi_sockets_tcp_borrow_tcp_socket_t listener = wasi_sockets_tcp_borrow_tcp_socket(server);
    wasi_sockets_tcp_ip_socket_address_t address = {
        .tag = WASI_SOCKETS_NETWORK_IP_SOCKET_ADDRESS_IPV4,
        .val.ipv4 = {.port = (uint16_t)atoi(argv[1]), .address = {127, 0, 0, 1}},
    };
    wasi_sockets_tcp_own_pollable_t ready = wasi_sockets_tcp_method_tcp_socket_subscribe(listener);
    wasi_io_poll_borrow_pollable_t wait = wasi_io_poll_borrow_pollable(ready);
    if (!wasi_sockets_tcp_method_tcp_socket_start_bind(
            listener, wasi_sockets_network_borrow_network(network), &address, &err)) {
        fail("start-bind", err);
    }
    while (!wasi_sockets_tcp_method_tcp_socket_finish_bind(listener, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("finish-bind", err);
        wasi_io_poll_method_pollable_block(wait);
    }
    if (!wasi_sockets_tcp_method_tcp_socket_start_listen(listener, &err)) {
        fail("start-listen", err);
    }
    while (!wasi_sockets_tcp_method_tcp_socket_finish_listen(listener, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("finish-listen", err);
        wasi_io_poll_method_pollable_block(wait);
    }
    printf("listening on %s\n", argv[1]);
    fflush(stdout);

    wasi_sockets_tcp_tuple3_own_tcp_socket_own_input_stream_own_output_stream_t client;
    while (!wasi_sockets_tcp_method_tcp_socket_accept(listener, &client, &err)) {
        if (err != WASI_SOCKETS_NETWORK_ERROR_CODE_WOULD_BLOCK) fail("accept", err);
        wasi_io_poll_method_pollable_block(wait);
    }
    wasi_io_streams_borrow_input_stream_t in = wasi_io_streams_borrow_input_stream(client.f1);
    wasi_io_streams_borrow_output_stream_t out = wasi_io_streams_borrow_output_stream(client.f2);
    unsigned long total = 0;
    for (;;) {
        sockets_echo_list_u8_t data;
        wasi_io_streams_stream_error_t stream_err;
        if (!wasi_io_streams_method_input_stream_blocking_read(in, 4096, &data, &stream_err)) {
            if (stream_err.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) break;
            fail("blocking-read", stream_err.tag);
        }
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(out, &data,
                                                                           &stream_err)) {
            fail("blocking-write-and-flush", stream_err.tag);
        }
        total += data.len;
        sockets_echo_list_u8_free(&data);
    }
    printf("echoed %lu bytes\n", total);
    return 0;
}
