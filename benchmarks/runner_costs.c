/* What `fakeproc run` adds to a program's calls, for benchmarks/__main__.py: run once
 * under the runner and once outside it, it prints one line per repeat of
 *   MOVE LSEEK OPEN STATUS
 * nanoseconds per call of: move_pages(2) of 2 pages (on pid PID under the runner, on
 * its own pages outside it), lseek(SEEK_CUR) of a regular file, open+close of a small
 * regular file, open+close of /proc/self/status.
 *   runner_costs PID BASE REPS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    long pid = strtol(argv[1], NULL, 0);
    unsigned long base = strtoul(argv[2], NULL, 0);
    int reps = atoi(argv[3]);
    char *own = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    own[0] = own[4096] = 1;
    void *pages[2] = {(void *)(pid ? base : (unsigned long)own),
                      (void *)(pid ? base + 4096 : (unsigned long)own + 4096)};
    int status[2];
    int fd = open("/etc/hostname", O_RDONLY);
    if (fd < 0 || own == MAP_FAILED)
        return 3;
    for (int r = 0; r < reps; r++) {
        enum { N = 2000 };
        double t0 = now();
        for (int i = 0; i < N; i++)
            if (syscall(SYS_move_pages, pid, 2, pages, NULL, status, 0))
                return 4;
        double t1 = now();
        for (int i = 0; i < N; i++)
            lseek(fd, 0, SEEK_CUR);
        double t2 = now();
        for (int i = 0; i < N; i++)
            close(open("/etc/hostname", O_RDONLY));
        double t3 = now();
        for (int i = 0; i < N / 10; i++)
            close(open("/proc/self/status", O_RDONLY));
        double t4 = now();
        printf("%.0f %.0f %.0f %.0f\n", (t1 - t0) / N, (t2 - t1) / N, (t3 - t2) / N, (t4 - t3) / (N / 10));
    }
    return 0;
}
