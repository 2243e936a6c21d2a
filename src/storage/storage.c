/*
 * The storage role's life: start (a reset left unfinished, files, replay,
 * routes, hooks, timers), the housekeeping tick, answers with the node's
 * epoch, requests held across loop turns, and the stop that lets the loop end.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_int.h"

/* ---- answers ------------------------------------------------------------------------ */

void storage_reply(storage *s, h2_req *req, int status, const char *content_type,
                   const h2_header *extra, size_t n_extra, const void *body, size_t len)
{
    char epoch[24];
    snprintf(epoch, sizeof(epoch), "%" PRIu64, s->epoch);
    h2_header hdrs[H2_HEADERS_MAX];
    size_t n = 0;
    hdrs[n++] = (h2_header){"meridian-epoch", epoch};
    if (content_type != NULL) hdrs[n++] = (h2_header){"content-type", content_type};
    for (size_t i = 0; i < n_extra && n < H2_HEADERS_MAX; i++)
        hdrs[n++] = extra[i];
    if (h2_req_respond(req, status, hdrs, n, body, len) != 0)
        h2_req_reset(req, STORAGE_H2_INTERNAL_ERROR);
}

void storage_reply_error(storage *s, h2_req *req, int status, const char *code, const char *fmt,
                         ...)
{
    char text[MRD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_buf_printf(&body, "{\"error\":{\"code\":");
    mrd_json_quote(&body, code);
    mrd_buf_printf(&body, ",\"message\":");
    mrd_json_quote(&body, text);
    mrd_buf_printf(&body, "}}\n");
    storage_reply(s, req, status, "application/json", NULL, 0, body.data, body.len);
    mrd_buf_free(&body);
    if (status == 409 && strcmp(code, "stale_epoch") == 0) mrd_metric_inc(s->m_stale, 1);
}

bool storage_header_u64(storage *s, h2_req *req, const char *name, bool required, uint64_t *out)
{
    const char *v = h2_req_header(req, name);
    if (v == NULL && !required) return true;
    if (v == NULL) {
        storage_reply_error(s, req, 400, "bad_request", "header %s is required", name);
        return false;
    }
    if (storage_u64_parse(v, out) != 0) {
        storage_reply_error(s, req, 400, "bad_request",
                            "header %s: '%.64s' is not a decimal unsigned 64-bit integer", name, v);
        return false;
    }
    return true;
}

/* A request carrying a writer's epoch: below ours is stale, above ours needs a fence. */
bool storage_check_epoch(storage *s, h2_req *req, uint64_t epoch)
{
    if (epoch < s->epoch) {
        storage_reply_error(s, req, 409, "stale_epoch",
                            "epoch %" PRIu64 " is below this node's epoch %" PRIu64
                            ": a newer writer has fenced the volume",
                            epoch, s->epoch);
        return false;
    }
    if (epoch > s->epoch) {
        storage_reply_error(s, req, 409, "fence_required",
                            "epoch %" PRIu64 " is above this node's epoch %" PRIu64
                            ": POST /v1/fence first",
                            epoch, s->epoch);
        return false;
    }
    return true;
}

/* ---- held requests ------------------------------------------------------------------ */

held *storage_hold(storage *s, h2_req *req, held_kind kind)
{
    held *h = calloc(1, sizeof(*h));
    if (h == NULL) return NULL;
    h->req = req;
    h->kind = kind;
    h->next = &s->held_head;
    h->prev = s->held_head.prev;
    h->prev->next = h;
    s->held_head.prev = h;
    h2_req_set_ud(req, h);
    return h;
}

void storage_unhold(held *h)
{
    if (h->req != NULL) h2_req_set_ud(h->req, NULL);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    free(h);
}

static void storage_req_closed(mrd_node *node, h2_req *req, void *ud)
{
    storage_reset_req_closed(ud, req);
    held *h = h2_req_ud(req);
    if (h == NULL) return;
    h->req = NULL; /* gone: never answered */
    storage_unhold(h);
}

/* ---- failure, segments ---------------------------------------------------------------- */

void storage_fail(storage *s, const char *what, const mrd_msg *msg)
{
    if (s->failed) return;
    s->failed = true;
    snprintf(s->failed_why, sizeof(s->failed_why), "%.32s: %s", what, msg ? msg->text : "");
    MRD_ERROR("log_failed", "epoch=%" PRIu64 " what=%s reason=\"%s\"", s->epoch, what,
              msg ? msg->text : "");
}

stp *storage_pg(storage *s, uint32_t pg, mrd_msg *msg)
{
    if (pg >= QUORUM_PGS_MAX) {
        mrd_fail(msg, MRD_EINVAL, "pg %" PRIu32 " is beyond the volume's %d", pg, QUORUM_PGS_MAX);
        return NULL;
    }
    if (s->pgs[pg] != NULL) return s->pgs[pg];
    stp *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        mrd_fail(msg, MRD_ENOMEM, "pg %" PRIu32 ": out of memory", pg);
        return NULL;
    }
    stp_config cfg = {.pg = pg,
                      .seg = s->seg,
                      .held_max = s->opts.held_max,
                      .gap_retry_ms = s->opts.gap_retry_ms,
                      .epoch = s->epoch,
                      .fences = s->fences,
                      .n_fences = s->n_fences,
                      .key_durable = seglog_lsn_durable(s->log),
                      .materialized = s->start_base[pg], /* raised by the caller */
                      .base = s->start_base[pg],
                      .base_cpl = s->start_base_cpl[pg],
                      .base_key_max = s->key_start > 0 ? s->key_start - 1 : 0};
    if (stp_init(p, &cfg, msg) != 0) {
        free(p);
        return NULL;
    }
    s->pgs[pg] = p;
    MRD_INFO("pg_open", "pg=%" PRIu32 " segment=%u epoch=%" PRIu64, pg, s->seg, s->epoch);
    return p;
}

