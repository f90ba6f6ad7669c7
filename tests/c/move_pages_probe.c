/* A program that makes move_pages(2) / migrate_pages(2) calls on a pid given on the
 * command line, for tests/test_seccomp.py (run under fakeproc.run.seccomp.spawn).
 *
 *   probe PID move NODE0 NODE1 [FLAGS]   two touched pages, nodes {NODE0, NODE1}
 *   probe PID query [FLAGS]              the same pages, nodes = NULL
 *   probe PID badpages                   count 2, pages = NULL (query)
 *   probe PID badstatus NODE0 NODE1      move with status = NULL
 *   probe PID thread NODE0 NODE1         "move" from a second thread
 *   probe PID migrate MAXNODE OLD NEW    bitmasks as hex words "w0[,w1...]"
 *   probe PID loop N                     N move calls, prints ns/call
 *   probe PID exit CODE                  one query, then exit(CODE)
 * PID is a number or "self" (getpid()). Flags default to 0x82 (MOVE | SW_YOUNG).
 * Output lines: "ret=R errno=E status=S0,S1 pages=0xP0,0xP1 pid=P tid=T".
 * status[] starts as {-1000, -1001} so unwritten entries are visible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long target;
static void *pages[2];
static int nodes[2];

static void report(long ret, int err, const int *status)
{
	printf("ret=%ld errno=%d status=%d,%d pages=%p,%p pid=%d tid=%ld\n", ret, ret < 0 ? err : 0,
	       status ? status[0] : 0, status ? status[1] : 0, pages[0], pages[1], (int)getpid(),
	       (long)syscall(SYS_gettid));
	fflush(stdout);
}

static long do_move(const int *nd, int *status, long flags)
{
	return syscall(SYS_move_pages, target, 2UL, pages, nd, status, flags);
}

static void *thread_main(void *arg)
{
	int status[2] = {-1000, -1001};
	long ret = do_move(nodes, status, 0x82);
	report(ret, errno, status);
	return arg;
}

static int parse_mask(const char *s, unsigned long *words, int max)
{
	int n = 0;
	char *end;
	while (n < max) {
		words[n++] = strtoul(s, &end, 16);
		if (*end != ',')
			break;
		s = end + 1;
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s PID MODE ...\n", argv[0]);
		return 2;
	}
	target = strcmp(argv[1], "self") == 0 ? (long)getpid() : strtol(argv[1], NULL, 0);
	const char *mode = argv[2];
	long psz = sysconf(_SC_PAGESIZE);
	char *buf = mmap(NULL, 2 * psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 3;
	buf[0] = 1;
	buf[psz] = 1;
	pages[0] = buf;
	pages[1] = buf + psz;
	int status[2] = {-1000, -1001};
	long ret;

	if (!strcmp(mode, "move") || !strcmp(mode, "badstatus") || !strcmp(mode, "thread")) {
		if (argc < 5)
			return 2;
		nodes[0] = atoi(argv[3]);
		nodes[1] = atoi(argv[4]);
		long flags = argc > 5 ? strtol(argv[5], NULL, 0) : 0x82;
		if (!strcmp(mode, "thread")) {
			pthread_t t;
			if (pthread_create(&t, NULL, thread_main, NULL))
				return 4;
			pthread_join(t, NULL);
			return 0;
		}
		int *st = !strcmp(mode, "badstatus") ? NULL : status;
		ret = do_move(nodes, st, flags);
		report(ret, errno, st);
	} else if (!strcmp(mode, "query") || !strcmp(mode, "exit")) {
		long flags = !strcmp(mode, "query") && argc > 3 ? strtol(argv[3], NULL, 0) : 0;
		ret = do_move(NULL, status, flags);
		report(ret, errno, status);
		if (!strcmp(mode, "exit"))
			return argc > 3 ? atoi(argv[3]) : 0;
	} else if (!strcmp(mode, "badpages")) {
		ret = syscall(SYS_move_pages, target, 2UL, NULL, NULL, status, 0L);
		report(ret, errno, status);
	} else if (!strcmp(mode, "migrate")) {
		if (argc < 6)
			return 2;
		unsigned long old[32] = {0}, new[32] = {0};
		parse_mask(argv[4], old, 32);
		parse_mask(argv[5], new, 32);
		ret = syscall(SYS_migrate_pages, target, strtoul(argv[3], NULL, 0), old, new);
		report(ret, errno, NULL);
	} else if (!strcmp(mode, "loop")) {
		long n = argc > 3 ? atol(argv[3]) : 1000;
		struct timespec a, b;
		nodes[0] = nodes[1] = 0;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++) {
			ret = do_move(nodes, status, 0x82);
			if (ret != 0) {
				report(ret, errno, status);
				return 5;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
		printf("calls=%ld ns_per_call=%.0f\n", n, ns / n);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
