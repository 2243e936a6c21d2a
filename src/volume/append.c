/*
 * Appends: what qw asks to send is queued per (segment, PG) (vol_batcher);
 * from the loop's prepare phase every fenced node gets one POST /v1/append
 * per PG with queued records, up to VOL_APPENDS_PER_NODE_MAX in flight on
 * its connection. An answer acknowledges exactly the LSNs its request
 * carried (the node answers once all of them are durable) plus everything
 * up to the SCL it reports; qw turns that into VCL and VDL.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vol_int.h"

void vol_sink(void *ctx, const quorum_action *a)
{
    vol *v = ctx;
    switch (a->kind) {
    case QUORUM_ACT_SEND:
        /* beyond the queue's bound the record waits for qw's next re-send */
        (void)vol_batcher_add(&v->batcher, a->seg, a->pg, a->rec->lsn);
        break;
    case QUORUM_ACT_WAITER:
        /* a waiter fires once and ids are unique while live: the ring cannot overflow */
        if (v->n_fired < v->cfg.waiters_max)
            v->fired[(v->fired_head + v->n_fired++) % v->cfg.waiters_max] = a->id;
        break;
    default: /* VCL, VDL: read back from qw in the prepare phase */
        break;
    }
}

static uint32_t record_size(void *ctx, uint64_t lsn)
{
    const mrd_buf *b = vol_store_get(ctx, lsn);
    return b != NULL ? (uint32_t)b->len : 0;
}

/* One frame holding the batch of the stored records lsns[0..n). */
static int build_batch(vol *v, const uint64_t *lsns, uint32_t n, mrd_buf *out, mrd_msg *msg)
{
    size_t at;
    out->len = 0;
    int rc = wire_frame_begin(out, &at);
    if (rc != 0) return mrd_fail(msg, rc, "append: out of memory");
    wire_batch_builder b;
    rc = wire_batch_begin(&b, out, WIRE_BATCH_LOG);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const mrd_buf *enc = vol_store_get(&v->store, lsns[i]);
        wire_record rec;
        rc = wire_record_decode(enc->data, enc->len, &rec, msg);
        if (rc == 0) rc = wire_batch_add(&b, &rec, msg);
    }
    if (rc == 0) rc = wire_batch_finish(&b, msg);
    if (rc == 0) rc = wire_frame_end(out, at, msg);
    return rc;
}

/* Sends one append to n for pg; false when nothing was sent. */
static bool send_one(vol *v, vol_node *n, uint32_t pg)
{
    uint32_t k = vol_batcher_take(&v->batcher, n->seg, pg, v->cfg.batch_records_max,
                                  v->cfg.batch_bytes_max, record_size, &v->store, v->take);
    if (k == 0) return false;
    mrd_msg msg = {{0}};
    int rc = build_batch(v, v->take, k, &v->scratch, &msg);
    if (rc != 0) {
        vol_fail(v, rc, "append to %s: %s", n->tn->id, msg.text);
        return false;
    }
    char epoch[24], pgs[16], vdl[24];
    snprintf(epoch, sizeof(epoch), "%" PRIu64, v->info.epoch);
    snprintf(pgs, sizeof(pgs), "%u", pg);
    snprintf(vdl, sizeof(vdl), "%" PRIu64, qw_vdl(&v->w));
    h2_header hdrs[] = {{"meridian-epoch", epoch},
                        {"meridian-pg", pgs},
                        {"meridian-vdl", vdl},
                        {"content-type", "application/octet-stream"}};
    vol_call proto = {.kind = CALL_APPEND, .pg = pg, .n_lsns = k};
    proto.lsns = malloc((size_t)k * sizeof(uint64_t));
    if (proto.lsns == NULL) {
        vol_fail(v, MRD_ENOMEM, "append: out of memory");
        return false;
    }
    memcpy(proto.lsns, v->take, (size_t)k * sizeof(uint64_t));
    rc = vol_call_start(n, &proto, "POST", "/v1/append", hdrs, MRD_ARRAY_LEN(hdrs), v->scratch.data,
                        v->scratch.len);
    if (rc != 0) { /* back into the queue; the connection is full or gone */
        for (uint32_t i = 0; i < k; i++)
            (void)vol_batcher_add(&v->batcher, n->seg, pg, v->take[i]);
        free(proto.lsns);
        return false;
    }
    return true;
}

