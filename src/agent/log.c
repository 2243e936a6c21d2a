/*
 * GET /v1/log on a secondary's agent: the region's readers follow it as
 * they follow a primary region's writer, in the same frames (docs/wire.md):
 * a mark with the local VDL, the records above it, then each record as it
 * is submitted and each VDL advance. A reader that falls too far behind or
 * needs records gone from the backlog is cut off and starts over.
 */
#include <inttypes.h>
#include <string.h>

#include "agent_int.h"

static void cut(ag_reader *s, const char *why)
{
    MRD_WARN("log_stream_cut", "reader=%s reason=\"%s\"",
             h2_req_peer(s->req) ? h2_req_peer(s->req) : "-", why);
    h2_req_reset(s->req, 0x2 /* INTERNAL_ERROR */);
    s->live = false;
}

static int send_mark(ag_reader *s, uint64_t vdl, uint64_t lsn_last)
{
    agent *a = s->a;
    a->frame.len = 0;
    size_t at;
    wire_mark mark = {.vdl = vdl, .epoch = vol_replica_epoch(a->vol), .lsn_last = lsn_last};
    uint8_t tag = WIRE_STREAM_MARK;
    int rc = wire_frame_begin(&a->frame, &at);
    if (rc == 0) rc = mrd_buf_append(&a->frame, &tag, 1);
    if (rc == 0) rc = wire_mark_encode(&mark, &a->frame, NULL);
    if (rc == 0) rc = wire_frame_end(&a->frame, at, NULL);
    if (rc == 0) rc = h2_req_write(s->req, a->frame.data, a->frame.len);
    if (rc == 0) s->sent_vdl = vdl;
    return rc;
}

/* The records after sent_lsn the backlog holds, a batch per frame. */
static int send_records(ag_reader *s)
{
    agent *a = s->a;
    uint32_t i = ag_backlog_after(&a->backlog, s->sent_lsn);
    if (i == a->backlog.count) return 0;
    if (ag_backlog_at(&a->backlog, i)->lsn != s->sent_lsn + 1) return MRD_ENOTFOUND;
    int rc = 0;
    while (rc == 0 && i < a->backlog.count) {
        a->frame.len = 0;
        size_t at;
        uint8_t tag = WIRE_STREAM_BATCH;
        wire_batch_builder bb;
        rc = wire_frame_begin(&a->frame, &at);
        if (rc == 0) rc = mrd_buf_append(&a->frame, &tag, 1);
        if (rc == 0) rc = wire_batch_begin(&bb, &a->frame, WIRE_BATCH_LOG);
        uint64_t last = s->sent_lsn;
        for (; rc == 0 && i < a->backlog.count; i++) {
            ag_rec *r = ag_backlog_at(&a->backlog, i);
            wire_record rec;
            rc = wire_record_decode(r->enc.data, r->enc.len, &rec, NULL);
            int add = rc == 0 ? wire_batch_add(&bb, &rec, NULL) : rc;
            if (add == MRD_ETOOBIG && last > s->sent_lsn) break;
            rc = add;
            if (rc == 0) last = r->lsn;
        }
        if (rc == 0) rc = wire_batch_finish(&bb, NULL);
        if (rc == 0) rc = wire_frame_end(&a->frame, at, NULL);
        if (rc == 0) rc = h2_req_write(s->req, a->frame.data, a->frame.len);
        if (rc == 0) s->sent_lsn = last;
    }
    return rc;
}

static void pump_one(ag_reader *s)
{
    agent *a = s->a;
    if (h2_req_queued(s->req) > AG_READER_QUEUED_MAX) return cut(s, "the reader does not keep up");
    if (send_records(s) != 0) return cut(s, "records it needs left the backlog");
    uint64_t vdl = vol_replica_vdl(a->vol);
    if (vdl > s->sent_vdl && vdl <= s->sent_lsn && send_mark(s, vdl, s->sent_lsn) != 0)
        return cut(s, "cannot queue a mark");
}

void ag_log_pump(agent *a)
{
    uint64_t keep_after = a->vol != NULL ? vol_replica_vdl(a->vol) : 0;
    for (int i = 0; i < AG_READERS_MAX; i++) {
        ag_reader *s = &a->readers[i];
        if (!s->live) continue;
        pump_one(s);
        if (s->live && s->sent_lsn < keep_after) keep_after = s->sent_lsn;
    }
    /* a few records below VDL stay for readers that connect now */
    while (a->backlog.count > 4096 && ag_backlog_at(&a->backlog, 0)->lsn <= keep_after)
        ag_backlog_drop_oldest(&a->backlog);
}

void ag_log_route(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    uint64_t vdl = a->vol != NULL ? vol_replica_vdl(a->vol) : 0;
    if (!a->vol_ready || vdl < a->open_head)
        return mrd_node_error(req, 503, "unavailable",
                              "the agent's volume is not at its recovered head yet");
    ag_reader *s = NULL;
    for (int i = 0; i < AG_READERS_MAX && s == NULL; i++)
        if (!a->readers[i].live && a->readers[i].req == NULL) s = &a->readers[i];
    if (s == NULL) return mrd_node_error(req, 503, "busy", "too many readers stream the log");
    *s = (ag_reader){.a = a, .req = req, .live = true, .sent_lsn = vdl};
    h2_req_set_ud(req, s);
    h2_header hdrs[2] = {{"content-type", "application/vnd.meridian.log"},
                         {"meridian-region", a->region->name}};
    if (h2_req_respond_start(req, 200, hdrs, 2) != 0 || send_mark(s, vdl, vdl) != 0)
        return cut(s, "cannot start the stream");
    MRD_INFO("log_stream_start", "reader=%s vdl=%" PRIu64,
             h2_req_peer(req) ? h2_req_peer(req) : "-", vdl);
    pump_one(s);
}

void ag_log_closed(agent *a, h2_req *req)
{
    for (int i = 0; i < AG_READERS_MAX; i++)
        if (a->readers[i].req == req) a->readers[i] = (ag_reader){0};
}

void ag_log_end(agent *a)
{
    for (int i = 0; i < AG_READERS_MAX; i++)
        if (a->readers[i].live) {
            h2_req_finish(a->readers[i].req);
            a->readers[i].live = false;
        }
}
