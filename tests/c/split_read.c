/* Two read(2)s of 2 MiB from an idle_pages file at one position, back to back, into
 * a buffer whose second MiB is unmapped: FUSE stops the first after its first READ
 * (EFAULT pinning the rest), so the server's rest of that read must not be served to
 * the second, whose syscall line is the same (same registers, same stack).
 * Prints each read's return value and its first 9 bytes in hex. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0 || lseek(fd, strtoull(argv[2], NULL, 0), SEEK_SET) < 0)
        return 1;
    unsigned char *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || munmap(p + (1 << 20), 1 << 20))
        return 1;
    ssize_t n[2];
    unsigned char head[2][9];
    for (int i = 0; i < 2; i++) {  /* nothing between the calls: the same registers */
        n[i] = read(fd, p, 2 << 20);
        memcpy(head[i], p, 9);
    }
    for (int i = 0; i < 2; i++) {
        printf("%zd ", n[i]);
        for (int j = 0; j < 9; j++)
            printf("%02x", head[i][j]);
        printf("\n");
    }
    return 0;
}
