/*
 * storage_client: a small writer for the storage node's integration test
 * (test_storage.py). It speaks docs/storage-protocol.md to the six storage
 * nodes of a topology over HTTP/2 (TLS with the CLI's certificate when the
 * topology says so) and prints one JSON object per answer, so that the
 * Python driver can check them.
 *
 *   storage_client TOPOLOGY DATA COMMAND [args]
 *     recover                         reports of every PG from every node: epoch_max,
 *                                     highest LSN, PG 0's head
 *     fence EPOCH TRUNCATE [NODES]    POST /v1/fence
 *     append EPOCH FIRST LAST PREV VOLPREV VDL [NODES]
 *                                     records FIRST..LAST of PG 0 (test content)
 *     pages FIRST LSN [NODES]         read the test pages as of LSN, compare with the
 *                                     records FIRST..LSN applied to zero pages
 *     report [NODES]                  PG 0's report at floor 0: scl and every LSN held
 *     records [NODES]                 every record of PG 0 a node serves to its peers
 *                                     (GET /v1/records, page after page; forgotten
 *                                     ones come from its log): scl and their LSNs
 *     get PATH [NODES]                any GET, body printed as a string
 *     reset BODY NODE                 POST /v1/reset with BODY to one node; when it
 *                                     answers 200, at once on the same connection a
 *                                     page read, an append and a fence (which the
 *                                     node, restarting, must refuse): one line each
 *
 * NODES is a comma-separated list of segment indexes (default: all six).
 * The test records all go to pages TEST_PAGE0 .. TEST_PAGE0 + TEST_PAGES - 1
 * of PG 0, which nothing else of a fresh region writes; record L's content
 * is a function of L alone.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/h2.h"
#include "meridian/quorum.h"
#include "meridian/topo.h"
#include "meridian/wire.h"

#define TEST_PAGE0 200u
#define TEST_PAGES 8u
#define APPEND_RECORDS_MAX 50u
#define CALL_TIMEOUT_MS 5000u

/* ---- one connection per node, one call at a time ---------------------------------------- */

typedef struct {
    uv_loop_t loop;
    h2_client *client;
    int connect_status; /* 1 while connecting */
    bool down;
    bool loop_ready;
} conn;

typedef struct {
    int status;
    int error;
    bool done;
    mrd_buf body;
    char epoch[24], scl[24], highest[24], lsn[24];
} resp;

static void on_connect(h2_client *c, int status, void *ud)
{
    conn *k = ud;
    k->connect_status = status;
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    conn *k = ud;
    k->down = true;
}

static const h2_client_cbs conn_cbs = {.on_connect = on_connect, .on_disconnect = on_disconnect};

static void copy_header(h2_call *call, const char *name, char *out)
{
    const char *v = h2_call_header(call, name);
    snprintf(out, 24, "%s", v ? v : "");
}

static void on_response(h2_call *call, int status, void *ud)
{
    resp *r = ud;
    r->status = status;
    copy_header(call, "meridian-epoch", r->epoch);
    copy_header(call, "meridian-scl", r->scl);
    copy_header(call, "meridian-highest", r->highest);
    copy_header(call, "meridian-lsn", r->lsn);
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    mrd_buf_append(&((resp *)ud)->body, data, len);
}

static void on_close(h2_call *call, int error, void *ud)
{
    resp *r = ud;
    r->error = error;
    r->done = true;
}

static const h2_call_cbs call_cbs = {
    .on_response = on_response, .on_data = on_data, .on_close = on_close};

static void on_timer(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *flag or the time-out; false on time-out. */
static bool run_until(uv_loop_t *loop, const bool *flag, const int *status, uint64_t ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_timer, ms, 0);
    while (!expired && (flag ? !*flag : *status == 1))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return !expired;
}

static h2_tls *client_tls(const topology *topo, const char *data)
{
    if (!topo->tls) return NULL;
    char ca[1100], cert[1100], key[1100];
    snprintf(ca, sizeof(ca), "%s/certs/ca.crt", data);
    snprintf(cert, sizeof(cert), "%s/certs/cli.crt", data);
    snprintf(key, sizeof(key), "%s/certs/cli.key", data);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    h2_tls *tls = NULL;
    mrd_msg msg;
    if (h2_tls_client_new(&cfg, &tls, &msg) != 0) {
        fprintf(stderr, "storage_client: %s\n", msg.text);
        exit(2);
    }
    return tls;
}