uint64_t storage_payload_bytes(const storage *s)
{
    uint64_t total = 0;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
        if (s->pgs[pg] != NULL) total += s->pgs[pg]->payload_bytes;
    return total;
}

/* ---- tick, stop ----------------------------------------------------------------------- */

/*
 * Records leave memory once they are in the page file, complete (SCL) and at
 * or below the VDL a writer reported: no recovery asks below that VDL
 * (docs/quorum.md), and a peer that lacks them gets them from the log.
 */
void storage_forget_tick(storage *s)
{
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        stp *p = s->pgs[pg];
        if (p == NULL || s->pages_stale[pg]) continue;
        uint32_t n = stp_forget(p, s->vdl);
        if (n == 0) continue;
        MRD_DEBUG("forgotten", "pg=%" PRIu32 " records=%" PRIu32 " base=%" PRIu64 " held=%" PRIu32,
                  pg, n, stp_base(p), stp_records(p));
        s->forgotten_unrecorded += n;
    }
    /* A restart forgets again while it reads the log, up to the materialized LSN and VDL
     * the metadata file recorded: record them before that lags by a large part of held_max. */
    if (s->forgotten_unrecorded >= s->opts.held_max / 4) storage_meta_kick(s);
}

static void storage_on_tick(uv_timer_t *t)
{
    storage *s = t->data;
    if (storage_resetting(s)) return; /* nothing moves: the files are going */
    uint64_t now = mrd_now_ms();
    storage_gap_tick(s, now);
    storage_materialize_tick(s, now);
    storage_forget_tick(s);
    storage_metrics_update(s);
    if (now >= s->meta_written_ms + STORAGE_META_REFRESH_MS) storage_meta_kick(s);
}

void storage_maybe_free(storage *s)
{
    if (!s->stopping || s->timer_open || s->sync.active || s->meta.active || s->mat != NULL ||
        s->calls_open > 0 || s->reset.active || s->reset.timer_open)
        return;
    storage_peers_close(s);
    while (s->held_head.next != &s->held_head) /* none once the server has closed */
        storage_unhold(s->held_head.next);
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        if (s->pgs[pg] != NULL) {
            stp_close(s->pgs[pg]);
            free(s->pgs[pg]);
        }
        if (s->page_fd[pg] >= 0) close(s->page_fd[pg]);
    }
    if (s->log != NULL) seglog_close(s->log);
    if (s->tls != NULL) h2_tls_free(s->tls);
    MRD_INFO("storage_closed", "epoch=%" PRIu64, s->epoch);
    free(s);
}

static void storage_timer_closed(uv_handle_t *h)
{
    storage *s = h->data;
    s->timer_open = false;
    storage_maybe_free(s);
}

