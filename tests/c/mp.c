/* move_pages(2) by raw syscall on any pid, for tests/test_run.py (under `fakeproc run`).
 *
 *   mp PID query ADDR...        nodes = NULL
 *   mp PID move NODE ADDR...    every page to NODE, flags MPOL_MF_MOVE | MPOL_MF_SW_YOUNG
 *   mp PID roquery V ADDR...    a query whose status[] holds V in each entry, read-only
 *   mp self ...                 the program's own pid; "own" as an ADDR is its own page
 * Prints "ret=R errno=E status=S0,S1,...". status[] starts as -1000 - i so entries the
 * kernel leaves unwritten are visible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static char own[8192] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	long pid = strcmp(argv[1], "self") ? strtol(argv[1], NULL, 0) : getpid();
	int move = !strcmp(argv[2], "move"), ro = !strcmp(argv[2], "roquery");
	int first = move || ro ? 4 : 3, n = argc - first, node = move ? atoi(argv[3]) : 0;
	void *pages[64];
	int nodes[64], own_status[64];
	int *status = own_status;
	if (ro) {
		status = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (status == MAP_FAILED)
			return 3;
	}
	own[0] = 1; /* touch it */
	for (int i = 0; i < n && i < 64; i++) {
		pages[i] = strcmp(argv[first + i], "own") ? (void *)strtoul(argv[first + i], NULL, 0) : own;
		nodes[i] = node;
		status[i] = ro ? atoi(argv[3]) : -1000 - i;
	}
	if (ro && mprotect(status, 4096, PROT_READ))
		return 4;
	long ret = syscall(SYS_move_pages, pid, (unsigned long)n, pages, move ? nodes : NULL, status,
	                   move ? 0x82 : 0);
	printf("ret=%ld errno=%d status=", ret, ret < 0 ? errno : 0);
	for (int i = 0; i < n; i++)
		printf("%s%d", i ? "," : "", status[i]);
	printf("\n");
	return 0;
}
