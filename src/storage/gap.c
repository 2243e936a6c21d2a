/*
 * Gap filling: when a segment's back-links show missing records (or simply
 * on every gap_retry_ms, for anything above its highest record), ask a peer
 * storage node for them with GET /v1/records, in turn across the five peers
 * of the region. What comes back is checked like an append (the same PG,
 * inside the range asked, fitting the page size) and goes through the same
 * path: chain, log, group commit. A full answer (QUORUM_SERVE_MAX records)
 * is followed at once by a request for the rest.
 *
 * One connection per peer, opened when first needed, reopened after a
 * failure no sooner than STORAGE_PEER_BACKOFF_MS later. With TLS the node
 * presents its own certificate to its peers.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_int.h"

typedef struct {
    storage_peer *peer;
    uint32_t pg;
    uint64_t after, upto;
    int status;
    uint64_t vdl;
    mrd_buf body;
    bool too_big;
} gap_call;

/* ---- connections ---------------------------------------------------------------------- */

static void peer_on_connect(h2_client *c, int status, void *ud)
{
    storage_peer *peer = ud;
    if (status == 0) {
        peer->connected = true;
        return;
    }
    peer->client = NULL;
    peer->retry_ms = mrd_now_ms() + STORAGE_PEER_BACKOFF_MS;
    h2_client_close(c);
}

static void peer_on_disconnect(h2_client *c, int error, void *ud)
{
    storage_peer *peer = ud;
    peer->connected = false;
    peer->client = NULL;
    peer->retry_ms = mrd_now_ms() + STORAGE_PEER_BACKOFF_MS;
    h2_client_close(c);
}

static const h2_client_cbs peer_cbs = {.on_connect = peer_on_connect,
                                       .on_disconnect = peer_on_disconnect};

static void peer_connect(storage *s, storage_peer *peer, uint64_t now_ms)
{
    if (peer->client != NULL || now_ms < peer->retry_ms || s->stopping || storage_resetting(s))
        return;
    h2_client_config cfg = {.host = peer->node->addr.host, .port = peer->node->addr.port,
                            .tls = s->tls};
    mrd_msg msg;
    if (h2_client_connect(s->loop, &cfg, &peer_cbs, peer, &peer->client, &msg) != 0) {
        peer->client = NULL;
        peer->retry_ms = now_ms + STORAGE_PEER_BACKOFF_MS;
    }
}

int storage_peers_init(storage *s, mrd_msg *msg)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        s->peers[seg] = (storage_peer){.s = s, .seg = seg,
                                       .node = topo_segment_node(s->region, seg)};
    }
    if (!s->node->topo.tls) return 0;
    char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 80], key[TOPO_PATH_MAX + 80];
    const char *dir = s->node->certs_dir, *id = s->node->self->id;
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(cert, sizeof(cert), "%s/%s.crt", dir, id);
    snprintf(key, sizeof(key), "%s/%s.key", dir, id);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    return h2_tls_client_new(&cfg, &s->tls, msg);
}

void storage_peers_close(storage *s)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        storage_peer *peer = &s->peers[seg];
        if (peer->client == NULL) continue;
        h2_client *c = peer->client;
        peer->client = NULL;
        peer->connected = false;
        h2_client_close(c);
    }
}

/* ---- one gap-fill call ------------------------------------------------------------------- */

static void gap_on_response(h2_call *call, int status, void *ud)
{
    gap_call *g = ud;
    g->status = status;
    const char *vdl = h2_call_header(call, "meridian-vdl");
    if (vdl != NULL && storage_u64_parse(vdl, &g->vdl) != 0) g->vdl = 0;
}

static void gap_on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    gap_call *g = ud;
    if (g->too_big) return;
    if (g->body.len + len > STORAGE_PEER_BODY_BYTES_MAX || mrd_buf_append(&g->body, data, len) != 0) {
        g->too_big = true;
        h2_call_cancel(call);
    }
}

static void gap_request(storage *s, storage_peer *peer, uint32_t pg, uint64_t after, uint64_t upto);

