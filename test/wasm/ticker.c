// Prints "tick N" every 100 ms, forever: output that must stop while the container is paused.
#include <stdio.h>
#include <time.h>

int main(void) {
    struct timespec tenth = {0, 100000000};
    for (unsigned long n = 0;; n++) {
        printf("tick %lu\n", n);
        fflush(stdout);
        nanosleep(&tenth, NULL);
    }
}
