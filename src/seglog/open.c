/* Opening a segment log: find its files, verify every frame, cut a torn tail. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "seglog_int.h"

typedef struct {
    uint64_t *seqs;
    size_t count;
    size_t cap;
    bool too_many;
} seglog_seq_list;

static int seglog_collect(void *arg, const char *name)
{
    seglog_seq_list *l = arg;
    uint64_t seq;
    if (!seglog_file_name_parse(name, &seq)) return 0;
    if (l->count == SEGLOG_FILES_MAX) {
        l->too_many = true;
        return 1;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *n = realloc(l->seqs, cap * sizeof(*n));
        if (n == NULL) return -ENOMEM;
        l->seqs = n;
        l->cap = cap;
    }
    l->seqs[l->count++] = seq;
    return 0;
}

static int seglog_seq_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The sequence numbers of the folder's log files, sorted and gap-free. */
static int seglog_list_files(seglog *log, seglog_seq_list *l, mrd_msg *msg)
{
    int rc = log->io->list(log->io, log->dir, seglog_collect, l);
    if (l->too_many)
        return mrd_fail(msg, MRD_ETOOBIG, "%s: more than %u log files", log->dir, SEGLOG_FILES_MAX);
    if (rc != 0) return seglog_io_err(msg, rc, "list", log->dir);
    if (l->count > 1) qsort(l->seqs, l->count, sizeof(uint64_t), seglog_seq_cmp);
    for (size_t i = 1; i < l->count; i++)
        if (l->seqs[i] != l->seqs[i - 1] + 1)
            return mrd_fail(msg, MRD_EPARSE, "%s: log file %016" PRIx64 " is missing", log->dir,
                            l->seqs[i - 1] + 1);
    return 0;
}

static int seglog_files_push(seglog *log, const seglog_file *f)
{
    if (log->file_count == log->file_cap) {
        size_t cap = log->file_cap ? log->file_cap * 2 : 16;
        seglog_file *n = realloc(log->files, cap * sizeof(*n));
        if (n == NULL) return MRD_ENOMEM;
        log->files = n;
        log->file_cap = cap;
    }
    log->files[log->file_count++] = *f;
    return 0;
}

static void seglog_report_cut(seglog_recovery *rep, uint64_t seq, uint64_t off, uint64_t bytes,
                              const char *why)
{
    rep->truncated = true;
    rep->tail_seq = seq;
    rep->tail_offset = off;
    rep->tail_bytes = bytes;
    rep->tail_reason = why;
}

/* A last file whose header was never completely written holds nothing acknowledged. */
static int seglog_remove_torn(seglog *log, const char *path, uint64_t seq, uint64_t size,
                              seglog_recovery *rep, mrd_msg *msg)
{
    int rc = log->io->unlink(log->io, path);
    if (rc != 0) return seglog_io_err(msg, rc, "unlink", path);
    rc = log->io->fsync_dir(log->io, log->dir);
    if (rc != 0) return seglog_io_err(msg, rc, "fsync", log->dir);
    seglog_report_cut(rep, seq, 0, size, "torn file header");
    rep->file_removed = true;
    return 0;
}

/* Cuts the last file back to its last good frame, durably. */
static int seglog_cut_tail(seglog *log, int fd, const char *path, const seglog_scan *s,
                           uint64_t seq, uint64_t size, seglog_recovery *rep, mrd_msg *msg)
{
    int rc = log->io->ftruncate(log->io, fd, s->end);
    if (rc != 0) return seglog_io_err(msg, rc, "ftruncate", path);
    rc = log->io->fdatasync(log->io, fd);
    if (rc != 0) return seglog_io_err(msg, rc, "fdatasync", path);
    seglog_report_cut(rep, seq, s->end, size - s->end, s->tail);
    return 0;
}

