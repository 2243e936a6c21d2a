/*
 * append: the list-append workload of the fault harness, and the reader of its final
 * state (docs/torture-checkers.md has the whole story; tools/torturelib/check_append.py
 * judges what these two write).
 *
 * Each of N clients runs one operation at a time: an append of a value never used
 * before (id-base + 1, + 2, ... over all clients) to one of K keys, or a read of one
 * key's whole list. An append is one transaction inserting the row (k, v) into
 * appends; a key's list is its rows in the order of their AUTOINCREMENT id, which is
 * commit order (rows are never deleted, ids never reused). No UNIQUE constraint holds
 * v: a value applied twice would show twice, and the checker would see it.
 *
 * Every operation settles as one line of the log, with its start and end on the
 * machine's monotonic clock, so that the checker can order operations of several
 * processes in real time:
 *
 *   append ok|fail|unknown CLIENT KEY V LSN START_MS END_MS CODE
 *   read ok|fail CLIENT KEY LSN TAG V1,V2,...|- START_MS END_MS CONSISTENCY CODE
 *
 * An append refused before anything of it ran (a 503 whose code or message says so,
 * ap_refusal, or a stream refused unprocessed) is sent again with the same value,
 * AP_RETRY_MS later, until it is answered or the run ends (then it failed: no attempt
 * was applied). A 4xx failed. Anything else — a 502, a 5xx that may follow a commit, a
 * reset stream, a lost connection, no answer within --op-timeout-ms — is unknown and
 * never sent again: the value may or may not be in the list, and the client goes on with
 * a fresh one. A read is never sent again.
 *
 * Keys rotate: after --appends-per-key appends a key is retired and a fresh one takes
 * its place, so that lists stay short enough to be read whole over a long run. Keys are
 * key-base + 1, + 2, ...; values and keys of one run stay below base + AP_RUN_VALUES.
 * Without --id-base, setup takes a run number from the table append_runs and the run
 * uses values from run * AP_RUN_VALUES: runs never share a value.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meridian/vbench.h"
#include "sqlload.h"

#define AP_CLIENTS_MAX 1024
#define AP_KEYS_MAX 1000
#define AP_APPENDS_PER_KEY_MAX 10000 /* lists far below the 100,000 rows of an answer */
#define AP_RUN_VALUES 1000000000ull  /* values, and keys, one run may use */
#define AP_OP_TIMEOUT_MS_MAX 600000
#define AP_TICK_MS 10           /* timeouts, retries and reconnects are looked at */
#define AP_RETRY_MS 20          /* the pause before a refused append goes again */
#define AP_RECONNECT_MS 100     /* the pause before a failed connection is tried again */
#define AP_READ_WAIT_MS 5000    /* timeout_ms of a read: how long a reader may wait */
#define AP_CANCEL_GRACE_MS 2000 /* a cancelled call still open then: its connection goes */
#define AP_DRAIN_MS 15000       /* after the run: answers awaited, then connections closed */
#define AP_ANSWER_BYTES_MAX (8u << 20)
#define AP_CODE_MAX 48
#define AP_TAG_MAX 160
#define AP_CHECK_KEYS_MAX 100000    /* keys append-check takes from a log */
#define AP_CHECK_PAGE_ROWS 50000    /* rows per read (answers stop at 100,000 rows) */
#define AP_CHECK_ROWS_MAX 20000000u /* rows append-check reads */
#define AP_CHECK_WAIT_MS 10000      /* timeout_ms of its reads */
#define AP_LOG_LINE_BYTES_MAX (4u << 20)

typedef struct ap_run ap_run;

/* One HTTP/2 connection: to --addr (appends) or --read-addr (reads). */
typedef struct {
    ap_run *r;
    topo_addr addr;
    h2_client *c;
    bool connecting;
    uint64_t connect_ns; /* connecting since; or, not connected, no new attempt before */
} ap_conn;

typedef enum { AP_IDLE, AP_APPEND, AP_READ } ap_op;

typedef struct {
    ap_run *r;
    int index;
    ap_op op;       /* the operation under way */
    bool busy;      /* a request of it is in flight */
    bool cancelled; /* that request passed its timeout and was cancelled */
    bool too_large; /* its answer passed AP_ANSWER_BYTES_MAX */
    h2_call *call;
    ap_conn *conn;
    uint64_t key, v;
    uint32_t attempts;
    uint64_t start_ns, sent_ns, retry_ns;
    char code[AP_CODE_MAX]; /* the append's last refusal */
    uint64_t lsn_acked;     /* after_lsn of session reads: the last acknowledged append, or setup */
    int status;
    mrd_buf body;
} ap_client;

struct ap_run {
    const ap_config *cfg;
    uv_loop_t loop;
    uv_timer_t timer;
    ap_conn conns[2]; /* appends; reads, when they have an address of their own */
    int n_conns;
    ap_client clients[AP_CLIENTS_MAX];
    uint64_t slot_key[AP_KEYS_MAX], slot_appends[AP_KEYS_MAX];
    uint64_t id_base, key_base;
    uint64_t values, keys; /* handed out so far */
    uint64_t keys_used;    /* keys given at least one append */
    vb_rng rng;
    FILE *log;
    uint64_t start_ns, deadline_ns, drain_ns, end_ns;
    vb_lat lat_append, lat_read;
    uint64_t ok, fail, unknown, retries, reads, read_fail;
};

