/* kpf FILE OFF_IN_PAGE COUNT [POS]: one pread(2) of COUNT bytes at POS into a buffer at
 * OFF_IN_PAGE of a page, for tests/test_upstream.py; prints "ret=R errno=E sum=S" (S: a
 * checksum of the bytes read). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    int fd = open(argv[1], O_RDONLY);
    long off = atol(argv[2]), count = atol(argv[3]), pos = argc > 4 ? atol(argv[4]) : 0;
    char *m = mmap(NULL, count + 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || m == MAP_FAILED)
        return 2;
    long r = pread(fd, m + off, count, pos);
    unsigned long long sum = 0;
    for (long i = 0; i < r; i++)
        sum = sum * 131 + (unsigned char)m[off + i];
    printf("ret=%ld errno=%d sum=%llu\n", r, r < 0 ? errno : 0, sum);
    return 0;
}