/* One record of a peer's answer, taken like an append's; 1 when it was new. */
static int gap_take(storage *s, stp *p, const wire_record *rec, mrd_buf *enc, mrd_msg *msg)
{
    quorum_rec q;
    uint64_t new_key, wait_key;
    enc->len = 0;
    int rc = wire_record_encode(rec, enc, msg);
    if (rc != 0) return rc;
    storage_qrec(rec, &q);
    rc = stp_receive(p, &q, rec->page, enc->data, enc->len, s->key_next, &new_key, &wait_key);
    if (rc == MRD_ESTALE || rc == MRD_ESTATE) return 0; /* void, or of an epoch not fenced yet */
    if (rc != 0) return mrd_fail(msg, rc, "record %" PRIu64 ": %s", rec->lsn, mrd_strerror(rc));
    if (new_key == 0) return 0;
    s->key_next++;
    rc = storage_stage(s, new_key, enc->data, enc->len, msg);
    return rc == 0 ? 1 : rc;
}

/*
 * "Anything above my highest record?" is asked on every chain tick; while the
 * peers keep answering with nothing, it is asked less and less often (up to
 * STORAGE_TAIL_BACKOFF_MS_MAX), so that an idle region does not chatter.
 */
static void gap_tail_answered(storage *s, uint32_t pg, uint32_t count)
{
    uint64_t *b = &s->tail_backoff_ms[pg];
    if (count > 0)
        *b = 0;
    else
        *b = *b == 0 ? s->opts.gap_retry_ms : *b * 2 > STORAGE_TAIL_BACKOFF_MS_MAX
                                                  ? STORAGE_TAIL_BACKOFF_MS_MAX
                                                  : *b * 2;
    s->tail_next_ms[pg] = mrd_now_ms() + *b;
}

/* Checks and takes an answer; *last is the highest LSN it carried. */
static int gap_absorb(storage *s, gap_call *g, uint32_t *count, uint64_t *last, mrd_msg *msg)
{
    wire_batch batch;
    int rc = storage_body_batch(g->body.data, g->body.len, &batch, msg);
    if (rc == MRD_ENOTFOUND) return 0; /* an empty answer: the peer has none */
    if (rc != 0) return rc;
    stp *p = storage_pg(s, g->pg, msg);
    if (p == NULL) return MRD_EINVAL;
    uint64_t bytes = 0;
    wire_batch_iter it;
    wire_record rec;
    wire_batch_iter_init(&it, &batch);
    while (wire_batch_iter_next(&it, &rec) == 1) {
        if (rec.lsn <= g->after || rec.lsn > g->upto)
            return mrd_fail(msg, MRD_EPROTO, "record %" PRIu64 " outside (%" PRIu64 ", %" PRIu64 "]",
                            rec.lsn, g->after, g->upto);
        rc = storage_record_fits(&rec, g->pg, s->pages_per_pg, s->page_size, msg);
        if (rc != 0) return rc;
        bytes += SEGLOG_FRAME_HEADER_BYTES + wire_record_size(&rec);
    }
    if (!storage_room(s, bytes)) return 0; /* busy: the next tick asks again */
    /* The last places are for records right above SCL: only those let SCL, and then
     * forgetting, move on; records above a lower gap would fill them for good. */
    if (stp_records(p) + batch.count > storage_append_room(s) && g->after > stp_scl(p)) return 0;
    mrd_buf enc;
    mrd_buf_init(&enc);
    wire_batch_iter_init(&it, &batch);
    uint32_t fresh = 0;
    while (rc >= 0 && wire_batch_iter_next(&it, &rec) == 1) {
        rc = gap_take(s, p, &rec, &enc, msg);
        if (rc > 0) fresh++;
        *last = rec.lsn;
    }
    mrd_buf_free(&enc);
    *count = batch.count;
    mrd_metric_inc(s->m_gap_records, fresh);
    if (fresh > 0)
        MRD_INFO("gap_filled", "pg=%" PRIu32 " from=%s records=%" PRIu32 " after=%" PRIu64
                               " last=%" PRIu64 " scl=%" PRIu64,
                 g->pg, g->peer->node->id, fresh, g->after, *last, stp_scl(p));
    storage_sync_kick(s);
    return rc < 0 ? rc : 0;
}

