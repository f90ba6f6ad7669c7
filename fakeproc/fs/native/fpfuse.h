/* A libfuse low-level session driven from Python (fakeproc.fs.sysmount).
 *
 * pyfuse3 allows one session per process and never tells read() which inode a
 * request is for; /sys needs a second session that answers OPEN with ENOSYS (the
 * kernel then never sends OPEN, FLUSH or RELEASE again on it) and so must read by
 * inode. This is that session: C does the libfuse plumbing, every request except
 * OPEN/FLUSH/RELEASE goes to a Python callback, which replies through the
 * fp_reply_* helpers (FORGET is only reported). Everything runs on the thread that
 * calls fp_fuse_pump().
 *
 * The CDEF-SKIP markers hide what cffi cannot parse.
 */
/* CDEF-SKIP-BEGIN */
#ifndef FPFUSE_H
#define FPFUSE_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
/* CDEF-SKIP-END */

/* What Python knows of an inode: enough for struct stat and the timeouts. The
 * kernel's inode is nodeid; ino is what stat() shows (they differ for the versions of
 * a changing attribute, fakeproc.fs.sysmount). */
struct fp_attr {
    uint64_t nodeid;
    uint64_t ino;
    uint32_t mode;
    uint32_t nlink;
    uint32_t uid;
    uint32_t gid;
    int64_t size;
    int64_t atime_sec;     /* struct timespec's fields: a time in int64 ns ends in 2262 */
    int64_t atime_nsec;
    int64_t mtime_sec;
    int64_t mtime_nsec;
    int64_t ctime_sec;
    int64_t ctime_nsec;
    double attr_timeout;   /* seconds */
    double entry_timeout;  /* seconds (LOOKUP only) */
};

/* SETATTR's to_set bits, as libfuse passes them. */
#define FP_SET_MODE 1
#define FP_SET_UID 2
#define FP_SET_GID 4
#define FP_SET_SIZE 8
#define FP_SET_ATIME 16
#define FP_SET_MTIME 32
#define FP_SET_ATIME_NOW 128
#define FP_SET_MTIME_NOW 256
#define FP_SET_CTIME 1024

/* The namespace operations sysfs refuses, one callback for all of them. */
#define FP_NS_MKNOD 1
#define FP_NS_MKDIR 2
#define FP_NS_UNLINK 3
#define FP_NS_RMDIR 4
#define FP_NS_SYMLINK 5
#define FP_NS_RENAME 6
#define FP_NS_LINK 7
#define FP_NS_CREATE 8

struct fp_fuse;

struct fp_fuse *fp_fuse_mount(const char *mountpoint, const char *options);
int fp_fuse_fd(struct fp_fuse *f);
int fp_fuse_pump(struct fp_fuse *f, int max);
int fp_fuse_detach(const char *mountpoint);
void fp_fuse_destroy(struct fp_fuse *f);
int fp_fuse_inval_inode(struct fp_fuse *f, uint64_t ino);

void fp_req_ctx(void *req, uint32_t *uid, uint32_t *gid, int32_t *pid);
int fp_reply_err(void *req, int err);
int fp_reply_entry(void *req, const struct fp_attr *a);
int fp_reply_attr(void *req, const struct fp_attr *a);
int fp_reply_buf(void *req, const char *buf, size_t size);
int fp_reply_readlink(void *req, const char *target);
int fp_reply_write(void *req, size_t count);
int fp_reply_open(void *req, uint64_t fh);
int fp_reply_statfs(void *req, uint32_t bsize, uint32_t namemax);
size_t fp_add_direntry(void *req, char *buf, size_t bufsize, const char *name,
                       const struct fp_attr *a, int64_t next_off);

/* Implemented in Python: build.py declares this block extern "Python+C" for cffi. */
/* PYTHON-CALLBACKS-BEGIN */
void fp_op_lookup(void *req, uint64_t parent, const char *name);
void fp_op_forget(uint64_t ino, uint64_t nlookup);
void fp_op_getattr(void *req, uint64_t ino);
void fp_op_setattr(void *req, uint64_t ino, const struct fp_attr *attr, int to_set);
void fp_op_readlink(void *req, uint64_t ino);
void fp_op_namespace(void *req, int op, uint64_t parent, const char *name,
                                     uint32_t mode, uint64_t other, const char *name2,
                                     unsigned int flags);
void fp_op_opendir(void *req, uint64_t ino);
void fp_op_readdir(void *req, uint64_t ino, size_t size, int64_t off, uint64_t fh);
void fp_op_releasedir(void *req, uint64_t fh);
void fp_op_read(void *req, uint64_t ino, size_t size, int64_t off);
void fp_op_write(void *req, uint64_t ino, const char *buf, size_t size, int64_t off);
void fp_op_statfs(void *req, uint64_t ino);
/* PYTHON-CALLBACKS-END */

/* CDEF-SKIP-BEGIN */
#endif
/* CDEF-SKIP-END */
