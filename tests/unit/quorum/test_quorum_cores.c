/*
 * Hand-written scenarios for the quorum cores, each compared against the exact
 * trace of actions the core emits: a protocol change shows up as a readable
 * diff of these strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "meridian/quorum.h"

/* ---- the trace: one line per action, consecutive SENDs of one record on one line ----- */

typedef struct {
    char text[8192];
    size_t len;
    uint64_t last_send_lsn;
} trace;

static void tr_printf(trace *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr_printf(trace *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->text + t->len, sizeof(t->text) - t->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(t->text) - t->len);
    t->len += (size_t)n;
}

static void tr_action(void *ctx, const quorum_action *a)
{
    trace *t = ctx;
    if (a->kind == QUORUM_ACT_SEND && t->last_send_lsn == a->rec->lsn) {
        t->len--; /* join this target to the line of the same record */
        tr_printf(t, " s%u\n", a->seg);
        return;
    }
    t->last_send_lsn = 0;
    switch (a->kind) {
    case QUORUM_ACT_SEND:
        tr_printf(t, "SEND lsn=%llu -> s%u\n", (unsigned long long)a->rec->lsn, a->seg);
        t->last_send_lsn = a->rec->lsn;
        break;
    case QUORUM_ACT_VCL:
    case QUORUM_ACT_VDL:
    case QUORUM_ACT_SCL:
        tr_printf(t, "%s %llu\n", quorum_act_name(a->kind), (unsigned long long)a->lsn);
        break;
    case QUORUM_ACT_WAITER:
        tr_printf(t, "WAITER id=%llu lsn=%llu\n", (unsigned long long)a->id,
                  (unsigned long long)a->lsn);
        break;
    case QUORUM_ACT_PERSIST:
        tr_printf(t, "PERSIST lsn=%llu seq=%llu\n", (unsigned long long)a->rec->lsn,
                  (unsigned long long)a->id);
        break;
    case QUORUM_ACT_ACK:
        tr_printf(t, "ACK scl=%llu epoch=%llu lsns=", (unsigned long long)a->lsn,
                  (unsigned long long)a->epoch);
        for (uint32_t i = 0; i < a->n_lsns; i++)
            tr_printf(t, "%s%llu", i ? "," : "", (unsigned long long)a->lsns[i]);
        tr_printf(t, "\n");
        break;
    case QUORUM_ACT_GAP:
        if (a->lsn == QUORUM_LSN_MAX)
            tr_printf(t, "GAP (%llu,max]\n", (unsigned long long)a->after);
        else
            tr_printf(t, "GAP (%llu,%llu]\n", (unsigned long long)a->after,
                      (unsigned long long)a->lsn);
        break;
    case QUORUM_ACT_SERVE:
        tr_printf(t, "SERVE lsn=%llu -> s%u\n", (unsigned long long)a->rec->lsn, a->seg);
        break;
    case QUORUM_ACT_FENCE:
        tr_printf(t, "FENCE epoch=%llu truncate=%llu\n", (unsigned long long)a->epoch,
                  (unsigned long long)a->lsn);
        break;
    case QUORUM_ACT_SERVE_OLD:
        tr_printf(t, "SERVE_OLD (%llu,%llu] -> s%u\n", (unsigned long long)a->after,
                  (unsigned long long)a->lsn, a->seg);
        break;
    }
}

/* Returns the trace so far and starts a new one. */
static const char *tr_take(trace *t)
{
    static char out[8192];
    memcpy(out, t->text, t->len + 1);
    t->len = 0;
    t->text[0] = '\0';
    t->last_send_lsn = 0;
    return out;
}

/* ---- writer helpers ------------------------------------------------------------------- */

typedef struct {
    qw w;
    trace t;
    quorum_sink sink;
    uint64_t now;
} wfix;

static void wfix_init(wfix *f, uint32_t pgs, uint32_t inflight_max)
{
    memset(f, 0, sizeof(*f));
    qw_config cfg = {.pg_count = pgs,
                     .write_quorum = QUORUM_WRITE,
                     .inflight_max = inflight_max,
                     .retain_max = 8,
                     .waiters_max = 2,
                     .resend_ms = 100,
                     .epoch = 1};
    assert_int_equal(qw_init(&f->w, &cfg, NULL), 0);
    f->sink = (quorum_sink){tr_action, &f->t};
}

static int submit(wfix *f, uint64_t lsn, uint32_t pg, bool cpl)
{
    qw_event ev = {.kind = QW_EV_SUBMIT, .now_ms = f->now};
    ev.rec = (quorum_rec){.lsn = lsn,
                          .pg = pg,
                          .epoch = 1,
                          .is_cpl = cpl,
                          .prev_lsn = qw_pg_last(&f->w, pg),
                          .vol_prev_lsn = qw_last_lsn(&f->w)};
    return qw_step(&f->w, &ev, f->sink);
}

