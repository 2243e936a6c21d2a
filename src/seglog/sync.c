/*
 * Staging, group commit and rollover.
 *
 * append (loop) encodes frames into log->pending. prepare (loop) swaps that
 * buffer into log->flight. run (worker) writes the flight with one pwrite and
 * one fdatasync, into the last file or, when the batch would take it past
 * file_bytes_max, into a new file. complete (loop) publishes the outcome.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "seglog_int.h"

/* ---- staging (loop) ----------------------------------------------------------------- */

static int seglog_check_entries(const seglog *log, const seglog_entry *e, size_t count,
                                size_t *bytes, mrd_msg *msg)
{
    uint64_t prev = log->lsn_last;
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        if (e[i].lsn <= prev)
            return mrd_fail(msg, MRD_EINVAL, "%s: lsn %" PRIu64 " does not follow %" PRIu64,
                            log->dir, e[i].lsn, prev);
        if (e[i].len == 0 || e[i].data == NULL)
            return mrd_fail(msg, MRD_EINVAL, "%s: lsn %" PRIu64 ": empty payload", log->dir,
                            e[i].lsn);
        if (e[i].len > SEGLOG_ENTRY_BYTES_MAX)
            return mrd_fail(msg, MRD_ETOOBIG, "%s: lsn %" PRIu64 ": %zu bytes, limit %u", log->dir,
                            e[i].lsn, e[i].len, SEGLOG_ENTRY_BYTES_MAX);
        total += SEGLOG_FRAME_HEADER_BYTES + e[i].len;
        if (total > log->batch_bytes_max - log->pending.len)
            return mrd_fail(msg, MRD_ETOOBIG, "%s: batch over %" PRIu64 " bytes; sync first",
                            log->dir, log->batch_bytes_max);
        prev = e[i].lsn;
    }
    *bytes = total;
    return 0;
}

int seglog_append(seglog *log, const seglog_entry *entries, size_t count, mrd_msg *msg)
{
    if (log->failed)
        return mrd_fail(msg, MRD_ESTATE, "%s: log failed after an fsync error", log->dir);
    if (count == 0) return 0;
    size_t bytes = 0;
    int rc = seglog_check_entries(log, entries, count, &bytes, msg);
    if (rc != 0) return rc;
    if (mrd_buf_reserve(&log->pending, bytes) != 0)
        return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", log->dir);
    for (size_t i = 0; i < count; i++) {
        rc = seglog_frame_encode(&log->pending, entries[i].lsn, entries[i].data,
                                 (uint32_t)entries[i].len);
        assert(rc == 0); /* reserved above */
    }
    assert(log->pending.len <= log->batch_bytes_max);
    if (log->pending_count == 0) log->pending_lsn_first = entries[0].lsn;
    log->pending_count += count;
    log->pending_lsn_last = entries[count - 1].lsn;
    log->lsn_last = log->pending_lsn_last;
    return 0;
}

/* ---- files -------------------------------------------------------------------------- */

/* Writes a new file (header, then frames) and makes it and its name durable. */
int seglog_file_create(seglog *log, uint64_t seq, const void *frames, size_t len, int *fd_out,
                       bool *fatal, mrd_msg *msg)
{
    char path[SEGLOG_PATH_MAX];
    uint8_t head[SEGLOG_FILE_HEADER_BYTES];
    int fd, rc;
    *fatal = false;
    if (seglog_path(log, seq, path) != 0)
        return mrd_fail(msg, MRD_EINVAL, "%s: path too long", log->dir);
    rc = log->io->open(log->io, path, SEGLOG_IO_WRITE | SEGLOG_IO_CREATE | SEGLOG_IO_TRUNC, &fd);
    if (rc != 0) return seglog_io_err(msg, rc, "create", path);
    seglog_header_encode(head, seq);
    rc = log->io->pwrite(log->io, fd, head, sizeof(head), 0);
    if (rc == 0 && len > 0) rc = log->io->pwrite(log->io, fd, frames, len, sizeof(head));
    if (rc != 0) goto fail_write;
    rc = log->io->fdatasync(log->io, fd);
    if (rc != 0) {
        *fatal = true;
        seglog_io_err(msg, rc, "fdatasync", path);
        goto fail_fd;
    }
    rc = log->io->fsync_dir(log->io, log->dir);
    if (rc != 0) {
        *fatal = true;
        seglog_io_err(msg, rc, "fsync", log->dir);
        goto fail_fd;
    }
    *fd_out = fd;
    return 0;
fail_write:
    seglog_io_err(msg, rc, "write", path);
    log->io->close(log->io, fd);
    /* Nothing in it was acknowledged; if removing it fails, what is on disk is unknown. */
    if (log->io->unlink(log->io, path) != 0 || log->io->fsync_dir(log->io, log->dir) != 0)
        *fatal = true;
    return MRD_EIO;
fail_fd:
    log->io->close(log->io, fd);
    return MRD_EIO;
}

static void seglog_file_took(seglog_file *f, const seglog_flight *fl)
{
    assert(fl->lsn_first > f->lsn_last);
    if (f->entries == 0) f->lsn_first = fl->lsn_first;
    f->lsn_last = fl->lsn_last;
    f->entries += fl->count;
    f->size += fl->frames.len;
}

