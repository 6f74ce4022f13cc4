// alloc [MIB]: allocates and touches MIB mebibytes (default 256), one at a time,
// printing the running total; exits 0 if it got them all. The blocks are kept
// and read back so that the compiler cannot drop the allocations.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *blocks[4096];

int main(int argc, char **argv) {
    int total = argc > 1 ? atoi(argv[1]) : 256;
    if (total > 4096) total = 4096;
    unsigned sum = 0;
    for (int i = 0; i < total; i++) {
        blocks[i] = malloc(1 << 20);
        if (!blocks[i]) { fprintf(stderr, "malloc failed after %d MiB\n", i); return 1; }
        memset(blocks[i], i + 1, 1 << 20);
        for (int j = 0; j <= i; j += 7) sum += (unsigned char)blocks[j][(i * 4099) % (1 << 20)];
        if ((i + 1) % 8 == 0) { printf("allocated %d MiB (%u)\n", i + 1, sum); fflush(stdout); }
    }
    printf("allocated all %d MiB (%u)\n", total, sum);
    return 0;
}
