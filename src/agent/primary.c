/*
 * The primary region's agent: it follows the writer's log like a reader
 * (records first, then a mark saying up to where they are durable), keeps
 * the committed records in the backlog with the rolling checksum and the lag
 * marks, and streams them to every secondary's agent (POST /v1/replicate,
 * opened by this side) as zlib-compressed batches, reading the secondary's
 * durable LSN back on the same stream. A secondary's answer names where its
 * volume ends (meridian-resume-lsn); the stream starts right after it, so
 * nothing is skipped and nothing sent twice is applied twice.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"

static void link_pump(ag_link *l);
static void catchup_free(ag_link *l);

/* ---- committing what the writer made durable -------------------------------------------- */

/* Records (committed, vdl] are committed: checksum, lag mark, then the links may send them. */
void ag_primary_commit(agent *a, uint64_t vdl, uint64_t now)
{
    if (vdl <= a->committed_lsn) return;
    uint64_t bytes = 0;
    uint32_t i = ag_backlog_after(&a->backlog, a->committed_lsn);
    ag_rec *last = NULL;
    for (; i < a->backlog.count && ag_backlog_at(&a->backlog, i)->lsn <= vdl; i++) {
        last = ag_backlog_at(&a->backlog, i);
        bytes += last->enc.len;
    }
    if (last != NULL && last->lsn == vdl) {
        a->crc = last->crc;
    } else if (a->crc_known) { /* cannot happen: uncommitted records are never dropped */
        a->crc_known = false;
        MRD_ERROR("checksum_unknown", "lsn=%" PRIu64 " reason=\"record not held at commit\"", vdl);
    }
    a->committed_lsn = vdl;
    ag_lag_commit(&a->lag, vdl, bytes, a->crc, now);
    mrd_metric_set(a->m_durable, (double)vdl);
    for (int k = 0; k < a->node->topo.region_count; k++)
        if (a->links[k].state == LINK_STREAMING) link_pump(&a->links[k]);
}

/* Keeps a received record: its checksum continues the received chain. */
static int keep_record(agent *a, const wire_record *rec, const uint8_t *enc, size_t len)
{
    if (ag_backlog_full(&a->backlog) && ag_backlog_at(&a->backlog, 0)->lsn <= a->committed_lsn)
        ag_backlog_drop_oldest(&a->backlog);
    if (a->backlog.count == a->backlog.cap) return MRD_ETOOBIG;
    int rc = ag_backlog_put(&a->backlog, rec->lsn, (rec->flags & WIRE_REC_CPL) != 0, enc, len);
    if (rc != 0) return rc;
    a->recv_crc = ag_checksum_advance(a->recv_crc, rec->lsn, enc, len);
    ag_backlog_at(&a->backlog, a->backlog.count - 1)->crc = a->recv_crc;
    a->received_lsn = rec->lsn;
    return 0;
}

static void follow_fail(agent *a, const char *why)
{
    MRD_WARN("log_follow_down", "writer=%s reason=\"%s\"", a->writer_node->id, why);
    h2_call *call = a->follow;
    a->follow = NULL; /* nothing more is taken from it */
    if (call != NULL) h2_call_cancel(call);
    if (a->wc != NULL) a->wc_closing = true;
}

