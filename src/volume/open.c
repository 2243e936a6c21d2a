/*
 * The volume client's life: opening (TLS context, the six node
 * connections, timers), reconnecting with backoff, the tick that drives
 * re-sends and watchdogs, the prepare phase where fired waiters run and
 * batches leave, final errors, and closing.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vol_int.h"

static void node_connect(vol_node *n);

uint64_t vol_now_ms(vol *v)
{
    return mrd_now_ms();
}

int vol_qw_step(vol *v, qw_event *ev)
{
    ev->now_ms = vol_now_ms(v);
    quorum_sink sink = {.fn = vol_sink, .ctx = v};
    int rc = qw_step(&v->w, ev, sink);
    if (rc == MRD_ESTALE && v->w.fenced)
        vol_fail(v, MRD_ESTALE,
                 "a storage node acknowledged at a newer epoch than %llu: a newer "
                 "writer fenced this one",
                 (unsigned long long)v->info.epoch);
    return rc;
}

void vol_fail(vol *v, int err, const char *fmt, ...)
{
    if (v->phase == PHASE_FAILED || v->phase == PHASE_CLOSING) return;
    char text[MRD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    bool was_ready = v->ready_reported;
    v->phase = PHASE_FAILED;
    MRD_ERROR("vol_failed", "epoch=%llu err=%s reason=\"%s\"", (unsigned long long)v->info.epoch,
              mrd_errname(err), text);
    vol_reads_cancel(v);
    if (!was_ready) {
        v->ready_reported = true;
        if (v->cbs.on_ready) v->cbs.on_ready(v, err, text, v->ud);
    } else if (v->cbs.on_error) {
        v->cbs.on_error(v, err, text, v->ud);
    }
}

/* ---- connections -------------------------------------------------------------------------- */

static void on_retry(uv_timer_t *t)
{
    vol_node *n = mrd_container_of(t, vol_node, retry);
    if (n->v->phase != PHASE_CLOSING && n->v->phase != PHASE_FAILED) node_connect(n);
}

static void schedule_retry(vol_node *n)
{
    uint64_t ms = vol_backoff_ms(n->failures);
    if (n->failures < 32) n->failures++;
    uv_timer_start(&n->retry, on_retry, ms, 0);
}

/* The connection is gone or unusable: tell qw, forget queued sends, reconnect later. */
static void node_lost(vol_node *n)
{
    vol *v = n->v;
    bool was_up = n->state == NODE_UP || n->state == NODE_FENCING;
    if (n->state == NODE_UP && v->fenced > 0) v->fenced--;
    n->state = NODE_IDLE;
    if (n->client != NULL) {
        h2_client *c = n->client;
        n->client = NULL;
        h2_client_close(c);
    }
    if (v->phase == PHASE_CLOSING) return;
    v->stats.reconnects++;
    if (was_up && v->qw_live) {
        qw_event ev = {.kind = QW_EV_DOWN, .link = {.pg = QUORUM_PG_ALL, .seg = n->seg}};
        vol_qw_step(v, &ev);
        vol_batcher_drop(&v->batcher, n->seg);
    }
    if (v->phase != PHASE_FAILED) schedule_retry(n);
    vol_recover_maybe_start(v); /* a round may now be complete */
}

void vol_node_drop(vol_node *n, const char *why)
{
    MRD_WARN("vol_node_drop", "node=%s segment=%u reason=\"%s\"", n->tn->id, n->seg, why);
    node_lost(n);
}

static void on_connect(h2_client *c, int status, void *ud)
{
    vol_node *n = ud;
    vol *v = n->v;
    if (n->client != c) return;
    if (status != 0) {
        n->client = NULL;
        n->state = NODE_IDLE;
        h2_client_close(c);
        if (v->phase != PHASE_CLOSING && v->phase != PHASE_FAILED) schedule_retry(n);
        return;
    }
    n->state = NODE_CONNECTED;
    MRD_INFO("vol_node_connected", "node=%s segment=%u", n->tn->id, n->seg);
    if (v->phase == PHASE_FENCE || (v->phase == PHASE_READY && v->qw_live))
        vol_fence_node(n); /* a replica of a volume never written has no epoch to fence at */
    else
        vol_recover_maybe_start(v);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    vol_node *n = ud;
    if (n->client != c) return;
    MRD_WARN("vol_node_disconnected", "node=%s segment=%u error=%s", n->tn->id, n->seg,
             mrd_errname(error));
    node_lost(n);
}

static const h2_client_cbs client_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

static void node_connect(vol_node *n)
{
    vol *v = n->v;
    h2_client_config cc = {.host = n->tn->addr.host, .port = n->tn->addr.port, .tls = v->tls};
    mrd_msg msg = {{0}};
    n->state = NODE_CONNECTING;
    int rc = h2_client_connect(v->loop, &cc, &client_cbs, n, &n->client, &msg);
    if (rc != 0) {
        n->client = NULL;
        n->state = NODE_IDLE;
        schedule_retry(n);
    }
}

