/*
 * h2 in one process: the test routes served on loopback and driven through
 * the client API on the same loop, so that both ends' counters can be read
 * (queued bytes, open streams, closes). h2_fetch runs its own private loop,
 * so those tests serve from a second thread with a loop of its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "routes.h"

#define TICK_MS 5
#define WAIT_MS 20000
#define CONCURRENT_HELD 250
#define CONCURRENT_ECHO 300
#define MANY_CLIENTS 32
#define MANY_CALLS 16
#define STREAM_BYTES (64ull * 1024 * 1024)
#define PAUSE_AFTER_BYTES (2u * 1024 * 1024)
#define UPLOAD_BYTES (32ull * 1024 * 1024)
#define UPLOAD_QUEUE_HIGH (256u * 1024)
#define SETTLE_MS 300

/* ---- fixture: a loop, a server, certificates -------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE returning */
    routes rt;
    h2_server *srv;
    h2_tls *stls;
    uint16_t port;
    uint32_t streams_max;
    bool server_closed;
    char dir[64];   /* certificates: CA 1 (server, client1) */
    char other[64]; /* certificates: CA 2 (intruder) */
} fx;

static void on_tick(uv_timer_t *t) {}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_tree(const char *dir)
{
    if (dir[0] != '\0') nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool run_until(fx *f, bool (*done)(void *), void *arg, uint64_t timeout_ms)
{
    uint64_t deadline = mrd_now_ms() + timeout_ms;
    while (!done(arg)) {
        if (mrd_now_ms() > deadline) return false;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool never(void *arg)
{
    return false;
}

static void run_for(fx *f, uint64_t ms)
{
    run_until(f, never, NULL, ms);
}

static void make_certs(fx *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/mrd-h2-certs-XXXXXX");
    snprintf(f->other, sizeof(f->other), "/tmp/mrd-h2-other-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_non_null(mkdtemp(f->other));
    const char *ids[] = {"server", "client1"};
    const char *intruder[] = {"intruder"};
    mrd_msg msg;
    assert_int_equal(h2_certs_generate(f->dir, ids, 2, &msg), 0);
    assert_int_equal(h2_certs_generate(f->other, intruder, 1, &msg), 0);
    /* running again keeps what exists */
    assert_int_equal(h2_certs_generate(f->dir, ids, 2, &msg), 0);
    struct stat st;
    char key[128];
    snprintf(key, sizeof(key), "%s/client1.key", f->dir);
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void path_in(char *out, size_t n, const char *dir, const char *file)
{
    snprintf(out, n, "%s/%s", dir, file);
}

static void start_server(fx *f, bool tls, size_t body_bytes_max)
{
    mrd_msg msg;
    if (tls) {
        char ca[128], crt[128], key[128];
        path_in(ca, sizeof(ca), f->dir, "ca.crt");
        path_in(crt, sizeof(crt), f->dir, "server.crt");
        path_in(key, sizeof(key), f->dir, "server.key");
        h2_tls_config cfg = {.ca_file = ca, .cert_file = crt, .key_file = key, .verify_peer = true};
        assert_int_equal(h2_tls_server_new(&cfg, &f->stls, &msg), 0);
    }
    h2_server_config cfg = {.host = "127.0.0.1",
                            .port = 0,
                            .tls = f->stls,
                            .body_bytes_max = body_bytes_max,
                            .streams_max = f->streams_max};
    assert_int_equal(h2_server_start(&f->loop, &cfg, &routes_cbs, &f->rt, &f->srv, &msg), 0);
    f->port = h2_server_port(f->srv);
    assert_true(f->port > 0);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, on_tick, TICK_MS, TICK_MS);
    *state = f;
    return 0;
}

static void on_server_closed(void *ud)
{
    ((fx *)ud)->server_closed = true;
}

static bool server_closed(void *arg)
{
    return ((fx *)arg)->server_closed;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->srv != NULL) {
        h2_server_close(f->srv, on_server_closed, f);
        assert_true(run_until(f, server_closed, f, WAIT_MS));
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle closed */
    assert_int_equal(f->rt.open_reqs, 0);
    h2_tls_free(f->stls);
    rm_tree(f->dir);
    rm_tree(f->other);
    free(f);
    return 0;
}

/* ---- client side helpers ---------------------------------------------------------------- */

typedef struct {
    h2_client *c;
    h2_tls *tls;
    bool connect_done;
    int connect_status;
    int disconnects;
    int disconnect_err;
} cli;

static void on_cli_connect(h2_client *c, int status, void *ud)
{
    cli *k = ud;
    k->connect_done = true;
    k->connect_status = status;
}

static void on_cli_disconnect(h2_client *c, int error, void *ud)
{
    cli *k = ud;
    k->disconnects++;
    k->disconnect_err = error;
}

static const h2_client_cbs cli_cbs = {.on_connect = on_cli_connect,
                                      .on_disconnect = on_cli_disconnect};

static bool cli_connect_done(void *arg)
{
    return ((cli *)arg)->connect_done;
}

/* Connects (TLS when cert names a certificate in dir or when ca is set). */
static int cli_open(fx *f, cli *k, const char *ca_dir, const char *cert_dir, const char *cert,
                    const char *server_name)
{
    memset(k, 0, sizeof(*k));
    mrd_msg msg;
    if (ca_dir != NULL) {
        char ca[128], crt[128], key[128];
        path_in(ca, sizeof(ca), ca_dir, "ca.crt");
        snprintf(crt, sizeof(crt), "%s/%s.crt", cert_dir, cert ? cert : "");
        snprintf(key, sizeof(key), "%s/%s.key", cert_dir, cert ? cert : "");
        h2_tls_config cfg = {.ca_file = ca,
                             .cert_file = cert ? crt : NULL,
                             .key_file = cert ? key : NULL,
                             .verify_peer = true};
        assert_int_equal(h2_tls_client_new(&cfg, &k->tls, &msg), 0);
    }
    h2_client_config cfg = {
        .host = "127.0.0.1", .port = f->port, .tls = k->tls, .server_name = server_name};
    assert_int_equal(h2_client_connect(&f->loop, &cfg, &cli_cbs, k, &k->c, &msg), 0);
    assert_true(run_until(f, cli_connect_done, k, WAIT_MS));
    return k->connect_status;
}

static void cli_close(fx *f, cli *k)
{
    h2_client_close(k->c);
    run_for(f, 20); /* its handles close */
    h2_tls_free(k->tls);
}

typedef struct {
    h2_call *call;
    int status;
    int closes;
    int close_err;
    mrd_buf body;
    bool check_pattern; /* compare every byte with the pattern instead of keeping it */
    bool pattern_ok;
    uint64_t received;
    uint32_t crc;
    /* streamed upload */
    uint64_t to_send;
    uint64_t sent;
    const char *expect_body;
} rec;

static void on_response(h2_call *call, int status, void *ud)
{
    ((rec *)ud)->status = status;
}

static void on_call_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    rec *r = ud;
    if (r->check_pattern) {
        for (size_t i = 0; i < len && r->pattern_ok; i++) {
            if (data[i] != routes_pattern_byte(r->received + i)) r->pattern_ok = false;
        }
        r->crc = mrd_crc32c(r->crc, data, len);
    } else {
        assert_int_equal(mrd_buf_append(&r->body, data, len), 0);
    }
    r->received += len;
}

static void on_call_close(h2_call *call, int error, void *ud)
{
    rec *r = ud;
    r->closes++;
    r->close_err = error;
}

static void upload_produce(rec *r)
{
    uint8_t chunk[ROUTES_STREAM_CHUNK_BYTES];
    while (r->sent < r->to_send && h2_call_queued(r->call) < UPLOAD_QUEUE_HIGH) {
        size_t n = sizeof(chunk);
        if (r->to_send - r->sent < n) n = (size_t)(r->to_send - r->sent);
        routes_pattern_fill(chunk, r->sent, n);
        if (h2_call_write(r->call, chunk, n) != 0) return;
        r->sent += n;
        if (r->sent == r->to_send) assert_int_equal(h2_call_finish(r->call), 0);
    }
}

static void on_call_drain(h2_call *call, void *ud)
{
    upload_produce(ud);
}

static const h2_call_cbs rec_cbs = {.on_response = on_response,
                                    .on_data = on_call_data,
                                    .on_close = on_call_close,
                                    .on_drain = on_call_drain};

static bool rec_closed(void *arg)
{
    return ((rec *)arg)->closes > 0;
}

typedef struct {
    rec *recs;
    size_t n;
} rec_set;

static bool all_closed(void *arg)
{
    rec_set *s = arg;
    for (size_t i = 0; i < s->n; i++) {
        if (s->recs[i].closes == 0) return false;
    }
    return true;
}

static void request(cli *k, rec *r, const char *method, const char *path, const char *body)
{
    memset(r, 0, sizeof(*r));
    mrd_buf_init(&r->body);
    r->expect_body = body;
    size_t len = body ? strlen(body) : 0;
    assert_int_equal(
        h2_client_request(k->c, method, path, NULL, 0, body, len, true, &rec_cbs, r, &r->call), 0);
}

static void expect_ok(rec *r)
{
    assert_int_equal(r->closes, 1);
    assert_int_equal(r->close_err, 0);
    assert_int_equal(r->status, 200);
    if (r->expect_body != NULL) {
        assert_int_equal(r->body.len, strlen(r->expect_body));
        assert_memory_equal(r->body.data, r->expect_body, r->body.len);
    }
    mrd_buf_free(&r->body);
}

static bool body_has(rec *r, const char *text)
{
    if (mrd_buf_append(&r->body, "", 1) != 0) return false;
    r->body.len--;
    return strstr((const char *)r->body.data, text) != NULL;
}

static uint32_t pattern_crc(uint64_t total)
{
    uint8_t chunk[ROUTES_STREAM_CHUNK_BYTES];
    uint32_t crc = 0;
    for (uint64_t off = 0; off < total; off += sizeof(chunk)) {
        size_t n = total - off < sizeof(chunk) ? (size_t)(total - off) : sizeof(chunk);
        routes_pattern_fill(chunk, off, n);
        crc = mrd_crc32c(crc, chunk, n);
    }
    return crc;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void cleartext_basic_routes(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    assert_true(h2_client_connected(k.c));
    rec status, echo, missing;
    request(&k, &status, "GET", "/v1/status", NULL);
    request(&k, &echo, "POST", "/echo", "hello, meridian");
    request(&k, &missing, "GET", "/nowhere", NULL);
    assert_true(run_until(f, rec_closed, &missing, WAIT_MS));
    assert_true(run_until(f, rec_closed, &status, WAIT_MS));
    assert_true(run_until(f, rec_closed, &echo, WAIT_MS));
    assert_true(body_has(&status, "\"status\":\"ok\",\"peer\":null"));
    expect_ok(&status);
    expect_ok(&echo);
    assert_int_equal(missing.status, 404);
    mrd_buf_free(&missing.body);
    cli_close(f, &k);
    assert_int_equal(k.disconnects, 1);
}

static void concurrent_streams_one_connection(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    /* /hold answers nobody until CONCURRENT_HELD requests are open at once. */
    f->rt.hold_release_at = CONCURRENT_HELD;
    static rec held[CONCURRENT_HELD];
    static char bodies[CONCURRENT_ECHO][32];
    for (int i = 0; i < CONCURRENT_HELD; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "held-%d", i);
        request(&k, &held[i], "POST", "/hold", bodies[i]);
    }
    rec_set hs = {held, CONCURRENT_HELD};
    assert_true(run_until(f, all_closed, &hs, WAIT_MS));
    for (int i = 0; i < CONCURRENT_HELD; i++)
        expect_ok(&held[i]);
    assert_true(f->rt.open_reqs_max >= CONCURRENT_HELD);
    /* More than the server's stream limit at once: the rest wait their turn. */
    static rec echo[CONCURRENT_ECHO];
    for (int i = 0; i < CONCURRENT_ECHO; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "echo-%d", i);
        request(&k, &echo[i], "POST", "/echo", bodies[i]);
    }
    rec_set es = {echo, CONCURRENT_ECHO};
    assert_true(run_until(f, all_closed, &es, WAIT_MS));
    for (int i = 0; i < CONCURRENT_ECHO; i++)
        expect_ok(&echo[i]);
    assert_true(f->rt.open_reqs_max <= H2_STREAMS_MAX_DEFAULT);
    cli_close(f, &k);
}

static void many_connections(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    static cli ks[MANY_CLIENTS];
    static rec recs[MANY_CLIENTS * MANY_CALLS];
    static char bodies[MANY_CLIENTS * MANY_CALLS][32];
    for (int i = 0; i < MANY_CLIENTS; i++)
        assert_int_equal(cli_open(f, &ks[i], NULL, NULL, NULL, NULL), 0);
    for (int i = 0; i < MANY_CLIENTS * MANY_CALLS; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "c%d-r%d", i / MANY_CALLS, i % MANY_CALLS);
        request(&ks[i / MANY_CALLS], &recs[i], "POST", "/echo", bodies[i]);
    }
    rec_set s = {recs, MANY_CLIENTS * MANY_CALLS};
    assert_true(run_until(f, all_closed, &s, WAIT_MS));
    for (int i = 0; i < MANY_CLIENTS * MANY_CALLS; i++)
        expect_ok(&recs[i]);
    for (int i = 0; i < MANY_CLIENTS; i++)
        cli_close(f, &ks[i]);
}

static bool received_enough(void *arg)
{
    return ((rec *)arg)->received >= PAUSE_AFTER_BYTES;
}

static void stream_response_back_pressure(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r;
    char path[64];
    snprintf(path, sizeof(path), "/stream?bytes=%llu", STREAM_BYTES);
    request(&k, &r, "GET", path, NULL);
    r.check_pattern = true;
    r.pattern_ok = true;
    assert_true(run_until(f, received_enough, &r, WAIT_MS));
    h2_call_pause(r.call, true);
    uint64_t at_pause = r.received;
    run_for(f, SETTLE_MS);
    assert_non_null(f->rt.stream_req);
    size_t q1 = h2_req_queued(f->rt.stream_req);
    uint64_t p1 = f->rt.stream_produced, r1 = r.received;
    run_for(f, SETTLE_MS);
    size_t q2 = h2_req_queued(f->rt.stream_req);
    uint64_t p2 = f->rt.stream_produced, r2 = r.received;
    print_message("paused at %llu: received +%llu, queued %zu, produced %llu of %llu\n",
                  (unsigned long long)at_pause, (unsigned long long)(r2 - at_pause), q2,
                  (unsigned long long)p2, STREAM_BYTES);
    assert_int_equal(q1, q2); /* the producer is held back ... */
    assert_int_equal(p1, p2);
    assert_int_equal(r1, r2); /* ... and nothing more arrives */
    assert_true(q2 <= ROUTES_STREAM_QUEUE_HIGH + ROUTES_STREAM_CHUNK_BYTES);
    assert_true(r2 - at_pause <= H2_STREAM_WINDOW_BYTES); /* the window is honoured */
    assert_true(p2 < STREAM_BYTES);
    h2_call_pause(r.call, false);
    assert_true(run_until(f, rec_closed, &r, WAIT_MS * 3));
    assert_int_equal(r.close_err, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.received, STREAM_BYTES);
    assert_true(r.pattern_ok);
    assert_int_equal(r.crc, pattern_crc(STREAM_BYTES));
    cli_close(f, &k);
}

static void stream_request_body(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    f->rt.sink_start_paused = true;
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r;
    memset(&r, 0, sizeof(r));
    mrd_buf_init(&r.body);
    r.to_send = UPLOAD_BYTES;
    assert_int_equal(
        h2_client_request(k.c, "POST", "/sink", NULL, 0, NULL, 0, false, &rec_cbs, &r, &r.call), 0);
    upload_produce(&r);
    run_for(f, SETTLE_MS);
    uint64_t s1 = r.sent, g1 = f->rt.sink_received;
    size_t q1 = h2_call_queued(r.call);
    run_for(f, SETTLE_MS);
    print_message("server paused: received %llu, client sent %llu, queued %zu\n",
                  (unsigned long long)f->rt.sink_received, (unsigned long long)r.sent,
                  h2_call_queued(r.call));
    assert_int_equal(r.sent, s1);
    assert_int_equal(f->rt.sink_received, g1);
    assert_int_equal(h2_call_queued(r.call), q1);
    assert_true(g1 <= H2_STREAM_WINDOW_BYTES);
    assert_true(q1 <= UPLOAD_QUEUE_HIGH + ROUTES_STREAM_CHUNK_BYTES);
    assert_non_null(f->rt.sink_req);
    h2_req_pause(f->rt.sink_req, false);
    assert_true(run_until(f, rec_closed, &r, WAIT_MS * 3));
    assert_int_equal(r.close_err, 0);
    assert_int_equal(r.status, 200);
    char expect[160];
    snprintf(expect, sizeof(expect), "{\"bytes\":%llu,\"crc32c\":%u,\"pattern_ok\":true}",
             UPLOAD_BYTES, pattern_crc(UPLOAD_BYTES));
    assert_true(body_has(&r, expect));
    mrd_buf_free(&r.body);
    cli_close(f, &k);
}

static void body_limit_gives_413(void **state)
{
    fx *f = *state;
    start_server(f, false, 1024);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    static char big[4096];
    memset(big, 'x', sizeof(big) - 1);
    rec r;
    request(&k, &r, "POST", "/echo", big);
    assert_true(run_until(f, rec_closed, &r, WAIT_MS));
    assert_int_equal(r.status, 413);
    mrd_buf_free(&r.body);
    cli_close(f, &k);
}

static void tls_mutual_auth(void **state)
{
    fx *f = *state;
    make_certs(f);
    start_server(f, true, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, f->dir, f->dir, "client1", NULL), 0);
    rec r;
    request(&k, &r, "GET", "/v1/status", NULL);
    assert_true(run_until(f, rec_closed, &r, WAIT_MS));
    assert_true(body_has(&r, "\"peer\":\"client1\""));
    expect_ok(&r);
    cli_close(f, &k);
    /* the certificate names localhost too */
    assert_int_equal(cli_open(f, &k, f->dir, f->dir, "client1", "localhost"), 0);
    cli_close(f, &k);
}

