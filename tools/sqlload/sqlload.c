/*
 * sqlload: SQL load and checks against a Meridian endpoint, for tests and
 * tools/bench. One HTTP/2 connection carries N requests in flight (N
 * "clients"), each client sending its next request when its answer arrives.
 *
 *   sqlload insert   --addr A [--tls DIR] --clients N (--requests M | --duration-ms D)
 *                    [--rate R] (every mode: at most R requests per second in all)
 *       single-row INSERT INTO bench(payload) commits; prints JSON with
 *       commits/s and p50/p99 latency.
 *   sqlload counters --addr A [--tls DIR] --clients N --duration-ms D --log FILE
 *       [--id-base B]: each request one transaction: every row of counters + 1
 *       and one row into txns (id unique per request, from B on); FILE gets "ok ID", "fail ID CODE"
 *       or "unknown ID" per request (unknown: the connection went away first).
 *   sqlload check    --addr A [--tls DIR] --duration-ms D [--consistency C]
 *       reads counters over and over: every row must hold the same value (no
 *       partial transaction) and that value must never go down (no going
 *       back in time); exit 1 on a violation.
 *   sqlload bank     --addr A [--tls DIR] --clients N --duration-ms D --log FILE
 *                    [--accounts K] [--id-base B] [--seed S]
 *       the failover workload, a bank whose total never changes. First, safe to
 *       repeat: tables accounts and transfers, and K accounts (default 100) of 1000
 *       each when there are none. Then each request one transfer, one transaction:
 *       INSERT INTO transfers (ids B+1, B+2...) first, then the two UPDATEs of
 *       accounts. A 502, a 503 or a lost connection means "try again": the same
 *       transfer is sent again BANK_RETRY_MS later, until the run ends; a retry
 *       refused by transfers.id's UNIQUE constraint had been applied before.
 *       FILE gets one line per transfer as it settles: "ok ID LSN", "dup ID" (a
 *       retry found it applied), "fail ID CODE" (refused) or "unknown ID" (still
 *       unsettled at the end). Prints JSON with the counts, the commit latency and
 *       the longest interval without an acknowledged commit (the write outage).
 *   sqlload bank-check --addr A [--tls DIR] --log FILE|- [--accounts K]
 *                    [--consistency C] [--after-lsn L] [--dump FILE2]
 *       reads the bank in one transaction (transfers past the first BANK_PAGE_ROWS
 *       in later ones, each at least at the first one's LSN): K accounts holding
 *       K*1000 in all, and every "ok" and "dup" id of FILE (several runs appended)
 *       present in transfers. Exit 0 when all holds, 1 when not, 2 when it could
 *       not read. --dump writes "ID SRC DST AMOUNT" per transfer by id, a line
 *       "balances", then "ID BALANCE" per account: two regions compare byte for byte
 *       (once writes have stopped, or always while transfers fit one page).
 *   sqlload append   --addr A [--tls DIR] --clients N --duration-ms D --log FILE [--keys K]
 *                    [--id-base B] [--read-addr R] [--read-consistency eventual|session|strong]
 *       the fault harness's list-append workload (append.c): appends of unique values to
 *       lists under K keys through A, reads of whole lists through R (else A); FILE gets
 *       every operation's outcome with its start and end (tools/torturelib/check_append.py
 *       judges it). Prints JSON with the counts, ops/s and latencies.
 *   sqlload append-check --addr A [--tls DIR] --log FILE [--final FILE2] [--consistency C]
 *                    [--after-lsn L]
 *       writes the final list of every key of FILE, read at one point at least at the log's
 *       highest acknowledged LSN, as JSON to FILE2 (default stdout); exit 2 when it could not.
 *   sqlload sqlite   --file PATH (--requests M | --duration-ms D)
 *       the reference: the same inserts into a plain local SQLite file in WAL
 *       mode with synchronous=FULL, one commit at a time.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meridian/h2.h"
#include "meridian/json.h"
#include "meridian/topo.h"
#include "meridian/vbench.h"
#include "sqlload.h"

#define CLIENTS_MAX 1024
#define RECONNECT_MS 100
#define DRAIN_MS 10000          /* after the run, how long answers are awaited before giving up */
#define BANK_TICK_MS 10         /* bank: how often paused retries and reconnects are looked at */
#define BANK_RETRY_MS 20        /* bank: the pause before a transfer is sent again */
#define BANK_ACCOUNTS_MAX 10000 /* so that one answer holds every balance and a page */
#define BANK_BALANCE 1000       /* each account's opening balance */
#define BANK_AMOUNT_MAX 50      /* a transfer moves 1..BANK_AMOUNT_MAX */
#define BANK_PAGE_ROWS 50000    /* transfers per read (answers stop at 100,000 rows) */
#define BANK_ROWS_MAX 20000000u /* transfers bank-check reads, and ids it takes from a log */

typedef enum { MODE_INSERT, MODE_COUNTERS, MODE_CHECK, MODE_BANK, MODE_BANK_CHECK } mode;

typedef struct run run;

typedef struct {
    run *r;
    int index;
    uint64_t seq;
    uint64_t sent_ns;
    uint64_t txn_id;
    int status;
    mrd_buf body;
    bool busy;
    /* bank: the transfer txn_id, from its first send until it settles */
    bool pending;
    uint32_t attempts;
    uint64_t retry_ns; /* not sent again before */
    uint64_t src, dst, amount;
} client;

