/*
 * Dropping a divergent tail (epoch fencing, recovery). Files are removed
 * newest first with a folder sync after each, then the file holding the cut is
 * truncated and synced: a crash at any point leaves a prefix of the old log.
 */
#include <inttypes.h>
#include <stdio.h>

#include "seglog_int.h"

/* Keeps the staged frames with LSN <= lsn. */
static void seglog_pending_cut(seglog *log, uint64_t lsn)
{
    size_t off = 0;
    uint64_t count = 0, last = 0;
    while (off < log->pending.len) {
        seglog_frame_head h;
        seglog_frame_head_decode(log->pending.data + off, &h);
        assert(h.lsn > last && off + SEGLOG_FRAME_HEADER_BYTES + h.len <= log->pending.len);
        if (h.lsn > lsn) break;
        off += SEGLOG_FRAME_HEADER_BYTES + h.len;
        last = h.lsn;
        count++;
    }
    log->pending.len = off;
    log->pending_count = count;
    log->pending_lsn_last = last;
    if (count == 0) log->pending_lsn_first = 0;
}

/* Removes the last file, durably. */
static int seglog_drop_last(seglog *log, mrd_msg *msg)
{
    char path[SEGLOG_PATH_MAX];
    seglog_path(log, log->files[log->file_count - 1].seq, path);
    if (log->fd_last >= 0) log->io->close(log->io, log->fd_last);
    log->fd_last = -1;
    int rc = log->io->unlink(log->io, path);
    if (rc != 0) return seglog_io_err(msg, rc, "unlink", path);
    rc = log->io->fsync_dir(log->io, log->dir);
    if (rc != 0) return seglog_io_err(msg, rc, "fsync", log->dir);
    log->file_count--;
    return 0;
}

static int seglog_cut_scan(seglog *log, const char *path, uint64_t lsn, seglog_scan *s,
                           mrd_msg *msg)
{
    seglog_file *f = &log->files[log->file_count - 1];
    seglog_reader r;
    seglog_reader_init(&r, log->io, log->fd_last, f->size);
    int rc = seglog_scan_file(&r, path, 0, lsn, s, msg);
    seglog_reader_free(&r);
    if (rc == 0 && s->tail != NULL)
        rc = mrd_fail(msg, MRD_ECRC, "%s: offset %" PRIu64 ": %s", path, s->end, s->tail);
    return rc;
}

/* Cuts the last file just after its last entry with LSN <= lsn, durably. */
static int seglog_cut_last(seglog *log, uint64_t lsn, mrd_msg *msg)
{
    seglog_file *f = &log->files[log->file_count - 1];
    char path[SEGLOG_PATH_MAX];
    seglog_path(log, f->seq, path);
    int rc;
    if (log->fd_last < 0) {
        rc = log->io->open(log->io, path, SEGLOG_IO_WRITE, &log->fd_last);
        if (rc != 0) return seglog_io_err(msg, rc, "open", path);
    }
    seglog_scan s;
    rc = seglog_cut_scan(log, path, lsn, &s, msg);
    if (rc != 0) return rc;
    rc = log->io->ftruncate(log->io, log->fd_last, s.end);
    if (rc != 0) return seglog_io_err(msg, rc, "ftruncate", path);
    rc = log->io->fdatasync(log->io, log->fd_last);
    if (rc != 0) return seglog_io_err(msg, rc, "fdatasync", path);
    f->size = s.end;
    f->entries = s.entries;
    f->lsn_first = s.lsn_first;
    f->lsn_last = s.lsn_last;
    return 0;
}

static uint64_t seglog_last_lsn_on_disk(const seglog *log)
{
    for (size_t i = log->file_count; i > 0; i--)
        if (log->files[i - 1].entries > 0) return log->files[i - 1].lsn_last;
    return 0;
}

int seglog_truncate_after(seglog *log, uint64_t lsn, mrd_msg *msg)
{
    if (log->failed)
        return mrd_fail(msg, MRD_ESTATE, "%s: log failed after an fsync error", log->dir);
    if (log->flight.active || log->iters_open > 0)
        return mrd_fail(msg, MRD_EBUSY, "%s: a batch or an iterator is open", log->dir);
    seglog_pending_cut(log, lsn);
    int rc = 0;
    if (lsn < log->lsn_durable) {
        while (rc == 0 && log->file_count > 1) {
            const seglog_file *f = &log->files[log->file_count - 1];
            if (f->entries > 0 && f->lsn_first <= lsn) break;
            rc = seglog_drop_last(log, msg);
        }
        if (rc == 0) rc = seglog_cut_last(log, lsn, msg);
        if (rc != 0) {
            log->failed = true; /* what is on disk is no longer known */
            return rc;
        }
        log->lsn_durable = seglog_last_lsn_on_disk(log);
        assert(log->lsn_durable <= lsn);
    }
    log->lsn_last = log->pending_count ? log->pending_lsn_last : log->lsn_durable;
    return 0;
}
