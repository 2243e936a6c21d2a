/*
 * The reader's page store: a page held in rd_core is served from memory; a
 * miss is read from one storage node at the transaction's read point,
 * provided its segment is complete up to the head of the page's PG at that
 * point. The head comes from the log stream once known; before, from a read
 * quorum: the highest record at or below the read point that any of three
 * nodes holds (a record durable at four of six is on one of any three).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"
#include "reader_int.h"

struct rd_read {
    sqlx_call call;
    reader *r;
    bool background;  /* learning a PG's head ahead of need: no SQL thread waits */
    uint64_t reset;   /* the stream's starting point heads are asked at */
    uint64_t page, rp, need;
    uint32_t pg;
    uint8_t *out;
    mrd_msg *msg;
    bool have_need;
    uint32_t answers, inflight; /* head: reports answered / in flight */
    uint32_t tried;             /* page: nodes tried this round (bits) */
    uint32_t gone;              /* page: nodes that answered 410 this round (bits) */
    uint64_t retry_at_ms, deadline_ms;
    int last_status;     /* the last answer a node gave (0: none, or no connection) */
    bool waiting; /* nothing in flight: retry_at_ms says when to go on */
    rd_read *next;
};

typedef struct {
    rd_read *rd;
    rd_node *n;
    int status;
    bool head; /* a report, else a page read */
    bool forgotten; /* 409 floor_forgotten: the node forgot past our floor */
    uint64_t floor_head;
    mrd_buf body;
} rd_call;

static void read_step(rd_read *rd);

static void read_finish(rd_read *rd, int status)
{
    reader *r = rd->r;
    for (rd_read **p = &r->reads; *p != NULL; p = &(*p)->next)
        if (*p == rd) {
            *p = rd->next;
            r->n_reads--;
            break;
        }
    if (rd->background) {
        r->heads_busy = false;
        free(rd);
        return;
    }
    sqlx_call_done(&rd->call, status);
}

/* ---- storage connections ---------------------------------------------------------------- */

static void n_connect(h2_client *c, int status, void *ud)
{
    rd_node *n = ud;
    if (status != 0) n->closing = true;
}

static void n_disconnect(h2_client *c, int error, void *ud)
{
    ((rd_node *)ud)->closing = true;
}

static const h2_client_cbs node_cbs = {.on_connect = n_connect, .on_disconnect = n_disconnect};

void rd_nodes_tick(reader *r, uint64_t now)
{
    for (int s = 0; s < QUORUM_SEGMENTS; s++) {
        rd_node *n = &r->nodes[s];
        if (n->closing && n->client != NULL) {
            h2_client_close(n->client);
            n->client = NULL;
            n->reconnect_at_ms = now + RD_RECONNECT_MS;
        }
        n->closing = false;
        if (n->client == NULL && now >= n->reconnect_at_ms) {
            h2_client_config cc = {.host = n->tn->addr.host, .port = n->tn->addr.port,
                                   .tls = r->client_tls};
            if (h2_client_connect(r->node->loop, &cc, &node_cbs, n, &n->client, NULL) != 0) {
                n->client = NULL;
                n->reconnect_at_ms = now + RD_RECONNECT_MS;
            }
        }
    }
}

static bool usable(const rd_node *n)
{
    return n->client != NULL && !n->closing && h2_client_connected(n->client);
}

void rd_nodes_stop(reader *r)
{
    for (int s = 0; s < QUORUM_SEGMENTS; s++)
        if (r->nodes[s].client != NULL) {
            h2_client_close(r->nodes[s].client);
            r->nodes[s].client = NULL;
        }
}

/* ---- calls ------------------------------------------------------------------------------ */

static const char *hdr_of(void *ctx, const char *name)
{
    return h2_call_header(ctx, name);
}

static void c_response(h2_call *call, int status, void *ud)
{
    rd_call *c = ud;
    c->status = status;
    c->forgotten = false;
    if (c->head && status == 200) {
        const char *v = hdr_of(call, "meridian-floor-head");
        if (v == NULL || vol_parse_u64(v, &c->floor_head) != 0) c->status = 502;
    }
}

static void c_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    rd_call *c = ud;
    if (c->head && c->status == 409 && memmem(data, len, "floor_forgotten", 15) != NULL)
        c->forgotten = true;
    if (!c->head && c->body.len + len <= WIRE_PAGE_SIZE_MAX) mrd_buf_append(&c->body, data, len);
}