static int ack(wfix *f, uint32_t pg, uint8_t seg, uint64_t scl, const uint64_t *lsns, uint32_t n)
{
    qw_event ev = {.kind = QW_EV_ACK, .now_ms = f->now};
    ev.ack.pg = pg;
    ev.ack.seg = seg;
    ev.ack.epoch = 1;
    ev.ack.scl = scl;
    ev.ack.lsns = lsns;
    ev.ack.n_lsns = n;
    return qw_step(&f->w, &ev, f->sink);
}

static int link_event(wfix *f, qw_event_kind kind, uint32_t pg, uint8_t seg)
{
    qw_event ev = {.kind = kind, .now_ms = f->now};
    ev.link.pg = pg;
    ev.link.seg = seg;
    return qw_step(&f->w, &ev, f->sink);
}

static int wait_for(wfix *f, uint64_t id, uint64_t lsn)
{
    qw_event ev = {.kind = QW_EV_WAIT, .now_ms = f->now};
    ev.wait.id = id;
    ev.wait.lsn = lsn;
    return qw_step(&f->w, &ev, f->sink);
}

/* ---- writer scenarios ----------------------------------------------------------------- */

static void writer_vdl_needs_four_segments(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    assert_string_equal(tr_take(&f.t), "SEND lsn=1 -> s0 s1 s2 s3 s4 s5\n");
    for (uint8_t s = 0; s < 3; s++)
        assert_int_equal(ack(&f, 0, s, 1, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "");
    assert_int_equal(qw_vdl(&f.w), 0);
    assert_int_equal(ack(&f, 0, 3, 1, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "VCL 1\nVDL 1\n");
    assert_int_equal(ack(&f, 0, 4, 1, NULL, 0), 0);
    assert_int_equal(ack(&f, 0, 5, 1, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "");
    assert_int_equal(qw_inflight(&f.w), 0);
    qw_close(&f.w);
}

static void writer_vcl_waits_for_every_pg(void **state)
{
    wfix f;
    wfix_init(&f, 2, 16);
    assert_int_equal(submit(&f, 1, 0, false), 0);
    assert_int_equal(submit(&f, 2, 1, false), 0);
    assert_int_equal(submit(&f, 3, 1, true), 0);
    tr_take(&f.t);
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 1, s, 3, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), ""); /* lsn 1 (pg 0) is not durable yet */
    uint64_t one = 1;
    for (uint8_t s = 2; s < 6; s++)
        assert_int_equal(ack(&f, 0, s, 0, &one, 1), 0);
    assert_string_equal(tr_take(&f.t), "VCL 3\nVDL 3\n");
    qw_close(&f.w);
}

static void writer_vdl_is_highest_cpl(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(submit(&f, 1, 0, false), 0);
    assert_int_equal(submit(&f, 2, 0, true), 0);
    assert_int_equal(submit(&f, 3, 0, false), 0);
    tr_take(&f.t);
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 0, s, 3, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "VCL 3\nVDL 2\n");
    qw_close(&f.w);
}

static void writer_listed_ack_above_gap_counts(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    assert_int_equal(submit(&f, 2, 0, true), 0);
    tr_take(&f.t);
    uint64_t two = 2;
    /* four segments hold 2 but not 1 (a gap): 2 is durable at quorum, VCL still 0 */
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 0, s, 0, &two, 1), 0);
    assert_string_equal(tr_take(&f.t), "");
    for (uint8_t s = 2; s < 6; s++)
        assert_int_equal(ack(&f, 0, s, 2, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "VCL 2\nVDL 2\n");
    qw_close(&f.w);
}

static void writer_waiters_fire_in_order(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    assert_int_equal(submit(&f, 2, 0, true), 0);
    tr_take(&f.t);
    assert_int_equal(wait_for(&f, 7, 2), 0);
    assert_int_equal(wait_for(&f, 8, 1), 0);
    assert_int_equal(wait_for(&f, 9, 2), MRD_EBUSY); /* waiters_max = 2 */
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 0, s, 1, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "VCL 1\nVDL 1\nWAITER id=8 lsn=1\n");
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 0, s, 2, NULL, 0), 0);
    assert_string_equal(tr_take(&f.t), "VCL 2\nVDL 2\nWAITER id=7 lsn=2\n");
    assert_int_equal(wait_for(&f, 10, 2), 0);
    assert_string_equal(tr_take(&f.t), "WAITER id=10 lsn=2\n");
    qw_close(&f.w);
}