/* Appends the batch to the last file. */
static int seglog_write_tail(seglog *log, seglog_flight *fl)
{
    seglog_file *cur = &log->files[log->file_count - 1];
    char path[SEGLOG_PATH_MAX];
    seglog_path(log, cur->seq, path);
    int rc = log->io->pwrite(log->io, log->fd_last, fl->frames.data, fl->frames.len, cur->size);
    if (rc != 0) {
        seglog_io_err(&fl->msg, rc, "write", path);
        /* Cut back what part of the batch landed, durably: a later batch may go to a new
         * file, and this one must not come back after a crash with a torn tail. */
        if (log->io->ftruncate(log->io, log->fd_last, cur->size) != 0 ||
            log->io->fdatasync(log->io, log->fd_last) != 0)
            fl->fatal = true;
        return MRD_EIO;
    }
    rc = log->io->fdatasync(log->io, log->fd_last);
    if (rc != 0) {
        fl->fatal = true;
        return seglog_io_err(&fl->msg, rc, "fdatasync", path);
    }
    seglog_file_took(cur, fl);
    return 0;
}

/* Starts file seq + 1 holding the batch. */
static int seglog_roll(seglog *log, seglog_flight *fl)
{
    uint64_t seq = log->files[log->file_count - 1].seq + 1;
    if (log->file_count >= SEGLOG_FILES_MAX)
        return mrd_fail(&fl->msg, MRD_ETOOBIG, "%s: %u files, the limit", log->dir,
                        SEGLOG_FILES_MAX);
    if (log->file_count == log->file_cap) {
        size_t cap = log->file_cap * 2;
        seglog_file *n = realloc(log->files, cap * sizeof(*n));
        if (n == NULL) return mrd_fail(&fl->msg, MRD_ENOMEM, "%s: out of memory", log->dir);
        log->files = n;
        log->file_cap = cap;
    }
    int fd;
    int rc =
        seglog_file_create(log, seq, fl->frames.data, fl->frames.len, &fd, &fl->fatal, &fl->msg);
    if (rc != 0) return rc;
    log->io->close(log->io, log->fd_last);
    log->fd_last = fd;
    seglog_file f = {.seq = seq, .size = SEGLOG_FILE_HEADER_BYTES};
    seglog_file_took(&f, fl);
    log->files[log->file_count++] = f;
    return 0;
}

/* ---- group commit ------------------------------------------------------------------- */

int seglog_sync_prepare(seglog *log)
{
    if (log->failed) return MRD_ESTATE;
    if (log->flight.active) return MRD_EBUSY;
    if (log->pending_count == 0) return 0;
    seglog_flight *fl = &log->flight;
    assert(fl->frames.len == 0);
    mrd_buf spare = fl->frames;
    fl->frames = log->pending;
    log->pending = spare;
    fl->count = log->pending_count;
    fl->lsn_first = log->pending_lsn_first;
    fl->lsn_last = log->pending_lsn_last;
    fl->rc = 0;
    fl->fatal = false;
    fl->msg.text[0] = '\0';
    fl->active = true;
    log->pending_count = 0;
    log->pending_lsn_first = log->pending_lsn_last = 0;
    return 1;
}

void seglog_sync_run(seglog *log)
{
    seglog_flight *fl = &log->flight;
    assert(fl->active && fl->frames.len > 0 && fl->frames.len <= log->batch_bytes_max);
    /* A file may exceed the limit only if an earlier run had a larger one: it rolls. */
    const seglog_file *cur = &log->files[log->file_count - 1];
    if (cur->entries > 0 && cur->size + fl->frames.len > log->file_bytes_max)
        fl->rc = seglog_roll(log, fl);
    else
        fl->rc = seglog_write_tail(log, fl);
    assert(fl->rc != 0 || log->files[log->file_count - 1].size <= log->file_bytes_max);
}

int seglog_sync_complete(seglog *log, mrd_msg *msg)
{
    seglog_flight *fl = &log->flight;
    assert(fl->active);
    int rc = fl->rc;
    if (rc == 0) {
        assert(fl->lsn_last > log->lsn_durable);
        log->lsn_durable = fl->lsn_last;
    } else if (fl->fatal) {
        log->failed = true;
    } else if (log->pending_count == 0) {
        log->lsn_last = log->lsn_durable; /* the dropped batch may be appended again */
    }
    if (rc != 0 && msg != NULL) *msg = fl->msg;
    fl->frames.len = 0;
    fl->active = false;
    return rc;
}

int seglog_sync(seglog *log, mrd_msg *msg)
{
    int rc = seglog_sync_prepare(log);
    if (rc == MRD_ESTATE)
        return mrd_fail(msg, rc, "%s: log failed after an fsync error; restart to recover",
                        log->dir);
    if (rc < 0) return mrd_fail(msg, rc, "%s: a batch is already in flight", log->dir);
    if (rc == 0) return 0;
    seglog_sync_run(log);
    return seglog_sync_complete(log, msg);
}

/* ---- getters ------------------------------------------------------------------------ */

uint64_t seglog_lsn_durable(const seglog *log)
{
    return log->lsn_durable;
}

uint64_t seglog_lsn_last(const seglog *log)
{
    return log->lsn_last;
}

bool seglog_failed(const seglog *log)
{
    return log->failed;
}

uint64_t seglog_file_count(const seglog *log)
{
    return log->file_count;
}