static void tls_client_without_cert_refused(void **state)
{
    fx *f = *state;
    make_certs(f);
    start_server(f, true, 0);
    cli k;
    int status = cli_open(f, &k, f->dir, f->dir, NULL, NULL);
    assert_int_not_equal(status, 0);
    assert_int_equal(k.disconnects, 0);
    cli_close(f, &k);
    assert_int_equal(f->rt.closes, 0);
}

static void tls_client_from_other_ca_refused(void **state)
{
    fx *f = *state;
    make_certs(f);
    start_server(f, true, 0);
    cli k;
    int status = cli_open(f, &k, f->dir, f->other, "intruder", NULL);
    assert_int_not_equal(status, 0);
    cli_close(f, &k);
    assert_int_equal(f->rt.closes, 0);
}

static void tls_wrong_server_name_refused(void **state)
{
    fx *f = *state;
    make_certs(f);
    start_server(f, true, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, f->dir, f->dir, "client1", "wrong.example"), MRD_ETLS);
    cli_close(f, &k);
    /* an IP that is not in the certificate */
    assert_int_equal(cli_open(f, &k, f->dir, f->dir, "client1", "10.9.8.7"), MRD_ETLS);
    cli_close(f, &k);
}

static bool server_idle(void *arg)
{
    fx *f = arg;
    return f->rt.open_reqs == 0 && f->rt.closes > 0;
}