/* Reads and checks the header; *torn when a last file's header is short or all zero. */
static int seglog_check_header(seglog_reader *r, const char *path, uint64_t seq, bool last,
                               bool *torn, mrd_msg *msg)
{
    const uint8_t *p = NULL;
    *torn = false;
    size_t have = r->size < SEGLOG_FILE_HEADER_BYTES ? (size_t)r->size : SEGLOG_FILE_HEADER_BYTES;
    int rc = have > 0 ? seglog_reader_get(r, 0, have, &p) : 0;
    if (rc != 0) return seglog_io_err(msg, rc, "read", path);
    if (last && (have < SEGLOG_FILE_HEADER_BYTES || seglog_header_is_zero(p, have))) {
        *torn = true;
        return 0;
    }
    if (have < SEGLOG_FILE_HEADER_BYTES)
        return mrd_fail(msg, MRD_ETRUNC, "%s: offset 0: %zu bytes, shorter than a header", path,
                        have);
    uint64_t got;
    const char *why = NULL;
    rc = seglog_header_decode(p, &got, &why);
    if (rc != 0) return mrd_fail(msg, rc, "%s: offset 0: %s", path, why);
    if (got != seq)
        return mrd_fail(msg, MRD_EPARSE, "%s: offset 16: header says file %016" PRIx64, path, got);
    return 0;
}

/* Verifies one file, keeps it in the table, cuts it when it is the last and torn. */
static int seglog_recover_file(seglog *log, uint64_t seq, bool last, seglog_recovery *rep,
                               mrd_msg *msg)
{
    char path[SEGLOG_PATH_MAX];
    int fd = -1, rc = seglog_path(log, seq, path);
    if (rc != 0) return mrd_fail(msg, rc, "%s: path too long", log->dir);
    rc = log->io->open(log->io, path, last ? SEGLOG_IO_WRITE : 0, &fd);
    if (rc != 0) return seglog_io_err(msg, rc, "open", path);
    uint64_t size = 0;
    rc = log->io->size(log->io, fd, &size);
    if (rc != 0) {
        rc = seglog_io_err(msg, rc, "stat", path);
        goto fail_fd;
    }
    seglog_reader r;
    seglog_reader_init(&r, log->io, fd, size);
    bool torn;
    rc = seglog_check_header(&r, path, seq, last, &torn, msg);
    if (rc != 0) goto fail_reader;
    if (torn) {
        seglog_reader_free(&r);
        log->io->close(log->io, fd);
        return seglog_remove_torn(log, path, seq, size, rep, msg);
    }
    seglog_scan s;
    rc = seglog_scan_file(&r, path, log->lsn_durable, UINT64_MAX, &s, msg);
    if (rc != 0) goto fail_reader;
    if (s.tail != NULL && !last) {
        rc = mrd_fail(msg, MRD_ECRC, "%s: offset %" PRIu64 ": %s in a file that is not the last",
                      path, s.end, s.tail);
        goto fail_reader;
    }
    if (s.tail != NULL) {
        rc = seglog_cut_tail(log, fd, path, &s, seq, size, rep, msg);
        if (rc != 0) goto fail_reader;
    }
    seglog_file f = {.seq = seq,
                     .size = s.end,
                     .entries = s.entries,
                     .lsn_first = s.lsn_first,
                     .lsn_last = s.lsn_last};
    rc = seglog_files_push(log, &f);
    if (rc != 0) goto fail_reader;
    if (s.entries > 0) log->lsn_durable = s.lsn_last;
    seglog_reader_free(&r);
    if (last)
        log->fd_last = fd;
    else
        log->io->close(log->io, fd);
    return 0;
fail_reader:
    seglog_reader_free(&r);
fail_fd:
    log->io->close(log->io, fd);
    return rc;
}

