/*
 * One protection group's segment on a storage node, without I/O: the
 * seg_chain (which decides what is held, durable, complete and void), and
 * beside it the record index the chain does not keep — page numbers, log
 * keys and, above the materialized LSN, the encoded records themselves.
 *
 * Invariants (asserted):
 *  - recs holds exactly the LSNs the chain holds, ascending;
 *  - a record above the materialized LSN has its payload in memory;
 *  - pending lists, in the chain's persist order, the log key each persist
 *    went to; keys increase with the sequence, so "every key <= K is
 *    durable" is "every persist up to the last such entry is durable".
 */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/storage.h"

static void stp_sink(void *ctx, const quorum_action *a)
{
    stp *p = ctx;
    switch (a->kind) {
    case QUORUM_ACT_PERSIST:
        p->step_persist_seq = a->id;
        break;
    case QUORUM_ACT_GAP:
        if (p->step_gaps_n < p->step_gaps_max)
            p->step_gaps[p->step_gaps_n++] = (stp_gap){.after = a->after, .upto = a->lsn};
        break;
    case QUORUM_ACT_SERVE_OLD:
        p->step_old = (stp_gap){.after = a->after, .upto = a->lsn};
        break;
    case QUORUM_ACT_SERVE: {
        const stp_rec *r = stp_find(p, a->rec->lsn);
        assert(r != NULL);
        if (r->key <= p->key_durable && p->step_serve_n < p->step_serve_max)
            p->step_serve[p->step_serve_n++] = r;
        break;
    }
    default: /* SCL, ACK, FENCE: the glue reads SCL back and acks per request */
        break;
    }
}

static quorum_sink stp_chain_sink(stp *p)
{
    return (quorum_sink){.fn = stp_sink, .ctx = p};
}