static void writer_refuses_beyond_inflight_max(void **state)
{
    wfix f;
    wfix_init(&f, 1, 2);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    assert_int_equal(submit(&f, 2, 0, true), 0);
    assert_int_equal(submit(&f, 3, 0, true), MRD_EBUSY);
    for (uint8_t s = 0; s < 4; s++)
        assert_int_equal(ack(&f, 0, s, 1, NULL, 0), 0);
    tr_take(&f.t);
    assert_int_equal(submit(&f, 3, 0, true), 0);
    assert_int_equal(f.w.stats.busy, 1);
    qw_close(&f.w);
}

static void writer_refuses_bad_input(void **state)
{
    wfix f;
    wfix_init(&f, 1, 4);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    qw_event ev = {.kind = QW_EV_SUBMIT};
    ev.rec = (quorum_rec){.lsn = 2, .pg = 0, .epoch = 1, .prev_lsn = 0, .vol_prev_lsn = 1};
    assert_int_equal(qw_step(&f.w, &ev, f.sink), MRD_EINVAL); /* back-link skips lsn 1 */
    ev.rec.prev_lsn = 1;
    ev.rec.lsn = 1;
    assert_int_equal(qw_step(&f.w, &ev, f.sink), MRD_EINVAL); /* LSN does not increase */
    uint64_t nine = 9;
    assert_int_equal(ack(&f, 0, 0, 0, &nine, 1), MRD_EPROTO); /* never submitted */
    assert_int_equal(ack(&f, 0, 0, 5, NULL, 0), MRD_EPROTO);  /* SCL above the PG's last */
    qw_close(&f.w);
}

static void writer_resends_what_a_segment_lacks(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(link_event(&f, QW_EV_DOWN, QUORUM_PG_ALL, 5), 0);
    assert_int_equal(submit(&f, 1, 0, false), 0);
    assert_int_equal(submit(&f, 2, 0, true), 0);
    assert_string_equal(tr_take(&f.t),
                        "SEND lsn=1 -> s0 s1 s2 s3 s4\nSEND lsn=2 -> s0 s1 s2 s3 s4\n");
    uint64_t one = 1;
    for (uint8_t s = 0; s < 5; s++)
        assert_int_equal(ack(&f, 0, s, 0, &one, 1), 0);
    assert_string_equal(tr_take(&f.t), "VCL 1\n");
    assert_int_equal(link_event(&f, QW_EV_UP, 0, 5), 0);
    assert_string_equal(tr_take(&f.t), "SEND lsn=1 -> s5\nSEND lsn=2 -> s5\n");
    assert_int_equal(ack(&f, 0, 5, 1, NULL, 0), 0);
    f.now = 99;
    qw_event tick = {.kind = QW_EV_TICK, .now_ms = f.now};
    assert_int_equal(qw_step(&f.w, &tick, f.sink), 0);
    assert_string_equal(tr_take(&f.t), "");
    f.now = 100; /* lsn 2 unacknowledged for resend_ms: everyone lacks it */
    tick.now_ms = f.now;
    assert_int_equal(qw_step(&f.w, &tick, f.sink), 0);
    assert_string_equal(tr_take(&f.t), "SEND lsn=2 -> s0 s1 s2 s3 s4 s5\n");
    qw_close(&f.w);
}

static void writer_fenced_by_higher_epoch(void **state)
{
    wfix f;
    wfix_init(&f, 1, 16);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    qw_event ev = {.kind = QW_EV_ACK};
    ev.ack.pg = 0;
    ev.ack.seg = 0;
    ev.ack.scl = 1;
    ev.ack.epoch = 0;
    assert_int_equal(qw_step(&f.w, &ev, f.sink), MRD_ESTALE);
    assert_false(f.w.fenced);
    ev.ack.epoch = 2;
    assert_int_equal(qw_step(&f.w, &ev, f.sink), MRD_ESTALE);
    assert_true(f.w.fenced);
    assert_int_equal(submit(&f, 2, 0, true), MRD_ESTALE);
    qw_close(&f.w);
}

static void writer_picks_a_complete_segment_for_reads(void **state)
{
    wfix f;
    wfix_init(&f, 2, 16);
    assert_int_equal(submit(&f, 1, 0, true), 0);
    assert_int_equal(submit(&f, 2, 1, true), 0);
    assert_int_equal(submit(&f, 3, 0, true), 0);
    uint8_t seg = 9;
    assert_int_equal(qw_read_segment(&f.w, 0, 2, &seg), MRD_ENOTFOUND);
    assert_int_equal(ack(&f, 0, 4, 1, NULL, 0), 0);
    assert_int_equal(qw_read_segment(&f.w, 0, 2, &seg), 0); /* pg 0's last record <= 2 is 1 */
    assert_int_equal(seg, 4);
    assert_int_equal(qw_read_segment(&f.w, 0, 3, &seg), MRD_ENOTFOUND);
    assert_int_equal(ack(&f, 0, 2, 3, NULL, 0), 0);
    assert_int_equal(qw_read_segment(&f.w, 0, 3, &seg), 0);
    assert_int_equal(seg, 2);
    qw_close(&f.w);
}