static void ap_step(ap_client *cl);

static double ap_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static bool ap_more(const ap_run *r)
{
    return mrd_now_ns() < r->deadline_ns && r->values < AP_RUN_VALUES - 1 &&
           r->keys < AP_RUN_VALUES - 1;
}

static void ap_log(ap_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ap_log(ap_run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
}

/* ---- answers --------------------------------------------------------------------------------- */

/* What an answer says, for the log: one word each. */
typedef struct {
    uint64_t lsn;
    char code[AP_CODE_MAX]; /* the error's code, "-" for none */
    char tag[AP_TAG_MAX];   /* region/instance that answered, "-" when unsaid */
    bool nothing_applied;   /* a refusal given before anything ran */
    char message[160];      /* the error's message, for a person reading the log */
} ap_reply;

/* The messages of 503 unavailable given before a request ran: the writer's and reader's
 * (the list of src/router/refusal.c) and the router's own, when it found no backend
 * (src/router/router.c). Any other 503 unavailable may follow a commit ("commit failed",
 * "the writer cannot make commits durable"): its append is unknown, never sent again. */
static const char *ap_before_running[] = {
    "the writer is ",
    "the reader is ",
    "the instance is starting",
    "cannot begin a transaction",
    "the backend refused the request unprocessed",
    "the router is stopping",
    "no reader of ",
};

static bool ap_unavailable_before_running(const char *msg)
{
    for (size_t i = 0; i < sizeof(ap_before_running) / sizeof(ap_before_running[0]); i++)
        if (strncmp(msg, ap_before_running[i], strlen(ap_before_running[i])) == 0) return true;
    /* the router: "the writer W of region R is not reachable", "... refused the request",
     * "region R's state is at epoch E, below the highest known ..." (ids hold no space) */
    int n = -1;
    if (sscanf(msg, "the writer %*s of region %*s %n", &n) >= 0 && n > 0)
        return strcmp(msg + n, "is not reachable") == 0 ||
               strcmp(msg + n, "refused the request") == 0;
    n = -1;
    return sscanf(msg, "region %*s state is at epoch %n", &n) >= 0 && n > 0;
}

/* 503 codes that say nothing of the request was applied (docs/sql.md, "Errors"). */
static bool ap_refusal(const char *code, const char *msg)
{
    static const char *codes[] = {"busy",        "retry", "fenced", "draining", "secondary_region",
                                  "rpo_exceeded"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i]) == 0) return true;
    return strcmp(code, "unavailable") == 0 && ap_unavailable_before_running(msg);
}

static void ap_word(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src != NULL && src[0] != '\0' ? src : "-");
    for (char *p = dst; *p != '\0'; p++)
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') *p = '_';
}

/* Cells of result 0's rows, each an integer, as "v1,v2,..." ("-": none). -1 when the answer
 * is not rows of one integer each. */
static int ap_list(const mrd_json_doc *d, mrd_buf *list)
{
    const mrd_json *res = mrd_json_first(d, mrd_json_get(d, mrd_json_root(d), "results"));
    const mrd_json *rows = mrd_json_get(d, res, "rows");
    if (rows == NULL || rows->kind != MRD_JSON_ARRAY) return -1;
    list->len = 0;
    for (const mrd_json *row = mrd_json_first(d, rows); row != NULL; row = mrd_json_next(d, row)) {
        const mrd_json *v = mrd_json_first(d, row);
        if (v == NULL || !v->is_int) return -1;
        if (mrd_buf_printf(list, "%s%" PRId64, list->len ? "," : "", v->i) != 0) return -1;
    }
    return list->len == 0 ? mrd_buf_printf(list, "-") : 0;
}

