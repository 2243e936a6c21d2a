/*
 * Recovery and fencing, the way docs/storage-protocol.md ("The writer's
 * side") lays them out. Round one asks every connected node for a
 * header-only report of every PG; once at least three nodes have answered
 * all of them (all six, unless VOL_RECOVER_WAIT_MS passed), the floor and the
 * PG count follow (quorum_recover_floor, vol_recover_pg_count). Round two
 * asks the same nodes for reports at the floor, and quorum_recover gives the
 * VCL/VDL to restart at. A round that loses its read quorum starts over. The
 * fence (epoch_max + 1, truncate at the recovered VCL) then goes to every
 * connected node; the writer is ready at four. A node that connects later is
 * fenced before anything else.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vol_int.h"

static const char *call_header(void *ctx, const char *name)
{
    return h2_call_header(ctx, name);
}

static void drop_reports(vol *v)
{
    for (uint32_t i = 0; i < v->n_reports; i++)
        free((void *)v->reports[i].hdrs);
    v->n_reports = 0;
}

static int keep_report(vol *v, const quorum_report *r)
{
    if (v->n_reports == v->reports_cap) {
        uint32_t cap = v->reports_cap ? v->reports_cap * 2 : QUORUM_PGS_MAX * QUORUM_SEGMENTS;
        quorum_report *grown = realloc(v->reports, (size_t)cap * sizeof(*grown));
        if (grown == NULL) return MRD_ENOMEM;
        v->reports = grown;
        v->reports_cap = cap;
    }
    v->reports[v->n_reports++] = *r;
    return 0;
}

static void ask_report(vol *v, vol_node *n, uint32_t pg, uint64_t floor, vol_call_kind kind)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/report?pg=%u&floor=%" PRIu64, pg, floor);
    vol_call proto = {.kind = kind, .pg = pg, .round = v->round, .body_max = VOL_REPORT_BYTES_MAX};
    int rc = vol_call_start(n, &proto, "GET", path, NULL, 0, NULL, 0);
    if (rc != 0 && kind == CALL_REPORT) n->round_failed = true;
    if (rc == 0 && kind == CALL_REPORT) n->round_calls++;
}

/* Round r to every node that takes part: pgs PGs at floor. */
static void start_round(vol *v, uint32_t round, uint32_t pgs, uint64_t floor)
{
    v->round = round;
    v->phase = round == 1 ? PHASE_ROUND1 : PHASE_ROUND2;
    drop_reports(v);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        bool in = round == 1 ? n->state == NODE_CONNECTED : n->round_in && !n->round_failed;
        n->round_in = in && n->state == NODE_CONNECTED;
        n->round_failed = false;
        n->round_calls = 0;
        for (uint32_t p = 0; n->round_in && p < pgs; p++)
            ask_report(v, n, p, floor, CALL_REPORT);
    }
    MRD_INFO("vol_recover_round", "round=%u pgs=%u floor=%" PRIu64, round, pgs, floor);
    vol_recover_maybe_start(v); /* every ask may have failed already */
}

static uint32_t connected_count(const vol *v)
{
    uint32_t k = 0;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        k += v->nodes[s].state == NODE_CONNECTED;
    return k;
}

/* Moves the reports of nodes whose round failed out, and counts the good nodes. */
static uint32_t keep_good(vol *v)
{
    uint32_t kept = 0, good = 0;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        if (n->round_in && (n->round_failed || n->state != NODE_CONNECTED)) n->round_in = false;
        good += n->round_in;
    }
    for (uint32_t i = 0; i < v->n_reports; i++) {
        if (v->nodes[v->reports[i].seg].round_in)
            v->reports[kept++] = v->reports[i];
        else
            free((void *)v->reports[i].hdrs);
    }
    v->n_reports = kept;
    return good;
}

static void restart(vol *v, const char *why)
{
    MRD_WARN("vol_recover_retry", "reason=\"%s\"", why);
    drop_reports(v);
    v->phase = PHASE_CONNECTING;
    vol_recover_wait(v, VOL_BACKOFF_MS_MAX);
}