static bool conn_open(conn *k, const topo_node *node, h2_tls *tls)
{
    if (k->client != NULL && !k->down) return true;
    if (k->client != NULL) { /* dropped: a new connection */
        h2_client_close(k->client);
        uv_run(&k->loop, UV_RUN_NOWAIT);
        k->client = NULL;
    }
    if (!k->loop_ready) uv_loop_init(&k->loop);
    k->loop_ready = true;
    h2_client_config cfg = {.host = node->addr.host, .port = node->addr.port, .tls = tls};
    mrd_msg msg;
    k->connect_status = 1;
    k->down = false;
    if (h2_client_connect(&k->loop, &cfg, &conn_cbs, k, &k->client, &msg) != 0) {
        k->client = NULL;
        return false;
    }
    if (!run_until(&k->loop, NULL, &k->connect_status, CALL_TIMEOUT_MS) || k->connect_status != 0) {
        k->down = true;
        return false;
    }
    return true;
}

static void conn_close(conn *k)
{
    if (!k->loop_ready) return;
    if (k->client != NULL) h2_client_close(k->client);
    uv_run(&k->loop, UV_RUN_DEFAULT);
    uv_loop_close(&k->loop);
    k->client = NULL;
    k->loop_ready = false;
}

/* One request; false when the node could not be reached or did not answer. */
static bool call(conn *k, const topo_node *node, h2_tls *tls, const char *method,
                 const char *path, const h2_header *hdrs, size_t n, const void *body, size_t len,
                 resp *r)
{
    memset(r, 0, sizeof(*r));
    mrd_buf_init(&r->body);
    if (!conn_open(k, node, tls)) return false;
    if (h2_client_request(k->client, method, path, hdrs, n, body, len, true, &call_cbs, r, NULL) !=
        0)
        return false;
    if (!run_until(&k->loop, &r->done, NULL, CALL_TIMEOUT_MS)) return false;
    return r->error == 0;
}

/* ---- test records ------------------------------------------------------------------------ */

static uint8_t full_image[WIRE_PAGE_SIZE_MAX];
static uint8_t delta_bytes[2][32];

/* Record lsn of the test; its deltas point into static buffers (one record at a time). */
static void test_record(uint64_t lsn, uint64_t prev, uint64_t vol_prev, uint64_t epoch,
                        uint32_t page_size, wire_record *r)
{
    memset(r, 0, sizeof(*r));
    r->lsn = lsn;
    r->epoch = epoch;
    r->prev_lsn = prev;
    r->vol_prev_lsn = vol_prev;
    r->pg = 0;
    r->page = TEST_PAGE0 + lsn % TEST_PAGES;
    r->flags = WIRE_REC_CPL;
    if (lsn % 13 == 0) {
        for (uint32_t i = 0; i < page_size; i++)
            full_image[i] = (uint8_t)(lsn * 7 + i);
        r->flags |= WIRE_REC_FULL;
        r->delta_count = 1;
        r->deltas[0] = (wire_delta){.offset = 0, .len = page_size, .data = full_image};
        return;
    }
    uint32_t off = (uint32_t)((lsn * 37) % (page_size - 64));
    for (int j = 0; j < 16; j++)
        delta_bytes[0][j] = (uint8_t)(lsn + (uint64_t)j);
    for (int j = 0; j < 8; j++)
        delta_bytes[1][j] = (uint8_t)(lsn ^ (uint64_t)(j * 31));
    r->delta_count = 2;
    r->deltas[0] = (wire_delta){.offset = off, .len = 16, .data = delta_bytes[0]};
    r->deltas[1] = (wire_delta){.offset = off + 32, .len = 8, .data = delta_bytes[1]};
}

/* ---- commands ---------------------------------------------------------------------------- */

typedef struct {
    topology topo;
    const topo_region *region;
    h2_tls *tls;
    conn conns[TOPO_STORAGE];
    bool want[TOPO_STORAGE];
} ctx;

static uint64_t num(const char *s)
{
    return strtoull(s, NULL, 10);
}

