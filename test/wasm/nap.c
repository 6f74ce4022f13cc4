// Prints "napping", sleeps argv[1] seconds (default 1), then exits with argv[2] (default 0): a container that exits on its own, later.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 1;
    int code = argc > 2 ? atoi(argv[2]) : 0;
    printf("napping %d\n", seconds);
    fflush(stdout);
    sleep(seconds);
    return code;
}