static uint32_t filter_pgs(vol *v, uint32_t pg_count)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < v->n_reports; i++) {
        quorum_report *r = &v->reports[i];
        if (r->epoch > v->epoch_seen) v->epoch_seen = r->epoch;
        if (r->highest > v->highest_seen) v->highest_seen = r->highest;
        if (r->pg < pg_count)
            v->reports[kept++] = *r;
        else
            free((void *)r->hdrs);
    }
    v->n_reports = kept;
    return kept;
}

static void round_one_done(vol *v)
{
    uint32_t good = keep_good(v);
    if (good < QUORUM_READ) {
        restart(v, "fewer than 3 nodes answered every report of round one");
        return;
    }
    uint32_t pgs = vol_recover_pg_count(v->reports, v->n_reports, v->cfg.pg_count_min);
    filter_pgs(v, pgs);
    /* PGs empty on all six leave the floor to the others (round two reads less) */
    vol_recover_empty_pgs(v->reports, v->n_reports, pgs, v->pg_empty);
    mrd_msg msg = {{0}};
    int rc = vol_recover_mask_empty(v->reports, v->n_reports, v->pg_empty, QUORUM_LSN_MAX);
    if (rc == 0) rc = quorum_recover_floor(pgs, v->reports, v->n_reports, &v->floor, &msg);
    if (rc != 0) {
        restart(v, msg.text);
        return;
    }
    if (v->floor == QUORUM_LSN_MAX) v->floor = 0; /* every PG is empty */
    v->info.pg_count = pgs;
    start_round(v, 2, pgs, v->floor);
}

static void begin_writer(vol *v);

static void round_two_done(vol *v)
{
    uint32_t good = keep_good(v);
    filter_pgs(v, v->info.pg_count);
    mrd_msg msg = {{0}};
    if (vol_recover_mask_empty(v->reports, v->n_reports, v->pg_empty, v->floor) != 0) {
        restart(v, "records appeared in a PG that was empty everywhere: is a writer running?");
        return;
    }
    int rc = good < QUORUM_READ ? MRD_EBUSY
                                : quorum_recover(v->info.pg_count, v->floor, v->reports,
                                                 v->n_reports, &v->rec, &msg);
    if (rc == MRD_EBUSY) {
        restart(v, good < QUORUM_READ ? "fewer than 3 nodes answered round two" : msg.text);
        return;
    }
    if (rc != 0) {
        vol_fail(v, rc, "recovery: %s", msg.text);
        return;
    }
    if (v->rec.again && v->rec.vdl < v->floor) { /* the last complete transaction is lower */
        v->floor = v->rec.vdl;
        drop_reports(v);
        start_round(v, 2, v->info.pg_count, v->floor);
        return;
    }
    v->info.reporters = good;
    v->info.floor = v->floor;
    v->info.headers = 0;
    for (uint32_t i = 0; i < v->n_reports; i++)
        v->info.headers += v->reports[i].n_hdrs;
    drop_reports(v);
    begin_writer(v);
}

void vol_recover_maybe_start(vol *v)
{
    if (v->phase == PHASE_CONNECTING) {
        uint32_t k = connected_count(v);
        if (k == QUORUM_SEGMENTS || (v->wait_expired && k >= QUORUM_READ))
            start_round(v, 1, QUORUM_PGS_MAX, VOL_FLOOR_NONE);
        return;
    }
    if (v->phase != PHASE_ROUND1 && v->phase != PHASE_ROUND2) return;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        if (v->nodes[s].round_in && v->nodes[s].round_calls > 0) return;
    if (v->phase == PHASE_ROUND1)
        round_one_done(v);
    else
        round_two_done(v);
}

