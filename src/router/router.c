/*
 * The router's glue (include/meridian/router.h): endpoint listeners, one
 * HTTP/2 connection per backend instance (health polls and forwarded
 * requests share it), and the forwarding of one request with its retries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/router.h"

#define ROUTER_ENDPOINTS_MAX (2 + TOPO_CUSTOM_MAX + 1)
#define ROUTER_ANSWER_BYTES_MAX (64u << 20)
#define ROUTER_RECONNECT_MS 300
#define READ_ONLY_CODE "\"code\":\"read_only\"" /* how a reader refuses a write */

typedef enum { EP_CLUSTER, EP_READER, EP_CUSTOM, EP_GLOBAL } ep_kind;

typedef struct {
    router *r;
    const topo_node *node; /* an instance */
    h2_client *client;
    bool closing;          /* close the client on the next tick */
    bool up;
    uint64_t lag_ms;
    uint32_t outstanding;
    h2_call *poll;
    uint64_t poll_sent_ms, last_ok_ms, reconnect_at_ms;
    bool polled; /* one poll or connection attempt has ended: up means something */
    mrd_buf poll_body;
} backend;

typedef struct {
    router *r;
    ep_kind kind;
    int region;
    int custom; /* EP_CUSTOM: index into the region's custom endpoints */
    char name[TOPO_NAME_MAX + 8];
    topo_addr addr;
    h2_server *server;
    mrd_metric *m_requests;
} endpoint;

/* One request being forwarded. */
typedef struct fwd fwd;
struct fwd {
    router *r;
    endpoint *ep;
    h2_req *req;      /* NULL once the client's stream has closed */
    h2_call *call;    /* the backend call in flight, or NULL */
    int backend;
    uint64_t tried;   /* bitmask of backends tried */
    int attempts;
    int status;
    uint64_t wait_until_ms; /* parked: no backend could take it yet */
    bool forwarding; /* a write a secondary's reader refused, on its way to the primary */
    fwd *next_parked;
    char content_type[96];
    char headers[6][96];
    mrd_buf body;
};

/* Response headers passed through from the backend. */
static const char *pass_headers[6] = {"meridian-lsn",    "meridian-region", "meridian-instance",
                                      "meridian-lag-ms", "meridian-epoch",  "retry-after"};

struct router {
    mrd_node *node;
    h2_tls *client_tls;
    backend b[ROUTER_BACKENDS_MAX];
    int nb;
    endpoint ep[ROUTER_ENDPOINTS_MAX];
    int nep;
    uv_timer_t timer;
    int rr; /* round-robin position */
    uint32_t outstanding;
    fwd *parked; /* requests waiting for a backend */
    bool stopping;
    mrd_metric *m_retries, *m_unavailable;
};

/* ---- backends and health ---------------------------------------------------------------- */

static void on_connect(h2_client *c, int status, void *ud)
{
    backend *b = ud;
    if (status != 0) {
        b->closing = true;
        b->polled = true;
    }
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    backend *b = ud;
    b->up = false;
    b->closing = true;
}

static void poll_response(h2_call *call, int status, void *ud)
{
    backend *b = ud;
    b->poll_body.len = 0;
    if (status != 200) b->up = false;
}

static void poll_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    backend *b = ud;
    if (b->poll_body.len + len <= 65536) mrd_buf_append(&b->poll_body, data, len);
}

/* A status answer: up, and the reader's lag when it reports one. */
static void poll_close(h2_call *call, int error, void *ud)
{
    backend *b = ud;
    b->poll = NULL;
    b->polled = true;
    if (error != 0) {
        b->up = false;
        return;
    }
    mrd_json_doc doc;
    if (mrd_json_parse((const char *)b->poll_body.data, b->poll_body.len, &doc, NULL) != 0) {
        b->up = false;
        return;
    }
    uint64_t lag = 0;
    mrd_json_get_u64(&doc, mrd_json_root(&doc), "lag_ms", &lag);
    mrd_json_free(&doc);
    b->lag_ms = lag;
    b->up = true;
    b->last_ok_ms = mrd_now_ms();
}

static const h2_call_cbs poll_cbs = {
    .on_response = poll_response, .on_data = poll_data, .on_close = poll_close};

