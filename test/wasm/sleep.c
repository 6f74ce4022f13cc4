// Prints "sleeping N", sleeps N = argv[1] seconds (default one hour), prints "done": a long-running container.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 3600;
    printf("sleeping %d\n", seconds);
    fflush(stdout);
    sleep(seconds);
    printf("done\n");
    return 0;
}
