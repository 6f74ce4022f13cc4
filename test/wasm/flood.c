// Prints "line N" for N = 0 .. argv[1]-1 (default 100000), then "end": far more than a pipe holds.
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int lines = argc > 1 ? atoi(argv[1]) : 100000;
    for (int n = 0; n < lines; n++) {
        printf("line %d\n", n);
    }
    printf("end\n");
    return 0;
}