struct run {
    mode m;
    uv_loop_t loop;
    h2_client *c;
    h2_tls *tls;
    topo_addr addr;
    client clients[CLIENTS_MAX];
    int n_clients;
    uint64_t requests_max, sent, done, errors, unknown;
    uint64_t id_base; /* counters: transaction ids start here (unique across runs) */
    double rate;      /* requests per second over all clients; 0: as fast as answers come */
    uv_timer_t pacer;
    uint64_t start_ns, deadline_ns;
    vb_lat lat;
    FILE *log;
    const char *consistency;
    int64_t last_seen; /* check: highest counter value seen */
    uint64_t violations, reads;
    bool connecting, stopping;
    uint64_t drain_ns; /* once the run is over: in-flight requests are given up then */
    uv_timer_t timer;
    /* bank */
    int accounts;
    uint64_t seed;
    vb_rng rng;
    uint64_t bank_seq, ok, dup, retries;
    uint64_t first_error_ns; /* 0 until an answer or a connection fails */
    uint64_t gap_from_ns;    /* the last acknowledged commit (the start before the first) */
    uint64_t gap_max_ns, gap_max_from_ns;
    bool failed_since_ack;
    bool has_after_lsn; /* bank-check: --after-lsn */
    uint64_t after_lsn;
};

static void send_next(client *cl);

