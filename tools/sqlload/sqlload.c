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
 *   sqlload sqlite   --file PATH (--requests M | --duration-ms D)
 *       the reference: the same inserts into a plain local SQLite file in WAL
 *       mode with synchronous=FULL, one commit at a time.
 */
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/h2.h"
#include "meridian/json.h"
#include "meridian/topo.h"
#include "meridian/vbench.h"

#define CLIENTS_MAX 1024
#define RECONNECT_MS 100

typedef enum { MODE_INSERT, MODE_COUNTERS, MODE_CHECK } mode;

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
    uv_timer_t timer;
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
    if (error != 0 || cl->status == 0) {
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
    char body[512];
    cl->seq++;
    cl->txn_id = r->id_base + (uint64_t)(cl->index + 1) * 1000000000ull + cl->seq;
    if (r->m == MODE_INSERT)
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
    if (status != 0) return;
    for (int i = 0; i < r->n_clients; i++)
        if (!r->clients[i].busy) send_next(&r->clients[i]);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    ((run *)ud)->connecting = false;
}

static const h2_client_cbs client_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

/* Reconnects when the connection dropped; ends the run when everything is answered. */
static void on_timer(uv_timer_t *t)
{
    run *r = t->data;
    int busy = 0;
    for (int i = 0; i < r->n_clients; i++)
        busy += r->clients[i].busy;
    if (!more(r) && busy == 0) {
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

int main(int argc, char **argv)
{
    static run r;
    const char *addr = NULL, *tls = NULL, *log = NULL, *file = NULL;
    uint64_t duration_ms = 0;
    r.n_clients = 1;
    r.consistency = "eventual";
    static const struct option opts[] = {
        {"addr", required_argument, NULL, 'a'},     {"tls", required_argument, NULL, 't'},
        {"clients", required_argument, NULL, 'c'},  {"requests", required_argument, NULL, 'n'},
        {"duration-ms", required_argument, NULL, 'd'}, {"log", required_argument, NULL, 'l'},
        {"consistency", required_argument, NULL, 'k'}, {"file", required_argument, NULL, 'f'},
        {"id-base", required_argument, NULL, 'b'}, {"rate", required_argument, NULL, 'r'},
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
        case 'b': r.id_base = strtoull(optarg, NULL, 10); break;
        case 'r': r.rate = atof(optarg); break;
        default: goto usage;
        }
    }
    if (strcmp(m, "sqlite") == 0 && file != NULL)
        return sqlite_reference(file, r.requests_max, duration_ms ? duration_ms : 5000);
    r.m = strcmp(m, "insert") == 0 ? MODE_INSERT : strcmp(m, "counters") == 0 ? MODE_COUNTERS
          : strcmp(m, "check") == 0 ? MODE_CHECK : (mode)-1;
    if ((int)r.m < 0 || addr == NULL || topo_addr_parse(addr, &r.addr) != 0 ||
        r.n_clients < 1 || r.n_clients > CLIENTS_MAX || (!r.requests_max && !duration_ms))
        goto usage;
    if (tls != NULL && tls_from(&r, tls) != 0) return 1;
    if (log != NULL && (r.log = fopen(log, "a")) == NULL) return perror(log), 1;
    mrd_log_init("sqlload", MRD_LOG_ERROR);
    vb_lat_init(&r.lat);
    for (int i = 0; i < r.n_clients; i++) {
        r.clients[i] = (client){.r = &r, .index = i};
        mrd_buf_init(&r.clients[i].body);
    }
    uv_loop_init(&r.loop);
    r.start_ns = mrd_now_ns();
    r.deadline_ns = r.start_ns + duration_ms * 1000000ull;
    uv_timer_init(&r.loop, &r.timer);
    r.timer.data = &r;
    uv_timer_start(&r.timer, on_timer, 0, RECONNECT_MS);
    if (r.rate > 0) {
        uv_timer_init(&r.loop, &r.pacer);
        r.pacer.data = &r;
        uv_timer_start(&r.pacer, on_pace, 1, 1);
    }
    uv_run(&r.loop, UV_RUN_DEFAULT);
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
                    "[--consistency C]\n       sqlload sqlite --file PATH (--requests M | "
                    "--duration-ms D)\n");
    return 2;
}
