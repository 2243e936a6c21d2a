/*
 * The Meridian VFS (include/meridian/vfs.h): SQLite's main database file as
 * pages of a store, written transactions shipped whole at xSync, read
 * transactions pinned to one read point.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/vfs.h"

#define VFS_DB_NAME "meridian.db"

struct mrd_vfs {
    sqlite3_vfs base; /* first: SQLite hands it back to us */
    char name[48];
    mrd_pagestore *store;
    sqlite3_vfs *dflt;   /* temporary files and OS services */
    uint64_t last_commit_lsn;
    uint64_t read_point;
    mrd_msg last_err;
};

/* A page written by the transaction in progress. */
typedef struct {
    uint64_t page;
    uint8_t *data;
} pending_page;

typedef struct {
    sqlite3_file base;
    mrd_vfs *vfs;
    int lock;
    bool pinned;
    bool size_known; /* size holds page 1's in-header size at the current read point */
    sqlite3_int64 size;
    pending_page *pending; /* ascending page */
    uint32_t n_pending, cap_pending;
} vfs_file;

/* ---- pending pages ---------------------------------------------------------------------- */

static uint32_t pending_find(const vfs_file *f, uint64_t page, bool *found)
{
    uint32_t lo = 0, hi = f->n_pending;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->pending[mid].page < page)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < f->n_pending && f->pending[lo].page == page;
    return lo;
}

static void pending_drop(vfs_file *f)
{
    for (uint32_t i = 0; i < f->n_pending; i++)
        free(f->pending[i].data);
    f->n_pending = 0;
}

/* The pending copy of page, created from the current version when absent. */
static int pending_get(vfs_file *f, uint64_t page, uint8_t **out)
{
    mrd_pagestore *ps = f->vfs->store;
    bool found;
    uint32_t at = pending_find(f, page, &found);
    if (found) return *out = f->pending[at].data, SQLITE_OK;
    if (f->n_pending >= MRD_VFS_PAGES_PER_TXN_MAX) {
        mrd_fail(&f->vfs->last_err, MRD_ETOOBIG, "a transaction may change at most %u pages",
                 MRD_VFS_PAGES_PER_TXN_MAX);
        return SQLITE_FULL;
    }
    if (f->n_pending == f->cap_pending) {
        uint32_t cap = f->cap_pending ? f->cap_pending * 2 : 16;
        pending_page *p = realloc(f->pending, cap * sizeof(*p));
        if (p == NULL) return SQLITE_NOMEM;
        f->pending = p;
        f->cap_pending = cap;
    }
    uint8_t *data = malloc(ps->page_size);
    if (data == NULL) return SQLITE_NOMEM;
    if (ps->read(ps, page, MRD_VFS_LATEST, data, &f->vfs->last_err) != 0) {
        free(data);
        return SQLITE_IOERR_READ;
    }
    memmove(&f->pending[at + 1], &f->pending[at], (f->n_pending - at) * sizeof(*f->pending));
    f->pending[at] = (pending_page){page, data};
    f->n_pending++;
    *out = data;
    return SQLITE_OK;
}

/* Page as this connection sees it now: pending, else the store at the read point. */
static int page_read(vfs_file *f, uint64_t page, uint8_t *out)
{
    mrd_pagestore *ps = f->vfs->store;
    bool found;
    uint32_t at = pending_find(f, page, &found);
    if (found) return memcpy(out, f->pending[at].data, ps->page_size), SQLITE_OK;
    uint64_t point = ps->writable ? MRD_VFS_LATEST : f->vfs->read_point;
    return ps->read(ps, page, point, out, &f->vfs->last_err) == 0 ? SQLITE_OK : SQLITE_IOERR_READ;
}

/* ---- io methods ------------------------------------------------------------------------- */

static int x_close(sqlite3_file *file)
{
    vfs_file *f = (vfs_file *)file;
    pending_drop(f);
    free(f->pending);
    if (f->pinned && f->vfs->store->unpin != NULL)
        f->vfs->store->unpin(f->vfs->store, f->vfs->read_point);
    f->pinned = false;
    return SQLITE_OK;
}

/* The database size in bytes: page 1's in-header size at the current read point. */
static int file_size_read(vfs_file *f, sqlite3_int64 *size)
{
    uint32_t page_size = f->vfs->store->page_size;
    uint8_t *p0 = malloc(page_size);
    if (p0 == NULL) return SQLITE_NOMEM;
    int rc = page_read(f, 0, p0);
    if (rc == SQLITE_OK) {
        uint32_t pages = (uint32_t)p0[28] << 24 | (uint32_t)p0[29] << 16 |
                         (uint32_t)p0[30] << 8 | p0[31];
        uint32_t sqlite_page = (uint32_t)p0[16] << 8 | p0[17];
        if (sqlite_page == 1) sqlite_page = 65536;
        bool empty = memcmp(p0, "SQLite format 3", 16) != 0;
        *size = empty ? 0 : (sqlite3_int64)pages * sqlite_page;
    }
    free(p0);
    return rc;
}