/* The first mark of a (re)started stream: where the writer starts. */
static int follow_start(agent *a, const wire_mark *m, mrd_msg *msg)
{
    uint64_t now = mrd_now_ms();
    uint64_t mine = a->ever_started ? a->committed_lsn : a->ck_lsn;
    if (m->vdl < mine) /* a restarted writer's VDL is 0 until its recovered heads are durable */
        return mrd_fail(msg, MRD_EBUSY,
                        "the writer's VDL %" PRIu64 " is below this agent's %" PRIu64
                        ": waiting for its recovery",
                        m->vdl, mine);
    a->follow_started = true;
    if (!a->ever_started) { /* start where the checksum file says; storage fills the rest */
        a->ever_started = true;
        uint64_t base = a->ck_lsn;
        a->crc_known = a->ck_file || a->ck_lsn == 0;
        a->crc = a->crc_known ? a->ck_crc : 0;
        a->committed_lsn = a->received_lsn = base;
        a->recv_crc = a->crc;
        int rc = ag_lag_init(&a->lag, 0, base, a->crc, a->crc_known, now, msg);
        if (rc != 0) return rc;
        a->lag_ready = true;
        MRD_INFO("log_follow_start", "writer=%s vdl=%" PRIu64 " from=%" PRIu64 " epoch=%" PRIu64,
                 a->writer_node->id, m->vdl, base, m->epoch);
        if (m->vdl == base) return 0;
    }
    /* Records received after the last mark are not taken as committed even when the new
     * start covers their LSNs: a restarted writer reuses the LSNs of records that reached
     * no storage node, with other contents. What the new start covers comes from storage. */
    if (m->vdl != a->committed_lsn) {
        snprintf(a->gap, sizeof(a->gap),
                 "the writer restarted at VDL %" PRIu64
                 " but this agent holds the log only to %" PRIu64
                 ": records in between must come from storage",
                 m->vdl, a->committed_lsn);
        a->gap_upto = m->vdl;
        if (m->vdl > a->committed_lsn) ag_fill_start(a, NULL, a->committed_lsn, m->vdl);
        return mrd_fail(msg, MRD_EPROTO, "%s", a->gap);
    }
    ag_backlog_truncate_after(&a->backlog, a->committed_lsn);
    a->received_lsn = a->committed_lsn;
    a->recv_crc = a->crc;
    MRD_INFO("log_follow_resume", "writer=%s vdl=%" PRIu64 " epoch=%" PRIu64, a->writer_node->id,
             m->vdl, m->epoch);
    return 0;
}

static int on_batch(agent *a, const uint8_t *data, size_t len, mrd_msg *msg)
{
    wire_batch batch;
    int rc = wire_batch_decode(data, len, &batch, msg);
    if (rc != 0) return rc;
    wire_batch_iter it;
    wire_batch_iter_init(&it, &batch);
    wire_record rec;
    while ((rc = wire_batch_iter_next(&it, &rec)) == 1) {
        if (rec.lsn <= a->received_lsn || rec.vol_prev_lsn != a->received_lsn)
            return mrd_fail(msg, MRD_EPROTO,
                            "record %" PRIu64 " links to %" PRIu64 ", the log ends at %" PRIu64,
                            rec.lsn, rec.vol_prev_lsn, a->received_lsn);
        a->scratch.len = 0;
        rc = wire_record_encode(&rec, &a->scratch, msg);
        if (rc == 0) rc = keep_record(a, &rec, a->scratch.data, a->scratch.len);
        if (rc != 0)
            return mrd_fail(msg, rc, "record %" PRIu64 ": cannot keep it%s", rec.lsn,
                            rc == MRD_ETOOBIG ? ": the backlog is full of records no mark "
                                                "made durable yet"
                                              : "");
    }
    return rc;
}

static int on_frame(agent *a, const wire_frame *f, mrd_msg *msg)
{
    if (f->len < 1) return mrd_fail(msg, MRD_EPARSE, "empty frame");
    if (f->data[0] == WIRE_STREAM_MARK) {
        wire_mark m;
        int rc = wire_mark_decode(f->data + 1, f->len - 1, &m, msg);
        if (rc != 0) return rc;
        if (!a->follow_started) return follow_start(a, &m, msg);
        if (m.vdl < a->committed_lsn || m.vdl > a->received_lsn)
            return mrd_fail(msg, MRD_EPROTO, "mark vdl %" PRIu64 " outside %" PRIu64 "..%" PRIu64,
                            m.vdl, a->committed_lsn, a->received_lsn);
        ag_primary_commit(a, m.vdl, mrd_now_ms());
        return 0;
    }
    if (f->data[0] != WIRE_STREAM_BATCH)
        return mrd_fail(msg, MRD_EPARSE, "unknown frame tag 0x%02x", f->data[0]);
    if (!a->follow_started) return mrd_fail(msg, MRD_EPROTO, "records before the first mark");
    return on_batch(a, f->data + 1, f->len - 1, msg);
}