static void connection_drop_mid_stream(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r;
    request(&k, &r, "GET", "/stream?bytes=1000000000", NULL);
    r.check_pattern = true;
    r.pattern_ok = true;
    assert_true(run_until(f, received_enough, &r, WAIT_MS));
    h2_client_close(k.c); /* the client goes away mid-response */
    assert_int_equal(r.closes, 1);
    assert_int_not_equal(r.close_err, 0);
    assert_int_equal(k.disconnects, 1);
    assert_true(run_until(f, server_idle, f, WAIT_MS));
    assert_int_equal(f->rt.closes, 1);
    assert_int_not_equal(f->rt.last_close_code, 0);
    run_for(f, 20);
    h2_tls_free(k.tls);
}

static void server_close_ends_every_call(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    f->rt.hold_release_at = ROUTES_HELD_MAX; /* nobody is answered */
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r[3];
    for (int i = 0; i < 3; i++)
        request(&k, &r[i], "POST", "/hold", "x");
    rec stream;
    request(&k, &stream, "GET", "/stream?bytes=1000000000", NULL);
    stream.check_pattern = true;
    stream.pattern_ok = true;
    assert_true(run_until(f, received_enough, &stream, WAIT_MS));
    h2_server_close(f->srv, on_server_closed, f);
    f->srv = NULL;
    assert_true(run_until(f, server_closed, f, WAIT_MS));
    assert_int_equal(f->rt.closes, 4);
    rec_set s = {r, 3};
    assert_true(run_until(f, all_closed, &s, WAIT_MS));
    assert_true(run_until(f, rec_closed, &stream, WAIT_MS));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].closes, 1);
        assert_int_not_equal(r[i].close_err, 0);
        mrd_buf_free(&r[i].body);
    }
    assert_int_equal(stream.closes, 1);
    assert_int_not_equal(stream.close_err, 0);
    assert_int_equal(k.disconnects, 1);
    assert_false(h2_client_connected(k.c));
    assert_int_equal(
        h2_client_request(k.c, "GET", "/", NULL, 0, NULL, 0, true, &rec_cbs, &r[0], NULL),
        MRD_ECLOSED);
    cli_close(f, &k);
    assert_int_equal(k.disconnects, 1);
}