static const h2_client_cbs client_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

static void backend_tick(router *r, backend *b, uint64_t now)
{
    if (b->closing && b->client != NULL) {
        h2_client_close(b->client);
        b->client = NULL;
        b->closing = false;
        b->up = false;
        b->reconnect_at_ms = now + ROUTER_RECONNECT_MS;
    }
    if (b->client == NULL && now >= b->reconnect_at_ms) {
        h2_client_config cc = {.host = b->node->addr.host, .port = b->node->addr.port,
                               .tls = r->client_tls};
        if (h2_client_connect(r->node->loop, &cc, &client_cbs, b, &b->client, NULL) != 0) {
            b->client = NULL;
            b->reconnect_at_ms = now + ROUTER_RECONNECT_MS;
        }
        return;
    }
    if (b->client == NULL || !h2_client_connected(b->client)) return;
    if (b->poll != NULL) {
        if (now - b->poll_sent_ms > ROUTER_POLL_TIMEOUT_MS) b->up = false;
        return;
    }
    if (now - b->poll_sent_ms < ROUTER_POLL_MS && b->poll_sent_ms != 0) return;
    if (h2_client_request(b->client, "GET", "/v1/status", NULL, 0, NULL, 0, true, &poll_cbs, b,
                          &b->poll) == 0)
        b->poll_sent_ms = now;
}

static void retry_parked(router *r);

static void on_timer(uv_timer_t *t)
{
    router *r = t->data;
    uint64_t now = mrd_now_ms();
    for (int i = 0; i < r->nb; i++)
        backend_tick(r, &r->b[i], now);
    retry_parked(r);
}

/* ---- choosing a backend ----------------------------------------------------------------- */

static bool is_member(const router *r, const endpoint *ep, const backend *b)
{
    const topo_region *reg = &r->node->topo.regions[ep->region];
    if (b->node->region != ep->region) return false;
    if (ep->kind == EP_READER) return b->node->role == TOPO_ROLE_READER;
    if (ep->kind != EP_CUSTOM) return false;
    const topo_custom *c = &reg->custom[ep->custom];
    bool listed = false;
    for (int i = 0; i < c->member_count; i++)
        listed = listed || strcmp(c->members[i], b->node->id) == 0;
    return c->exclude ? b->node->role == TOPO_ROLE_READER && !listed : listed;
}

/* The backend for this attempt, or -1 with why filled in. */
static int choose(router *r, endpoint *ep, bool forwarding, uint64_t tried, char *why,
                  size_t why_len)
{
    const topology *topo = &r->node->topo;
    /* A write forwarded from a secondary region goes where the global writer goes. */
    bool to_primary = ep->kind == EP_GLOBAL || forwarding ||
                      (ep->kind == EP_CLUSTER && topo->write_forwarding &&
                       ep->region != topo->primary_region);
    if (ep->kind == EP_CLUSTER || to_primary) {
        int region = to_primary ? topo->primary_region : ep->region;
        const topo_region *reg = &topo->regions[region];
        const char *writer = reg->instances[reg->writer].id;
        for (int i = 0; i < r->nb; i++)
            if (strcmp(r->b[i].node->id, writer) == 0 && !((tried >> i) & 1) &&
                r->b[i].client != NULL && h2_client_connected(r->b[i].client))
                return i;
        snprintf(why, why_len, "the writer %s of region %s is not reachable", writer, reg->name);
        return -1;
    }
    router_backend_view v[ROUTER_BACKENDS_MAX];
    for (int i = 0; i < r->nb; i++) {
        const backend *b = &r->b[i];
        v[i] = (router_backend_view){.up = b->up && b->client != NULL && h2_client_connected(b->client),
                                     .eligible = is_member(r, ep, b),
                                     .lag_ms = b->lag_ms,
                                     .outstanding = b->outstanding};
    }
    int pick = router_pick(v, r->nb, tried, topo->reader_lag_max_ms, r->rr);
    if (pick >= 0) {
        r->rr = pick;
        return pick;
    }
    snprintf(why, why_len, "no reader of the %s endpoint is up with a lag within %u ms",
             ep->name, topo->reader_lag_max_ms);
    return -1;
}