static void f_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    agent *a = ud;
    while (len > 0 && a->follow == call) {
        size_t used = 0;
        wire_frame f;
        mrd_msg msg = {{0}};
        int rc = wire_frame_reader_feed(&a->wfr, data, len, &used, &f, &msg);
        data += used;
        len -= used;
        if (rc == 0) break;
        if (rc == 1) rc = on_frame(a, &f, &msg);
        if (rc < 0) {
            char why[MRD_MSG_MAX + 32];
            snprintf(why, sizeof(why), "bad log stream: %s", msg.text);
            return follow_fail(a, why);
        }
    }
}

static void f_response(h2_call *call, int status, void *ud)
{
    agent *a = ud;
    if (call == a->follow && status != 200) follow_fail(a, "the writer does not serve its log");
}

static void f_close(h2_call *call, int error, void *ud)
{
    agent *a = ud;
    if (call != a->follow) return; /* already given up */
    a->follow = NULL;
    if (!a->stopping) follow_fail(a, error ? mrd_strerror(error) : "the writer ended the stream");
}

static const h2_call_cbs follow_cbs = {
    .on_response = f_response, .on_data = f_data, .on_close = f_close};

static void wc_connect(h2_client *c, int status, void *ud)
{
    if (status != 0) follow_fail(ud, "cannot connect to the writer");
}

static void wc_disconnect(h2_client *c, int error, void *ud)
{
    agent *a = ud;
    if (!a->stopping) follow_fail(a, "the writer's connection dropped");
}

static const h2_client_cbs wc_cbs = {.on_connect = wc_connect, .on_disconnect = wc_disconnect};

static void follow_tick(agent *a, uint64_t now)
{
    if (a->wc_closing) {
        if (a->wc != NULL) h2_client_close(a->wc);
        a->wc = NULL;
        a->wc_closing = false;
        a->follow_retry_at_ms = now + AG_RECONNECT_MS;
    }
    if (a->gap[0] != '\0') { /* nothing to follow until the gap is filled from storage */
        if (a->fill == NULL && now >= a->fill_retry_at_ms && a->gap_upto > a->committed_lsn)
            ag_fill_start(a, NULL, a->committed_lsn, a->gap_upto);
        return;
    }
    if (a->wc == NULL && now >= a->follow_retry_at_ms) {
        h2_client_config cc = {.host = a->writer_node->addr.host,
                               .port = a->writer_node->addr.port,
                               .tls = a->client_tls};
        if (h2_client_connect(a->node->loop, &cc, &wc_cbs, a, &a->wc, NULL) != 0) {
            a->wc = NULL;
            a->follow_retry_at_ms = now + AG_RECONNECT_MS;
        }
        return;
    }
    if (a->wc != NULL && a->follow == NULL && h2_client_connected(a->wc)) {
        wire_frame_reader_close(&a->wfr);
        wire_frame_reader_init(&a->wfr, 0);
        a->follow_started = false;
        char path[64];
        snprintf(path, sizeof(path), "/v1/log?from=%" PRIu64,
                 a->ever_started ? a->committed_lsn : a->ck_lsn);
        if (h2_client_request(a->wc, "GET", path, NULL, 0, NULL, 0, true, &follow_cbs, a,
                              &a->follow) != 0)
            a->wc_closing = true;
    }
}

/* ---- the stream to one secondary -------------------------------------------------------- */

