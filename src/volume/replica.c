/*
 * Replica mode (include/meridian/volume.h): the region's volume fed with
 * another region's records. Recovery is the writer's (recover.c); where a
 * writer would claim epoch_max + 1, a replica stays at epoch_max, and each
 * newer epoch the primary's records carry is fenced in once everything
 * submitted before it is durable. The records are stored and sent exactly
 * as they arrived (append.c reads them from the store), so the local
 * segments hold the primary's bytes.
 */
#include <inttypes.h>
#include <string.h>

#include "vol_int.h"

int vol_replica_open(uv_loop_t *loop, const vol_config *cfg, const vol_cbs *cbs, void *ud,
                     vol **out, mrd_msg *msg)
{
    int rc = vol_open(loop, cfg, cbs, ud, out, msg);
    /* recovery runs from the loop, after this returns: nothing has used the flag yet */
    if (rc == 0) (*out)->replica = true;
    return rc;
}

/* A new qw at epoch, its barriers the PG heads of *rec (what recovery found, or the old qw). */
static int replica_qw(vol *v, uint64_t epoch, const quorum_recovery *rec, mrd_msg *msg)
{
    if (v->qw_live) qw_close(&v->w);
    v->qw_live = false;
    vol_store_close(&v->store);
    vol_batcher_close(&v->batcher);
    qw_config qc = {.pg_count = v->info.pg_count,
                    .write_quorum = QUORUM_WRITE,
                    .inflight_max = v->cfg.inflight_max,
                    .retain_max = v->cfg.retain_max,
                    .waiters_max = v->cfg.waiters_max,
                    .resend_ms = VOL_RESEND_MS,
                    .epoch = epoch,
                    .recovered = rec};
    int rc = qw_init(&v->w, &qc, msg);
    if (rc != 0) return rc;
    v->qw_live = true;
    uint32_t store_cap = v->cfg.inflight_max + v->cfg.retain_max + 1;
    rc = vol_store_init(&v->store, store_cap, msg);
    if (rc == 0) rc = vol_batcher_init(&v->batcher, v->info.pg_count, store_cap, msg);
    for (uint8_t s = 0; rc == 0 && s < QUORUM_SEGMENTS; s++) { /* none is fenced at epoch yet */
        qw_event ev = {.kind = QW_EV_DOWN, .link = {.pg = QUORUM_PG_ALL, .seg = s}};
        rc = vol_qw_step(v, &ev);
    }
    return rc;
}

/* Fences every reachable node at info.epoch, truncating at info.vcl; ready again at four. */
static void replica_fence_all(vol *v)
{
    v->phase = PHASE_FENCE;
    v->fenced = 0;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        if (n->state == NODE_CONNECTED || n->state == NODE_UP) vol_fence_node(n);
    }
}

void vol_replica_begin(vol *v)
{
    uint64_t epoch = v->rec.epoch_max > v->epoch_seen ? v->rec.epoch_max : v->epoch_seen;
    v->info.epoch_found = epoch;
    if (epoch > 0 && v->cfg.epoch_min > epoch && v->rec.vcl >= v->cfg.epoch_min_lsn)
        epoch = v->cfg.epoch_min;
    v->info.epoch = epoch;
    v->info.vcl = v->rec.vcl;
    v->info.vdl = v->rec.vdl;
    v->info.lost_max = v->rec.lost_max;
    v->info.first_lsn = v->rec.vcl + 1;
    MRD_INFO("vol_replica_recovered",
             "epoch=%" PRIu64 " vcl=%" PRIu64 " vdl=%" PRIu64 " lost_max=%" PRIu64
             " pgs=%u reporters=%u",
             epoch, v->info.vcl, v->info.vdl, v->info.lost_max, v->info.pg_count,
             v->info.reporters);
    if (epoch == 0) { /* never written: the first record's epoch is the first fence */
        if (v->rec.vcl != 0) {
            vol_fail(v, MRD_EPROTO, "replica: records up to %" PRIu64 " at epoch 0", v->rec.vcl);
            return;
        }
        v->phase = PHASE_READY;
        v->ready_reported = true;
        if (v->cbs.on_ready) v->cbs.on_ready(v, 0, "", v->ud);
        return;
    }
    mrd_msg msg = {{0}};
    int rc = replica_qw(v, epoch, &v->rec, &msg);
    if (rc != 0) return vol_fail(v, rc, "replica: %s", msg.text);
    replica_fence_all(v);
}

