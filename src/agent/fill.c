/*
 * Filling a gap in the primary agent's log from the region's storage. When
 * the writer restarted at a VDL beyond the last mark the agent saw, and the
 * agent did not receive every record in between, those records are committed
 * (the new writer recovered them) and live on the storage nodes. A worker
 * thread asks all six nodes for every PG's durable records in
 * (committed, target] (GET /v1/records, QUORUM_SERVE_MAX at a time) until
 * three nodes answered for every PG: a record at or below a VDL is on four of
 * six, so any three hold every one of them between them. Back on the loop the records are sorted
 * and walked along the volume back-link from the committed LSN: only a chain
 * that reaches the target exactly is taken; otherwise the gap stays and the
 * fill is tried again later.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"

#define FILL_NODE_TIMEOUT_MS 20000u /* one node's whole answer */
#define FILL_RECORDS_MAX (1u << 20) /* records one fill collects, over all copies */
#define FILL_ANSWER_BYTES_MAX (8u << 20)

struct ag_fill {
    uv_work_t work;
    agent *a;
    ag_link *link; /* NULL: the agent's own log */
    bool exact;    /* the chain must end at upto exactly */
    bool tail;     /* a diverged region's own tail, for ag_rejoin_tail_read */
    topo_addr nodes[QUORUM_SEGMENTS];
    h2_tls *tls;
    uint64_t after, upto;
    ag_rec *recs;
    uint32_t n, cap;
    uint32_t answered; /* nodes that answered every PG */
    int rc;
    char why[MRD_MSG_MAX];
};

static int keep(ag_fill *f, const wire_record *rec)
{
    if (f->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 1024;
        if (cap > FILL_RECORDS_MAX) return MRD_ETOOBIG;
        ag_rec *grown = realloc(f->recs, cap * sizeof(*grown));
        if (grown == NULL) return MRD_ENOMEM;
        f->recs = grown;
        f->cap = cap;
    }
    ag_rec *r = &f->recs[f->n];
    r->lsn = rec->lsn;
    r->cpl = (rec->flags & WIRE_REC_CPL) != 0;
    mrd_buf_init(&r->enc);
    int rc = wire_record_encode(rec, &r->enc, NULL);
    if (rc == 0) f->n++;
    return rc;
}

/* One answer body (frames of batches) into f. *last: the highest LSN in it (0: none). */
static int take_body(ag_fill *f, const mrd_buf *body, uint64_t *last, mrd_msg *msg)
{
    wire_frame_reader fr;
    wire_frame_reader_init(&fr, 0);
    const uint8_t *p = body->data;
    size_t left = body->len;
    int rc = 0;
    *last = 0;
    while (rc == 0 && left > 0) {
        size_t used = 0;
        wire_frame fm;
        rc = wire_frame_reader_feed(&fr, p, left, &used, &fm, msg);
        p += used;
        left -= used;
        if (rc == 0) {
            rc = mrd_fail(msg, MRD_ETRUNC, "a records answer ends inside a frame");
            break;
        }
        if (rc < 0) break;
        wire_batch b;
        rc = wire_batch_decode(fm.data, fm.len, &b, msg);
        wire_batch_iter it;
        if (rc == 0) wire_batch_iter_init(&it, &b);
        wire_record rec;
        while (rc == 0 && (rc = wire_batch_iter_next(&it, &rec)) == 1) {
            rc = rec.lsn > f->after && rec.lsn <= f->upto ? keep(f, &rec) : 0;
            if (rec.lsn > *last) *last = rec.lsn;
        }
    }
    wire_frame_reader_close(&fr);
    return rc;
}

/*
 * One node, on the worker's private loop: one connection, a request per PG at once, and
 * again from the last record for a PG whose answer was full (QUORUM_SERVE_MAX records).
 */
typedef struct {
    ag_fill *f;
    uv_loop_t loop;
    h2_client *client;
    uv_timer_t timer;
    uint32_t open; /* requests in flight */
    int rc;
    bool done, connected;
    mrd_msg msg;
} fill_node;

typedef struct {
    fill_node *fn;
    uint32_t pg;
    uint64_t after;
    int status;
    mrd_buf body;
} fill_req;

