/*
 * Answers made of held records: GET /v1/records (a peer filling its gaps)
 * and GET /v1/report (a recovering writer). Records above the materialized
 * LSN are encoded in memory; older ones are read back from the log, which
 * is possible only while no batch is in flight (seglog's rule), so such a
 * request waits for the end of the current fdatasync. Records below the
 * forget point are no longer indexed one by one: a request for them scans
 * the log keys their forgotten range lies in (stp_old_keys) and answers with
 * the first QUORUM_SERVE_MAX of them; the peer asks again for the rest.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_int.h"

/* ---- reading payloads back from the log ------------------------------------------------- */

typedef struct {
    uint64_t key;
    uint32_t index; /* into the caller's records */
} log_want;

static int log_want_cmp(const void *a, const void *b)
{
    uint64_t x = ((const log_want *)a)->key, y = ((const log_want *)b)->key;
    return x < y ? -1 : x > y;
}

/*
 * Fills copies[i] with the payload of recs[i] for each record whose payload is
 * not in memory (one pass over the log from the lowest key). Copies stay NULL
 * for records the log no longer holds.
 */
static int storage_log_fetch(storage *s, const stp_rec *const *recs, uint32_t n, uint8_t **copies,
                             mrd_msg *msg)
{
    log_want want[QUORUM_SERVE_MAX];
    uint32_t w = 0;
    for (uint32_t i = 0; i < n && w < QUORUM_SERVE_MAX; i++)
        if (recs[i]->payload == NULL) want[w++] = (log_want){.key = recs[i]->key, .index = i};
    if (w == 0) return 0;
    qsort(want, w, sizeof(want[0]), log_want_cmp);
    seglog_iter *it;
    int rc = seglog_iter_open(s->log, want[0].key, &it, msg);
    if (rc != 0) return rc;
    uint32_t k = 0;
    seglog_entry e;
    while (k < w && (rc = seglog_iter_next(it, &e, msg)) == 1) {
        while (k < w && want[k].key < e.lsn)
            k++; /* gone from the log */
        if (k < w && want[k].key == e.lsn) {
            copies[want[k].index] = malloc(e.len);
            if (copies[want[k].index] == NULL) {
                rc = MRD_ENOMEM;
                break;
            }
            memcpy(copies[want[k].index], e.data, e.len);
            k++;
        }
    }
    seglog_iter_close(it);
    return rc < 0 ? rc : 0;
}

/* ---- GET /v1/records ------------------------------------------------------------------- */

/* One frame holding the records (payloads from memory or copies); empty when none. */
static int records_body(const stp_rec *const *recs, uint8_t *const *copies, uint32_t n,
                        mrd_buf *out, mrd_msg *msg)
{
    size_t at;
    wire_batch_builder b;
    uint32_t added = 0;
    if (n == 0) return 0;
    int rc = wire_frame_begin(out, &at);
    if (rc == 0) rc = wire_batch_begin(&b, out, WIRE_BATCH_LOG);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const uint8_t *data = recs[i]->payload ? recs[i]->payload : copies[i];
        wire_record rec;
        if (data == NULL || wire_record_decode(data, recs[i]->len, &rec, NULL) != 0) continue;
        if (wire_batch_add(&b, &rec, NULL) != 0) break; /* a limit: the peer asks again */
        added++;
    }
    if (rc != 0) return rc;
    if (added == 0) {
        wire_batch_abort(&b);
        out->len = at;
        return 0;
    }
    rc = wire_batch_finish(&b, msg);
    if (rc == 0) rc = wire_frame_end(out, at, msg);
    return rc;
}

/* ---- forgotten records, from the log ------------------------------------------------- */

typedef struct {
    uint64_t lsn;
    uint8_t *data;
    size_t len;
} old_rec;

/* Keeps the QUORUM_SERVE_MAX lowest LSNs seen, ascending. */
static int old_keep(old_rec *recs, uint32_t *n, uint64_t lsn, const uint8_t *data, size_t len)
{
    if (*n == QUORUM_SERVE_MAX && lsn >= recs[*n - 1].lsn) return 0;
    for (uint32_t i = 0; i < *n; i++)
        if (recs[i].lsn == lsn) return 0; /* persisted twice */
    uint8_t *copy = malloc(len);
    if (copy == NULL) return MRD_ENOMEM;
    memcpy(copy, data, len);
    if (*n == QUORUM_SERVE_MAX) free(recs[--(*n)].data);
    uint32_t i = *n;
    while (i > 0 && recs[i - 1].lsn > lsn) {
        recs[i] = recs[i - 1];
        i--;
    }
    recs[i] = (old_rec){.lsn = lsn, .data = copy, .len = len};
    (*n)++;
    return 0;
}