static void log_line(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(run *r, const char *fmt, ...)
{
    if (r->log == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
}

/* check: every counter equal, and never below what was seen before. */
static void check_answer(run *r, const mrd_buf *body)
{
    mrd_json_doc d;
    if (mrd_json_parse((const char *)body->data, body->len, &d, NULL) != 0) return;
    const mrd_json *res = mrd_json_first(&d, mrd_json_get(&d, mrd_json_root(&d), "results"));
    const mrd_json *row = mrd_json_first(&d, mrd_json_get(&d, res, "rows"));
    const mrd_json *mn = mrd_json_first(&d, row), *mx = mrd_json_next(&d, mn);
    if (mn != NULL && mx != NULL && mn->is_int && mx->is_int) {
        r->reads++;
        if (mn->i != mx->i) {
            r->violations++;
            fprintf(stderr, "sqlload check: partial transaction: counters hold %" PRId64
                            " and %" PRId64 "\n", mn->i, mx->i);
        }
        if (mx->i < r->last_seen) {
            r->violations++;
            fprintf(stderr, "sqlload check: back in time: %" PRId64 " after %" PRId64 "\n",
                    mx->i, r->last_seen);
        }
        if (mx->i > r->last_seen) r->last_seen = mx->i;
    }
    mrd_json_free(&d);
}

/* ---- bank: transfers between accounts whose total never changes ---------------------------- */

/* Ends, at now, an interval without an acknowledged commit; with counts, it is a candidate
 * for the longest. Between two commits it always counts; before the first only when a
 * failure came first (else it is just the start-up), after the last only when a failure
 * came after it (else it is just the quiet end). Times past the end of the run count as
 * its end. */
static void bank_gap_close(run *r, uint64_t now, bool counts)
{
    uint64_t t = now < r->deadline_ns ? now : r->deadline_ns;
    if (t <= r->gap_from_ns) return;
    if (counts && t - r->gap_from_ns > r->gap_max_ns) {
        r->gap_max_ns = t - r->gap_from_ns;
        r->gap_max_from_ns = r->gap_from_ns;
    }
    r->gap_from_ns = t;
}

static void bank_failed(run *r, uint64_t now)
{
    if (r->first_error_ns == 0) r->first_error_ns = now;
    r->failed_since_ack = true;
}

/* What an answer says: the LSN of a commit, or an error's code (one word, for the log). */
typedef struct {
    uint64_t lsn;
    char code[64];
    char message[160]; /* the error's message, on one line (the log keeps it after the code) */
    bool duplicate;    /* the UNIQUE constraint of transfers.id refused the INSERT */
} bank_reply;

static void bank_reply_parse(const mrd_buf *body, bank_reply *out)
{
    *out = (bank_reply){.code = "?"};
    mrd_json_doc d;
    if (body->len == 0 || mrd_json_parse((const char *)body->data, body->len, &d, NULL) != 0)
        return;
    const mrd_json *root = mrd_json_root(&d), *err = mrd_json_get(&d, root, "error");
    mrd_json_get_u64(&d, root, "lsn", &out->lsn);
    const char *code = mrd_json_str(&d, mrd_json_get(&d, err, "code"));
    const char *text = mrd_json_str(&d, mrd_json_get(&d, err, "message"));
    if (code != NULL && code[0] != '\0') snprintf(out->code, sizeof(out->code), "%s", code);
    for (char *p = out->code; *p != '\0'; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= '0' && *p <= '9') && *p != '_') *p = '_';
    if (text != NULL) snprintf(out->message, sizeof(out->message), "%s", text);
    for (char *p = out->message; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    out->duplicate = code != NULL && strcmp(code, "sql_error") == 0 && text != NULL &&
                     strstr(text, "UNIQUE constraint failed: transfers.id") != NULL;
    mrd_json_free(&d);
}

/* Settles the client's transfer from its answer, or leaves it pending for a retry. */
static void bank_answer(client *cl, int error)
{
    run *r = cl->r;
    uint64_t now = mrd_now_ns();
    bank_reply a;
    bank_reply_parse(&cl->body, &a);
    if (error == 0 && cl->status == 200) {
        vb_lat_add(&r->lat, (now - cl->sent_ns) / 1000);
        bank_gap_close(r, now, r->ok > 0 || r->first_error_ns != 0);
        r->failed_since_ack = false;
        r->ok++;
        cl->pending = false;
        log_line(r, "ok %" PRIu64 " %" PRIu64 "\n", cl->txn_id, a.lsn);
        return;
    }
    if (error == 0 && cl->status == 400 && a.duplicate && cl->attempts > 1) {
        r->dup++;
        cl->pending = false;
        log_line(r, "dup %" PRIu64 "\n", cl->txn_id);
        return;
    }
    bank_failed(r, now);
    if (error != 0 || cl->status == 0 || cl->status == 502 || cl->status == 503) {
        cl->retry_ns = now + BANK_RETRY_MS * 1000000ull;
        return;
    }
    r->errors++;
    cl->pending = false;
    log_line(r, "fail %" PRIu64 " %s %s\n", cl->txn_id, a.code, a.message);
}

/* The body of the client's next request: its pending transfer again once the pause after a
 * failure is over, or a new one. False: nothing to send yet. */
static bool bank_body(client *cl, char *body, size_t size)
{
    run *r = cl->r;
    if (cl->pending && mrd_now_ns() < cl->retry_ns) return false;
    if (!cl->pending) {
        uint64_t k = (uint64_t)r->accounts;
        cl->pending = true;
        cl->attempts = 0;
        cl->txn_id = r->id_base + ++r->bank_seq;
        cl->src = 1 + vb_rng_next(&r->rng) % k;
        cl->dst = 1 + vb_rng_next(&r->rng) % (k - 1);
        if (cl->dst >= cl->src) cl->dst++;
        cl->amount = 1 + vb_rng_next(&r->rng) % BANK_AMOUNT_MAX;
    }
    snprintf(
        body, size,
        "{\"statements\":[{\"sql\":\"INSERT INTO transfers (id, src, dst, amount) VALUES "
        "(?, ?, ?, ?)\",\"params\":[%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]},"
        "{\"sql\":\"UPDATE accounts SET balance = balance - ? WHERE id = ?\",\"params\":[%" PRIu64
        ",%" PRIu64 "]},{\"sql\":\"UPDATE accounts SET balance = balance + ? WHERE id = ?\","
        "\"params\":[%" PRIu64 ",%" PRIu64 "]}]}",
        cl->txn_id, cl->src, cl->dst, cl->amount, cl->amount, cl->src, cl->amount, cl->dst);
    return true;
}

/* The run is over: what is still pending is unknown; the last interval ends with the run. */
static void bank_finish(run *r)
{
    for (int i = 0; i < r->n_clients; i++) {
        client *cl = &r->clients[i];
        if (!cl->pending) continue;
        r->unknown++;
        cl->pending = false;
        log_line(r, "unknown %" PRIu64 "\n", cl->txn_id);
    }
    bank_gap_close(r, r->deadline_ns, r->failed_since_ack || r->ok == 0);
}

static void on_response(h2_call *call, int status, void *ud)
{
    ((client *)ud)->status = status;
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    client *cl = ud;
    if (cl->body.len + len <= (1u << 20)) mrd_buf_append(&cl->body, data, len);
}

static void on_close(h2_call *call, int error, void *ud)
{
    client *cl = ud;
    run *r = cl->r;
    cl->busy = false;
    r->done++;
    if (r->m == MODE_BANK)
        bank_answer(cl, error);
    else if (error != 0 || cl->status == 0) {
        r->unknown++;
        if (r->m == MODE_COUNTERS) log_line(r, "unknown %" PRIu64 "\n", cl->txn_id);
    } else if (cl->status != 200) {
        r->errors++;
        if (r->m == MODE_COUNTERS) {
            char code[64] = "?";
            const char *p = strstr((const char *)cl->body.data, "\"code\":\"");
            if (p != NULL) sscanf(p + 8, "%63[^\"]", code);
            log_line(r, "fail %" PRIu64 " %s\n", cl->txn_id, code);
        }
    } else {
        vb_lat_add(&r->lat, (mrd_now_ns() - cl->sent_ns) / 1000);
        if (r->m == MODE_COUNTERS) log_line(r, "ok %" PRIu64 "\n", cl->txn_id);
        if (r->m == MODE_CHECK) check_answer(r, &cl->body);
    }
    send_next(cl);
}

static const h2_call_cbs call_cbs = {.on_response = on_response, .on_data = on_data, .on_close = on_close};

static bool more(run *r)
{
    if (r->stopping) return false;
    if (r->requests_max > 0) return r->sent < r->requests_max;
    return mrd_now_ns() < r->deadline_ns;
}

/* With --rate, a request leaves only when the schedule allows it. */
static bool paced_out(const run *r)
{
    if (r->rate <= 0) return false;
    double due = (double)(mrd_now_ns() - r->start_ns) / 1e9 * r->rate;
    return (double)r->sent >= due;
}

static void send_next(client *cl)
{
    run *r = cl->r;
    if (!more(r) || r->c == NULL || !h2_client_connected(r->c) || paced_out(r)) return;
    char body[768];
    if (r->m != MODE_BANK) {
        cl->seq++;
        cl->txn_id = r->id_base + (uint64_t)(cl->index + 1) * 1000000000ull + cl->seq;
    }
    if (r->m == MODE_BANK) {
        if (!bank_body(cl, body, sizeof(body))) return;
    } else if (r->m == MODE_INSERT)
        snprintf(body, sizeof(body),
                 "{\"sql\":\"INSERT INTO bench (client, payload) VALUES (?, ?)\",\"params\":[%d,"
                 "\"%0100" PRIu64 "\"]}",
                 cl->index, cl->seq);
    else if (r->m == MODE_COUNTERS)
        snprintf(body, sizeof(body),
                 "{\"statements\":[{\"sql\":\"UPDATE counters SET v = v + 1\"},"
                 "{\"sql\":\"INSERT INTO txns (id) VALUES (?)\",\"params\":[%" PRIu64 "]}]}",
                 cl->txn_id);
    else
        snprintf(body, sizeof(body),
                 "{\"sql\":\"SELECT min(v), max(v) FROM counters\",\"consistency\":\"%s\"}",
                 r->consistency);
    cl->body.len = 0;
    cl->status = 0;
    cl->sent_ns = mrd_now_ns();
    h2_header h = {"content-type", "application/json"};
    if (h2_client_request(r->c, "POST", "/v1/sql", &h, 1, body, strlen(body), true, &call_cbs, cl,
                          NULL) == 0) {
        cl->busy = true;
        r->sent++;
        if (r->m == MODE_BANK && cl->attempts++ > 0) r->retries++;
    }
}

static void on_pace(uv_timer_t *t)
{
    run *r = t->data;
    for (int i = 0; i < r->n_clients && !paced_out(r); i++)
        if (!r->clients[i].busy) send_next(&r->clients[i]);
    if (!more(r)) uv_close((uv_handle_t *)&r->pacer, NULL);
}

static void on_connect(h2_client *c, int status, void *ud)
{
    run *r = ud;
    r->connecting = false;
    if (status != 0) {
        if (r->m == MODE_BANK) bank_failed(r, mrd_now_ns());
        return;
    }
    for (int i = 0; i < r->n_clients; i++)
        if (!r->clients[i].busy) send_next(&r->clients[i]);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    ((run *)ud)->connecting = false;
}

static const h2_client_cbs client_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

/* Reconnects when the connection dropped; ends the run when everything is answered, or
 * DRAIN_MS after its end (what has not been answered by then is unknown). */
static void on_timer(uv_timer_t *t)
{
    run *r = t->data;
    int busy = 0;
    for (int i = 0; i < r->n_clients; i++)
        busy += r->clients[i].busy;
    if (!more(r) && r->drain_ns == 0) r->drain_ns = mrd_now_ns() + DRAIN_MS * 1000000ull;
    if (!more(r) && busy > 0 && r->c != NULL && mrd_now_ns() >= r->drain_ns) {
        h2_client *c = r->c;
        r->c = NULL;
        h2_client_close(c); /* every call gets its on_close */
        return;
    }
    if (!more(r) && busy == 0) {
        if (r->m == MODE_BANK) bank_finish(r);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, NULL);
        if (r->c != NULL) h2_client_close(r->c);
        r->c = NULL;
        return;
    }
    if (r->c != NULL && !h2_client_connected(r->c) && !r->connecting) {
        h2_client_close(r->c);
        r->c = NULL;
    }
    if (r->c == NULL && more(r)) {
        h2_client_config cc = {.host = r->addr.host, .port = r->addr.port, .tls = r->tls};
        r->connecting = true;
        if (h2_client_connect(&r->loop, &cc, &client_cbs, r, &r->c, NULL) != 0) {
            r->c = NULL;
            r->connecting = false;
        }
    } else if (r->c != NULL && h2_client_connected(r->c)) {
        for (int i = 0; i < r->n_clients; i++)
            if (!r->clients[i].busy) send_next(&r->clients[i]);
    }
}

/* ---- the plain SQLite reference ---------------------------------------------------------- */

static int sqlite_reference(const char *path, uint64_t requests, uint64_t duration_ms)
{
    sqlite3 *db;
    remove(path);
    if (sqlite3_open(path, &db) != SQLITE_OK) return fprintf(stderr, "cannot open %s\n", path), 1;
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                     "CREATE TABLE bench (id INTEGER PRIMARY KEY, client INTEGER, payload TEXT)",
                 NULL, NULL, NULL);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO bench (client, payload) VALUES (0, ?)", -1, &st, NULL);
    vb_lat lat;
    vb_lat_init(&lat);
    uint64_t start = mrd_now_ns(), n = 0;
    char payload[128];
    while (requests ? n < requests : mrd_now_ns() - start < duration_ms * 1000000ull) {
        uint64_t t0 = mrd_now_ns();
        snprintf(payload, sizeof(payload), "%0100" PRIu64, n);
        sqlite3_bind_text(st, 1, payload, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) return fprintf(stderr, "%s\n", sqlite3_errmsg(db)), 1;
        sqlite3_reset(st);
        vb_lat_add(&lat, (mrd_now_ns() - t0) / 1000);
        n++;
    }
    double secs = (double)(mrd_now_ns() - start) / 1e9;
    printf("{\"mode\":\"sqlite\",\"clients\":1,\"commits\":%" PRIu64 ",\"seconds\":%.3f,"
           "\"commits_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
           n, secs, (double)n / secs, vb_lat_quantile(&lat, 0.5) / 1000.0,
           vb_lat_quantile(&lat, 0.99) / 1000.0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    remove(path);
    return 0;
}

/* ---- bank: setup and bank-check, one blocking request at a time ------------------------ */

/* sqlload.h: one request, sent again on 502, 503 and no connection. */
int sqlload_fetch(const topo_addr *addr, h2_tls *tls, const char *body, mrd_json_doc *doc)
{
    h2_client_config cc = {.host = addr->host, .port = addr->port, .tls = tls};
    h2_header h = {"content-type", "application/json"};
    uint64_t until_ns = mrd_now_ns() + SQLLOAD_FETCH_TRY_MS * 1000000ull;
    for (;;) {
        h2_result res;
        mrd_msg msg = {{0}};
        int rc = h2_fetch(&cc, "POST", "/v1/sql", &h, 1, body, strlen(body),
                          SQLLOAD_FETCH_TIMEOUT_MS, &res, &msg);
        bool again = rc != 0 || res.status == 502 || res.status == 503;
        if (!again || mrd_now_ns() >= until_ns) {
            if (rc != 0) return fprintf(stderr, "sqlload: %s\n", msg.text), -1;
            if (res.status == 200)
                rc = mrd_json_parse((const char *)res.body.data, res.body.len, doc, &msg);
            if (res.status != 200 || rc != 0)
                fprintf(stderr, "sqlload: HTTP %d: %s%s\n", res.status, (const char *)res.body.data,
                        rc != 0 ? msg.text : "");
            h2_result_free(&res);
            return res.status == 200 && rc == 0 ? 0 : -1;
        }
        if (rc == 0) h2_result_free(&res);
        uv_sleep(RECONNECT_MS);
    }
}

static int bank_fetch(const run *r, const char *body, mrd_json_doc *doc)
{
    return sqlload_fetch(&r->addr, r->tls, body, doc);
}

/* Result i's rows of an answer, or NULL. */
static const mrd_json *bank_rows(const mrd_json_doc *d, int i)
{
    const mrd_json *res = mrd_json_first(d, mrd_json_get(d, mrd_json_root(d), "results"));
    while (res != NULL && i-- > 0)
        res = mrd_json_next(d, res);
    return mrd_json_get(d, res, "rows");
}

/* Cell col of a row, as an integer (0 for NULL and non-integers). */
static int64_t bank_cell(const mrd_json_doc *d, const mrd_json *row, int col)
{
    const mrd_json *v = mrd_json_first(d, row);
    while (v != NULL && col-- > 0)
        v = mrd_json_next(d, v);
    return v != NULL && v->is_int ? v->i : 0;
}

/* The tables, and K accounts of BANK_BALANCE when there are none; safe to run again and
 * concurrently (INSERT OR IGNORE of ids 1..K, in one transaction). Two requests: a request's
 * statements are all prepared before the first runs, so the INSERT needs the tables first. */
static int bank_setup(const run *r)
{
    mrd_json_doc d;
    if (bank_fetch(r,
                   "{\"statements\":["
                   "{\"sql\":\"CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, "
                   "balance INTEGER NOT NULL)\"},"
                   "{\"sql\":\"CREATE TABLE IF NOT EXISTS transfers (id INTEGER PRIMARY KEY, "
                   "src INTEGER, dst INTEGER, amount INTEGER)\"}]}",
                   &d) != 0)
        return -1;
    mrd_json_free(&d);
    char body[512];
    snprintf(body, sizeof(body),
             "{\"statements\":[{\"sql\":\"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
             "FROM s WHERE i < ?) INSERT OR IGNORE INTO accounts (id, balance) SELECT i, ? FROM s "
             "WHERE NOT EXISTS (SELECT 1 FROM accounts)\",\"params\":[%d,%d]},"
             "{\"sql\":\"SELECT count(*) FROM accounts\"}]}",
             r->accounts, BANK_BALANCE);
    if (bank_fetch(r, body, &d) != 0) return -1;
    int64_t n = bank_cell(&d, mrd_json_first(&d, bank_rows(&d, 1)), 0);
    mrd_json_free(&d);
    if (n != r->accounts) {
        fprintf(stderr,
                "sqlload bank: accounts holds %" PRId64 " rows, not %d: pass --accounts %" PRId64
                "\n",
                n, r->accounts, n);
        return -1;
    }
    return 0;
}

typedef struct {
    int64_t id, src, dst, amount;
} bank_transfer;

typedef struct {
    int64_t id, balance;
} bank_account;

/* What bank-check read: the first answer's totals, every transfer, every balance. */
typedef struct {
    int64_t sum, accounts, transfers;
    uint64_t lsn;
    bank_transfer *t;
    size_t n, cap;
    bank_account *bal;
    size_t n_bal;
} bank_state;

/* Appends the rows (id, src, dst, amount) of one page; how many in *n_page. */
static int bank_take(bank_state *st, const mrd_json_doc *d, const mrd_json *rows, size_t *n_page)
{
    *n_page = 0;
    for (const mrd_json *row = mrd_json_first(d, rows); row != NULL; row = mrd_json_next(d, row)) {
        if (st->n == st->cap) {
            size_t cap = st->cap ? st->cap * 2 : 4096;
            bank_transfer *t = cap <= BANK_ROWS_MAX ? realloc(st->t, cap * sizeof(*t)) : NULL;
            if (t == NULL)
                return fprintf(stderr, "sqlload: more than %u transfers\n", BANK_ROWS_MAX), -1;
            st->t = t;
            st->cap = cap;
        }
        st->t[st->n++] = (bank_transfer){bank_cell(d, row, 0), bank_cell(d, row, 1),
                                         bank_cell(d, row, 2), bank_cell(d, row, 3)};
        ++*n_page;
    }
    return 0;
}

/* The first, consistent read: totals, balances and the first page of transfers. */
static int bank_read_first(const run *r, bank_state *st, size_t *n_page)
{
    mrd_buf body;
    mrd_buf_init(&body);
    int rc = mrd_buf_printf(
        &body,
        "{\"statements\":[{\"sql\":\"SELECT sum(balance), count(*) FROM accounts\"},"
        "{\"sql\":\"SELECT count(*) FROM transfers\"},"
        "{\"sql\":\"SELECT id, src, dst, amount FROM transfers ORDER BY id LIMIT %d\"},"
        "{\"sql\":\"SELECT id, balance FROM accounts ORDER BY id LIMIT %d\"}],"
        "\"consistency\":\"%s\"",
        BANK_PAGE_ROWS, BANK_ACCOUNTS_MAX + 1, r->consistency);
    if (rc == 0 && r->has_after_lsn)
        rc = mrd_buf_printf(&body, ",\"after_lsn\":%" PRIu64, r->after_lsn);
    if (rc == 0) rc = mrd_buf_append(&body, "}", 2); /* with its NUL */
    mrd_json_doc d;
    if (rc == 0) rc = bank_fetch(r, (const char *)body.data, &d);
    mrd_buf_free(&body);
    if (rc != 0) return rc;
    const mrd_json *totals = mrd_json_first(&d, bank_rows(&d, 0)), *bal = bank_rows(&d, 3);
    st->sum = bank_cell(&d, totals, 0);
    st->accounts = bank_cell(&d, totals, 1);
    st->transfers = bank_cell(&d, mrd_json_first(&d, bank_rows(&d, 1)), 0);
    mrd_json_get_u64(&d, mrd_json_root(&d), "lsn", &st->lsn);
    st->bal = calloc(bal != NULL && bal->count > 0 ? bal->count : 1, sizeof(*st->bal));
    for (const mrd_json *row = mrd_json_first(&d, bal); st->bal != NULL && row != NULL;
         row = mrd_json_next(&d, row))
        st->bal[st->n_bal++] = (bank_account){bank_cell(&d, row, 0), bank_cell(&d, row, 1)};
    rc = st->bal != NULL ? bank_take(st, &d, bank_rows(&d, 2), n_page) : -1;
    mrd_json_free(&d);
    return rc;
}

/* Every transfer: the first page with the totals, the next ones by id, each read at least
 * at the first read's LSN (transfers are never deleted, so none of the first read is lost). */
static int bank_read(const run *r, bank_state *st)
{
    size_t n_page;
    int rc = bank_read_first(r, st, &n_page);
    while (rc == 0 && n_page == BANK_PAGE_ROWS) {
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"sql\":\"SELECT id, src, dst, amount FROM transfers WHERE id > ? ORDER BY id "
                 "LIMIT %d\",\"params\":[%" PRId64
                 "],\"consistency\":\"session\",\"after_lsn\":%" PRIu64 "}",
                 BANK_PAGE_ROWS, st->t[st->n - 1].id, st->lsn);
        mrd_json_doc d;
        rc = bank_fetch(r, body, &d);
        if (rc != 0) break;
        rc = bank_take(st, &d, bank_rows(&d, 0), &n_page);
        mrd_json_free(&d);
    }
    return rc;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The ids of a bank log's "ok" and "dup" lines, sorted, each once; "-": none. */
typedef struct {
    uint64_t *ids;
    size_t n, cap;
    uint64_t ok, dup, lsn_max;
} bank_logged;

static int bank_log_read(const char *path, bank_logged *lg)
{
    if (strcmp(path, "-") == 0) return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) return perror(path), -1;
    char line[256], kind[16];
    uint64_t id, lsn;
    while (fgets(line, sizeof(line), f) != NULL) {
        int n = sscanf(line, "%15s %" SCNu64 " %" SCNu64, kind, &id, &lsn);
        bool ok = n >= 2 && strcmp(kind, "ok") == 0, dup = n >= 2 && strcmp(kind, "dup") == 0;
        if (!ok && !dup) continue;
        if (ok && n == 3 && lsn > lg->lsn_max) lg->lsn_max = lsn;
        lg->ok += ok;
        lg->dup += dup;
        if (lg->n == lg->cap) {
            size_t cap = lg->cap ? lg->cap * 2 : 4096;
            uint64_t *ids = cap <= BANK_ROWS_MAX ? realloc(lg->ids, cap * sizeof(*ids)) : NULL;
            if (ids == NULL) return fclose(f), fprintf(stderr, "%s: too many ids\n", path), -1;
            lg->ids = ids;
            lg->cap = cap;
        }
        lg->ids[lg->n++] = id;
    }
    fclose(f);
    if (lg->n > 0) qsort(lg->ids, lg->n, sizeof(*lg->ids), u64_cmp);
    size_t w = 0;
    for (size_t i = 0; i < lg->n; i++)
        if (w == 0 || lg->ids[i] != lg->ids[w - 1]) lg->ids[w++] = lg->ids[i];
    lg->n = w;
    return 0;
}