static void print_fail(const ctx *c, int seg, const resp *r)
{
    printf("{\"seg\":%d,\"id\":\"%s\",\"status\":%d,\"error\":\"%s\",\"body\":", seg,
           topo_segment_node(c->region, seg)->id, r->status,
           r->status ? "" : "unreachable");
    mrd_buf q;
    mrd_buf_init(&q);
    mrd_buf_append(&q, r->body.data ? (const char *)r->body.data : "", r->body.len);
    mrd_buf_append(&q, "", 1);
    mrd_buf out;
    mrd_buf_init(&out);
    mrd_json_quote(&out, (const char *)q.data);
    printf("%.*s}\n", (int)out.len, out.data);
    mrd_buf_free(&q);
    mrd_buf_free(&out);
}

static int cmd_recover(ctx *c)
{
    uint64_t epoch_max = 0, highest = 0, pg0_head = 0;
    int answered = 0;
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        bool any = false;
        for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
            resp r;
            char path[96];
            snprintf(path, sizeof(path), "/v1/report?pg=%" PRIu32 "&floor=%" PRIu64, pg,
                     (uint64_t)UINT64_MAX);
            const topo_node *n = topo_segment_node(c->region, seg);
            if (!call(&c->conns[seg], n, c->tls, "GET", path, NULL, 0, NULL, 0, &r) ||
                r.status != 200) {
                mrd_buf_free(&r.body);
                break;
            }
            any = true;
            if (num(r.epoch) > epoch_max) epoch_max = num(r.epoch);
            if (num(r.highest) > highest) highest = num(r.highest);
            if (pg == 0 && num(r.highest) > pg0_head) pg0_head = num(r.highest);
            mrd_buf_free(&r.body);
        }
        answered += any;
    }
    printf("{\"answered\":%d,\"epoch_max\":%" PRIu64 ",\"highest\":%" PRIu64
           ",\"pg0_head\":%" PRIu64 "}\n",
           answered, epoch_max, highest, pg0_head);
    return 0;
}

static int cmd_fence(ctx *c, uint64_t epoch, uint64_t truncate)
{
    char e[24], t[24];
    snprintf(e, sizeof(e), "%" PRIu64, epoch);
    snprintf(t, sizeof(t), "%" PRIu64, truncate);
    h2_header hdrs[] = {{"meridian-epoch", e}, {"meridian-truncate-lsn", t}};
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        resp r;
        const topo_node *n = topo_segment_node(c->region, seg);
        if (call(&c->conns[seg], n, c->tls, "POST", "/v1/fence", hdrs, 2, NULL, 0, &r) &&
            r.status == 200)
            printf("{\"seg\":%d,\"id\":\"%s\",\"status\":200,\"epoch\":%s}\n", seg, n->id,
                   r.epoch);
        else
            print_fail(c, seg, &r);
        mrd_buf_free(&r.body);
    }
    return 0;
}

/* Frames of at most APPEND_RECORDS_MAX records, appended into bodies. */
static void build_append(uint64_t epoch, uint64_t first, uint64_t last, uint64_t prev,
                         uint64_t vol_prev, uint32_t page_size, mrd_buf *body)
{
    size_t at;
    wire_batch_builder b;
    mrd_msg msg;
    wire_frame_begin(body, &at);
    wire_batch_begin(&b, body, WIRE_BATCH_LOG);
    for (uint64_t lsn = first; lsn <= last; lsn++) {
        wire_record r;
        test_record(lsn, prev, vol_prev, epoch, page_size, &r);
        if (wire_batch_add(&b, &r, &msg) != 0) {
            fprintf(stderr, "storage_client: %s\n", msg.text);
            exit(2);
        }
        prev = vol_prev = lsn;
    }
    wire_batch_finish(&b, &msg);
    wire_frame_end(body, at, &msg);
}

static void print_ack(const ctx *c, int seg, const resp *r)
{
    wire_ack ack;
    mrd_msg msg;
    if (wire_ack_decode(r->body.data, r->body.len, &ack, &msg) != 0) {
        printf("{\"seg\":%d,\"status\":200,\"error\":\"bad ack: %s\"}\n", seg, msg.text);
        return;
    }
    printf("{\"seg\":%d,\"id\":\"%s\",\"status\":200,\"epoch\":%" PRIu64 ",\"pg\":%" PRIu32
           ",\"scl\":%" PRIu64 ",\"durable\":%" PRIu64 "}\n",
           seg, topo_segment_node(c->region, seg)->id, ack.epoch, ack.pg, ack.scl,
           ack.lsn_durable);
}