static void node_end(fill_node *fn, int rc)
{
    if (fn->rc == 0) fn->rc = rc;
    if (fn->done) return;
    fn->done = true;
    uv_timer_stop(&fn->timer);
    uv_close((uv_handle_t *)&fn->timer, NULL);
    if (fn->client != NULL) h2_client_close(fn->client);
}

static void ask(fill_node *fn, uint32_t pg, uint64_t after);

static void r_response(h2_call *call, int status, void *ud)
{
    ((fill_req *)ud)->status = status;
}

static void r_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    fill_req *r = ud;
    if (r->body.len + len > FILL_ANSWER_BYTES_MAX || mrd_buf_append(&r->body, data, len) != 0)
        h2_call_cancel(call);
}

static void r_close(h2_call *call, int error, void *ud)
{
    fill_req *r = ud;
    fill_node *fn = r->fn;
    fn->open--;
    uint64_t last = 0;
    int rc = error;
    if (rc == 0 && r->status != 200)
        rc = mrd_fail(&fn->msg, MRD_EPROTO, "records of pg %u answered %d", r->pg, r->status);
    if (rc == 0) rc = take_body(fn->f, &r->body, &last, &fn->msg);
    if (rc == 0 && last > r->after && last < fn->f->upto && !fn->done) ask(fn, r->pg, last);
    mrd_buf_free(&r->body);
    free(r);
    if (rc != 0) node_end(fn, rc);
    if (fn->open == 0) node_end(fn, 0);
}

static const h2_call_cbs req_cbs = {
    .on_response = r_response, .on_data = r_data, .on_close = r_close};

static void ask(fill_node *fn, uint32_t pg, uint64_t after)
{
    fill_req *r = calloc(1, sizeof(*r));
    if (r == NULL) return node_end(fn, MRD_ENOMEM);
    *r = (fill_req){.fn = fn, .pg = pg, .after = after};
    mrd_buf_init(&r->body);
    char path[128];
    snprintf(path, sizeof(path), "/v1/records?pg=%u&after=%" PRIu64 "&upto=%" PRIu64, pg, after,
             fn->f->upto);
    if (h2_client_request(fn->client, "GET", path, NULL, 0, NULL, 0, true, &req_cbs, r, NULL) !=
        0) {
        free(r);
        return node_end(fn, MRD_ECLOSED);
    }
    fn->open++;
}

static void n_connect(h2_client *c, int status, void *ud)
{
    fill_node *fn = ud;
    if (status != 0) {
        mrd_fail(&fn->msg, status, "cannot connect");
        return node_end(fn, status);
    }
    fn->connected = true;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX && !fn->done; pg++)
        ask(fn, pg, fn->f->after);
}

static void n_disconnect(h2_client *c, int error, void *ud)
{
    fill_node *fn = ud;
    if (fn->done) return; /* closed by node_end */
    mrd_fail(&fn->msg, MRD_ECLOSED, "the connection dropped");
    node_end(fn, MRD_ECLOSED);
}

static const h2_client_cbs node_cbs = {.on_connect = n_connect, .on_disconnect = n_disconnect};

static void n_timeout(uv_timer_t *t)
{
    fill_node *fn = t->data;
    mrd_fail(&fn->msg, MRD_ETIMEDOUT, "no complete answer within %u ms", FILL_NODE_TIMEOUT_MS);
    node_end(fn, MRD_ETIMEDOUT);
}

/* Every record of every PG in (after, upto] that the node holds. */
static int fetch_node(ag_fill *f, const topo_addr *node, mrd_msg *msg)
{
    fill_node fn = {.f = f};
    if (uv_loop_init(&fn.loop) != 0) return mrd_fail(msg, MRD_ENOMEM, "cannot make a loop");
    uv_timer_init(&fn.loop, &fn.timer);
    fn.timer.data = &fn;
    uv_timer_start(&fn.timer, n_timeout, FILL_NODE_TIMEOUT_MS, 0);
    h2_client_config cc = {.host = node->host, .port = node->port, .tls = f->tls};
    int rc = h2_client_connect(&fn.loop, &cc, &node_cbs, &fn, &fn.client, &fn.msg);
    if (rc != 0) {
        fn.client = NULL;
        node_end(&fn, rc);
    }
    uv_run(&fn.loop, UV_RUN_DEFAULT); /* ends once the client and the timer have closed */
    uv_loop_close(&fn.loop);
    if (fn.rc != 0) mrd_fail(msg, fn.rc, "%s", fn.msg.text[0] ? fn.msg.text : mrd_strerror(fn.rc));
    return fn.rc;
}