/* Index of the first record with lsn >= lsn. */
static uint32_t stp_lower_bound(const stp *p, uint64_t lsn)
{
    uint32_t lo = 0, hi = p->n_recs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->recs[mid].lsn < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int stp_init(stp *p, const stp_config *cfg, mrd_msg *msg)
{
    memset(p, 0, sizeof(*p));
    if (cfg->base_cpl > cfg->base || cfg->base > cfg->materialized)
        return mrd_fail(msg, MRD_EINVAL, "pg %" PRIu32 ": forget point above the materialized LSN",
                        cfg->pg);
    seg_chain_config cc = {.pg = cfg->pg,
                           .seg = cfg->seg,
                           .held_max = cfg->held_max,
                           .gap_retry_ms = cfg->gap_retry_ms,
                           .scl_base = cfg->base,
                           .base_cpl = cfg->base_cpl,
                           .epoch = cfg->epoch,
                           .fences = cfg->fences,
                           .n_fences = cfg->n_fences};
    int rc = seg_chain_init(&p->chain, &cc, msg);
    if (rc != 0) return rc;
    p->pg = cfg->pg;
    p->seg = cfg->seg;
    p->held_max = cfg->held_max;
    p->materialized = cfg->materialized;
    p->key_durable = cfg->key_durable;
    p->lsn_durable = cfg->base;
    if (cfg->base > 0) /* forgotten before the restart, somewhere below the key start */
        p->old[p->n_old++] = (stp_old){
            .lsn_after = 0, .lsn_upto = cfg->base, .key_min = 1, .key_max = cfg->base_key_max};
    return 0;
}

void stp_close(stp *p)
{
    for (uint32_t i = 0; i < p->n_recs; i++)
        free(p->recs[i].payload);
    free(p->recs);
    free(p->pending);
    seg_chain_close(&p->chain);
    memset(p, 0, sizeof(*p));
}

static int stp_grow(void **arr, uint32_t *cap, uint32_t need, uint32_t limit, size_t size)
{
    if (need <= *cap) return 0;
    if (need > limit) return MRD_EBUSY;
    uint32_t cap2 = *cap ? *cap : (limit < 64 ? limit : 64);
    while (cap2 < need)
        cap2 = cap2 > limit / 2 ? limit : cap2 * 2;
    void *n = realloc(*arr, (size_t)cap2 * size);
    if (n == NULL) return MRD_ENOMEM;
    *arr = n;
    *cap = cap2;
    return 0;
}

/* Inserts the index entry of a record the chain now holds. */
static int stp_index_add(stp *p, const quorum_rec *q, uint64_t page, uint64_t key,
                         const uint8_t *payload, size_t len)
{
    uint8_t *copy = NULL;
    if (q->lsn > p->materialized) {
        copy = malloc(len);
        if (copy == NULL) return MRD_ENOMEM;
        memcpy(copy, payload, len);
        p->payload_bytes += len;
    }
    uint32_t i = stp_lower_bound(p, q->lsn);
    assert(i == p->n_recs || p->recs[i].lsn != q->lsn);
    memmove(&p->recs[i + 1], &p->recs[i], (p->n_recs - i) * sizeof(p->recs[0]));
    p->recs[i] = (stp_rec){
        .lsn = q->lsn, .page = page, .key = key, .payload = copy, .len = (uint32_t)len};
    p->n_recs++;
    return 0;
}

/* Room in the index for one more record, before the chain takes it. */
static int stp_room(stp *p)
{
    int rc = stp_grow((void **)&p->recs, &p->cap_recs, p->n_recs + 1, p->held_max,
                      sizeof(p->recs[0]));
    if (rc == 0)
        rc = stp_grow((void **)&p->pending, &p->cap_pending, p->n_pending + 1, p->held_max,
                      sizeof(p->pending[0]));
    return rc;
}

/* A forgotten record read back at start from key: its range must cover that key. */
static void stp_old_note(stp *p, uint64_t lsn, uint64_t key)
{
    for (uint32_t i = 0; i < p->n_old; i++) {
        stp_old *o = &p->old[i];
        if (lsn <= o->lsn_after || lsn > o->lsn_upto) continue;
        if (key < o->key_min) o->key_min = key;
        if (key > o->key_max) o->key_max = key;
        return;
    }
}

int stp_load(stp *p, const quorum_rec *q, uint64_t page, uint64_t key, const uint8_t *payload,
             size_t len)
{
    bool held = seg_chain_holds(&p->chain, q->lsn);
    int rc = stp_room(p);
    if (rc != 0) return rc;
    sc_event ev = {.kind = SC_EV_LOAD, .rec = q};
    rc = seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    if (rc != 0 || held) return rc;
    if (!seg_chain_holds(&p->chain, q->lsn)) { /* at or below the forget point */
        stp_old_note(p, q->lsn, key);
        return 0;
    }
    rc = stp_index_add(p, q, page, key, payload, len);
    if (rc != 0) return rc; /* the chain holds it without a payload: the caller gives up */
    if (q->lsn > p->lsn_durable) p->lsn_durable = q->lsn;
    if (key > p->key_durable) p->key_durable = key; /* read back from disk: durable */
    return 0;
}

int stp_receive(stp *p, const quorum_rec *q, uint64_t page, const uint8_t *payload, size_t len,
                uint64_t next_key, uint64_t *new_key, uint64_t *wait_key)
{
    *new_key = 0;
    *wait_key = 0;
    int rc = stp_room(p);
    if (rc != 0) return rc;
    p->step_persist_seq = 0;
    sc_event ev = {.kind = SC_EV_RECORD, .rec = q};
    rc = seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    if (rc != 0) return rc;
    if (p->step_persist_seq == 0) { /* a duplicate */
        const stp_rec *r = stp_find(p, q->lsn);
        if (r != NULL && r->key > p->key_durable) *wait_key = r->key;
        return 0;
    }
    /* Copy first: a payload that cannot be kept must not leave a persist behind. */
    rc = stp_index_add(p, q, page, next_key, payload, len);
    if (rc != 0) return rc;
    p->pending[p->n_pending++] =
        (stp_pending){.seq = p->step_persist_seq, .key = next_key, .lsn = q->lsn};
    *new_key = next_key;
    *wait_key = next_key;
    return 0;
}

void stp_synced(stp *p, uint64_t key_durable)
{
    if (key_durable <= p->key_durable) return;
    p->key_durable = key_durable;
    uint32_t done = 0;
    while (done < p->n_pending && p->pending[done].key <= key_durable) {
        const stp_pending *e = &p->pending[done];
        if (e->lsn > p->lsn_durable && stp_find(p, e->lsn) != NULL) p->lsn_durable = e->lsn;
        done++;
    }
    if (done == 0) return;
    sc_event ev = {.kind = SC_EV_SYNCED, .seq = p->pending[done - 1].seq};
    memmove(p->pending, p->pending + done, (p->n_pending - done) * sizeof(p->pending[0]));
    p->n_pending -= done;
    seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
}

void stp_fence(stp *p, quorum_fence f, bool *voided_materialized)
{
    *voided_materialized = false;
    sc_event ev = {.kind = SC_EV_FENCE, .fence = f};
    seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    uint32_t kept = 0;
    p->lsn_durable = 0;
    for (uint32_t i = 0; i < p->n_recs; i++) {
        stp_rec *r = &p->recs[i];
        if (!seg_chain_holds(&p->chain, r->lsn)) {
            if (r->lsn <= p->materialized) *voided_materialized = true;
            if (r->payload != NULL) p->payload_bytes -= r->len;
            free(r->payload);
            continue;
        }
        if (r->key <= p->key_durable) p->lsn_durable = r->lsn;
        p->recs[kept++] = *r;
    }
    p->n_recs = kept;
    if (p->lsn_durable < stp_base(p)) p->lsn_durable = stp_base(p);
}

uint32_t stp_tick(stp *p, uint64_t now_ms, stp_gap *gaps, uint32_t max)
{
    p->step_gaps = gaps;
    p->step_gaps_n = 0;
    p->step_gaps_max = max;
    sc_event ev = {.kind = SC_EV_TICK, .now_ms = now_ms};
    seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    p->step_gaps = NULL;
    return p->step_gaps_n;
}

uint32_t stp_serve(stp *p, uint64_t after, uint64_t upto, const stp_rec **out, uint32_t max,
                   stp_gap *old)
{
    *old = (stp_gap){0};
    p->step_old = (stp_gap){0};
    if (after >= upto) return 0;
    p->step_serve = out;
    p->step_serve_n = 0;
    p->step_serve_max = max;
    sc_event ev = {.kind = SC_EV_GAP_REQ, .gap = {.seg = p->seg, .after = after, .upto = upto}};
    seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    p->step_serve = NULL;
    *old = p->step_old;
    return p->step_serve_n;
}

/* Remembers where the records of (after, upto] went in the log. */
static void stp_old_add(stp *p, uint64_t after, uint64_t upto, uint64_t key_min,
                        uint64_t key_max)
{
    if (p->n_old == STORAGE_OLD_RANGES_MAX) { /* merge the two oldest: scans grow, never miss */
        stp_old *a = &p->old[0], *b = &p->old[1];
        b->lsn_after = a->lsn_after;
        if (a->key_min < b->key_min) b->key_min = a->key_min;
        if (a->key_max > b->key_max) b->key_max = a->key_max;
        memmove(&p->old[0], &p->old[1], (p->n_old - 1) * sizeof(p->old[0]));
        p->n_old--;
    }
    assert(p->n_old == 0 || p->old[p->n_old - 1].lsn_upto == after);
    p->old[p->n_old++] = (stp_old){.lsn_after = after, .lsn_upto = upto, .key_min = key_min,
                                   .key_max = key_max};
}

uint32_t stp_forget(stp *p, uint64_t upto)
{
    if (upto > p->materialized) upto = p->materialized;
    uint64_t base = seg_chain_base(&p->chain);
    if (upto <= base || p->n_recs == 0 || p->recs[0].lsn > upto) return 0;
    sc_event ev = {.kind = SC_EV_FORGET, .upto = upto};
    seg_chain_step(&p->chain, &ev, stp_chain_sink(p));
    uint64_t base_now = seg_chain_base(&p->chain);
    uint32_t n = stp_lower_bound(p, base_now + 1);
    if (n == 0) return 0;
    uint64_t key_min = UINT64_MAX, key_max = 0;
    for (uint32_t i = 0; i < n; i++) {
        stp_rec *r = &p->recs[i];
        assert(r->key <= p->key_durable && !seg_chain_holds(&p->chain, r->lsn));
        if (r->key < key_min) key_min = r->key;
        if (r->key > key_max) key_max = r->key;
        if (r->payload != NULL) p->payload_bytes -= r->len;
        free(r->payload);
    }
    memmove(p->recs, p->recs + n, (p->n_recs - n) * sizeof(p->recs[0]));
    p->n_recs -= n;
    stp_old_add(p, base, base_now, key_min, key_max);
    return n;
}

bool stp_old_keys(const stp *p, uint64_t after, uint64_t upto, uint64_t *key_min,
                  uint64_t *key_max)
{
    *key_min = UINT64_MAX;
    *key_max = 0;
    for (uint32_t i = 0; i < p->n_old; i++) {
        const stp_old *o = &p->old[i];
        if (o->lsn_upto <= after || o->lsn_after >= upto) continue;
        if (o->key_min < *key_min) *key_min = o->key_min;
        if (o->key_max > *key_max) *key_max = o->key_max;
    }
    return *key_max > 0;
}

uint64_t stp_base(const stp *p)
{
    return seg_chain_base(&p->chain);
}

uint64_t stp_key_min(const stp *p)
{
    uint64_t key = UINT64_MAX;
    for (uint32_t i = 0; i < p->n_recs; i++)
        if (p->recs[i].key < key) key = p->recs[i].key;
    return key;
}

const stp_rec *stp_find(const stp *p, uint64_t lsn)
{
    uint32_t i = stp_lower_bound(p, lsn);
    return i < p->n_recs && p->recs[i].lsn == lsn ? &p->recs[i] : NULL;
}

int stp_page_recs(const stp *p, uint64_t page, uint64_t after, uint64_t upto,
                  const stp_rec **out, uint32_t max, uint32_t *n)
{
    *n = 0;
    for (uint32_t i = stp_lower_bound(p, after + 1); i < p->n_recs; i++) {
        const stp_rec *r = &p->recs[i];
        if (r->lsn > upto) break;
        if (r->page != page || r->key > p->key_durable) continue;
        if (r->payload == NULL) return MRD_ENOTFOUND;
        if (*n == max) return MRD_ETOOBIG;
        out[(*n)++] = r;
    }
    return 0;
}

uint32_t stp_materialize_plan(const stp *p, uint64_t target, uint32_t recs_max,
                              uint64_t bytes_max, const stp_rec **out, uint64_t *upto)
{
    uint64_t limit = target < stp_scl(p) ? target : stp_scl(p);
    uint32_t n = 0, i = stp_lower_bound(p, p->materialized + 1);
    uint64_t bytes = 0;
    *upto = p->materialized;
    for (; i < p->n_recs; i++) {
        const stp_rec *r = &p->recs[i];
        if (r->lsn > limit || n == recs_max) break;
        if (n > 0 && bytes + r->len > bytes_max) break;
        assert(r->payload != NULL && r->key <= p->key_durable);
        out[n++] = r;
        bytes += r->len;
        *upto = r->lsn;
    }
    /* Every record up to limit is planned: the plan covers the whole range. */
    if (n > 0 && (i == p->n_recs || p->recs[i].lsn > limit)) *upto = limit;
    return n;
}

void stp_materialized(stp *p, uint64_t upto)
{
    if (upto <= p->materialized) return;
    for (uint32_t i = stp_lower_bound(p, p->materialized + 1); i < p->n_recs; i++) {
        stp_rec *r = &p->recs[i];
        if (r->lsn > upto) break;
        if (r->payload != NULL) p->payload_bytes -= r->len;
        free(r->payload);
        r->payload = NULL;
    }
    p->materialized = upto;
}

uint64_t stp_scl(const stp *p)
{
    return seg_chain_scl(&p->chain);
}

uint64_t stp_epoch(const stp *p)
{
    return seg_chain_epoch(&p->chain);
}

uint64_t stp_lsn_durable(const stp *p)
{
    return p->lsn_durable;
}

uint32_t stp_records(const stp *p)
{
    return p->n_recs;
}
