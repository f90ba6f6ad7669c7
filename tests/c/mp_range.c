/* One move_pages(2) over N consecutive pages, for tests/test_run.py (under `fakeproc run`):
 * a call larger than one control request of old (1 MiB) must still be one call.
 *
 *   mp_range PID query ADDR N        nodes = NULL
 *   mp_range PID move NODE ADDR N    every page to NODE, MPOL_MF_MOVE | MPOL_MF_SW_YOUNG
 * Prints "ret=R errno=E", then "V:COUNT" for each status value V, in increasing order
 * of V; entries left unwritten keep -1000.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int move = argc == 6 && !strcmp(argv[2], "move");
	if (argc != (move ? 6 : 5))
		return 2;
	long pid = strtol(argv[1], NULL, 0);
	int node = move ? atoi(argv[3]) : 0;
	unsigned long addr = strtoul(argv[move ? 4 : 3], NULL, 0);
	long n = strtol(argv[move ? 5 : 4], NULL, 0);
	void **pages = malloc(n * sizeof(*pages));
	int *nodes = malloc(n * sizeof(*nodes)), *status = malloc(n * sizeof(*status));
	if (!pages || !nodes || !status)
		return 3;
	for (long i = 0; i < n; i++) {
		pages[i] = (void *)(addr + 4096UL * i);
		nodes[i] = node;
		status[i] = -1000;
	}
	long ret = syscall(SYS_move_pages, pid, n, pages, move ? nodes : NULL, status, move ? 0x82 : 0);
	printf("ret=%ld errno=%d\n", ret, ret < 0 ? errno : 0);
	qsort(status, n, sizeof(*status), cmp);
	for (long i = 0, j; i < n; i = j) {
		for (j = i; j < n && status[j] == status[i]; j++)
			;
		printf("%d:%ld\n", status[i], j - i);
	}
	return 0;
}
