/*
 * A storage node in miniature for the volume client's tests: the requests of
 * docs/storage-protocol.md served from memory on loopback, over the real
 * segment core (seg_chain) so that SCLs, fences and reports are the ones a
 * real node computes. Appends are "durable" at once. Faults are knobs on the
 * node: answer appends with a chosen error, answer reads 409 incomplete,
 * answer appends with garbage, stop and restart the server on its port.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_storage.h"

static void reply(fk_node *n, h2_req *req, int status, const void *body, size_t len,
                  const char *lsn)
{
    char epoch[24];
    snprintf(epoch, sizeof(epoch), "%" PRIu64, n->epoch);
    h2_header hdrs[2] = {{"meridian-epoch", epoch}, {"meridian-lsn", lsn}};
    h2_req_respond(req, status, hdrs, lsn ? 2 : 1, body, len);
}

static void reply_error(fk_node *n, h2_req *req, int status, const char *code)
{
    char body[160];
    int len =
        snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"fake\"}}", code);
    reply(n, req, status, body, (size_t)len, NULL);
}

static seg_chain *chain(fk_node *n, uint32_t pg)
{
    if (pg >= FK_PGS_MAX) return NULL;
    if (!n->chain_live[pg]) {
        seg_chain_config cfg = {.pg = pg,
                                .seg = (uint8_t)n->seg,
                                .held_max = 1u << 20,
                                .gap_retry_ms = 1000,
                                .epoch = n->epoch};
        if (seg_chain_init(&n->chains[pg], &cfg, NULL) != 0) return NULL;
        n->chain_live[pg] = true;
    }
    return &n->chains[pg];
}

/* The chain's PERSIST: keep the record being appended (it is new on this node). */
static void on_action(void *ctx, const quorum_action *a)
{
    fk_node *n = ctx;
    if (a->kind != QUORUM_ACT_PERSIST) return;
    if (a->id > n->persist_seq) n->persist_seq = a->id;
    if (n->n_recs == n->cap_recs) {
        n->cap_recs = n->cap_recs ? n->cap_recs * 2 : 256;
        n->recs = realloc(n->recs, n->cap_recs * sizeof(*n->recs));
    }
    fk_rec *r = &n->recs[n->n_recs++];
    memset(r, 0, sizeof(*r));
    r->lsn = n->current->lsn;
    r->epoch = n->current->epoch;
    r->page = n->current->page;
    r->pg = n->current->pg;
    mrd_buf_init(&r->enc);
    wire_record_encode(n->current, &r->enc, NULL);
}

static uint64_t pg_highest(const fk_node *n, uint32_t pg)
{
    uint64_t h = 0;
    for (uint32_t i = 0; i < n->n_recs; i++)
        if (n->recs[i].pg == pg && n->recs[i].lsn > h) h = n->recs[i].lsn;
    return h;
}

static int append_records(fk_node *n, uint32_t pg, const uint8_t *body, size_t len)
{
    wire_frame_reader fr;
    wire_frame_reader_init(&fr, 0);
    size_t used = 0;
    wire_frame f;
    int rc = wire_frame_reader_feed(&fr, body, len, &used, &f, NULL) == 1 ? 0 : MRD_EPARSE;
    wire_batch b;
    if (rc == 0) rc = wire_batch_decode(f.data, f.len, &b, NULL);
    seg_chain *c = chain(n, pg);
    quorum_sink sink = {.fn = on_action, .ctx = n};
    wire_batch_iter it;
    if (rc == 0) wire_batch_iter_init(&it, &b);
    wire_record rec;
    while (rc == 0 && c != NULL && wire_batch_iter_next(&it, &rec) == 1) {
        if (rec.pg != pg || rec.epoch != n->epoch) rc = MRD_EINVAL;
        quorum_rec qr = {.lsn = rec.lsn,
                         .prev_lsn = rec.prev_lsn,
                         .vol_prev_lsn = rec.vol_prev_lsn,
                         .epoch = rec.epoch,
                         .pg = rec.pg,
                         .is_cpl = (rec.flags & WIRE_REC_CPL) != 0};
        sc_event ev = {.kind = SC_EV_RECORD, .rec = &qr};
        n->current = &rec;
        if (rc == 0) rc = seg_chain_step(c, &ev, sink);
    }
    if (rc == 0) {
        sc_event ev = {.kind = SC_EV_SYNCED, .seq = n->persist_seq};
        rc = seg_chain_step(c, &ev, sink);
    }
    wire_frame_reader_close(&fr);
    return rc;
}

static uint64_t header_u64(h2_req *req, const char *name)
{
    const char *v = h2_req_header(req, name);
    return v ? strtoull(v, NULL, 10) : 0;
}