void vol_recover_on_report(vol_call *c, h2_call *call, int error)
{
    vol *v = c->v;
    vol_node *n = c->n;
    if (c->round != v->round || !n->round_in ||
        (v->phase != PHASE_ROUND1 && v->phase != PHASE_ROUND2))
        return;
    n->round_calls--;
    mrd_msg msg = {{0}};
    quorum_report r;
    int rc = error;
    if (rc == 0 && c->status != 200)
        rc = mrd_fail(&msg, MRD_EPROTO, "status %d: %.*s", c->status,
                      (int)(c->body.len < 200 ? c->body.len : 200),
                      c->body.data ? (const char *)c->body.data : "");
    if (rc == 0)
        rc = vol_report_decode(c->pg, n->seg, call_header, call, c->body.data, c->body.len,
                               QUORUM_RECOVER_HDRS_MAX, &r, &msg);
    if (rc == 0 && keep_report(v, &r) != 0) {
        free((void *)r.hdrs);
        rc = MRD_ENOMEM;
    }
    if (rc != 0) {
        if (!n->round_failed && error == 0)
            MRD_WARN("vol_report_failed", "node=%s pg=%u round=%u reason=\"%s\"", n->tn->id, c->pg,
                     c->round, msg.text);
        n->round_failed = true;
    }
    vol_recover_maybe_start(v);
}

/* ---- the new writer and its fence --------------------------------------------------------- */

static int init_writer(vol *v, mrd_msg *msg)
{
    qw_config qc = {.pg_count = v->info.pg_count,
                    .write_quorum = QUORUM_WRITE,
                    .inflight_max = v->cfg.inflight_max,
                    .retain_max = v->cfg.retain_max,
                    .waiters_max = v->cfg.waiters_max,
                    .resend_ms = VOL_RESEND_MS,
                    .epoch = v->info.epoch,
                    .recovered = &v->rec};
    int rc = qw_init(&v->w, &qc, msg);
    if (rc != 0) return rc;
    v->qw_live = true;
    uint32_t store_cap = v->cfg.inflight_max + v->cfg.retain_max + 1;
    rc = vol_store_init(&v->store, store_cap, msg);
    if (rc == 0) rc = vol_batcher_init(&v->batcher, v->info.pg_count, store_cap, msg);
    for (uint8_t s = 0; rc == 0 && s < QUORUM_SEGMENTS; s++) { /* no segment is fenced yet */
        qw_event ev = {.kind = QW_EV_DOWN, .link = {.pg = QUORUM_PG_ALL, .seg = s}};
        rc = vol_qw_step(v, &ev);
    }
    return rc;
}

static void begin_writer(vol *v)
{
    if (v->replica) return vol_replica_begin(v);
    uint64_t epoch = v->rec.epoch_max > v->epoch_seen ? v->rec.epoch_max : v->epoch_seen;
    uint64_t top = v->rec.vcl;
    if (v->rec.lost_max > top) top = v->rec.lost_max;
    if (v->highest_seen > top) top = v->highest_seen;
    v->info.epoch_found = epoch;
    v->info.epoch = epoch + 1 > v->cfg.epoch_min ? epoch + 1 : v->cfg.epoch_min;
    v->info.vcl = v->rec.vcl;
    v->info.vdl = v->rec.vdl;
    v->info.lost_max = v->rec.lost_max;
    v->info.first_lsn = top + 1;
    v->next_lsn = top + 1;
    mrd_msg msg = {{0}};
    int rc = init_writer(v, &msg);
    if (rc != 0) {
        vol_fail(v, rc, "volume: %s", msg.text);
        return;
    }
    MRD_INFO("vol_recovered",
             "epoch=%" PRIu64 " vcl=%" PRIu64 " vdl=%" PRIu64 " lost_max=%" PRIu64
             " pgs=%u reporters=%u first_lsn=%" PRIu64 " floor=%" PRIu64 " headers=%" PRIu64,
             v->info.epoch, v->info.vcl, v->info.vdl, v->info.lost_max, v->info.pg_count,
             v->info.reporters, v->info.first_lsn, v->info.floor, v->info.headers);
    v->phase = PHASE_FENCE;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        if (v->nodes[s].state == NODE_CONNECTED) vol_fence_node(&v->nodes[s]);
}