static int file_size(vfs_file *f, sqlite3_int64 *size)
{
    if (!f->size_known) {
        int rc = file_size_read(f, &f->size);
        if (rc != SQLITE_OK) return rc;
        f->size_known = true;
    }
    *size = f->size;
    return SQLITE_OK;
}

static int x_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
    vfs_file *f = (vfs_file *)file;
    uint32_t page_size = f->vfs->store->page_size;
    sqlite3_int64 size;
    int rc = file_size(f, &size);
    if (rc != SQLITE_OK) return rc;
    uint8_t *page = malloc(page_size), *dst = buf;
    if (page == NULL) return SQLITE_NOMEM;
    int left = amt;
    sqlite3_int64 at = off;
    while (rc == SQLITE_OK && left > 0) {
        uint32_t in = (uint32_t)(at % page_size), n = page_size - in;
        if ((int)n > left) n = (uint32_t)left;
        rc = page_read(f, (uint64_t)at / page_size, page);
        memcpy(dst, page + in, n);
        dst += n;
        at += n;
        left -= (int)n;
    }
    free(page);
    if (rc != SQLITE_OK) return rc;
    if (off + amt > size && size > off) {
        memset((uint8_t *)buf + (size - off), 0, (size_t)(off + amt - size));
        return SQLITE_IOERR_SHORT_READ;
    }
    if (off >= size) {
        memset(buf, 0, (size_t)amt);
        return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
}

static int x_write(sqlite3_file *file, const void *buf, int amt, sqlite3_int64 off)
{
    vfs_file *f = (vfs_file *)file;
    if (!f->vfs->store->writable) return SQLITE_READONLY;
    uint32_t page_size = f->vfs->store->page_size;
    const uint8_t *src = buf;
    while (amt > 0) {
        uint32_t in = (uint32_t)(off % page_size), n = page_size - in;
        if ((int)n > amt) n = (uint32_t)amt;
        uint8_t *page;
        if (off < (sqlite3_int64)page_size) f->size_known = false; /* page 1 changes */
        int rc = pending_get(f, (uint64_t)off / page_size, &page);
        if (rc != SQLITE_OK) return rc;
        memcpy(page + in, src, n);
        src += n;
        off += n;
        amt -= (int)n;
    }
    return SQLITE_OK;
}

/* The size lives in page 1's header, which SQLite updates itself. */
static int x_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    (void)file;
    (void)size;
    return SQLITE_OK;
}

/* The commit point: the pending pages become one batch in the store. */
static int x_sync(sqlite3_file *file, int flags)
{
    (void)flags;
    vfs_file *f = (vfs_file *)file;
    if (f->n_pending == 0) return SQLITE_OK;
    mrd_vfs_page *pages = malloc(f->n_pending * sizeof(*pages));
    if (pages == NULL) return SQLITE_NOMEM;
    for (uint32_t i = 0; i < f->n_pending; i++)
        pages[i] = (mrd_vfs_page){f->pending[i].page, f->pending[i].data};
    uint64_t lsn = 0;
    mrd_pagestore *ps = f->vfs->store;
    int rc = ps->commit(ps, pages, f->n_pending, &lsn, &f->vfs->last_err);
    free(pages);
    if (rc != 0) return SQLITE_IOERR_FSYNC;
    f->vfs->last_commit_lsn = lsn;
    pending_drop(f);
    return SQLITE_OK;
}

static int x_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    return file_size((vfs_file *)file, size);
}

static int x_lock(sqlite3_file *file, int level)
{
    vfs_file *f = (vfs_file *)file;
    mrd_vfs *v = f->vfs;
    if (level > SQLITE_LOCK_SHARED && !v->store->writable) return SQLITE_READONLY;
    if (f->lock == SQLITE_LOCK_NONE && level >= SQLITE_LOCK_SHARED && !f->pinned) {
        if (v->store->pin != NULL && v->store->pin(v->store, &v->read_point, &v->last_err) != 0)
            return SQLITE_IOERR_LOCK;
        if (v->store->pin == NULL) v->read_point = MRD_VFS_LATEST;
        f->pinned = true;
        f->size_known = false; /* a new read point */
    }
    if (level > f->lock) f->lock = level;
    return SQLITE_OK;
}