/* ---- forwarding ------------------------------------------------------------------------- */

static void fwd_free(fwd *f)
{
    f->r->outstanding--;
    mrd_buf_free(&f->body);
    free(f);
}

static void fwd_unavailable(fwd *f, int status, const char *code, const char *why)
{
    mrd_metric_inc(f->r->m_unavailable, 1);
    mrd_node_error(f->req, status, code, why);
}

static int forward(fwd *f);

static void call_response(h2_call *call, int status, void *ud)
{
    fwd *f = ud;
    f->status = status;
    const char *ct = h2_call_header(call, "content-type");
    snprintf(f->content_type, sizeof(f->content_type), "%s", ct != NULL ? ct : "application/json");
    for (int i = 0; i < 6; i++) {
        const char *v = h2_call_header(call, pass_headers[i]);
        snprintf(f->headers[i], sizeof(f->headers[i]), "%s", v != NULL ? v : "");
    }
}

static void call_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    fwd *f = ud;
    if (f->body.len + len > ROUTER_ANSWER_BYTES_MAX || mrd_buf_append(&f->body, data, len) != 0)
        h2_call_cancel(call);
}

static void respond(fwd *f)
{
    h2_header h[9];
    size_t n = 0;
    h[n++] = (h2_header){"content-type", f->content_type};
    for (int i = 0; i < 6; i++)
        if (f->headers[i][0] != '\0') h[n++] = (h2_header){pass_headers[i], f->headers[i]};
    h[n++] = (h2_header){"meridian-backend", f->r->b[f->backend].node->id};
    if (f->forwarding) h[n++] = (h2_header){"meridian-forwarded", "primary"};
    h2_req_respond(f->req, f->status, h, n, f->body.data, f->body.len);
}

static void call_close(h2_call *call, int error, void *ud)
{
    fwd *f = ud;
    router *r = f->r;
    f->call = NULL;
    r->b[f->backend].outstanding--;
    if (f->req == NULL) return fwd_free(f); /* the client left */
    if (error == 0 && f->status == 403 && !f->forwarding && r->node->topo.write_forwarding &&
        f->ep->region != r->node->topo.primary_region && f->body.data != NULL &&
        memmem(f->body.data, f->body.len, READ_ONLY_CODE, strlen(READ_ONLY_CODE)) != NULL) {
        f->forwarding = true; /* a write sent to a secondary: on to the primary's writer */
        f->tried = 0;
        f->attempts = 0;
        forward(f);
        return;
    }
    if (error == 0 && f->status != 0) return respond(f);
    if (r->stopping) return fwd_unavailable(f, 503, "unavailable", "the router is stopping");
    bool retry = f->ep->kind == EP_READER || f->ep->kind == EP_CUSTOM || error == MRD_EBUSY;
    if (retry && f->attempts <= ROUTER_RETRIES_MAX) {
        mrd_metric_inc(r->m_retries, 1);
        forward(f); /* sends it on, or answers the client itself */
        return;
    }
    char why[MRD_MSG_MAX];
    snprintf(why, sizeof(why),
             "%s failed before answering (%s): a write it was running may or may not have "
             "committed",
             r->b[f->backend].node->id, mrd_strerror(error));
    fwd_unavailable(f, 502, "backend_failed", why);
}

static const h2_call_cbs call_cbs = {
    .on_response = call_response, .on_data = call_data, .on_close = call_close};

/*
 * Sends f to the next backend. With none to take it, f waits (parked, retried
 * by the timer) up to ROUTER_WAIT_MS — a writer reconnecting, a reader coming
 * back — and then is answered 503 naming why. Non-zero when not sent now.
 */
