/*
 * The writer-side quorum tracker: per-record, per-segment durability, VCL,
 * VDL, waiters and re-sends. Records live in a ring in LSN order; the ring
 * entries from head up to below_vcl are at or below VCL and stay only to be
 * re-sent to segments that lag (at most retain_max of them).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/quorum.h"

#define QW_ALL_SEGMENTS ((uint8_t)((1u << QUORUM_SEGMENTS) - 1))
#define QW_PG_NONE UINT32_MAX /* a ring entry that only marks the recovered VDL */

struct qw_entry {
    quorum_rec rec;
    uint64_t sent_ms;
    uint8_t acked; /* segments that hold it durably */
    bool barrier;  /* a recovered PG head: counts segments by SCL only, never sent */
};

static void emit(quorum_sink sink, const quorum_action *a)
{
    if (sink.fn) sink.fn(sink.ctx, a);
}

static qw_entry *entry_at(const qw *w, uint32_t i)
{
    assert(i < w->ring_count);
    return &w->ring[(w->ring_head + i) % w->ring_cap];
}

static unsigned popcount8(uint8_t v)
{
    unsigned n = 0;
    for (; v; v &= (uint8_t)(v - 1))
        n++;
    return n;
}

static bool entry_durable(const qw *w, const qw_entry *e)
{
    return e->rec.pg == QW_PG_NONE || popcount8(e->acked) >= w->cfg.write_quorum;
}

/* Index of the first ring entry with lsn >= lsn (ring_count if none). */
static uint32_t ring_lower_bound(const qw *w, uint64_t lsn)
{
    uint32_t lo = 0, hi = w->ring_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (entry_at(w, mid)->rec.lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void ring_push(qw *w, const quorum_rec *rec, bool barrier, uint64_t now_ms)
{
    assert(w->ring_count < w->ring_cap);
    assert(w->ring_count == 0 || entry_at(w, w->ring_count - 1)->rec.lsn < rec->lsn);
    qw_entry *e = &w->ring[(w->ring_head + w->ring_count) % w->ring_cap];
    w->ring_count++;
    memset(e, 0, sizeof(*e));
    e->rec = *rec;
    e->barrier = barrier;
    e->sent_ms = now_ms;
}

static void send_to(qw *w, qw_entry *e, uint8_t seg, quorum_sink sink)
{
    quorum_action a = {.kind = QUORUM_ACT_SEND, .pg = e->rec.pg, .seg = seg, .rec = &e->rec};
    w->stats.sends++;
    emit(sink, &a);
}

static int add_barriers(qw *w, const quorum_recovery *r, mrd_msg *msg)
{
    if (r->pg_count != w->cfg.pg_count || r->vdl > r->vcl)
        return mrd_fail(msg, MRD_EINVAL, "recovery does not match this volume");
    bool vdl_marked = r->vdl == 0;
    uint64_t prev = 0;
    for (;;) { /* push PG heads in ascending LSN order (they are distinct) */
        uint64_t best = QUORUM_LSN_MAX;
        uint32_t best_pg = 0;
        for (uint32_t p = 0; p < r->pg_count; p++) {
            if (r->pg_head[p] > prev && r->pg_head[p] < best) best = r->pg_head[p], best_pg = p;
        }
        if (!vdl_marked && r->vdl > prev && r->vdl < best) {
            quorum_rec mark = {.lsn = r->vdl, .pg = QW_PG_NONE, .is_cpl = true};
            ring_push(w, &mark, true, 0);
            vdl_marked = true;
            prev = r->vdl;
            continue;
        }
        if (best == QUORUM_LSN_MAX) break;
        if (best > r->vcl) return mrd_fail(msg, MRD_EINVAL, "recovered PG head above VCL");
        quorum_rec head = {.lsn = best, .pg = best_pg, .is_cpl = best == r->vdl};
        vdl_marked = vdl_marked || head.is_cpl;
        ring_push(w, &head, true, 0);
        w->pg_last[best_pg] = best;
        prev = best;
    }
    w->last_lsn = r->vcl;
    return 0;
}

int qw_init(qw *w, const qw_config *cfg, mrd_msg *msg)
{
    memset(w, 0, sizeof(*w));
    if (cfg->pg_count == 0 || cfg->pg_count > QUORUM_PGS_MAX)
        return mrd_fail(msg, MRD_EINVAL, "pg_count %u outside 1..%u", cfg->pg_count,
                        QUORUM_PGS_MAX);
    if (cfg->write_quorum == 0 || cfg->write_quorum > QUORUM_SEGMENTS || cfg->inflight_max == 0 ||
        cfg->waiters_max == 0 || cfg->epoch == 0)
        return mrd_fail(msg, MRD_EINVAL, "quorum writer limits must be positive");
    w->cfg = *cfg;
    w->cfg.recovered = NULL;
    w->ring_cap = cfg->inflight_max + cfg->retain_max + cfg->pg_count + 1;
    w->ring = calloc(w->ring_cap, sizeof(*w->ring));
    w->waiters = calloc(cfg->waiters_max, sizeof(*w->waiters));
    if (!w->ring || !w->waiters) {
        qw_close(w);
        return mrd_fail(msg, MRD_ENOMEM, "quorum writer: out of memory");
    }
    for (uint32_t p = 0; p < cfg->pg_count; p++)
        for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
            w->up[p][s] = true;
    int rc = cfg->recovered ? add_barriers(w, cfg->recovered, msg) : 0;
    if (rc) qw_close(w);
    return rc;
}

void qw_close(qw *w)
{
    free(w->ring);
    free(w->waiters);
    w->ring = NULL;
    w->waiters = NULL;
}

/* ---- advancing VCL and VDL ------------------------------------------------------------ */

static void fire_waiters(qw *w, quorum_sink sink)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < w->n_waiters; i++) {
        qw_waiter wt = w->waiters[i];
        if (wt.lsn <= w->vdl) {
            quorum_action a = {.kind = QUORUM_ACT_WAITER, .id = wt.id, .lsn = wt.lsn};
            emit(sink, &a);
        } else {
            w->waiters[kept++] = wt;
        }
    }
    w->n_waiters = kept;
}

