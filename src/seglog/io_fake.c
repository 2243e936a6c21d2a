/*
 * An in-memory disk that lies at a crash, as real ones do.
 *
 * Files are inodes with their current bytes, the bytes as of their last
 * fdatasync, and the writes and truncations made since, in order. Names live
 * in two tables: the live one that calls see, and the durable one that a
 * folder's fsync copies the live entries of that folder into. A crash keeps
 * the durable names and, per inode, its synced bytes plus (by mode) nothing,
 * everything, or a prefix of the later operations whose last write is torn.
 */
#include <errno.h>
#include <stdlib.h>

#include "seglog_int.h"

#define SEGLOG_FAKE_FDS_MAX 256
#define SEGLOG_FAKE_FD_BASE 3

typedef struct {
    bool is_write; /* else a truncation to off */
    uint64_t off;
    size_t len;
    uint8_t *data;
} seglog_fake_change;

typedef struct {
    mrd_buf data;
    mrd_buf synced;
    seglog_fake_change *changes;
    size_t change_count;
    size_t change_cap;
} seglog_fake_inode;

typedef struct {
    char *path;
    size_t inode;
} seglog_fake_name;

typedef struct {
    seglog_fake_name *v;
    size_t count;
    size_t cap;
} seglog_fake_names;

typedef struct {
    bool open;
    bool writable;
    size_t inode;
} seglog_fake_fd;

struct seglog_fake {
    seglog_io io;
    uint64_t rng;
    seglog_fake_inode *inodes;
    size_t inode_count;
    size_t inode_cap;
    seglog_fake_names live;
    seglog_fake_names durable;
    seglog_fake_fd fds[SEGLOG_FAKE_FDS_MAX];
    uint64_t fault_nth[SEGLOG_OP_COUNT];
    int fault_err[SEGLOG_OP_COUNT];
    uint64_t calls;
    bool power_armed;
    bool power_out;
    uint64_t power_left;
};

static uint64_t seglog_fake_rand(seglog_fake *f)
{
    uint64_t z = (f->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static seglog_fake *seglog_fake_of(seglog_io *io)
{
    return mrd_container_of(io, seglog_fake, io);
}

/* Counts the call and applies the power cut, then the fault switch (*faulted). */
static int seglog_fake_enter_op(seglog_fake *f, seglog_fake_op op, bool *faulted)
{
    *faulted = false;
    f->calls++;
    if (f->power_out) return -EIO;
    if (f->power_armed) {
        if (f->power_left == 0) {
            f->power_out = true;
            return -EIO;
        }
        f->power_left--;
    }
    if (f->fault_nth[op] > 0 && --f->fault_nth[op] == 0) {
        *faulted = true;
        return -f->fault_err[op];
    }
    return 0;
}

static int seglog_fake_enter(seglog_fake *f, seglog_fake_op op)
{
    bool faulted;
    return seglog_fake_enter_op(f, op, &faulted);
}

/* ---- names -------------------------------------------------------------------------- */

static seglog_fake_name *seglog_fake_lookup(seglog_fake_names *t, const char *path)
{
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->v[i].path, path) == 0) return &t->v[i];
    return NULL;
}

static int seglog_fake_name_add(seglog_fake_names *t, const char *path, size_t inode)
{
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        seglog_fake_name *n = realloc(t->v, cap * sizeof(*n));
        if (n == NULL) return -ENOMEM;
        t->v = n;
        t->cap = cap;
    }
    char *copy = strdup(path);
    if (copy == NULL) return -ENOMEM;
    t->v[t->count].path = copy;
    t->v[t->count].inode = inode;
    t->count++;
    return 0;
}

static void seglog_fake_name_del(seglog_fake_names *t, seglog_fake_name *n)
{
    free(n->path);
    *n = t->v[--t->count];
}

static void seglog_fake_names_free(seglog_fake_names *t)
{
    for (size_t i = 0; i < t->count; i++)
        free(t->v[i].path);
    free(t->v);
    memset(t, 0, sizeof(*t));
}