static void link_down(ag_link *l, const char *why, uint64_t retry_ms)
{
    bool was_up =
        l->state == LINK_OPENING || l->state == LINK_STREAMING || l->state == LINK_CATCHUP;
    if (was_up || strcmp(l->why, why) != 0) /* once per reason while it stays down */
        MRD_WARN("replica_link_down", "region=%s agent=%s reason=\"%s\"",
                 l->a->node->topo.regions[l->region].name, l->peer->id, why);
    snprintf(l->why, sizeof(l->why), "%s", why);
    h2_call *call = l->call;
    l->call = NULL;
    if (call != NULL) h2_call_cancel(call);
    if (l->client != NULL) l->closing = true; /* closed from the tick, outside its callbacks */
    l->state = LINK_IDLE;
    l->retry_at_ms = mrd_now_ms() + retry_ms;
    catchup_free(l);
    l->catchup_upto = 0;
    l->catchup_retry = false;
}

/* Records to send: the backlog, or a catch-up read from storage. */
typedef struct {
    ag_rec *(*at)(const void *src, uint32_t i);
    const void *src;
    uint32_t count;
} rec_source;

static ag_rec *backlog_rec(const void *src, uint32_t i)
{
    return ag_backlog_at(src, i);
}

static ag_rec *catchup_rec(const void *src, uint32_t i)
{
    return &((const ag_link *)src)->catchup[i];
}