/* The log entries with keys in [key_min, key_max] holding records of pg in (after, upto]. */
static int old_scan(storage *s, uint32_t pg, uint64_t after, uint64_t upto, uint64_t key_min,
                    uint64_t key_max, old_rec *recs, uint32_t *n, mrd_msg *msg)
{
    seglog_iter *it;
    int rc = seglog_iter_open(s->log, key_min, &it, msg);
    if (rc != 0) return rc;
    seglog_entry e;
    while ((rc = seglog_iter_next(it, &e, msg)) == 1 && e.lsn <= key_max) {
        wire_record rec;
        if (wire_record_decode(e.data, e.len, &rec, NULL) != 0) continue;
        if (rec.pg != pg || rec.lsn <= after || rec.lsn > upto) continue;
        rc = old_keep(recs, n, rec.lsn, e.data, e.len);
        if (rc != 0) break;
    }
    seglog_iter_close(it);
    return rc < 0 ? rc : 0;
}

static int old_body(const old_rec *recs, uint32_t n, mrd_buf *out, mrd_msg *msg)
{
    size_t at;
    wire_batch_builder b;
    if (n == 0) return 0;
    int rc = wire_frame_begin(out, &at);
    if (rc == 0) rc = wire_batch_begin(&b, out, WIRE_BATCH_LOG);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        wire_record rec;
        if (wire_record_decode(recs[i].data, recs[i].len, &rec, NULL) != 0) continue;
        if (wire_batch_add(&b, &rec, NULL) != 0) break; /* a limit: the peer asks again */
    }
    if (rc == 0) rc = wire_batch_finish(&b, msg);
    if (rc == 0) rc = wire_frame_end(out, at, msg);
    return rc;
}

/* Forgotten records of (old->after, old->upto] read back from the log into body. */
static int old_answer(storage *s, stp *p, const stp_gap *old, mrd_buf *body, mrd_msg *msg)
{
    uint64_t key_min, key_max;
    if (!stp_old_keys(p, old->after, old->upto, &key_min, &key_max)) return 0;
    old_rec recs[QUORUM_SERVE_MAX];
    uint32_t n = 0;
    int rc = old_scan(s, p->pg, old->after, old->upto, key_min, key_max, recs, &n, msg);
    if (rc == 0) rc = old_body(recs, n, body, msg);
    for (uint32_t i = 0; i < n; i++)
        free(recs[i].data);
    return rc;
}

/* Answers a records request now; false when it must wait for the log. */
static bool records_answer(storage *s, h2_req *req, uint32_t pg, uint64_t after, uint64_t upto)
{
    const stp_rec *recs[QUORUM_SERVE_MAX];
    uint8_t *copies[QUORUM_SERVE_MAX] = {0};
    stp *p = pg < QUORUM_PGS_MAX ? s->pgs[pg] : NULL;
    stp_gap old = {0};
    uint32_t n = p ? stp_serve(p, after, upto, recs, QUORUM_SERVE_MAX, &old) : 0;
    bool from_log = old.after < old.upto;
    for (uint32_t i = 0; i < n; i++)
        from_log |= recs[i]->payload == NULL;
    if (from_log && s->sync.active) return false;
    mrd_msg msg = {{0}};
    mrd_buf body;
    mrd_buf_init(&body);
    int rc = 0;
    if (old.after < old.upto)
        rc = old_answer(s, p, &old, &body, &msg);
    else if (from_log)
        rc = storage_log_fetch(s, recs, n, copies, &msg);
    if (rc == 0 && n > 0) rc = records_body(recs, copies, n, &body, &msg);
    for (uint32_t i = 0; i < n; i++)
        free(copies[i]);
    char scl[24], vdl[24];
    snprintf(scl, sizeof(scl), "%" PRIu64, p ? stp_scl(p) : 0);
    snprintf(vdl, sizeof(vdl), "%" PRIu64, s->vdl);
    h2_header hdrs[] = {{"meridian-scl", scl}, {"meridian-vdl", vdl}};
    if (rc != 0)
        storage_reply_error(s, req, 500, "internal", "reading records back: %s", msg.text);
    else
        storage_reply(s, req, 200, "application/octet-stream", hdrs, 2, body.data, body.len);
    mrd_buf_free(&body);
    return true;
}

void storage_route_records(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    storage_query q;
    mrd_msg msg;
    unsigned allowed = 1u << STQ_PG | 1u << STQ_AFTER | 1u << STQ_UPTO;
    if (storage_refuse_resetting(s, req)) return;
    if (storage_query_parse(h2_req_path(req), allowed, &q, &msg) != 0) {
        storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
        return;
    }
    if (!q.has[STQ_PG] || q.value[STQ_PG] >= QUORUM_PGS_MAX) {
        storage_reply_error(s, req, 400, "bad_request", "pg missing or beyond %d", QUORUM_PGS_MAX);
        return;
    }
    uint64_t after = q.has[STQ_AFTER] ? q.value[STQ_AFTER] : 0;
    uint64_t upto = q.has[STQ_UPTO] ? q.value[STQ_UPTO] : QUORUM_LSN_MAX;
    if (records_answer(s, req, (uint32_t)q.value[STQ_PG], after, upto)) return;
    held *h = storage_hold(s, req, HELD_RECORDS);
    if (h == NULL) {
        storage_reply_error(s, req, 503, "busy", "out of memory");
        return;
    }
    h->pg = (uint32_t)q.value[STQ_PG];
    h->after = after;
    h->upto = upto;
}