/* True when path's folder (everything before its last '/') is dir; *leaf is the rest. */
static bool seglog_fake_in_dir(const char *path, const char *dir, const char **leaf)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) return false;
    size_t n = (size_t)(slash - path);
    if (strlen(dir) != n || memcmp(path, dir, n) != 0) return false;
    *leaf = slash + 1;
    return true;
}

/* ---- inodes ------------------------------------------------------------------------- */

static int seglog_fake_inode_new(seglog_fake *f, size_t *id)
{
    if (f->inode_count == f->inode_cap) {
        size_t cap = f->inode_cap ? f->inode_cap * 2 : 16;
        seglog_fake_inode *n = realloc(f->inodes, cap * sizeof(*n));
        if (n == NULL) return -ENOMEM;
        f->inodes = n;
        f->inode_cap = cap;
    }
    memset(&f->inodes[f->inode_count], 0, sizeof(seglog_fake_inode));
    *id = f->inode_count++;
    return 0;
}

static void seglog_fake_changes_clear(seglog_fake_inode *n)
{
    for (size_t i = 0; i < n->change_count; i++)
        free(n->changes[i].data);
    n->change_count = 0;
}

static int seglog_fake_change_add(seglog_fake_inode *n, bool is_write, uint64_t off,
                                  const void *data, size_t len)
{
    if (n->change_count == n->change_cap) {
        size_t cap = n->change_cap ? n->change_cap * 2 : 8;
        seglog_fake_change *c = realloc(n->changes, cap * sizeof(*c));
        if (c == NULL) return -ENOMEM;
        n->changes = c;
        n->change_cap = cap;
    }
    seglog_fake_change *c = &n->changes[n->change_count];
    c->is_write = is_write;
    c->off = off;
    c->len = len;
    c->data = NULL;
    if (len > 0) {
        c->data = malloc(len);
        if (c->data == NULL) return -ENOMEM;
        memcpy(c->data, data, len);
    }
    n->change_count++;
    return 0;
}

/* Sets b's length to size, new bytes zero. */
static int seglog_fake_resize(mrd_buf *b, uint64_t size)
{
    if (size > b->len) {
        if (mrd_buf_reserve(b, (size_t)(size - b->len)) != 0) return -ENOMEM;
        memset(b->data + b->len, 0, (size_t)(size - b->len));
    }
    b->len = (size_t)size;
    return 0;
}

static int seglog_fake_write_at(mrd_buf *b, uint64_t off, const void *data, size_t len)
{
    if (off + len > b->len && seglog_fake_resize(b, off + len) != 0) return -ENOMEM;
    if (len > 0) memcpy(b->data + off, data, len);
    return 0;
}

static int seglog_fake_apply(mrd_buf *b, const seglog_fake_change *c, size_t len)
{
    if (!c->is_write) return seglog_fake_resize(b, c->off);
    return seglog_fake_write_at(b, c->off, c->data, len);
}

static void seglog_fake_inode_free(seglog_fake_inode *n)
{
    seglog_fake_changes_clear(n);
    free(n->changes);
    mrd_buf_free(&n->data);
    mrd_buf_free(&n->synced);
}

/* ---- the vtable --------------------------------------------------------------------- */

static seglog_fake_fd *seglog_fake_fd_get(seglog_fake *f, int fd)
{
    int i = fd - SEGLOG_FAKE_FD_BASE;
    if (i < 0 || i >= SEGLOG_FAKE_FDS_MAX || !f->fds[i].open) return NULL;
    return &f->fds[i];
}

static int seglog_fake_truncate_inode(seglog_fake_inode *n, uint64_t size)
{
    if (seglog_fake_change_add(n, false, size, NULL, 0) != 0) return -ENOMEM;
    return seglog_fake_resize(&n->data, size);
}