static void fill_work(uv_work_t *w)
{
    ag_fill *f = mrd_container_of(w, ag_fill, work);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        mrd_msg msg = {{0}};
        int rc = fetch_node(f, &f->nodes[s], &msg);
        if (rc == 0 && ++f->answered == QUORUM_READ) return; /* every record is on one of them */
        if (rc == 0) continue;
        snprintf(f->why, sizeof(f->why), "%.64s:%u: %.400s", f->nodes[s].host, f->nodes[s].port,
                 msg.text);
        if (rc == MRD_ETOOBIG || rc == MRD_ENOMEM) {
            f->rc = rc;
            return;
        }
    }
}

static int rec_cmp(const void *x, const void *y)
{
    uint64_t a = ((const ag_rec *)x)->lsn, b = ((const ag_rec *)y)->lsn;
    return a < b ? -1 : a > b;
}

/* The chain from after to upto through the sorted records, into the backlog; false if broken. */
static bool take_chain(agent *a, ag_fill *f)
{
    qsort(f->recs, f->n, sizeof(*f->recs), rec_cmp);
    uint64_t at = f->after;
    ag_backlog_truncate_after(&a->backlog, f->after);
    a->received_lsn = f->after;
    a->recv_crc = a->crc;
    for (uint32_t i = 0; i < f->n && at < f->upto; i++) {
        if (f->recs[i].lsn <= at) continue; /* another copy */
        wire_record rec;
        if (wire_record_decode(f->recs[i].enc.data, f->recs[i].enc.len, &rec, NULL) != 0 ||
            rec.vol_prev_lsn != at)
            break;
        /* a full backlog of records to commit gives way to the newest: links that need the
         * oldest catch up from storage themselves */
        if (ag_backlog_full(&a->backlog)) ag_backlog_drop_oldest(&a->backlog);
        if (ag_backlog_put(&a->backlog, rec.lsn, (rec.flags & WIRE_REC_CPL) != 0,
                           f->recs[i].enc.data, f->recs[i].enc.len) != 0)
            break;
        a->recv_crc =
            ag_checksum_advance(a->recv_crc, rec.lsn, f->recs[i].enc.data, f->recs[i].enc.len);
        ag_backlog_at(&a->backlog, a->backlog.count - 1)->crc = a->recv_crc;
        at = rec.lsn;
    }
    if (at == f->upto) return true;
    ag_backlog_truncate_after(&a->backlog, f->after);
    a->received_lsn = f->after;
    a->recv_crc = a->crc;
    snprintf(f->why, sizeof(f->why), "the records on storage link only up to LSN %" PRIu64, at);
    return false;
}

/* The chain from after through the sorted records, compacted in place for a link: every
 * record fetched must be on it (three nodes hold every committed record between them). */
static bool link_chain(ag_fill *f, uint64_t *end)
{
    qsort(f->recs, f->n, sizeof(*f->recs), rec_cmp);
    uint64_t at = f->after;
    uint32_t kept = 0;
    bool ok = true;
    for (uint32_t i = 0; i < f->n; i++) {
        ag_rec *r = &f->recs[i];
        wire_record rec;
        if (r->lsn <= at) { /* another copy */
            mrd_buf_free(&r->enc);
            continue;
        }
        if (!ok || wire_record_decode(r->enc.data, r->enc.len, &rec, NULL) != 0 ||
            rec.vol_prev_lsn != at) {
            ok = false;
            mrd_buf_free(&r->enc);
            continue;
        }
        at = r->lsn;
        f->recs[kept++] = *r;
    }
    f->n = kept;
    *end = at;
    if (ok && at > f->after && (!f->exact || at == f->upto)) return true;
    snprintf(f->why, sizeof(f->why), "the records on storage link only up to LSN %" PRIu64, at);
    return false;
}