static int cmd_append(ctx *c, char **a)
{
    uint64_t epoch = num(a[0]), first = num(a[1]), last = num(a[2]);
    uint64_t prev = num(a[3]), vol_prev = num(a[4]), vdl = num(a[5]);
    char e[24], v[24];
    snprintf(e, sizeof(e), "%" PRIu64, epoch);
    snprintf(v, sizeof(v), "%" PRIu64, vdl);
    h2_header hdrs[] = {{"meridian-epoch", e}, {"meridian-pg", "0"}, {"meridian-vdl", v}};
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        resp r = {0};
        bool ok = true;
        uint64_t p = prev, vp = vol_prev;
        for (uint64_t from = first; ok && from <= last; from += APPEND_RECORDS_MAX) {
            uint64_t to = from + APPEND_RECORDS_MAX - 1 < last ? from + APPEND_RECORDS_MAX - 1 : last;
            mrd_buf body;
            mrd_buf_init(&body);
            build_append(epoch, from, to, p, vp, c->topo.page_size, &body);
            mrd_buf_free(&r.body);
            const topo_node *n = topo_segment_node(c->region, seg);
            ok = call(&c->conns[seg], n, c->tls, "POST", "/v1/append", hdrs, 3, body.data,
                      body.len, &r) &&
                 r.status == 200;
            mrd_buf_free(&body);
            p = vp = to;
        }
        if (ok)
            print_ack(c, seg, &r);
        else
            print_fail(c, seg, &r);
        mrd_buf_free(&r.body);
    }
    return 0;
}

/* The test page as of lsn: records first..lsn applied to zeros; *last the last applied. */
static void expected_page(uint64_t page, uint64_t first, uint64_t lsn, uint32_t page_size,
                          uint8_t *out, uint64_t *last)
{
    memset(out, 0, page_size);
    *last = 0;
    for (uint64_t l = first; l <= lsn; l++) {
        if (TEST_PAGE0 + l % TEST_PAGES != page) continue;
        wire_record r;
        test_record(l, 0, 0, 0, page_size, &r);
        wire_record_apply(out, page_size, &r, NULL);
        *last = l;
    }
}

static int cmd_pages(ctx *c, uint64_t first, uint64_t lsn)
{
    uint8_t *want = malloc(c->topo.page_size);
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        int ok = 0, wrong = 0, other = 0, last_status = 0;
        for (uint64_t page = TEST_PAGE0; page < TEST_PAGE0 + TEST_PAGES; page++) {
            char path[128];
            snprintf(path, sizeof(path), "/v1/page?page=%" PRIu64 "&lsn=%" PRIu64, page, lsn);
            resp r;
            const topo_node *n = topo_segment_node(c->region, seg);
            uint64_t last;
            expected_page(page, first, lsn, c->topo.page_size, want, &last);
            if (!call(&c->conns[seg], n, c->tls, "GET", path, NULL, 0, NULL, 0, &r) ||
                r.status != 200) {
                other++;
                last_status = r.status;
            } else if (r.body.len == c->topo.page_size &&
                       memcmp(r.body.data, want, c->topo.page_size) == 0 && num(r.lsn) == last) {
                ok++;
            } else {
                wrong++;
                fprintf(stderr, "seg %d page %" PRIu64 ": %zu bytes, lsn %s, expected lsn %" PRIu64
                                "\n",
                        seg, page, r.body.len, r.lsn, last);
            }
            mrd_buf_free(&r.body);
        }
        printf("{\"seg\":%d,\"ok\":%d,\"wrong\":%d,\"other\":%d,\"status\":%d}\n", seg, ok, wrong,
               other, last_status);
    }
    free(want);
    return 0;
}