/* First index of src with lsn > x. */
static uint32_t source_after(const rec_source *src, uint64_t x)
{
    uint32_t lo = 0, hi = src->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (src->at(src->src, mid)->lsn > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* One frame: committed records of src after sent_lsn, as many as a batch takes. */
static int link_send_one(ag_link *l, const rec_source *src)
{
    agent *a = l->a;
    uint32_t i = source_after(src, l->sent_lsn);
    a->scratch.len = 0;
    wire_batch_builder bb;
    int rc = wire_batch_begin(&bb, &a->scratch, WIRE_BATCH_LOG);
    uint64_t last = l->sent_lsn;
    uint32_t n = 0;
    for (; rc == 0 && i < src->count && n < AG_SEND_BATCH_RECORDS_MAX; i++, n++) {
        ag_rec *r = src->at(src->src, i);
        if (r->lsn > a->committed_lsn || a->scratch.len + r->enc.len > AG_SEND_BATCH_BYTES_MAX)
            break;
        wire_record rec;
        rc = wire_record_decode(r->enc.data, r->enc.len, &rec, NULL);
        if (rc == 0) rc = wire_batch_add(&bb, &rec, NULL);
        if (rc == 0) last = r->lsn;
    }
    if (rc == 0 && n == 0) return MRD_ENOTFOUND;
    if (rc == 0) rc = wire_batch_finish(&bb, NULL);
    a->frame.len = 0;
    if (rc == 0) rc = ag_frame_batch_encode(a->scratch.data, a->scratch.len, &a->frame, NULL);
    if (rc == 0) rc = h2_call_write(l->call, a->frame.data, a->frame.len);
    if (rc != 0) return rc;
    ag_lag_sent(&a->lag, l->region, a->scratch.len, a->frame.len);
    mrd_metric_inc(a->m_bytes_raw, (double)a->scratch.len);
    mrd_metric_inc(a->m_bytes_sent, (double)a->frame.len);
    mrd_metric_inc(a->m_records, (double)n);
    l->sent_lsn = last;
    return 0;
}

static void catchup_free(ag_link *l)
{
    for (uint32_t i = 0; i < l->n_catchup; i++)
        mrd_buf_free(&l->catchup[i].enc);
    free(l->catchup);
    l->catchup = NULL;
    l->n_catchup = 0;
}

static void link_resume(ag_link *l, uint64_t resume);

static void link_pump(ag_link *l)
{
    agent *a = l->a;
    rec_source bl = {backlog_rec, &a->backlog, a->backlog.count};
    rec_source cu = {catchup_rec, l, l->n_catchup};
    bool catching_up = l->state == LINK_CATCHUP && l->catchup_upto > 0;
    const rec_source *src = catching_up ? &cu : &bl;
    uint64_t until = catching_up ? l->catchup_upto : a->committed_lsn;
    while ((l->state == LINK_STREAMING || catching_up) && l->sent_lsn < until &&
           h2_call_queued(l->call) < AG_SEND_QUEUED_MAX) {
        int rc = link_send_one(l, src);
        if (rc == MRD_ENOTFOUND && catching_up) break;
        if (rc != 0) return link_down(l, "cannot queue a batch", AG_RECONNECT_MS);
    }
    if (catching_up && l->sent_lsn >= l->catchup_upto) { /* read up to the backlog: go on */
        catchup_free(l);
        l->catchup_upto = 0;
        link_resume(l, l->sent_lsn);
    }
}

/* Whether the backlog holds every committed record after resume. */
static bool backlog_holds(agent *a, uint64_t resume, uint64_t *before)
{
    *before = a->committed_lsn;
    uint32_t i = ag_backlog_after(&a->backlog, resume);
    if (resume >= a->committed_lsn || (i < a->backlog.count && i > 0)) return true;
    wire_record first;
    if (a->backlog.count > 0 &&
        wire_record_decode(ag_backlog_at(&a->backlog, 0)->enc.data,
                           ag_backlog_at(&a->backlog, 0)->enc.len, &first, NULL) == 0) {
        *before = first.vol_prev_lsn; /* the LSN just before the backlog */
        return first.vol_prev_lsn == resume;
    }
    return false;
}

/* Where the secondary ends: the stream starts after it, from the backlog or, for what the
 * backlog no longer holds, from a catch-up read of the region's storage. */
static void link_resume(ag_link *l, uint64_t resume)
{
    agent *a = l->a;
    uint64_t before;
    l->sent_lsn = resume;
    l->why[0] = '\0';
    if (!backlog_holds(a, resume, &before)) {
        uint64_t upto =
            before < resume + AG_CATCHUP_LSNS_MAX ? before : resume + AG_CATCHUP_LSNS_MAX;
        l->state = LINK_CATCHUP;
        l->catchup_upto = 0;
        snprintf(l->why, sizeof(l->why),
                 "catching up from storage: records after LSN %" PRIu64 " left the backlog",
                 resume);
        l->catchup_want = upto;
        if (ag_fill_start(a, l, resume, upto) != 0) l->catchup_retry = true;
        return;
    }
    l->state = LINK_STREAMING;
    MRD_INFO("replica_link_up", "region=%s resume=%" PRIu64 " committed=%" PRIu64,
             a->node->topo.regions[l->region].name, resume, a->committed_lsn);
    link_pump(l);
}

void ag_link_catchup_done(ag_link *l, ag_rec *recs, uint32_t n, uint64_t upto)
{
    if (l->state != LINK_CATCHUP || l->call == NULL) { /* the link went down meanwhile */
        for (uint32_t i = 0; i < n; i++)
            mrd_buf_free(&recs[i].enc);
        free(recs);
        return;
    }
    catchup_free(l);
    l->catchup = recs;
    l->n_catchup = n;
    l->catchup_upto = upto;
    MRD_INFO("replica_link_catchup", "region=%s after=%" PRIu64 " upto=%" PRIu64 " records=%u",
             l->a->node->topo.regions[l->region].name, l->sent_lsn, upto, n);
    link_pump(l);
}

void ag_link_catchup_failed(ag_link *l)
{
    if (l->state == LINK_CATCHUP) l->catchup_retry = true;
}

static void l_response(h2_call *call, int status, void *ud)
{
    ag_link *l = ud;
    const char *r = h2_call_header(call, "meridian-resume-lsn");
    uint64_t resume;
    char why[160];
    if (status != 200 || r == NULL || vol_parse_u64(r, &resume) != 0) {
        snprintf(why, sizeof(why), "the secondary answered %d%s", status,
                 r == NULL ? " without a resume LSN" : "");
        return link_down(l, why, AG_RECONNECT_MS);
    }
    if (!l->a->ever_started) return link_down(l, "not following the writer yet", AG_RECONNECT_MS);
    link_resume(l, resume);
}

static void on_ack(ag_link *l, const ag_ack *ack)
{
    agent *a = l->a;
    ag_lag_ack(&a->lag, l->region, ack->durable_lsn);
    uint32_t mine;
    if (ack->checksum_known && ag_lag_checksum_at(&a->lag, ack->durable_lsn, &mine)) {
        int match = mine == ack->checksum;
        if (!match && l->checksum_match != 0)
            MRD_ERROR("checksum_mismatch", "region=%s lsn=%" PRIu64 " primary=%08x secondary=%08x",
                      a->node->topo.regions[l->region].name, ack->durable_lsn, mine, ack->checksum);
        l->checksum_match = match;
        l->checksum_lsn = ack->durable_lsn;
        l->checksum = ack->checksum;
    }
}

static void l_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    ag_link *l = ud;
    while (len > 0 && l->call != NULL) {
        size_t used = 0;
        wire_frame f;
        mrd_msg msg = {{0}};
        int rc = wire_frame_reader_feed(&l->fr, data, len, &used, &f, &msg);
        data += used;
        len -= used;
        if (rc == 0) break;
        ag_ack ack;
        if (rc == 1 && (f.len < 1 || f.data[0] != AG_FRAME_ACK))
            rc = mrd_fail(&msg, MRD_EPARSE, "expected an ack frame");
        if (rc == 1) rc = ag_frame_ack_decode(f.data + 1, f.len - 1, &ack, &msg);
        if (rc < 0) {
            char why[MRD_MSG_MAX + 32];
            snprintf(why, sizeof(why), "bad ack stream: %s", msg.text);
            return link_down(l, why, AG_RECONNECT_MS);
        }
        on_ack(l, &ack);
    }
}

static void l_close(h2_call *call, int error, void *ud)
{
    ag_link *l = ud;
    if (l->call != call) return;
    l->call = NULL;
    if (!l->a->stopping)
        link_down(l, error ? mrd_strerror(error) : "the secondary ended the stream",
                  AG_RECONNECT_MS);
}

static void l_drain(h2_call *call, void *ud)
{
    link_pump(ud);
}

static const h2_call_cbs link_cbs = {
    .on_response = l_response, .on_data = l_data, .on_close = l_close, .on_drain = l_drain};

static void lc_connect(h2_client *c, int status, void *ud)
{
    ag_link *l = ud;
    if (l->client != c) return;
    if (status != 0)
        return link_down(l, "cannot connect to the secondary's agent", AG_RECONNECT_MS);
    agent *a = l->a;
    h2_header hdrs[] = {{"meridian-region", a->region->name},
                        {"content-type", "application/vnd.meridian.replication"}};
    wire_frame_reader_close(&l->fr);
    wire_frame_reader_init(&l->fr, 4096);
    l->state = LINK_OPENING;
    if (h2_client_request(c, "POST", "/v1/replicate", hdrs, MRD_ARRAY_LEN(hdrs), NULL, 0, false,
                          &link_cbs, l, &l->call) != 0)
        link_down(l, "cannot open the replication stream", AG_RECONNECT_MS);
}

static void lc_disconnect(h2_client *c, int error, void *ud)
{
    ag_link *l = ud;
    if (l->client == c && !l->closing && !l->a->stopping)
        link_down(l, "the connection dropped", AG_RECONNECT_MS);
}

static const h2_client_cbs link_client_cbs = {.on_connect = lc_connect,
                                              .on_disconnect = lc_disconnect};

static void link_tick(ag_link *l, uint64_t now)
{
    if (l->closing) {
        h2_client_close(l->client);
        l->client = NULL;
        l->closing = false;
    }
    if (l->state != LINK_IDLE || now < l->retry_at_ms) return;
    if (!l->a->ever_started) return;
    const topo_addr *to = &l->a->node->topo.regions[l->region].agent_peer;
    h2_client_config cc = {.host = to->host, .port = to->port, .tls = l->a->client_tls};
    l->state = LINK_CONNECTING;
    if (h2_client_connect(l->a->node->loop, &cc, &link_client_cbs, l, &l->client, NULL) != 0) {
        l->client = NULL;
        l->state = LINK_IDLE;
        l->retry_at_ms = now + AG_RECONNECT_MS;
    }
}

/* ---- the role's primary half ------------------------------------------------------------- */

/* The checksum file names a commit point every secondary holds durably: a restarted agent
 * follows the writer from there, so that it can serve each of them and knows the checksum. */
static void save_resume_point(agent *a)
{
    uint64_t low = a->committed_lsn;
    for (int i = 0; i < a->node->topo.region_count; i++) {
        if (i == a->region_idx) continue;
        const ag_peer *p = &a->lag.peers[i];
        uint64_t d = p->acked ? p->durable_lsn : a->ck_lsn;
        if (d < low) low = d;
    }
    ag_mark m;
    if (!a->crc_known || !ag_lag_mark_at_or_below(&a->lag, low, &m) || m.lsn <= a->ck_lsn_saved)
        return;
    ag_checksum_save(a, m.lsn, m.crc);
    ag_lag_forget(&a->lag, m.lsn);
}

/* Records every secondary holds durably (and the checksum file is past) leave the backlog. */
static void trim_backlog(agent *a)
{
    uint64_t keep_after = a->ck_lsn_saved;
    for (int i = 0; i < a->node->topo.region_count; i++) {
        if (i == a->region_idx) continue;
        const ag_peer *p = &a->lag.peers[i];
        uint64_t d = p->acked ? p->durable_lsn : 0;
        if (a->links[i].state == LINK_STREAMING && a->links[i].sent_lsn < d)
            d = a->links[i].sent_lsn;
        if (d < keep_after) keep_after = d;
    }
    while (a->backlog.count > 0 && ag_backlog_at(&a->backlog, 0)->lsn <= keep_after)
        ag_backlog_drop_oldest(&a->backlog);
}

void ag_primary_tick(agent *a, uint64_t now)
{
    follow_tick(a, now);
    if (!a->lag_ready) return;
    double lag_max = 0;
    for (int i = 0; i < a->node->topo.region_count; i++) {
        if (i == a->region_idx) continue;
        ag_link *l = &a->links[i];
        link_tick(l, now);
        if (l->state == LINK_CATCHUP && l->catchup_retry && a->fill == NULL &&
            ag_fill_start(a, l, l->sent_lsn, l->catchup_want) == 0)
            l->catchup_retry = false;
        if (a->links[i].state == LINK_STREAMING || a->links[i].state == LINK_CATCHUP)
            link_pump(&a->links[i]);
        ag_lag_view v;
        ag_lag_of(&a->lag, i, now, &v);
        if ((double)v.lag_ms > lag_max) lag_max = (double)v.lag_ms;
    }
    mrd_metric_set(a->m_lag_ms, lag_max);
    save_resume_point(a);
    trim_backlog(a);
}

int ag_primary_start(agent *a, mrd_msg *msg)
{
    a->writer_node = &a->region->instances[a->region->writer];
    wire_frame_reader_init(&a->wfr, 0);
    for (int i = 0; i < a->node->topo.region_count; i++) {
        ag_link *l = &a->links[i];
        *l = (ag_link){
            .a = a, .region = i, .peer = &a->node->topo.regions[i].agent, .checksum_match = -1};
        wire_frame_reader_init(&l->fr, 4096);
    }
    return 0;
}

void ag_primary_writer_changed(agent *a)
{
    a->writer_node = &a->region->instances[a->region->writer];
    MRD_INFO("log_follow_writer", "writer=%s", a->writer_node->id);
    if (a->follow != NULL) h2_call_cancel(a->follow);
    if (a->wc != NULL) a->wc_closing = true;
}

void ag_primary_stop(agent *a)
{
    for (int i = 0; i < a->node->topo.region_count; i++) {
        ag_link *l = &a->links[i];
        if (l->call != NULL) h2_call_finish(l->call);
        if (l->client != NULL) h2_client_close(l->client);
        l->client = NULL;
        l->call = NULL;
        wire_frame_reader_close(&l->fr);
    }
    if (a->wc != NULL) h2_client_close(a->wc);
    a->wc = NULL;
    wire_frame_reader_close(&a->wfr);
    if (a->lag_ready) ag_lag_free(&a->lag);
    a->lag_ready = false;
}

static const char *link_state_name(ag_link_state s)
{
    static const char *names[] = {"connecting", "connecting", "opening", "streaming",
                                  "catching_up"};
    return names[s];
}

static void region_json(agent *a, int i, uint64_t now, mrd_buf *out)
{
    const topo_region *r = &a->node->topo.regions[i];
    mrd_buf_printf(out, "%s{\"name\":", i == 0 ? "" : ",");
    mrd_json_quote(out, r->name);
    if (i == a->region_idx) {
        mrd_buf_printf(out,
                       ",\"role\":\"primary\",\"lag_ms\":0,\"lsn_gap\":0,\"bytes_gap\":0,"
                       "\"durable_lsn\":%" PRIu64,
                       a->committed_lsn);
        if (a->crc_known) mrd_buf_printf(out, ",\"checksum\":\"%08x\"", a->crc);
        mrd_buf_printf(out, "}");
        return;
    }
    const ag_link *l = &a->links[i];
    ag_lag_view v = {0};
    if (a->lag_ready) ag_lag_of(&a->lag, i, now, &v);
    const ag_peer *p = &a->lag.peers[i];
    mrd_buf_printf(out,
                   ",\"role\":\"secondary\",\"lag_ms\":%" PRIu64 ",\"lsn_gap\":%" PRIu64
                   ",\"bytes_gap\":%" PRIu64 ",\"durable_lsn\":%" PRIu64
                   ",\"stream\":\"%s\",\"sent_lsn\":%" PRIu64 ",\"bytes_raw\":%" PRIu64
                   ",\"bytes_sent\":%" PRIu64,
                   v.lag_ms, v.lsn_gap, v.bytes_gap, p->durable_lsn, link_state_name(l->state),
                   l->sent_lsn, p->bytes_raw, p->bytes_sent);
    if (l->checksum_match >= 0)
        mrd_buf_printf(out,
                       ",\"checksum\":\"%08x\",\"checksum_lsn\":%" PRIu64 ",\"checksum_match\":%s",
                       l->checksum, l->checksum_lsn, l->checksum_match ? "true" : "false");
    if (l->why[0]) {
        mrd_buf_printf(out, ",\"reason\":");
        mrd_json_quote(out, l->why);
    }
    mrd_buf_printf(out, "}");
}

void ag_primary_status(agent *a, mrd_buf *out)
{
    uint64_t now = mrd_now_ms();
    mrd_buf_printf(out,
                   ",\"agent_role\":\"primary\",\"durable_lsn\":%" PRIu64
                   ",\"received_lsn\":%" PRIu64 ",\"backlog_records\":%u",
                   a->committed_lsn, a->received_lsn, a->backlog.count);
    if (a->crc_known)
        mrd_buf_printf(out, ",\"checksum\":\"%08x\",\"checksum_lsn\":%" PRIu64, a->crc,
                       a->committed_lsn);
    if (a->gap[0]) {
        mrd_buf_printf(out, ",\"log_gap\":");
        mrd_json_quote(out, a->gap);
    }
    mrd_buf_printf(out, ",\"regions\":[");
    for (int i = 0; i < a->node->topo.region_count; i++)
        region_json(a, i, now, out);
    mrd_buf_printf(out, "]");
}