/* ---- timers and the prepare phase --------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    vol *v = mrd_container_of(t, vol, tick);
    uint64_t now = vol_now_ms(v);
    if (v->phase == PHASE_CLOSING || v->phase == PHASE_FAILED) return;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        if (n->client != NULL && n->appends + n->calls > 0 &&
            now - n->progress_ms > VOL_CALL_TIMEOUT_MS)
            vol_node_drop(n, "no answer within the call time-out");
    }
    if (v->qw_live && v->phase != PHASE_FAILED) {
        qw_event ev = {.kind = QW_EV_TICK};
        vol_qw_step(v, &ev);
        for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
            vol_node *n = &v->nodes[s];
            if (n->state == NODE_UP && qw_vcl(&v->w) < v->rec.vcl &&
                now - n->scl_poll_ms >= VOL_SCL_POLL_MS)
                vol_scl_poll(v, n);
        }
    }
    vol_reads_tick(v);
}

static void on_phase_timer(uv_timer_t *t)
{
    vol *v = mrd_container_of(t, vol, phase_timer);
    v->wait_expired = true;
    vol_recover_maybe_start(v);
}

static void on_prepare(uv_prepare_t *p)
{
    vol *v = mrd_container_of(p, vol, prepare);
    if (v->phase == PHASE_CLOSING) return;
    if (v->qw_live && v->cbs.on_vdl && qw_vdl(&v->w) > v->vdl_reported) {
        v->vdl_reported = qw_vdl(&v->w);
        v->cbs.on_vdl(v, v->vdl_reported, v->ud);
    }
    vol_dispatch_waiters(v);
    vol_reads_dispatch(v);
    if (v->phase == PHASE_READY || v->phase == PHASE_FENCE) vol_flush(v);
}

void vol_recover_wait(vol *v, uint64_t ms)
{
    v->wait_expired = false;
    uv_timer_start(&v->phase_timer, on_phase_timer, ms, 0);
}

/* ---- open and close ----------------------------------------------------------------------- */

static void apply_defaults(vol_config *c)
{
    if (c->inflight_max == 0) c->inflight_max = VOL_INFLIGHT_MAX_DEFAULT;
    if (c->retain_max == 0) c->retain_max = VOL_RETAIN_MAX_DEFAULT;
    if (c->batch_records_max == 0) c->batch_records_max = VOL_BATCH_RECORDS_MAX_DEFAULT;
    if (c->batch_bytes_max == 0) c->batch_bytes_max = VOL_BATCH_BYTES_MAX_DEFAULT;
    if (c->cache_pages_max == 0) c->cache_pages_max = VOL_CACHE_PAGES_DEFAULT;
    if (c->waiters_max == 0) c->waiters_max = VOL_WAITERS_MAX_DEFAULT;
    if (c->cert_id == NULL) c->cert_id = "cli";
}

static int check_config(const vol_config *c, mrd_msg *msg)
{
    if (c->topo == NULL || c->region < 0 || c->region >= c->topo->region_count)
        return mrd_fail(msg, MRD_EINVAL, "volume: no such region %d", c->region);
    if (c->pg_count_min > QUORUM_PGS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "volume: %u protection groups needed, at most %u",
                        c->pg_count_min, QUORUM_PGS_MAX);
    if (c->batch_records_max > WIRE_BATCH_RECORDS_MAX ||
        c->batch_bytes_max > WIRE_FRAME_BYTES_MAX / 2)
        return mrd_fail(msg, MRD_ETOOBIG,
                        "volume: batches of %u records / %u bytes exceed "
                        "%u records / %u bytes",
                        c->batch_records_max, c->batch_bytes_max, WIRE_BATCH_RECORDS_MAX,
                        WIRE_FRAME_BYTES_MAX / 2);
    if (c->inflight_max > (1u << 22) || c->retain_max > (1u << 22) || c->waiters_max > (1u << 22))
        return mrd_fail(msg, MRD_ETOOBIG, "volume: in-flight, retain or waiter limit above %u",
                        1u << 22);
    return 0;
}

static int make_tls(vol *v, mrd_msg *msg)
{
    if (!v->cfg.topo->tls) return 0;
    if (v->cfg.certs_dir == NULL)
        return mrd_fail(msg, MRD_EINVAL, "volume: tls needs a certs folder");
    char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 80], key[TOPO_PATH_MAX + 80];
    snprintf(ca, sizeof(ca), "%s/ca.crt", v->cfg.certs_dir);
    snprintf(cert, sizeof(cert), "%s/%s.crt", v->cfg.certs_dir, v->cfg.cert_id);
    snprintf(key, sizeof(key), "%s/%s.key", v->cfg.certs_dir, v->cfg.cert_id);
    h2_tls_config tc = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    return h2_tls_client_new(&tc, &v->tls, msg);
}

