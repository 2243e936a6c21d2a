/* Reading durable entries back, each frame verified again as it leaves the disk. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "seglog_int.h"

struct seglog_iter {
    seglog *log;
    uint64_t lsn_from;
    uint64_t lsn_prev; /* last LSN returned or skipped */
    size_t file;       /* index in log->files */
    uint64_t off;
    int fd;
    seglog_reader r;
    char path[SEGLOG_PATH_MAX];
};

/* The last file whose first LSN is <= lsn_from: no earlier file can hold it. */
static size_t seglog_iter_first_file(const seglog *log, uint64_t lsn_from)
{
    for (size_t i = log->file_count; i > 0; i--) {
        const seglog_file *f = &log->files[i - 1];
        if (f->entries > 0 && f->lsn_first <= lsn_from) return i - 1;
    }
    return 0;
}

int seglog_iter_open(seglog *log, uint64_t lsn_from, seglog_iter **out, mrd_msg *msg)
{
    if (log->flight.active) return mrd_fail(msg, MRD_EBUSY, "%s: a batch is in flight", log->dir);
    seglog_iter *it = calloc(1, sizeof(*it));
    if (it == NULL) return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", log->dir);
    it->log = log;
    it->lsn_from = lsn_from;
    it->file = seglog_iter_first_file(log, lsn_from);
    it->off = SEGLOG_FILE_HEADER_BYTES;
    it->fd = -1;
    log->iters_open++;
    *out = it;
    return 0;
}

static void seglog_iter_drop_fd(seglog_iter *it)
{
    if (it->fd < 0) return;
    seglog_reader_free(&it->r);
    it->log->io->close(it->log->io, it->fd);
    it->fd = -1;
}

void seglog_iter_close(seglog_iter *it)
{
    if (it == NULL) return;
    seglog_iter_drop_fd(it);
    assert(it->log->iters_open > 0);
    it->log->iters_open--;
    free(it);
}

/* Positions the reader on a file that still has bytes at it->off; false at the end. */
static int seglog_iter_file(seglog_iter *it, bool *more, mrd_msg *msg)
{
    seglog *log = it->log;
    for (;;) {
        *more = false;
        if (it->file >= log->file_count) return 0;
        const seglog_file *f = &log->files[it->file];
        if (it->off < f->size) break;
        if (it->file + 1 == log->file_count) return 0;
        seglog_iter_drop_fd(it);
        it->file++;
        it->off = SEGLOG_FILE_HEADER_BYTES;
    }
    if (it->fd < 0) {
        seglog_path(log, log->files[it->file].seq, it->path);
        int rc = log->io->open(log->io, it->path, 0, &it->fd);
        if (rc != 0) return seglog_io_err(msg, rc, "open", it->path);
        seglog_reader_init(&it->r, log->io, it->fd, 0);
    }
    it->r.size = log->files[it->file].size; /* grows as batches become durable */
    *more = true;
    return 0;
}

static int seglog_iter_bad(seglog_iter *it, const char *why, mrd_msg *msg)
{
    return mrd_fail(msg, MRD_ECRC, "%s: offset %" PRIu64 ": %s", it->path, it->off, why);
}

int seglog_iter_next(seglog_iter *it, seglog_entry *entry, mrd_msg *msg)
{
    if (it->log->flight.active)
        return mrd_fail(msg, MRD_EBUSY, "%s: a batch is in flight", it->log->dir);
    for (;;) {
        bool more;
        int rc = seglog_iter_file(it, &more, msg);
        if (rc != 0 || !more) return rc;
        const uint8_t *p;
        seglog_frame_head h;
        if (it->r.size - it->off < SEGLOG_FRAME_HEADER_BYTES)
            return seglog_iter_bad(it, "short frame header", msg);
        rc = seglog_reader_get(&it->r, it->off, SEGLOG_FRAME_HEADER_BYTES, &p);
        if (rc != 0) return seglog_io_err(msg, rc, "read", it->path);
        seglog_frame_head_decode(p, &h);
        if (h.len == 0 || h.len > SEGLOG_ENTRY_BYTES_MAX ||
            it->r.size - it->off - SEGLOG_FRAME_HEADER_BYTES < h.len)
            return seglog_iter_bad(it, "bad length", msg);
        if (h.lsn <= it->lsn_prev) return seglog_iter_bad(it, "lsn goes back", msg);
        uint64_t at = it->off;
        it->off += SEGLOG_FRAME_HEADER_BYTES + h.len;
        it->lsn_prev = h.lsn;
        if (h.lsn < it->lsn_from) continue; /* skipped: payload neither decoded nor checked */
        rc = seglog_reader_get(&it->r, at + SEGLOG_FRAME_HEADER_BYTES, h.len, &p);
        if (rc != 0) return seglog_io_err(msg, rc, "read", it->path);
        if (seglog_frame_crc(h.len, h.lsn, p) != h.crc) {
            it->off = at;
            return seglog_iter_bad(it, "bad crc on read back", msg);
        }
        entry->lsn = h.lsn;
        entry->data = p;
        entry->len = h.len;
        return 1;
    }
}