static void c_close(h2_call *call, int error, void *ud)
{
    rd_call *c = ud;
    rd_read *rd = c->rd;
    reader *r = rd->r;
    rd->inflight--;
    if (error != 0) c->status = 0;
    rd->last_status = c->status;
    if (c->head) {
        if (c->status == 200) {
            rd->answers++;
            if (c->floor_head > rd->need) rd->need = c->floor_head;
        }
        /* storage moved past the running stream's starting point: start it over; a read
         * asked at an older start (the stream restarted meanwhile) only asks again */
        if (c->forgotten && rd_core_started_at(r->core, rd->reset))
            rd_stream_restart(r, "storage nodes forgot records below where the stream started");
        if (rd->answers >= QUORUM_READ && !rd->have_need) {
            rd_core_set_head(r->core, rd->pg, rd->reset, rd->need);
            /* the head now: the head at the reset plus what the stream applied since */
            rd->have_need = rd_core_need(r->core, rd->pg, &rd->need);
            if (!rd->have_need) rd->answers = 0; /* the stream restarted meanwhile: again */
            if (rd->background && rd->have_need) rd->need = UINT64_MAX; /* done */
        }
    } else if (c->status == 410) {
        rd->gone |= 1u << (uint32_t)(c->n - r->nodes);
    } else if (c->status == 200 && c->body.len == r->ps.page_size) {
        memcpy(rd->out, c->body.data, c->body.len);
        rd_core_page_put(r->core, rd->page, rd->rp, rd->out);
        mrd_metric_inc(r->m_storage_reads, 1);
        mrd_buf_free(&c->body);
        free(c);
        if (rd->inflight == 0) read_finish(rd, 0);
        else rd->need = UINT64_MAX; /* done: let the other answers drain */
        return;
    }
    mrd_buf_free(&c->body);
    free(c);
    if (rd->inflight == 0) read_step(rd);
}

static const h2_call_cbs call_cbs = {.on_response = c_response, .on_data = c_data, .on_close = c_close};

static bool send_call(rd_read *rd, rd_node *n, bool head)
{
    char path[128];
    if (head)
        snprintf(path, sizeof(path), "/v1/report?pg=%u&floor=%" PRIu64, rd->pg, rd->reset);
    else
        snprintf(path, sizeof(path), "/v1/page?page=%" PRIu64 "&lsn=%" PRIu64 "&need=%" PRIu64,
                 rd->page, rd->rp, rd->need);
    rd_call *c = calloc(1, sizeof(*c));
    if (c == NULL) return false;
    *c = (rd_call){.rd = rd, .n = n, .head = head};
    mrd_buf_init(&c->body);
    if (h2_client_request(n->client, "GET", path, NULL, 0, NULL, 0, true, &call_cbs, c, NULL) != 0) {
        free(c);
        n->closing = true;
        return false;
    }
    rd->inflight++;
    return true;
}

/* ---- one read --------------------------------------------------------------------------- */

/* The next thing to do for a read with nothing in flight. */
static void read_step(rd_read *rd)
{
    reader *r = rd->r;
    uint64_t now = mrd_now_ms();
    rd->waiting = false;
    if (rd->need == UINT64_MAX) return read_finish(rd, 0); /* answered while others drained */
    if (r->stopping)
        return read_finish(rd, mrd_fail(rd->msg, MRD_ECLOSED, "the reader is stopping"));
    if (now >= rd->deadline_ms)
        return read_finish(rd, mrd_fail(rd->msg, MRD_ETIMEDOUT,
                                        "page %" PRIu64 " at lsn %" PRIu64 ": no storage node "
                                        "could serve it within %u ms",
                                        rd->page, rd->rp, RD_READ_TIMEOUT_MS));
    /* the stream started over after this transaction took its read point: heads known now
     * are the new start's, past the read point, and storage materializes past it while
     * the pin holds the log back; the transaction is run again instead */
    uint64_t start = rd_core_reset_vdl(r->core);
    if (!rd->background && rd->rp < start)
        return read_finish(rd, mrd_fail(rd->msg, MRD_ESTALE,
                                        "page %" PRIu64 " at lsn %" PRIu64
                                        ": the log stream started over at lsn %" PRIu64
                                        " after this transaction began; send it again",
                                        rd->page, rd->rp, start));
    if (!rd->have_need) {
        rd->answers = 0;
        rd->need = 0;
        rd->reset = start;
        for (int s = 0; s < QUORUM_SEGMENTS; s++)
            if (usable(&r->nodes[s])) send_call(rd, &r->nodes[s], true);
    } else {
        for (int k = 0; k < QUORUM_SEGMENTS && rd->inflight == 0; k++) {
            int s = (int)((r->rr + (uint32_t)k) % QUORUM_SEGMENTS);
            if ((rd->tried >> s) & 1 || !usable(&r->nodes[s])) continue;
            rd->tried |= 1u << s;
            send_call(rd, &r->nodes[s], false);
        }
        r->rr++;
        /* the round is over: every node that answered has materialized the page past the
         * read point (410): none will have it again */
        if (rd->inflight == 0 && rd->tried != 0 && rd->gone == rd->tried)
            return read_finish(rd, mrd_fail(rd->msg, MRD_ESTALE,
                                            "page %" PRIu64 " at lsn %" PRIu64
                                            ": every storage node holds it only as of a later "
                                            "LSN; send it again",
                                            rd->page, rd->rp));
        if (rd->inflight == 0) rd->tried = rd->gone = 0; /* a new round */
    }
    if (rd->inflight == 0) {
        rd->waiting = true;
        rd->retry_at_ms = now + RD_READ_RETRY_MS;
    }
}

