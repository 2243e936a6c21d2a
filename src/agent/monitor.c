/*
 * In-region writer failover (docs/failover.md). The agent asks every instance
 * of its region for GET /v1/status every AG_PROBE_MS. When the instance the
 * region state names as writer has not answered for settings.writer_timeout_ms
 * (its process is gone, or hangs), the agent names another writer: among the
 * readers that answered lately, the lowest priority tier
 * (topology `priority`), then the least lag, then the lowest id. The change is
 * a new region state (writer, writer_gen + 1), kept durably like any other:
 * the chosen reader restarts as the writer and recovers the volume at a new
 * volume epoch, so storage refuses the old writer from then on; the old one,
 * if it comes back, sees it is not the writer and runs as a reader.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"
#include "meridian/json.h"

#define AG_PROBE_MS 100u
#define AG_PROBE_TIMEOUT_MS 1000u
#define AG_PROBE_FRESH_MS 1000u /* a reader answered within this: a candidate */
/* A writer just named (a reader restarting into the writer) has this long, or
 * writer_timeout_ms when longer, to first answer as the writer before another is named:
 * a slow start is not a second failure. */
#define AG_WRITER_START_MS 5000u

static void probe_connect(h2_client *c, int status, void *ud);
static void probe_disconnect(h2_client *c, int error, void *ud);
static const h2_client_cbs probe_client_cbs = {.on_connect = probe_connect,
                                               .on_disconnect = probe_disconnect};

static void probe_fail(ag_probe *p)
{
    p->call = NULL;
    if (p->client != NULL) p->closing = true;
    p->retry_at_ms = mrd_now_ms() + AG_PROBE_MS;
}

static void p_response(h2_call *call, int status, void *ud)
{
    ((ag_probe *)ud)->status = status;
}

static void p_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    ag_probe *p = ud;
    if (p->body.len + len <= 65536) mrd_buf_append(&p->body, data, len);
}

static void p_close(h2_call *call, int error, void *ud)
{
    ag_probe *p = ud;
    if (p->call == NULL) return;
    p->call = NULL;
    if (error != 0 || p->status != 200) return probe_fail(p);
    mrd_json_doc d;
    mrd_msg msg = {{0}};
    if (mrd_json_parse((const char *)p->body.data, p->body.len, &d, &msg) != 0)
        return probe_fail(p);
    const mrd_json *root = mrd_json_root(&d);
    const mrd_json *role = mrd_json_get(&d, root, "role");
    snprintf(p->role, sizeof(p->role), "%s",
             role != NULL && role->kind == MRD_JSON_STRING ? mrd_json_str(&d, role) : "");
    p->lag_ms = UINT64_MAX;
    mrd_json_get_u64(&d, root, "lag_ms", &p->lag_ms);
    mrd_json_free(&d);
    p->last_ok_ms = mrd_now_ms();
    p->retry_at_ms = p->last_ok_ms + AG_PROBE_MS;
}

static const h2_call_cbs probe_call_cbs = {.on_response = p_response, .on_data = p_data,
                                           .on_close = p_close};

static void ask(ag_probe *p)
{
    p->status = 0;
    p->body.len = 0;
    p->sent_ms = mrd_now_ms();
    if (h2_client_request(p->client, "GET", "/v1/status", NULL, 0, NULL, 0, true, &probe_call_cbs,
                          p, &p->call) != 0)
        probe_fail(p);
}

static void probe_connect(h2_client *c, int status, void *ud)
{
    ag_probe *p = ud;
    if (status != 0) return probe_fail(p);
    ask(p);
}

static void probe_disconnect(h2_client *c, int error, void *ud)
{
    ag_probe *p = ud;
    p->call = NULL;
    p->closing = true;
}