/* ---- segment chain scenarios ---------------------------------------------------------- */

typedef struct {
    seg_chain c;
    trace t;
    quorum_sink sink;
} sfix;

static void sfix_init(sfix *f, const quorum_fence *fences, uint32_t n_fences)
{
    memset(f, 0, sizeof(*f));
    seg_chain_config cfg = {.pg = 0,
                            .seg = 1,
                            .held_max = 64,
                            .gap_retry_ms = 10,
                            .epoch = 1,
                            .fences = fences,
                            .n_fences = n_fences};
    assert_int_equal(seg_chain_init(&f->c, &cfg, NULL), 0);
    f->sink = (quorum_sink){tr_action, &f->t};
}

static quorum_rec mkrec(uint64_t lsn, uint64_t prev, uint64_t epoch)
{
    return (quorum_rec){.lsn = lsn, .prev_lsn = prev, .vol_prev_lsn = lsn - 1, .epoch = epoch};
}

static int sc_rec(sfix *f, quorum_rec r)
{
    sc_event ev = {.kind = SC_EV_RECORD, .rec = &r};
    return seg_chain_step(&f->c, &ev, f->sink);
}

static void sc_sync(sfix *f, uint64_t seq)
{
    sc_event ev = {.kind = SC_EV_SYNCED, .seq = seq};
    assert_int_equal(seg_chain_step(&f->c, &ev, f->sink), 0);
}

static void sc_tick(sfix *f, uint64_t now)
{
    sc_event ev = {.kind = SC_EV_TICK, .now_ms = now};
    assert_int_equal(seg_chain_step(&f->c, &ev, f->sink), 0);
}

static void chain_in_order(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    assert_int_equal(sc_rec(&f, mkrec(1, 0, 1)), 0);
    assert_int_equal(sc_rec(&f, mkrec(3, 1, 1)), 0);
    assert_string_equal(tr_take(&f.t), "PERSIST lsn=1 seq=1\nPERSIST lsn=3 seq=2\n");
    sc_sync(&f, 1);
    assert_string_equal(tr_take(&f.t), "SCL 1\nACK scl=1 epoch=1 lsns=1\n");
    assert_int_equal(sc_rec(&f, mkrec(4, 3, 1)), 0);
    sc_sync(&f, 3);
    assert_string_equal(tr_take(&f.t), "PERSIST lsn=4 seq=3\nSCL 4\nACK scl=4 epoch=1 lsns=3,4\n");
    seg_chain_close(&f.c);
}

static void chain_holds_records_above_a_gap(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    assert_int_equal(sc_rec(&f, mkrec(7, 5, 1)), 0);
    assert_int_equal(sc_rec(&f, mkrec(2, 0, 1)), 0);
    sc_sync(&f, 2);
    assert_string_equal(
        tr_take(&f.t),
        "PERSIST lsn=7 seq=1\nPERSIST lsn=2 seq=2\nSCL 2\nACK scl=2 epoch=1 lsns=7,2\n");
    sc_tick(&f, 5);
    assert_string_equal(tr_take(&f.t), "ACK scl=2 epoch=1 lsns=\nGAP (2,5]\nGAP (7,max]\n");
    sc_tick(&f, 10); /* gap_retry_ms not over yet */
    assert_string_equal(tr_take(&f.t), "");
    assert_int_equal(sc_rec(&f, mkrec(5, 2, 1)), 0); /* the gap filled by a peer */
    sc_sync(&f, 3);
    assert_string_equal(tr_take(&f.t), "PERSIST lsn=5 seq=3\nSCL 7\nACK scl=7 epoch=1 lsns=5\n");
    assert_int_equal(sc_rec(&f, mkrec(5, 2, 1)), 0); /* a duplicate: re-acknowledged only */
    assert_string_equal(tr_take(&f.t), "ACK scl=7 epoch=1 lsns=5\n");
    assert_int_equal(f.c.stats.dups, 1);
    seg_chain_close(&f.c);
}