/* Learns, one PG at a time, the heads a later read would otherwise wait for. */
static void heads_tick(reader *r, uint64_t now)
{
    uint32_t pg;
    if (r->heads_busy || r->stopping || !r->stream_started ||
        !rd_core_heads_missing(r->core, QUORUM_PGS_MAX, &pg))
        return;
    rd_read *rd = calloc(1, sizeof(*rd));
    if (rd == NULL) return;
    *rd = (rd_read){.r = r, .background = true, .pg = pg, .msg = NULL};
    rd->next = r->reads;
    r->reads = rd;
    r->n_reads++;
    r->heads_busy = true;
    rd->deadline_ms = now + RD_READ_TIMEOUT_MS;
    read_step(rd);
}

void rd_reads_tick(reader *r, uint64_t now)
{
    heads_tick(r, now);
    for (rd_read *rd = r->reads, *next; rd != NULL; rd = next) {
        next = rd->next;
        if (rd->waiting && now >= rd->retry_at_ms) read_step(rd);
    }
}

void rd_reads_status(reader *r, uint64_t now, mrd_buf *out)
{
    const rd_read *o = NULL;
    for (const rd_read *rd = r->reads; rd != NULL; rd = rd->next)
        if (!rd->background && (o == NULL || rd->deadline_ms < o->deadline_ms)) o = rd;
    if (o == NULL) return;
    uint64_t started = o->deadline_ms - RD_READ_TIMEOUT_MS;
    mrd_buf_printf(out,
                   ",\"oldest_page_read\":{\"page\":%" PRIu64 ",\"read_point\":%" PRIu64
                   ",\"need\":%" PRIu64 ",\"stream_start\":%" PRIu64
                   ",\"head_known\":%s,\"last_status\":%d,\"age_ms\":%" PRIu64 "}",
                   o->page, o->rp, o->have_need ? o->need : 0, o->reset,
                   o->have_need ? "true" : "false", o->last_status,
                   now > started ? now - started : 0);
}

void rd_reads_stop(reader *r)
{
    for (rd_read *rd = r->reads, *next; rd != NULL; rd = next) {
        next = rd->next;
        if (rd->inflight == 0) read_step(rd);
    }
}

static void read_on_loop(sqlx_call *call)
{
    rd_read *rd = call->ud;
    reader *r = rd->r;
    if (r->stopping || r->n_reads >= RD_READS_MAX) {
        sqlx_call_done(call, mrd_fail(rd->msg, MRD_EBUSY, "the reader is %s",
                                      r->stopping ? "stopping" : "reading too many pages"));
        return;
    }
    rd->next = r->reads;
    r->reads = rd;
    r->n_reads++;
    rd->deadline_ms = mrd_now_ms() + RD_READ_TIMEOUT_MS;
    rd->have_need = rd_core_need(r->core, rd->pg, &rd->need);
    read_step(rd);
}

/* ---- the page store --------------------------------------------------------------------- */

static int ps_pin(mrd_pagestore *ps, uint64_t *read_point, mrd_msg *msg)
{
    reader *r = ps->ud;
    *read_point = rd_core_pin(r->core);
    return 0;
}

static void ps_unpin(mrd_pagestore *ps, uint64_t read_point)
{
    reader *r = ps->ud;
    rd_core_unpin(r->core);
}

static int ps_read(mrd_pagestore *ps, uint64_t page, uint64_t read_point, uint8_t *out,
                   mrd_msg *msg)
{
    reader *r = ps->ud;
    if (rd_core_page(r->core, page, out)) return 0;
    uint64_t pg = page / r->pages_per_pg;
    if (pg >= QUORUM_PGS_MAX || read_point == 0) { /* beyond the volume, or nothing written yet */
        memset(out, 0, ps->page_size);
        return 0;
    }
    rd_read rd = {.call = {.fn = read_on_loop}, .r = r, .page = page, .rp = read_point,
                  .pg = (uint32_t)pg, .out = out, .msg = msg};
    rd.call.ud = &rd;
    return sqlx_call_loop(r->sqlx, &rd.call);
}

void rd_pages_init(reader *r)
{
    r->ps = (mrd_pagestore){.ud = r,
                            .page_size = r->node->topo.page_size,
                            .writable = false,
                            .pin = ps_pin,
                            .unpin = ps_unpin,
                            .read = ps_read};
    for (int s = 0; s < QUORUM_SEGMENTS; s++)
        r->nodes[s] = (rd_node){.r = r, .tn = topo_segment_node(r->region, s)};
}