/* Everything submitted is durable and no request of the old epoch is out: fence at epoch. */
static int replica_switch(vol *v, uint64_t epoch, mrd_msg *msg)
{
    if (v->qw_live && (qw_vcl(&v->w) < qw_last_lsn(&v->w) || qw_vdl(&v->w) < qw_last_lsn(&v->w)))
        return mrd_fail(msg, MRD_EBUSY,
                        "epoch %" PRIu64 " waits for epoch %" PRIu64 " records to be durable",
                        epoch, v->info.epoch);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        if (v->nodes[s].appends > 0 || v->nodes[s].state == NODE_FENCING)
            return mrd_fail(msg, MRD_EBUSY, "epoch %" PRIu64 " waits for requests in flight",
                            epoch);
    quorum_recovery rec = {.pg_count = v->info.pg_count};
    if (v->qw_live) {
        rec.vcl = rec.vdl = qw_last_lsn(&v->w);
        for (uint32_t p = 0; p < v->info.pg_count; p++)
            rec.pg_head[p] = qw_pg_last(&v->w, p);
    }
    MRD_INFO("vol_replica_epoch", "from=%" PRIu64 " to=%" PRIu64 " truncate=%" PRIu64,
             v->info.epoch, epoch, rec.vcl);
    v->info.epoch = epoch;
    v->info.vcl = rec.vcl;
    int rc = replica_qw(v, epoch, &rec, msg);
    if (rc != 0) {
        vol_fail(v, rc, "replica: %s", msg->text);
        return rc;
    }
    replica_fence_all(v);
    return mrd_fail(msg, MRD_EBUSY, "fencing the local storage at epoch %" PRIu64, epoch);
}

static int replica_check(const vol *v, const wire_record *rec, mrd_msg *msg)
{
    if (rec->pg >= v->info.pg_count || rec->page / v->pages_per_pg != rec->pg)
        return mrd_fail(msg, MRD_EINVAL,
                        "record %" PRIu64 ": page %" PRIu64 " / pg %u outside the %u PGs", rec->lsn,
                        rec->page, rec->pg, v->info.pg_count);
    if (rec->vol_prev_lsn != qw_last_lsn(&v->w) || rec->prev_lsn != qw_pg_last(&v->w, rec->pg))
        return mrd_fail(msg, MRD_EINVAL,
                        "record %" PRIu64 " links to %" PRIu64 " (pg %u: %" PRIu64
                        "), the local chain ends at %" PRIu64 " (pg: %" PRIu64 ")",
                        rec->lsn, rec->vol_prev_lsn, rec->pg, rec->prev_lsn, qw_last_lsn(&v->w),
                        qw_pg_last(&v->w, rec->pg));
    return 0;
}

int vol_replica_submit(vol *v, const wire_record *rec, const uint8_t *enc, size_t len, mrd_msg *msg)
{
    if (!v->replica) return mrd_fail(msg, MRD_ESTATE, "not a replica volume");
    if (v->phase == PHASE_FENCE) return mrd_fail(msg, MRD_EBUSY, "fencing the local storage");
    if (v->phase != PHASE_READY)
        return mrd_fail(msg, MRD_ESTATE, "replica volume not ready (phase %d)", v->phase);
    if (rec->epoch < v->info.epoch)
        return mrd_fail(msg, MRD_ESTALE,
                        "record %" PRIu64 " of epoch %" PRIu64
                        " below the local storage's %" PRIu64,
                        rec->lsn, rec->epoch, v->info.epoch);
    if (rec->epoch > v->info.epoch || !v->qw_live) return replica_switch(v, rec->epoch, msg);
    int rc = replica_check(v, rec, msg);
    if (rc != 0) return rc;
    if (qw_inflight(&v->w) >= v->cfg.inflight_max)
        return mrd_fail(msg, MRD_EBUSY, "%u records in flight, the limit", v->cfg.inflight_max);
    rc = vol_store_put(&v->store, rec->lsn, enc, len, qw_vcl(&v->w));
    if (rc == MRD_EINVAL && v->store.count > 0 && qw_vcl(&v->w) == qw_last_lsn(&v->w)) {
        /* an LSN gap inside an epoch: nothing in the store is needed any more */
        vol_store_close(&v->store);
        rc = vol_store_init(&v->store, v->cfg.inflight_max + v->cfg.retain_max + 1, msg);
        if (rc == 0) rc = vol_store_put(&v->store, rec->lsn, enc, len, qw_vcl(&v->w));
    }
    if (rc != 0)
        return mrd_fail(msg, rc == MRD_EINVAL ? MRD_EBUSY : rc,
                        "record %" PRIu64 ": the record store cannot take it yet", rec->lsn);
    qw_event ev = {.kind = QW_EV_SUBMIT,
                   .rec = {.lsn = rec->lsn,
                           .prev_lsn = rec->prev_lsn,
                           .vol_prev_lsn = rec->vol_prev_lsn,
                           .epoch = rec->epoch,
                           .pg = rec->pg,
                           .size_bytes = (uint32_t)len,
                           .is_cpl = (rec->flags & WIRE_REC_CPL) != 0}};
    rc = vol_qw_step(v, &ev);
    if (rc != 0) {
        vol_fail(v, rc, "record %" PRIu64 " could not be queued: %s", rec->lsn, mrd_strerror(rc));
        return mrd_fail(msg, rc, "record %" PRIu64 " could not be queued", rec->lsn);
    }
    v->stats.records++;
    return 0;
}

uint64_t vol_replica_head(const vol *v)
{
    return v->qw_live ? qw_last_lsn(&v->w) : v->info.vcl;
}

uint64_t vol_replica_vdl(const vol *v)
{
    uint64_t vdl = v->qw_live ? qw_vdl(&v->w) : 0;
    return vdl > v->vdl_reported ? vdl : v->vdl_reported;
}

uint64_t vol_replica_epoch(const vol *v)
{
    return v->info.epoch;
}
