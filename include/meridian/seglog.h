/*
 * seglog: a storage node's segment log and its metadata file.
 *
 * The segment log is a folder of append-only files (seg-<seq in 16 hex>.log),
 * each a fixed header followed by frames [length][crc32c][lsn][payload]. The
 * payload is opaque bytes (an encoded log record); the LSN sits in the frame so
 * that recovery and lookups never decode a payload. LSNs in one log strictly
 * increase. A file rolls over before a batch would take it past
 * file_bytes_max, and a batch never spans two files, so a file never exceeds
 * the limit. docs/storage-format.md gives the exact bytes.
 *
 * Durability is a contract: seglog_append only stages entries in memory, and
 * a batch is durable exactly when seglog_sync (or seglog_sync_complete) has
 * returned 0 for it — one write and one fdatasync per batch (group commit;
 * the batch that opens a new file also syncs the folder). If fdatasync fails,
 * the kernel may already have dropped the dirty pages, and a retry can report
 * success without the data ever reaching the disk (PostgreSQL's "fsyncgate"):
 * the log enters a failed state for good and refuses every append, sync and
 * truncation with MRD_ESTATE. The node must stop acknowledging and restart
 * (recovery then tells what is really on disk). A write error such as ENOSPC
 * is not fatal: the batch is dropped whole (the file is cut back to where it
 * began), nothing of it was acknowledged, and the caller may append it again.
 *
 * seglog_open recovers: it verifies every frame of every file. A torn or
 * corrupt tail of the LAST file (short frame, bad length, bad CRC, or a file
 * whose header was never completely written) is cut off durably and reported
 * in seglog_recovery, so the caller can log it; every complete frame before it
 * is kept. Anything wrong in an older file, a missing file in the sequence, an
 * unknown format version or an LSN that goes back is an error naming the file
 * and offset: such damage cannot come from a crash, and silently cutting it
 * would lose acknowledged records.
 *
 * Threads: everything runs on the caller's (libuv loop's) thread except
 * seglog_sync_run, which a libuv thread-pool worker may run between
 * seglog_sync_prepare and seglog_sync_complete on the loop. While a batch is in
 * flight the worker owns the log's files and the batch; the loop may only call
 * seglog_append (which fills the next batch) and the seglog_lsn_* / seglog_failed
 * getters; everything else returns MRD_EBUSY. seglog_sync does all three
 * steps inline.
 *
 * Every file operation goes through seglog_io, a small vtable that speaks
 * errno (0 or -errno). seglog_io_posix_init gives the real one; seglog_fake
 * gives an in-memory disk for tests that, at a simulated crash, loses unsynced
 * bytes or keeps a torn prefix of them, and can fail the N-th call of any
 * operation.
 *
 * The metadata file holds the node's epoch, the epoch fences it has accepted
 * and, for each protection group it holds, the segment index, the SCL and how
 * far its pages are materialized. It is replaced atomically (temp file,
 * fdatasync, rename, fsync of the folder) and decoded as hostile bytes.
 */
#ifndef MERIDIAN_SEGLOG_H
#define MERIDIAN_SEGLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"

/* ---- limits ------------------------------------------------------------------------- */

#define SEGLOG_PATH_MAX 1024                    /* any path, including the NUL */
#define SEGLOG_ENTRY_BYTES_MAX (1024u * 1024)   /* one payload */
#define SEGLOG_FILE_BYTES_DEFAULT (64ull << 20) /* file_bytes_max when 0 */
#define SEGLOG_BATCH_BYTES_DEFAULT (4ull << 20) /* batch_bytes_max when 0 */
#define SEGLOG_FILE_BYTES_LIMIT (1ull << 32)    /* largest file_bytes_max accepted */
#define SEGLOG_BATCH_BYTES_MIN 256ull           /* smallest batch_bytes_max accepted */
#define SEGLOG_FILES_MAX 65536u                 /* files in one log */
#define SEGLOG_FILE_HEADER_BYTES 32u            /* see docs/storage-format.md */
#define SEGLOG_FRAME_HEADER_BYTES 16u           /* length, crc, lsn */
#define SEGLOG_FORMAT_VERSION 1u

/* ---- file I/O vtable ---------------------------------------------------------------- */

/* Flags of seglog_io.open. */
#define SEGLOG_IO_WRITE 1u  /* read-write; read-only without it */
#define SEGLOG_IO_CREATE 2u /* create when absent */
#define SEGLOG_IO_TRUNC 4u  /* cut to 0 bytes */

/*
 * Every function returns 0 or a negative errno (-ENOENT, -ENOSPC, -EIO...).
 * pread stores in *got how many bytes it read (fewer only at the end of the
 * file); pwrite writes everything or fails. list calls fn for each name in dir
 * (no "." or ".."), stopping when fn returns non-zero, which list returns.
 */