static int forward(fwd *f)
{
    router *r = f->r;
    char why[MRD_MSG_MAX];
    for (;;) {
        int i = choose(r, f->ep, f->forwarding, f->tried, why, sizeof(why));
        if (i < 0 && f->tried == 0 && !r->stopping) {
            uint64_t now = mrd_now_ms();
            if (f->wait_until_ms == 0) f->wait_until_ms = now + ROUTER_WAIT_MS;
            if (now < f->wait_until_ms) {
                f->next_parked = r->parked;
                r->parked = f;
                return MRD_EBUSY;
            }
        }
        if (i < 0) {
            fwd_unavailable(f, 503, "unavailable", why);
            return MRD_EBUSY;
        }
        f->tried |= 1ull << i;
        f->attempts++;
        f->backend = i;
        f->status = 0;
        f->body.len = 0;
        size_t len = 0;
        const uint8_t *body = h2_req_body(f->req, &len);
        const char *ct = h2_req_header(f->req, "content-type");
        h2_header h[2] = {{"content-type", ct != NULL ? ct : "application/json"},
                          {"meridian-forwarded-by", r->node->self->id}};
        bool has_body = strcmp(h2_req_method(f->req), "GET") != 0;
        if (h2_client_request(r->b[i].client, h2_req_method(f->req), h2_req_path(f->req), h, 2,
                              has_body ? body : NULL, has_body ? len : 0, true, &call_cbs, f,
                              &f->call) == 0) {
            r->b[i].outstanding++;
            return 0;
        }
        r->b[i].closing = true; /* the connection is unusable: reconnect */
    }
}

/* Parked requests try again; those whose client left are freed. */
static void retry_parked(router *r)
{
    fwd *list = r->parked;
    r->parked = NULL;
    while (list != NULL) {
        fwd *f = list;
        list = f->next_parked;
        f->next_parked = NULL;
        if (f->req == NULL)
            fwd_free(f);
        else
            forward(f);
    }
}

static void ep_request(h2_req *req, void *ud)
{
    endpoint *ep = ud;
    router *r = ep->r;
    mrd_metric_inc(ep->m_requests, 1);
    if (r->outstanding >= ROUTER_OUTSTANDING_MAX) {
        mrd_node_error(req, 503, "busy", "the router has too many requests in flight");
        return;
    }
    fwd *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        mrd_node_error(req, 503, "busy", "out of memory");
        return;
    }
    f->r = r;
    f->ep = ep;
    f->req = req;
    mrd_buf_init(&f->body);
    r->outstanding++;
    h2_req_set_ud(req, f);
    forward(f);
}

static bool is_parked(const router *r, const fwd *f)
{
    for (const fwd *p = r->parked; p != NULL; p = p->next_parked)
        if (p == f) return true;
    return false;
}

static void ep_close(h2_req *req, uint32_t error_code, void *ud)
{
    fwd *f = h2_req_ud(req);
    if (f == NULL) return;
    f->req = NULL;
    if (f->call != NULL)
        h2_call_cancel(f->call); /* call_close frees f */
    else if (!is_parked(f->r, f))
        fwd_free(f); /* a parked one is freed by retry_parked */
}

static const h2_server_cbs ep_cbs = {.on_request = ep_request, .on_close = ep_close};

/* ---- set-up, status, stop --------------------------------------------------------------- */

static void add_endpoint(router *r, ep_kind kind, int region, int custom, const char *name,
                         const topo_addr *addr)
{
    endpoint *ep = &r->ep[r->nep++];
    *ep = (endpoint){.r = r, .kind = kind, .region = region, .custom = custom, .addr = *addr};
    snprintf(ep->name, sizeof(ep->name), "%s", name);
    char labels[TOPO_NAME_MAX + 32];
    snprintf(labels, sizeof(labels), "endpoint=\"%s\"", name);
    ep->m_requests = mrd_metric_add(&r->node->metrics, MRD_COUNTER, "meridian_router_requests_total",
                                    labels, "Requests received on an endpoint.");
}