static void link_done(ag_fill *f)
{
    uint64_t end = 0;
    if (f->rc == 0 && f->answered >= QUORUM_READ && link_chain(f, &end)) {
        ag_link_catchup_done(f->link, f->recs, f->n, end);
        f->recs = NULL;
        f->n = 0;
        return;
    }
    MRD_WARN("replica_link_catchup_failed", "after=%" PRIu64 " upto=%" PRIu64 " reason=\"%s\"",
             f->after, f->upto, f->why[0] ? f->why : "fewer than 3 nodes answered");
    ag_link_catchup_failed(f->link);
}

static void fill_done(uv_work_t *w, int status)
{
    ag_fill *f = mrd_container_of(w, ag_fill, work);
    agent *a = f->a;
    a->fill = NULL;
    bool ok = false;
    if (f->tail) {
        uint64_t end = f->after;
        bool got = !a->stopping && status == 0 && f->rc == 0 && f->answered >= QUORUM_READ;
        if (got && f->n > 0) got = link_chain(f, &end) || end == f->after;
        if (!a->stopping) ag_rejoin_tail_read(a, got, f->recs, f->n, end, f->why);
        for (uint32_t i = 0; i < f->n; i++)
            mrd_buf_free(&f->recs[i].enc);
        free(f->recs);
        free(f);
        return;
    }
    if (f->link != NULL) {
        if (!a->stopping && status == 0) link_done(f);
        for (uint32_t i = 0; i < f->n; i++)
            mrd_buf_free(&f->recs[i].enc);
        free(f->recs);
        free(f);
        return;
    }
    if (!a->stopping && status == 0 && f->rc == 0 && f->answered >= QUORUM_READ &&
        a->committed_lsn == f->after)
        ok = take_chain(a, f);
    if (ok) {
        a->received_lsn = f->upto;
        ag_primary_commit(a, f->upto, mrd_now_ms());
        a->gap[0] = '\0';
        MRD_INFO("log_gap_filled", "after=%" PRIu64 " upto=%" PRIu64 " records=%u nodes=%u",
                 f->after, f->upto, f->n, f->answered);
    } else if (!a->stopping) {
        MRD_WARN("log_gap_fill_failed", "after=%" PRIu64 " upto=%" PRIu64 " nodes=%u reason=\"%s\"",
                 f->after, f->upto, f->answered,
                 f->answered < QUORUM_READ && f->why[0] ? f->why
                 : f->why[0]                            ? f->why
                                                        : "fewer than 3 nodes");
        a->fill_retry_at_ms = mrd_now_ms() + AG_FILL_RETRY_MS;
    }
    for (uint32_t i = 0; i < f->n; i++)
        mrd_buf_free(&f->recs[i].enc);
    free(f->recs);
    free(f);
}

static int fill_start(agent *a, ag_link *link, bool tail, uint64_t after, uint64_t upto)
{
    if (a->fill != NULL) return MRD_EBUSY;
    ag_fill *f = calloc(1, sizeof(*f));
    if (f == NULL) return MRD_ENOMEM;
    f->a = a;
    f->link = link;
    f->tail = tail;
    f->exact = link == NULL && !tail;
    f->tls = a->client_tls;
    f->after = after;
    f->upto = upto;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        f->nodes[s] = a->region->storage[s].addr;
    int rc = uv_queue_work(a->node->loop, &f->work, fill_work, fill_done);
    if (rc != 0) {
        free(f);
        return MRD_ENOMEM;
    }
    a->fill = f;
    MRD_INFO(tail   ? "divergent_tail_read"
             : link ? "replica_link_catchup_read"
                    : "log_gap_fill",
             "after=%" PRIu64 " upto=%" PRIu64, after, upto);
    return 0;
}

int ag_fill_start(agent *a, ag_link *link, uint64_t after, uint64_t upto)
{
    return fill_start(a, link, false, after, upto);
}

int ag_fill_tail(agent *a, uint64_t after, uint64_t upto)
{
    return fill_start(a, NULL, true, after, upto);
}