/* Reads the client's answer; for a read (list not NULL), its list: -1 when it has none. */
static int ap_reply_parse(const ap_client *cl, ap_reply *out, mrd_buf *list)
{
    *out = (ap_reply){.code = "-", .tag = "-"};
    mrd_json_doc d;
    if (cl->body.len == 0 || cl->too_large ||
        mrd_json_parse((const char *)cl->body.data, cl->body.len, &d, NULL) != 0)
        return -1;
    const mrd_json *root = mrd_json_root(&d), *err = mrd_json_get(&d, root, "error");
    mrd_json_get_u64(&d, root, "lsn", &out->lsn);
    const char *region = mrd_json_str(&d, mrd_json_get(&d, root, "region"));
    const char *instance = mrd_json_str(&d, mrd_json_get(&d, root, "instance"));
    if (region != NULL && instance != NULL) {
        char tag[AP_TAG_MAX];
        snprintf(tag, sizeof(tag), "%.70s/%.70s", region, instance);
        ap_word(out->tag, sizeof(out->tag), tag);
    }
    const char *code = mrd_json_str(&d, mrd_json_get(&d, err, "code"));
    const char *msg = mrd_json_str(&d, mrd_json_get(&d, err, "message"));
    if (code != NULL) ap_word(out->code, sizeof(out->code), code);
    if (msg != NULL) snprintf(out->message, sizeof(out->message), "%s", msg);
    for (char *p = out->message; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    out->nothing_applied =
        cl->status == 503 && code != NULL && ap_refusal(code, msg != NULL ? msg : "");
    int rc = list != NULL && cl->status == 200 ? ap_list(&d, list) : -1;
    mrd_json_free(&d);
    return rc;
}

/* ---- operations --------------------------------------------------------------------------- */

/* The next operation: a read of a key, or an append of a new value to one. */
static void ap_pick(ap_client *cl)
{
    ap_run *r = cl->r;
    const ap_config *cfg = r->cfg;
    uint64_t slot = vb_rng_next(&r->rng) % (uint64_t)cfg->keys;
    cl->attempts = 0;
    cl->key = r->slot_key[slot];
    if ((int)(vb_rng_next(&r->rng) % 100) < cfg->reads_percent) {
        cl->op = AP_READ;
        cl->conn = &r->conns[r->n_conns - 1];
        return;
    }
    cl->op = AP_APPEND;
    cl->conn = &r->conns[0];
    cl->v = r->id_base + ++r->values;
    if (r->slot_appends[slot] == 0)
        r->keys_used++;
    if (++r->slot_appends[slot] >= cfg->appends_per_key) { /* retired: a fresh key takes over */
        r->slot_key[slot] = r->key_base + ++r->keys;
        r->slot_appends[slot] = 0;
    }
}

static void ap_body(const ap_client *cl, char *body, size_t size)
{
    const ap_config *cfg = cl->r->cfg;
    if (cl->op == AP_APPEND) {
        snprintf(body, size,
                 "{\"sql\":\"INSERT INTO appends (k, v) VALUES (?, ?)\",\"params\":[%" PRIu64
                 ",%" PRIu64 "]}",
                 cl->key, cl->v);
        return;
    }
    snprintf(body, size,
             "{\"sql\":\"SELECT v FROM appends WHERE k = ? ORDER BY id\",\"params\":[%" PRIu64
             "],\"consistency\":\"%s\",\"after_lsn\":%" PRIu64 ",\"timeout_ms\":%d}",
             cl->key, cfg->consistency, cl->lsn_acked, AP_READ_WAIT_MS);
}

static void on_response(h2_call *call, int status, void *ud)
{
    ((ap_client *)ud)->status = status;
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    ap_client *cl = ud;
    if (cl->body.len + len > AP_ANSWER_BYTES_MAX || mrd_buf_append(&cl->body, data, len) != 0)
        cl->too_large = true;
}

static void ap_append_log(ap_client *cl, const char *outcome, uint64_t lsn, const char *code)
{
    ap_log(cl->r, "append %s %" PRIu64 ".%d %" PRIu64 " %" PRIu64 " %" PRIu64 " %.3f %.3f %s\n",
           outcome, cl->r->id_base, cl->index, cl->key, cl->v, lsn, ap_ms(cl->start_ns),
           ap_ms(mrd_now_ns()), code);
    cl->op = AP_IDLE;
}

/* The append's answer: acknowledged, refused (sent again later), failed or unknown. */
static void ap_append_settle(ap_client *cl, int error)
{
    ap_run *r = cl->r;
    ap_reply a;
    ap_reply_parse(cl, &a, NULL);
    if (error == 0 && cl->status == 200) {
        vb_lat_add(&r->lat_append, (mrd_now_ns() - cl->start_ns) / 1000);
        r->ok++;
        if (a.lsn > cl->lsn_acked) cl->lsn_acked = a.lsn;
        return ap_append_log(cl, "ok", a.lsn, "-");
    }
    /* MRD_EBUSY: the server refused the stream unprocessed */
    if (error == MRD_EBUSY || (error == 0 && a.nothing_applied)) {
        snprintf(cl->code, sizeof(cl->code), "%s", error != 0 ? "refused_stream" : a.code);
        cl->retry_ns = mrd_now_ns() + AP_RETRY_MS * 1000000ull;
        return;
    }
    if (error == 0 && cl->status >= 400 && cl->status < 500) { /* refused as it is */
        r->fail++;
        return ap_append_log(cl, "fail", 0, a.code);
    }
    char code[AP_CODE_MAX];
    if (error != 0)
        snprintf(code, sizeof(code), "%s", cl->cancelled ? "timeout" : "reset");
    else if (strcmp(a.code, "-") == 0)
        snprintf(code, sizeof(code), "http_%d", cl->status);
    else
        snprintf(code, sizeof(code), "%s", a.code);
    r->unknown++;
    if (a.message[0] != '\0') /* why it may have been applied: a comment for the checker */
        ap_log(r, "# append %" PRIu64 " unknown: %s\n", cl->v, a.message);
    ap_append_log(cl, "unknown", 0, code);
}

static void ap_read_settle(ap_client *cl, int error)
{
    ap_run *r = cl->r;
    const char *cons = r->cfg->consistency;
    ap_reply a;
    mrd_buf list;
    mrd_buf_init(&list);
    int rc = ap_reply_parse(cl, &a, &list);
    double start = ap_ms(cl->start_ns), end = ap_ms(mrd_now_ns());
    if (error == 0 && cl->status == 200 && rc == 0) {
        vb_lat_add(&r->lat_read, (mrd_now_ns() - cl->start_ns) / 1000);
        r->reads++;
        ap_log(r, "read ok %" PRIu64 ".%d %" PRIu64 " %" PRIu64 " %s %s %.3f %.3f %s -\n",
               r->id_base, cl->index, cl->key, a.lsn, a.tag, (const char *)list.data, start, end,
               cons);
    } else {
        const char *code = error != 0            ? (cl->cancelled ? "timeout" : "reset")
                           : cl->too_large       ? "too_large"
                           : cl->status == 200   ? "bad_answer"
                           : strcmp(a.code, "-") ? a.code
                                                 : "no_code";
        if (error == 0 && cl->status == 200)
            fprintf(stderr, "sqlload append: a read answer without a list of integers: %.200s\n",
                    (const char *)cl->body.data);
        r->read_fail++;
        ap_log(r, "read fail %" PRIu64 ".%d %" PRIu64 " 0 %s - %.3f %.3f %s %s\n", r->id_base,
               cl->index, cl->key, a.tag, start, end, cons, code);
    }
    mrd_buf_free(&list);
    cl->op = AP_IDLE;
}

static void on_close(h2_call *call, int error, void *ud)
{
    ap_client *cl = ud;
    cl->busy = false;
    cl->call = NULL;
    if (cl->op == AP_APPEND)
        ap_append_settle(cl, error);
    else
        ap_read_settle(cl, error);
    ap_step(cl);
}

static const h2_call_cbs ap_call_cbs = {
    .on_response = on_response, .on_data = on_data, .on_close = on_close};

/* The run is over with the client's operation never answered: an append that was only ever
 * refused failed; one never sent, and a read, leave no trace. */
static void ap_abandon(ap_client *cl)
{
    if (cl->op == AP_APPEND && cl->attempts > 0) {
        cl->r->fail++;
        ap_append_log(cl, "fail", 0, cl->code);
    }
    cl->op = AP_IDLE;
}

/* Sends the client's operation (a new one, or a refused append again) when it may go. */
static void ap_step(ap_client *cl)
{
    ap_run *r = cl->r;
    if (cl->busy) return;
    if (!ap_more(r)) return ap_abandon(cl);
    if (cl->op == AP_IDLE) ap_pick(cl);
    uint64_t now = mrd_now_ns();
    if (cl->attempts > 0 && now < cl->retry_ns) return;
    h2_client *c = cl->conn->c;
    if (c == NULL || !h2_client_connected(c)) return;
    char body[512];
    ap_body(cl, body, sizeof(body));
    cl->body.len = 0;
    cl->status = 0;
    cl->cancelled = cl->too_large = false;
    h2_header h = {"content-type", "application/json"};
    if (h2_client_request(c, "POST", "/v1/sql", &h, 1, body, strlen(body), true, &ap_call_cbs, cl,
                          &cl->call) != 0)
        return; /* not sent: the connection's trouble shows at the next tick */
    cl->busy = true;
    cl->sent_ns = now;
    if (cl->attempts++ == 0)
        cl->start_ns = now;
    else
        r->retries++;
}

/* ---- connections and the clock ------------------------------------------------------------ */

static void on_connect(h2_client *c, int status, void *ud)
{
    ap_conn *cn = ud;
    if (c != cn->c) return;
    cn->connecting = false;
    cn->connect_ns = mrd_now_ns() + AP_RECONNECT_MS * 1000000ull;
    if (status != 0) return;
    for (int i = 0; i < cn->r->cfg->clients; i++)
        ap_step(&cn->r->clients[i]);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    ap_conn *cn = ud;
    if (c == cn->c) cn->connecting = false;
}

static const h2_client_cbs ap_client_cbs = {.on_connect = on_connect,
                                            .on_disconnect = on_disconnect};

/* Closes the connection: every call still on it closes with an error (their ops unknown). */
static void ap_conn_drop(ap_conn *cn)
{
    h2_client *c = cn->c;
    if (c == NULL) return;
    cn->c = NULL;
    cn->connecting = false;
    cn->connect_ns = mrd_now_ns() + AP_RECONNECT_MS * 1000000ull;
    h2_client_close(c);
}

/* Replaces a connection that failed, dropped, or hangs in its connect. */
static void ap_conn_tick(ap_conn *cn, uint64_t now)
{
    ap_run *r = cn->r;
    uint64_t timeout_ns = r->cfg->op_timeout_ms * 1000000ull;
    if (cn->c != NULL && cn->connecting && now - cn->connect_ns > timeout_ns) ap_conn_drop(cn);
    if (cn->c != NULL && !cn->connecting && !h2_client_connected(cn->c)) ap_conn_drop(cn);
    if (cn->c != NULL || !ap_more(r) || now < cn->connect_ns) return;
    h2_client_config cc = {.host = cn->addr.host, .port = cn->addr.port, .tls = r->cfg->tls};
    cn->connecting = true;
    cn->connect_ns = now;
    if (h2_client_connect(&r->loop, &cc, &ap_client_cbs, cn, &cn->c, NULL) != 0) {
        cn->c = NULL;
        cn->connecting = false;
        cn->connect_ns = now + AP_RECONNECT_MS * 1000000ull;
    }
}

/* Cancels calls past their timeout; closes the connection of one that a cancel did not
 * end. How many calls are still in flight. */
static int ap_timeouts(ap_run *r, uint64_t now)
{
    uint64_t timeout_ns = r->cfg->op_timeout_ms * 1000000ull;
    int busy = 0;
    for (int i = 0; i < r->cfg->clients; i++) {
        ap_client *cl = &r->clients[i];
        if (!cl->busy) continue;
        if (!cl->cancelled && now - cl->sent_ns >= timeout_ns) {
            cl->cancelled = true;
            h2_call_cancel(cl->call);
        } else if (cl->cancelled &&
                   now - cl->sent_ns >= timeout_ns + AP_CANCEL_GRACE_MS * 1000000ull)
            ap_conn_drop(cl->conn);
        busy += cl->busy;
    }
    return busy;
}

static void ap_finish(ap_run *r)
{
    for (int i = 0; i < r->cfg->clients; i++)
        ap_abandon(&r->clients[i]);
    r->end_ns = mrd_now_ns();
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, NULL);
    for (int i = 0; i < r->n_conns; i++)
        ap_conn_drop(&r->conns[i]);
}

