/*
 * The storage-side segment chain: one segment of one PG. Records are held in
 * an array sorted by LSN; SCL is the end of the run of durable records, from
 * scl_base upwards, in which each record's back-link names the one before.
 * Because every record of the PG has exactly one successor, the record right
 * after SCL in LSN order either links to SCL (the chain grows) or it does not
 * (a gap: the records in (SCL, its back-link] are missing).
 *
 * Forgetting: records at or below min(upto, SCL) leave memory (FORGET) and
 * the base (cfg.scl_base) moves to the last of them. They were durable and
 * chained, so SCL still starts from a complete point; the base's LSN and the
 * last CPL at or below it stand in for them in reports; a copy of one that
 * arrives again is a duplicate; a peer asking for them is told to read the
 * log (SERVE_OLD).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/quorum.h"

static void emit(quorum_sink sink, const quorum_action *a)
{
    if (sink.fn) sink.fn(sink.ctx, a);
}

/* Index of the first held record with lsn >= lsn. */
static uint32_t lower_bound(const seg_chain *c, uint64_t lsn)
{
    uint32_t lo = 0, hi = c->n_recs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->recs[mid].rec.lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- fences --------------------------------------------------------------------------- */

static void fence_add(seg_chain *c, quorum_fence f)
{
    uint32_t i = 0;
    while (i < c->n_fences && c->fences[i].epoch < f.epoch)
        i++;
    if (i < c->n_fences && c->fences[i].epoch == f.epoch) {
        if (f.truncate_lsn < c->fences[i].truncate_lsn) c->fences[i].truncate_lsn = f.truncate_lsn;
        return;
    }
    if (c->n_fences == QUORUM_FENCES_MAX) {
        /* Merge the two oldest, keeping the stricter limit: records of the oldest
         * epochs may then be refused more often than needed, never accepted wrongly. */
        if (c->fences[0].truncate_lsn < c->fences[1].truncate_lsn)
            c->fences[1].truncate_lsn = c->fences[0].truncate_lsn;
        memmove(&c->fences[0], &c->fences[1], (c->n_fences - 1) * sizeof(c->fences[0]));
        c->n_fences--;
        if (i > 0) i--;
    }
    memmove(&c->fences[i + 1], &c->fences[i], (c->n_fences - i) * sizeof(c->fences[0]));
    c->fences[i] = f;
    c->n_fences++;
    if (f.epoch > c->epoch) c->epoch = f.epoch;
}

/* Highest LSN a record of this epoch may have and still be valid. */
static uint64_t fence_limit(const seg_chain *c, uint64_t epoch)
{
    uint64_t limit = QUORUM_LSN_MAX;
    for (uint32_t i = 0; i < c->n_fences; i++)
        if (c->fences[i].epoch > epoch && c->fences[i].truncate_lsn < limit)
            limit = c->fences[i].truncate_lsn;
    return limit;
}

static int check_record(const seg_chain *c, const quorum_rec *r)
{
    if (r->pg != c->cfg.pg || r->lsn == 0 || r->prev_lsn >= r->lsn || r->vol_prev_lsn >= r->lsn ||
        r->vol_prev_lsn < r->prev_lsn)
        return MRD_EINVAL;
    if (r->epoch > c->epoch) return MRD_ESTATE;
    if (r->lsn > fence_limit(c, r->epoch)) return MRD_ESTALE;
    return 0;
}

/* ---- life ----------------------------------------------------------------------------- */

int seg_chain_init(seg_chain *c, const seg_chain_config *cfg, mrd_msg *msg)
{
    memset(c, 0, sizeof(*c));
    if (cfg->seg >= QUORUM_SEGMENTS || cfg->held_max == 0 || cfg->n_fences > QUORUM_FENCES_MAX)
        return mrd_fail(msg, MRD_EINVAL, "segment chain: bad configuration");
    c->cfg = *cfg;
    c->cfg.fences = NULL;
    c->cfg.n_fences = 0;
    c->epoch = cfg->epoch;
    for (uint32_t i = 0; i < cfg->n_fences; i++)
        fence_add(c, cfg->fences[i]);
    c->scl = cfg->scl_base;
    c->recs = calloc(cfg->held_max, sizeof(*c->recs));
    c->pending = calloc(cfg->held_max, sizeof(*c->pending));
    c->synced = calloc(cfg->held_max, sizeof(*c->synced));
    if (!c->recs || !c->pending || !c->synced) {
        seg_chain_close(c);
        return mrd_fail(msg, MRD_ENOMEM, "segment chain: out of memory");
    }
    return 0;
}

void seg_chain_close(seg_chain *c)
{
    free(c->recs);
    free(c->pending);
    free(c->synced);
    c->recs = NULL;
    c->pending = NULL;
    c->synced = NULL;
}

/* ---- SCL ------------------------------------------------------------------------------ */

static void advance_scl(seg_chain *c, quorum_sink sink)
{
    uint64_t before = c->scl;
    while (c->scl_idx < c->n_recs) {
        const seg_chain_entry *e = &c->recs[c->scl_idx];
        if (!e->durable || e->rec.prev_lsn != c->scl) break;
        c->scl = e->rec.lsn;
        c->scl_idx++;
    }
    assert(c->scl_idx == lower_bound(c, c->scl + 1));
    if (c->scl != before) {
        quorum_action a = {
            .kind = QUORUM_ACT_SCL, .pg = c->cfg.pg, .seg = c->cfg.seg, .lsn = c->scl};
        emit(sink, &a);
    }
}

static void emit_ack(seg_chain *c, const uint64_t *lsns, uint32_t n, quorum_sink sink)
{
    quorum_action a = {.kind = QUORUM_ACT_ACK,
                       .pg = c->cfg.pg,
                       .seg = c->cfg.seg,
                       .lsn = c->scl,
                       .epoch = c->epoch,
                       .lsns = lsns,
                       .n_lsns = n};
    c->scl_acked = c->scl;
    emit(sink, &a);
}

/* ---- events --------------------------------------------------------------------------- */

static int on_record(seg_chain *c, const quorum_rec *r, bool loaded, quorum_sink sink)
{
    int rc = check_record(c, r);
    if (rc == MRD_ESTALE) c->stats.refused_stale++;
    if (rc) return rc;
    uint32_t i = lower_bound(c, r->lsn);
    if (r->lsn <= c->cfg.scl_base || (i < c->n_recs && c->recs[i].rec.lsn == r->lsn)) {
        c->stats.dups++;
        /* The writer re-sends when an ack was lost: say again that it is durable (every
         * record at or below the base is). */
        if (!loaded && (r->lsn <= c->cfg.scl_base || c->recs[i].durable))
            emit_ack(c, &r->lsn, 1, sink);
        return 0;
    }
    if (r->lsn < c->scl) return MRD_EINVAL; /* every record below SCL is held: not this chain */
    if (c->n_recs == c->cfg.held_max) return MRD_EBUSY;
    memmove(&c->recs[i + 1], &c->recs[i], (c->n_recs - i) * sizeof(c->recs[0]));
    c->n_recs++;
    c->recs[i] = (seg_chain_entry){.rec = *r, .durable = loaded};
    if (loaded) {
        advance_scl(c, sink);
        return 0;
    }
    c->recs[i].seq = ++c->next_seq;
    c->pending[c->n_pending++] = (seg_chain_pending){.lsn = r->lsn, .seq = c->next_seq};
    quorum_action a = {.kind = QUORUM_ACT_PERSIST,
                       .pg = c->cfg.pg,
                       .seg = c->cfg.seg,
                       .id = c->next_seq,
                       .rec = &c->recs[i].rec};
    emit(sink, &a);
    return 0;
}

static void on_synced(seg_chain *c, uint64_t seq, quorum_sink sink)
{
    uint32_t n = 0, done = 0;
    while (done < c->n_pending && c->pending[done].seq <= seq) {
        uint32_t i = lower_bound(c, c->pending[done].lsn);
        assert(i < c->n_recs && c->recs[i].rec.lsn == c->pending[done].lsn);
        c->recs[i].durable = true;
        c->synced[n++] = c->pending[done].lsn;
        done++;
    }
    if (done == 0) return;
    memmove(c->pending, c->pending + done, (c->n_pending - done) * sizeof(c->pending[0]));
    c->n_pending -= done;
    advance_scl(c, sink);
    for (uint32_t k = 0; k < n; k += QUORUM_ACK_LSNS_MAX) {
        uint32_t len = n - k < QUORUM_ACK_LSNS_MAX ? n - k : QUORUM_ACK_LSNS_MAX;
        emit_ack(c, c->synced + k, len, sink);
    }
}

static void on_gap_req(seg_chain *c, const sc_event *ev, quorum_sink sink)
{
    if (ev->gap.seg >= QUORUM_SEGMENTS || ev->gap.after >= ev->gap.upto) return;
    if (ev->gap.after < c->cfg.scl_base) { /* forgotten: the log answers, up to the base */
        uint64_t upto = ev->gap.upto < c->cfg.scl_base ? ev->gap.upto : c->cfg.scl_base;
        quorum_action a = {.kind = QUORUM_ACT_SERVE_OLD,
                           .pg = c->cfg.pg,
                           .seg = ev->gap.seg,
                           .after = ev->gap.after,
                           .lsn = upto};
        emit(sink, &a);
        c->stats.served_old++;
        return;
    }
    uint32_t served = 0;
    for (uint32_t i = lower_bound(c, ev->gap.after + 1); i < c->n_recs; i++) {
        if (c->recs[i].rec.lsn > ev->gap.upto || served == QUORUM_SERVE_MAX) break;
        quorum_action a = {
            .kind = QUORUM_ACT_SERVE, .pg = c->cfg.pg, .seg = ev->gap.seg, .rec = &c->recs[i].rec};
        emit(sink, &a);
        served++;
    }
    c->stats.served += served;
}

/*
 * Drops the held records at or below min(upto, SCL). All of them are durable
 * (SCL counts only durable records) and none is waiting for a fdatasync.
 */
static void on_forget(seg_chain *c, uint64_t upto)
{
    uint64_t limit = upto < c->scl ? upto : c->scl;
    uint32_t n = lower_bound(c, limit + 1);
    if (n == 0) return;
    assert(n <= c->scl_idx);
    for (uint32_t i = 0; i < n; i++) {
        assert(c->recs[i].durable);
        if (c->recs[i].rec.is_cpl) c->cfg.base_cpl = c->recs[i].rec.lsn;
    }
    c->cfg.scl_base = c->recs[n - 1].rec.lsn;
    memmove(c->recs, c->recs + n, (c->n_recs - n) * sizeof(c->recs[0]));
    c->n_recs -= n;
    c->scl_idx -= n;
    c->stats.forgotten += n;
}

/* Drops held records that the fences void; SCL is walked again from the base. */
static void drop_voided(seg_chain *c)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->n_recs; i++) {
        if (c->recs[i].rec.lsn > fence_limit(c, c->recs[i].rec.epoch)) {
            c->stats.discarded++;
            continue;
        }
        c->recs[kept++] = c->recs[i];
    }
    c->n_recs = kept;
    uint32_t pkept = 0;
    for (uint32_t i = 0; i < c->n_pending; i++) {
        uint32_t k = lower_bound(c, c->pending[i].lsn);
        if (k < c->n_recs && c->recs[k].rec.lsn == c->pending[i].lsn)
            c->pending[pkept++] = c->pending[i];
    }
    c->n_pending = pkept;
    c->scl = c->cfg.scl_base;
    c->scl_idx = 0;
}

