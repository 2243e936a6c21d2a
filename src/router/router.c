/*
 * The router's glue (include/meridian/router.h): endpoint listeners, one
 * HTTP/2 connection per backend instance (health polls and forwarded
 * requests share it), one region-state watch per region, and the forwarding
 * of one request with its retries and redirects.
 *
 * What the router follows: views[g] holds the last state region g's agent
 * gave (reachable = heard at least once; a state stays known while its agent
 * is away). From them follow() derives the primary region and epoch
 * (rg_highest), each region's writer instance, and which backends to keep a
 * connection to: every instance of the router's own region, and in the other
 * regions only their current writers.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/region.h"
#include "meridian/router.h"

#define ROUTER_ENDPOINTS_MAX (2 + TOPO_CUSTOM_MAX + 1)
#define ROUTER_ANSWER_BYTES_MAX (64u << 20)
#define ROUTER_TICK_MS 25          /* connections and polls are looked after this often */
#define ROUTER_RECONNECT_MIN_MS 25 /* after a failed connect; doubles up to ROUTER_RECONNECT_MS */
#define ROUTER_RECONNECT_MS 300
#define ROUTER_PARKED_RETRY_MS 25 /* parked requests try again this often, and at every kick */
#define ROUTER_SETTLE_MS 3000      /* ready without every agent's word once this long has passed */
#define ROUTER_CODE_MAX 32
#define READ_ONLY_CODE "\"code\":\"read_only\"" /* how a reader refuses a write */

typedef enum { EP_CLUSTER, EP_READER, EP_CUSTOM, EP_GLOBAL } ep_kind;