static int cmd_report(ctx *c)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        resp r;
        const topo_node *n = topo_segment_node(c->region, seg);
        if (!call(&c->conns[seg], n, c->tls, "GET", "/v1/report?pg=0&floor=0", NULL, 0, NULL, 0,
                  &r) ||
            r.status != 200) {
            print_fail(c, seg, &r);
            mrd_buf_free(&r.body);
            continue;
        }
        printf("{\"seg\":%d,\"epoch\":%s,\"scl\":%s,\"highest\":%s,\"lsns\":[", seg, r.epoch,
               r.scl, r.highest);
        const char *sep = "";
        size_t off = 0;
        while (off + WIRE_FRAME_HEADER_BYTES <= r.body.len) {
            uint32_t len = (uint32_t)r.body.data[off] | (uint32_t)r.body.data[off + 1] << 8 |
                           (uint32_t)r.body.data[off + 2] << 16 |
                           (uint32_t)r.body.data[off + 3] << 24;
            wire_batch b;
            wire_record rec;
            wire_batch_iter it;
            if (wire_batch_decode(r.body.data + off + 8, len, &b, NULL) != 0) break;
            wire_batch_iter_init(&it, &b);
            while (wire_batch_iter_next(&it, &rec) == 1) {
                printf("%s%" PRIu64, sep, rec.lsn);
                sep = ",";
            }
            off += WIRE_FRAME_HEADER_BYTES + len;
        }
        printf("]}\n");
        mrd_buf_free(&r.body);
    }
    return 0;
}

/* Prints the LSNs of the records in one /v1/records body; *count, *last of them. */
static void print_batch_lsns(const mrd_buf *body, const char **sep, uint32_t *count,
                             uint64_t *last)
{
    size_t off = 0;
    while (off + WIRE_FRAME_HEADER_BYTES <= body->len) {
        uint32_t len = (uint32_t)body->data[off] | (uint32_t)body->data[off + 1] << 8 |
                       (uint32_t)body->data[off + 2] << 16 | (uint32_t)body->data[off + 3] << 24;
        wire_batch b;
        wire_record rec;
        wire_batch_iter it;
        if (wire_batch_decode(body->data + off + 8, len, &b, NULL) != 0) break;
        wire_batch_iter_init(&it, &b);
        while (wire_batch_iter_next(&it, &rec) == 1) {
            printf("%s%" PRIu64, *sep, rec.lsn);
            *sep = ",";
            (*count)++;
            *last = rec.lsn;
        }
        off += WIRE_FRAME_HEADER_BYTES + len;
    }
}

static int cmd_records(ctx *c)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        const topo_node *n = topo_segment_node(c->region, seg);
        const char *sep = "";
        uint64_t after = 0;
        bool open = false;
        for (;;) {
            char path[96];
            resp r;
            snprintf(path, sizeof(path), "/v1/records?pg=0&after=%" PRIu64, after);
            if (!call(&c->conns[seg], n, c->tls, "GET", path, NULL, 0, NULL, 0, &r) ||
                r.status != 200) {
                if (open) printf("]}\n");
                print_fail(c, seg, &r);
                mrd_buf_free(&r.body);
                break;
            }
            if (!open) printf("{\"seg\":%d,\"scl\":%s,\"lsns\":[", seg, r.scl);
            open = true;
            uint32_t count = 0;
            print_batch_lsns(&r.body, &sep, &count, &after);
            mrd_buf_free(&r.body);
            if (count == 0) {
                printf("]}\n");
                break;
            }
        }
    }
    return 0;
}

static int cmd_get(ctx *c, const char *path)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        if (!c->want[seg]) continue;
        resp r;
        const topo_node *n = topo_segment_node(c->region, seg);
        bool ok = call(&c->conns[seg], n, c->tls, "GET", path, NULL, 0, NULL, 0, &r);
        if (ok && r.status == 200)
            printf("%.*s", (int)r.body.len, r.body.data ? (const char *)r.body.data : "");
        else
            print_fail(c, seg, &r);
        mrd_buf_free(&r.body);
    }
    return 0;
}

/* One answer as {"seg","path","status","body"}: the body as a JSON string. */
static void print_answer(int seg, const char *path, const resp *r)
{
    mrd_buf q, out;
    mrd_buf_init(&q);
    mrd_buf_init(&out);
    mrd_buf_append(&q, r->body.data ? (const char *)r->body.data : "", r->body.len);
    mrd_buf_append(&q, "", 1);
    mrd_json_quote(&out, (const char *)q.data);
    printf("{\"seg\":%d,\"path\":\"%s\",\"status\":%d,\"body\":%.*s}\n", seg, path, r->status,
           (int)out.len, out.data);
    mrd_buf_free(&q);
    mrd_buf_free(&out);
}