static void on_fence(seg_chain *c, quorum_fence f, quorum_sink sink)
{
    uint64_t epoch_before = c->epoch, scl_before = c->scl;
    fence_add(c, f);
    quorum_action a = {.kind = QUORUM_ACT_FENCE,
                       .pg = c->cfg.pg,
                       .seg = c->cfg.seg,
                       .epoch = f.epoch,
                       .lsn = f.truncate_lsn};
    emit(sink, &a);
    drop_voided(c);
    advance_scl(c, (quorum_sink){0});
    if (c->scl != scl_before) {
        quorum_action s = {
            .kind = QUORUM_ACT_SCL, .pg = c->cfg.pg, .seg = c->cfg.seg, .lsn = c->scl};
        emit(sink, &s);
    }
    if (c->epoch != epoch_before) c->scl_acked = 0; /* announce SCL to the new writer */
}

/*
 * Announces a new SCL at once and the same SCL again every gap_retry_ms (acks
 * get lost, and a recovered writer learns SCLs only from acks); asks for the
 * records under each gap above SCL, then for anything above the top.
 */
static void on_tick(seg_chain *c, uint64_t now_ms, quorum_sink sink)
{
    bool due = c->gap_last_ms == 0 || now_ms >= c->gap_last_ms + c->cfg.gap_retry_ms;
    if (c->scl > c->scl_acked || (due && c->scl > 0)) emit_ack(c, NULL, 0, sink);
    if (!due) return;
    c->gap_last_ms = now_ms ? now_ms : 1;
    uint64_t known = c->scl;
    uint32_t asked = 0;
    for (uint32_t i = c->scl_idx; i < c->n_recs && asked < QUORUM_GAPS_PER_TICK_MAX; i++) {
        const quorum_rec *r = &c->recs[i].rec;
        if (r->prev_lsn > known) {
            quorum_action a = {.kind = QUORUM_ACT_GAP,
                               .pg = c->cfg.pg,
                               .seg = c->cfg.seg,
                               .after = known,
                               .lsn = r->prev_lsn};
            emit(sink, &a);
            asked++;
        }
        known = r->lsn;
    }
    c->stats.gaps_asked += asked;
    quorum_action tail = {.kind = QUORUM_ACT_GAP,
                          .pg = c->cfg.pg,
                          .seg = c->cfg.seg,
                          .after = known,
                          .lsn = QUORUM_LSN_MAX};
    emit(sink, &tail);
}