static int seglog_fake_open(seglog_io *io, const char *path, unsigned flags, int *fd)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_OPEN);
    if (rc != 0) return rc;
    int slot = 0;
    while (slot < SEGLOG_FAKE_FDS_MAX && f->fds[slot].open)
        slot++;
    if (slot == SEGLOG_FAKE_FDS_MAX) return -EMFILE;
    seglog_fake_name *name = seglog_fake_lookup(&f->live, path);
    size_t inode;
    if (name != NULL) {
        inode = name->inode;
    } else {
        if (!(flags & SEGLOG_IO_CREATE)) return -ENOENT;
        if (seglog_fake_inode_new(f, &inode) != 0) return -ENOMEM;
        if (seglog_fake_name_add(&f->live, path, inode) != 0) return -ENOMEM;
    }
    if ((flags & SEGLOG_IO_TRUNC) && seglog_fake_truncate_inode(&f->inodes[inode], 0) != 0)
        return -ENOMEM;
    f->fds[slot] =
        (seglog_fake_fd){.open = true, .writable = (flags & SEGLOG_IO_WRITE) != 0, .inode = inode};
    *fd = slot + SEGLOG_FAKE_FD_BASE;
    return 0;
}

static int seglog_fake_close(seglog_io *io, int fd)
{
    seglog_fake *f = seglog_fake_of(io);
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    int rc = seglog_fake_enter(f, SEGLOG_OP_CLOSE);
    if (d == NULL) return -EBADF;
    d->open = false; /* released even when the call fails, as close(2) does */
    return rc;
}

static int seglog_fake_pread(seglog_io *io, int fd, void *buf, size_t len, uint64_t off,
                             size_t *got)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_PREAD);
    if (rc != 0) return rc;
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    if (d == NULL) return -EBADF;
    const mrd_buf *b = &f->inodes[d->inode].data;
    size_t n = 0;
    if (off < b->len) n = b->len - off < len ? (size_t)(b->len - off) : len;
    if (n > 0) memcpy(buf, b->data + off, n);
    *got = n;
    return 0;
}

static int seglog_fake_write_some(seglog_fake_inode *n, uint64_t off, const void *buf, size_t len)
{
    if (seglog_fake_change_add(n, true, off, buf, len) != 0) return -ENOMEM;
    return seglog_fake_write_at(&n->data, off, buf, len);
}

static int seglog_fake_pwrite(seglog_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    seglog_fake *f = seglog_fake_of(io);
    bool faulted;
    int rc = seglog_fake_enter_op(f, SEGLOG_OP_PWRITE, &faulted);
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    if (d == NULL || !d->writable) return rc != 0 ? rc : -EBADF;
    if (faulted) {
        /* A failing write may have written part of its bytes first. */
        size_t part = (size_t)(seglog_fake_rand(f) % (len + 1));
        if (part > 0 && seglog_fake_write_some(&f->inodes[d->inode], off, buf, part) != 0)
            return -ENOMEM;
    }
    if (rc != 0) return rc;
    return seglog_fake_write_some(&f->inodes[d->inode], off, buf, len);
}

static int seglog_fake_fdatasync(seglog_io *io, int fd)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_FDATASYNC);
    if (rc != 0) return rc;
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    if (d == NULL) return -EBADF;
    seglog_fake_inode *n = &f->inodes[d->inode];
    n->synced.len = 0;
    if (mrd_buf_append(&n->synced, n->data.data, n->data.len) != 0) return -ENOMEM;
    seglog_fake_changes_clear(n);
    return 0;
}

static int seglog_fake_ftruncate(seglog_io *io, int fd, uint64_t size)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_FTRUNCATE);
    if (rc != 0) return rc;
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    if (d == NULL || !d->writable) return -EBADF;
    return seglog_fake_truncate_inode(&f->inodes[d->inode], size);
}

static int seglog_fake_size(seglog_io *io, int fd, uint64_t *size)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_SIZE);
    if (rc != 0) return rc;
    seglog_fake_fd *d = seglog_fake_fd_get(f, fd);
    if (d == NULL) return -EBADF;
    *size = f->inodes[d->inode].data.len;
    return 0;
}