/* Drops ring entries below VCL that every segment has, or beyond retain_max. */
static void free_durable(qw *w)
{
    while (w->below_vcl > 0) {
        qw_entry *e = entry_at(w, 0);
        bool everywhere = e->acked == QW_ALL_SEGMENTS;
        if (!everywhere && !e->barrier && w->below_vcl <= w->cfg.retain_max) break;
        if (!everywhere && !e->barrier) w->stats.freed_lagging++;
        w->ring_head = (w->ring_head + 1) % w->ring_cap;
        w->ring_count--;
        w->below_vcl--;
    }
}

/*
 * The barriers of a recovered writer (one per PG head, ahead of any new
 * record) are passed together or not at all: a PG's head at quorum says
 * nothing of another PG's records below it, so VCL may move only once every
 * PG's head is at quorum.
 */
static bool barriers_durable(const qw *w)
{
    for (uint32_t k = w->below_vcl; k < w->ring_count; k++) {
        const qw_entry *e = entry_at(w, k);
        if (!e->barrier) break;
        if (!entry_durable(w, e)) return false;
    }
    return true;
}

static void advance(qw *w, quorum_sink sink)
{
    uint64_t vcl = w->vcl, vdl = w->vdl;
    if (w->below_vcl < w->ring_count && entry_at(w, w->below_vcl)->barrier && !barriers_durable(w))
        return;
    while (w->below_vcl < w->ring_count) {
        qw_entry *e = entry_at(w, w->below_vcl);
        if (!entry_durable(w, e)) break;
        assert(e->rec.lsn > vcl);
        vcl = e->rec.lsn;
        if (e->rec.is_cpl) vdl = e->rec.lsn;
        w->below_vcl++;
    }
    assert(vdl <= vcl && vcl >= w->vcl && vdl >= w->vdl);
    if (vcl != w->vcl) {
        w->vcl = vcl;
        quorum_action a = {.kind = QUORUM_ACT_VCL, .lsn = vcl};
        emit(sink, &a);
    }
    if (vdl != w->vdl) {
        w->vdl = vdl;
        quorum_action a = {.kind = QUORUM_ACT_VDL, .lsn = vdl};
        emit(sink, &a);
        fire_waiters(w, sink);
    }
    free_durable(w);
}

/* ---- events --------------------------------------------------------------------------- */

