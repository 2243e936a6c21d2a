/*
 * POST /v1/fence and the metadata file. A fence is staged, written to the
 * metadata file by a worker (temp file, fdatasync, rename, folder fsync),
 * and only then applied to the segments and answered: a fence this node
 * acknowledged survives any crash. Writes are numbered (generations); one
 * runs at a time, and a write started later carries everything staged before
 * it, so a request waits for the first durable generation at or above its own.
 * The same writer refreshes the SCLs and materialized LSNs now and then.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "storage_int.h"

void storage_meta_snapshot(storage *s, seglog_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->epoch = s->epoch_staged;
    m->vdl = s->vdl;
    s->forgotten_unrecorded = 0;
    m->fence_count = s->n_fences_staged;
    for (uint32_t i = 0; i < s->n_fences_staged; i++)
        m->fences[i] = (seglog_meta_fence){.epoch = s->fences_staged[i].epoch,
                                           .truncate_lsn = s->fences_staged[i].truncate_lsn};
    m->key_start = s->key_next; /* every log key below is durable, or held */
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        const stp *p = s->pgs[pg];
        if (p == NULL) continue;
        bool stale = s->pages_stale[pg];
        m->pgs[m->pg_count++] = (seglog_meta_pg){
            .pg_id = pg,
            .segment_index = s->seg,
            .scl = stp_scl(p),
            .materialized = stale ? 0 : p->materialized,
            .base = stale ? 0 : stp_base(p),
            .base_cpl = stale ? 0 : seg_chain_base_cpl(&p->chain)};
        uint64_t key_min = stale ? 0 : stp_key_min(p);
        if (key_min < m->key_start) m->key_start = key_min;
    }
}

/* Every staged fence the segments have not seen goes to them. */
static void storage_fences_apply(storage *s, const seglog_meta *written)
{
    for (uint32_t i = 0; i < written->fence_count; i++) {
        quorum_fence f = {.epoch = written->fences[i].epoch,
                          .truncate_lsn = written->fences[i].truncate_lsn};
        if (!storage_fences_add(s->fences, &s->n_fences, f)) continue;
        MRD_INFO("fence_applied", "epoch=%" PRIu64 " truncate_lsn=%" PRIu64, f.epoch,
                 f.truncate_lsn);
        for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
            if (s->pgs[pg] == NULL) continue;
            bool voided = false;
            stp_fence(s->pgs[pg], f, &voided);
            if (voided && !s->pages_stale[pg]) {
                s->pages_stale[pg] = true;
                MRD_ERROR("pages_stale",
                          "pg=%" PRIu32 " epoch=%" PRIu64 " truncate_lsn=%" PRIu64
                          " materialized=%" PRIu64
                          " reason=\"a fence voided materialized records (a writer reported a "
                          "VDL above its VCL); page reads of this pg refused until a restart "
                          "rebuilds the page file from the log\"",
                          pg, f.epoch, f.truncate_lsn, s->pgs[pg]->materialized);
            }
        }
    }
    if (written->epoch > s->epoch) s->epoch = written->epoch;
}

static void storage_fences_answer(storage *s)
{
    held *h = s->held_head.next;
    while (h != &s->held_head) {
        held *next = h->next;
        if (h->kind == HELD_FENCE) {
            if (s->failed) {
                storage_reply_error(s, h->req, 503, "log_failed", "%s", s->failed_why);
                storage_unhold(h);
            } else if (h->wait <= s->meta_gen_durable) {
                storage_reply(s, h->req, 200, NULL, NULL, 0, NULL, 0);
                storage_unhold(h);
            }
        }
        h = next;
    }
}

static void storage_meta_work(uv_work_t *w)
{
    storage_meta_job *j = mrd_container_of(w, storage_meta_job, work);
    storage *s = mrd_container_of(j, storage, meta);
    j->rc = seglog_meta_write(&s->io, s->meta_path, &j->snap, &j->msg);
}

static void storage_meta_done(uv_work_t *w, int status)
{
    storage_meta_job *j = mrd_container_of(w, storage_meta_job, work);
    storage *s = mrd_container_of(j, storage, meta);
    j->active = false;
    if (j->rc != 0) {
        storage_fail(s, "metadata", &j->msg); /* its fdatasync failed: state unknown */
    } else {
        s->meta_gen_durable = j->gen;
        s->meta_written_ms = mrd_now_ms();
        storage_fences_apply(s, &j->snap);
    }
    storage_fences_answer(s);
    if (s->stopping) {
        storage_maybe_free(s);
        return;
    }
    storage_reset_step(s);
    if (s->meta_gen_wanted > s->meta_gen_durable) storage_meta_kick(s);
}

/* A sum that moves whenever an SCL, a materialized LSN or the VDL does. */
static uint64_t storage_meta_progress(const storage *s)
{
    uint64_t sum = s->vdl;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
        if (s->pgs[pg] != NULL) sum += stp_scl(s->pgs[pg]) + s->pgs[pg]->materialized + 1;
    return sum;
}

/* Starts a metadata write if one is wanted (or the SCLs moved) and none runs. */
void storage_meta_kick(storage *s)
{
    if (s->meta.active || s->failed || s->stopping || storage_resetting(s)) return;
    uint64_t progress = storage_meta_progress(s);
    if (s->meta_gen_wanted <= s->meta_gen_durable && progress == s->meta_scl_sum) return;
    s->meta_scl_sum = progress;
    if (s->meta_gen_wanted <= s->meta_gen_durable) s->meta_gen_wanted = s->meta_gen_durable + 1;
    storage_meta_job *j = &s->meta;
    j->gen = s->meta_gen_wanted;
    storage_meta_snapshot(s, &j->snap);
    j->rc = 0;
    j->msg.text[0] = '\0';
    j->active = true;
    if (uv_queue_work(s->loop, &j->work, storage_meta_work, storage_meta_done) != 0) {
        storage_meta_work(&j->work);
        storage_meta_done(&j->work, 0);
    }
}

void storage_route_fence(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    uint64_t epoch, truncate;
    if (storage_refuse_resetting(s, req)) return;
    if (!storage_header_u64(s, req, "meridian-epoch", true, &epoch) ||
        !storage_header_u64(s, req, "meridian-truncate-lsn", true, &truncate))
        return;
    if (s->failed) {
        storage_reply_error(s, req, 503, "log_failed", "%s", s->failed_why);
        return;
    }
    if (epoch < s->epoch_staged) {
        storage_reply_error(s, req, 409, "stale_epoch",
                            "fence epoch %" PRIu64 " is below this node's epoch %" PRIu64, epoch,
                            s->epoch_staged);
        return;
    }
    quorum_fence f = {.epoch = epoch, .truncate_lsn = truncate};
    if (storage_fences_add(s->fences_staged, &s->n_fences_staged, f)) {
        if (epoch > s->epoch_staged) s->epoch_staged = epoch;
        s->fence_gen = ++s->meta_gen_wanted;
        MRD_INFO("fence_staged", "epoch=%" PRIu64 " truncate_lsn=%" PRIu64 " gen=%" PRIu64, epoch,
                 truncate, s->fence_gen);
    }
    if (s->fence_gen <= s->meta_gen_durable) { /* nothing new: already on disk */
        storage_reply(s, req, 200, NULL, NULL, 0, NULL, 0);
        return;
    }
    held *h = storage_hold(s, req, HELD_FENCE);
    if (h == NULL) {
        storage_reply_error(s, req, 503, "busy", "out of memory");
        return;
    }
    h->wait = s->fence_gen;
    storage_meta_kick(s);
}