static int seglog_check_options(const seglog_options *o, seglog *log, mrd_msg *msg)
{
    log->io = o->io;
    log->file_bytes_max = o->file_bytes_max ? o->file_bytes_max : SEGLOG_FILE_BYTES_DEFAULT;
    log->batch_bytes_max = o->batch_bytes_max ? o->batch_bytes_max : SEGLOG_BATCH_BYTES_DEFAULT;
    if (o->io == NULL || o->dir == NULL) return mrd_fail(msg, MRD_EINVAL, "seglog: no io or dir");
    size_t n = strlen(o->dir);
    while (n > 1 && o->dir[n - 1] == '/')
        n--;
    if (n == 0 || n + 1 + SEGLOG_NAME_LEN + 1 > SEGLOG_PATH_MAX)
        return mrd_fail(msg, MRD_EINVAL, "seglog: bad folder path");
    memcpy(log->dir, o->dir, n);
    log->dir[n] = '\0';
    if (log->file_bytes_max > SEGLOG_FILE_BYTES_LIMIT ||
        log->batch_bytes_max < SEGLOG_BATCH_BYTES_MIN ||
        log->batch_bytes_max > log->file_bytes_max - SEGLOG_FILE_HEADER_BYTES ||
        log->file_bytes_max < SEGLOG_FILE_HEADER_BYTES + SEGLOG_BATCH_BYTES_MIN)
        return mrd_fail(msg, MRD_EINVAL,
                        "%s: need %llu <= batch_bytes_max <= file_bytes_max - %u <= %llu", log->dir,
                        SEGLOG_BATCH_BYTES_MIN, SEGLOG_FILE_HEADER_BYTES, SEGLOG_FILE_BYTES_LIMIT);
    return 0;
}

/* The first file of an empty log: seq 1, or the seq of a torn file just removed. */
static int seglog_create_first(seglog *log, uint64_t seq, mrd_msg *msg)
{
    bool fatal;
    int fd;
    int rc = seglog_file_create(log, seq, NULL, 0, &fd, &fatal, msg);
    if (rc != 0) return rc;
    seglog_file f = {.seq = seq, .size = SEGLOG_FILE_HEADER_BYTES};
    rc = seglog_files_push(log, &f);
    if (rc != 0) {
        log->io->close(log->io, fd);
        return rc;
    }
    log->fd_last = fd;
    return 0;
}

static int seglog_recover(seglog *log, seglog_recovery *rep, mrd_msg *msg)
{
    seglog_seq_list l = {0};
    int rc = seglog_list_files(log, &l, msg);
    for (size_t i = 0; rc == 0 && i < l.count; i++)
        rc = seglog_recover_file(log, l.seqs[i], i + 1 == l.count, rep, msg);
    uint64_t seq_first = l.count > 0 ? l.seqs[0] : 1;
    free(l.seqs);
    if (rc != 0) return rc;
    if (log->file_count == 0) {
        rc = seglog_create_first(log, seq_first, msg);
        if (rc != 0) return rc;
    } else if (log->fd_last < 0) {
        /* The last file was removed as torn: the one before becomes the last. */
        char path[SEGLOG_PATH_MAX];
        seglog_path(log, log->files[log->file_count - 1].seq, path);
        rc = log->io->open(log->io, path, SEGLOG_IO_WRITE, &log->fd_last);
        if (rc != 0) return seglog_io_err(msg, rc, "open", path);
    }
    return 0;
}

static void seglog_fill_report(const seglog *log, seglog_recovery *rep)
{
    rep->files = log->file_count;
    rep->entries = 0;
    for (size_t i = 0; i < log->file_count; i++)
        rep->entries += log->files[i].entries;
    rep->lsn_last = log->lsn_durable;
}

int seglog_open(const seglog_options *opts, seglog **out, seglog_recovery *report, mrd_msg *msg)
{
    seglog_recovery scratch;
    seglog_recovery *rep = report ? report : &scratch;
    memset(rep, 0, sizeof(*rep));
    seglog *log = calloc(1, sizeof(*log));
    if (log == NULL) return mrd_fail(msg, MRD_ENOMEM, "seglog: out of memory");
    log->fd_last = -1;
    mrd_buf_init(&log->pending);
    mrd_buf_init(&log->flight.frames);
    int rc = seglog_check_options(opts, log, msg);
    if (rc != 0) goto fail;
    rc = seglog_recover(log, rep, msg);
    if (rc != 0) goto fail;
    log->lsn_last = log->lsn_durable;
    seglog_fill_report(log, rep);
    *out = log;
    return 0;
fail:
    seglog_close(log);
    return rc;
}

void seglog_close(seglog *log)
{
    if (log == NULL) return;
    assert(!log->flight.active && log->iters_open == 0);
    if (log->fd_last >= 0) log->io->close(log->io, log->fd_last);
    free(log->files);
    mrd_buf_free(&log->pending);
    mrd_buf_free(&log->flight.frames);
    free(log);
}