static void chain_answers_gap_requests(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    uint64_t prev = 0;
    for (uint64_t lsn = 2; lsn <= 10; lsn += 2, prev = lsn - 2)
        assert_int_equal(sc_rec(&f, mkrec(lsn, prev, 1)), 0);
    tr_take(&f.t);
    sc_event ev = {.kind = SC_EV_GAP_REQ};
    ev.gap.seg = 4;
    ev.gap.after = 2;
    ev.gap.upto = 8;
    assert_int_equal(seg_chain_step(&f.c, &ev, f.sink), 0);
    assert_string_equal(tr_take(&f.t), "SERVE lsn=4 -> s4\nSERVE lsn=6 -> s4\nSERVE lsn=8 -> s4\n");
    seg_chain_close(&f.c);
}

static void sc_forget(sfix *f, uint64_t upto)
{
    sc_event ev = {.kind = SC_EV_FORGET, .upto = upto};
    assert_int_equal(seg_chain_step(&f->c, &ev, f->sink), 0);
}

static void sc_gap_req(sfix *f, uint8_t seg, uint64_t after, uint64_t upto)
{
    sc_event ev = {.kind = SC_EV_GAP_REQ};
    ev.gap.seg = seg;
    ev.gap.after = after;
    ev.gap.upto = upto;
    assert_int_equal(seg_chain_step(&f->c, &ev, f->sink), 0);
}

/* Forgetting stops at SCL, keeps what reports need, and sends old gaps to the log. */
static void chain_forgets_below_scl(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    for (uint64_t lsn = 1; lsn <= 5; lsn++) {
        quorum_rec r = mkrec(lsn, lsn - 1, 1);
        r.is_cpl = lsn == 2 || lsn == 5;
        assert_int_equal(sc_rec(&f, r), 0);
    }
    assert_int_equal(sc_rec(&f, mkrec(8, 7, 1)), 0); /* above a gap */
    sc_sync(&f, 4);                                  /* 1..4 durable; 5 and 8 pending */
    tr_take(&f.t);
    assert_int_equal(seg_chain_scl(&f.c), 4);
    sc_forget(&f, 100); /* stops at SCL */
    assert_int_equal(seg_chain_base(&f.c), 4);
    assert_int_equal(seg_chain_base_cpl(&f.c), 2);
    assert_false(seg_chain_holds(&f.c, 3));
    assert_true(seg_chain_holds(&f.c, 5));
    assert_string_equal(tr_take(&f.t), "");
    sc_sync(&f, 6);
    assert_string_equal(tr_take(&f.t), "SCL 5\nACK scl=5 epoch=1 lsns=5,8\n");

    /* A copy of a forgotten record is a duplicate, acknowledged again. */
    assert_int_equal(sc_rec(&f, mkrec(3, 2, 1)), 0);
    assert_string_equal(tr_take(&f.t), "ACK scl=5 epoch=1 lsns=3\n");

    /* Gap requests: below the base the log answers, above it memory does. */
    sc_gap_req(&f, 3, 1, 8);
    assert_string_equal(tr_take(&f.t), "SERVE_OLD (1,4] -> s3\n");
    sc_gap_req(&f, 3, 4, 8);
    assert_string_equal(tr_take(&f.t), "SERVE lsn=5 -> s3\nSERVE lsn=8 -> s3\n");

    /* Reports: not below the base; at it, the base stands in for the forgotten records. */
    quorum_report r;
    quorum_hdr hdrs[8];
    assert_int_equal(seg_chain_report(&f.c, 3, &r, hdrs, 8), MRD_ESTATE);
    assert_int_equal(seg_chain_report(&f.c, 4, &r, hdrs, 8), 0);
    assert_int_equal(r.floor_head, 4);
    assert_int_equal(r.floor_cpl, 2);
    assert_int_equal(r.scl, 5);
    assert_int_equal(r.highest, 8);
    assert_int_equal(r.n_hdrs, 2);
    assert_int_equal(hdrs[0].lsn, 5);

    /* Forgetting everything held up to SCL leaves SCL where it was; the chain grows on. */
    sc_forget(&f, 5);
    assert_int_equal(seg_chain_base(&f.c), 5);
    assert_int_equal(seg_chain_base_cpl(&f.c), 5);
    assert_int_equal(seg_chain_scl(&f.c), 5);
    assert_int_equal(seg_chain_report(&f.c, 6, &r, hdrs, 8), 0);
    assert_int_equal(r.floor_head, 5);
    assert_int_equal(r.floor_cpl, 5);
    assert_int_equal(r.highest, 8);
    assert_int_equal(sc_rec(&f, mkrec(6, 5, 1)), 0);
    assert_int_equal(sc_rec(&f, mkrec(7, 6, 1)), 0);
    tr_take(&f.t);
    sc_sync(&f, 8);
    assert_string_equal(tr_take(&f.t), "SCL 8\nACK scl=8 epoch=1 lsns=6,7\n");
    seg_chain_close(&f.c);
}