static bool held_one(void *arg)
{
    return ((fx *)arg)->rt.nheld == 1;
}

static void resets_both_ways(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    f->rt.hold_release_at = ROUTES_HELD_MAX;
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    /* client cancels: the server sees CANCEL */
    rec a;
    request(&k, &a, "POST", "/hold", "a");
    assert_true(run_until(f, held_one, f, WAIT_MS));
    h2_call_cancel(a.call);
    assert_true(run_until(f, rec_closed, &a, WAIT_MS));
    assert_int_equal(a.close_err, MRD_ECLOSED);
    assert_true(run_until(f, server_idle, f, WAIT_MS));
    assert_int_equal(f->rt.last_close_code, NGHTTP2_CANCEL);
    /* server resets: the client's call ends with MRD_ECLOSED, once */
    rec b;
    request(&k, &b, "POST", "/hold", "b");
    assert_true(run_until(f, held_one, f, WAIT_MS));
    h2_req_reset(f->rt.held[0], NGHTTP2_INTERNAL_ERROR);
    assert_true(run_until(f, rec_closed, &b, WAIT_MS));
    run_for(f, 20);
    assert_int_equal(b.closes, 1);
    assert_int_equal(b.close_err, MRD_ECLOSED);
    assert_int_equal(f->rt.closes, 2);
    /* the connection is still good */
    rec c;
    request(&k, &c, "POST", "/echo", "still here");
    assert_true(run_until(f, rec_closed, &c, WAIT_MS));
    expect_ok(&c);
    mrd_buf_free(&a.body);
    mrd_buf_free(&b.body);
    cli_close(f, &k);
}

