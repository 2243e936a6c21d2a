/*
 * faultfs: a disk that fails on demand, for one process, through LD_PRELOAD.
 *
 * Loaded into a process (LD_PRELOAD=libfaultfs.so), it wraps fsync, fdatasync, write,
 * pwrite, pwrite64, writev, pwritev, pwritev2 and fallocate. A call on a file descriptor
 * whose path (read back from /proc/self/fd) lies under one of the paths listed in
 * MERIDIAN_FAULTFS_DIR (colon-separated; a path matches itself and everything below it)
 * fails while the control file named by MERIDIAN_FAULTFS_CTL holds the matching word:
 *
 *   fsync_eio   fsync and fdatasync return -1/EIO (nothing is synced)
 *   enospc      writes and fallocate return -1/ENOSPC (nothing is written)
 *
 * Several words may be given, separated by white space. An absent or empty file (or
 * any other word) passes every call through. The control file is looked at (one stat,
 * and a read when its mtime, size or inode changed) at most every FFS_CHECK_NS, so the
 * cost per call while no fault is set is a clock read; the /proc lookup happens only
 * when a fault is set and the call is of the failing kind.
 *
 * Every switch of the faults and the first failure injected after it are written to
 * stderr (a process's log) as one line each: `faultfs: ...`.
 *
 * The state below is global because an LD_PRELOAD library has no caller to hand it
 * to: the wrapped functions are called by code that knows nothing of the shim.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FFS_DIRS_MAX 8
#define FFS_CHECK_NS (2 * 1000 * 1000)
#define FFS_CTL_BYTES_MAX 256

enum {
    FFS_FSYNC_EIO = 1u << 0,
    FFS_ENOSPC = 1u << 1,
};

typedef int (*ffs_fsync_fn)(int);
typedef ssize_t (*ffs_write_fn)(int, const void *, size_t);
typedef ssize_t (*ffs_pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*ffs_writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*ffs_pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*ffs_pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*ffs_fallocate_fn)(int, int, off_t, off_t);

typedef struct ffs_real {
    ffs_fsync_fn fsync;
    ffs_fsync_fn fdatasync;
    ffs_write_fn write;
    ffs_pwrite_fn pwrite;
    ffs_pwrite_fn pwrite64;
    ffs_writev_fn writev;
    ffs_pwritev_fn pwritev;
    ffs_pwritev2_fn pwritev2;
    ffs_fallocate_fn fallocate;
} ffs_real;

typedef struct ffs_state {
    pthread_once_t once;
    ffs_real real;
    char dirs[FFS_DIRS_MAX][PATH_MAX];
    size_t dir_lens[FFS_DIRS_MAX];
    unsigned n_dirs;
    char ctl[PATH_MAX];
    pthread_mutex_t mu; /* guards the control file's last stat below */
    struct stat ctl_st;
    bool ctl_seen;
    _Atomic unsigned faults;
    _Atomic int64_t checked_ns;
    _Atomic bool reported; /* the first failure since the last switch was logged */
} ffs_state;

static ffs_state ff = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- set-up ------------------------------------------------------------------------- */

static void ffs_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void ffs_say(const char *fmt, ...)
{
    char line[PATH_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof(line) - 2) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (ff.real.write != NULL) ff.real.write(2, line, (size_t)n);
}

/* Canonical form of path; a path that does not exist yet (a file created later) is
 * resolved through its folder. */
static void ffs_canonical(const char *path, char *out)
{
    if (realpath(path, out) != NULL) return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        char res[PATH_MAX];
        if (realpath(dir, res) != NULL &&
            (size_t)snprintf(out, PATH_MAX, "%s/%s", res, slash + 1) < PATH_MAX)
            return;
    }
    snprintf(out, PATH_MAX, "%s", path);
}

static void ffs_parse_dirs(const char *list)
{
    char buf[FFS_DIRS_MAX * PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ":", &save); tok != NULL && ff.n_dirs < FFS_DIRS_MAX;
         tok = strtok_r(NULL, ":", &save)) {
        ffs_canonical(tok, ff.dirs[ff.n_dirs]);
        size_t len = strlen(ff.dirs[ff.n_dirs]);
        while (len > 1 && ff.dirs[ff.n_dirs][len - 1] == '/')
            ff.dirs[ff.n_dirs][--len] = '\0';
        ff.dir_lens[ff.n_dirs++] = len;
    }
}