typedef struct seglog_io seglog_io;
struct seglog_io {
    void *impl;
    int (*open)(seglog_io *io, const char *path, unsigned flags, int *fd);
    int (*close)(seglog_io *io, int fd);
    int (*pread)(seglog_io *io, int fd, void *buf, size_t len, uint64_t off, size_t *got);
    int (*pwrite)(seglog_io *io, int fd, const void *buf, size_t len, uint64_t off);
    int (*fdatasync)(seglog_io *io, int fd);
    int (*ftruncate)(seglog_io *io, int fd, uint64_t size);
    int (*size)(seglog_io *io, int fd, uint64_t *size);
    int (*rename)(seglog_io *io, const char *from, const char *to);
    int (*unlink)(seglog_io *io, const char *path);
    int (*fsync_dir)(seglog_io *io, const char *dir);
    int (*list)(seglog_io *io, const char *dir, int (*fn)(void *arg, const char *name), void *arg);
};

/* The real thing: POSIX calls, retried on EINTR. The folder must exist. */
void seglog_io_posix_init(seglog_io *io);

/* ---- segment log -------------------------------------------------------------------- */

typedef struct seglog seglog;

typedef struct {
    seglog_io *io;            /* outlives the log */
    const char *dir;          /* folder of the log's files; must exist */
    uint64_t file_bytes_max;  /* 0: default; >= header + batch_bytes_max */
    uint64_t batch_bytes_max; /* 0: default; bytes of frames staged for one sync */
} seglog_options;

/* What seglog_open found and did. */
typedef struct {
    uint64_t files;          /* files kept */
    uint64_t entries;        /* complete entries kept */
    uint64_t lsn_last;       /* last LSN kept; 0 when the log is empty */
    bool truncated;          /* a torn tail was cut off */
    bool file_removed;       /* ... and it was a whole file with a torn header */
    uint64_t tail_seq;       /* the file it was cut from */
    uint64_t tail_offset;    /* where the cut begins */
    uint64_t tail_bytes;     /* how many bytes were cut */
    const char *tail_reason; /* "bad crc", "short frame", ... (static text) */
} seglog_recovery;

typedef struct {
    uint64_t lsn;        /* > 0 */
    const uint8_t *data; /* payload */
    size_t len;          /* 1..SEGLOG_ENTRY_BYTES_MAX */
} seglog_entry;

/* Opens (creating the first file when the folder holds none) and recovers. */
int seglog_open(const seglog_options *opts, seglog **out, seglog_recovery *report, mrd_msg *msg);
/* Frees the log. No batch may be in flight, no iterator open. Unsynced entries are lost. */
void seglog_close(seglog *log);

/*
 * Stages entries for the next sync: all or none. Each LSN must exceed every
 * LSN appended before (MRD_EINVAL); the staged bytes stay within
 * batch_bytes_max (MRD_ETOOBIG); MRD_ESTATE once the log has failed.
 */
int seglog_append(seglog *log, const seglog_entry *entries, size_t count, mrd_msg *msg);

/* Makes everything appended so far durable: prepare + run + complete inline. */
int seglog_sync(seglog *log, mrd_msg *msg);

/*
 * The same in three steps, for a thread pool. prepare (loop) hands the staged
 * entries to the flight: 1 when there is a batch to run, 0 when nothing is
 * staged, MRD_EBUSY when a batch is already in flight, MRD_ESTATE when failed.
 * run (worker) writes and syncs the batch; it touches only the log's files and
 * the flight. complete (loop) publishes the outcome and returns it: 0 when the
 * batch is durable, else an error (and seglog_failed tells whether it was fatal).
 */
int seglog_sync_prepare(seglog *log);
void seglog_sync_run(seglog *log);
int seglog_sync_complete(seglog *log, mrd_msg *msg);

/*
 * Drops every entry with an LSN above lsn, staged or on disk, durably: later
 * files are removed newest first (the folder synced after each), the file
 * holding the cut is truncated and synced. What remains after a crash midway is
 * always a prefix of the log, so running it again finishes the job. An I/O
 * error leaves the log failed.
 */
int seglog_truncate_after(seglog *log, uint64_t lsn, mrd_msg *msg);

uint64_t seglog_lsn_durable(const seglog *log); /* last durable LSN, 0 when none */
uint64_t seglog_lsn_last(const seglog *log);    /* last appended LSN (staged or durable) */
bool seglog_failed(const seglog *log);
uint64_t seglog_file_count(const seglog *log);

/*
 * Reads durable entries in LSN order, starting at the first LSN >= lsn_from.
 * next returns 1 with an entry (its data valid until the next call), 0 at the
 * end, or an error (a frame that no longer verifies: MRD_ECRC naming file and
 * offset). Entries made durable while iterating are seen. Truncation waits
 * (MRD_EBUSY) while an iterator is open.
 */
typedef struct seglog_iter seglog_iter;
int seglog_iter_open(seglog *log, uint64_t lsn_from, seglog_iter **out, mrd_msg *msg);
int seglog_iter_next(seglog_iter *it, seglog_entry *entry, mrd_msg *msg);
void seglog_iter_close(seglog_iter *it);

/* ---- metadata file ------------------------------------------------------------------ */

