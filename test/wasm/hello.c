// Prints a greeting: the demo module and the simplest test.
#include <stdio.h>

int main(void) {
    printf("Hello from WebAssembly, run by containerd through wasmshim!\n");
    return 0;
}