/* Logged ids not among the transfers read (both sorted): the count, the first ones in out. */
static size_t bank_missing(const bank_logged *lg, const bank_state *st, uint64_t *out, size_t max)
{
    size_t missing = 0, j = 0;
    for (size_t i = 0; i < lg->n; i++) {
        while (j < st->n && (uint64_t)st->t[j].id < lg->ids[i])
            j++;
        if (j < st->n && (uint64_t)st->t[j].id == lg->ids[i]) continue;
        if (missing < max) out[missing] = lg->ids[i];
        missing++;
    }
    return missing;
}

static int bank_dump(const char *path, const bank_state *st)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) return perror(path), -1;
    for (size_t i = 0; i < st->n; i++)
        fprintf(f, "%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", st->t[i].id, st->t[i].src,
                st->t[i].dst, st->t[i].amount);
    fprintf(f, "balances\n");
    for (size_t i = 0; i < st->n_bal; i++)
        fprintf(f, "%" PRId64 " %" PRId64 "\n", st->bal[i].id, st->bal[i].balance);
    return fclose(f) == 0 ? 0 : (perror(path), -1);
}

/* bank-check: 0 when every check holds, 1 when one does not, 2 when it could not read. */
static int bank_check(const run *r, const char *log, const char *dump)
{
    bank_logged lg = {0};
    bank_state st = {0};
    int rc = 0;
    if (bank_log_read(log, &lg) != 0 || bank_read(r, &st) != 0 ||
        (dump != NULL && bank_dump(dump, &st) != 0))
        rc = 2;
    uint64_t missing[20];
    size_t n_missing = rc == 0 ? bank_missing(&lg, &st, missing, 20) : 0;
    int64_t expected = (int64_t)r->accounts * BANK_BALANCE;
    if (rc == 0) {
        printf("{\"mode\":\"bank-check\",\"total\":%" PRId64 ",\"expected_total\":%" PRId64
               ",\"accounts\":%" PRId64 ",\"transfers\":%" PRId64 ",\"transfers_read\":%zu"
               ",\"logged_ok\":%" PRIu64 ",\"logged_dup\":%" PRIu64 ",\"missing\":[",
               st.sum, expected, st.accounts, st.transfers, st.n, lg.ok, lg.dup);
        for (size_t i = 0; i < n_missing && i < 20; i++)
            printf("%s%" PRIu64, i ? "," : "", missing[i]);
        printf("],\"missing_count\":%zu,\"max_lsn_seen\":%" PRIu64 ",\"read_lsn\":%" PRIu64 "}\n",
               n_missing, lg.lsn_max, st.lsn);
    }
    if (rc == 0 && st.sum != expected) {
        fprintf(stderr, "bank-check: the total is %" PRId64 ", not %" PRId64 "\n", st.sum,
                expected);
        rc = 1;
    }
    if (rc != 2 && st.accounts != r->accounts) {
        fprintf(stderr, "bank-check: %" PRId64 " accounts, not %d\n", st.accounts, r->accounts);
        rc = 1;
    }
    if (rc != 2 && n_missing > 0) {
        fprintf(stderr,
                "bank-check: %zu acknowledged transfers are missing (read at LSN %" PRIu64
                ", the log's highest is %" PRIu64 ")\n",
                n_missing, st.lsn, lg.lsn_max);
        rc = 1;
    }
    free(lg.ids);
    free(st.t);
    free(st.bal);
    return rc;
}