static bool held_two(void *arg)
{
    return ((fx *)arg)->rt.nheld == 2;
}

static void cancel_queued_call(void **state)
{
    fx *f = *state;
    f->streams_max = 2;
    start_server(f, false, 0);
    f->rt.hold_release_at = ROUTES_HELD_MAX;
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r[4];
    for (int i = 0; i < 4; i++)
        request(&k, &r[i], "POST", "/hold", "q");
    assert_true(run_until(f, held_two, f, WAIT_MS));
    run_for(f, 20);
    assert_int_equal(f->rt.nheld, 2); /* the other two wait in the client */
    h2_call_cancel(r[3].call);        /* its HEADERS never left */
    assert_true(run_until(f, rec_closed, &r[3], WAIT_MS));
    assert_int_equal(r[3].close_err, MRD_ECLOSED);
    h2_call_cancel(r[0].call); /* frees a slot: r[2] goes out */
    assert_true(run_until(f, rec_closed, &r[0], WAIT_MS));
    run_for(f, 50);
    assert_int_equal(f->rt.nheld, 2);
    /* one more free slot: nghttp2 now drops r[3]'s cancelled HEADERS, sending nothing */
    h2_call_cancel(r[1].call);
    assert_true(run_until(f, rec_closed, &r[1], WAIT_MS));
    run_for(f, 50);
    assert_int_equal(f->rt.nheld, 1);
    assert_int_equal(r[3].closes, 1);
    h2_client_close(k.c);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].closes, 1);
        assert_int_not_equal(r[i].close_err, 0);
        mrd_buf_free(&r[i].body);
    }
    assert_true(run_until(f, server_idle, f, WAIT_MS));
    assert_int_equal(f->rt.closes, 3);
    run_for(f, 20);
}

/* ---- a relay that cuts every byte stream into tiny writes -------------------------------- */

