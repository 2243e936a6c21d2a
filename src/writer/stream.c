/*
 * GET /v1/log: the writer's log to its readers. A new stream starts with a
 * mark (VDL, epoch, last LSN), then every record above that VDL still in the
 * backlog, then each new record and each VDL advance as they happen. A
 * reader that falls too far behind (more than WRITER_STREAM_QUEUED_MAX bytes
 * queued, or records already gone from the backlog) is cut off; it
 * reconnects and starts over from the VDL of that moment.
 */
#include <stdlib.h>
#include <string.h>

#include "writer_int.h"

int wr_backlog_init(wr_backlog *b, uint32_t cap, uint64_t bytes_max)
{
    memset(b, 0, sizeof(*b));
    b->recs = calloc(cap, sizeof(*b->recs));
    if (b->recs == NULL) return MRD_ENOMEM;
    b->cap = cap;
    b->bytes_max = bytes_max;
    return 0;
}

static void backlog_drop_oldest(wr_backlog *b)
{
    mrd_buf *r = &b->recs[b->head];
    b->bytes -= r->len;
    mrd_buf_free(r);
    b->head = (b->head + 1) % b->cap;
    b->count--;
    b->first++;
}

void wr_backlog_put(wr_backlog *b, uint64_t lsn, const uint8_t *data, size_t len)
{
    if (b->count > 0 && lsn != b->first + b->count) { /* not the next one: start over */
        while (b->count > 0)
            backlog_drop_oldest(b);
    }
    if (b->count == 0) b->first = lsn;
    while (b->count > 0 && (b->count == b->cap || b->bytes + len > b->bytes_max))
        backlog_drop_oldest(b);
    mrd_buf *r = &b->recs[(b->head + b->count) % b->cap];
    mrd_buf_init(r);
    if (mrd_buf_append(r, data, len) != 0) return;
    b->count++;
    b->bytes += len;
}

static const mrd_buf *backlog_get(const wr_backlog *b, uint64_t lsn)
{
    if (b->count == 0 || lsn < b->first || lsn >= b->first + b->count) return NULL;
    return &b->recs[(b->head + (lsn - b->first)) % b->cap];
}

/* ---- one stream ------------------------------------------------------------------------- */

static void stream_cut(wr_stream *s, const char *why)
{
    MRD_WARN("log_stream_cut", "reader=%s reason=\"%s\"",
             h2_req_peer(s->req) ? h2_req_peer(s->req) : "-", why);
    h2_req_reset(s->req, 0x2 /* INTERNAL_ERROR */);
    s->live = false;
}

static int send_mark(wr_stream *s, uint64_t vdl, uint64_t lsn_last)
{
    writer *w = s->w;
    mrd_buf f;
    mrd_buf_init(&f);
    size_t at;
    wire_mark mark = {.vdl = vdl, .epoch = vol_info_get(w->vol)->epoch, .lsn_last = lsn_last};
    uint8_t tag = WIRE_STREAM_MARK;
    int rc = wire_frame_begin(&f, &at);
    if (rc == 0) rc = mrd_buf_append(&f, &tag, 1);
    if (rc == 0) rc = wire_mark_encode(&mark, &f, NULL);
    if (rc == 0) rc = wire_frame_end(&f, at, NULL);
    if (rc == 0) rc = h2_req_write(s->req, f.data, f.len);
    mrd_buf_free(&f);
    if (rc == 0) s->sent_vdl = vdl;
    return rc;
}

/* Records (sent_lsn, upto] as batches, as many as fit a frame each. */
static int send_records(wr_stream *s, uint64_t upto)
{
    writer *w = s->w;
    mrd_buf f;
    mrd_buf_init(&f);
    int rc = 0;
    while (rc == 0 && s->sent_lsn < upto) {
        f.len = 0;
        size_t at;
        uint8_t tag = WIRE_STREAM_BATCH;
        wire_batch_builder bb;
        rc = wire_frame_begin(&f, &at);
        if (rc == 0) rc = mrd_buf_append(&f, &tag, 1);
        if (rc == 0) rc = wire_batch_begin(&bb, &f, WIRE_BATCH_LOG);
        uint64_t lsn = s->sent_lsn;
        while (rc == 0 && lsn < upto) {
            const mrd_buf *enc = backlog_get(&w->backlog, lsn + 1);
            if (enc == NULL) {
                rc = MRD_ENOTFOUND;
                break;
            }
            wire_record rec;
            if (wire_record_decode(enc->data, enc->len, &rec, NULL) != 0) {
                rc = MRD_EPARSE;
                break;
            }
            int add = wire_batch_add(&bb, &rec, NULL);
            if (add == MRD_ETOOBIG && lsn > s->sent_lsn) break;
            rc = add;
            if (rc == 0) lsn++;
        }
        if (rc == 0) rc = wire_batch_finish(&bb, NULL);
        if (rc == 0) rc = wire_frame_end(&f, at, NULL);
        if (rc == 0) rc = h2_req_write(s->req, f.data, f.len);
        if (rc == 0) s->sent_lsn = lsn;
    }
    mrd_buf_free(&f);
    return rc;
}