void vol_fence_node(vol_node *n)
{
    vol *v = n->v;
    char epoch[24], trunc[24];
    snprintf(epoch, sizeof(epoch), "%" PRIu64, v->info.epoch);
    snprintf(trunc, sizeof(trunc), "%" PRIu64, v->info.vcl);
    h2_header hdrs[] = {{"meridian-epoch", epoch}, {"meridian-truncate-lsn", trunc}};
    vol_call proto = {.kind = CALL_FENCE};
    n->state = NODE_FENCING;
    int rc = vol_call_start(n, &proto, "POST", "/v1/fence", hdrs, MRD_ARRAY_LEN(hdrs), NULL, 0);
    if (rc != 0) vol_node_drop(n, "cannot send the fence");
}

static void node_fenced(vol *v, vol_node *n)
{
    n->state = NODE_UP;
    n->failures = 0;
    v->fenced++;
    MRD_INFO("vol_node_fenced", "node=%s segment=%u epoch=%" PRIu64 " truncate=%" PRIu64, n->tn->id,
             n->seg, v->info.epoch, v->info.vcl);
    qw_event ev = {.kind = QW_EV_UP, .link = {.pg = QUORUM_PG_ALL, .seg = n->seg}};
    if (vol_qw_step(v, &ev) != 0) return;
    vol_scl_poll(v, n);
    if (v->phase == PHASE_FENCE && v->fenced >= QUORUM_WRITE) {
        v->phase = PHASE_READY;
        v->ready_reported = true;
        if (v->cbs.on_ready) v->cbs.on_ready(v, 0, "", v->ud);
    }
}

void vol_fence_on_answer(vol_call *c, h2_call *call, int error)
{
    vol *v = c->v;
    vol_node *n = c->n;
    if (error != 0 || n->state != NODE_FENCING) return; /* the disconnect handles it */
    char code[64];
    vol_answer a = vol_answer_classify(c->status, c->body.data, c->body.len, code, sizeof(code));
    if (a == VOL_ANS_OK) {
        node_fenced(v, n);
    } else if (a == VOL_ANS_STALE) {
        const char *e = h2_call_header(call, "meridian-epoch");
        vol_fail(v, MRD_ESTALE,
                 "node %s is at epoch %s, above this writer's %" PRIu64
                 ": another writer recovered the volume",
                 n->tn->id, e ? e : "?", v->info.epoch);
    } else {
        char why[MRD_MSG_MAX];
        snprintf(why, sizeof(why), "fence answered %d %s", c->status, code);
        vol_node_drop(n, why);
    }
}

/* ---- SCLs of a fenced node ----------------------------------------------------------------- */

void vol_scl_poll(vol *v, vol_node *n)
{
    n->scl_poll_ms = vol_now_ms(v);
    for (uint32_t p = 0; p < v->info.pg_count && n->calls < VOL_CALLS_PER_NODE_MAX; p++) {
        uint64_t last = qw_pg_last(&v->w, p);
        if (last > 0 && qw_scl(&v->w, p, n->seg) < last)
            ask_report(v, n, p, VOL_FLOOR_NONE, CALL_SCL);
    }
}

void vol_scl_on_answer(vol_call *c, h2_call *call, int error)
{
    vol *v = c->v;
    if (error != 0 || c->status != 200 || !v->qw_live || v->phase == PHASE_FAILED) return;
    quorum_report r;
    mrd_msg msg = {{0}};
    if (vol_report_decode(c->pg, c->n->seg, call_header, call, c->body.data, c->body.len, 0, &r,
                          &msg) != 0) {
        MRD_WARN("vol_scl_poll_failed", "node=%s pg=%u reason=\"%s\"", c->n->tn->id, c->pg,
                 msg.text);
        return;
    }
    free((void *)r.hdrs);
    if (r.epoch < v->info.epoch) return; /* not fenced yet: it reports an old chain */
    uint64_t last = qw_pg_last(&v->w, c->pg);
    qw_event ev = {
        .kind = QW_EV_ACK,
        .ack = {
            .pg = c->pg, .seg = c->n->seg, .epoch = r.epoch, .scl = r.scl < last ? r.scl : last}};
    vol_qw_step(v, &ev);
}