static int x_unlock(sqlite3_file *file, int level)
{
    vfs_file *f = (vfs_file *)file;
    /* Leaving the write lock without a sync: the transaction rolled back. */
    if (level < SQLITE_LOCK_RESERVED && f->n_pending > 0) {
        pending_drop(f);
        f->size_known = false;
    }
    if (level == SQLITE_LOCK_NONE && f->pinned) {
        if (f->vfs->store->unpin != NULL) f->vfs->store->unpin(f->vfs->store, f->vfs->read_point);
        f->pinned = false;
    }
    if (level < f->lock) f->lock = level;
    return SQLITE_OK;
}

/* One connection per VFS: nobody else can hold a reserved lock. */
static int x_check_reserved(sqlite3_file *file, int *out)
{
    (void)file;
    *out = 0;
    return SQLITE_OK;
}

static int x_file_control(sqlite3_file *file, int op, void *arg)
{
    (void)file;
    (void)op;
    (void)arg;
    return SQLITE_NOTFOUND;
}

static int x_sector_size(sqlite3_file *file)
{
    return (int)((vfs_file *)file)->vfs->store->page_size;
}

static int x_device_characteristics(sqlite3_file *file)
{
    (void)file;
    return SQLITE_IOCAP_POWERSAFE_OVERWRITE | SQLITE_IOCAP_SAFE_APPEND | SQLITE_IOCAP_SEQUENTIAL;
}

static const sqlite3_io_methods io_methods = {
    .iVersion = 1,
    .xClose = x_close,
    .xRead = x_read,
    .xWrite = x_write,
    .xTruncate = x_truncate,
    .xSync = x_sync,
    .xFileSize = x_file_size,
    .xLock = x_lock,
    .xUnlock = x_unlock,
    .xCheckReservedLock = x_check_reserved,
    .xFileControl = x_file_control,
    .xSectorSize = x_sector_size,
    .xDeviceCharacteristics = x_device_characteristics,
};

/* ---- vfs methods ------------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int x_open(sqlite3_vfs *base, sqlite3_filename name, sqlite3_file *file, int flags,
                  int *out_flags)
{
    mrd_vfs *v = (mrd_vfs *)base;
    if (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL | SQLITE_OPEN_SUPER_JOURNAL)) {
        mrd_fail(&v->last_err, MRD_EINVAL, "the volume keeps no journal or WAL file "
                                           "(journal_mode must stay MEMORY)");
        return SQLITE_CANTOPEN;
    }
    if (!(flags & SQLITE_OPEN_MAIN_DB)) return v->dflt->xOpen(v->dflt, name, file, flags, out_flags);
    vfs_file *f = (vfs_file *)file;
    memset(f, 0, sizeof(*f));
    f->vfs = v;
    f->base.pMethods = &io_methods;
    if (out_flags != NULL) *out_flags = flags;
    return SQLITE_OK;
}

static int x_delete(sqlite3_vfs *base, const char *name, int sync_dir)
{
    mrd_vfs *v = (mrd_vfs *)base;
    if (ends_with(name, "-journal") || ends_with(name, "-wal") || ends_with(name, VFS_DB_NAME))
        return SQLITE_OK;
    return v->dflt->xDelete(v->dflt, name, sync_dir);
}

static int x_access(sqlite3_vfs *base, const char *name, int flags, int *out)
{
    mrd_vfs *v = (mrd_vfs *)base;
    if (ends_with(name, "-journal") || ends_with(name, "-wal") || ends_with(name, "-shm")) {
        *out = 0;
        return SQLITE_OK;
    }
    if (ends_with(name, VFS_DB_NAME)) {
        *out = 1;
        return SQLITE_OK;
    }
    return v->dflt->xAccess(v->dflt, name, flags, out);
}

static int x_full_pathname(sqlite3_vfs *base, const char *name, int n, char *out)
{
    (void)base;
    return snprintf(out, (size_t)n, "%s", name) < n ? SQLITE_OK : SQLITE_CANTOPEN;
}

#define DELEGATE(v) (((mrd_vfs *)(v))->dflt)

static void *x_dlopen(sqlite3_vfs *v, const char *f)
{
    return DELEGATE(v)->xDlOpen(DELEGATE(v), f);
}
static void x_dlerror(sqlite3_vfs *v, int n, char *msg)
{
    DELEGATE(v)->xDlError(DELEGATE(v), n, msg);
}
static void (*x_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
    return DELEGATE(v)->xDlSym(DELEGATE(v), h, s);
}
static void x_dlclose(sqlite3_vfs *v, void *h)
{
    DELEGATE(v)->xDlClose(DELEGATE(v), h);
}
static int x_randomness(sqlite3_vfs *v, int n, char *out)
{
    return DELEGATE(v)->xRandomness(DELEGATE(v), n, out);
}
static int x_sleep(sqlite3_vfs *v, int us)
{
    return DELEGATE(v)->xSleep(DELEGATE(v), us);
}
static int x_current_time(sqlite3_vfs *v, double *t)
{
    return DELEGATE(v)->xCurrentTime(DELEGATE(v), t);
}
static int x_last_error(sqlite3_vfs *v, int n, char *out)
{
    return DELEGATE(v)->xGetLastError(DELEGATE(v), n, out);
}
static int x_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    return DELEGATE(v)->xCurrentTimeInt64(DELEGATE(v), t);
}

/* ---- the public surface ----------------------------------------------------------------- */

