/* seglog_io over POSIX calls. Every function returns 0 or -errno; EINTR is retried. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "seglog_int.h"

static int seglog_posix_open(seglog_io *io, const char *path, unsigned flags, int *fd)
{
    int oflags = O_CLOEXEC | ((flags & SEGLOG_IO_WRITE) ? O_RDWR : O_RDONLY);
    if (flags & SEGLOG_IO_CREATE) oflags |= O_CREAT;
    if (flags & SEGLOG_IO_TRUNC) oflags |= O_TRUNC;
    int f;
    do {
        f = open(path, oflags, 0644);
    } while (f < 0 && errno == EINTR);
    if (f < 0) return -errno;
    *fd = f;
    return 0;
}

static int seglog_posix_close(seglog_io *io, int fd)
{
    /* Linux releases the fd even when close reports EINTR: never retry. */
    return close(fd) == 0 ? 0 : -errno;
}

static int seglog_posix_pread(seglog_io *io, int fd, void *buf, size_t len, uint64_t off,
                              size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

static int seglog_posix_pwrite(seglog_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return -EIO;
        done += (size_t)n;
    }
    return 0;
}

static int seglog_posix_fdatasync(seglog_io *io, int fd)
{
    /* Not retried on any error: after a failed fdatasync the pages may be gone (fsyncgate). */
    return fdatasync(fd) == 0 ? 0 : -errno;
}

static int seglog_posix_ftruncate(seglog_io *io, int fd, uint64_t size)
{
    int rc;
    do {
        rc = ftruncate(fd, (off_t)size);
    } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}

static int seglog_posix_size(seglog_io *io, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int seglog_posix_rename(seglog_io *io, const char *from, const char *to)
{
    return rename(from, to) == 0 ? 0 : -errno;
}

static int seglog_posix_unlink(seglog_io *io, const char *path)
{
    return unlink(path) == 0 ? 0 : -errno;
}

static int seglog_posix_fsync_dir(seglog_io *io, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int seglog_posix_list(seglog_io *io, const char *dir, int (*fn)(void *, const char *),
                             void *arg)
{
    DIR *d = opendir(dir);
    if (d == NULL) return -errno;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        rc = fn(arg, e->d_name);
    }
    closedir(d);
    return rc;
}

void seglog_io_posix_init(seglog_io *io)
{
    io->impl = NULL;
    io->open = seglog_posix_open;
    io->close = seglog_posix_close;
    io->pread = seglog_posix_pread;
    io->pwrite = seglog_posix_pwrite;
    io->fdatasync = seglog_posix_fdatasync;
    io->ftruncate = seglog_posix_ftruncate;
    io->size = seglog_posix_size;
    io->rename = seglog_posix_rename;
    io->unlink = seglog_posix_unlink;
    io->fsync_dir = seglog_posix_fsync_dir;
    io->list = seglog_posix_list;
}
