// Prints "sleeping" and sleeps for argv[1] seconds (default one hour): a long-running container.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 3600;
    printf("sleeping %d\n", seconds);
    fflush(stdout);
    sleep(seconds);
    return 0;
}
