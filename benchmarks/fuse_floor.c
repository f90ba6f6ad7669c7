/* The FUSE transport floor for a small sysfs attribute: a libfuse low-level server in
 * C that does no work at all. Its root holds one read-only file, "attr" ("0-3\n"),
 * opened as fakeproc opens sysfs attributes (and stat-ed as fakeproc stats them):
 *
 *   fuse_floor MNT direct   OPEN with direct_io, size 4096: OPEN, READ, RELEASE per
 *                           open+read+close (an attribute that changes)
 *   fuse_floor MNT cache    OPEN with keep_cache, size 4 (a fixed attribute): the page
 *                           cache answers READ after the first, so OPEN (and an
 *                           asynchronous RELEASE) is all that is left
 *
 * No server that must answer OPEN (kernfs's EACCES comes from open()) can beat the
 * "cache" figure; the benchmark sets fakeproc's figure beside it. Runs in the
 * foreground until unmounted. */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

static const char BODY[] = "0-3\n";
static int keep_cache;

static void fill(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = keep_cache ? (off_t)(sizeof BODY - 1) : 4096;
    }
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    if (parent != FUSE_ROOT_ID || strcmp(name, "attr") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&e, 0, sizeof e);
    e.ino = 2;
    e.attr_timeout = e.entry_timeout = 60.0;
    fill(e.ino, &e.attr);
    fuse_reply_entry(req, &e);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;
    (void)fi;
    fill(ino, &st);
    fuse_reply_attr(req, &st, 60.0);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EACCES);
        return;
    }
    fi->direct_io = !keep_cache;
    fi->keep_cache = keep_cache;
    fuse_reply_open(req, fi);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    size_t n = sizeof BODY - 1;
    (void)ino;
    (void)fi;
    if ((size_t)off >= n)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_buf(req, BODY + off, n - off < size ? n - off : size);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = ll_lookup, .getattr = ll_getattr, .open = ll_open,
    .read = ll_read, .release = ll_release,
};

int main(int argc, char **argv)
{
    char *av[] = {argv[0], "-o", "default_permissions,fsname=fakeproc-floor", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, av);
    struct fuse_session *se;
    int rc;

    if (argc != 3 || (strcmp(argv[2], "direct") != 0 && strcmp(argv[2], "cache") != 0)) {
        fprintf(stderr, "usage: %s MOUNTPOINT direct|cache\n", argv[0]);
        return 2;
    }
    keep_cache = strcmp(argv[2], "cache") == 0;
    se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (se == NULL || fuse_session_mount(se, argv[1]) != 0)
        return 1;
    rc = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return rc < 0 ? 1 : 0;
}