static void probe_tick(agent *a, ag_probe *p, uint64_t now)
{
    if (p->closing) {
        if (p->client != NULL) h2_client_close(p->client);
        p->client = NULL;
        p->call = NULL;
        p->closing = false;
    }
    if (p->call != NULL) {
        if (now - p->sent_ms > AG_PROBE_TIMEOUT_MS) { /* hangs: drop the connection */
            h2_call *c = p->call;
            p->call = NULL;
            h2_call_cancel(c);
            probe_fail(p);
        }
        return;
    }
    if (now < p->retry_at_ms) return;
    if (p->client == NULL) {
        h2_client_config cc = {.host = p->node->addr.host, .port = p->node->addr.port,
                               .tls = a->client_tls};
        p->sent_ms = now;
        if (h2_client_connect(a->node->loop, &cc, &probe_client_cbs, p, &p->client, NULL) != 0) {
            p->client = NULL;
            p->retry_at_ms = now + AG_PROBE_MS;
        }
        return;
    }
    if (h2_client_connected(p->client)) ask(p);
}

/* The reader to promote, or NULL. */
static const ag_probe *best_reader(agent *a, uint64_t now)
{
    const ag_probe *best = NULL;
    for (int i = 0; i < a->region->instance_count; i++) {
        const ag_probe *p = &a->probes[i];
        if (strcmp(p->node->id, a->rs.writer) == 0 || p->last_ok_ms == 0 ||
            now - p->last_ok_ms > AG_PROBE_FRESH_MS || strcmp(p->role, "reader") != 0)
            continue;
        if (best == NULL || p->node->priority < best->node->priority ||
            (p->node->priority == best->node->priority &&
             (p->lag_ms < best->lag_ms ||
              (p->lag_ms == best->lag_ms && strcmp(p->node->id, best->node->id) < 0))))
            best = p;
    }
    return best;
}

void ag_monitor_tick(agent *a, uint64_t now)
{
    for (int i = 0; i < a->region->instance_count; i++)
        probe_tick(a, &a->probes[i], now);
    uint32_t timeout = a->node->topo.writer_timeout_ms;
    if (timeout == 0 || now < a->settle_until_ms || a->rejoin[0]) return;
    const ag_probe *w = NULL;
    for (int i = 0; i < a->region->instance_count; i++)
        if (strcmp(a->probes[i].node->id, a->rs.writer) == 0) w = &a->probes[i];
    if (w == NULL) return;
    /* silent since its last answer as the writer, or since it was named */
    bool started = w->last_ok_ms >= a->writer_since_ms && strcmp(w->role, "writer") == 0;
    uint64_t seen = started ? w->last_ok_ms : a->writer_since_ms;
    uint32_t allowed = started || timeout >= AG_WRITER_START_MS ? timeout : AG_WRITER_START_MS;
    if (now - seen <= allowed) {
        a->no_candidate_said = false;
        return;
    }
    const ag_probe *c = best_reader(a, now);
    if (c == NULL) {
        if (!a->no_candidate_said)
            MRD_ERROR("writer_failover_blocked",
                      "writer=%s silent_ms=%" PRIu64
                      " reason=\"no reader of the region answers\"",
                      a->rs.writer, now - seen);
        a->no_candidate_said = true;
        return;
    }
    rg_state n = a->rs;
    snprintf(n.writer, sizeof(n.writer), "%s", c->node->id);
    n.writer_gen++;
    MRD_WARN("writer_failover",
             "old=%s new=%s silent_ms=%" PRIu64 " priority=%d lag_ms=%" PRIu64, a->rs.writer,
             c->node->id, now - seen, c->node->priority, c->lag_ms);
    mrd_msg msg = {{0}};
    if (ag_region_apply(a, &n, "writer_failover", &msg) == 0) a->writer_since_ms = now;
}

void ag_monitor_start(agent *a)
{
    a->writer_since_ms = mrd_now_ms();
    for (int i = 0; i < a->region->instance_count; i++) {
        ag_probe *p = &a->probes[i];
        p->node = &a->region->instances[i];
        mrd_buf_init(&p->body);
    }
}

void ag_monitor_stop(agent *a)
{
    for (int i = 0; i < a->region->instance_count; i++) {
        ag_probe *p = &a->probes[i];
        if (p->client != NULL) h2_client_close(p->client);
        p->client = NULL;
        p->call = NULL;
        mrd_buf_free(&p->body);
    }
}
