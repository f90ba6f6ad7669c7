/* See fpfuse.h: a libfuse low-level session whose requests Python answers. */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <fuse_lowlevel.h>

#include "fpfuse.h"

struct fp_fuse {
    struct fuse_session *se;
    struct fuse_buf buf;
    int mounted;
};

/* ---- the operations C answers itself ---------------------------------------------- */

/* ENOSYS makes the kernel set fc->no_open: every later open() on this connection is
 * answered in the kernel (with FOPEN_KEEP_CACHE), and no RELEASE follows. */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, ENOSYS);
}

/* ENOSYS sets fc->no_flush: close() stops sending FLUSH. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, ENOSYS);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

/* The kernel dropped nlookup references to ino (Python frees old versions). */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    fp_op_forget(ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        fp_op_forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* ---- the operations Python answers --------------------------------------------------- */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fp_op_lookup(req, parent, name);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fp_op_getattr(req, ino);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set,
                       struct fuse_file_info *fi)
{
    struct fp_attr a = {
        .ino = ino, .mode = st->st_mode, .uid = st->st_uid, .gid = st->st_gid,
        .size = st->st_size,
        .atime_sec = st->st_atim.tv_sec, .atime_nsec = st->st_atim.tv_nsec,
        .mtime_sec = st->st_mtim.tv_sec, .mtime_nsec = st->st_mtim.tv_nsec,
        .ctime_sec = st->st_ctim.tv_sec, .ctime_nsec = st->st_ctim.tv_nsec,
    };
    fp_op_setattr(req, ino, &a, to_set);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    fp_op_readlink(req, ino);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    fp_op_namespace(req, FP_NS_MKNOD, parent, name, mode, 0, NULL, 0);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    fp_op_namespace(req, FP_NS_MKDIR, parent, name, mode, 0, NULL, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fp_op_namespace(req, FP_NS_UNLINK, parent, name, 0, 0, NULL, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fp_op_namespace(req, FP_NS_RMDIR, parent, name, 0, 0, NULL, 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    fp_op_namespace(req, FP_NS_SYMLINK, parent, name, 0, 0, link, 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    fp_op_namespace(req, FP_NS_RENAME, parent, name, 0, newparent, newname, flags);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fp_op_namespace(req, FP_NS_LINK, newparent, newname, 0, ino, NULL, 0);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    fp_op_namespace(req, FP_NS_CREATE, parent, name, mode, 0, NULL, (unsigned)fi->flags);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fp_op_opendir(req, ino);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fp_op_readdir(req, ino, size, off, fi->fh);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fp_op_releasedir(req, fi->fh);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    fp_op_read(req, ino, size, off);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    fp_op_write(req, ino, buf, size, off);
}

/* kernfs files have noop_fsync(); its directories have no ->fsync (EINVAL). Answered
 * here: ENOSYS would make the host answer 0 for both from then on. */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, EINVAL);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    fp_op_statfs(req, ino);
}

/* sysfs (4.20 kernfs) keeps security.* and trusted.* xattrs, none of them set here;
 * it has no handler for other names. Nothing to list. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    (void)ino;
    (void)size;
    int kept = !strncmp(name, "security.", 9) || !strncmp(name, "trusted.", 8);
    fuse_reply_err(req, kept ? ENODATA : EOPNOTSUPP);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    (void)ino;
    if (size == 0)
        fuse_reply_xattr(req, 0);
    else
        fuse_reply_buf(req, NULL, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = op_lookup, .forget = op_forget, .forget_multi = op_forget_multi,
    .getattr = op_getattr, .setattr = op_setattr, .readlink = op_readlink,
    .mknod = op_mknod, .mkdir = op_mkdir, .unlink = op_unlink, .rmdir = op_rmdir,
    .symlink = op_symlink, .rename = op_rename, .link = op_link, .create = op_create,
    .open = op_open, .read = op_read, .write = op_write, .flush = op_flush,
    .release = op_release, .opendir = op_opendir, .readdir = op_readdir,
    .releasedir = op_releasedir, .statfs = op_statfs, .getxattr = op_getxattr,
    .listxattr = op_listxattr, .fsync = op_fsync, .fsyncdir = op_fsyncdir,
};

/* ---- the session ------------------------------------------------------------------- */

/* Drop the host's cached pages of ino (FUSE_NOTIFY_INVAL_INODE). Never from the thread
 * that pumps the session: invalidating a dirty page writes it back first, and that
 * WRITE needs the pump. */
int fp_fuse_inval_inode(struct fp_fuse *f, uint64_t ino)
{
    return fuse_lowlevel_notify_inval_inode(f->se, ino, 0, 0);
}

struct fp_fuse *fp_fuse_mount(const char *mountpoint, const char *options)
{
    char *argv[] = {"fakeproc", "-o", (char *)options, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    struct fp_fuse *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->se = fuse_session_new(&args, &ops, sizeof(ops), f);
    if (!f->se)
        goto fail;
    if (fuse_session_mount(f->se, mountpoint) != 0)
        goto fail;
    f->mounted = 1;
    int fd = fuse_session_fd(f->se);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        goto fail;
    return f;
fail:
    if (f->mounted)
        fuse_session_unmount(f->se);
    fp_fuse_destroy(f);
    return NULL;
}

int fp_fuse_fd(struct fp_fuse *f)
{
    return fuse_session_fd(f->se);
}

/* Answer at most max requests queued on the (non-blocking) device, so that one busy
 * connection cannot starve the others the same thread serves. Returns how many, or
 * -ENODEV once the connection has ended (unmounted, detached and idle, or aborted),
 * or another negative errno the device gave. */
int fp_fuse_pump(struct fp_fuse *f, int max)
{
    int n = 0;
    while (n < max) {
        int res = fuse_session_receive_buf(f->se, &f->buf);
        if (res == -EAGAIN || res == -EINTR)
            return n;
        if (res < 0)
            return res;
        if (res == 0)
            return -ENODEV;
        fuse_session_process_buf(f->se, &f->buf);
        n++;
        if (fuse_session_exited(f->se))
            return -ENODEV;
    }
    return n;
}

/* Detach the mount from the tree (MNT_DETACH; root only): safe from any thread, as it
 * touches neither the session nor its descriptor. The connection ends (the device
 * reads ENODEV) once nothing uses the mount any more. */
int fp_fuse_detach(const char *mountpoint)
{
    return umount2(mountpoint, MNT_DETACH) == 0 ? 0 : -errno;
}

/* Free the session and close its device (which ends the connection if it still
 * runs). Only from the thread that pumps it, once it no longer does. */
void fp_fuse_destroy(struct fp_fuse *f)
{
    if (!f)
        return;
    if (f->se)
        fuse_session_destroy(f->se);
    free(f->buf.mem);
    free(f);
}

/* ---- replies ------------------------------------------------------------------------ */

void fp_req_ctx(void *req, uint32_t *uid, uint32_t *gid, int32_t *pid)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    *uid = c->uid;
    *gid = c->gid;
    *pid = c->pid;
}

static void to_stat(const struct fp_attr *a, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = a->ino;
    st->st_mode = a->mode;
    st->st_nlink = a->nlink;
    st->st_uid = a->uid;
    st->st_gid = a->gid;
    st->st_size = a->size;
    st->st_blksize = 4096;
    st->st_atim = (struct timespec){.tv_sec = a->atime_sec, .tv_nsec = a->atime_nsec};
    st->st_mtim = (struct timespec){.tv_sec = a->mtime_sec, .tv_nsec = a->mtime_nsec};
    st->st_ctim = (struct timespec){.tv_sec = a->ctime_sec, .tv_nsec = a->ctime_nsec};
}

int fp_reply_err(void *req, int err)
{
    return fuse_reply_err(req, err);
}

int fp_reply_entry(void *req, const struct fp_attr *a)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = a->nodeid;
    e.generation = 1;
    to_stat(a, &e.attr);
    e.attr_timeout = a->attr_timeout;
    e.entry_timeout = a->entry_timeout;
    return fuse_reply_entry(req, &e);
}

int fp_reply_attr(void *req, const struct fp_attr *a)
{
    struct stat st;
    to_stat(a, &st);
    return fuse_reply_attr(req, &st, a->attr_timeout);
}

int fp_reply_buf(void *req, const char *buf, size_t size)
{
    return fuse_reply_buf(req, buf, size);
}

int fp_reply_readlink(void *req, const char *target)
{
    return fuse_reply_readlink(req, target);
}

int fp_reply_write(void *req, size_t count)
{
    return fuse_reply_write(req, count);
}

int fp_reply_open(void *req, uint64_t fh)
{
    struct fuse_file_info fi;
    memset(&fi, 0, sizeof(fi));
    fi.fh = fh;
    return fuse_reply_open(req, &fi);
}

int fp_reply_statfs(void *req, uint32_t bsize, uint32_t namemax)
{
    struct statvfs s;
    memset(&s, 0, sizeof(s));
    s.f_bsize = s.f_frsize = bsize;
    s.f_namemax = namemax;
    return fuse_reply_statfs(req, &s);
}

size_t fp_add_direntry(void *req, char *buf, size_t bufsize, const char *name,
                       const struct fp_attr *a, int64_t next_off)
{
    struct stat st;
    to_stat(a, &st);
    return fuse_add_direntry(req, buf, bufsize, name, &st, next_off);
}