typedef struct {
    router *r;
    const topo_node *node; /* an instance */
    int inst;              /* its index in its region's instances */
    bool wanted;           /* keep a connection: the own region's, another region's writer */
    h2_client *client;
    bool closing;        /* close the client on the next tick */
    uint64_t backoff_ms; /* before the next connect: 0 after a connection worked (a
                            restarting instance listens again within ms), then doubling */
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

/* One region's agent, followed. */
typedef struct {
    router *r;
    int region;
    rg_watch *watch;
    bool failing; /* its last ask failed (logged once per outage) */
} region_watch;

/* One request being forwarded. */
typedef struct fwd fwd;
struct fwd {
    router *r;
    endpoint *ep;
    h2_req *req;   /* NULL once the client's stream has closed */
    h2_call *call; /* the backend call in flight, or NULL */
    int backend;
    int avoid;      /* a backend that just refused it, -1: none */
    uint64_t tried; /* bitmask of the own region's backends tried */
    int failures;   /* backends that failed before answering (reader-like retries) */
    int redirects;  /* refusals it was sent again after */
    bool refused;   /* status, headers and body hold the last refusal */
    int status;
    uint64_t wait_until_ms; /* when it stops waiting for a backend (0: not waited yet) */
    bool forwarding;        /* a write a secondary's reader refused, on its way to the primary */
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
    int bidx[TOPO_REGIONS_MAX][TOPO_INSTANCES_MAX]; /* each instance's backend, -1: none */
    endpoint ep[ROUTER_ENDPOINTS_MAX];
    int nep;
    region_watch watch[TOPO_REGIONS_MAX];
    rg_view views[TOPO_REGIONS_MAX]; /* reachable: its agent has answered at least once */
    int writer[TOPO_REGIONS_MAX];    /* each region's writer instance (index) */
    int primary;                     /* the primary region at the highest epoch known */
    uint64_t epoch;                  /* that epoch */
    uv_timer_t timer, kick;
    bool kicked;                 /* parked requests go at the next on_timer */
    uint64_t parked_retry_at_ms; /* else not before this */
    uint64_t started_ms;
    bool ready; /* latched: every backend looked at, every agent heard (or settled) */
    int rr;     /* round-robin position */
    uint32_t outstanding;
    fwd *parked; /* requests waiting for a backend */
    bool stopping;
    mrd_metric *m_retries, *m_unavailable, *m_redirects, *m_epoch;
};

static void kick(router *r);

/* ---- backends and health ---------------------------------------------------------------- */

static bool usable(const backend *b)
{
    return b->client != NULL && !b->closing && h2_client_connected(b->client);
}

static void on_connect(h2_client *c, int status, void *ud)
{
    backend *b = ud;
    if (status != 0) {
        b->closing = true;
        b->polled = true;
        b->backoff_ms = b->backoff_ms == 0 ? ROUTER_RECONNECT_MIN_MS : b->backoff_ms * 2;
        if (b->backoff_ms > ROUTER_RECONNECT_MS) b->backoff_ms = ROUTER_RECONNECT_MS;
        return;
    }
    b->backoff_ms = 0;
    kick(b->r); /* requests waiting for this backend go now */
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
    /* a broken connection is replaced (after backoff_ms), one no longer wanted goes once it
     * is idle */
    if (b->client != NULL && (b->closing || (!b->wanted && b->outstanding == 0))) {
        h2_client_close(b->client); /* may call on_disconnect */
        b->client = NULL;
        b->up = false;
        b->closing = false;
        b->reconnect_at_ms = now + b->backoff_ms;
    }
    if (!b->wanted) return;
    if (b->client == NULL && now >= b->reconnect_at_ms) {
        h2_client_config cc = {
            .host = b->node->addr.host, .port = b->node->addr.port, .tls = r->client_tls};
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

/* The tick, and a kick (a region's state changed, a backend connected): connections, polls,
 * and parked requests (every ROUTER_PARKED_RETRY_MS, and at once after a kick). */
static void on_timer(uv_timer_t *t)
{
    router *r = t->data;
    if (r->stopping) return;
    uint64_t now = mrd_now_ms();
    for (int i = 0; i < r->nb; i++)
        backend_tick(r, &r->b[i], now);
    if (!r->kicked && now < r->parked_retry_at_ms) return;
    r->kicked = false;
    r->parked_retry_at_ms = now + ROUTER_PARKED_RETRY_MS;
    retry_parked(r);
}

/* Runs on_timer from the loop soon, off the stack of whatever callback asked for it. */
static void kick(router *r)
{
    if (r->stopping) return;
    r->kicked = true;
    uv_timer_start(&r->kick, on_timer, 0, 0);
}

/* ---- the regions' states ---------------------------------------------------------------- */

/*
 * From the states heard: the primary region at the highest epoch (the
 * topology's before any agent answered), each region's writer (its state's,
 * else the topology's), and which backends the router keeps connections to.
 */
static void follow(router *r)
{
    const topology *t = &r->node->topo;
    const rg_state *h = rg_highest(r->views, t->region_count);
    int p = h != NULL ? topo_region_index(t, h->primary) : -1;
    int primary = p >= 0 ? p : t->primary_region;
    uint64_t epoch = h != NULL ? h->epoch : 0;
    if (primary != r->primary || epoch != r->epoch)
        MRD_INFO("router_primary", "primary=%s epoch=%" PRIu64 " was_primary=%s was_epoch=%" PRIu64,
                 t->regions[primary].name, epoch, t->regions[r->primary].name, r->epoch);
    r->primary = primary;
    r->epoch = epoch;
    mrd_metric_set(r->m_epoch, (double)epoch);
    for (int g = 0; g < t->region_count; g++) {
        const topo_region *reg = &t->regions[g];
        int w = r->views[g].reachable ? topo_instance_index(reg, r->views[g].st.writer) : -1;
        if (w < 0) w = reg->writer;
        if (w != r->writer[g])
            MRD_INFO("router_writer", "region=%s writer=%s was=%s", reg->name, reg->instances[w].id,
                     reg->instances[r->writer[g]].id);
        r->writer[g] = w;
    }
    int own = r->node->self->region;
    for (int i = 0; i < r->nb; i++) {
        backend *b = &r->b[i];
        b->wanted = b->node->region == own || b->inst == r->writer[b->node->region];
    }
}

static void on_region_state(rg_watch *w, const rg_state *st, int err, void *ud)
{
    region_watch *x = ud;
    router *r = x->r;
    const char *name = r->node->topo.regions[x->region].name;
    if (r->stopping) return;
    if (st == NULL) {
        if (!x->failing)
            MRD_WARN("router_region_unheard", "region=%s err=%s known=%s", name, mrd_errname(err),
                     r->views[x->region].reachable ? "yes" : "no");
        x->failing = true;
        return;
    }
    x->failing = false;
    r->views[x->region].reachable = true;
    r->views[x->region].st = *st;
    MRD_INFO("router_region_state",
             "region=%s epoch=%" PRIu64 " primary=%s writer=%s writer_gen=%" PRIu64
             " op=%s version=%" PRIu64,
             name, st->epoch, st->primary, st->writer, st->writer_gen,
             st->op == RG_OP_SWITCHOVER ? "switchover" : "none", st->version);
    follow(r);
    kick(r); /* parked requests are resolved anew at once */
}

/* ---- choosing a backend ----------------------------------------------------------------- */

/* Whether b serves ep's reads: never the region's current writer. */
static bool is_member(const router *r, const endpoint *ep, const backend *b)
{
    const topo_region *reg = &r->node->topo.regions[ep->region];
    if (b->node->region != ep->region || b->inst == r->writer[ep->region]) return false;
    if (ep->kind == EP_READER) return true;
    if (ep->kind != EP_CUSTOM) return false;
    const topo_custom *c = &reg->custom[ep->custom];
    bool listed = false;
    for (int i = 0; i < c->member_count; i++)
        listed = listed || strcmp(c->members[i], b->node->id) == 0;
    return c->exclude ? !listed : listed;
}

/* Whether f goes to a writer: the cluster or global writer endpoint, or forwarded. */
static bool to_writer(const router *r, const fwd *f)
{
    return f->ep->kind == EP_CLUSTER || f->ep->kind == EP_GLOBAL || f->forwarding;
}

/* Whether f goes to the primary region's writer rather than its own region's. */
static bool to_primary(const router *r, const fwd *f)
{
    const topology *t = &r->node->topo;
    return f->ep->kind == EP_GLOBAL || f->forwarding ||
           (f->ep->kind == EP_CLUSTER && t->write_forwarding && f->ep->region != r->primary);
}

/*
 * Region g's writer for f, or -1 with why. A region whose state is below the
 * highest epoch known gets no writes while it may take them: when it is the
 * primary sought, or its own state says it is the primary (a stale primary).
 */
static int choose_writer(router *r, const fwd *f, int g, bool primary_sought, char *why,
                         size_t why_len)
{
    const topo_region *reg = &r->node->topo.regions[g];
    const rg_view *v = &r->views[g];
    bool claims = v->reachable && strcmp(v->st.primary, reg->name) == 0;
    if (v->reachable && v->st.epoch < r->epoch && (primary_sought || claims)) {
        snprintf(why, why_len,
                 "region %s's state is at epoch %" PRIu64 ", below the highest known (%" PRIu64
                 ", primary %s): no writes go there until it follows",
                 reg->name, v->st.epoch, r->epoch, r->node->topo.regions[r->primary].name);
        return -1;
    }
    const char *id = reg->instances[r->writer[g]].id;
    int i = r->bidx[g][r->writer[g]];
    if (i < 0 || !usable(&r->b[i])) {
        snprintf(why, why_len, "the writer %s of region %s is not reachable", id, reg->name);
        return -1;
    }
    if (i == f->avoid) {
        snprintf(why, why_len, "the writer %s of region %s refused the request", id, reg->name);
        return -1;
    }
    return i;
}

/* The backend for this attempt, or -1 with why filled in. */
static int choose(router *r, const fwd *f, char *why, size_t why_len)
{
    const topology *topo = &r->node->topo;
    endpoint *ep = f->ep;
    if (to_writer(r, f)) {
        bool p = to_primary(r, f);
        return choose_writer(r, f, p ? r->primary : ep->region, p, why, why_len);
    }
    router_backend_view v[ROUTER_BACKENDS_MAX];
    for (int i = 0; i < r->nb; i++) {
        const backend *b = &r->b[i];
        v[i] = (router_backend_view){.up = b->up && usable(b) && i != f->avoid,
                                     .eligible = is_member(r, ep, b),
                                     .lag_ms = b->lag_ms,
                                     .outstanding = b->outstanding};
    }
    int pick = router_pick(v, r->nb, f->tried, topo->reader_lag_max_ms, r->rr);
    if (pick >= 0) {
        r->rr = pick;
        return pick;
    }
    snprintf(why, why_len, "no reader of the %s endpoint is up with a lag within %u ms", ep->name,
             topo->reader_lag_max_ms);
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

/* Whether the call that just ended was refused before the backend did anything. */
static bool was_refused(fwd *f, int error, char *code, size_t code_max)
{
    router *r = f->r;
    if (error == MRD_EBUSY) { /* the stream was refused unprocessed (REFUSED_STREAM) */
        snprintf(code, code_max, "refused_stream");
        return true;
    }
    if (error != 0) return false;
    const backend *b = &r->b[f->backend];
    return router_refusal(f->status, f->body.data, f->body.len, to_writer(r, f),
                          b->node->region == r->primary, code, code_max);
}

/*
 * f was refused before anything was done with it: it goes again, to where the
 * target is now (resolved anew; the refuser is avoided until f has waited),
 * within ROUTER_WAIT_MS and ROUTER_REDIRECTS_MAX; past them the refusal is
 * the answer.
 */
static void redirect(fwd *f, const char *code)
{
    router *r = f->r;
    uint64_t now = mrd_now_ms();
    if (f->redirects++ == 0) mrd_metric_inc(r->m_redirects, 1);
    f->refused = true;
    f->avoid = f->backend;
    if (f->backend < 64) f->tried |= 1ull << f->backend;
    if (f->wait_until_ms == 0) f->wait_until_ms = now + ROUTER_WAIT_MS;
    if (r->stopping || f->redirects > ROUTER_REDIRECTS_MAX || now >= f->wait_until_ms) {
        MRD_INFO("router_refused", "endpoint=%s backend=%s code=%s redirects=%d", f->ep->name,
                 r->b[f->backend].node->id, code, f->redirects);
        mrd_metric_inc(r->m_unavailable, 1);
        if (f->status == 0) /* a refused stream has no answer of its own */
            return mrd_node_error(f->req, 503, "unavailable",
                                  "the backend refused the request unprocessed");
        return respond(f);
    }
    forward(f);
}

static void call_close(h2_call *call, int error, void *ud)
{
    fwd *f = ud;
    router *r = f->r;
    const topology *topo = &r->node->topo;
    f->call = NULL;
    r->b[f->backend].outstanding--;
    if (f->req == NULL) return fwd_free(f); /* the client left */
    if (error == 0 && f->status == 403 && !to_writer(r, f) && topo->write_forwarding &&
        f->ep->region != r->primary && f->body.data != NULL &&
        memmem(f->body.data, f->body.len, READ_ONLY_CODE, strlen(READ_ONLY_CODE)) != NULL) {
        f->forwarding = true; /* a write sent to a secondary: on to the primary's writer */
        f->tried = 0;
        f->avoid = -1;
        forward(f);
        return;
    }
    char code[ROUTER_CODE_MAX];
    if (was_refused(f, error, code, sizeof(code))) return redirect(f, code);
    if (error == 0 && f->status != 0) return respond(f);
    /* it may have run: only a read (reader-like endpoints) goes again; a write's outcome is
     * unknown, also when the router's stop cut the call */
    bool retry = f->ep->kind == EP_READER || f->ep->kind == EP_CUSTOM;
    if (retry && ++f->failures <= ROUTER_RETRIES_MAX) {
        mrd_metric_inc(r->m_retries, 1);
        f->refused = false;
        forward(f); /* sends it on, or answers the client itself */
        return;
    }
    char why[MRD_MSG_MAX];
    snprintf(why, sizeof(why),
             "%s failed before answering (%s%s): a write it was running may or may not have "
             "committed",
             r->b[f->backend].node->id, mrd_strerror(error),
             r->stopping ? "; the router is stopping" : "");
    fwd_unavailable(f, 502, "backend_failed", why);
}

static const h2_call_cbs call_cbs = {
    .on_response = call_response, .on_data = call_data, .on_close = call_close};

/*
 * No backend takes f now. Unless a backend already failed it (a reader-like
 * request that ran out of readers), f waits — parked, tried again at every
 * tick and at once when a region's state changes or a backend connects — up
 * to ROUTER_WAIT_MS; then it is answered: with the last refusal as the
 * backend gave it, else 503 unavailable naming why.
 */
static int no_backend(fwd *f, const char *why)
{
    router *r = f->r;
    uint64_t now = mrd_now_ms();
    if (!r->stopping && (f->failures == 0 || f->refused)) {
        if (f->wait_until_ms == 0) f->wait_until_ms = now + ROUTER_WAIT_MS;
        if (now < f->wait_until_ms) {
            if (f->refused) f->tried = 0; /* next time any backend may take it */
            f->avoid = -1;
            f->next_parked = r->parked;
            r->parked = f;
            return MRD_EBUSY;
        }
    }
    if (f->refused && f->status != 0) { /* a refused stream has no answer to pass on */
        mrd_metric_inc(r->m_unavailable, 1);
        respond(f);
    } else {
        fwd_unavailable(f, 503, "unavailable", r->stopping ? "the router is stopping" : why);
    }
    return MRD_EBUSY;
}

/* Sends f to the backend choose() names, or parks or answers it (no_backend). Non-zero when
 * not sent now. */
static int forward(fwd *f)
{
    router *r = f->r;
    char why[MRD_MSG_MAX];
    for (;;) {
        int i = r->stopping ? -1 : choose(r, f, why, sizeof(why));
        if (i < 0) return no_backend(f, why);
        if (i < 64) f->tried |= 1ull << i;
        f->backend = i;
        f->status = 0;
        f->refused = false;
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
        r->b[i].closing = true; /* the connection is unusable: reconnect (usable() skips it) */
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
    f->avoid = -1;
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
    ep->m_requests =
        mrd_metric_add(&r->node->metrics, MRD_COUNTER, "meridian_router_requests_total", labels,
                       "Requests received on an endpoint.");
}

static void add_backend(router *r, int g, int i)
{
    const topo_region *rg = &r->node->topo.regions[g];
    backend *b = &r->b[r->nb];
    b->r = r;
    b->node = &rg->instances[i];
    b->inst = i;
    mrd_buf_init(&b->poll_body);
    r->bidx[g][i] = r->nb++;
}

/* Endpoints, and backends: the own region's instances first (router_pick's tried mask covers
 * them), then, when writes may leave the region, every other region's (only its writer is
 * connected to, whichever instance that is). */
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
    for (int g = 0; g < TOPO_REGIONS_MAX; g++)
        for (int i = 0; i < TOPO_INSTANCES_MAX; i++)
            r->bidx[g][i] = -1;
    for (int i = 0; i < reg->instance_count; i++)
        add_backend(r, region, i);
    bool others = self->has_global_writer || topo->write_forwarding;
    for (int g = 0; others && g < topo->region_count; g++)
        for (int i = 0; g != region && i < topo->regions[g].instance_count; i++)
            add_backend(r, g, i);
}

static void status_fn(mrd_node *node, mrd_buf *out, void *ud)
{
    router *r = ud;
    const topology *t = &node->topo;
    char addr[128];
    mrd_buf_printf(out, ",\"primary\":");
    mrd_json_quote(out, t->regions[r->primary].name);
    mrd_buf_printf(out, ",\"epoch\":%" PRIu64 ",\"regions\":[", r->epoch);
    for (int g = 0; g < t->region_count; g++) {
        const rg_view *v = &r->views[g];
        mrd_buf_printf(out, "%s{\"name\":", g ? "," : "");
        mrd_json_quote(out, t->regions[g].name);
        mrd_buf_printf(out, ",\"writer\":");
        mrd_json_quote(out, t->regions[g].instances[r->writer[g]].id);
        mrd_buf_printf(out, ",\"heard\":%s", v->reachable ? "true" : "false");
        if (v->reachable) {
            mrd_buf_printf(out, ",\"state\":{");
            rg_state_encode(&v->st, out);
            mrd_buf_printf(out, "}");
        }
        mrd_buf_printf(out, "}");
    }
    mrd_buf_printf(out, "],\"endpoints\":[");
    for (int i = 0; i < r->nep; i++) {
        mrd_buf_printf(out, "%s{\"name\":", i ? "," : "");
        mrd_json_quote(out, r->ep[i].name);
        mrd_buf_printf(out, ",\"address\":");
        mrd_json_quote(out, topo_addr_str(&r->ep[i].addr, addr, sizeof(addr)));
        mrd_buf_printf(out, "}");
    }
    mrd_buf_printf(out, "],\"backends\":[");
    bool first = true;
    for (int i = 0; i < r->nb; i++) {
        const backend *b = &r->b[i];
        if (!b->wanted && b->client == NULL) continue; /* another region's non-writer */
        bool writer = b->inst == r->writer[b->node->region];
        mrd_buf_printf(out, "%s{\"id\":", first ? "" : ",");
        first = false;
        mrd_json_quote(out, b->node->id);
        mrd_buf_printf(out, ",\"role\":\"%s\",\"up\":%s,\"lag_ms\":%llu,\"outstanding\":%u}",
                       writer ? "writer" : "reader", b->up ? "true" : "false",
                       (unsigned long long)b->lag_ms, b->outstanding);
    }
    mrd_buf_printf(out, "]");
}

/* Ready once every backend has been looked at and every region's agent answered (or
 * ROUTER_SETTLE_MS passed): the first requests go where they should. It stays ready. */
static bool ready_fn(mrd_node *node, void *ud)
{
    router *r = ud;
    if (r->ready) return true;
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].wanted && !r->b[i].polled) return false;
    bool heard = true;
    for (int g = 0; g < node->topo.region_count; g++)
        heard = heard && r->views[g].reachable;
    if (!heard && mrd_now_ms() - r->started_ms < ROUTER_SETTLE_MS) return false;
    r->ready = true;
    return true;
}

static void stop_fn(mrd_node *node, void *ud)
{
    router *r = ud;
    r->stopping = true;
    retry_parked(r); /* each gets its 503 now */
    for (int g = 0; g < node->topo.region_count; g++) {
        rg_watch_stop(r->watch[g].watch);
        r->watch[g].watch = NULL;
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
    uv_timer_stop(&r->kick);
    uv_close((uv_handle_t *)&r->kick, NULL);
    for (int i = 0; i < r->nep; i++)
        if (r->ep[i].server != NULL) h2_server_close(r->ep[i].server, NULL, NULL);
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].client != NULL) {
            h2_client_close(r->b[i].client);
            r->b[i].client = NULL;
        }
}

static void add_metrics(router *r)
{
    mrd_metrics *m = &r->node->metrics;
    r->m_retries = mrd_metric_add(m, MRD_COUNTER, "meridian_router_retries_total", NULL,
                                  "Requests retried on another reader.");
    r->m_unavailable = mrd_metric_add(m, MRD_COUNTER, "meridian_router_unavailable_total", NULL,
                                      "Requests answered 502/503: no backend could take them.");
    r->m_redirects =
        mrd_metric_add(m, MRD_COUNTER, "meridian_router_redirects_total", NULL,
                       "Requests sent again because a backend refused them before doing "
                       "anything (draining, secondary_region, fenced, unavailable, busy, a "
                       "refused stream).");
    r->m_epoch = mrd_metric_add(m, MRD_GAUGE, "meridian_router_epoch", NULL,
                                "The global epoch of the primary region the router follows.");
}

int router_start(mrd_node *node, router **out, mrd_msg *msg)
{
    router *r = calloc(1, sizeof(*r));
    if (r == NULL) return mrd_fail(msg, MRD_ENOMEM, "router: out of memory");
    r->node = node;
    int rc = mrd_node_client_tls(node, &r->client_tls, msg);
    if (rc != 0) return free(r), rc;
    collect(r);
    add_metrics(r);
    const topology *t = &node->topo;
    r->primary = t->primary_region;
    for (int g = 0; g < t->region_count; g++)
        r->writer[g] = t->regions[g].writer;
    follow(r);
    r->started_ms = mrd_now_ms();
    for (int i = 0; i < r->nep; i++) {
        h2_server_config sc = {
            .host = r->ep[i].addr.host, .port = r->ep[i].addr.port, .tls = node->tls};
        rc = h2_server_start(node->loop, &sc, &ep_cbs, &r->ep[i], &r->ep[i].server, msg);
        if (rc != 0) return rc; /* the process exits: nothing to unwind */
    }
    for (int g = 0; g < t->region_count; g++) {
        r->watch[g] = (region_watch){.r = r, .region = g};
        rc = rg_watch_start(node->loop, t, g, r->client_tls, on_region_state, &r->watch[g],
                            &r->watch[g].watch, msg);
        if (rc != 0) return rc;
    }
    uv_timer_init(node->loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(node->loop, &r->kick);
    r->kick.data = r;
    uv_timer_start(&r->timer, on_timer, 0, ROUTER_TICK_MS);
    node->status_fn = status_fn;
    node->status_ud = r;
    node->stop_fn = stop_fn;
    node->stop_ud = r;
    node->ready_fn = ready_fn;
    node->ready_ud = r;
    *out = r;
    return 0;
}