static void on_timer(uv_timer_t *t)
{
    ap_run *r = t->data;
    uint64_t now = mrd_now_ns();
    int busy = ap_timeouts(r, now);
    if (!ap_more(r)) {
        if (r->drain_ns == 0) r->drain_ns = now + AP_DRAIN_MS * 1000000ull;
        if (busy == 0) return ap_finish(r);
        if (now >= r->drain_ns)
            for (int i = 0; i < r->n_conns; i++)
                ap_conn_drop(&r->conns[i]);
        return;
    }
    for (int i = 0; i < r->n_conns; i++)
        ap_conn_tick(&r->conns[i], now);
    for (int i = 0; i < r->cfg->clients; i++)
        ap_step(&r->clients[i]);
}

/* ---- setup and the run -------------------------------------------------------------------- */

/* The tables and index, safe to repeat and to run concurrently; without --id-base, a run
 * number from append_runs. *lsn: the LSN the setup's answer depends on, where every
 * client's session starts (a session read before it might not find the table). Two requests: a
 * request's statements are all prepared before the first runs, so the index needs its table first.
 */
static int ap_setup(const ap_config *cfg, uint64_t *id_base, uint64_t *lsn)
{
    mrd_json_doc d;
    if (sqlload_fetch(&cfg->addr, cfg->tls,
                      "{\"statements\":["
                      "{\"sql\":\"CREATE TABLE IF NOT EXISTS appends (id INTEGER PRIMARY KEY "
                      "AUTOINCREMENT, k INTEGER NOT NULL, v INTEGER NOT NULL)\"},"
                      "{\"sql\":\"CREATE TABLE IF NOT EXISTS append_runs (run INTEGER PRIMARY "
                      "KEY AUTOINCREMENT, pid INTEGER, started_ms INTEGER)\"}]}",
                      &d) != 0)
        return -1;
    mrd_json_free(&d);
    mrd_buf b;
    mrd_buf_init(&b);
    int rc = mrd_buf_printf(&b, "{\"statements\":[{\"sql\":\"CREATE INDEX IF NOT EXISTS appends_k "
                                "ON appends (k, id)\"}");
    if (rc == 0 && !cfg->has_id_base)
        rc = mrd_buf_printf(&b,
                            ",{\"sql\":\"INSERT INTO append_runs (pid, started_ms) VALUES (?, ?)\","
                            "\"params\":[%d,%" PRIu64 "]}",
                            (int)getpid(), mrd_wall_ms());
    if (rc == 0) rc = mrd_buf_printf(&b, "]}");
    if (rc != 0) return mrd_buf_free(&b), -1;
    rc = sqlload_fetch(&cfg->addr, cfg->tls, (const char *)b.data, &d);
    mrd_buf_free(&b);
    if (rc != 0) return -1;
    mrd_json_get_u64(&d, mrd_json_root(&d), "lsn", lsn);
    if (!cfg->has_id_base) {
        const mrd_json *res = mrd_json_first(&d, mrd_json_get(&d, mrd_json_root(&d), "results"));
        uint64_t run = 0;
        if (!mrd_json_get_u64(&d, mrd_json_next(&d, res), "last_insert_rowid", &run) || run == 0 ||
            run > UINT64_MAX / AP_RUN_VALUES - 1) {
            fprintf(stderr, "sqlload append: no run number from append_runs\n");
            rc = -1;
        }
        *id_base = run * AP_RUN_VALUES;
    }
    mrd_json_free(&d);
    return rc;
}

