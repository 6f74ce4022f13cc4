// Prints "exiting with N" and ends through wasi:cli/exit's exit-with-code(N),
// N = argv[1] (default 0): a component's exit status, which the preview-1
// adapter's proc_exit reports only as 0 or 1.
#include <stdio.h>
#include <stdlib.h>

#include "exit_code.h"

int main(int argc, char **argv) {
    int code = argc > 1 ? atoi(argv[1]) : 0;
    printf("exiting with %d\n", code);
    fflush(stdout);
    wasi_cli_exit_exit_with_code((uint8_t)code);
    return 0;
}