static void gap_on_close(h2_call *call, int error, void *ud)
{
    gap_call *g = ud;
    storage *s = g->peer->s;
    s->calls_open--;
    s->gap_calls[g->pg]--;
    if (error == 0 && g->status == 200 && !g->too_big && !s->stopping && !s->failed &&
        !storage_resetting(s)) {
        uint32_t count = 0;
        uint64_t last = 0;
        mrd_msg msg = {{0}};
        if (g->vdl > s->vdl) s->vdl = g->vdl;
        if (gap_absorb(s, g, &count, &last, &msg) != 0)
            MRD_WARN("gap_answer_refused", "pg=%" PRIu32 " peer=%s reason=\"%s\"", g->pg,
                     g->peer->node->id, msg.text);
        else if (count == QUORUM_SERVE_MAX && last < g->upto)
            gap_request(s, g->peer, g->pg, last, g->upto); /* the rest */
        if (g->upto == QUORUM_LSN_MAX) gap_tail_answered(s, g->pg, count);
    }
    mrd_buf_free(&g->body);
    free(g);
    if (s->stopping) storage_maybe_free(s);
}

static const h2_call_cbs gap_call_cbs = {
    .on_response = gap_on_response, .on_data = gap_on_data, .on_close = gap_on_close};

static void gap_request(storage *s, storage_peer *peer, uint32_t pg, uint64_t after, uint64_t upto)
{
    if (peer->client == NULL || !peer->connected || s->stopping || storage_resetting(s)) return;
    gap_call *g = calloc(1, sizeof(*g));
    if (g == NULL) return;
    *g = (gap_call){.peer = peer, .pg = pg, .after = after, .upto = upto};
    mrd_buf_init(&g->body);
    char path[160];
    snprintf(path, sizeof(path), "/v1/records?pg=%" PRIu32 "&after=%" PRIu64 "&upto=%" PRIu64, pg,
             after, upto);
    if (h2_client_request(peer->client, "GET", path, NULL, 0, NULL, 0, true, &gap_call_cbs, g,
                          NULL) != 0) {
        free(g);
        return;
    }
    s->calls_open++;
    s->gap_calls[pg]++;
}

/* ---- the tick ---------------------------------------------------------------------------- */

/* The next connected peer in turn for pg; starts connections to the others. */
static storage_peer *gap_peer(storage *s, uint32_t pg, uint64_t now_ms)
{
    for (int k = 0; k < TOPO_STORAGE; k++) {
        int seg = (int)((s->gap_rr[pg] + (uint32_t)k) % TOPO_STORAGE);
        storage_peer *peer = &s->peers[seg];
        if (seg == s->seg) continue;
        if (peer->client != NULL && peer->connected) {
            s->gap_rr[pg] = (uint32_t)seg + 1;
            return peer;
        }
        peer_connect(s, peer, now_ms);
    }
    return NULL;
}

void storage_gap_tick(storage *s, uint64_t now_ms)
{
    if (s->failed || s->stopping) return;
    stp_gap gaps[QUORUM_GAPS_PER_TICK_MAX + 1];
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        if (s->pgs[pg] == NULL) continue;
        uint32_t n = stp_tick(s->pgs[pg], now_ms, gaps, QUORUM_GAPS_PER_TICK_MAX + 1);
        for (uint32_t i = 0; i < n && s->gap_calls[pg] < STORAGE_GAP_CALLS_PER_PG_MAX; i++) {
            if (gaps[i].upto == QUORUM_LSN_MAX && now_ms < s->tail_next_ms[pg]) continue;
            storage_peer *peer = gap_peer(s, pg, now_ms);
            if (peer == NULL) break;
            gap_request(s, peer, pg, gaps[i].after, gaps[i].upto);
        }
    }
}