static void ap_print(const ap_run *r)
{
    double secs = (double)(r->end_ns - r->start_ns) / 1e9;
    const ap_config *cfg = r->cfg;
    printf("{\"mode\":\"append\",\"clients\":%d,\"keys\":%d,\"ok\":%" PRIu64 ",\"fail\":%" PRIu64
           ",\"unknown\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"reads\":%" PRIu64
           ",\"read_fail\":%" PRIu64 ",\"seconds\":%.3f,\"commits_per_s\":%.1f,\"reads_per_s\":%.1f"
           ",\"ops_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"read_p50_ms\":%.3f"
           ",\"read_p99_ms\":%.3f,\"keys_used\":%" PRIu64 ",\"id_base\":%" PRIu64
           ",\"key_base\":%" PRIu64 ",\"consistency\":\"%s\",\"seed\":%" PRIu64 "}\n",
           cfg->clients, cfg->keys, r->ok, r->fail, r->unknown, r->retries, r->reads, r->read_fail,
           secs, (double)r->ok / secs, (double)r->reads / secs,
           (double)(r->ok + r->fail + r->unknown + r->reads + r->read_fail) / secs,
           vb_lat_quantile(&r->lat_append, 0.5) / 1000.0,
           vb_lat_quantile(&r->lat_append, 0.99) / 1000.0,
           vb_lat_quantile(&r->lat_read, 0.5) / 1000.0,
           vb_lat_quantile(&r->lat_read, 0.99) / 1000.0, r->keys_used, r->id_base, r->key_base,
           cfg->consistency, cfg->seed);
}