void storage_records_resume(storage *s)
{
    held *h = s->held_head.next;
    while (h != &s->held_head) {
        held *next = h->next;
        if (h->kind == HELD_RECORDS && records_answer(s, h->req, h->pg, h->after, h->upto))
            storage_unhold(h);
        h = next;
    }
}

/* ---- GET /v1/report -------------------------------------------------------------------- */

/* Header-only records of the report, WIRE_BATCH_RECORDS_MAX per frame. */
static int report_body(const stp *p, const quorum_report *r, mrd_buf *out, mrd_msg *msg)
{
    uint32_t i = 0;
    while (i < r->n_hdrs) {
        size_t at;
        wire_batch_builder b;
        int rc = wire_frame_begin(out, &at);
        if (rc == 0) rc = wire_batch_begin(&b, out, WIRE_BATCH_LOG);
        for (; rc == 0 && i < r->n_hdrs; i++) {
            const quorum_hdr *hd = &r->hdrs[i];
            const stp_rec *sr = stp_find(p, hd->lsn);
            wire_record rec = {.lsn = hd->lsn,
                               .epoch = hd->epoch,
                               .prev_lsn = hd->prev_lsn,
                               .vol_prev_lsn = hd->vol_prev_lsn,
                               .page = sr ? sr->page : 0,
                               .pg = r->pg,
                               .flags = hd->is_cpl ? WIRE_REC_CPL : 0};
            rc = wire_batch_add(&b, &rec, msg);
            if (rc == MRD_ETOOBIG) {
                rc = 0;
                break; /* this frame is full: the next one takes the rest */
            }
        }
        if (rc == 0) rc = wire_batch_finish(&b, msg);
        if (rc == 0) rc = wire_frame_end(out, at, msg);
        if (rc != 0) return rc;
    }
    return 0;
}

static void report_answer(storage *s, h2_req *req, uint32_t pg, uint64_t floor)
{
    stp *p = s->pgs[pg];
    quorum_report r = {.pg = pg, .seg = s->seg, .epoch = s->epoch};
    quorum_hdr *hdrs = NULL;
    mrd_msg msg = {{0}};
    mrd_buf body;
    mrd_buf_init(&body);
    int rc = 0;
    if (p != NULL) {
        hdrs = malloc(((size_t)stp_records(p) + 1) * sizeof(*hdrs));
        rc = hdrs ? seg_chain_report(&p->chain, floor, &r, hdrs, stp_records(p)) : MRD_ENOMEM;
        if (rc == 0) rc = report_body(p, &r, &body, &msg);
    }
    char v[5][24];
    snprintf(v[0], 24, "%" PRIu64, r.scl);
    snprintf(v[1], 24, "%" PRIu64, r.highest);
    snprintf(v[2], 24, "%" PRIu64, r.floor_head);
    snprintf(v[3], 24, "%" PRIu64, r.floor_cpl);
    snprintf(v[4], 24, "%" PRIu64, s->vdl);
    h2_header hdr[] = {{"meridian-scl", v[0]},
                       {"meridian-highest", v[1]},
                       {"meridian-floor-head", v[2]},
                       {"meridian-floor-cpl", v[3]},
                       {"meridian-vdl", v[4]}};
    if (rc == MRD_ESTATE) /* records between the floor and the forget point are gone */
        storage_reply_error(s, req, 409, "floor_forgotten",
                            "pg %" PRIu32 ": floor %" PRIu64 " is below the forget point %" PRIu64
                            "; ask again at a floor of at least the VDL %" PRIu64,
                            pg, floor, stp_base(p), s->vdl);
    else if (rc != 0)
        storage_reply_error(s, req, 500, "internal", "report of pg %" PRIu32 ": %s (%s)", pg,
                            mrd_strerror(rc), msg.text);
    else
        storage_reply(s, req, 200, "application/octet-stream", hdr, 5, body.data, body.len);
    mrd_buf_free(&body);
    free(hdrs);
}

void storage_route_report(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    storage_query q;
    mrd_msg msg;
    if (storage_refuse_resetting(s, req)) return;
    if (storage_query_parse(h2_req_path(req), 1u << STQ_PG | 1u << STQ_FLOOR, &q, &msg) != 0) {
        storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
        return;
    }
    if (!q.has[STQ_PG] || q.value[STQ_PG] >= QUORUM_PGS_MAX) {
        storage_reply_error(s, req, 400, "bad_request", "pg missing or beyond %d", QUORUM_PGS_MAX);
        return;
    }
    report_answer(s, req, (uint32_t)q.value[STQ_PG], q.has[STQ_FLOOR] ? q.value[STQ_FLOOR] : 0);
}