static void storage_stop(mrd_node *node, void *ud)
{
    storage *s = ud;
    if (s->stopping) return;
    s->stopping = true;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, storage_timer_closed);
    storage_reset_stop(s);
    storage_peers_close(s);
}

/* ---- start ---------------------------------------------------------------------------- */

static int storage_routes(storage *s)
{
    mrd_node *n = s->node;
    int rc = mrd_node_route(n, "POST", "/v1/append", storage_route_append, s);
    if (rc == 0) rc = mrd_node_route(n, "POST", "/v1/fence", storage_route_fence, s);
    if (rc == 0) rc = mrd_node_route(n, "GET", "/v1/report", storage_route_report, s);
    if (rc == 0) rc = mrd_node_route(n, "GET", "/v1/records", storage_route_records, s);
    if (rc == 0) rc = mrd_node_route(n, "GET", "/v1/page", storage_route_page, s);
    if (rc == 0) rc = mrd_node_route(n, "POST", "/v1/reset", storage_route_reset, s);
    return rc;
}

static int storage_new(mrd_node *node, const storage_options *opts, storage **out, mrd_msg *msg)
{
    const topo_region *region = &node->topo.regions[node->self->region];
    int seg = topo_segment_of(region, node->self);
    if (seg < 0)
        return mrd_fail(msg, MRD_EINVAL, "%s is not a storage node of region %s", node->self->id,
                        region->name);
    storage *s = calloc(1, sizeof(*s));
    if (s == NULL) return mrd_fail(msg, MRD_ENOMEM, "storage: out of memory");
    s->node = node;
    s->loop = node->loop;
    s->opts = *opts;
    if (s->opts.held_max == 0) s->opts.held_max = STORAGE_HELD_MAX_DEFAULT;
    if (s->opts.held_max < 2)
        return mrd_fail(msg, MRD_EINVAL, "storage: held_max %" PRIu32 " is below 2",
                        s->opts.held_max);
    if (s->opts.payload_bytes_max == 0) s->opts.payload_bytes_max = STORAGE_PAYLOAD_BYTES_MAX_DEFAULT;
    if (s->opts.gap_retry_ms == 0) s->opts.gap_retry_ms = STORAGE_GAP_RETRY_MS_DEFAULT;
    s->region = region;
    s->seg = (uint8_t)seg;
    s->page_size = node->topo.page_size;
    s->pages_per_pg = node->topo.pg_size_bytes / node->topo.page_size;
    snprintf(s->dir, sizeof(s->dir), "%s", node->data_dir);
    snprintf(s->meta_path, sizeof(s->meta_path), "%s/" STORAGE_META_FILE, s->dir);
    snprintf(s->log_dir, sizeof(s->log_dir), "%s/" STORAGE_LOG_DIR, s->dir);
    snprintf(s->pages_dir, sizeof(s->pages_dir), "%s/" STORAGE_PAGES_DIR, s->dir);
    s->held_head.next = s->held_head.prev = &s->held_head;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
        s->page_fd[pg] = -1;
    seglog_io_posix_init(&s->io);
    *out = s;
    return 0;
}

int storage_start(mrd_node *node, const storage_options *opts, mrd_msg *msg)
{
    storage *s = NULL;
    int rc = storage_new(node, opts, &s, msg);
    if (rc != 0) return rc;
    rc = storage_reset_finish(s, msg); /* a reset a crash or the restart left: finish it */
    if (rc == 0) rc = storage_open_files(s, msg);
    if (rc == 0) rc = storage_replay(s, msg);
    if (rc == 0) rc = storage_peers_init(s, msg);
    if (rc == 0 && storage_routes(s) != 0)
        rc = mrd_fail(msg, MRD_ETOOBIG, "storage: too many routes");
    if (rc != 0) {
        s->stopping = true;
        storage_maybe_free(s);
        return rc;
    }
    storage_metrics_init(s);
    node->status_fn = storage_status;
    node->status_ud = s;
    node->req_close_fn = storage_req_closed;
    node->req_close_ud = s;
    node->stop_fn = storage_stop;
    node->stop_ud = s;
    uv_timer_init(s->loop, &s->timer);
    s->timer.data = s;
    s->timer_open = true;
    uv_timer_start(&s->timer, storage_on_tick, STORAGE_TICK_MS, STORAGE_TICK_MS);
    storage_reset_start_timer(s);
    return 0;
}