static int seglog_fake_rename(seglog_io *io, const char *from, const char *to)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_RENAME);
    if (rc != 0) return rc;
    seglog_fake_name *src = seglog_fake_lookup(&f->live, from);
    if (src == NULL) return -ENOENT;
    size_t inode = src->inode;
    seglog_fake_name_del(&f->live, src);
    seglog_fake_name *dst = seglog_fake_lookup(&f->live, to);
    if (dst != NULL) seglog_fake_name_del(&f->live, dst);
    return seglog_fake_name_add(&f->live, to, inode);
}

static int seglog_fake_unlink(seglog_io *io, const char *path)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_UNLINK);
    if (rc != 0) return rc;
    seglog_fake_name *n = seglog_fake_lookup(&f->live, path);
    if (n == NULL) return -ENOENT;
    seglog_fake_name_del(&f->live, n);
    return 0;
}

static int seglog_fake_fsync_dir(seglog_io *io, const char *dir)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_FSYNC_DIR);
    if (rc != 0) return rc;
    const char *leaf;
    for (size_t i = 0; i < f->durable.count;) {
        if (seglog_fake_in_dir(f->durable.v[i].path, dir, &leaf))
            seglog_fake_name_del(&f->durable, &f->durable.v[i]);
        else
            i++;
    }
    for (size_t i = 0; i < f->live.count; i++)
        if (seglog_fake_in_dir(f->live.v[i].path, dir, &leaf) &&
            seglog_fake_name_add(&f->durable, f->live.v[i].path, f->live.v[i].inode) != 0)
            return -ENOMEM;
    return 0;
}

static int seglog_fake_list(seglog_io *io, const char *dir, int (*fn)(void *, const char *),
                            void *arg)
{
    seglog_fake *f = seglog_fake_of(io);
    int rc = seglog_fake_enter(f, SEGLOG_OP_LIST);
    if (rc != 0) return rc;
    const char *leaf;
    for (size_t i = 0; rc == 0 && i < f->live.count; i++)
        if (seglog_fake_in_dir(f->live.v[i].path, dir, &leaf)) rc = fn(arg, leaf);
    return rc;
}

/* ---- control ------------------------------------------------------------------------ */

seglog_fake *seglog_fake_new(uint64_t seed)
{
    seglog_fake *f = calloc(1, sizeof(*f));
    if (f == NULL) return NULL;
    f->rng = seed;
    f->io = (seglog_io){.impl = f,
                        .open = seglog_fake_open,
                        .close = seglog_fake_close,
                        .pread = seglog_fake_pread,
                        .pwrite = seglog_fake_pwrite,
                        .fdatasync = seglog_fake_fdatasync,
                        .ftruncate = seglog_fake_ftruncate,
                        .size = seglog_fake_size,
                        .rename = seglog_fake_rename,
                        .unlink = seglog_fake_unlink,
                        .fsync_dir = seglog_fake_fsync_dir,
                        .list = seglog_fake_list};
    return f;
}

void seglog_fake_free(seglog_fake *f)
{
    if (f == NULL) return;
    for (size_t i = 0; i < f->inode_count; i++)
        seglog_fake_inode_free(&f->inodes[i]);
    free(f->inodes);
    seglog_fake_names_free(&f->live);
    seglog_fake_names_free(&f->durable);
    free(f);
}

seglog_io *seglog_fake_io(seglog_fake *f)
{
    return &f->io;
}

void seglog_fake_fail(seglog_fake *f, seglog_fake_op op, uint64_t nth, int err)
{
    assert(op < SEGLOG_OP_COUNT && err > 0);
    f->fault_nth[op] = nth;
    f->fault_err[op] = err;
}

void seglog_fake_power_cut(seglog_fake *f, uint64_t calls)
{
    f->power_armed = true;
    f->power_left = calls;
}

uint64_t seglog_fake_calls(const seglog_fake *f)
{
    return f->calls;
}

