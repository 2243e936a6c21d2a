/* The seeded quorum simulator (see sim.h). Time moves in steps of one millisecond. */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/quorum.h"

#define SIM_NODES QUORUM_SEGMENTS
#define SIM_PGS_MAX 3
#define SIM_LSN_MAX 600       /* records one run creates, at most */
#define SIM_MSGS_MAX 200000   /* messages in flight; beyond, the network drops */
#define SIM_TRACE_MAX 200     /* events printed on failure */
#define SIM_HEAL_MS_MAX 20000 /* time the healed volume gets to converge */
#define SIM_TICK_MS 5
#define SIM_WRITER 255
#define SIM_FENCES_MAX QUORUM_FENCES_MAX

/* ---- PRNG: splitmix64 seeding xoshiro256** --------------------------------------------- */

typedef struct {
    uint64_t s[4];
} prng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t prng_next(prng *p)
{
    uint64_t *s = p->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static uint32_t rnd(prng *p, uint32_t n) /* uniform in [0, n) */
{
    return (uint32_t)((prng_next(p) >> 11) % n);
}

static bool chance(prng *p, uint32_t per_million)
{
    return rnd(p, 1000000) < per_million;
}

/* ---- the world -------------------------------------------------------------------------- */

typedef enum { M_REC, M_ACK, M_GAP } msg_kind;

typedef struct {
    uint64_t at, order;
    msg_kind kind;
    uint8_t from, to; /* node indexes, or SIM_WRITER */
    uint32_t pg;
    quorum_rec rec;      /* M_REC */
    uint64_t vdl;        /* M_REC: the VDL its sender knew (a writer's, or a peer's) */
    uint64_t scl, epoch; /* M_ACK */
    uint64_t *lsns;      /* M_ACK, malloc'd */
    uint32_t n_lsns;
    uint64_t after, upto; /* M_GAP */
} msg;

typedef struct {
    uint8_t st[SIM_LSN_MAX + 1]; /* 0 absent, 1 appended, 2 durable */
    uint16_t unsynced[SIM_LSN_MAX + 1];
    uint32_t n_unsynced;
    uint64_t seq_appended;
    bool syncing;
    uint64_t sync_at, sync_seq;
    uint32_t sync_count; /* unsynced[0..sync_count) are in the running fdatasync */
    quorum_fence fences[SIM_FENCES_MAX];
    uint32_t n_fences;
} disk;

typedef struct {
    quorum_rec r;
    bool exists, discarded;
} master_rec;

typedef struct {
    uint64_t t;
    char text[96];
} trace_line;

typedef struct {
    uint32_t pgs, drop_ppm, dup_ppm, delay_max, txn_ppm, crash_ppm, restart_ppm, wrestart_ppm;
    uint32_t inflight_max, retain_max, resend_ms, gap_retry_ms, load_ms;
    uint32_t forget_ppm; /* per tick and segment: forget up to a random point <= its VDL */
} sim_params;

typedef struct sim sim;

typedef struct {
    sim *s;
    uint8_t node;
    uint32_t pg;
} chain_ctx;

struct sim {
    sim_options opt;
    sim_result *res;
    prng rng;
    sim_params p;
    uint64_t now;
    bool healed, failed;
    /* network */
    msg *heap;
    uint32_t n_msgs, cap_msgs;
    uint64_t msg_order;
    /* storage */
    bool up[SIM_NODES];
    seg_chain chains[SIM_NODES][SIM_PGS_MAX];
    chain_ctx cctx[SIM_NODES][SIM_PGS_MAX];
    disk disks[SIM_NODES][SIM_PGS_MAX];
    uint64_t scl_verified[SIM_NODES][SIM_PGS_MAX];
    uint64_t node_vdl[SIM_NODES]; /* the highest VDL the node heard (kept across a crash) */
    quorum_fence restart_base[SIM_NODES][SIM_PGS_MAX]; /* forget point (epoch: its CPL) the
                                                          node recorded before a crash */
    /* writer */
    qw w;
    uint64_t epoch;
    quorum_fence fences[SIM_FENCES_MAX]; /* every fence the writers ever set */
    uint32_t n_fences;
    uint64_t vdl_promised; /* the highest VDL any writer ever exposed */
    uint64_t checked4;     /* records up to here were checked at a write quorum */
    master_rec recs[SIM_LSN_MAX + 1];
    uint64_t next_lsn;
    quorum_hdr hdrs[QUORUM_READ * SIM_PGS_MAX][SIM_LSN_MAX]; /* recovery reads */
    /* trace */
    trace_line trace[SIM_TRACE_MAX];
    uint64_t n_trace;
};

static void tr(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr(sim *s, const char *fmt, ...)
{
    trace_line *l = &s->trace[s->n_trace++ % SIM_TRACE_MAX];
    l->t = s->now;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->text, sizeof(l->text), fmt, ap);
    va_end(ap);
    if (s->opt.verbose) printf("  t=%-6llu %s\n", (unsigned long long)l->t, l->text);
}

static void fail(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(sim *s, const char *fmt, ...)
{
    if (s->failed) return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->failure, sizeof(s->res->failure), fmt, ap);
    va_end(ap);
    if (s->opt.quiet) return;
    printf("quorum sim: seed %llu FAILED at t=%llu: %s\n", (unsigned long long)s->opt.seed,
           (unsigned long long)s->now, s->res->failure);
    printf("  replay: MRD_SIM_SEED=%llu (MRD_SIM_VERBOSE=1 for the whole trace)\n",
           (unsigned long long)s->opt.seed);
    printf("  params: pgs=%u drop=%uppm dup=%uppm delay<=%ums inflight_max=%u retain_max=%u\n",
           s->p.pgs, s->p.drop_ppm, s->p.dup_ppm, s->p.delay_max, s->p.inflight_max,
           s->p.retain_max);
    uint64_t first = s->n_trace > SIM_TRACE_MAX ? s->n_trace - SIM_TRACE_MAX : 0;
    printf("  last %llu events:\n", (unsigned long long)(s->n_trace - first));
    for (uint64_t i = first; i < s->n_trace; i++) {
        const trace_line *l = &s->trace[i % SIM_TRACE_MAX];
        printf("  t=%-6llu %s\n", (unsigned long long)l->t, l->text);
    }
}

/* ---- the network: a heap of messages ordered by delivery time ---------------------------- */

static bool msg_before(const msg *a, const msg *b)
{
    return a->at != b->at ? a->at < b->at : a->order < b->order;
}

static void heap_push(sim *s, const msg *m)
{
    if (s->n_msgs == SIM_MSGS_MAX) {
        free(m->lsns);
        return;
    }
    if (s->n_msgs == s->cap_msgs) {
        s->cap_msgs = s->cap_msgs ? s->cap_msgs * 2 : 1024;
        s->heap = realloc(s->heap, s->cap_msgs * sizeof(*s->heap));
        if (!s->heap) abort();
    }
    uint32_t i = s->n_msgs++;
    s->heap[i] = *m;
    while (i > 0 && msg_before(&s->heap[i], &s->heap[(i - 1) / 2])) {
        msg t = s->heap[i];
        s->heap[i] = s->heap[(i - 1) / 2];
        s->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static msg heap_pop(sim *s)
{
    msg top = s->heap[0];
    s->heap[0] = s->heap[--s->n_msgs];
    for (uint32_t i = 0;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->n_msgs && msg_before(&s->heap[l], &s->heap[m])) m = l;
        if (r < s->n_msgs && msg_before(&s->heap[r], &s->heap[m])) m = r;
        if (m == i) break;
        msg t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
    return top;
}

/* Sends with a random delay; may drop it or deliver it twice unless healed. */
static void net_send(sim *s, msg m)
{
    s->res->msgs++;
    if (!s->healed && chance(&s->rng, s->p.drop_ppm)) {
        free(m.lsns);
        return;
    }
    int copies = !s->healed && chance(&s->rng, s->p.dup_ppm) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        msg one = m;
        if (c == 1 && m.lsns) {
            one.lsns = malloc(m.n_lsns * sizeof(uint64_t));
            if (!one.lsns) abort();
            memcpy(one.lsns, m.lsns, m.n_lsns * sizeof(uint64_t));
        }
        one.at = s->now + 1 + rnd(&s->rng, s->p.delay_max);
        one.order = s->msg_order++;
        heap_push(s, &one);
    }
}

/* ---- checks ------------------------------------------------------------------------------ */

static uint32_t durable_copies(sim *s, uint64_t lsn, bool live_only)
{
    uint32_t pg = s->recs[lsn].r.pg, n = 0;
    for (uint8_t i = 0; i < SIM_NODES; i++)
        if ((!live_only || s->up[i]) && s->disks[i][pg].st[lsn] == 2) n++;
    return n;
}

/* Every record at or below VCL must be durable on a write quorum of its PG. */
static void check_vcl(sim *s, uint64_t vcl)
{
    for (; s->checked4 < vcl && s->checked4 < SIM_LSN_MAX; s->checked4++) {
        uint64_t lsn = s->checked4 + 1;
        if (!s->recs[lsn].exists || s->recs[lsn].discarded) continue;
        uint32_t n = durable_copies(s, lsn, false);
        if (n < QUORUM_WRITE)
            return fail(s, "VCL %llu passed lsn %llu (pg %u), durable on only %u segments",
                        (unsigned long long)vcl, (unsigned long long)lsn, s->recs[lsn].r.pg, n);
    }
}

/* SCL must be proven by the durable back-link chain on that node's disk. */
static void check_scl(sim *s, uint8_t node, uint32_t pg, uint64_t scl)
{
    uint64_t stop = scl >= s->scl_verified[node][pg] ? s->scl_verified[node][pg] : 0;
    uint64_t lsn = scl;
    while (lsn > stop) {
        const master_rec *m = &s->recs[lsn <= SIM_LSN_MAX ? lsn : 0];
        if (lsn > SIM_LSN_MAX || !m->exists || m->r.pg != pg || s->disks[node][pg].st[lsn] != 2)
            return fail(s, "s%u pg %u SCL %llu: lsn %llu on its chain is not durable there", node,
                        pg, (unsigned long long)scl, (unsigned long long)lsn);
        lsn = m->r.prev_lsn;
    }
    if (lsn != stop)
        return fail(s, "s%u pg %u SCL %llu: chain skips over %llu", node, pg,
                    (unsigned long long)scl, (unsigned long long)stop);
    s->scl_verified[node][pg] = scl;
}

/* ---- sinks: what the cores ask for -------------------------------------------------------- */

static void writer_action(void *ctx, const quorum_action *a)
{
    sim *s = ctx;
    switch (a->kind) {
    case QUORUM_ACT_SEND: {
        msg m = {.kind = M_REC,
                 .from = SIM_WRITER,
                 .to = a->seg,
                 .pg = a->pg,
                 .rec = *a->rec,
                 .vdl = qw_vdl(&s->w)};
        if (s->up[a->seg]) net_send(s, m);
        break;
    }
    case QUORUM_ACT_VCL:
        tr(s, "writer VCL %llu", (unsigned long long)a->lsn);
        check_vcl(s, a->lsn);
        break;
    case QUORUM_ACT_VDL:
        tr(s, "writer VDL %llu", (unsigned long long)a->lsn);
        if (a->lsn > s->vdl_promised) s->vdl_promised = a->lsn;
        break;
    case QUORUM_ACT_WAITER:
        if (a->lsn > qw_vdl(&s->w)) fail(s, "waiter %llu fired early", (unsigned long long)a->id);
        break;
    default:
        fail(s, "writer emitted %s", quorum_act_name(a->kind));
    }
}

static void disk_persist(disk *d, const quorum_rec *r, uint64_t seq)
{
    d->st[r->lsn] = 1;
    d->unsynced[d->n_unsynced++] = (uint16_t)r->lsn;
    d->seq_appended = seq;
}

/* A fence voids records of older epochs above its truncation point. */
static void disk_fence(sim *s, disk *d, quorum_fence f)
{
    bool known = false;
    for (uint32_t i = 0; i < d->n_fences; i++) {
        if (d->fences[i].epoch != f.epoch) continue;
        known = true;
        if (f.truncate_lsn < d->fences[i].truncate_lsn) d->fences[i].truncate_lsn = f.truncate_lsn;
    }
    if (!known && d->n_fences < SIM_FENCES_MAX) d->fences[d->n_fences++] = f;
    for (uint64_t lsn = f.truncate_lsn + 1; lsn <= SIM_LSN_MAX && f.truncate_lsn < SIM_LSN_MAX;
         lsn++)
        if (d->st[lsn] && s->recs[lsn].r.epoch < f.epoch) d->st[lsn] = 0;
    uint32_t kept = 0, kept_sync = 0;
    for (uint32_t i = 0; i < d->n_unsynced; i++) {
        if (d->st[d->unsynced[i]] != 1) continue;
        if (i < d->sync_count) kept_sync++;
        d->unsynced[kept++] = d->unsynced[i];
    }
    d->n_unsynced = kept;
    d->sync_count = kept_sync;
}

/* The durable records of (after, lsn] from the node's disk, at most QUORUM_SERVE_MAX. */
static void serve_old(sim *s, uint8_t node, uint32_t pg, const quorum_action *a)
{
    const disk *d = &s->disks[node][pg];
    uint32_t served = 0;
    tr(s, "s%u pg %u serves s%u (%llu,%llu] from its log", node, pg, a->seg,
       (unsigned long long)a->after, (unsigned long long)a->lsn);
    for (uint64_t lsn = a->after + 1; lsn <= a->lsn && lsn <= SIM_LSN_MAX; lsn++) {
        if (d->st[lsn] != 2 || s->recs[lsn].r.pg != pg) continue;
        if (served++ == QUORUM_SERVE_MAX) break;
        msg m = {.kind = M_REC,
                 .from = node,
                 .to = a->seg,
                 .pg = pg,
                 .rec = s->recs[lsn].r,
                 .vdl = s->node_vdl[node]};
        s->res->served++;
        net_send(s, m);
    }
}

static void chain_action(void *ctx, const quorum_action *a)
{
    chain_ctx *c = ctx;
    sim *s = c->s;
    disk *d = &s->disks[c->node][c->pg];
    switch (a->kind) {
    case QUORUM_ACT_PERSIST:
        disk_persist(d, a->rec, a->id);
        break;
    case QUORUM_ACT_SCL:
        tr(s, "s%u pg %u SCL %llu", c->node, c->pg, (unsigned long long)a->lsn);
        check_scl(s, c->node, c->pg, a->lsn);
        break;
    case QUORUM_ACT_ACK: {
        msg m = {.kind = M_ACK,
                 .from = c->node,
                 .to = SIM_WRITER,
                 .pg = c->pg,
                 .scl = a->lsn,
                 .epoch = a->epoch,
                 .n_lsns = a->n_lsns};
        if (a->n_lsns) {
            m.lsns = malloc(a->n_lsns * sizeof(uint64_t));
            if (!m.lsns) abort();
            memcpy(m.lsns, a->lsns, a->n_lsns * sizeof(uint64_t));
        }
        net_send(s, m);
        break;
    }
    case QUORUM_ACT_GAP: {
        uint8_t peer = (uint8_t)((c->node + 1 + rnd(&s->rng, SIM_NODES - 1)) % SIM_NODES);
        msg m = {.kind = M_GAP,
                 .from = c->node,
                 .to = peer,
                 .pg = c->pg,
                 .after = a->after,
                 .upto = a->lsn};
        if (a->lsn != QUORUM_LSN_MAX)
            tr(s, "s%u pg %u asks s%u for (%llu,%llu]", c->node, c->pg, peer,
               (unsigned long long)a->after, (unsigned long long)a->lsn);
        net_send(s, m);
        break;
    }
    case QUORUM_ACT_SERVE: {
        msg m = {.kind = M_REC,
                 .from = c->node,
                 .to = a->seg,
                 .pg = c->pg,
                 .rec = *a->rec,
                 .vdl = s->node_vdl[c->node]};
        s->res->served++;
        net_send(s, m);
        break;
    }
    case QUORUM_ACT_SERVE_OLD: /* forgotten records: the disk (the node's log) has them */
        serve_old(s, c->node, c->pg, a);
        break;
    case QUORUM_ACT_FENCE:
        disk_fence(s, d, (quorum_fence){.epoch = a->epoch, .truncate_lsn = a->lsn});
        break;
    default:
        fail(s, "segment emitted %s", quorum_act_name(a->kind));
    }
}

static quorum_sink writer_sink(sim *s)
{
    return (quorum_sink){writer_action, s};
}

static quorum_sink chain_sink(sim *s, uint8_t node, uint32_t pg)
{
    return (quorum_sink){chain_action, &s->cctx[node][pg]};
}

/* ---- delivery ----------------------------------------------------------------------------- */

static void deliver(sim *s, msg *m)
{
    if (m->kind == M_ACK) {
        qw_event ev = {.kind = QW_EV_ACK, .now_ms = s->now};
        ev.ack.pg = m->pg;
        ev.ack.seg = m->from;
        ev.ack.epoch = m->epoch;
        ev.ack.scl = m->scl;
        ev.ack.lsns = m->lsns;
        ev.ack.n_lsns = m->n_lsns;
        int rc = qw_step(&s->w, &ev, writer_sink(s));
        if (rc && rc != MRD_ESTALE) fail(s, "writer refused an ack: %s", mrd_errname(rc));
        return;
    }
    if (!s->up[m->to]) return;
    seg_chain *c = &s->chains[m->to][m->pg];
    sc_event ev = {.now_ms = s->now};
    if (m->kind == M_GAP) {
        ev.kind = SC_EV_GAP_REQ;
        ev.gap.seg = m->from;
        ev.gap.after = m->after;
        ev.gap.upto = m->upto;
    } else {
        ev.kind = SC_EV_RECORD;
        ev.rec = &m->rec;
        if (m->vdl > s->node_vdl[m->to]) s->node_vdl[m->to] = m->vdl;
    }
    int rc = seg_chain_step(c, &ev, chain_sink(s, m->to, m->pg));
    if (rc && rc != MRD_ESTALE && rc != MRD_ESTATE)
        fail(s, "s%u pg %u refused lsn %llu: %s", m->to, m->pg, (unsigned long long)m->rec.lsn,
             mrd_errname(rc));
}

static void deliver_due(sim *s)
{
    while (s->n_msgs > 0 && s->heap[0].at <= s->now && !s->failed) {
        msg m = heap_pop(s);
        deliver(s, &m);
        free(m.lsns);
    }
}

/* ---- disks: fdatasync start and completion ---------------------------------------------- */

static void disk_sync_step(sim *s, uint8_t node, uint32_t pg)
{
    disk *d = &s->disks[node][pg];
    if (d->syncing && d->sync_at <= s->now) {
        for (uint32_t i = 0; i < d->sync_count; i++)
            d->st[d->unsynced[i]] = 2;
        memmove(d->unsynced, d->unsynced + d->sync_count,
                (d->n_unsynced - d->sync_count) * sizeof(d->unsynced[0]));
        d->n_unsynced -= d->sync_count;
        d->syncing = false;
        sc_event ev = {.kind = SC_EV_SYNCED, .now_ms = s->now, .seq = d->sync_seq};
        seg_chain_step(&s->chains[node][pg], &ev, chain_sink(s, node, pg));
    }
    if (!d->syncing && d->n_unsynced > 0 && chance(&s->rng, 300000)) {
        d->syncing = true;
        d->sync_at = s->now + 1 + rnd(&s->rng, 3);
        d->sync_seq = d->seq_appended;
        d->sync_count = d->n_unsynced;
    }
}

/* ---- the writer's load ------------------------------------------------------------------ */

static void submit_txn(sim *s)
{
    uint32_t k = 1 + rnd(&s->rng, 3);
    if (s->next_lsn + k > SIM_LSN_MAX) return;
    if (qw_inflight(&s->w) + k > s->p.inflight_max) {
        /* Over the limit: the core must refuse, and the transaction waits. */
        qw_event ev = {.kind = QW_EV_SUBMIT, .now_ms = s->now};
        uint32_t pg = rnd(&s->rng, s->p.pgs);
        ev.rec = (quorum_rec){.lsn = s->next_lsn,
                              .pg = pg,
                              .epoch = s->epoch,
                              .prev_lsn = qw_pg_last(&s->w, pg),
                              .vol_prev_lsn = qw_last_lsn(&s->w)};
        if (qw_inflight(&s->w) >= s->p.inflight_max &&
            qw_step(&s->w, &ev, writer_sink(s)) != MRD_EBUSY)
            fail(s, "submit beyond inflight_max was not refused");
        return;
    }
    for (uint32_t i = 0; i < k; i++) {
        uint32_t pg = rnd(&s->rng, s->p.pgs);
        quorum_rec r = {.lsn = s->next_lsn++,
                        .pg = pg,
                        .epoch = s->epoch,
                        .is_cpl = i == k - 1,
                        .prev_lsn = qw_pg_last(&s->w, pg),
                        .vol_prev_lsn = qw_last_lsn(&s->w),
                        .size_bytes = 100};
        s->recs[r.lsn] = (master_rec){.r = r, .exists = true};
        tr(s, "submit lsn %llu pg %u%s", (unsigned long long)r.lsn, pg, r.is_cpl ? " cpl" : "");
        qw_event ev = {.kind = QW_EV_SUBMIT, .now_ms = s->now, .rec = r};
        int rc = qw_step(&s->w, &ev, writer_sink(s));
        if (rc) return fail(s, "submit lsn %llu: %s", (unsigned long long)r.lsn, mrd_errname(rc));
        s->res->records++;
    }
    qw_event wait = {.kind = QW_EV_WAIT, .now_ms = s->now};
    wait.wait.id = s->next_lsn - 1;
    wait.wait.lsn = s->next_lsn - 1;
    qw_step(&s->w, &wait, writer_sink(s)); /* MRD_EBUSY when full is fine */
}

/* ---- crashes, restarts, recovery ---------------------------------------------------------- */

/* Whether the set of down nodes stays within one AZ plus one more node. */
static bool within_az_plus_one(const bool down[SIM_NODES])
{
    for (uint8_t az = 0; az < QUORUM_AZS; az++) {
        uint32_t outside = 0;
        for (uint8_t n = 0; n < SIM_NODES; n++)
            if (down[n] && QUORUM_AZ_OF(n) != az) outside++;
        if (outside <= 1) return true;
    }
    return false;
}

static uint32_t live_nodes(const sim *s)
{
    uint32_t n = 0;
    for (uint8_t i = 0; i < SIM_NODES; i++)
        n += s->up[i];
    return n;
}

static void pick_live(sim *s, uint8_t *out, uint32_t k)
{
    uint8_t live[SIM_NODES];
    uint32_t n = 0;
    for (uint8_t i = 0; i < SIM_NODES; i++)
        if (s->up[i]) live[n++] = i;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + rnd(&s->rng, n - i);
        uint8_t t = live[i];
        live[i] = live[j];
        live[j] = t;
        out[i] = live[i];
    }
}

/* Every PG's report from the read quorum `nodes` at floor, with each node's VDL. */
static int reports_at(sim *s, const uint8_t nodes[QUORUM_READ], uint64_t floor,
                      quorum_report *reps, uint32_t *n, mrd_msg *msg)
{
    *n = 0;
    for (uint32_t k = 0; k < QUORUM_READ; k++) {
        for (uint32_t pg = 0; pg < s->p.pgs; pg++, (*n)++) {
            const seg_chain *c = &s->chains[nodes[k]][pg];
            bool hdrs = floor != QUORUM_LSN_MAX;
            int rc = seg_chain_report(c, floor, &reps[*n], hdrs ? s->hdrs[*n] : NULL,
                                      hdrs ? SIM_LSN_MAX : 0);
            if (rc)
                return mrd_fail(msg, rc, "s%u pg %u: report at floor %llu (base %llu): %s",
                                nodes[k], pg, (unsigned long long)floor,
                                (unsigned long long)seg_chain_base(c), mrd_errname(rc));
            reps[*n].vdl = s->node_vdl[nodes[k]];
        }
    }
    return 0;
}

/* Recovery at the read quorum `nodes`; checks that nothing promised is lost. */
static int recover_at(sim *s, const uint8_t nodes[QUORUM_READ], quorum_recovery *out)
{
    quorum_report reps[QUORUM_READ * SIM_PGS_MAX];
    uint32_t n = 0;
    mrd_msg msg = {{0}};
    int rc = reports_at(s, nodes, QUORUM_LSN_MAX, reps, &n, &msg);
    uint64_t floor = 0;
    if (!rc) rc = quorum_recover_floor(s->p.pgs, reps, n, &floor, &msg);
    if (!rc) rc = reports_at(s, nodes, floor, reps, &n, &msg);
    if (!rc) rc = quorum_recover(s->p.pgs, floor, reps, n, out, &msg);
    if (!rc && out->again) { /* the last CPL lies below the floor: again, at it */
        floor = out->vdl;
        rc = reports_at(s, nodes, floor, reps, &n, &msg);
        if (!rc) rc = quorum_recover(s->p.pgs, floor, reps, n, out, &msg);
        if (!rc && out->again) rc = MRD_EINVAL, snprintf(msg.text, sizeof(msg.text), "again twice");
    }
    if (rc) {
        fail(s, "recovery at s%u,s%u,s%u failed: %s", nodes[0], nodes[1], nodes[2], msg.text);
        return rc;
    }
    if (out->vcl != out->vdl)
        fail(s, "recovery at s%u,s%u,s%u restarts at %llu, not at its VDL %llu", nodes[0],
             nodes[1], nodes[2], (unsigned long long)out->vcl, (unsigned long long)out->vdl);
    if (out->vcl < s->vdl_promised || out->vdl < s->vdl_promised)
        fail(s, "recovery at s%u,s%u,s%u found VCL %llu VDL %llu below the promised VDL %llu",
             nodes[0], nodes[1], nodes[2], (unsigned long long)out->vcl,
             (unsigned long long)out->vdl, (unsigned long long)s->vdl_promised);
    for (uint64_t lsn = 1; lsn <= out->vcl && lsn <= SIM_LSN_MAX; lsn++) {
        if (!s->recs[lsn].exists || s->recs[lsn].discarded) continue;
        uint32_t pg = s->recs[lsn].r.pg;
        bool held = false;
        for (uint32_t k = 0; k < QUORUM_READ; k++)
            held |= s->disks[nodes[k]][pg].st[lsn] == 2;
        if (!held)
            fail(s, "recovered VCL %llu covers lsn %llu that no reporter holds",
                 (unsigned long long)out->vcl, (unsigned long long)lsn);
    }
    return s->failed ? -1 : 0;
}

/* After a crash: every promised record is still on a live segment, and a read quorum finds it. */
static void check_after_crash(sim *s)
{
    for (uint64_t lsn = 1; lsn <= s->vdl_promised; lsn++) {
        if (s->recs[lsn].exists && !s->recs[lsn].discarded && durable_copies(s, lsn, true) == 0)
            return fail(s, "lsn %llu <= VDL %llu is on no live segment", (unsigned long long)lsn,
                        (unsigned long long)s->vdl_promised);
    }
    uint8_t nodes[QUORUM_READ];
    pick_live(s, nodes, QUORUM_READ);
    quorum_recovery out;
    recover_at(s, nodes, &out);
}

static void node_crash(sim *s, uint8_t node)
{
    s->up[node] = false;
    s->res->crashes++;
    if (SIM_NODES - live_nodes(s) > s->res->max_down) s->res->max_down = SIM_NODES - live_nodes(s);
    tr(s, "crash s%u (AZ %u)", node, QUORUM_AZ_OF(node));
    for (uint32_t pg = 0; pg < s->p.pgs; pg++) {
        disk *d = &s->disks[node][pg];
        for (uint32_t i = 0; i < d->n_unsynced; i++)
            d->st[d->unsynced[i]] = 0;
        d->n_unsynced = d->sync_count = 0;
        d->syncing = false;
        /* Like a storage node's metadata file: a restart may start at the forget point. */
        seg_chain *c = &s->chains[node][pg];
        s->restart_base[node][pg] = chance(&s->rng, 500000)
                                        ? (quorum_fence){.epoch = seg_chain_base_cpl(c),
                                                         .truncate_lsn = seg_chain_base(c)}
                                        : (quorum_fence){0};
        seg_chain_close(c);
    }
    qw_event ev = {.kind = QW_EV_DOWN, .now_ms = s->now};
    ev.link.pg = QUORUM_PG_ALL;
    ev.link.seg = node;
    qw_step(&s->w, &ev, writer_sink(s));
    check_after_crash(s);
}

static void chain_open(sim *s, uint8_t node, uint32_t pg)
{
    disk *d = &s->disks[node][pg];
    quorum_fence base = s->restart_base[node][pg]; /* lsn and CPL, or zeros */
    seg_chain_config cfg = {.pg = pg,
                            .seg = node,
                            .held_max = SIM_LSN_MAX,
                            .epoch = 1,
                            .gap_retry_ms = s->p.gap_retry_ms,
                            .scl_base = base.truncate_lsn,
                            .base_cpl = base.epoch,
                            .fences = d->fences,
                            .n_fences = d->n_fences};
    if (seg_chain_init(&s->chains[node][pg], &cfg, NULL)) abort();
    s->scl_verified[node][pg] = 0;
    for (uint64_t lsn = base.truncate_lsn + 1; lsn <= SIM_LSN_MAX; lsn++) {
        if (d->st[lsn] != 2) continue;
        sc_event ev = {.kind = SC_EV_LOAD, .now_ms = s->now, .rec = &s->recs[lsn].r};
        int rc = seg_chain_step(&s->chains[node][pg], &ev, chain_sink(s, node, pg));
        if (rc)
            fail(s, "s%u pg %u reloading lsn %llu: %s", node, pg, (unsigned long long)lsn,
                 mrd_errname(rc));
    }
    d->seq_appended = 0;
}

/* The writer's handshake with a (re)connected node: its fences, then re-sends. */
static void node_handshake(sim *s, uint8_t node)
{
    for (uint32_t pg = 0; pg < s->p.pgs; pg++) {
        for (uint32_t i = 0; i < s->n_fences; i++) {
            sc_event ev = {.kind = SC_EV_FENCE, .now_ms = s->now, .fence = s->fences[i]};
            seg_chain_step(&s->chains[node][pg], &ev, chain_sink(s, node, pg));
        }
    }
    qw_event ev = {.kind = QW_EV_UP, .now_ms = s->now};
    ev.link.pg = QUORUM_PG_ALL;
    ev.link.seg = node;
    qw_step(&s->w, &ev, writer_sink(s));
}

static void node_restart(sim *s, uint8_t node)
{
    tr(s, "restart s%u", node);
    s->up[node] = true;
    for (uint32_t pg = 0; pg < s->p.pgs; pg++)
        chain_open(s, node, pg);
    node_handshake(s, node);
}

static void fence_all(sim *s, quorum_fence f)
{
    bool known = false;
    for (uint32_t i = 0; i < s->n_fences; i++)
        if (s->fences[i].epoch == f.epoch) s->fences[i] = f, known = true;
    if (!known) s->fences[s->n_fences++] = f;
    for (uint8_t n = 0; n < SIM_NODES; n++) {
        if (!s->up[n]) continue;
        for (uint32_t pg = 0; pg < s->p.pgs; pg++) {
            sc_event ev = {.kind = SC_EV_FENCE, .now_ms = s->now, .fence = f};
            seg_chain_step(&s->chains[n][pg], &ev, chain_sink(s, n, pg));
        }
    }
}

static void writer_open(sim *s, const quorum_recovery *rec)
{
    qw_config cfg = {.pg_count = s->p.pgs,
                     .write_quorum = s->opt.write_quorum,
                     .inflight_max = s->p.inflight_max,
                     .retain_max = s->p.retain_max,
                     .waiters_max = 8,
                     .resend_ms = s->p.resend_ms,
                     .epoch = s->epoch,
                     .recovered = rec};
    if (qw_init(&s->w, &cfg, NULL)) abort();
    for (uint8_t n = 0; n < SIM_NODES; n++) {
        if (s->up[n]) continue;
        qw_event ev = {.kind = QW_EV_DOWN, .now_ms = s->now};
        ev.link.pg = QUORUM_PG_ALL;
        ev.link.seg = n;
        qw_step(&s->w, &ev, writer_sink(s));
    }
}

/* The writer dies and a new one recovers: fence, read quorum, truncate, barriers. */
static void writer_restart(sim *s)
{
    qw_close(&s->w);
    s->epoch++;
    s->res->writer_restarts++;
    fence_all(s, (quorum_fence){.epoch = s->epoch, .truncate_lsn = QUORUM_LSN_MAX});
    uint8_t nodes[QUORUM_READ];
    pick_live(s, nodes, QUORUM_READ);
    quorum_recovery rec;
    if (recover_at(s, nodes, &rec)) return;
    tr(s, "writer restart: epoch %llu, read quorum s%u,s%u,s%u, VCL %llu VDL %llu, lost up to %llu",
       (unsigned long long)s->epoch, nodes[0], nodes[1], nodes[2], (unsigned long long)rec.vcl,
       (unsigned long long)rec.vdl, (unsigned long long)rec.lost_max);
    if (rec.vcl + 1 < s->next_lsn) s->res->truncations++;
    fence_all(s, (quorum_fence){.epoch = s->epoch, .truncate_lsn = rec.vcl});
    for (uint64_t lsn = rec.vcl + 1; lsn < s->next_lsn; lsn++)
        s->recs[lsn].discarded = true;
    writer_open(s, &rec);
}

static void faults(sim *s)
{
    if (s->healed) return;
    uint8_t node = (uint8_t)rnd(&s->rng, SIM_NODES);
    if (s->up[node] && chance(&s->rng, s->p.crash_ppm)) {
        bool down[SIM_NODES];
        for (uint8_t i = 0; i < SIM_NODES; i++)
            down[i] = !s->up[i];
        down[node] = true;
        if (within_az_plus_one(down)) node_crash(s, node);
    } else if (!s->up[node] && chance(&s->rng, s->p.restart_ppm)) {
        node_restart(s, node);
    }
    if (live_nodes(s) >= QUORUM_WRITE && s->n_fences < SIM_FENCES_MAX &&
        chance(&s->rng, s->p.wrestart_ppm))
        writer_restart(s);
}

/* ---- the run ----------------------------------------------------------------------------- */

/*
 * Forgets up to the node's VDL, as a storage node does once it materialized
 * that far, or to a random point below it. (Exactly at the VDL matters: a
 * report at a floor equal to the base must still name the CPL there.)
 */
static void forget(sim *s, uint8_t n, uint32_t pg)
{
    seg_chain *c = &s->chains[n][pg];
    uint64_t base = seg_chain_base(c);
    sc_event ev = {.kind = SC_EV_FORGET, .now_ms = s->now, .upto = s->node_vdl[n]};
    if (rnd(&s->rng, 2)) ev.upto = rnd(&s->rng, (uint32_t)s->node_vdl[n] + 1);
    if (s->opt.forget_past_vdl) ev.upto = QUORUM_LSN_MAX;
    if (seg_chain_step(c, &ev, chain_sink(s, n, pg)) != 0) fail(s, "forget refused");
    if (seg_chain_base(c) == base) return;
    s->res->forgotten += seg_chain_base(c) - base; /* LSNs, of any PG */
    tr(s, "s%u pg %u forgets up to %llu", n, pg, (unsigned long long)seg_chain_base(c));
    if ((!s->opt.forget_past_vdl && seg_chain_base(c) > s->node_vdl[n]) ||
        seg_chain_base(c) > seg_chain_scl(c))
        fail(s, "s%u pg %u forgot past its VDL or SCL", n, pg);
}

static void ticks(sim *s)
{
    if (s->now % SIM_TICK_MS) return;
    qw_event ev = {.kind = QW_EV_TICK, .now_ms = s->now};
    qw_step(&s->w, &ev, writer_sink(s));
    for (uint8_t n = 0; n < SIM_NODES; n++) {
        if (!s->up[n]) continue;
        for (uint32_t pg = 0; pg < s->p.pgs; pg++) {
            sc_event sev = {.kind = SC_EV_TICK, .now_ms = s->now};
            seg_chain_step(&s->chains[n][pg], &sev, chain_sink(s, n, pg));
            if ((s->node_vdl[n] > 0 || s->opt.forget_past_vdl) &&
                chance(&s->rng, s->p.forget_ppm))
                forget(s, n, pg);
        }
    }
}

/* Healed and quiet: every segment of a PG at the PG's last record, VCL at the last LSN. */
static bool converged(sim *s)
{
    if (qw_vcl(&s->w) != qw_last_lsn(&s->w)) return false;
    for (uint32_t pg = 0; pg < s->p.pgs; pg++)
        for (uint8_t n = 0; n < SIM_NODES; n++)
            if (seg_chain_scl(&s->chains[n][pg]) != qw_pg_last(&s->w, pg)) return false;
    return true;
}

static void choose_params(sim *s)
{
    prng *r = &s->rng;
    sim_params *p = &s->p;
    p->pgs = 1 + rnd(r, SIM_PGS_MAX);
    p->drop_ppm = rnd(r, 4) * 50000;
    p->dup_ppm = rnd(r, 3) * 50000;
    p->delay_max = 1 + rnd(r, 20);
    p->txn_ppm = 100000 + rnd(r, 400000);
    p->crash_ppm = 5000 + rnd(r, 25000);
    p->restart_ppm = 20000 + rnd(r, 50000);
    p->wrestart_ppm = rnd(r, 2) ? rnd(r, 3000) : 0;
    p->inflight_max = 4 + rnd(r, 60);
    p->retain_max = rnd(r, 32);
    p->resend_ms = 10 + rnd(r, 60);
    p->gap_retry_ms = 5 + rnd(r, 40);
    p->load_ms = 100 + rnd(r, 300);
    p->forget_ppm = rnd(r, 4) ? rnd(r, 500000) : 0;
}

static void sim_setup(sim *s)
{
    uint64_t x = s->opt.seed;
    for (int i = 0; i < 4; i++)
        s->rng.s[i] = splitmix64(&x);
    choose_params(s);
    s->epoch = 1;
    s->next_lsn = 1;
    for (uint8_t n = 0; n < SIM_NODES; n++) {
        s->up[n] = true;
        for (uint32_t pg = 0; pg < s->p.pgs; pg++) {
            s->cctx[n][pg] = (chain_ctx){.s = s, .node = n, .pg = pg};
            chain_open(s, n, pg);
        }
    }
    writer_open(s, NULL);
}

static void sim_teardown(sim *s)
{
    qw_close(&s->w);
    for (uint8_t n = 0; n < SIM_NODES; n++)
        for (uint32_t pg = 0; pg < s->p.pgs; pg++)
            if (s->up[n]) seg_chain_close(&s->chains[n][pg]);
    while (s->n_msgs)
        free(heap_pop(s).lsns);
    free(s->heap);
}

static void heal(sim *s)
{
    s->healed = true;
    tr(s, "heal: restart every node, no more drops or duplicates");
    for (uint8_t n = 0; n < SIM_NODES; n++)
        if (!s->up[n]) node_restart(s, n);
}

static void step(sim *s)
{
    deliver_due(s);
    for (uint8_t n = 0; n < SIM_NODES; n++)
        for (uint32_t pg = 0; pg < s->p.pgs && s->up[n]; pg++)
            disk_sync_step(s, n, pg);
    if (!s->healed && chance(&s->rng, s->p.txn_ppm)) submit_txn(s);
    faults(s);
    ticks(s);
}

int sim_run(const sim_options *opt, sim_result *res)
{
    sim *s = calloc(1, sizeof(*s));
    if (!s) abort();
    memset(res, 0, sizeof(*res));
    s->opt = *opt;
    s->res = res;
    sim_setup(s);
    for (s->now = 1; !s->failed; s->now++) {
        if (s->now == s->p.load_ms) heal(s);
        step(s);
        if (s->healed && s->now % 10 == 0 && converged(s)) break;
        if (s->now > s->p.load_ms + SIM_HEAL_MS_MAX) {
            fail(s, "no convergence %u ms after healing (VCL %llu of %llu)", SIM_HEAL_MS_MAX,
                 (unsigned long long)qw_vcl(&s->w), (unsigned long long)qw_last_lsn(&s->w));
            break;
        }
    }
    if (!s->failed && qw_vdl(&s->w) < s->vdl_promised)
        fail(s, "converged VDL %llu below the promised %llu", (unsigned long long)qw_vdl(&s->w),
             (unsigned long long)s->vdl_promised);
    res->ok = !s->failed;
    res->vdl = qw_vdl(&s->w);
    res->end_ms = s->now;
    sim_teardown(s);
    free(s);
    return res->ok ? 0 : -1;
}