void vol_flush(vol *v)
{
    if (!v->qw_live) return;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS && v->phase != PHASE_FAILED; s++) {
        vol_node *n = &v->nodes[s];
        if (n->state != NODE_UP) continue;
        uint32_t pg;
        while (n->appends < VOL_APPENDS_PER_NODE_MAX && vol_batcher_next_pg(&v->batcher, s, &pg))
            if (!send_one(v, n, pg)) break;
    }
}

static void on_ack(vol *v, vol_call *c)
{
    vol_node *n = c->n;
    wire_ack ack;
    mrd_msg msg = {{0}};
    int rc = wire_ack_decode(c->body.data, c->body.len, &ack, &msg);
    if (rc == 0 && ack.pg != c->pg)
        rc = mrd_fail(&msg, MRD_EPROTO, "ack names pg %u, the append was for pg %u", ack.pg, c->pg);
    if (rc != 0) {
        vol_fail(v, MRD_EPROTO, "append to %s: %s", n->tn->id, msg.text);
        return;
    }
    v->stats.appends++;
    v->stats.append_records += c->n_lsns;
    uint64_t last = qw_pg_last(&v->w, c->pg);
    qw_event ev = {.kind = QW_EV_ACK,
                   .ack = {.pg = c->pg,
                           .seg = n->seg,
                           .epoch = ack.epoch,
                           .scl = ack.scl < last ? ack.scl : last,
                           .lsns = c->lsns,
                           .n_lsns = c->n_lsns}};
    rc = vol_qw_step(v, &ev);
    if (rc == MRD_EPROTO)
        vol_fail(v, MRD_EPROTO, "append to %s: the ack names records this writer never sent",
                 n->tn->id);
}

void vol_append_on_answer(vol_call *c, h2_call *call, int error)
{
    vol *v = c->v;
    vol_node *n = c->n;
    if (v->phase == PHASE_FAILED || !v->qw_live) return;
    if (error != 0) { /* reset or connection gone: qw re-sends on reconnect or tick */
        v->stats.append_failures++;
        return;
    }
    char code[64];
    vol_answer a = vol_answer_classify(c->status, c->body.data, c->body.len, code, sizeof(code));
    if (a != VOL_ANS_OK) v->stats.append_failures++;
    switch (a) {
    case VOL_ANS_OK:
        on_ack(v, c);
        break;
    case VOL_ANS_STALE: {
        const char *e = h2_call_header(call, "meridian-epoch");
        vol_fail(v, MRD_ESTALE,
                 "node %s answered stale_epoch (its epoch %s, ours %" PRIu64
                 "): a newer writer fenced this one",
                 n->tn->id, e ? e : "?", v->info.epoch);
        break;
    }
    case VOL_ANS_FENCE: /* it lost our fence: fence it again, then re-send */
        if (n->state == NODE_UP) {
            qw_event ev = {.kind = QW_EV_DOWN, .link = {.pg = QUORUM_PG_ALL, .seg = n->seg}};
            vol_qw_step(v, &ev);
            vol_batcher_drop(&v->batcher, n->seg);
            v->fenced--;
            vol_fence_node(n);
        }
        break;
    case VOL_ANS_RETRY: /* busy: qw re-sends after VOL_RESEND_MS */
        break;
    case VOL_ANS_LOG_FAILED:
        vol_node_drop(n, "its log failed; it takes writes again once restarted");
        break;
    default:
        vol_fail(v, MRD_EPROTO, "append to %s refused: %d %s: %.*s", n->tn->id, c->status, code,
                 (int)(c->body.len < 300 ? c->body.len : 300),
                 c->body.data ? (const char *)c->body.data : "");
        break;
    }
}
