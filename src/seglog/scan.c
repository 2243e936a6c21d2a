/* Frame-by-frame verification of one segment file: the heart of recovery. */
#include <inttypes.h>

#include "seglog_int.h"

/* Checks the frame at off; NULL when it is good, else why it is not. */
static const char *seglog_frame_check(seglog_reader *r, uint64_t off, seglog_frame_head *h,
                                      int *io_err)
{
    const uint8_t *p;
    *io_err = 0;
    if (r->size - off < SEGLOG_FRAME_HEADER_BYTES) return "short frame header";
    *io_err = seglog_reader_get(r, off, SEGLOG_FRAME_HEADER_BYTES, &p);
    if (*io_err != 0) return "read failed";
    seglog_frame_head_decode(p, h);
    if (h->len == 0 || h->len > SEGLOG_ENTRY_BYTES_MAX) return "bad length";
    if (r->size - off - SEGLOG_FRAME_HEADER_BYTES < h->len) return "short frame";
    *io_err = seglog_reader_get(r, off + SEGLOG_FRAME_HEADER_BYTES, h->len, &p);
    if (*io_err != 0) return "read failed";
    if (seglog_frame_crc(h->len, h->lsn, p) != h->crc) return "bad crc";
    if (h->lsn == 0) return "lsn 0"; /* never written: a CRC-valid frame of zero LSN is damage */
    return NULL;
}

int seglog_scan_file(seglog_reader *r, const char *path, uint64_t lsn_prev, uint64_t lsn_stop,
                     seglog_scan *s, mrd_msg *msg)
{
    memset(s, 0, sizeof(*s));
    uint64_t off = SEGLOG_FILE_HEADER_BYTES;
    assert(r->size >= off);
    while (off < r->size) {
        seglog_frame_head h;
        int io_err;
        const char *bad = seglog_frame_check(r, off, &h, &io_err);
        if (io_err != 0) return seglog_io_err(msg, io_err, "read", path);
        if (bad != NULL) {
            s->tail = bad;
            break;
        }
        if (h.lsn <= lsn_prev)
            return mrd_fail(msg, MRD_EPARSE,
                            "%s: offset %" PRIu64 ": lsn %" PRIu64 " does not follow %" PRIu64,
                            path, off, h.lsn, lsn_prev);
        if (h.lsn > lsn_stop) break;
        if (s->entries == 0) s->lsn_first = h.lsn;
        s->lsn_last = h.lsn;
        s->entries++;
        lsn_prev = h.lsn;
        off += SEGLOG_FRAME_HEADER_BYTES + h.len;
    }
    s->end = off;
    assert(s->end <= r->size);
    return 0;
}