static int on_submit(qw *w, const quorum_rec *rec, uint64_t now_ms, quorum_sink sink)
{
    if (w->fenced) return MRD_ESTALE;
    if (rec->pg >= w->cfg.pg_count || rec->lsn <= w->last_lsn || rec->epoch != w->cfg.epoch ||
        rec->vol_prev_lsn != w->last_lsn || rec->prev_lsn != w->pg_last[rec->pg])
        return MRD_EINVAL;
    if (w->ring_count - w->below_vcl >= w->cfg.inflight_max) {
        w->stats.busy++;
        return MRD_EBUSY;
    }
    ring_push(w, rec, false, now_ms);
    w->last_lsn = rec->lsn;
    w->pg_last[rec->pg] = rec->lsn;
    w->stats.submitted++;
    qw_entry *e = entry_at(w, w->ring_count - 1);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        if (w->up[rec->pg][s]) send_to(w, e, s, sink);
    return 0;
}

static int check_ack(const qw *w, const qw_event *ev)
{
    if (ev->ack.pg >= w->cfg.pg_count || ev->ack.seg >= QUORUM_SEGMENTS) return MRD_EPROTO;
    if (ev->ack.epoch != w->cfg.epoch) return MRD_ESTALE;
    if (ev->ack.scl > w->pg_last[ev->ack.pg]) return MRD_EPROTO;
    for (uint32_t i = 0; i < ev->ack.n_lsns; i++) {
        uint64_t lsn = ev->ack.lsns[i];
        if (lsn == 0 || lsn > w->last_lsn) return MRD_EPROTO;
        uint32_t k = ring_lower_bound(w, lsn);
        if (k < w->ring_count) {
            const qw_entry *e = entry_at(w, k);
            if (e->rec.lsn == lsn && !e->barrier && e->rec.pg != ev->ack.pg) return MRD_EPROTO;
        }
    }
    return 0;
}

static int on_ack(qw *w, const qw_event *ev, quorum_sink sink)
{
    int rc = check_ack(w, ev);
    if (rc == MRD_ESTALE) {
        w->stats.acks_stale++;
        if (ev->ack.epoch > w->cfg.epoch) w->fenced = true;
    }
    if (rc) return rc;
    uint32_t pg = ev->ack.pg;
    uint8_t bit = (uint8_t)(1u << ev->ack.seg);
    for (uint32_t i = 0; i < ev->ack.n_lsns; i++) {
        uint32_t k = ring_lower_bound(w, ev->ack.lsns[i]);
        if (k == w->ring_count) continue; /* freed already */
        qw_entry *e = entry_at(w, k);
        if (e->rec.lsn == ev->ack.lsns[i] && !e->barrier) e->acked |= bit;
    }
    uint64_t *scl = &w->scl[pg][ev->ack.seg];
    if (ev->ack.scl > *scl) { /* an older ack may arrive late: SCL only moves up */
        for (uint32_t k = ring_lower_bound(w, *scl + 1); k < w->ring_count; k++) {
            qw_entry *e = entry_at(w, k);
            if (e->rec.lsn > ev->ack.scl) break;
            if (e->rec.pg == pg) e->acked |= bit;
        }
        *scl = ev->ack.scl;
    }
    advance(w, sink);
    return 0;
}

/* Sends entry k to every connected segment of its PG that lacks it. */
static void resend_entry(qw *w, qw_entry *e, uint8_t only_seg, uint64_t now_ms, quorum_sink sink)
{
    if (e->barrier) return;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        if ((only_seg != QUORUM_SEGMENTS && s != only_seg) || !w->up[e->rec.pg][s]) continue;
        if (e->acked & (1u << s)) continue;
        w->stats.resends++;
        send_to(w, e, s, sink);
    }
    e->sent_ms = now_ms;
}

static int on_link(qw *w, const qw_event *ev, bool up, quorum_sink sink)
{
    uint32_t pg = ev->link.pg;
    if (ev->link.seg >= QUORUM_SEGMENTS || (pg != QUORUM_PG_ALL && pg >= w->cfg.pg_count))
        return MRD_EINVAL;
    for (uint32_t p = 0; p < w->cfg.pg_count; p++)
        if (pg == QUORUM_PG_ALL || p == pg) w->up[p][ev->link.seg] = up;
    if (!up) return 0;
    for (uint32_t k = 0; k < w->ring_count; k++) {
        qw_entry *e = entry_at(w, k);
        if (pg == QUORUM_PG_ALL || e->rec.pg == pg)
            resend_entry(w, e, ev->link.seg, e->sent_ms, sink);
    }
    return 0;
}

