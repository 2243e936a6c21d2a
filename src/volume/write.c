/*
 * vol_write and vol_wait: a new page image becomes one log record (a delta
 * against the cached previous version, a full image when there is none),
 * handed to qw with the next LSN and both back-links; waiters fire from the
 * prepare phase once qw says VDL passed them.
 */
#include <inttypes.h>
#include <string.h>

#include "vol_int.h"

static bool all_zero(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i] != 0) return false;
    return true;
}

/*
 * The base of the page's next delta: the cached version, or NULL (full
 * image) for a page of a PG nothing was ever written to, and for a cached
 * zero page this writer never wrote (it may never have been written).
 */
static int find_base(vol *v, uint64_t page, uint32_t pg, const uint8_t **base, mrd_msg *msg)
{
    *base = vol_cache_get(&v->cache, page);
    if (*base == NULL) {
        if (qw_pg_last(&v->w, pg) == 0) return 0;
        v->stats.cache_misses++;
        return mrd_fail(msg, MRD_ENOTFOUND, "page %" PRIu64 " is not cached: vol_fetch it first",
                        page);
    }
    if (all_zero(*base, v->page_size)) *base = NULL;
    return 0;
}

static int encode_record(vol *v, uint64_t page, uint32_t pg, const uint8_t *base,
                         const uint8_t *image, bool end_of_txn, mrd_msg *msg)
{
    wire_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.lsn = v->next_lsn;
    rec.epoch = v->info.epoch;
    rec.pg = pg;
    rec.prev_lsn = qw_pg_last(&v->w, pg);
    rec.vol_prev_lsn = qw_last_lsn(&v->w);
    rec.page = page;
    rec.txn = v->txn + 1;
    int rc = wire_delta_compute(base, image, v->page_size, &rec);
    if (rc != 0) return mrd_fail(msg, rc, "page %" PRIu64 ": cannot compute its delta", page);
    if (end_of_txn) rec.flags |= WIRE_REC_CPL;
    v->scratch.len = 0;
    return wire_record_encode(&rec, &v->scratch, msg);
}

int vol_write(vol *v, uint64_t page, const uint8_t *image, bool end_of_txn, uint64_t *lsn,
              mrd_msg *msg)
{
    if (v->phase != PHASE_READY)
        return mrd_fail(msg, MRD_ESTATE, "volume not ready for writes (phase %d)", v->phase);
    uint64_t pg64 = page / v->pages_per_pg;
    if (pg64 >= v->info.pg_count)
        return mrd_fail(msg, MRD_EINVAL, "page %" PRIu64 " lies in pg %" PRIu64
                                         ", beyond the %u PGs this writer tracks",
                        page, pg64, v->info.pg_count);
    uint32_t pg = (uint32_t)pg64;
    if (qw_inflight(&v->w) >= v->cfg.inflight_max)
        return mrd_fail(msg, MRD_EBUSY, "%u records in flight, the limit", v->cfg.inflight_max);
    const uint8_t *base;
    int rc = find_base(v, page, pg, &base, msg);
    if (rc == 0) rc = encode_record(v, page, pg, base, image, end_of_txn, msg);
    if (rc != 0) return rc;
    /* the cache first: its refusal (every page pinned) leaves nothing half done */
    rc = vol_cache_put(&v->cache, page, image, v->next_lsn, qw_vdl(&v->w));
    if (rc != 0)
        return mrd_fail(msg, rc, "page cache: all %u pages have writes above VDL",
                        v->cfg.cache_pages_max);
    rc = vol_store_put(&v->store, v->next_lsn, v->scratch.data, v->scratch.len, qw_vcl(&v->w));
    qw_event ev = {.kind = QW_EV_SUBMIT,
                   .rec = {.lsn = v->next_lsn,
                           .prev_lsn = qw_pg_last(&v->w, pg),
                           .vol_prev_lsn = qw_last_lsn(&v->w),
                           .epoch = v->info.epoch,
                           .pg = pg,
                           .size_bytes = (uint32_t)v->scratch.len,
                           .is_cpl = end_of_txn}};
    if (rc == 0) rc = vol_qw_step(v, &ev);
    if (rc != 0) { /* the cache already holds the new version: this writer cannot go on */
        vol_fail(v, rc, "record %" PRIu64 " could not be queued: %s", v->next_lsn,
                 mrd_strerror(rc));
        return mrd_fail(msg, rc, "record %" PRIu64 " could not be queued", v->next_lsn);
    }
    *lsn = v->next_lsn++;
    if (end_of_txn) v->txn++;
    v->stats.records++;
    if (v->cbs.on_record) v->cbs.on_record(v, *lsn, v->scratch.data, v->scratch.len, v->ud);
    return 0;
}

int vol_wait(vol *v, uint64_t lsn, vol_wait_cb cb, void *ud)
{
    if (!v->qw_live || v->phase == PHASE_FAILED || v->phase == PHASE_CLOSING) return MRD_ESTATE;
    if (v->n_waiters_free == 0) return MRD_EBUSY;
    uint32_t id = v->waiters_free[--v->n_waiters_free];
    v->waiters[id] = (vol_waiter){.cb = cb, .ud = ud, .lsn = lsn, .live = true};
    qw_event ev = {.kind = QW_EV_WAIT, .wait = {.id = id, .lsn = lsn}};
    int rc = vol_qw_step(v, &ev);
    if (rc != 0) {
        v->waiters[id].live = false;
        v->waiters_free[v->n_waiters_free++] = id;
    }
    return rc;
}

void vol_dispatch_waiters(vol *v)
{
    /* callbacks may add waiters, fired at once when VDL is past them: they join the ring */
    while (v->n_fired > 0 && v->phase != PHASE_CLOSING) {
        uint32_t id = (uint32_t)v->fired[v->fired_head];
        v->fired_head = (v->fired_head + 1) % v->cfg.waiters_max;
        v->n_fired--;
        vol_waiter w = v->waiters[id];
        v->waiters[id].live = false;
        v->waiters_free[v->n_waiters_free++] = id;
        if (w.live && w.cb) w.cb(v, w.lsn, w.ud);
    }
}