#define RELAY_PIECE_BYTES 7

typedef struct relay_pipe relay_pipe;
typedef struct {
    uv_tcp_t tcp;
    relay_pipe *pipe;
    int side;
} relay_end;

struct relay_pipe {
    relay_end ends[2]; /* 0: from the client, 1: to the server */
    uv_connect_t connect;
    int open;
    bool closing;
};

typedef struct {
    uv_write_t req;
    uint8_t data[RELAY_PIECE_BYTES];
} relay_write;

typedef struct {
    uv_tcp_t listener;
    struct sockaddr_in target;
    uint16_t port;
    int pipes_open;
    bool mute; /* a silent cut: bytes both ways are dropped, connections stay open */
} relay;

static relay *relay_of(relay_pipe *p)
{
    return p->ends[0].tcp.data;
}

static void relay_end_closed(uv_handle_t *h)
{
    relay_pipe *p = ((relay_end *)h)->pipe;
    if (--p->open > 0) return;
    relay_of(p)->pipes_open--;
    free(p);
}

static void relay_close(relay_pipe *p)
{
    if (p->closing) return;
    p->closing = true;
    for (int i = 0; i < 2; i++)
        uv_close((uv_handle_t *)&p->ends[i].tcp, relay_end_closed);
}

static void relay_wrote(uv_write_t *req, int status)
{
    free(req);
}

static void relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    relay_end *e = (relay_end *)s;
    relay_pipe *p = e->pipe;
    relay_end *to = &p->ends[1 - e->side];
    if (relay_of(p)->mute && n > 0) n = 0;
    for (ssize_t off = 0; n > 0 && off < n && !p->closing; off += RELAY_PIECE_BYTES) {
        relay_write *w = malloc(sizeof(*w));
        size_t k = (size_t)(n - off) < RELAY_PIECE_BYTES ? (size_t)(n - off) : RELAY_PIECE_BYTES;
        memcpy(w->data, buf->base + off, k);
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)k);
        if (uv_write(&w->req, (uv_stream_t *)&to->tcp, &b, 1, relay_wrote) != 0) free(w);
    }
    free(buf->base);
    if (n < 0) relay_close(p);
}

static void relay_connected(uv_connect_t *req, int status)
{
    relay_pipe *p = mrd_container_of(req, relay_pipe, connect);
    if (status < 0 || p->closing) {
        relay_close(p);
        return;
    }
    for (int i = 0; i < 2; i++) {
        uv_tcp_nodelay(&p->ends[i].tcp, 1);
        uv_read_start((uv_stream_t *)&p->ends[i].tcp, relay_alloc, relay_read);
    }
}

static void relay_accept(uv_stream_t *listener, int status)
{
    relay *r = (relay *)listener;
    relay_pipe *p = calloc(1, sizeof(*p));
    for (int i = 0; i < 2; i++) {
        uv_tcp_init(listener->loop, &p->ends[i].tcp);
        p->ends[i].pipe = p;
        p->ends[i].side = i;
        p->ends[i].tcp.data = r;
    }
    p->open = 2;
    r->pipes_open++;
    if (uv_accept(listener, (uv_stream_t *)&p->ends[0].tcp) != 0 ||
        uv_tcp_connect(&p->connect, &p->ends[1].tcp, (struct sockaddr *)&r->target,
                       relay_connected) != 0) {
        relay_close(p);
    }
}

static void relay_start(fx *f, relay *r)
{
    memset(r, 0, sizeof(*r));
    uv_ip4_addr("127.0.0.1", f->port, &r->target);
    struct sockaddr_in any;
    uv_ip4_addr("127.0.0.1", 0, &any);
    uv_tcp_init(&f->loop, &r->listener);
    assert_int_equal(uv_tcp_bind(&r->listener, (struct sockaddr *)&any, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r->listener, 16, relay_accept), 0);
    struct sockaddr_in bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&bound, &len);
    r->port = ntohs(bound.sin_port);
}

static bool relay_idle(void *arg)
{
    return ((relay *)arg)->pipes_open == 0;
}

static void tls_through_tiny_pieces(void **state)
{
    fx *f = *state;
    make_certs(f);
    start_server(f, true, 0);
    relay r;
    relay_start(f, &r);
    uint16_t server_port = f->port;
    f->port = r.port; /* the client dials the relay */
    cli k;
    assert_int_equal(cli_open(f, &k, f->dir, f->dir, "client1", NULL), 0);
    static char body[20000];
    for (size_t i = 0; i < sizeof(body) - 1; i++)
        body[i] = (char)('a' + i % 26);
    rec echo, stream;
    request(&k, &echo, "POST", "/echo", body);
    request(&k, &stream, "GET", "/stream?bytes=300000", NULL);
    stream.check_pattern = true;
    stream.pattern_ok = true;
    assert_true(run_until(f, rec_closed, &echo, WAIT_MS));
    assert_true(run_until(f, rec_closed, &stream, WAIT_MS));
    expect_ok(&echo);
    assert_int_equal(stream.close_err, 0);
    assert_int_equal(stream.received, 300000);
    assert_true(stream.pattern_ok);
    cli_close(f, &k);
    assert_true(run_until(f, relay_idle, &r, WAIT_MS));
    uv_close((uv_handle_t *)&r.listener, NULL);
    run_for(f, 20); /* the listener lives in this frame */
    f->port = server_port;
}