static void on_append(fk_node *n, h2_req *req)
{
    n->appends++;
    if (n->append_status != 0) { /* faults_left 0: for ever */
        int status = n->append_status;
        if (n->append_faults_left > 0 && --n->append_faults_left == 0) n->append_status = 0;
        reply_error(n, req, status, n->append_code);
        return;
    }
    if (n->garbage_ack) {
        reply(n, req, 200, "garbage", 7, NULL);
        return;
    }
    uint64_t epoch = header_u64(req, "meridian-epoch");
    uint32_t pg = (uint32_t)header_u64(req, "meridian-pg");
    if (epoch < n->epoch) return reply_error(n, req, 409, "stale_epoch");
    if (epoch > n->epoch) return reply_error(n, req, 409, "fence_required");
    size_t len;
    const uint8_t *body = h2_req_body(req, &len);
    if (append_records(n, pg, body, len) != 0) return reply_error(n, req, 400, "bad_request");
    wire_ack ack = {.epoch = n->epoch,
                    .pg = pg,
                    .scl = seg_chain_scl(chain(n, pg)),
                    .lsn_durable = pg_highest(n, pg)};
    if (ack.lsn_durable < ack.scl) ack.lsn_durable = ack.scl;
    mrd_buf out;
    mrd_buf_init(&out);
    wire_ack_encode(&ack, &out, NULL);
    reply(n, req, 200, out.data, out.len, NULL);
    mrd_buf_free(&out);
}

static void on_fence(fk_node *n, h2_req *req)
{
    n->fences++;
    uint64_t epoch = header_u64(req, "meridian-epoch");
    uint64_t trunc = header_u64(req, "meridian-truncate-lsn");
    if (epoch < n->epoch) return reply_error(n, req, 409, "stale_epoch");
    n->epoch = epoch;
    for (uint32_t pg = 0; pg < FK_PGS_MAX; pg++) {
        sc_event ev = {.kind = SC_EV_FENCE, .fence = {.epoch = epoch, .truncate_lsn = trunc}};
        seg_chain_step(chain(n, pg), &ev, (quorum_sink){0});
    }
    uint32_t kept = 0; /* what the fence voids goes */
    for (uint32_t i = 0; i < n->n_recs; i++) {
        if (n->recs[i].epoch < epoch && n->recs[i].lsn > trunc)
            mrd_buf_free(&n->recs[i].enc);
        else
            n->recs[kept++] = n->recs[i];
    }
    n->n_recs = kept;
    reply(n, req, 200, NULL, 0, NULL);
}

static void on_report(fk_node *n, h2_req *req, uint32_t pg, uint64_t floor)
{
    quorum_report r = {.pg = pg};
    quorum_hdr *hdrs = calloc(n->n_recs + 1, sizeof(*hdrs));
    if (pg < FK_PGS_MAX) /* beyond: a PG this node never saw answers with zeros */
        seg_chain_report(chain(n, pg), floor, &r, hdrs, n->n_recs + 1);
    mrd_buf body;
    mrd_buf_init(&body);
    for (uint32_t i = 0; i < r.n_hdrs; i += WIRE_BATCH_RECORDS_MAX) {
        size_t at;
        wire_frame_begin(&body, &at);
        wire_batch_builder b;
        wire_batch_begin(&b, &body, WIRE_BATCH_LOG);
        for (uint32_t k = i; k < r.n_hdrs && k < i + WIRE_BATCH_RECORDS_MAX; k++) {
            wire_record rec;
            memset(&rec, 0, sizeof(rec));
            rec.lsn = hdrs[k].lsn;
            rec.epoch = hdrs[k].epoch;
            rec.pg = pg;
            rec.prev_lsn = hdrs[k].prev_lsn;
            rec.vol_prev_lsn = hdrs[k].vol_prev_lsn;
            rec.flags = hdrs[k].is_cpl ? WIRE_REC_CPL : 0;
            wire_batch_add(&b, &rec, NULL);
        }
        wire_batch_finish(&b, NULL);
        wire_frame_end(&body, at, NULL);
    }
    char v[5][24];
    snprintf(v[0], 24, "%" PRIu64, n->epoch);
    snprintf(v[1], 24, "%" PRIu64, r.scl);
    snprintf(v[2], 24, "%" PRIu64, r.highest);
    snprintf(v[3], 24, "%" PRIu64, r.floor_head);
    snprintf(v[4], 24, "%" PRIu64, r.floor_cpl);
    h2_header h[] = {{"meridian-epoch", v[0]},
                     {"meridian-scl", v[1]},
                     {"meridian-highest", v[2]},
                     {"meridian-floor-head", v[3]},
                     {"meridian-floor-cpl", v[4]}};
    h2_req_respond(req, 200, h, MRD_ARRAY_LEN(h), body.data, body.len);
    mrd_buf_free(&body);
    free(hdrs);
}