static void on_tick(qw *w, uint64_t now_ms, quorum_sink sink)
{
    for (uint32_t k = 0; k < w->ring_count; k++) {
        qw_entry *e = entry_at(w, k);
        if (e->acked != QW_ALL_SEGMENTS && now_ms >= e->sent_ms + w->cfg.resend_ms)
            resend_entry(w, e, QUORUM_SEGMENTS, now_ms, sink);
    }
}

static int on_wait(qw *w, uint64_t id, uint64_t lsn, quorum_sink sink)
{
    if (lsn <= w->vdl) {
        quorum_action a = {.kind = QUORUM_ACT_WAITER, .id = id, .lsn = lsn};
        emit(sink, &a);
        return 0;
    }
    if (w->n_waiters == w->cfg.waiters_max) return MRD_EBUSY;
    w->waiters[w->n_waiters++] = (qw_waiter){.id = id, .lsn = lsn};
    return 0;
}

int qw_step(qw *w, const qw_event *ev, quorum_sink sink)
{
    int rc = 0;
    switch (ev->kind) {
    case QW_EV_SUBMIT:
        rc = on_submit(w, &ev->rec, ev->now_ms, sink);
        break;
    case QW_EV_ACK:
        rc = on_ack(w, ev, sink);
        break;
    case QW_EV_DOWN:
        rc = on_link(w, ev, false, sink);
        break;
    case QW_EV_UP:
        rc = on_link(w, ev, true, sink);
        break;
    case QW_EV_TICK:
        on_tick(w, ev->now_ms, sink);
        break;
    case QW_EV_WAIT:
        rc = on_wait(w, ev->wait.id, ev->wait.lsn, sink);
        break;
    default:
        rc = MRD_EINVAL;
    }
    assert(w->vdl <= w->vcl && w->vcl <= w->last_lsn);
    assert(w->ring_count <= w->ring_cap && w->below_vcl <= w->ring_count);
    return rc;
}

/* ---- queries -------------------------------------------------------------------------- */

uint64_t qw_vcl(const qw *w)
{
    return w->vcl;
}

uint64_t qw_vdl(const qw *w)
{
    return w->vdl;
}

uint64_t qw_last_lsn(const qw *w)
{
    return w->last_lsn;
}

uint64_t qw_pg_last(const qw *w, uint32_t pg)
{
    return pg < w->cfg.pg_count ? w->pg_last[pg] : 0;
}

uint64_t qw_scl(const qw *w, uint32_t pg, uint8_t seg)
{
    return pg < w->cfg.pg_count && seg < QUORUM_SEGMENTS ? w->scl[pg][seg] : 0;
}

uint32_t qw_inflight(const qw *w)
{
    return w->ring_count - w->below_vcl;
}

/* The PG's last record at or below read_point, as far as the tracker can tell. */
static uint64_t pg_target(const qw *w, uint32_t pg, uint64_t read_point)
{
    if (w->pg_last[pg] <= read_point) return w->pg_last[pg];
    for (uint32_t k = ring_lower_bound(w, read_point + 1); k < w->ring_count; k++) {
        const qw_entry *e = entry_at(w, k);
        if (e->rec.pg != pg) continue;
        /* its back-link is the PG's record before it, unless older ones were freed */
        return !e->barrier && e->rec.prev_lsn <= read_point ? e->rec.prev_lsn : read_point;
    }
    return read_point;
}

int qw_read_segment(const qw *w, uint32_t pg, uint64_t read_point, uint8_t *seg)
{
    if (pg >= w->cfg.pg_count) return MRD_EINVAL;
    uint64_t target = pg_target(w, pg, read_point);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        if (w->up[pg][s] && w->scl[pg][s] >= target) {
            *seg = s;
            return 0;
        }
    }
    return MRD_ENOTFOUND;
}

uint64_t qw_read_need(const qw *w, uint32_t pg, uint64_t read_point)
{
    return pg < w->cfg.pg_count ? pg_target(w, pg, read_point) : read_point;
}
