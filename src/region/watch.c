/*
 * rg_watch (include/meridian/region.h): follows one agent's region state with
 * long polls (GET /v1/region?after=VERSION, which the agent holds until the
 * state changes or RG_POLL_HOLD_MS pass), reconnecting when the agent goes
 * away. The callback sees each new state, and each failure to ask.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/region.h"

#define RG_WATCH_RETRY_MS 25u
#define RG_WATCH_TIMEOUT_MS (RG_POLL_HOLD_MS + 2000u)

struct rg_watch {
    uv_loop_t *loop;
    const topology *topo;
    int region;
    h2_tls *tls;
    rg_watch_cb cb;
    void *ud;
    h2_client *client;
    h2_call *call;
    bool closing_client; /* closed from the timer, never from its own callbacks */
    uint64_t sent_ms;
    int status;
    mrd_buf body;
    bool have;
    rg_state st;
    uint64_t retry_at_ms;
    uv_timer_t timer;
    bool stopped;
    bool eager; /* ask with now=1: an agent answers at once even while it starts */
    bool fresh_next;   /* rg_watch_refresh: the next question asks fresh=1 ... */
    bool report_next;  /* ... and its answer is reported even when nothing changed */
    bool dropping;     /* the call in flight was dropped by a refresh: its end is not news */
};

static void on_connect(h2_client *c, int status, void *ud);
static void on_disconnect(h2_client *c, int error, void *ud);
static const h2_client_cbs client_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

static void failed(rg_watch *w, int err)
{
    if (w->report_next) w->fresh_next = true; /* a refresh not answered yet: ask fresh again */
    w->closing_client = w->client != NULL;
    w->retry_at_ms = mrd_now_ms() + RG_WATCH_RETRY_MS;
    if (!w->stopped) w->cb(w, NULL, err, w->ud);
}

static void on_response(h2_call *call, int status, void *ud)
{
    ((rg_watch *)ud)->status = status;
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    rg_watch *w = ud;
    if (w->body.len + len <= RG_STATE_BYTES_MAX * 4) mrd_buf_append(&w->body, data, len);
}

static void on_close(h2_call *call, int error, void *ud)
{
    rg_watch *w = ud;
    w->call = NULL;
    if (w->stopped) return;
    if (w->dropping) { /* a refresh dropped it: ask again at once */
        w->dropping = false;
        w->retry_at_ms = 0;
        return;
    }
    if (error != 0 || w->status != 200) {
        if (error == 0)
            MRD_WARN("region_watch_refused", "region=%s status=%d",
                     w->topo->regions[w->region].name, w->status);
        return failed(w, error != 0 ? error : MRD_EPROTO);
    }
    rg_state s;
    mrd_msg msg = {{0}};
    /* the agent answers {"state":{...},...}: the state is the object under "state" */
    int rc = rg_state_decode_answer(w->topo, (const char *)w->body.data, w->body.len, &s, &msg);
    if (rc != 0) {
        MRD_WARN("region_watch_bad_answer", "region=%s reason=\"%s\"",
                 w->topo->regions[w->region].name, msg.text);
        return failed(w, rc);
    }
    bool changed = !w->have || s.version != w->st.version || s.epoch != w->st.epoch ||
                   strcmp(s.primary, w->st.primary) != 0 || strcmp(s.writer, w->st.writer) != 0 ||
                   (w->report_next && !w->fresh_next);
    if (!w->fresh_next) w->report_next = false;
    w->have = true;
    w->st = s;
    if (changed) w->cb(w, &w->st, 0, w->ud);
}

static const h2_call_cbs call_cbs = {.on_response = on_response, .on_data = on_data,
                                     .on_close = on_close};

static void ask(rg_watch *w)
{
    char path[64];
    if (w->fresh_next) { /* what the agent holds once it has heard from the others again;
                          * agents asking each other: what it holds now (no cascade) */
        w->fresh_next = false;
        snprintf(path, sizeof(path), "/v1/region?%s", w->eager ? "now=1" : "fresh=1");
    } else if (w->have)
        snprintf(path, sizeof(path), "/v1/region?after=%" PRIu64 "%s", w->st.version,
                 w->eager ? "&now=1" : "");
    else
        snprintf(path, sizeof(path), "/v1/region%s", w->eager ? "?now=1" : "");
    w->status = 0;
    w->body.len = 0;
    w->sent_ms = mrd_now_ms();
    if (h2_client_request(w->client, "GET", path, NULL, 0, NULL, 0, true, &call_cbs, w,
                          &w->call) != 0) {
        w->call = NULL;
        failed(w, MRD_ECONN);
    }
}

static void on_connect(h2_client *c, int status, void *ud)
{
    rg_watch *w = ud;
    if (w->stopped) return;
    if (status != 0) return failed(w, status);
    ask(w);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    rg_watch *w = ud;
    if (w->stopped) return;
    w->closing_client = true;
    w->retry_at_ms = mrd_now_ms() + RG_WATCH_RETRY_MS;
}

static void on_timer(uv_timer_t *t)
{
    rg_watch *w = t->data;
    uint64_t now = mrd_now_ms();
    if (w->closing_client && w->client != NULL) {
        h2_client_close(w->client); /* its call's on_close runs, then on_disconnect */
        w->client = NULL;
        w->call = NULL;
    }
    w->closing_client = false;
    if (w->client == NULL) {
        if (now < w->retry_at_ms) return;
        const topo_node *a = &w->topo->regions[w->region].agent;
        h2_client_config cc = {.host = a->addr.host, .port = a->addr.port, .tls = w->tls};
        if (h2_client_connect(w->loop, &cc, &client_cbs, w, &w->client, NULL) != 0) {
            w->client = NULL;
            failed(w, MRD_ECONN);
        }
        return;
    }
    if (!h2_client_connected(w->client)) return;
    if (w->call == NULL) {
        if (now >= w->retry_at_ms) ask(w);
        return;
    }
    if (now - w->sent_ms > RG_WATCH_TIMEOUT_MS) { /* an agent that stopped answering */
        MRD_WARN("region_watch_timeout", "region=%s", w->topo->regions[w->region].name);
        failed(w, MRD_ETIMEDOUT);
    }
}

int rg_watch_start(uv_loop_t *loop, const topology *t, int region, h2_tls *tls, rg_watch_cb cb,
                   void *ud, rg_watch **out, mrd_msg *msg)
{
    rg_watch *w = calloc(1, sizeof(*w));
    if (w == NULL) return mrd_fail(msg, MRD_ENOMEM, "region watch: out of memory");
    w->loop = loop;
    w->topo = t;
    w->region = region;
    w->tls = tls;
    w->cb = cb;
    w->ud = ud;
    mrd_buf_init(&w->body);
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_timer, 0, 20);
    *out = w;
    return 0;
}

void rg_watch_refresh(rg_watch *w)
{
    w->fresh_next = true;
    w->report_next = true;
    if (w->call != NULL) {
        w->dropping = true;
        h2_call_cancel(w->call);
    }
}

void rg_watch_set_eager(rg_watch *w)
{
    w->eager = true;
}

static void timer_closed(uv_handle_t *h)
{
    rg_watch *w = h->data;
    mrd_buf_free(&w->body);
    free(w);
}

void rg_watch_stop(rg_watch *w)
{
    if (w == NULL) return;
    w->stopped = true;
    uv_timer_stop(&w->timer);
    if (w->client != NULL) h2_client_close(w->client);
    w->client = NULL;
    uv_close((uv_handle_t *)&w->timer, timer_closed);
}