static void chain_fences_stale_epochs(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    assert_int_equal(sc_rec(&f, mkrec(1, 0, 1)), 0);
    assert_int_equal(sc_rec(&f, mkrec(2, 1, 1)), 0);
    assert_int_equal(sc_rec(&f, mkrec(3, 2, 1)), 0);
    sc_sync(&f, 3);
    tr_take(&f.t);
    assert_int_equal(sc_rec(&f, mkrec(4, 3, 2)), MRD_ESTATE); /* epoch 2 before its fence */
    sc_event ev = {.kind = SC_EV_FENCE, .fence = {.epoch = 2, .truncate_lsn = 2}};
    assert_int_equal(seg_chain_step(&f.c, &ev, f.sink), 0);
    assert_string_equal(tr_take(&f.t), "FENCE epoch=2 truncate=2\nSCL 2\n");
    assert_int_equal(seg_chain_epoch(&f.c), 2);
    assert_false(seg_chain_has_durable(&f.c, 3));
    assert_false(seg_chain_holds(&f.c, 3)); /* voided */
    assert_true(seg_chain_holds(&f.c, 2));
    assert_int_equal(sc_rec(&f, mkrec(3, 2, 1)), MRD_ESTALE); /* the truncated tail, from a peer */
    assert_int_equal(sc_rec(&f, mkrec(4, 2, 2)), 0);          /* the new writer's */
    assert_true(seg_chain_holds(&f.c, 4)); /* held, not yet durable */
    assert_false(seg_chain_has_durable(&f.c, 4));
    sc_tick(&f, 1);
    assert_string_equal(tr_take(&f.t),
                        "PERSIST lsn=4 seq=4\nACK scl=2 epoch=2 lsns=\nGAP (4,max]\n");
    seg_chain_close(&f.c);

    /* A restarted segment gets its fences from metadata and refuses the same records. */
    quorum_fence fences[] = {{.epoch = 2, .truncate_lsn = 2}};
    sfix_init(&f, fences, 1);
    assert_int_equal(seg_chain_epoch(&f.c), 2);
    assert_int_equal(sc_rec(&f, mkrec(3, 2, 1)), MRD_ESTALE);
    assert_int_equal(sc_rec(&f, mkrec(2, 1, 1)), 0);
    seg_chain_close(&f.c);
}

static void chain_reloads_durable_records(void **state)
{
    sfix f;
    sfix_init(&f, NULL, 0);
    quorum_rec recs[] = {mkrec(5, 3, 1), mkrec(1, 0, 1), mkrec(3, 1, 1), mkrec(9, 7, 1)};
    for (size_t i = 0; i < MRD_ARRAY_LEN(recs); i++) {
        sc_event ev = {.kind = SC_EV_LOAD, .rec = &recs[i]};
        assert_int_equal(seg_chain_step(&f.c, &ev, f.sink), 0);
    }
    assert_string_equal(tr_take(&f.t), "SCL 1\nSCL 5\n");
    assert_int_equal(seg_chain_scl(&f.c), 5);
    quorum_report rep;
    quorum_hdr hdrs[8];
    assert_int_equal(seg_chain_report(&f.c, 3, &rep, hdrs, 8), 0);
    assert_int_equal(rep.highest, 9);
    assert_int_equal(rep.floor_head, 3);
    assert_int_equal(rep.n_hdrs, 2);
    assert_int_equal(hdrs[0].lsn, 5);
    seg_chain_close(&f.c);
}

/* ---- recovery scenarios --------------------------------------------------------------- */

/* Three reports for pg with the given SCLs and, on the first, extra headers. */
static void rep3(quorum_report *out, uint32_t pg, uint64_t scl, const quorum_hdr *hdrs,
                 uint32_t n_hdrs, uint64_t floor_head, uint64_t floor_cpl)
{
    for (uint8_t s = 0; s < 3; s++) {
        out[s] = (quorum_report){.pg = pg,
                                 .seg = s,
                                 .epoch = 1,
                                 .scl = scl,
                                 .highest = scl,
                                 .floor_head = floor_head,
                                 .floor_cpl = floor_cpl};
    }
    out[0].hdrs = hdrs;
    out[0].n_hdrs = n_hdrs;
    if (n_hdrs) out[0].highest = hdrs[n_hdrs - 1].lsn;
}