static void ap_init(ap_run *r, const ap_config *cfg, uint64_t id_base, uint64_t lsn)
{
    r->cfg = cfg;
    r->id_base = id_base;
    r->key_base = cfg->has_key_base ? cfg->key_base : id_base;
    for (int i = 0; i < cfg->keys; i++)
        r->slot_key[i] = r->key_base + ++r->keys;
    vb_rng_seed(&r->rng, cfg->seed);
    vb_lat_init(&r->lat_append);
    vb_lat_init(&r->lat_read);
    r->n_conns = cfg->has_read_addr ? 2 : 1;
    r->conns[0] = (ap_conn){.r = r, .addr = cfg->addr};
    r->conns[1] = (ap_conn){.r = r, .addr = cfg->read_addr};
    for (int i = 0; i < cfg->clients; i++) {
        r->clients[i] = (ap_client){.r = r, .index = i, .conn = &r->conns[0], .lsn_acked = lsn};
        mrd_buf_init(&r->clients[i].body);
    }
}

int ap_run_workload(const ap_config *cfg)
{
    static ap_run r; /* large: clients and key slots */
    uint64_t id_base = cfg->id_base, lsn = 0;
    if (cfg->clients < 1 || cfg->clients > AP_CLIENTS_MAX || cfg->keys < 1 ||
        cfg->keys > AP_KEYS_MAX || cfg->appends_per_key < 1 ||
        cfg->appends_per_key > AP_APPENDS_PER_KEY_MAX || cfg->reads_percent < 0 ||
        cfg->reads_percent > 100 || cfg->op_timeout_ms < 1 ||
        cfg->op_timeout_ms > AP_OP_TIMEOUT_MS_MAX) {
        fprintf(stderr,
                "sqlload append: --clients 1..%d, --keys 1..%d, --appends-per-key 1..%d, "
                "--reads-percent 0..100, --op-timeout-ms 1..%d\n",
                AP_CLIENTS_MAX, AP_KEYS_MAX, AP_APPENDS_PER_KEY_MAX, AP_OP_TIMEOUT_MS_MAX);
        return 2;
    }
    if (ap_setup(cfg, &id_base, &lsn) != 0) return 2;
    if ((r.log = fopen(cfg->log, "a")) == NULL) return perror(cfg->log), 2;
    ap_init(&r, cfg, id_base, lsn);
    char addr[TOPO_HOST_MAX + 8], read_addr[TOPO_HOST_MAX + 8];
    topo_addr_str(&cfg->addr, addr, sizeof(addr));
    topo_addr_str(cfg->has_read_addr ? &cfg->read_addr : &cfg->addr, read_addr, sizeof(read_addr));
    uv_loop_init(&r.loop);
    r.start_ns = mrd_now_ns();
    r.deadline_ns = r.start_ns + cfg->duration_ms * 1000000ull;
    ap_log(&r,
           "# append id_base=%" PRIu64 " key_base=%" PRIu64 " clients=%d keys=%d addr=%s "
           "read_addr=%s consistency=%s seed=%" PRIu64 " pid=%d start_ms=%.3f\n",
           r.id_base, r.key_base, cfg->clients, cfg->keys, addr, read_addr, cfg->consistency,
           cfg->seed, (int)getpid(), ap_ms(r.start_ns));
    uv_timer_init(&r.loop, &r.timer);
    r.timer.data = &r;
    uv_timer_start(&r.timer, on_timer, 0, AP_TICK_MS);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_loop_close(&r.loop);
    ap_print(&r);
    for (int i = 0; i < cfg->clients; i++)
        mrd_buf_free(&r.clients[i].body);
    fclose(r.log);
    return 0;
}

