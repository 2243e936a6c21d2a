/*
 * vfs: SQLite on a Meridian volume.
 *
 * A SQLite VFS whose main database file is a page store: SQLite above it knows
 * nothing of quorums, the store below it knows nothing of SQL. Page P of the
 * database file (offset P * page_size, SQLite's page P + 1) is volume page P.
 *
 * Writer. The connection runs with `PRAGMA journal_mode=MEMORY` and
 * `PRAGMA cache_spill=OFF` (mrd_vfs_open sets both): every page a transaction
 * changes reaches xWrite between the write lock and one xSync of the database
 * file, so that xSync is the commit point. The VFS keeps the written pages and,
 * at xSync, hands them to the store's commit as one batch, in page order; the
 * store turns them into log records and returns the commit's LSN at once (the
 * commit is asynchronous: durability is the caller's business, through VDL).
 * A transaction that rolls back reaches no xSync: when the lock falls back,
 * the pending pages are dropped and nothing is shipped.
 *
 * Reader. Each read transaction pins one read point when SQLite takes its
 * SHARED lock (store pin: a VDL) and releases it when the lock goes back to
 * NONE; every page read in between is read as of that point, so a read
 * transaction sees whole commits only. SQLite notices a moved change counter
 * in page 1 and drops its cache by itself.
 *
 * The file's size is not stored anywhere: it is the in-header database size of
 * page 1 (bytes 28..31) as of the read point, which SQLite keeps current.
 * Temporary files (sorts, statement journals) go to the default VFS; the
 * database's own journal and WAL files are refused (journal_mode MEMORY only).
 *
 * Threads: a VFS and its connection are used by one thread at a time (the
 * SQL thread); the store's functions are called on that thread and may block
 * (a read from storage), which is why SQL never runs on an event loop.
 */
#ifndef MERIDIAN_VFS_H
#define MERIDIAN_VFS_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "meridian/common.h"

#define MRD_VFS_PAGES_PER_TXN_MAX 65536u /* pages one transaction may change */
#define MRD_VFS_LATEST UINT64_MAX        /* the writer's read point: its latest pages */

/* One page of a commit. */
typedef struct {
    uint64_t page;       /* volume page number (SQLite's page number - 1) */
    const uint8_t *data; /* page_size bytes */
} mrd_vfs_page;

typedef struct mrd_pagestore mrd_pagestore;
struct mrd_pagestore {
    void *ud;
    uint32_t page_size; /* 512..65536, a power of two */
    bool writable;      /* the writer's store: commit allowed, read point MRD_VFS_LATEST */
    /* A read point for a new read transaction. */
    int (*pin)(mrd_pagestore *ps, uint64_t *read_point, mrd_msg *msg);
    void (*unpin)(mrd_pagestore *ps, uint64_t read_point);
    /* Page `page` as of read_point into out (page_size bytes); zeros if never written. */
    int (*read)(mrd_pagestore *ps, uint64_t page, uint64_t read_point, uint8_t *out,
                mrd_msg *msg);
    /* Writer: the pages of one transaction, ascending; *lsn = the commit's LSN. */
    int (*commit)(mrd_pagestore *ps, const mrd_vfs_page *pages, uint32_t n, uint64_t *lsn,
                  mrd_msg *msg);
};

typedef struct mrd_vfs mrd_vfs;

/* Registers a VFS over store (which outlives it) under a unique name. */
int mrd_vfs_new(mrd_pagestore *store, mrd_vfs **out, mrd_msg *msg);
/* Unregisters and frees; no connection may be open. */
void mrd_vfs_free(mrd_vfs *vfs);
const char *mrd_vfs_name(const mrd_vfs *vfs);

/*
 * Opens the database on the VFS: read-write with the writer's pragmas when the
 * store is writable, read-only (query_only) otherwise.
 */
int mrd_vfs_open(mrd_vfs *vfs, sqlite3 **db, mrd_msg *msg);

/* The LSN of the last commit shipped through this VFS (0: none yet). */
uint64_t mrd_vfs_last_commit_lsn(const mrd_vfs *vfs);
/* The read point of the read transaction in progress, or of the last one. */
uint64_t mrd_vfs_read_point(const mrd_vfs *vfs);
/* The last error the store reported (empty when none), for SQL error messages. */
const char *mrd_vfs_last_error(const mrd_vfs *vfs);

#endif
