/*
 * Page reads: one segment that qw knows complete for the read (its SCL
 * reaches the PG's last record at or below the read point), else any fenced
 * node; on 409 incomplete (or any failure) the next segment; when every
 * segment refused, again after VOL_READ_RETRY_MS (gap filling may complete
 * meanwhile), until VOL_READ_TIMEOUT_MS. vol_fetch reads at the writer's
 * read point and keeps the result as the base of the page's next delta.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vol_int.h"

static void unlink_op(vol *v, vol_read_op *op)
{
    if (op->prev) op->prev->next = op->next;
    if (op->next) op->next->prev = op->prev;
    if (v->reads == op) v->reads = op->next;
    op->prev = op->next = NULL;
    v->n_reads--;
}

static void finish(vol_read_op *op, int status, const uint8_t *data, const char *msg)
{
    vol *v = op->v;
    unlink_op(v, op);
    if (!op->cancelled && op->cb) op->cb(v, status, op->page, data, msg, op->ud);
    free(op);
}

/* The writer's read point: its VDL, or the recovered VCL until VDL passes it. */
static uint64_t writer_read_point(const vol *v)
{
    uint64_t vdl = qw_vdl(&v->w);
    return vdl > v->info.vcl ? vdl : v->info.vcl;
}

static bool pick_segment(vol *v, vol_read_op *op, uint8_t *seg)
{
    uint8_t s;
    if (qw_read_segment(&v->w, op->pg, op->lsn, &s) == 0 && !(op->tried & (1u << s)) &&
        v->nodes[s].state == NODE_UP) {
        *seg = s;
        return true;
    }
    for (s = 0; s < QUORUM_SEGMENTS; s++) {
        if (!(op->tried & (1u << s)) && v->nodes[s].state == NODE_UP &&
            v->nodes[s].calls < VOL_CALLS_PER_NODE_MAX) {
            *seg = s;
            return true;
        }
    }
    return false;
}

static void try_read(vol_read_op *op)
{
    vol *v = op->v;
    uint64_t now = vol_now_ms(v);
    if (now >= op->deadline_ms) {
        char msg[MRD_MSG_MAX];
        snprintf(msg, sizeof(msg),
                 "page %" PRIu64 " at lsn %" PRIu64 ": no complete segment answered within %u ms",
                 op->page, op->lsn, VOL_READ_TIMEOUT_MS);
        finish(op, MRD_ETIMEDOUT, NULL, msg);
        return;
    }
    if (op->fetch) op->lsn = writer_read_point(v);
    uint8_t seg;
    char epoch[24]; /* a node fenced by a newer writer says so: stale_epoch */
    snprintf(epoch, sizeof(epoch), "%" PRIu64, v->info.epoch);
    h2_header hdrs[] = {{"meridian-epoch", epoch}};
    while (pick_segment(v, op, &seg)) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/page?page=%" PRIu64 "&lsn=%" PRIu64 "&need=%" PRIu64,
                 op->page, op->lsn, qw_read_need(&v->w, op->pg, op->lsn));
        vol_call proto = {.kind = CALL_PAGE, .op = op, .body_max = v->page_size + 1024u};
        if (vol_call_start(&v->nodes[seg], &proto, "GET", path, hdrs, MRD_ARRAY_LEN(hdrs), NULL,
                           0) == 0) {
            op->in_call = true;
            v->stats.reads++;
            return;
        }
        op->tried |= (uint8_t)(1u << seg);
    }
    op->tried = 0; /* everyone refused or is down: wait and ask again */
    op->retry_at_ms = now + VOL_READ_RETRY_MS;
}

static int start_op(vol *v, uint64_t page, uint64_t lsn, bool fetch, vol_read_cb cb, void *ud)
{
    if (!v->qw_live || (v->phase != PHASE_READY && v->phase != PHASE_FENCE)) return MRD_ESTATE;
    uint64_t pg = page / v->pages_per_pg;
    if (pg >= v->info.pg_count) return MRD_EINVAL;
    if (v->n_reads >= VOL_READS_MAX) return MRD_EBUSY;
    vol_read_op *op = calloc(1, sizeof(*op));
    if (op == NULL) return MRD_ENOMEM;
    op->v = v;
    op->page = page;
    op->lsn = lsn;
    op->pg = (uint32_t)pg;
    op->fetch = fetch;
    op->cb = cb;
    op->ud = ud;
    op->deadline_ms = vol_now_ms(v) + VOL_READ_TIMEOUT_MS;
    op->next = v->reads;
    if (v->reads) v->reads->prev = op;
    v->reads = op;
    v->n_reads++;
    if (fetch)
        op->done = true; /* the cache may answer: decided in the prepare phase */
    else
        try_read(op);
    return 0;
}

