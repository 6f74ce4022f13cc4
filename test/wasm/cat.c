// Reads stdin to end-of-file and prints "read N bytes: <what it read>": stdin reaches the module, and so does its end.
#include <stdio.h>

int main(void) {
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = '\0';
    printf("read %zu bytes: %s", n, buf);
    return feof(stdin) ? 0 : 1;
}