#define SEGLOG_META_PGS_MAX 256
#define SEGLOG_META_FENCES_MAX 16 /* equals QUORUM_FENCES_MAX: what a segment remembers */
#define SEGLOG_META_SEGMENTS 6    /* segment indexes 0..5 of a protection group */
#define SEGLOG_META_VERSION 4u /* versions 2 and 3 are still read */
#define SEGLOG_META_BYTES_MAX (40u + 16u * SEGLOG_META_FENCES_MAX + 40u * SEGLOG_META_PGS_MAX + 4u)

/* "Records of an epoch below epoch with an LSN above truncate_lsn are void." */
typedef struct {
    uint64_t epoch; /* strictly increasing across the array, none above the node's epoch */
    uint64_t truncate_lsn;
} seglog_meta_fence;

typedef struct {
    uint32_t pg_id;        /* strictly increasing across the array */
    uint8_t segment_index; /* < SEGLOG_META_SEGMENTS */
    uint64_t scl;          /* segment complete LSN */
    uint64_t materialized; /* every record at or below it is in the page file (0: none) */
    uint64_t base;         /* forget point: the records at or below it need not be read
                              back at start (<= materialized; 0: none) */
    uint64_t base_cpl;     /* the last CPL at or below base (0: none) */
} seglog_meta_pg;

typedef struct {
    uint64_t epoch;
    uint64_t vdl;         /* the highest VDL a writer reported to the node (0: none) */
    uint64_t key_start;   /* log entries below this key hold only records at or below
                             their PG's forget point (0: read the whole log) */
    uint32_t fence_count; /* <= SEGLOG_META_FENCES_MAX */
    seglog_meta_fence fences[SEGLOG_META_FENCES_MAX];
    uint32_t pg_count; /* <= SEGLOG_META_PGS_MAX */
    seglog_meta_pg pgs[SEGLOG_META_PGS_MAX];
} seglog_meta;

/* Encodes into out (SEGLOG_META_BYTES_MAX suffices); MRD_EINVAL if meta breaks a rule. */
int seglog_meta_encode(const seglog_meta *meta, uint8_t *out, size_t cap, size_t *len,
                       mrd_msg *msg);
/* Decodes hostile bytes; every error says which rule failed and where. */
int seglog_meta_decode(const uint8_t *data, size_t len, seglog_meta *out, mrd_msg *msg);
/* Replaces path atomically and durably (path.tmp, fdatasync, rename, fsync folder). */
int seglog_meta_write(seglog_io *io, const char *path, const seglog_meta *meta, mrd_msg *msg);
/* Reads and decodes; MRD_ENOTFOUND when the file does not exist. */
int seglog_meta_read(seglog_io *io, const char *path, seglog_meta *out, mrd_msg *msg);

/* ---- fake disk (tests and fuzzing) -------------------------------------------------- */

typedef struct seglog_fake seglog_fake;

typedef enum {
    SEGLOG_OP_OPEN,
    SEGLOG_OP_CLOSE,
    SEGLOG_OP_PREAD,
    SEGLOG_OP_PWRITE,
    SEGLOG_OP_FDATASYNC,
    SEGLOG_OP_FTRUNCATE,
    SEGLOG_OP_SIZE,
    SEGLOG_OP_RENAME,
    SEGLOG_OP_UNLINK,
    SEGLOG_OP_FSYNC_DIR,
    SEGLOG_OP_LIST,
    SEGLOG_OP_COUNT
} seglog_fake_op;

typedef enum {
    SEGLOG_CRASH_DROP,   /* every unsynced write and truncation is lost */
    SEGLOG_CRASH_TEAR,   /* per file: a random prefix of them survives, the last one torn,
                            its missing part old bytes or garbage */
    SEGLOG_CRASH_RANDOM, /* per file: drop, keep all, or tear */
} seglog_crash_mode;

/*
 * An in-memory disk. Each file keeps its synced content and the list of
 * writes and truncations since its last fdatasync; names (create, rename,
 * unlink) become durable only when their folder is fsynced. Paths are plain
 * strings: a file's folder is everything before its last '/'.
 */
seglog_fake *seglog_fake_new(uint64_t seed);
void seglog_fake_free(seglog_fake *fake);
seglog_io *seglog_fake_io(seglog_fake *fake);

/* The nth next call (1 = the very next) of op fails with -err, once. A failing
 * pwrite first writes a random prefix of its bytes, as a real one may. */
void seglog_fake_fail(seglog_fake *fake, seglog_fake_op op, uint64_t nth, int err);
/* After `calls` more calls of any operation, every call fails with -EIO until
 * seglog_fake_crash: the power went out. */
void seglog_fake_power_cut(seglog_fake *fake, uint64_t calls);
/* Reboots: unsynced state is lost per mode, every fd is closed, faults cleared. */
void seglog_fake_crash(seglog_fake *fake, seglog_crash_mode mode);
/* Calls made so far (all operations). */
uint64_t seglog_fake_calls(const seglog_fake *fake);

/* Current content of a file (into out, replacing it); MRD_ENOTFOUND when absent. */
int seglog_fake_get(seglog_fake *fake, const char *path, mrd_buf *out);
/* Creates or replaces a file with data, durably (name and content). */
int seglog_fake_put(seglog_fake *fake, const char *path, const void *data, size_t len);

#endif