static void bank_print(const run *r)
{
    double secs = (double)(r->deadline_ns - r->start_ns) / 1e9;
    char first[32] = "null";
    if (r->first_error_ns != 0)
        snprintf(first, sizeof(first), "%.1f", (double)(r->first_error_ns - r->start_ns) / 1e6);
    printf("{\"mode\":\"bank\",\"clients\":%d,\"ok\":%" PRIu64 ",\"dup\":%" PRIu64
           ",\"unknown\":%" PRIu64 ",\"fail\":%" PRIu64 ",\"retries\":%" PRIu64
           ",\"commits_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"longest_gap_ms\":%.1f"
           ",\"longest_gap_from_ms\":%.1f,\"first_error_ms\":%s,\"seed\":%" PRIu64 "}\n",
           r->n_clients, r->ok, r->dup, r->unknown, r->errors, r->retries, (double)r->ok / secs,
           vb_lat_quantile(&r->lat, 0.5) / 1000.0, vb_lat_quantile(&r->lat, 0.99) / 1000.0,
           (double)r->gap_max_ns / 1e6,
           r->gap_max_ns ? (double)(r->gap_max_from_ns - r->start_ns) / 1e6 : 0.0, first, r->seed);
}

/* ---- main -------------------------------------------------------------------------------- */