/*
 * Two histories that per-PG SCLs cannot tell apart. In both, pg 0 holds lsn 1
 * and, above a gap, lsn 5; pg 1 is complete to 3.
 *  A: pg 0's lost record is 4, pg 1's 2..3 committed (old VDL 3): keep 3.
 *  B: pg 0's lost record is 2, pg 1's records are 3 and 4: keep only 1.
 */
static void recover_uses_the_volume_chain(void **state)
{
    quorum_report r[6];
    quorum_recovery out;
    /* A: lsn 1 pg0; 2, 3(cpl) pg1; 4 pg0 lost; 5 pg0 (prev 4). Floor = min SCL = 1. */
    quorum_hdr a1[] = {{.lsn = 5, .prev_lsn = 4, .vol_prev_lsn = 4, .epoch = 1}};
    quorum_hdr a2[] = {{.lsn = 2, .prev_lsn = 0, .vol_prev_lsn = 1, .epoch = 1},
                       {.lsn = 3, .prev_lsn = 2, .vol_prev_lsn = 2, .epoch = 1, .is_cpl = true}};
    rep3(r, 0, 1, a1, 1, 1, 0);
    rep3(r + 3, 1, 3, a2, 2, 0, 0);
    uint64_t floor = 0;
    assert_int_equal(quorum_recover_floor(2, r, 6, &floor, NULL), 0);
    assert_int_equal(floor, 1);
    assert_int_equal(quorum_recover(2, floor, r, 6, &out, NULL), 0);
    assert_int_equal(out.vcl, 3);
    assert_int_equal(out.vdl, 3);
    assert_int_equal(out.lost_max, 5);
    assert_int_equal(out.pg_head[0], 1);
    assert_int_equal(out.pg_head[1], 3);

    /* B: lsn 1 pg0; 2 pg0 lost; 3, 4(cpl) pg1; 5 pg0 (prev 2). */
    quorum_hdr b1[] = {{.lsn = 5, .prev_lsn = 2, .vol_prev_lsn = 4, .epoch = 1}};
    quorum_hdr b2[] = {{.lsn = 3, .prev_lsn = 0, .vol_prev_lsn = 2, .epoch = 1},
                       {.lsn = 4, .prev_lsn = 3, .vol_prev_lsn = 3, .epoch = 1, .is_cpl = true}};
    rep3(r, 0, 1, b1, 1, 1, 0);
    rep3(r + 3, 1, 4, b2, 2, 0, 0);
    assert_int_equal(quorum_recover(2, 1, r, 6, &out, NULL), 0);
    /* lsn 1 is no CPL: nothing complete at or above the floor; again at floor 0. */
    assert_true(out.again);
    assert_int_equal(out.vdl, 0);
    quorum_hdr b0[] = {{.lsn = 1, .prev_lsn = 0, .vol_prev_lsn = 0, .epoch = 1}};
    rep3(r, 0, 1, b0, 1, 0, 0);
    rep3(r + 3, 1, 4, b2, 2, 0, 0);
    assert_int_equal(quorum_recover(2, 0, r, 6, &out, NULL), 0);
    assert_false(out.again);
    assert_int_equal(out.vcl, 0); /* the half-shipped transaction of lsn 1 is discarded */
    assert_int_equal(out.vdl, 0);
    assert_int_equal(out.lost_max, 4);
    assert_int_equal(out.pg_head[0], 0);

    /* A chain ending in records without their CPL restarts at the last CPL. */
    quorum_hdr c2[] = {{.lsn = 2, .prev_lsn = 0, .vol_prev_lsn = 1, .epoch = 1},
                       {.lsn = 3, .prev_lsn = 2, .vol_prev_lsn = 2, .epoch = 1, .is_cpl = true},
                       {.lsn = 4, .prev_lsn = 3, .vol_prev_lsn = 3, .epoch = 1}};
    rep3(r, 0, 1, NULL, 0, 1, 1);
    rep3(r + 3, 1, 4, c2, 3, 0, 0);
    assert_int_equal(quorum_recover(2, 1, r, 6, &out, NULL), 0);
    assert_int_equal(out.vcl, 3);
    assert_int_equal(out.vdl, 3);
    assert_int_equal(out.lost_max, 4);
    assert_int_equal(out.pg_head[1], 3);
}

/*
 * A reported VDL raises the floor above an idle PG's SCL: pg 1's last record
 * (2) lies below the VDL 3, so the heads at 3 are known from floor_head.
 */