int seg_chain_step(seg_chain *c, const sc_event *ev, quorum_sink sink)
{
    int rc = 0;
    switch (ev->kind) {
    case SC_EV_RECORD:
        rc = on_record(c, ev->rec, false, sink);
        break;
    case SC_EV_LOAD:
        rc = on_record(c, ev->rec, true, sink);
        break;
    case SC_EV_SYNCED:
        on_synced(c, ev->seq, sink);
        break;
    case SC_EV_GAP_REQ:
        on_gap_req(c, ev, sink);
        break;
    case SC_EV_FENCE:
        on_fence(c, ev->fence, sink);
        break;
    case SC_EV_TICK:
        on_tick(c, ev->now_ms, sink);
        break;
    case SC_EV_FORGET:
        on_forget(c, ev->upto);
        break;
    default:
        rc = MRD_EINVAL;
    }
    assert(c->scl >= c->cfg.scl_base && c->scl_idx <= c->n_recs);
    assert(c->scl_idx == 0 || c->recs[c->scl_idx - 1].rec.lsn == c->scl);
    return rc;
}

/* ---- queries -------------------------------------------------------------------------- */

uint64_t seg_chain_scl(const seg_chain *c)
{
    return c->scl;
}

uint64_t seg_chain_epoch(const seg_chain *c)
{
    return c->epoch;
}