static bool cli_disconnected(void *arg)
{
    return ((cli *)arg)->disconnects > 0;
}

/* An idle connection stays up past H2_DEAD_MS (PINGs are answered); once the path goes
 * silent both ends close it (MRD_ETIMEDOUT), failing the call held on it. */
static void liveness_pings_and_silent_cut(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    relay r;
    relay_start(f, &r);
    uint16_t server_port = f->port;
    f->port = r.port;
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    run_for(f, H2_DEAD_MS + 1500); /* nothing to say: only PINGs cross */
    assert_int_equal(k.disconnects, 0);
    rec ok;
    request(&k, &ok, "GET", "/v1/status", NULL);
    assert_true(run_until(f, rec_closed, &ok, WAIT_MS));
    expect_ok(&ok);
    f->rt.hold_release_at = ROUTES_HELD_MAX; /* held until the connection ends */
    rec held;
    request(&k, &held, "POST", "/hold", "x");
    run_for(f, 200);
    r.mute = true;
    assert_true(run_until(f, cli_disconnected, &k, WAIT_MS));
    assert_int_equal(k.disconnect_err, MRD_ETIMEDOUT);
    assert_true(run_until(f, rec_closed, &held, WAIT_MS));
    assert_int_not_equal(held.close_err, 0);
    assert_true(run_until(f, server_idle, f, WAIT_MS)); /* the server closed its end too */
    cli_close(f, &k);
    assert_true(run_until(f, relay_idle, &r, WAIT_MS));
    uv_close((uv_handle_t *)&r.listener, NULL);
    run_for(f, 20);
    f->port = server_port;
}

/* A process that was itself stopped (or starved) longer than H2_DEAD_MS does not take
 * its own pause for the peer's silence: what the peer sent waits unread in the socket.
 * Client and server share this loop, so both ends are "stopped" here at once. */
static void liveness_own_pause_not_counted(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    run_for(f, H2_PING_MS + 500); /* a PING has crossed: the last one heard is ~0.5 s old */
    usleep((H2_DEAD_MS + 1000) * 1000); /* the loop does not run: as under SIGSTOP */
    run_for(f, 2 * H2_PING_MS + 500);
    assert_int_equal(k.disconnects, 0);
    rec ok;
    request(&k, &ok, "GET", "/v1/status", NULL);
    assert_true(run_until(f, rec_closed, &ok, WAIT_MS));
    expect_ok(&ok);
    cli_close(f, &k);
}

static void queue_limit_per_connection(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    f->rt.sink_start_paused = true; /* nothing drains after one window */
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), 0);
    rec r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(
        h2_client_request(k.c, "POST", "/sink", NULL, 0, NULL, 0, false, &rec_cbs, &r, &r.call), 0);
    static uint8_t chunk[1024 * 1024];
    int rc = 0;
    size_t written = 0;
    while (rc == 0 && written <= 2 * (size_t)H2_CONN_QUEUED_BYTES_MAX) {
        rc = h2_call_write(r.call, chunk, sizeof(chunk));
        if (rc == 0) written += sizeof(chunk);
        if (written % (8 * sizeof(chunk)) == 0) run_for(f, 5);
    }
    assert_int_equal(rc, MRD_EBUSY);
    assert_true(h2_call_queued(r.call) <= H2_CONN_QUEUED_BYTES_MAX);
    assert_true(written <= H2_CONN_QUEUED_BYTES_MAX + 2 * H2_STREAM_WINDOW_BYTES);
    static uint8_t huge[1]; /* a single write over the limit */
    assert_int_equal(h2_call_write(r.call, huge, (size_t)H2_CONN_QUEUED_BYTES_MAX + 1),
                     MRD_ETOOBIG);
    h2_call_cancel(r.call);
    assert_true(run_until(f, rec_closed, &r, WAIT_MS));
    assert_true(run_until(f, server_idle, f, WAIT_MS));
    cli_close(f, &k);
}

static void connect_by_name(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    cli k;
    memset(&k, 0, sizeof(k));
    mrd_msg msg;
    h2_client_config cfg = {.host = "localhost", .port = f->port};
    assert_int_equal(h2_client_connect(&f->loop, &cfg, &cli_cbs, &k, &k.c, &msg), 0);
    assert_true(run_until(f, cli_connect_done, &k, WAIT_MS));
    if (k.connect_status != 0) {
        /* localhost may resolve to ::1 first while the server listens on 127.0.0.1 */
        print_message("localhost: connect status %s\n", mrd_errname(k.connect_status));
        assert_int_equal(k.connect_status, MRD_ECONN);
    } else {
        rec r;
        request(&k, &r, "GET", "/v1/status", NULL);
        assert_true(run_until(f, rec_closed, &r, WAIT_MS));
        expect_ok(&r);
    }
    cli_close(f, &k);
    /* closing while the name is being resolved */
    memset(&k, 0, sizeof(k));
    assert_int_equal(h2_client_connect(&f->loop, &cfg, &cli_cbs, &k, &k.c, &msg), 0);
    h2_client_close(k.c);
    run_for(f, 100);
    assert_false(k.connect_done);
}