static void collect(router *r)
{
    const topology *topo = &r->node->topo;
    const topo_router *self = topo_router_of(topo, r->node->self);
    int region = r->node->self->region;
    const topo_region *reg = &topo->regions[region];
    if (self->has_cluster) add_endpoint(r, EP_CLUSTER, region, 0, "cluster", &self->cluster);
    if (self->has_reader) add_endpoint(r, EP_READER, region, 0, "reader", &self->reader);
    for (int i = 0; i < reg->custom_count; i++)
        if (self->has_custom[i]) {
            char name[TOPO_NAME_MAX + 8];
            snprintf(name, sizeof(name), "custom:%s", reg->custom[i].name);
            add_endpoint(r, EP_CUSTOM, region, i, name, &self->custom[i]);
        }
    if (self->has_global_writer)
        add_endpoint(r, EP_GLOBAL, region, 0, "global_writer", &self->global_writer);
    for (int g = 0; g < topo->region_count; g++) {
        const topo_region *rg = &topo->regions[g];
        for (int i = 0; i < rg->instance_count && r->nb < ROUTER_BACKENDS_MAX; i++) {
            bool ours = g == region;
            bool other_writer = (self->has_global_writer || topo->write_forwarding) &&
                                i == rg->writer;
            if (!ours && !other_writer) continue;
            backend *b = &r->b[r->nb++];
            b->r = r;
            b->node = &rg->instances[i];
            mrd_buf_init(&b->poll_body);
        }
    }
}

static void status_fn(mrd_node *node, mrd_buf *out, void *ud)
{
    router *r = ud;
    char addr[128];
    mrd_buf_printf(out, ",\"endpoints\":[");
    for (int i = 0; i < r->nep; i++) {
        mrd_buf_printf(out, "%s{\"name\":", i ? "," : "");
        mrd_json_quote(out, r->ep[i].name);
        mrd_buf_printf(out, ",\"address\":");
        mrd_json_quote(out, topo_addr_str(&r->ep[i].addr, addr, sizeof(addr)));
        mrd_buf_printf(out, "}");
    }
    mrd_buf_printf(out, "],\"backends\":[");
    for (int i = 0; i < r->nb; i++) {
        const backend *b = &r->b[i];
        mrd_buf_printf(out, "%s{\"id\":", i ? "," : "");
        mrd_json_quote(out, b->node->id);
        mrd_buf_printf(out, ",\"role\":\"%s\",\"up\":%s,\"lag_ms\":%llu,\"outstanding\":%u}",
                       topo_role_name(b->node->role), b->up ? "true" : "false",
                       (unsigned long long)b->lag_ms, b->outstanding);
    }
    mrd_buf_printf(out, "]");
}

/* Ready once every backend has been looked at: the first requests go where they should. */
static bool ready_fn(mrd_node *node, void *ud)
{
    router *r = ud;
    for (int i = 0; i < r->nb; i++)
        if (!r->b[i].polled) return false;
    return true;
}

static void stop_fn(mrd_node *node, void *ud)
{
    router *r = ud;
    r->stopping = true;
    retry_parked(r); /* each gets its 503 now */
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
    for (int i = 0; i < r->nep; i++)
        if (r->ep[i].server != NULL) h2_server_close(r->ep[i].server, NULL, NULL);
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].client != NULL) {
            h2_client_close(r->b[i].client);
            r->b[i].client = NULL;
        }
}

int router_start(mrd_node *node, router **out, mrd_msg *msg)
{
    router *r = calloc(1, sizeof(*r));
    if (r == NULL) return mrd_fail(msg, MRD_ENOMEM, "router: out of memory");
    r->node = node;
    int rc = mrd_node_client_tls(node, &r->client_tls, msg);
    if (rc != 0) return free(r), rc;
    collect(r);
    r->m_retries = mrd_metric_add(&node->metrics, MRD_COUNTER, "meridian_router_retries_total",
                                  NULL, "Requests retried on another reader.");
    r->m_unavailable = mrd_metric_add(&node->metrics, MRD_COUNTER,
                                      "meridian_router_unavailable_total", NULL,
                                      "Requests answered 502/503: no backend could take them.");
    for (int i = 0; i < r->nep; i++) {
        h2_server_config sc = {.host = r->ep[i].addr.host, .port = r->ep[i].addr.port,
                               .tls = node->tls};
        rc = h2_server_start(node->loop, &sc, &ep_cbs, &r->ep[i], &r->ep[i].server, msg);
        if (rc != 0) return rc; /* the process exits: nothing to unwind */
    }
    uv_timer_init(node->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_timer, 0, ROUTER_POLL_MS / 5);
    node->status_fn = status_fn;
    node->status_ud = r;
    node->stop_fn = stop_fn;
    node->stop_ud = r;
    node->ready_fn = ready_fn;
    node->ready_ud = r;
    *out = r;
    return 0;
}