static int tls_from(run *r, const char *dir)
{
    char ca[1100], cert[1100], key[1100];
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(cert, sizeof(cert), "%s/cli.crt", dir);
    snprintf(key, sizeof(key), "%s/cli.key", dir);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    mrd_msg msg = {{0}};
    int rc = h2_tls_client_new(&cfg, &r->tls, &msg);
    if (rc != 0) fprintf(stderr, "sqlload: %s\n", msg.text);
    return rc;
}

/* append and append-check: what main parsed, checked, into ac; append.c does the rest. */
static int append_main(const char *m, ap_config *ac, const char *addr, const char *read_addr,
                       const char *tls, run *r)
{
    bool check = strcmp(m, "append-check") == 0;
    const char *c = ac->consistency;
    if (addr == NULL || topo_addr_parse(addr, &ac->addr) != 0 || ac->log == NULL ||
        (read_addr != NULL && topo_addr_parse(read_addr, &ac->read_addr) != 0) ||
        (!check && ac->duration_ms == 0) ||
        (strcmp(c, "eventual") != 0 && strcmp(c, "session") != 0 && strcmp(c, "strong") != 0))
        return -1;
    ac->has_read_addr = read_addr != NULL;
    if (tls != NULL && tls_from(r, tls) != 0) return 2;
    ac->tls = r->tls;
    mrd_log_init("sqlload", MRD_LOG_ERROR);
    if (check) return ap_check(ac);
    if (!ac->has_seed) ac->seed = (mrd_now_ns() ^ (uint64_t)getpid() << 20) & ((1ull << 48) - 1);
    return ap_run_workload(ac);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* an endpoint that goes away is retried, not our end */
    static run r;
    const char *addr = NULL, *tls = NULL, *log = NULL, *file = NULL, *dump = NULL;
    uint64_t duration_ms = 0;
    bool has_seed = false, has_id_base = false;
    r.n_clients = 1;
    r.accounts = 100;
    static ap_config ac = {.keys = 8, .appends_per_key = 200, .reads_percent = 50,
                           .op_timeout_ms = 10000, .final = "-"};
    const char *read_addr = NULL, *read_consistency = NULL;
    static const struct option opts[] = {
        {"addr", required_argument, NULL, 'a'},     {"tls", required_argument, NULL, 't'},
        {"clients", required_argument, NULL, 'c'},  {"requests", required_argument, NULL, 'n'},
        {"duration-ms", required_argument, NULL, 'd'}, {"log", required_argument, NULL, 'l'},
        {"consistency", required_argument, NULL, 'k'}, {"file", required_argument, NULL, 'f'},
        {"id-base", required_argument, NULL, 'b'}, {"rate", required_argument, NULL, 'r'},
        {"accounts", required_argument, NULL, 'K'}, {"seed", required_argument, NULL, 's'},
        {"after-lsn", required_argument, NULL, 'L'}, {"dump", required_argument, NULL, 'D'},
        {"keys", required_argument, NULL, 'Y'},     {"read-addr", required_argument, NULL, 'R'},
        {"read-consistency", required_argument, NULL, 'C'},
        {"final", required_argument, NULL, 'F'},   {"reads-percent", required_argument, NULL, 'P'},
        {"appends-per-key", required_argument, NULL, 'A'},
        {"key-base", required_argument, NULL, 'B'},
        {"op-timeout-ms", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0}};
    if (argc < 2) goto usage;
    const char *m = argv[1];
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': addr = optarg; break;
        case 't': tls = optarg; break;
        case 'c': r.n_clients = atoi(optarg); break;
        case 'n': r.requests_max = strtoull(optarg, NULL, 10); break;
        case 'd': duration_ms = strtoull(optarg, NULL, 10); break;
        case 'l': log = optarg; break;
        case 'k': r.consistency = optarg; break;
        case 'f': file = optarg; break;
        case 'b': r.id_base = strtoull(optarg, NULL, 10), has_id_base = true; break;
        case 'r': r.rate = atof(optarg); break;
        case 'K': r.accounts = atoi(optarg); break;
        case 's': r.seed = strtoull(optarg, NULL, 10), has_seed = true; break;
        case 'L': r.after_lsn = strtoull(optarg, NULL, 10), r.has_after_lsn = true; break;
        case 'D': dump = optarg; break;
        case 'Y': ac.keys = atoi(optarg); break;
        case 'R': read_addr = optarg; break;
        case 'C': read_consistency = optarg; break;
        case 'F': ac.final = optarg; break;
        case 'P': ac.reads_percent = atoi(optarg); break;
        case 'A': ac.appends_per_key = strtoull(optarg, NULL, 10); break;
        case 'B': ac.key_base = strtoull(optarg, NULL, 10), ac.has_key_base = true; break;
        case 'T': ac.op_timeout_ms = strtoull(optarg, NULL, 10); break;
        default: goto usage;
        }
    }
    if (strcmp(m, "append") == 0 || strcmp(m, "append-check") == 0) {
        ac.clients = r.n_clients;
        ac.duration_ms = duration_ms;
        ac.log = log;
        ac.id_base = r.id_base;
        ac.has_id_base = has_id_base;
        ac.seed = r.seed;
        ac.has_seed = has_seed;
        ac.after_lsn = r.after_lsn;
        ac.has_after_lsn = r.has_after_lsn;
        ac.consistency = strcmp(m, "append") == 0 ? read_consistency : r.consistency;
        if (ac.consistency == NULL) ac.consistency = "session";
        int rc = append_main(m, &ac, addr, read_addr, tls, &r);
        if (rc >= 0) return rc;
        goto usage;
    }
    if (strcmp(m, "sqlite") == 0 && file != NULL)
        return sqlite_reference(file, r.requests_max, duration_ms ? duration_ms : 5000);
    r.m = strcmp(m, "insert") == 0       ? MODE_INSERT
          : strcmp(m, "counters") == 0   ? MODE_COUNTERS
          : strcmp(m, "check") == 0      ? MODE_CHECK
          : strcmp(m, "bank") == 0       ? MODE_BANK
          : strcmp(m, "bank-check") == 0 ? MODE_BANK_CHECK
                                         : (mode)-1;
    if ((int)r.m < 0 || addr == NULL || topo_addr_parse(addr, &r.addr) != 0 || r.n_clients < 1 ||
        r.n_clients > CLIENTS_MAX || r.accounts < 2 || r.accounts > BANK_ACCOUNTS_MAX)
        goto usage;
    if (r.m == MODE_BANK_CHECK ? log == NULL
        : r.m == MODE_BANK     ? log == NULL || !duration_ms || r.requests_max
                               : !r.requests_max && !duration_ms)
        goto usage;
    if (r.consistency == NULL) r.consistency = r.has_after_lsn ? "session" : "eventual";
    if (tls != NULL && tls_from(&r, tls) != 0) return r.m >= MODE_BANK ? 2 : 1;
    mrd_log_init("sqlload", MRD_LOG_ERROR);
    if (r.m == MODE_BANK_CHECK) return bank_check(&r, log, dump);
    if (r.m == MODE_BANK && bank_setup(&r) != 0) return 2;
    if (!has_seed) r.seed = (mrd_now_ns() ^ (uint64_t)getpid() << 20) & ((1ull << 48) - 1);
    vb_rng_seed(&r.rng, r.seed);
    if (log != NULL && (r.log = fopen(log, "a")) == NULL) return perror(log), 1;
    vb_lat_init(&r.lat);
    for (int i = 0; i < r.n_clients; i++) {
        r.clients[i] = (client){.r = &r, .index = i};
        mrd_buf_init(&r.clients[i].body);
    }
    uv_loop_init(&r.loop);
    r.start_ns = mrd_now_ns();
    r.deadline_ns = r.start_ns + duration_ms * 1000000ull;
    r.gap_from_ns = r.start_ns;
    uv_timer_init(&r.loop, &r.timer);
    r.timer.data = &r;
    uv_timer_start(&r.timer, on_timer, 0, r.m == MODE_BANK ? BANK_TICK_MS : RECONNECT_MS);
    if (r.rate > 0) {
        uv_timer_init(&r.loop, &r.pacer);
        r.pacer.data = &r;
        uv_timer_start(&r.pacer, on_pace, 1, 1);
    }
    uv_run(&r.loop, UV_RUN_DEFAULT);
    if (r.m == MODE_BANK) {
        bank_print(&r);
        if (r.log != NULL) fclose(r.log);
        return 0;
    }
    double secs = (double)(mrd_now_ns() - r.start_ns) / 1e9;
    uint64_t ok = r.done - r.errors - r.unknown;
    printf("{\"mode\":\"%s\",\"clients\":%d,\"commits\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"unknown\":%" PRIu64 ",\"seconds\":%.3f,\"commits_per_s\":%.1f,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"reads\":%" PRIu64 ",\"violations\":%" PRIu64 ",\"max_seen\":%" PRId64
           "}\n",
           m, r.n_clients, ok, r.errors, r.unknown, secs, (double)ok / secs,
           vb_lat_quantile(&r.lat, 0.5) / 1000.0, vb_lat_quantile(&r.lat, 0.99) / 1000.0, r.reads,
           r.violations, r.last_seen);
    if (r.log != NULL) fclose(r.log);
    return r.violations > 0 ? 1 : 0;