static void connect_refused(void **state)
{
    fx *f = *state;
    start_server(f, false, 0);
    uint16_t port = f->port;
    h2_server_close(f->srv, on_server_closed, f);
    f->srv = NULL;
    assert_true(run_until(f, server_closed, f, WAIT_MS));
    f->port = port; /* nobody listens there now */
    cli k;
    assert_int_equal(cli_open(f, &k, NULL, NULL, NULL, NULL), MRD_ECONN);
    cli_close(f, &k);
}

/* ---- h2_fetch: the server runs on a thread with its own loop ----------------------------- */

typedef struct {
    fx f;
    uv_async_t stop;
    pthread_t thread;
    bool tls;
    uv_sem_t ready;
} served;

static void on_stop(uv_async_t *a)
{
    served *s = a->data;
    uv_close((uv_handle_t *)&s->stop, NULL);
    uv_close((uv_handle_t *)&s->f.tick, NULL);
    h2_server_close(s->f.srv, NULL, NULL);
}

static void *serve(void *arg)
{
    served *s = arg;
    uv_loop_init(&s->f.loop);
    uv_timer_init(&s->f.loop, &s->f.tick);
    start_server(&s->f, s->tls, 0);
    uv_async_init(&s->f.loop, &s->stop, on_stop);
    s->stop.data = s;
    uv_sem_post(&s->ready);
    uv_run(&s->f.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->f.loop);
    return NULL;
}

static void fetch_against_thread(void **state)
{
    served *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    make_certs(&s->f);
    for (int tls = 0; tls <= 1; tls++) {
        s->tls = tls;
        uv_sem_init(&s->ready, 0);
        assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
        uv_sem_wait(&s->ready);
        h2_tls *ctls = NULL;
        mrd_msg msg;
        if (tls) {
            char ca[128], crt[128], key[128];
            path_in(ca, sizeof(ca), s->f.dir, "ca.crt");
            path_in(crt, sizeof(crt), s->f.dir, "client1.crt");
            path_in(key, sizeof(key), s->f.dir, "client1.key");
            h2_tls_config cfg = {
                .ca_file = ca, .cert_file = crt, .key_file = key, .verify_peer = true};
            assert_int_equal(h2_tls_client_new(&cfg, &ctls, &msg), 0);
        }
        h2_client_config cfg = {.host = "127.0.0.1", .port = s->f.port, .tls = ctls};
        h2_result res;
        assert_int_equal(h2_fetch(&cfg, "GET", "/v1/status", NULL, 0, NULL, 0, 5000, &res, &msg),
                         0);
        assert_int_equal(res.status, 200);
        assert_string_equal(res.content_type, "application/json");
        assert_non_null(memmem(res.body.data, res.body.len, "\"status\":\"ok\"", 13));
        h2_result_free(&res);
        h2_header hdr = {"content-type", "text/plain"};
        assert_int_equal(h2_fetch(&cfg, "POST", "/echo", &hdr, 1, "ping", 4, 5000, &res, &msg), 0);
        assert_int_equal(res.body.len, 4);
        assert_memory_equal(res.body.data, "ping", 4);
        assert_string_equal(res.content_type, "text/plain");
        h2_result_free(&res);
        uv_async_send(&s->stop);
        pthread_join(s->thread, NULL);
        uv_sem_destroy(&s->ready);
        h2_tls_free(ctls);
        h2_tls_free(s->f.stls);
        s->f.stls = NULL;
    }
    rm_tree(s->f.dir);
    rm_tree(s->f.other);
    free(s);
}

static void fetch_times_out(void **state)
{
    /* A socket that listens but never speaks: the TCP handshake completes in the backlog. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    h2_client_config cfg = {.host = "127.0.0.1", .port = ntohs(addr.sin_port)};
    h2_result res;
    mrd_msg msg;
    uint64_t t0 = mrd_now_ms();
    assert_int_equal(h2_fetch(&cfg, "GET", "/v1/status", NULL, 0, NULL, 0, 300, &res, &msg),
                     MRD_ETIMEDOUT);
    uint64_t took = mrd_now_ms() - t0;
    assert_true(took >= 250 && took < 5000);
    close(fd);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    mrd_log_init("h2-test", MRD_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(cleartext_basic_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_streams_one_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(many_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_response_back_pressure, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_request_body, setup, teardown),
        cmocka_unit_test_setup_teardown(body_limit_gives_413, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_mutual_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_client_without_cert_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_client_from_other_ca_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_wrong_server_name_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(connection_drop_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(server_close_ends_every_call, setup, teardown),
        cmocka_unit_test_setup_teardown(resets_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_queued_call, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_through_tiny_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(liveness_pings_and_silent_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(liveness_own_pause_not_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(queue_limit_per_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(connect_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(connect_refused, setup, teardown),
        cmocka_unit_test(fetch_against_thread),
        cmocka_unit_test(fetch_times_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