/* Replays a random prefix of n's changes onto its synced bytes, tearing the next write. */
static int seglog_fake_tear(seglog_fake *f, seglog_fake_inode *n, mrd_buf *out)
{
    size_t keep = (size_t)(seglog_fake_rand(f) % (n->change_count + 1));
    for (size_t i = 0; i < keep; i++)
        if (seglog_fake_apply(out, &n->changes[i], n->changes[i].len) != 0) return -ENOMEM;
    if (keep == n->change_count || !n->changes[keep].is_write) return 0;
    const seglog_fake_change *c = &n->changes[keep];
    size_t part = (size_t)(seglog_fake_rand(f) % (c->len + 1));
    if (seglog_fake_apply(out, c, part) != 0) return -ENOMEM;
    if (seglog_fake_rand(f) % 2 == 0) return 0; /* the rest keeps its old bytes */
    for (size_t i = part; i < c->len; i++) {
        uint8_t junk = (uint8_t)seglog_fake_rand(f);
        if (seglog_fake_write_at(out, c->off + i, &junk, 1) != 0) return -ENOMEM;
    }
    return 0;
}

static void seglog_fake_crash_inode(seglog_fake *f, seglog_fake_inode *n, seglog_crash_mode mode)
{
    bool keep_all = false;
    if (mode == SEGLOG_CRASH_RANDOM) {
        uint64_t pick = seglog_fake_rand(f) % 3;
        keep_all = pick == 2;
        mode = pick == 1 ? SEGLOG_CRASH_TEAR : SEGLOG_CRASH_DROP;
    }
    const mrd_buf *base = keep_all ? &n->data : &n->synced;
    mrd_buf out;
    mrd_buf_init(&out);
    int rc = mrd_buf_append(&out, base->data, base->len);
    if (rc == 0 && mode == SEGLOG_CRASH_TEAR) rc = seglog_fake_tear(f, n, &out);
    assert(rc == 0);
    mrd_buf_free(&n->data);
    n->data = out;
    n->synced.len = 0;
    rc = mrd_buf_append(&n->synced, out.data, out.len);
    assert(rc == 0);
    (void)rc;
    seglog_fake_changes_clear(n);
}

void seglog_fake_crash(seglog_fake *f, seglog_crash_mode mode)
{
    for (size_t i = 0; i < f->inode_count; i++)
        seglog_fake_crash_inode(f, &f->inodes[i], mode);
    seglog_fake_names_free(&f->live);
    for (size_t i = 0; i < f->durable.count; i++) {
        int rc = seglog_fake_name_add(&f->live, f->durable.v[i].path, f->durable.v[i].inode);
        assert(rc == 0);
        (void)rc;
    }
    memset(f->fds, 0, sizeof(f->fds));
    memset(f->fault_nth, 0, sizeof(f->fault_nth));
    f->power_armed = f->power_out = false;
    f->power_left = 0;
}

int seglog_fake_get(seglog_fake *f, const char *path, mrd_buf *out)
{
    seglog_fake_name *n = seglog_fake_lookup(&f->live, path);
    if (n == NULL) return MRD_ENOTFOUND;
    out->len = 0;
    const mrd_buf *b = &f->inodes[n->inode].data;
    return mrd_buf_append(out, b->data, b->len);
}

int seglog_fake_put(seglog_fake *f, const char *path, const void *data, size_t len)
{
    seglog_fake_name *n = seglog_fake_lookup(&f->live, path);
    size_t inode;
    if (n != NULL) {
        inode = n->inode;
    } else if (seglog_fake_inode_new(f, &inode) != 0 ||
               seglog_fake_name_add(&f->live, path, inode) != 0) {
        return MRD_ENOMEM;
    }
    seglog_fake_inode *node = &f->inodes[inode];
    node->data.len = node->synced.len = 0;
    seglog_fake_changes_clear(node);
    if (mrd_buf_append(&node->data, data, len) != 0 ||
        mrd_buf_append(&node->synced, data, len) != 0)
        return MRD_ENOMEM;
    seglog_fake_name *d = seglog_fake_lookup(&f->durable, path);
    if (d != NULL) {
        d->inode = inode;
        return 0;
    }
    return seglog_fake_name_add(&f->durable, path, inode) == 0 ? 0 : MRD_ENOMEM;
}