/* ---- append-check: the final lists -------------------------------------------------------- */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The keys of a log's lines (sorted, each once) and the highest LSN of an acknowledged
 * append. */
typedef struct {
    uint64_t *keys;
    size_t n, cap;
    uint64_t lsn_max;
} ap_logged;

/* Sorts the keys and keeps each once. */
static void ap_logged_unique(ap_logged *lg)
{
    if (lg->n > 0) qsort(lg->keys, lg->n, sizeof(*lg->keys), u64_cmp);
    size_t w = 0;
    for (size_t i = 0; i < lg->n; i++)
        if (w == 0 || lg->keys[i] != lg->keys[w - 1]) lg->keys[w++] = lg->keys[i];
    lg->n = w;
}

static int ap_logged_add(ap_logged *lg, uint64_t key)
{
    if (lg->n == lg->cap) {
        ap_logged_unique(lg); /* the same keys come again and again: room, or twice as much */
        if (lg->n > AP_CHECK_KEYS_MAX) return -1;
        if (lg->cap == 0 || lg->n * 2 > lg->cap) {
            size_t cap = lg->cap ? lg->cap * 2 : 1024;
            uint64_t *keys = realloc(lg->keys, cap * sizeof(*keys));
            if (keys == NULL) return -1;
            lg->keys = keys;
            lg->cap = cap;
        }
    }
    lg->keys[lg->n++] = key;
    return 0;
}

static int ap_log_read(const char *path, ap_logged *lg)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return perror(path), -1;
    char *line = malloc(AP_LOG_LINE_BYTES_MAX);
    char what[8], outcome[8];
    int rc = line != NULL ? 0 : -1;
    while (rc == 0 && fgets(line, AP_LOG_LINE_BYTES_MAX, f) != NULL) {
        uint64_t key, v, lsn;
        int n = sscanf(line, "%7s %7s %*s %" SCNu64 " %" SCNu64 " %" SCNu64, what, outcome, &key,
                       &v, &lsn);
        if (n < 3 || (strcmp(what, "append") != 0 && strcmp(what, "read") != 0)) continue;
        if (strcmp(what, "append") == 0 && strcmp(outcome, "ok") == 0 && n == 5 &&
            lsn > lg->lsn_max)
            lg->lsn_max = lsn;
        rc = ap_logged_add(lg, key);
    }
    free(line);
    fclose(f);
    ap_logged_unique(lg);
    if (rc == 0 && lg->n <= AP_CHECK_KEYS_MAX) return 0;
    fprintf(stderr, "%s: more than %d keys, or out of memory\n", path, AP_CHECK_KEYS_MAX);
    return -1;
}

typedef struct {
    int64_t k, id, v;
} ap_row;

typedef struct {
    ap_row *rows;
    size_t n, cap;
    uint64_t lsn_first, lsn_last;
} ap_final;

/* Appends the rows (k, id, v) of an answer; how many in *n_page. */
static int ap_take(ap_final *fin, const mrd_json_doc *d, size_t *n_page)
{
    const mrd_json *res = mrd_json_first(d, mrd_json_get(d, mrd_json_root(d), "results"));
    const mrd_json *rows = mrd_json_get(d, res, "rows");
    *n_page = 0;
    for (const mrd_json *row = mrd_json_first(d, rows); row != NULL; row = mrd_json_next(d, row)) {
        const mrd_json *k = mrd_json_first(d, row), *id = mrd_json_next(d, k),
                       *v = mrd_json_next(d, id);
        if (k == NULL || id == NULL || v == NULL || !k->is_int || !id->is_int || !v->is_int)
            return fprintf(stderr, "sqlload append-check: a row that is not 3 integers\n"), -1;
        if (fin->n == fin->cap) {
            size_t cap = fin->cap ? fin->cap * 2 : 4096;
            ap_row *r = cap <= AP_CHECK_ROWS_MAX ? realloc(fin->rows, cap * sizeof(*r)) : NULL;
            if (r == NULL)
                return fprintf(stderr, "sqlload: more than %u rows\n", AP_CHECK_ROWS_MAX), -1;
            fin->rows = r;
            fin->cap = cap;
        }
        fin->rows[fin->n++] = (ap_row){k->i, id->i, v->i};
        ++*n_page;
    }
    return 0;
}

