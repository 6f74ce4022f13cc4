// files IN OUT: prints the contents of IN, then writes "written by wasm" to OUT.
// Failures are printed to stderr with the errno text and exit with status 1 (read) or 2 (write).
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: files IN OUT\n"); return 64; }
    FILE *in = fopen(argv[1], "r");
    if (!in) { fprintf(stderr, "read %s: %s\n", argv[1], strerror(errno)); return 1; }
    char buf[256];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, stdout);
    fclose(in);
    FILE *out = fopen(argv[2], "w");
    if (!out) { fprintf(stderr, "write %s: %s\n", argv[2], strerror(errno)); return 2; }
    fputs("written by wasm\n", out);
    if (fclose(out) != 0) { fprintf(stderr, "write %s: %s\n", argv[2], strerror(errno)); return 2; }
    printf("wrote %s\n", argv[2]);
    return 0;
}
