// An HTTP function (wasi:http/incoming-handler): answers every request with
// status 200 and the body "hello from wasm: METHOD PATH N bytes\n", where N is
// the length of the request body it read to the end. A call that fails makes
// it answer 500 (or trap, when even that cannot be sent).
//
// Built with the bindings wit-bindgen generates for world http-hello of
// ../../wit, then made a component (test/src/modules.rs). It has no main:
// the shim instantiates it afresh for each request.
#include <stdio.h>
#include <string.h>

#include "http_hello.h"

static const char *method_name(const wasi_http_types_method_t *method) {
    switch (method->tag) {
    case WASI_HTTP_TYPES_METHOD_GET: return "GET";
    case WASI_HTTP_TYPES_METHOD_HEAD: return "HEAD";
    case WASI_HTTP_TYPES_METHOD_POST: return "POST";
    case WASI_HTTP_TYPES_METHOD_PUT: return "PUT";
    case WASI_HTTP_TYPES_METHOD_DELETE: return "DELETE";
    default: return "OTHER";
    }
}

// Reads the request body to its end; returns its length, or -1 on an error.
static long read_body(wasi_http_types_borrow_incoming_request_t request) {
    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_request_consume(request, &body)) return -1;
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                     &stream)) {
        wasi_http_types_incoming_body_drop_own(body);
        return -1;
    }
    long total = 0;
    wasi_io_streams_borrow_input_stream_t in = wasi_io_streams_borrow_input_stream(stream);
    for (;;) {
        http_hello_list_u8_t data;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(in, 65536, &data, &err)) {
            if (err.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) total = -1;
            break;
        }
        total += (long)data.len;
        http_hello_list_u8_free(&data);
    }
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_incoming_body_drop_own(body);
    return total;
}

static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status,
                    const char *text) {
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_response_t borrowed =
        wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
    wasi_http_types_own_outgoing_body_t body;
    if (!wasi_http_types_method_outgoing_response_body(borrowed, &body)) __builtin_trap();
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);

    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                    &stream)) {
        __builtin_trap();
    }
    http_hello_list_u8_t contents = {.ptr = (uint8_t *)text, .len = strlen(text)};
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &contents, &err)) {
        __builtin_trap();
    }
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t finish_err;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err)) __builtin_trap();
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_borrow_incoming_request_t borrowed =
        wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(borrowed, &method);
    http_hello_string_t path = {0};
    wasi_http_types_method_incoming_request_path_with_query(borrowed, &path);
    long length = read_body(borrowed);

    static char text[4096];
    if (length < 0) {
        snprintf(text, sizeof text, "cannot read the request body\n");
        respond(response_out, 500, text);
    } else {
        snprintf(text, sizeof text, "hello from wasm: %s %.*s %ld bytes\n", method_name(&method),
                 (int)path.len, (const char *)path.ptr, length);
        respond(response_out, 200, text);
    }
    http_hello_string_free(&path);
    wasi_http_types_method_free(&method);
    wasi_http_types_incoming_request_drop_own(request);
}
