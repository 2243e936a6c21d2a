/*
 * The recovery point objective (settings.rpo_seconds). In the primary region,
 * with an RPO set and at least one secondary region, the writer asks its
 * region's agent for every secondary's lag (the agent measures it with the
 * primary's clock) every WR_RPO_POLL_MS. While no secondary lags at most the
 * RPO — or the agent cannot say — the writer is "blocked": it refuses new
 * writes before running them (503 rpo_exceeded, nothing applied) and holds
 * the answers of commits already made; it unblocks by itself as soon as one
 * secondary is within the RPO again, and the held answers leave then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "writer_int.h"

bool wr_rpo_applies(const writer *w)
{
    const topology *t = &w->node->topo;
    return t->rpo_seconds > 0 && t->region_count > 1 && w->node->self->region == t->primary_region;
}

static void set_blocked(writer *w, bool blocked, const char *why)
{
    snprintf(w->rpo_why, sizeof(w->rpo_why), "%s", why);
    if (blocked == __atomic_load_n(&w->rpo_blocked, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&w->rpo_blocked, blocked, __ATOMIC_RELEASE);
    mrd_metric_set(w->m_rpo_blocked, blocked ? 1 : 0);
    if (blocked)
        MRD_WARN("rpo_blocked", "rpo_seconds=%u reason=\"%s\"", w->node->topo.rpo_seconds, why);
    else
        MRD_INFO("rpo_resumed", "rpo_seconds=%u", w->node->topo.rpo_seconds);
}

/* The agent's answer: blocked unless some secondary lags at most the RPO. */
static void judge(writer *w, const mrd_buf *body)
{
    mrd_json_doc d;
    if (mrd_json_parse((const char *)body->data, body->len, &d, NULL) != 0)
        return set_blocked(w, true, "the region's agent gave no readable status");
    uint64_t limit_ms = (uint64_t)w->node->topo.rpo_seconds * 1000, best = UINT64_MAX;
    char best_name[TOPO_NAME_MAX] = "";
    const mrd_json *regions = mrd_json_get(&d, mrd_json_root(&d), "regions");
    for (const mrd_json *r = mrd_json_first(&d, regions); r != NULL; r = mrd_json_next(&d, r)) {
        const char *role = mrd_json_str(&d, mrd_json_get(&d, r, "role"));
        uint64_t lag;
        if (role == NULL || strcmp(role, "secondary") != 0 ||
            !mrd_json_get_u64(&d, r, "lag_ms", &lag) || lag >= best)
            continue;
        best = lag;
        const char *name = mrd_json_str(&d, mrd_json_get(&d, r, "name"));
        snprintf(best_name, sizeof(best_name), "%s", name ? name : "?");
    }
    mrd_json_free(&d);
    char why[MRD_MSG_MAX];
    if (best == UINT64_MAX)
        snprintf(why, sizeof(why), "the region's agent reports no secondary region");
    else
        snprintf(why, sizeof(why), "the closest secondary region, %s, lags %llu ms; rpo_seconds is %u",
                 best_name, (unsigned long long)best, w->node->topo.rpo_seconds);
    set_blocked(w, best > limit_ms, why);
}

static void poll_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    writer *w = ud;
    if (w->rpo_body.len + len <= 65536) mrd_buf_append(&w->rpo_body, data, len);
}

static void poll_close(h2_call *call, int error, void *ud)
{
    writer *w = ud;
    w->rpo_call = NULL;
    w->rpo_reported = true;
    if (error != 0)
        set_blocked(w, true, "the region's agent does not answer: no secondary is known to be within the RPO");
    else
        judge(w, &w->rpo_body);
    wr_rpo_release(w);
}

static const h2_call_cbs poll_cbs = {.on_data = poll_data, .on_close = poll_close};

static void on_connect(h2_client *c, int status, void *ud)
{
    writer *w = ud;
    if (status != 0) w->rpo_closing = true;
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    ((writer *)ud)->rpo_closing = true;
}

static const h2_client_cbs agent_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

static void on_tick(uv_timer_t *t)
{
    writer *w = t->data;
    if (w->rpo_closing && w->rpo_client != NULL) {
        h2_client_close(w->rpo_client);
        w->rpo_client = NULL;
        w->rpo_closing = false;
        set_blocked(w, true, "the region's agent cannot be reached");
        return;
    }
    if (w->rpo_client == NULL) {
        const topo_node *agent = &w->region->agent;
        h2_client_config cc = {.host = agent->addr.host, .port = agent->addr.port,
                               .tls = w->client_tls};
        if (h2_client_connect(w->node->loop, &cc, &agent_cbs, w, &w->rpo_client, NULL) != 0)
            w->rpo_client = NULL;
        return;
    }
    if (w->rpo_call != NULL || !h2_client_connected(w->rpo_client)) return;
    w->rpo_body.len = 0;
    if (h2_client_request(w->rpo_client, "GET", "/v1/status", NULL, 0, NULL, 0, true, &poll_cbs, w,
                          &w->rpo_call) != 0)
        w->rpo_closing = true;
}

int wr_rpo_start(writer *w, mrd_msg *msg)
{
    if (!wr_rpo_applies(w)) return 0;
    int rc = mrd_node_client_tls(w->node, &w->client_tls, msg);
    if (rc != 0) return rc;
    mrd_buf_init(&w->rpo_body);
    set_blocked(w, true, "waiting for the first report of the region's agent");
    uv_timer_init(w->node->loop, &w->rpo_timer);
    w->rpo_timer.data = w;
    uv_timer_start(&w->rpo_timer, on_tick, 0, WRITER_RPO_POLL_MS);
    w->rpo_running = true;
    return 0;
}

void wr_rpo_stop(writer *w)
{
    if (!w->rpo_running) return;
    w->rpo_running = false;
    uv_timer_stop(&w->rpo_timer);
    uv_close((uv_handle_t *)&w->rpo_timer, NULL);
    if (w->rpo_client != NULL) h2_client_close(w->rpo_client);
    w->rpo_client = NULL;
    __atomic_store_n(&w->rpo_blocked, false, __ATOMIC_RELEASE);
    wr_rpo_release(w);
}

bool wr_rpo_blocked(const writer *w)
{
    return __atomic_load_n(&w->rpo_blocked, __ATOMIC_ACQUIRE);
}

void wr_rpo_status(const writer *w, mrd_buf *out)
{
    if (!wr_rpo_applies(w)) return;
    mrd_buf_printf(out, ",\"rpo\":{\"seconds\":%u,\"blocked\":%s,\"held_answers\":%u,\"reason\":",
                   w->node->topo.rpo_seconds, wr_rpo_blocked(w) ? "true" : "false", w->n_held);
    mrd_json_quote(out, w->rpo_why);
    mrd_buf_printf(out, "}");
}