static void recover_floor_at_a_reported_vdl(void **state)
{
    quorum_report r[6];
    quorum_recovery out;
    quorum_hdr a1[] = {{.lsn = 4, .prev_lsn = 3, .vol_prev_lsn = 3, .epoch = 1, .is_cpl = true}};
    rep3(r, 0, 4, a1, 1, 3, 3);
    rep3(r + 3, 1, 2, NULL, 0, 2, 0);
    uint64_t floor = 0;
    assert_int_equal(quorum_recover_floor(2, r, 6, &floor, NULL), 0);
    assert_int_equal(floor, 2); /* no VDL reported: the lowest PG's SCL */
    r[4].vdl = 3;
    assert_int_equal(quorum_recover_floor(2, r, 6, &floor, NULL), 0);
    assert_int_equal(floor, 3);
    assert_int_equal(quorum_recover(2, floor, r, 6, &out, NULL), 0);
    assert_false(out.again);
    assert_int_equal(out.vcl, 4);
    assert_int_equal(out.pg_head[0], 4);
    assert_int_equal(out.pg_head[1], 2);
    /* Above both every SCL and every reported VDL, the floor is refused. */
    assert_int_equal(quorum_recover(2, 5, r, 6, &out, NULL), MRD_EINVAL);
}

static void recover_needs_a_read_quorum(void **state)
{
    quorum_report r[3];
    rep3(r, 0, 4, NULL, 0, 0, 0);
    r[2].seg = 1; /* two distinct segments only */
    uint64_t floor;
    mrd_msg msg;
    assert_int_equal(quorum_recover_floor(1, r, 3, &floor, &msg), MRD_EBUSY);
    assert_non_null(strstr(msg.text, "pg 0 has 2 of 6"));
}

/* A recovered writer keeps VDL at 0 until 4 segments of every PG reach its head. */
static void writer_after_recovery_waits_for_heads(void **state)
{
    quorum_recovery rec = {.vcl = 5, .vdl = 4, .pg_count = 2, .pg_head = {5, 4}};
    qw_config cfg = {.pg_count = 2,
                     .write_quorum = QUORUM_WRITE,
                     .inflight_max = 4,
                     .retain_max = 4,
                     .waiters_max = 1,
                     .resend_ms = 10,
                     .epoch = 2,
                     .recovered = &rec};
    wfix f;
    memset(&f, 0, sizeof(f));
    f.sink = (quorum_sink){tr_action, &f.t};
    assert_int_equal(qw_init(&f.w, &cfg, NULL), 0);
    assert_int_equal(qw_last_lsn(&f.w), 5);
    qw_event ev = {.kind = QW_EV_ACK};
    ev.ack.epoch = 2;
    ev.ack.pg = 1;
    ev.ack.scl = 4;
    for (ev.ack.seg = 0; ev.ack.seg < 4; ev.ack.seg++)
        assert_int_equal(qw_step(&f.w, &ev, f.sink), 0);
    /* pg 1's head alone proves nothing about pg 0's records below lsn 4 */
    assert_string_equal(tr_take(&f.t), "");
    ev.ack.pg = 0;
    ev.ack.scl = 5;
    for (ev.ack.seg = 2; ev.ack.seg < 6; ev.ack.seg++)
        assert_int_equal(qw_step(&f.w, &ev, f.sink), 0);
    assert_string_equal(tr_take(&f.t), "VCL 5\nVDL 4\n");
    ev.kind = QW_EV_SUBMIT;
    ev.rec = (quorum_rec){.lsn = 9, .prev_lsn = 5, .vol_prev_lsn = 5, .pg = 0, .epoch = 2};
    assert_int_equal(qw_step(&f.w, &ev, f.sink), 0);
    qw_close(&f.w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writer_vdl_needs_four_segments),
        cmocka_unit_test(writer_vcl_waits_for_every_pg),
        cmocka_unit_test(writer_vdl_is_highest_cpl),
        cmocka_unit_test(writer_listed_ack_above_gap_counts),
        cmocka_unit_test(writer_waiters_fire_in_order),
        cmocka_unit_test(writer_refuses_beyond_inflight_max),
        cmocka_unit_test(writer_refuses_bad_input),
        cmocka_unit_test(writer_resends_what_a_segment_lacks),
        cmocka_unit_test(writer_fenced_by_higher_epoch),
        cmocka_unit_test(writer_picks_a_complete_segment_for_reads),
        cmocka_unit_test(chain_in_order),
        cmocka_unit_test(chain_holds_records_above_a_gap),
        cmocka_unit_test(chain_answers_gap_requests),
        cmocka_unit_test(chain_forgets_below_scl),
        cmocka_unit_test(chain_fences_stale_epochs),
        cmocka_unit_test(chain_reloads_durable_records),
        cmocka_unit_test(recover_uses_the_volume_chain),
        cmocka_unit_test(recover_floor_at_a_reported_vdl),
        cmocka_unit_test(recover_needs_a_read_quorum),
        cmocka_unit_test(writer_after_recovery_waits_for_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