static int cmp_rec(const void *a, const void *b)
{
    const fk_rec *x = *(fk_rec *const *)a, *y = *(fk_rec *const *)b;
    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

static void on_page(fk_node *n, h2_req *req, uint64_t page, uint64_t lsn, uint64_t need)
{
    n->reads++;
    uint32_t pg = (uint32_t)(page / n->f->pages_per_pg);
    if (n->reads_incomplete || pg >= FK_PGS_MAX || seg_chain_scl(chain(n, pg)) < need)
        return reply_error(n, req, 409, "incomplete");
    fk_rec **mine = calloc(n->n_recs + 1, sizeof(*mine));
    uint32_t k = 0;
    for (uint32_t i = 0; i < n->n_recs; i++)
        if (n->recs[i].page == page && n->recs[i].lsn <= lsn) mine[k++] = &n->recs[i];
    qsort(mine, k, sizeof(*mine), cmp_rec);
    uint8_t *data = calloc(1, n->f->page_size);
    char last[24] = "0";
    for (uint32_t i = 0; i < k; i++) {
        wire_record rec;
        wire_record_decode(mine[i]->enc.data, mine[i]->enc.len, &rec, NULL);
        wire_record_apply(data, n->f->page_size, &rec, NULL);
        snprintf(last, sizeof(last), "%" PRIu64, rec.lsn);
    }
    reply(n, req, 200, data, n->f->page_size, last);
    free(data);
    free(mine);
}

static void on_request(h2_req *req, void *ud)
{
    fk_node *n = ud;
    const char *method = h2_req_method(req), *path = h2_req_path(req);
    unsigned long long a = 0, b = 0, c = 0;
    unsigned pg = 0;
    if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/append") == 0) return on_append(n, req);
    if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/fence") == 0) return on_fence(n, req);
    if (sscanf(path, "/v1/report?pg=%u&floor=%llu", &pg, &a) == 2)
        return on_report(n, req, pg, (uint64_t)a);
    if (sscanf(path, "/v1/page?page=%llu&lsn=%llu&need=%llu", &a, &b, &c) == 3)
        return on_page(n, req, a, b, c);
    reply_error(n, req, 404, "not_found");
}

static void on_close(h2_req *req, uint32_t error_code, void *ud) {}

static const h2_server_cbs fk_cbs = {.on_request = on_request, .on_close = on_close};

int fk_node_start(fk_node *n)
{
    h2_server_config cfg = {.host = "127.0.0.1", .port = n->port};
    mrd_msg msg;
    int rc = h2_server_start(n->f->loop, &cfg, &fk_cbs, n, &n->srv, &msg);
    if (rc != 0) return rc;
    n->port = h2_server_port(n->srv);
    return 0;
}

void fk_node_stop(fk_node *n)
{
    if (n->srv != NULL) h2_server_close(n->srv, NULL, NULL);
    n->srv = NULL;
}

int fk_start(fk *f, uv_loop_t *loop)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->page_size = 4096;
    f->pages_per_pg = FK_PG_BYTES / f->page_size;
    char yaml[4096];
    int len = snprintf(yaml, sizeof(yaml),
                       "name: fake\nprimary: r1\nsettings:\n  tls: false\n  pg_size: %u\n"
                       "regions:\n  - name: r1\n    azs: [a, b, c]\n    storage:\n",
                       FK_PG_BYTES);
    for (int s = 0; s < FK_NODES; s++) {
        f->nodes[s].f = f;
        f->nodes[s].seg = s;
        int rc = fk_node_start(&f->nodes[s]);
        if (rc != 0) return rc;
        len += snprintf(yaml + len, sizeof(yaml) - (size_t)len,
                        "      - {id: s%d, az: %c, address: 127.0.0.1:%u}\n", s + 1, "aabbcc"[s],
                        f -> nodes[s].port);
    }
    uint16_t spare = (uint16_t)(f->nodes[0].port + 1000); /* never connected to in these tests */
    len += snprintf(yaml + len, sizeof(yaml) - (size_t)len,
                    "    instances:\n      - {id: w1, role: writer, az: a, address: 127.0.0.1:%u}\n"
                    "    agent: {id: ag, az: a, address: 127.0.0.1:%u}\n"
                    "    routers:\n      - {id: rt, az: a, address: 127.0.0.1:%u, "
                    "cluster: 127.0.0.1:%u, reader: 127.0.0.1:%u}\n",
                    spare, spare + 1, spare + 2, spare + 3, spare + 4);
    mrd_msg msg;
    return topo_parse("fake.yaml", yaml, (size_t)len, &f->topo, &msg);
}

void fk_stop(fk *f)
{
    for (int s = 0; s < FK_NODES; s++) {
        fk_node *n = &f->nodes[s];
        fk_node_stop(n);
        for (uint32_t pg = 0; pg < FK_PGS_MAX; pg++)
            if (n->chain_live[pg]) seg_chain_close(&n->chains[pg]);
        for (uint32_t i = 0; i < n->n_recs; i++)
            mrd_buf_free(&n->recs[i].enc);
        free(n->recs);
    }
}