static int cmd_reset(ctx *c, const char *body, int seg)
{
    const topo_node *n = topo_segment_node(c->region, seg);
    conn *k = &c->conns[seg];
    resp r;
    bool ok = call(k, n, c->tls, "POST", "/v1/reset", NULL, 0, body, strlen(body), &r);
    print_answer(seg, "/v1/reset", &r);
    mrd_buf_free(&r.body);
    if (!ok || r.status != 200) return 0;
    h2_header append_hdrs[] = {{"meridian-epoch", "1"}, {"meridian-pg", "0"}};
    h2_header fence_hdrs[] = {{"meridian-epoch", "99"}, {"meridian-truncate-lsn", "1"}};
    struct {
        const char *method, *path;
        const h2_header *hdrs;
        size_t n;
    } then[] = {{"GET", "/v1/page?page=0&lsn=1", NULL, 0},
                {"POST", "/v1/append", append_hdrs, 2},
                {"POST", "/v1/fence", fence_hdrs, 2}};
    for (size_t i = 0; i < sizeof(then) / sizeof(then[0]); i++) {
        call(k, n, c->tls, then[i].method, then[i].path, then[i].hdrs, then[i].n, "x", 1, &r);
        print_answer(seg, then[i].path, &r);
        mrd_buf_free(&r.body);
    }
    return 0;
}

static void parse_nodes(ctx *c, const char *list)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++)
        c->want[seg] = list == NULL;
    for (const char *p = list; p != NULL && *p != '\0'; p++)
        if (*p >= '0' && *p < '0' + TOPO_STORAGE) c->want[*p - '0'] = true;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: storage_client TOPOLOGY DATA COMMAND [args]\n");
        return 2;
    }
    static ctx c;
    mrd_msg msg;
    mrd_log_init("storage_client", MRD_LOG_ERROR);
    if (topo_load(argv[1], &c.topo, &msg) != 0) {
        fprintf(stderr, "storage_client: %s\n", msg.text);
        return 2;
    }
    c.region = &c.topo.regions[0];
    c.tls = client_tls(&c.topo, argv[2]);
    const char *cmd = argv[3];
    char **a = argv + 4;
    int n = argc - 4, rc = 2;
    if (strcmp(cmd, "recover") == 0) {
        rc = cmd_recover(&c);
    } else if (strcmp(cmd, "fence") == 0 && n >= 2) {
        parse_nodes(&c, n > 2 ? a[2] : NULL);
        rc = cmd_fence(&c, num(a[0]), num(a[1]));
    } else if (strcmp(cmd, "append") == 0 && n >= 6) {
        parse_nodes(&c, n > 6 ? a[6] : NULL);
        rc = cmd_append(&c, a);
    } else if (strcmp(cmd, "pages") == 0 && n >= 2) {
        parse_nodes(&c, n > 2 ? a[2] : NULL);
        rc = cmd_pages(&c, num(a[0]), num(a[1]));
    } else if (strcmp(cmd, "report") == 0) {
        parse_nodes(&c, n > 0 ? a[0] : NULL);
        rc = cmd_report(&c);
    } else if (strcmp(cmd, "records") == 0) {
        parse_nodes(&c, n > 0 ? a[0] : NULL);
        rc = cmd_records(&c);
    } else if (strcmp(cmd, "reset") == 0 && n >= 2 && a[1][0] >= '0' &&
               a[1][0] < '0' + TOPO_STORAGE && a[1][1] == '\0') {
        rc = cmd_reset(&c, a[0], a[1][0] - '0');
    } else if (strcmp(cmd, "get") == 0 && n >= 1) {
        parse_nodes(&c, n > 1 ? a[1] : NULL);
        rc = cmd_get(&c, a[0]);
    } else {
        fprintf(stderr, "storage_client: unknown command or missing arguments: %s\n", cmd);
    }
    for (int seg = 0; seg < TOPO_STORAGE; seg++)
        conn_close(&c.conns[seg]);
    if (c.tls != NULL) h2_tls_free(c.tls);
    fflush(stdout);
    return rc;
}
