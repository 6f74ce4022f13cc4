// confine OP...: the confinement probe (test/confinement.rs). Tries each
// operation and prints one line per attempt, "<OP>: ok <detail>" or
// "<OP>: denied <errno text>":
//   read:P         open P and print its first line
//   write:P        create P and write "written by the probe" into it
//   list:P         print the names in directory P
//   link:A:B       hard link A to B
//   symlink:T:L    make L a symlink to T
//   rename:A:B     rename A to B
//   race:P:N       open and read P N times; print how often it was "race-inside",
//                  denied, or anything else (whose text is printed)
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void denied(const char *op) { printf("%s: denied %s\n", op, strerror(errno)); }

static int first_line(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    int saved = errno;
    close(fd);
    if (n < 0) { errno = saved; return -1; }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static void split(char *arg, char **a, char **b) {
    *a = arg;
    *b = strchr(arg, ':');
    if (*b) *(*b)++ = '\0'; else *b = "";
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *op = strdup(argv[i]);
        char *kind, *rest, *a, *b;
        split(op, &kind, &rest);
        char buf[512];
        if (strcmp(kind, "read") == 0) {
            if (first_line(rest, buf, sizeof buf) == 0) printf("%s: ok %s\n", argv[i], buf);
            else denied(argv[i]);
        } else if (strcmp(kind, "write") == 0) {
            int fd = open(rest, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || write(fd, "written by the probe\n", 21) != 21) denied(argv[i]);
            else printf("%s: ok\n", argv[i]);
            if (fd >= 0) close(fd);
        } else if (strcmp(kind, "list") == 0) {
            DIR *dir = opendir(rest);
            if (!dir) { denied(argv[i]); continue; }
            printf("%s: ok", argv[i]);
            struct dirent *e;
            while ((e = readdir(dir))) printf(" %s", e->d_name);
            printf("\n");
            closedir(dir);
        } else if (strcmp(kind, "link") == 0 || strcmp(kind, "symlink") == 0 ||
                   strcmp(kind, "rename") == 0) {
            split(rest, &a, &b);
            int r = kind[0] == 'l' ? link(a, b) : kind[0] == 's' ? symlink(a, b) : rename(a, b);
            if (r == 0) printf("%s: ok\n", argv[i]);
            else denied(argv[i]);
        } else if (strcmp(kind, "race") == 0) {
            split(rest, &a, &b);
            long n = atol(b), inside = 0, refused = 0, other = 0;
            for (long k = 0; k < n; k++) {
                if (first_line(a, buf, sizeof buf) != 0) refused++;
                else if (strcmp(buf, "race-inside") == 0) inside++;
                else { other++; printf("%s: read %s\n", argv[i], buf); }
            }
            printf("%s: ok inside=%ld denied=%ld other=%ld\n", argv[i], inside, refused, other);
        } else {
            printf("%s: unknown operation\n", argv[i]);
            return 64;
        }
        fflush(stdout);
    }
    return 0;
}