static void ffs_init(void)
{
    ff.real.fsync = (ffs_fsync_fn)dlsym(RTLD_NEXT, "fsync");
    ff.real.fdatasync = (ffs_fsync_fn)dlsym(RTLD_NEXT, "fdatasync");
    ff.real.write = (ffs_write_fn)dlsym(RTLD_NEXT, "write");
    ff.real.pwrite = (ffs_pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    ff.real.pwrite64 = (ffs_pwrite_fn)dlsym(RTLD_NEXT, "pwrite64");
    ff.real.writev = (ffs_writev_fn)dlsym(RTLD_NEXT, "writev");
    ff.real.pwritev = (ffs_pwritev_fn)dlsym(RTLD_NEXT, "pwritev");
    ff.real.pwritev2 = (ffs_pwritev2_fn)dlsym(RTLD_NEXT, "pwritev2");
    ff.real.fallocate = (ffs_fallocate_fn)dlsym(RTLD_NEXT, "fallocate");
    const char *dirs = getenv("MERIDIAN_FAULTFS_DIR");
    const char *ctl = getenv("MERIDIAN_FAULTFS_CTL");
    if (dirs == NULL || dirs[0] == '\0' || ctl == NULL || ctl[0] == '\0') return;
    snprintf(ff.ctl, sizeof(ff.ctl), "%s", ctl);
    ffs_parse_dirs(dirs);
}

static const ffs_real *ffs_get(void)
{
    pthread_once(&ff.once, ffs_init);
    return &ff.real;
}

/* ---- the control file ----------------------------------------------------------------- */

static unsigned ffs_parse_faults(const char *text)
{
    unsigned faults = 0;
    char buf[FFS_CTL_BYTES_MAX + 1];
    snprintf(buf, sizeof(buf), "%s", text);
    char *save = NULL;
    for (char *w = strtok_r(buf, " \t\r\n", &save); w != NULL;
         w = strtok_r(NULL, " \t\r\n", &save)) {
        if (strcmp(w, "fsync_eio") == 0) faults |= FFS_FSYNC_EIO;
        if (strcmp(w, "enospc") == 0) faults |= FFS_ENOSPC;
    }
    return faults;
}

static unsigned ffs_read_ctl(void)
{
    int fd = open(ff.ctl, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[FFS_CTL_BYTES_MAX + 1];
    ssize_t n;
    do {
        n = read(fd, text, FFS_CTL_BYTES_MAX);
    } while (n < 0 && errno == EINTR);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    return ffs_parse_faults(text);
}

static bool ffs_same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Re-reads the control file when it changed; one thread at a time, the others go on with
 * the faults as they were. */
static void ffs_refresh(void)
{
    if (pthread_mutex_trylock(&ff.mu) != 0) return;
    int saved = errno;
    struct stat st;
    bool exists = stat(ff.ctl, &st) == 0;
    unsigned faults = atomic_load(&ff.faults);
    if (!exists) {
        faults = 0;
    } else if (!ff.ctl_seen || !ffs_same_stat(&st, &ff.ctl_st)) {
        faults = ffs_read_ctl();
    }
    ff.ctl_seen = exists;
    if (exists) ff.ctl_st = st;
    unsigned was = atomic_exchange(&ff.faults, faults);
    if (was != faults) {
        atomic_store(&ff.reported, false);
        ffs_say("faultfs: faults=%s pid=%ld",
                faults == (FFS_FSYNC_EIO | FFS_ENOSPC) ? "fsync_eio,enospc"
                : faults == FFS_FSYNC_EIO              ? "fsync_eio"
                : faults == FFS_ENOSPC                 ? "enospc"
                                                       : "none",
                (long)getpid());
    }
    errno = saved;
    pthread_mutex_unlock(&ff.mu);
}

static unsigned ffs_faults(void)
{
    if (ff.n_dirs == 0) return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t last = atomic_load(&ff.checked_ns);
    if (now - last >= FFS_CHECK_NS && atomic_compare_exchange_strong(&ff.checked_ns, &last, now))
        ffs_refresh();
    return atomic_load(&ff.faults);
}

/* ---- the decision ------------------------------------------------------------------- */

static bool ffs_fd_under(int fd, char *path)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX - 1);
    if (n <= 0) return false;
    path[n] = '\0';
    for (unsigned i = 0; i < ff.n_dirs; i++) {
        size_t len = ff.dir_lens[i];
        if (strncmp(path, ff.dirs[i], len) == 0 && (path[len] == '\0' || path[len] == '/'))
            return true;
    }
    return false;
}

/* True (errno set to err) when this call on fd must fail for the fault `kind`. */
static bool ffs_fail(int fd, unsigned kind, int err, const char *call)
{
    int saved = errno;
    ffs_get();
    char path[PATH_MAX];
    if ((ffs_faults() & kind) == 0 || !ffs_fd_under(fd, path)) {
        errno = saved;
        return false;
    }
    if (!atomic_exchange(&ff.reported, true))
        ffs_say("faultfs: injected call=%s path=%s error=%s", call, path, strerror(err));
    errno = err;
    return true;
}

/* ---- the wrappers ------------------------------------------------------------------- */

int fsync(int fd)
{
    if (ffs_fail(fd, FFS_FSYNC_EIO, EIO, "fsync")) return -1;
    return ff.real.fsync(fd);
}

int fdatasync(int fd)
{
    if (ffs_fail(fd, FFS_FSYNC_EIO, EIO, "fdatasync")) return -1;
    return ff.real.fdatasync(fd);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "write")) return -1;
    return ff.real.write(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "pwrite")) return -1;
    return ff.real.pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "pwrite64")) return -1;
    return ff.real.pwrite64(fd, buf, len, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "writev")) return -1;
    return ff.real.writev(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "pwritev")) return -1;
    return ff.real.pwritev(fd, iov, n, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "pwritev2")) return -1;
    return ff.real.pwritev2(fd, iov, n, off, flags);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    if (ffs_fail(fd, FFS_ENOSPC, ENOSPC, "fallocate")) return -1;
    return ff.real.fallocate(fd, mode, off, len);
}
