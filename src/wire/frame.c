/*
 * Frames on a byte stream: [u32 length][u32 crc32c of payload][payload],
 * integers little-endian. The reader checks the length against its limit as
 * soon as the header is in, keeps at most one partial frame, and hands out a
 * frame without copying when it arrives whole in one piece.
 */
#include <string.h>

#include "wire_private.h"

static void store_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- writing ---------------------------------------------------------------------------- */

int wire_frame_begin(mrd_buf *out, size_t *at)
{
    static const uint8_t zeros[WIRE_FRAME_HEADER_BYTES];
    *at = out->len;
    return mrd_buf_append(out, zeros, sizeof(zeros));
}

int wire_frame_end(mrd_buf *out, size_t at, mrd_msg *msg)
{
    size_t len = out->len - at - WIRE_FRAME_HEADER_BYTES;
    if (len > WIRE_FRAME_BYTES_MAX) {
        out->len = at;
        return mrd_fail(msg, MRD_ETOOBIG, "frame of %zu bytes, limit %u", len,
                        WIRE_FRAME_BYTES_MAX);
    }
    uint8_t *head = out->data + at;
    store_le32(head, (uint32_t)len);
    store_le32(head + 4, mrd_crc32c(0, head + WIRE_FRAME_HEADER_BYTES, len));
    return 0;
}

int wire_frame_append(mrd_buf *out, const void *payload, size_t len, mrd_msg *msg)
{
    if (len > WIRE_FRAME_BYTES_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "frame of %zu bytes, limit %u", len,
                        WIRE_FRAME_BYTES_MAX);
    size_t at;
    int rc = wire_frame_begin(out, &at);
    if (rc == 0) rc = mrd_buf_append(out, payload, len);
    if (rc != 0) {
        out->len = at;
        return mrd_fail(msg, rc, "frame: %s", mrd_strerror(rc));
    }
    return wire_frame_end(out, at, msg);
}

/* ---- reading ---------------------------------------------------------------------------- */

void wire_frame_reader_init(wire_frame_reader *r, uint32_t frame_bytes_max)
{
    memset(r, 0, sizeof(*r));
    mrd_buf_init(&r->buf);
    if (frame_bytes_max == 0 || frame_bytes_max > WIRE_FRAME_BYTES_MAX)
        frame_bytes_max = WIRE_FRAME_BYTES_MAX;
    r->frame_bytes_max = frame_bytes_max;
}

void wire_frame_reader_close(wire_frame_reader *r)
{
    mrd_buf_free(&r->buf);
}

size_t wire_frame_reader_pending(const wire_frame_reader *r)
{
    return r->done ? 0 : r->buf.len;
}

static int reader_fail(wire_frame_reader *r, int err)
{
    r->err = err;
    return err;
}

/* Reads and checks a complete header. */
static int header_take(wire_frame_reader *r, const uint8_t *head, mrd_msg *msg)
{
    r->len = load_le32(head);
    r->crc = load_le32(head + 4);
    if (r->len > r->frame_bytes_max)
        return reader_fail(
            r, mrd_fail(msg, MRD_ETOOBIG, "frame at stream byte %llu: %u bytes, limit %u",
                        (unsigned long long)r->stream_at, r->len, r->frame_bytes_max));
    return 0;
}

/* Verifies a complete payload and hands it out. */
static int payload_take(wire_frame_reader *r, const uint8_t *payload, wire_frame *frame,
                        mrd_msg *msg)
{
    uint32_t crc = mrd_crc32c(0, payload, r->len);
    if (crc != r->crc)
        return reader_fail(r, mrd_fail(msg, MRD_ECRC,
                                       "frame at stream byte %llu: crc32c 0x%08x of %u bytes, "
                                       "header says 0x%08x",
                                       (unsigned long long)r->stream_at, crc, r->len, r->crc));
    frame->data = payload;
    frame->len = r->len;
    r->stream_at += WIRE_FRAME_HEADER_BYTES + (uint64_t)r->len;
    return 1;
}

/* Copies up to want - buf.len bytes into buf; true once buf holds want bytes. */
static int gather(wire_frame_reader *r, size_t want, const uint8_t *data, size_t len, size_t *used,
                  bool *full, mrd_msg *msg)
{
    size_t take = want - r->buf.len;
    if (take > len - *used) take = len - *used;
    int rc = mrd_buf_append(&r->buf, data + *used, take);
    if (rc != 0) return reader_fail(r, mrd_fail(msg, rc, "frame reader: %s", mrd_strerror(rc)));
    *used += take;
    *full = r->buf.len == want;
    return 0;
}

/* The whole frame is in data and nothing is buffered: no copy. */
static int feed_whole(wire_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
                      wire_frame *frame, mrd_msg *msg)
{
    int rc = header_take(r, data, msg);
    if (rc != 0) return rc;
    if (len - WIRE_FRAME_HEADER_BYTES < r->len) return 0; /* not whole after all */
    *used = WIRE_FRAME_HEADER_BYTES + r->len;
    return payload_take(r, data + WIRE_FRAME_HEADER_BYTES, frame, msg);
}

int wire_frame_reader_feed(wire_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
                           wire_frame *frame, mrd_msg *msg)
{
    *used = 0;
    if (r->err != 0)
        return mrd_fail(msg, r->err, "frame stream failed earlier (%s)", mrd_errname(r->err));
    if (r->done) {
        r->buf.len = 0;
        r->done = false;
    }
    if (r->buf.len == 0 && len >= WIRE_FRAME_HEADER_BYTES) {
        int rc = feed_whole(r, data, len, used, frame, msg);
        if (rc != 0) return rc;
    }
    bool full;
    int rc;
    if (r->buf.len < WIRE_FRAME_HEADER_BYTES) {
        rc = gather(r, WIRE_FRAME_HEADER_BYTES, data, len, used, &full, msg);
        if (rc != 0 || !full) return rc;
        rc = header_take(r, r->buf.data, msg);
        if (rc != 0) return rc;
    }
    rc = gather(r, WIRE_FRAME_HEADER_BYTES + (size_t)r->len, data, len, used, &full, msg);
    if (rc != 0 || !full) return rc;
    r->done = true;
    return payload_take(r, r->buf.data + WIRE_FRAME_HEADER_BYTES, frame, msg);
}
