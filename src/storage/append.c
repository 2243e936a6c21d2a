/*
 * POST /v1/append and the group commit behind it. An append's new records
 * go to the segment chain of their PG and, encoded, to the log's next batch;
 * the request waits until the log key of its last record is durable. One
 * batch is in flight at a time (seglog_sync_run on a libuv worker); what
 * arrives meanwhile joins the next one, so one fdatasync covers every append
 * that came during the previous one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_int.h"

/* ---- group commit ----------------------------------------------------------------------- */

static void storage_sync_work(uv_work_t *w)
{
    storage_sync *sy = mrd_container_of(w, storage_sync, work);
    storage *s = mrd_container_of(sy, storage, sync);
    uint64_t t0 = mrd_now_ns();
    seglog_sync_run(s->log);
    sy->run_ns = mrd_now_ns() - t0;
}

/* Answers the appends whose records are now all durable. */
static void storage_appends_answer(storage *s, uint64_t key_durable)
{
    held *h = s->held_head.next;
    while (h != &s->held_head) {
        held *next = h->next;
        if (h->kind != HELD_APPEND) {
            h = next;
            continue;
        }
        if (s->failed) {
            storage_reply_error(s, h->req, 503, "log_failed", "%s", s->failed_why);
        } else if (h->wait > key_durable) {
            h = next;
            continue;
        } else if (h->epoch < s->epoch) {
            storage_reply_error(s, h->req, 409, "stale_epoch",
                                "epoch %" PRIu64 " was fenced (now %" PRIu64
                                ") while the records were written",
                                h->epoch, s->epoch);
        } else {
            stp *p = s->pgs[h->pg];
            wire_ack ack = {.epoch = s->epoch,
                            .pg = h->pg,
                            .scl = stp_scl(p),
                            .lsn_durable = stp_lsn_durable(p)};
            mrd_buf body;
            mrd_buf_init(&body);
            if (wire_ack_encode(&ack, &body, NULL) == 0)
                storage_reply(s, h->req, 200, "application/msgpack", NULL, 0, body.data, body.len);
            else
                storage_reply_error(s, h->req, 500, "internal", "cannot encode the ack");
            mrd_buf_free(&body);
        }
        storage_unhold(h);
        h = next;
    }
}

static void storage_sync_done(uv_work_t *w, int status)
{
    storage_sync *sy = mrd_container_of(w, storage_sync, work);
    storage *s = mrd_container_of(sy, storage, sync);
    mrd_msg msg = {{0}};
    int rc = seglog_sync_complete(s->log, &msg);
    sy->active = false;
    mrd_metric_inc(s->m_fsync_batches, 1);
    mrd_metric_observe(s->m_fsync_seconds, (double)sy->run_ns / 1e9);
    if (rc != 0) {
        /* Whether fatal for seglog or not (a write error), this node stops writing: what
         * the disk holds is known again only after a restart's recovery. */
        storage_fail(s, seglog_failed(s->log) ? "fdatasync" : "write", &msg);
    } else {
        uint64_t durable = seglog_lsn_durable(s->log);
        for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
            if (s->pgs[pg] != NULL) stp_synced(s->pgs[pg], durable);
    }
    storage_appends_answer(s, seglog_lsn_durable(s->log));
    storage_records_resume(s); /* log reads wait for a moment without a batch in flight */
    if (s->stopping) {
        storage_maybe_free(s);
        return;
    }
    storage_reset_step(s);
    storage_sync_kick(s);
}

void storage_sync_kick(storage *s)
{
    if (s->sync.active || s->failed || storage_resetting(s)) return;
    int rc = seglog_sync_prepare(s->log);
    if (rc <= 0) return; /* nothing staged (or failed: reported by complete) */
    s->staged_bytes = 0;
    s->sync.active = true;
    if (uv_queue_work(s->loop, &s->sync.work, storage_sync_work, storage_sync_done) != 0) {
        /* No worker: run it here rather than never acknowledge. */
        storage_sync_work(&s->sync.work);
        storage_sync_done(&s->sync.work, 0);
    }
}

/*
 * Records an append may bring a PG to: held_max less a reserve for gap
 * filling. Records are forgotten only up to SCL, so a segment full of records
 * above a gap must still take the records under it from its peers.
 */
uint32_t storage_append_room(const storage *s)
{
    uint32_t reserve = QUORUM_SERVE_MAX * STORAGE_GAP_CALLS_PER_PG_MAX;
    if (reserve > s->opts.held_max / 4) reserve = s->opts.held_max / 4;
    return s->opts.held_max - reserve;
}

bool storage_room(storage *s, uint64_t bytes)
{
    return s->staged_bytes + bytes <= STORAGE_BATCH_BYTES_MAX &&
           storage_payload_bytes(s) + bytes <= s->opts.payload_bytes_max;
}

int storage_stage(storage *s, uint64_t key, const uint8_t *payload, size_t len, mrd_msg *msg)
{
    seglog_entry e = {.lsn = key, .data = payload, .len = len};
    int rc = seglog_append(s->log, &e, 1, msg);
    if (rc != 0) {
        /* The chain already counts it as persisted: nothing sane remains but to stop. */
        storage_fail(s, "append", msg);
        return rc;
    }
    s->staged_bytes += SEGLOG_FRAME_HEADER_BYTES + len;
    return 0;
}

/* ---- the request ------------------------------------------------------------------------ */

typedef struct {
    uint64_t epoch;
    uint64_t pg;
    uint64_t vdl;
    wire_batch batch;
    uint64_t bytes; /* an upper bound of the log bytes its records take */
} append_req;