uint64_t seg_chain_base(const seg_chain *c)
{
    return c->cfg.scl_base;
}

uint64_t seg_chain_base_cpl(const seg_chain *c)
{
    return c->cfg.base_cpl;
}

bool seg_chain_has_durable(const seg_chain *c, uint64_t lsn)
{
    uint32_t i = lower_bound(c, lsn);
    return i < c->n_recs && c->recs[i].rec.lsn == lsn && c->recs[i].durable;
}

bool seg_chain_holds(const seg_chain *c, uint64_t lsn)
{
    uint32_t i = lower_bound(c, lsn);
    return i < c->n_recs && c->recs[i].rec.lsn == lsn;
}

int seg_chain_report(const seg_chain *c, uint64_t floor, quorum_report *out, quorum_hdr *hdrs,
                     uint32_t hdrs_max)
{
    if (floor < c->cfg.scl_base) return MRD_ESTATE; /* records below were forgotten */
    *out = (quorum_report){.pg = c->cfg.pg,
                           .seg = c->cfg.seg,
                           .epoch = c->epoch,
                           .scl = c->scl,
                           .highest = c->cfg.scl_base,
                           .floor_head = c->cfg.scl_base,
                           .floor_cpl = c->cfg.base_cpl,
                           .hdrs = hdrs};
    for (uint32_t i = 0; i < c->n_recs; i++) {
        const quorum_rec *r = &c->recs[i].rec;
        if (!c->recs[i].durable) continue;
        out->highest = r->lsn;
        if (r->lsn <= floor) {
            out->floor_head = r->lsn;
            if (r->is_cpl) out->floor_cpl = r->lsn;
            continue;
        }
        if (out->n_hdrs == hdrs_max) return MRD_ETOOBIG;
        hdrs[out->n_hdrs++] = (quorum_hdr){.lsn = r->lsn,
                                           .prev_lsn = r->prev_lsn,
                                           .vol_prev_lsn = r->vol_prev_lsn,
                                           .epoch = r->epoch,
                                           .is_cpl = r->is_cpl};
    }
    return 0;
}
