/*
 * The reader's end of the writer's log stream (GET /v1/log): frames in,
 * records and marks into rd_core. Any error or a cut stream starts it over:
 * reconnect, and the first mark resets what the reader holds.
 */
#include <stdio.h>
#include <string.h>

#include "reader_int.h"

static void stream_fail(reader *r, const char *why)
{
    if (r->stream_why[0] == '\0' || strcmp(r->stream_why, why) != 0)
        MRD_WARN("log_stream_down", "writer=%s reason=\"%s\"", r->writer_node->id, why);
    snprintf(r->stream_why, sizeof(r->stream_why), "%s", why);
    rd_core_stream_down(r->core, mrd_now_ms());
    if (r->stream != NULL) h2_call_cancel(r->stream);
    if (r->wc != NULL) r->wc_closing = true;
}

static int on_batch(reader *r, const uint8_t *data, size_t len, mrd_msg *msg)
{
    wire_batch batch;
    int rc = wire_batch_decode(data, len, &batch, msg);
    if (rc != 0) return rc;
    wire_batch_iter it;
    wire_batch_iter_init(&it, &batch);
    wire_record rec;
    while ((rc = wire_batch_iter_next(&it, &rec)) == 1) {
        r->scratch.len = 0;
        rc = wire_record_encode(&rec, &r->scratch, msg);
        if (rc == 0) rc = rd_core_record(r->core, &rec, r->scratch.data, r->scratch.len);
        if (rc != 0)
            return mrd_fail(msg, rc, "record %llu: %s", (unsigned long long)rec.lsn,
                            rc == MRD_EPROTO ? "not the next LSN" : mrd_strerror(rc));
    }
    return rc;
}

static int on_mark(reader *r, const uint8_t *data, size_t len, mrd_msg *msg)
{
    wire_mark mark;
    int rc = wire_mark_decode(data, len, &mark, msg);
    if (rc != 0) return rc;
    uint64_t now = mrd_now_ms();
    if (!r->stream_started) { /* the stream's starting point */
        rd_core_reset(r->core, mark.vdl, mark.epoch, now);
        mrd_metric_inc(r->m_resets, 1);
        r->stream_started = true;
        r->stream_why[0] = '\0';
        MRD_INFO("log_stream_start", "writer=%s vdl=%llu epoch=%llu", r->writer_node->id,
                 (unsigned long long)mark.vdl, (unsigned long long)mark.epoch);
        return 0;
    }
    rc = rd_core_mark(r->core, mark.vdl, mark.lsn_last, now);
    if (rc != 0) return mrd_fail(msg, rc, "mark vdl %llu goes back or passes the records received",
                                 (unsigned long long)mark.vdl);
    mrd_metric_inc(r->m_applied, rd_core_apply(r->core, now));
    return 0;
}

static int on_frame(reader *r, const wire_frame *f, mrd_msg *msg)
{
    if (f->len < 1) return mrd_fail(msg, MRD_EPARSE, "empty frame");
    if (f->data[0] == WIRE_STREAM_MARK) return on_mark(r, f->data + 1, f->len - 1, msg);
    if (f->data[0] != WIRE_STREAM_BATCH)
        return mrd_fail(msg, MRD_EPARSE, "unknown frame tag 0x%02x", f->data[0]);
    if (!r->stream_started) return mrd_fail(msg, MRD_EPROTO, "records before the first mark");
    return on_batch(r, f->data + 1, f->len - 1, msg);
}

static void s_response(h2_call *call, int status, void *ud)
{
    reader *r = ud;
    if (status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "the writer answered %d", status);
        stream_fail(r, why);
    }
}

static void s_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    reader *r = ud;
    while (len > 0 && r->stream != NULL) {
        size_t used = 0;
        wire_frame f;
        mrd_msg msg = {{0}};
        int rc = wire_frame_reader_feed(&r->fr, data, len, &used, &f, &msg);
        data += used;
        len -= used;
        if (rc == 0) break;
        if (rc == 1) rc = on_frame(r, &f, &msg);
        if (rc < 0) {
            char why[MRD_MSG_MAX + 32];
            snprintf(why, sizeof(why), "bad stream: %s", msg.text);
            stream_fail(r, why);
            return;
        }
    }
}

static void s_close(h2_call *call, int error, void *ud)
{
    reader *r = ud;
    r->stream = NULL;
    if (!r->stopping) stream_fail(r, error ? mrd_strerror(error) : "the writer ended the stream");
}

static const h2_call_cbs stream_cbs = {
    .on_response = s_response, .on_data = s_data, .on_close = s_close};

static void wc_connect(h2_client *c, int status, void *ud)
{
    reader *r = ud;
    if (status != 0) stream_fail(r, "cannot connect to the writer");
}

static void wc_disconnect(h2_client *c, int error, void *ud)
{
    reader *r = ud;
    if (!r->stopping) stream_fail(r, "the writer's connection dropped");
}

static const h2_client_cbs wc_cbs = {.on_connect = wc_connect, .on_disconnect = wc_disconnect};

void rd_stream_tick(reader *r, uint64_t now)
{
    if (r->wc_closing) {
        if (r->wc != NULL) h2_client_close(r->wc);
        r->wc = NULL;
        r->wc_closing = false;
        r->stream_retry_at_ms = now + RD_RECONNECT_MS;
    }
    if (r->wc == NULL && now >= r->stream_retry_at_ms) {
        h2_client_config cc = {.host = r->writer_node->addr.host,
                               .port = r->writer_node->addr.port,
                               .tls = r->client_tls};
        if (h2_client_connect(r->node->loop, &cc, &wc_cbs, r, &r->wc, NULL) != 0) {
            r->wc = NULL;
            r->stream_retry_at_ms = now + RD_RECONNECT_MS;
        }
        return;
    }
    if (r->wc != NULL && r->stream == NULL && h2_client_connected(r->wc)) {
        wire_frame_reader_close(&r->fr);
        wire_frame_reader_init(&r->fr, 0);
        r->stream_started = false;
        if (h2_client_request(r->wc, "GET", "/v1/log", NULL, 0, NULL, 0, true, &stream_cbs, r,
                              &r->stream) != 0)
            r->wc_closing = true;
    }
    mrd_metric_inc(r->m_applied, rd_core_apply(r->core, now));
}

void rd_stream_restart(reader *r, const char *why)
{
    stream_fail(r, why);
}

void rd_stream_stop(reader *r)
{
    if (r->wc != NULL) h2_client_close(r->wc);
    r->wc = NULL;
    wire_frame_reader_close(&r->fr);
}