usage:
    fprintf(stderr, "usage: sqlload insert|counters|check --addr HOST:PORT [--tls DIR] "
                    "[--clients N] (--requests M | --duration-ms D) [--log FILE] "
                    "[--consistency C] [--id-base B] [--rate R]\n"
                    "       sqlload bank --addr HOST:PORT [--tls DIR] --clients N --duration-ms D "
                    "--log FILE [--accounts K] [--id-base B] [--seed S] [--rate R]\n"
                    "       sqlload bank-check --addr HOST:PORT [--tls DIR] --log FILE|- "
                    "[--accounts K] [--consistency C] [--after-lsn L] [--dump FILE2]\n"
                    "       sqlload append --addr HOST:PORT [--tls DIR] --clients N --duration-ms D "
                    "--log FILE [--keys K] [--id-base B] [--key-base B] [--read-addr HOST:PORT] "
                    "[--read-consistency eventual|session|strong] [--reads-percent P] "
                    "[--appends-per-key M] [--op-timeout-ms T] [--seed S]\n"
                    "       sqlload append-check --addr HOST:PORT [--tls DIR] --log FILE "
                    "[--final FILE.json] [--consistency C] [--after-lsn L]\n"
                    "       sqlload sqlite --file PATH (--requests M | --duration-ms D)\n");
    return 2;
}