int vol_read(vol *v, uint64_t page, uint64_t lsn, vol_read_cb cb, void *ud)
{
    return start_op(v, page, lsn, false, cb, ud);
}

int vol_fetch(vol *v, uint64_t page, vol_read_cb cb, void *ud)
{
    return start_op(v, page, 0, true, cb, ud);
}

static void answered(vol_read_op *op, vol_call *c, h2_call *call)
{
    vol *v = op->v;
    uint8_t bit = (uint8_t)(1u << c->n->seg);
    char code[64];
    vol_answer a = vol_answer_classify(c->status, c->body.data, c->body.len, code, sizeof(code));
    if (a == VOL_ANS_OK && c->body.len == v->page_size) {
        const uint8_t *data = c->body.data;
        if (op->fetch) { /* a write since the read started is newer: keep it */
            const uint8_t *cached = vol_cache_get(&v->cache, op->page);
            if (cached != NULL)
                data = cached;
            else
                (void)vol_cache_put(&v->cache, op->page, data, 0, qw_vdl(&v->w));
        }
        finish(op, 0, data, "");
        return;
    }
    if (a == VOL_ANS_STALE) {
        vol_fail(v, MRD_ESTALE,
                 "node %s answered stale_epoch to a read: a newer writer fenced "
                 "this one",
                 c->n->tn->id);
        return;
    }
    if (a == VOL_ANS_GONE && !op->fetch) {
        char msg[MRD_MSG_MAX];
        snprintf(msg, sizeof(msg),
                 "page %" PRIu64 " at lsn %" PRIu64 ": node %s no longer holds versions that old",
                 op->page, op->lsn, c->n->tn->id);
        finish(op, MRD_ENOTFOUND, NULL, msg);
        return;
    }
    if (a == VOL_ANS_INCOMPLETE)
        v->stats.read_fallbacks++;
    else
        MRD_WARN("vol_read_refused",
                 "node=%s page=%" PRIu64 " lsn=%" PRIu64 " status=%d code=%s "
                 "bytes=%zu",
                 c->n->tn->id, op->page, op->lsn, c->status, code, c->body.len);
    op->tried |= bit;
    try_read(op);
}

void vol_read_on_answer(vol_call *c, h2_call *call, int error)
{
    vol_read_op *op = c->op;
    op->in_call = false;
    if (op->cancelled) {
        free(op);
        return;
    }
    if (error != 0) { /* the connection went: the next segment */
        op->tried |= (uint8_t)(1u << c->n->seg);
        try_read(op);
        return;
    }
    answered(op, c, call);
}

/* Fetches the cache can answer now; the rest become reads. */
void vol_reads_dispatch(vol *v)
{
    vol_read_op *op = v->reads;
    while (op != NULL && v->phase != PHASE_CLOSING && v->phase != PHASE_FAILED) {
        vol_read_op *next = op->next;
        if (op->done) {
            op->done = false;
            const uint8_t *data = vol_cache_get(&v->cache, op->page);
            if (data == NULL && qw_pg_last(&v->w, op->pg) == 0) {
                v->scratch.len = 0; /* a PG never written: zeros, known without asking */
                if (mrd_buf_reserve(&v->scratch, v->page_size) == 0) {
                    memset(v->scratch.data, 0, v->page_size);
                    (void)vol_cache_put(&v->cache, op->page, v->scratch.data, 0, qw_vdl(&v->w));
                    data = vol_cache_get(&v->cache, op->page);
                }
            }
            if (data != NULL) {
                finish(op, 0, data, "");
                op = next; /* callbacks may add reads at the head, never free next */
                continue;
            }
            try_read(op);
        }
        op = next;
    }
}

void vol_reads_tick(vol *v)
{
    uint64_t now = vol_now_ms(v);
    for (vol_read_op *op = v->reads, *next;
         op != NULL && v->phase != PHASE_CLOSING && v->phase != PHASE_FAILED; op = next) {
        next = op->next;
        if (!op->in_call && op->retry_at_ms != 0 && now >= op->retry_at_ms) {
            op->retry_at_ms = 0;
            try_read(op);
        }
    }
}

void vol_reads_cancel(vol *v)
{
    bool failed = v->phase == PHASE_FAILED;
    while (v->reads != NULL) {
        vol_read_op *op = v->reads;
        unlink_op(v, op);
        if (failed && op->cb) op->cb(v, MRD_ECLOSED, op->page, NULL, "volume failed", op->ud);
        op->cancelled = true;
        if (!op->in_call) free(op);
    }
}
