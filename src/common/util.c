/* Clocks, whole-file helpers and the growable buffer. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "meridian/common.h"

uint64_t mrd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mrd_now_ms(void)
{
    return mrd_now_ns() / 1000000u;
}

uint64_t mrd_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int mrd_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, mrd_msg *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mrd_fail(msg, MRD_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mrd_fail(msg, MRD_EINVAL, "%s: not a regular file", path);
    }
    /* Read to end of file rather than trusting st_size: /proc files report 0. */
    size_t cap = (size_t)st.st_size + 1, got = 0;
    if (cap < 256) cap = 256;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    char *data = malloc(cap + 1);
    if (data == NULL) {
        close(fd);
        return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (got == cap) {
            if (cap > max_bytes) break;
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *bigger = realloc(data, ncap + 1);
            if (bigger == NULL) {
                free(data);
                close(fd);
                return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", path);
            }
            data = bigger;
            cap = ncap;
        }
        ssize_t n = read(fd, data + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(data);
            close(fd);
            return mrd_fail(msg, MRD_EIO, "%s: cannot read: %s", path, strerror(e));
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    if (got > max_bytes) {
        free(data);
        close(fd);
        return mrd_fail(msg, MRD_ETOOBIG, "%s: more than the limit of %zu bytes", path,
                        max_bytes);
    }
    close(fd);
    data[got] = '\0';
    *out = data;
    if (out_len != NULL) *out_len = got;
    return 0;
}

static int fsync_dir_of(const char *path, mrd_msg *msg)
{
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: cannot open folder: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return mrd_fail(msg, MRD_EIO, "%s: fsync of folder failed: %s", dir, strerror(e));
    return 0;
}

int mrd_write_file_atomic(const char *path, const void *data, size_t len, mrd_msg *msg)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return mrd_fail(msg, MRD_EINVAL, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return mrd_fail(msg, MRD_EIO, "%s: write failed: %s", tmp, strerror(e));
        }
        p += n;
        left -= (size_t)n;
    }
    if (fdatasync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return mrd_fail(msg, MRD_EIO, "%s: fdatasync failed: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return mrd_fail(msg, MRD_EIO, "%s: rename failed: %s", path, strerror(e));
    }
    return fsync_dir_of(path, msg);
}

int mrd_mkdirs(const char *path, mrd_msg *msg)
{
    char buf[4096];
    if ((size_t)snprintf(buf, sizeof(buf), "%s", path) >= sizeof(buf))
        return mrd_fail(msg, MRD_EINVAL, "%s: path too long", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return mrd_fail(msg, MRD_EIO, "%s: mkdir failed: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return mrd_fail(msg, MRD_EIO, "%s: mkdir failed: %s", buf, strerror(errno));
    return 0;
}

void mrd_buf_init(mrd_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void mrd_buf_free(mrd_buf *b)
{
    free(b->data);
    mrd_buf_init(b);
}

int mrd_buf_reserve(mrd_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len) return MRD_ETOOBIG;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need) cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL) return MRD_ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

int mrd_buf_append(mrd_buf *b, const void *data, size_t len)
{
    if (len == 0) return 0;
    int rc = mrd_buf_reserve(b, len);
    if (rc != 0) return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int mrd_buf_printf(mrd_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return MRD_EINVAL;
    int rc = mrd_buf_reserve(b, (size_t)n + 1);
    if (rc != 0) return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void mrd_buf_consume(mrd_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