/* Headers, epoch, body, and every record checked before anything is taken. */
static bool append_parse(storage *s, h2_req *req, append_req *a)
{
    mrd_msg msg;
    if (!storage_header_u64(s, req, "meridian-epoch", true, &a->epoch) ||
        !storage_header_u64(s, req, "meridian-pg", true, &a->pg) ||
        !storage_header_u64(s, req, "meridian-vdl", false, &a->vdl) ||
        !storage_check_epoch(s, req, a->epoch))
        return false;
    if (a->pg >= QUORUM_PGS_MAX) {
        storage_reply_error(s, req, 400, "bad_request", "pg %" PRIu64 " is beyond the volume's %d",
                            a->pg, QUORUM_PGS_MAX);
        return false;
    }
    size_t len;
    const uint8_t *body = h2_req_body(req, &len);
    if (storage_body_batch(body, len, &a->batch, &msg) != 0) {
        storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
        return false;
    }
    wire_batch_iter it;
    wire_record rec;
    wire_batch_iter_init(&it, &a->batch);
    for (uint32_t i = 0; wire_batch_iter_next(&it, &rec) == 1; i++) {
        if (rec.epoch != a->epoch) {
            storage_reply_error(s, req, 400, "bad_request",
                                "record %" PRIu32 " (lsn %" PRIu64 "): epoch %" PRIu64
                                ", the request's is %" PRIu64,
                                i, rec.lsn, rec.epoch, a->epoch);
            return false;
        }
        if (storage_record_fits(&rec, (uint32_t)a->pg, s->pages_per_pg, s->page_size, &msg) != 0) {
            storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
            return false;
        }
        a->bytes += SEGLOG_FRAME_HEADER_BYTES + wire_record_size(&rec);
    }
    return true;
}

/* Takes every record; *wait is the log key the answer waits for. */
static int append_take(storage *s, const append_req *a, stp *p, uint64_t *wait, mrd_msg *msg)
{
    wire_batch_iter it;
    wire_record rec;
    mrd_buf enc;
    mrd_buf_init(&enc);
    int rc = 0;
    wire_batch_iter_init(&it, &a->batch);
    while (rc == 0 && wire_batch_iter_next(&it, &rec) == 1) {
        enc.len = 0;
        rc = wire_record_encode(&rec, &enc, msg);
        if (rc != 0) break;
        quorum_rec q;
        uint64_t new_key, wait_key;
        storage_qrec(&rec, &q);
        rc = stp_receive(p, &q, rec.page, enc.data, enc.len, s->key_next, &new_key, &wait_key);
        if (rc != 0) {
            mrd_fail(msg, rc, "record %" PRIu64 ": %s", rec.lsn, mrd_strerror(rc));
            break;
        }
        if (new_key != 0) {
            s->key_next++;
            rc = storage_stage(s, new_key, enc.data, enc.len, msg);
        }
        if (wait_key > *wait) *wait = wait_key;
    }
    mrd_buf_free(&enc);
    return rc;
}

static void append_refuse(storage *s, h2_req *req, int rc, const mrd_msg *msg)
{
    if (rc == MRD_EBUSY)
        storage_reply_error(s, req, 503, "busy", "pg segment holds its limit of records: %s",
                            msg->text);
    else if (rc == MRD_ESTALE)
        storage_reply_error(s, req, 409, "stale_epoch", "%s", msg->text);
    else if (s->failed)
        storage_reply_error(s, req, 503, "log_failed", "%s", s->failed_why);
    else
        storage_reply_error(s, req, 400, "bad_request", "%s", msg->text);
}

void storage_route_append(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    append_req a = {0};
    mrd_msg msg = {{0}};
    if (storage_refuse_resetting(s, req)) return;
    if (s->failed) {
        storage_reply_error(s, req, 503, "log_failed", "%s", s->failed_why);
        return;
    }
    if (!append_parse(s, req, &a)) return;
    if (!storage_room(s, a.bytes)) {
        storage_reply_error(s, req, 503, "busy",
                            "%" PRIu64 " bytes staged and %" PRIu64
                            " held in memory: retry later",
                            s->staged_bytes, storage_payload_bytes(s));
        return;
    }
    stp *p = storage_pg(s, (uint32_t)a.pg, &msg);
    if (p == NULL) {
        storage_reply_error(s, req, 503, "busy", "%s", msg.text);
        return;
    }
    if (stp_records(p) + a.batch.count > storage_append_room(s)) {
        storage_reply_error(s, req, 503, "busy",
                            "pg %" PRIu64 " holds %" PRIu32 " records above SCL %" PRIu64
                            " or the VDL; the last %" PRIu32 " of its %" PRIu32
                            " places are kept for gap filling",
                            a.pg, stp_records(p), stp_scl(p),
                            s->opts.held_max - storage_append_room(s), s->opts.held_max);
        return;
    }
    size_t len;
    h2_req_body(req, &len);
    mrd_metric_inc(s->m_records, a.batch.count);
    mrd_metric_inc(s->m_bytes, (double)len);
    if (a.vdl > s->vdl) s->vdl = a.vdl;
    uint64_t wait = 0;
    int rc = append_take(s, &a, p, &wait, &msg);
    storage_sync_kick(s);
    if (rc != 0) {
        append_refuse(s, req, rc, &msg);
        return;
    }
    held *h = storage_hold(s, req, HELD_APPEND);
    if (h == NULL) {
        storage_reply_error(s, req, 503, "busy", "out of memory");
        return;
    }
    h->pg = (uint32_t)a.pg;
    h->epoch = a.epoch;
    h->wait = wait;
    if (wait <= seglog_lsn_durable(s->log)) storage_appends_answer(s, seglog_lsn_durable(s->log));
}