static void free_all(vol *v)
{
    if (v->qw_live) qw_close(&v->w);
    vol_batcher_close(&v->batcher);
    vol_store_close(&v->store);
    vol_cache_close(&v->cache);
    for (uint32_t i = 0; i < v->n_reports; i++)
        free((void *)v->reports[i].hdrs);
    free(v->reports);
    free(v->waiters);
    free(v->waiters_free);
    free(v->fired);
    free(v->take);
    mrd_buf_free(&v->scratch);
    if (v->tls != NULL) h2_tls_free(v->tls);
    free(v);
}

static int alloc_tables(vol *v, mrd_msg *msg)
{
    uint32_t wmax = v->cfg.waiters_max;
    v->waiters = calloc(wmax, sizeof(*v->waiters));
    v->waiters_free = calloc(wmax, sizeof(*v->waiters_free));
    v->fired = calloc(wmax, sizeof(*v->fired));
    v->take = calloc(v->cfg.batch_records_max, sizeof(*v->take));
    if (!v->waiters || !v->waiters_free || !v->fired || !v->take)
        return mrd_fail(msg, MRD_ENOMEM, "volume: out of memory");
    for (uint32_t i = 0; i < wmax; i++)
        v->waiters_free[i] = wmax - 1 - i;
    v->n_waiters_free = wmax;
    return vol_cache_init(&v->cache, v->cfg.cache_pages_max, v->page_size, msg);
}

static void start_handles(vol *v)
{
    uv_timer_init(v->loop, &v->tick);
    uv_timer_init(v->loop, &v->phase_timer);
    uv_prepare_init(v->loop, &v->prepare);
    v->handles_open = 3;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        n->v = v;
        n->seg = s;
        n->tn = topo_segment_node(v->region, s);
        uv_timer_init(v->loop, &n->retry);
        v->handles_open++;
    }
    uv_timer_start(&v->tick, on_tick, VOL_TICK_MS, VOL_TICK_MS);
    uv_timer_start(&v->phase_timer, on_phase_timer, VOL_RECOVER_WAIT_MS, 0);
    uv_prepare_start(&v->prepare, on_prepare);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        node_connect(&v->nodes[s]);
}

int vol_open(uv_loop_t *loop, const vol_config *cfg, const vol_cbs *cbs, void *ud, vol **out,
             mrd_msg *msg)
{
    *out = NULL;
    vol_config c = *cfg;
    apply_defaults(&c);
    int rc = check_config(&c, msg);
    if (rc != 0) return rc;
    vol *v = calloc(1, sizeof(*v));
    if (v == NULL) return mrd_fail(msg, MRD_ENOMEM, "volume: out of memory");
    v->loop = loop;
    v->cfg = c;
    v->cbs = *cbs;
    v->ud = ud;
    v->region = &c.topo->regions[c.region];
    v->page_size = c.topo->page_size;
    v->pages_per_pg = c.topo->pg_size_bytes / c.topo->page_size;
    mrd_buf_init(&v->scratch);
    rc = make_tls(v, msg);
    if (rc == 0) rc = alloc_tables(v, msg);
    for (uint8_t s = 0; rc == 0 && s < QUORUM_SEGMENTS; s++)
        if (topo_segment_node(v->region, s) == NULL)
            rc = mrd_fail(msg, MRD_EINVAL, "volume: region %s has no segment %u", v->region->name,
                          s);
    if (rc != 0) {
        free_all(v);
        return rc;
    }
    start_handles(v);
    *out = v;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    vol *v = h->data;
    if (--v->handles_open > 0) return;
    void (*done)(void *) = v->close_done;
    void *done_ud = v->close_ud;
    free_all(v);
    if (done) done(done_ud);
}

static void close_handle(vol *v, uv_handle_t *h)
{
    h->data = v;
    uv_close(h, on_handle_closed);
}

void vol_close(vol *v, void (*done)(void *ud), void *ud)
{
    if (v->phase == PHASE_CLOSING) return;
    v->phase = PHASE_CLOSING;
    v->close_done = done;
    v->close_ud = ud;
    vol_reads_cancel(v);
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++) {
        vol_node *n = &v->nodes[s];
        if (n->client != NULL) {
            h2_client *c = n->client;
            n->client = NULL;
            n->state = NODE_IDLE;
            h2_client_close(c);
        }
        close_handle(v, (uv_handle_t *)&n->retry);
    }
    close_handle(v, (uv_handle_t *)&v->tick);
    close_handle(v, (uv_handle_t *)&v->phase_timer);
    close_handle(v, (uv_handle_t *)&v->prepare);
}

/* ---- queries ------------------------------------------------------------------------------- */

const vol_info *vol_info_get(const vol *v)
{
    return &v->info;
}

const vol_stats *vol_stats_get(const vol *v)
{
    return &v->stats;
}

uint64_t vol_vdl(const vol *v)
{
    return v->qw_live ? qw_vdl(&v->w) : 0;
}

uint64_t vol_vcl(const vol *v)
{
    return v->qw_live ? qw_vcl(&v->w) : 0;
}

uint32_t vol_page_size(const vol *v)
{
    return v->page_size;
}

uint32_t vol_nodes_up(const vol *v)
{
    uint32_t up = 0;
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        up += v->nodes[s].state == NODE_UP;
    return up;
}