int mrd_vfs_new(mrd_pagestore *store, mrd_vfs **out, mrd_msg *msg)
{
    static atomic_uint serial;
    if (store->page_size < 512 || store->page_size > 65536 ||
        (store->page_size & (store->page_size - 1)) != 0)
        return mrd_fail(msg, MRD_EINVAL, "vfs: page size %u is not a power of two in 512..65536",
                        store->page_size);
    if (store->read == NULL || (store->writable && store->commit == NULL))
        return mrd_fail(msg, MRD_EINVAL, "vfs: the store lacks read or commit");
    sqlite3_vfs *dflt = sqlite3_vfs_find(NULL);
    if (dflt == NULL || dflt->iVersion < 2)
        return mrd_fail(msg, MRD_ESTATE, "vfs: SQLite has no usable default VFS");
    mrd_vfs *v = calloc(1, sizeof(*v));
    if (v == NULL) return mrd_fail(msg, MRD_ENOMEM, "vfs: out of memory");
    v->store = store;
    v->dflt = dflt;
    snprintf(v->name, sizeof(v->name), "meridian-%u", atomic_fetch_add(&serial, 1));
    int size = dflt->szOsFile > (int)sizeof(vfs_file) ? dflt->szOsFile : (int)sizeof(vfs_file);
    v->base = (sqlite3_vfs){
        .iVersion = 2, .szOsFile = size, .mxPathname = dflt->mxPathname, .zName = v->name,
        .pAppData = v, .xOpen = x_open, .xDelete = x_delete, .xAccess = x_access,
        .xFullPathname = x_full_pathname, .xDlOpen = x_dlopen, .xDlError = x_dlerror,
        .xDlSym = x_dlsym, .xDlClose = x_dlclose, .xRandomness = x_randomness,
        .xSleep = x_sleep, .xCurrentTime = x_current_time, .xGetLastError = x_last_error,
        .xCurrentTimeInt64 = x_current_time_int64,
    };
    int rc = sqlite3_vfs_register(&v->base, 0);
    if (rc != SQLITE_OK) {
        free(v);
        return mrd_fail(msg, MRD_ESTATE, "vfs: registering failed: %s", sqlite3_errstr(rc));
    }
    *out = v;
    return 0;
}

void mrd_vfs_free(mrd_vfs *vfs)
{
    if (vfs == NULL) return;
    sqlite3_vfs_unregister(&vfs->base);
    free(vfs);
}

const char *mrd_vfs_name(const mrd_vfs *vfs)
{
    return vfs->name;
}

static int exec(sqlite3 *db, const char *sql, mrd_msg *msg)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc == SQLITE_OK) return 0;
    mrd_fail(msg, MRD_EIO, "vfs: %s: %s", sql, err != NULL ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    return MRD_EIO;
}

int mrd_vfs_open(mrd_vfs *vfs, sqlite3 **db, mrd_msg *msg)
{
    bool w = vfs->store->writable;
    int flags = w ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int rc = sqlite3_open_v2(VFS_DB_NAME, db, flags | SQLITE_OPEN_NOMUTEX, vfs->name);
    if (rc != SQLITE_OK) {
        mrd_fail(msg, MRD_EIO, "vfs: cannot open the database: %s",
                 *db != NULL ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return MRD_EIO;
    }
    char sql[200];
    if (w)
        snprintf(sql, sizeof(sql),
                 "PRAGMA page_size=%u; PRAGMA journal_mode=MEMORY; PRAGMA cache_spill=OFF; "
                 "PRAGMA synchronous=FULL; PRAGMA mmap_size=0;",
                 vfs->store->page_size);
    else
        snprintf(sql, sizeof(sql), "PRAGMA query_only=1; PRAGMA mmap_size=0;");
    rc = exec(*db, sql, msg);
    if (rc != 0) {
        sqlite3_close(*db);
        *db = NULL;
    }
    return rc;
}

uint64_t mrd_vfs_last_commit_lsn(const mrd_vfs *vfs)
{
    return vfs->last_commit_lsn;
}

uint64_t mrd_vfs_read_point(const mrd_vfs *vfs)
{
    return vfs->read_point;
}

const char *mrd_vfs_last_error(const mrd_vfs *vfs)
{
    return vfs->last_err.text;
}