static void stream_pump(wr_stream *s)
{
    writer *w = s->w;
    if (!s->live || w->vol == NULL) return;
    if (h2_req_queued(s->req) > WRITER_STREAM_QUEUED_MAX)
        return stream_cut(s, "the reader does not keep up");
    uint64_t last = w->backlog.count > 0 ? w->backlog.first + w->backlog.count - 1 : s->sent_lsn;
    if (last > s->sent_lsn && send_records(s, last) != 0)
        return stream_cut(s, "records it needs left the backlog");
    uint64_t vdl = vol_vdl(w->vol);
    if (vdl > s->sent_vdl && send_mark(s, vdl, s->sent_lsn > vdl ? s->sent_lsn : vdl) != 0)
        return stream_cut(s, "cannot queue a mark");
}

void wr_stream_pump(writer *w)
{
    for (int i = 0; i < WRITER_STREAMS_MAX; i++)
        if (w->streams[i].live) stream_pump(&w->streams[i]);
}

void wr_stream_route(mrd_node *node, h2_req *req, void *ud)
{
    writer *w = ud;
    if (w->state != WR_READY)
        return mrd_node_error(req, 503, "unavailable", "the writer is not ready");
    /* just opened: VDL says 0 until the new volume epoch's first records are durable; a stream
     * starting there would send readers to storage for a point it has forgotten */
    if (vol_vdl(w->vol) < vol_info_get(w->vol)->vdl)
        return mrd_node_error(req, 503, "unavailable",
                              "the writer's VDL does not cover what recovery found yet");
    wr_stream *s = NULL;
    for (int i = 0; i < WRITER_STREAMS_MAX && s == NULL; i++)
        if (!w->streams[i].live && w->streams[i].req == NULL) s = &w->streams[i];
    if (s == NULL) return mrd_node_error(req, 503, "busy", "too many readers stream the log");
    *s = (wr_stream){.w = w, .req = req, .live = true};
    h2_req_set_ud(req, s);
    h2_header hdrs[2] = {{"content-type", "application/vnd.meridian.log"},
                         {"meridian-region", w->region->name}};
    uint64_t vdl = vol_vdl(w->vol);
    /* ?from=LSN (the replication agent): start there when the backlog still holds what follows */
    const char *q = strstr(h2_req_path(req), "?from=");
    uint64_t from;
    if (q != NULL && vol_parse_u64(q + 6, &from) == 0 && from < vdl && w->backlog.count > 0 &&
        from + 1 >= w->backlog.first && from + 1 < w->backlog.first + w->backlog.count)
        vdl = from;
    s->sent_lsn = vdl;
    if (h2_req_respond_start(req, 200, hdrs, 2) != 0 || send_mark(s, vdl, vdl) != 0)
        return stream_cut(s, "cannot start the stream");
    MRD_INFO("log_stream_start", "reader=%s vdl=%llu",
             h2_req_peer(req) ? h2_req_peer(req) : "-", (unsigned long long)vdl);
    stream_pump(s);
}

void wr_stream_closed(writer *w, h2_req *req)
{
    for (int i = 0; i < WRITER_STREAMS_MAX; i++)
        if (w->streams[i].req == req) w->streams[i] = (wr_stream){0};
}

void wr_streams_end(writer *w)
{
    for (int i = 0; i < WRITER_STREAMS_MAX; i++)
        if (w->streams[i].live) {
            h2_req_finish(w->streams[i].req);
            w->streams[i].live = false;
        }
}