/* Every row of the log's keys, by key then id: a first read at the consistency asked, then
 * pages after the last row seen, each at least at the first read's LSN. Rows are only ever
 * added, with ids above every earlier one: each key's list is its list at the last page's
 * read point, and holds the whole list of the first read point. */
static int ap_final_read(const ap_config *cfg, const ap_logged *lg, uint64_t after_lsn,
                         ap_final *fin)
{
    mrd_buf keys, body;
    mrd_buf_init(&keys);
    mrd_buf_init(&body);
    int rc = mrd_buf_printf(&keys, "[");
    for (size_t i = 0; rc == 0 && i < lg->n; i++)
        rc = mrd_buf_printf(&keys, "%s%" PRIu64, i ? "," : "", lg->keys[i]);
    if (rc == 0) rc = mrd_buf_printf(&keys, "]");
    size_t n_page = AP_CHECK_PAGE_ROWS;
    for (bool first = true; rc == 0 && n_page == AP_CHECK_PAGE_ROWS; first = false) {
        body.len = 0;
        const ap_row *last = fin->n > 0 ? &fin->rows[fin->n - 1] : NULL;
        rc = mrd_buf_printf(
            &body,
            "{\"sql\":\"SELECT k, id, v FROM appends WHERE k IN (SELECT value FROM json_each(?))"
            "%s ORDER BY k, id LIMIT %d\",\"params\":[\"%s\"",
            last != NULL ? " AND (k, id) > (?, ?)" : "", AP_CHECK_PAGE_ROWS,
            (const char *)keys.data);
        if (rc == 0 && last != NULL)
            rc = mrd_buf_printf(&body, ",%" PRId64 ",%" PRId64, last->k, last->id);
        if (rc == 0)
            rc = mrd_buf_printf(
                &body, "],\"consistency\":\"%s\",\"after_lsn\":%" PRIu64 ",\"timeout_ms\":%d}",
                first ? cfg->consistency : "session", first ? after_lsn : fin->lsn_first,
                AP_CHECK_WAIT_MS);
        mrd_json_doc d;
        if (rc == 0) rc = sqlload_fetch(&cfg->addr, cfg->tls, (const char *)body.data, &d);
        if (rc != 0) break;
        mrd_json_get_u64(&d, mrd_json_root(&d), "lsn", &fin->lsn_last);
        if (first) fin->lsn_first = fin->lsn_last;
        rc = ap_take(fin, &d, &n_page);
        mrd_json_free(&d);
    }
    mrd_buf_free(&keys);
    mrd_buf_free(&body);
    return rc;
}

/* {"lsn": first read point, "lsn_last": last, ..., "lists": {"KEY": [V, ...], ...}} with every
 * key of the log, those without rows as []. */
static int ap_final_write(const char *path, const ap_config *cfg, const ap_logged *lg,
                          uint64_t after_lsn, const ap_final *fin)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (f == NULL) return perror(path), -1;
    fprintf(f,
            "{\"lsn\":%" PRIu64 ",\"lsn_last\":%" PRIu64
            ",\"consistency\":\"%s\",\"after_lsn\":%" PRIu64
            ",\"keys\":%zu,\"values\":%zu,\"lists\":{",
            fin->lsn_first, fin->lsn_last, cfg->consistency, after_lsn, lg->n, fin->n);
    size_t j = 0;
    for (size_t i = 0; i < lg->n; i++) {
        fprintf(f, "%s\n\"%" PRIu64 "\":[", i ? "," : "", lg->keys[i]);
        for (size_t first = j; j < fin->n && (uint64_t)fin->rows[j].k == lg->keys[i]; j++)
            fprintf(f, "%s%" PRId64, j > first ? "," : "", fin->rows[j].v);
        fprintf(f, "]");
    }
    fprintf(f, "}}\n");
    if (f == stdout) return fflush(f) == 0 ? 0 : -1;
    return fclose(f) == 0 ? 0 : (perror(path), -1);
}

int ap_check(const ap_config *cfg)
{
    ap_logged lg = {0};
    ap_final fin = {0};
    int rc = ap_log_read(cfg->log, &lg);
    /* the final read point holds every acknowledged append, whatever the endpoint */
    uint64_t after_lsn =
        cfg->has_after_lsn && cfg->after_lsn > lg.lsn_max ? cfg->after_lsn : lg.lsn_max;
    if (rc == 0 && lg.n > 0) rc = ap_final_read(cfg, &lg, after_lsn, &fin);
    if (rc == 0) rc = ap_final_write(cfg->final, cfg, &lg, after_lsn, &fin);
    if (rc == 0 && strcmp(cfg->final, "-") != 0)
        printf("{\"mode\":\"append-check\",\"keys\":%zu,\"values\":%zu,\"lsn\":%" PRIu64
               ",\"lsn_last\":%" PRIu64 ",\"after_lsn\":%" PRIu64 ",\"consistency\":\"%s\"}\n",
               lg.n, fin.n, fin.lsn_first, fin.lsn_last, after_lsn, cfg->consistency);
    free(lg.keys);
    free(fin.rows);
    return rc == 0 ? 0 : 2;
}
