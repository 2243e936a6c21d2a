/*
 * The storage node's I/O-free parts: one PG's segment (stp_*: chain, record
 * index, persist-to-log-key mapping, materialization plan), fences, the
 * parsers of external bytes, page slots and page arithmetic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/storage.h"

#define PAGE_SIZE 512u
#define PAGES_PER_PG 16u

/* ---- helpers ------------------------------------------------------------------------------ */

static uint8_t delta_data[8] = {1, 2, 3, 4, 5, 6, 7, 8};

static wire_record mkwire(uint64_t lsn, uint64_t prev, uint64_t epoch, uint64_t page)
{
    wire_record r;
    memset(&r, 0, sizeof(r));
    r.lsn = lsn;
    r.prev_lsn = prev;
    r.vol_prev_lsn = prev;
    r.epoch = epoch;
    r.pg = 0;
    r.page = page;
    r.flags = WIRE_REC_CPL;
    r.delta_count = 1;
    r.deltas[0] = (wire_delta){.offset = (uint32_t)(lsn % 60) * 8, .len = 8, .data = delta_data};
    return r;
}

/* A segment fixture: records go in encoded, as the glue hands them over. */
typedef struct {
    stp p;
    uint64_t key_next;
    mrd_buf enc;
} fix;

static void fix_init(fix *f, uint64_t materialized, const quorum_fence *fences, uint32_t n,
                     uint32_t held_max)
{
    stp_config cfg = {.pg = 0,
                      .seg = 2,
                      .held_max = held_max,
                      .gap_retry_ms = 100,
                      .epoch = n ? fences[n - 1].epoch : 1,
                      .fences = fences,
                      .n_fences = n,
                      .materialized = materialized};
    mrd_msg msg;
    assert_int_equal(stp_init(&f->p, &cfg, &msg), 0);
    f->key_next = 1;
    mrd_buf_init(&f->enc);
}

static void fix_close(fix *f)
{
    stp_close(&f->p);
    mrd_buf_free(&f->enc);
}

static void encode(fix *f, const wire_record *w)
{
    f->enc.len = 0;
    assert_int_equal(wire_record_encode(w, &f->enc, NULL), 0);
}

/* Receives record lsn (back-link prev) of epoch 1 on page 3; returns the rc. */
static int rx(fix *f, uint64_t lsn, uint64_t prev, uint64_t *new_key, uint64_t *wait_key)
{
    wire_record w = mkwire(lsn, prev, 1, 3);
    quorum_rec q;
    encode(f, &w);
    storage_qrec(&w, &q);
    int rc = stp_receive(&f->p, &q, w.page, f->enc.data, f->enc.len, f->key_next, new_key,
                         wait_key);
    if (rc == 0 && *new_key != 0) f->key_next++;
    return rc;
}

static void rx_ok(fix *f, uint64_t lsn, uint64_t prev)
{
    uint64_t nk, wk;
    assert_int_equal(rx(f, lsn, prev, &nk, &wk), 0);
}

/* ---- stp: receive, sync, SCL ------------------------------------------------------------- */

static void segment_acks_only_what_is_synced(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 64);
    uint64_t nk, wk;
    assert_int_equal(rx(&f, 1, 0, &nk, &wk), 0);
    assert_int_equal(nk, 1);
    assert_int_equal(wk, 1);
    assert_int_equal(rx(&f, 2, 1, &nk, &wk), 0);
    assert_int_equal(nk, 2);
    assert_int_equal(stp_scl(&f.p), 0); /* nothing durable yet */
    assert_int_equal(stp_lsn_durable(&f.p), 0);
    /* A duplicate of a record waiting for its fdatasync waits for the same key. */
    assert_int_equal(rx(&f, 1, 0, &nk, &wk), 0);
    assert_int_equal(nk, 0);
    assert_int_equal(wk, 1);
    stp_synced(&f.p, 1);
    assert_int_equal(stp_scl(&f.p), 1);
    assert_int_equal(stp_lsn_durable(&f.p), 1);
    stp_synced(&f.p, 2);
    assert_int_equal(stp_scl(&f.p), 2);
    /* A duplicate of a durable record waits for nothing. */
    assert_int_equal(rx(&f, 2, 1, &nk, &wk), 0);
    assert_int_equal(nk, 0);
    assert_int_equal(wk, 0);
    assert_int_equal(stp_records(&f.p), 2);
    fix_close(&f);
}

static void segment_asks_peers_for_gaps(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 64);
    rx_ok(&f, 1, 0);
    rx_ok(&f, 5, 3); /* 2 and 3 missing */
    stp_synced(&f.p, 2);
    assert_int_equal(stp_scl(&f.p), 1);
    stp_gap gaps[9];
    uint32_t n = stp_tick(&f.p, 1000, gaps, 9);
    assert_int_equal(n, 2);
    assert_int_equal(gaps[0].after, 1);
    assert_int_equal(gaps[0].upto, 3);
    assert_int_equal(gaps[1].after, 5);
    assert_int_equal(gaps[1].upto, QUORUM_LSN_MAX);
    assert_int_equal(stp_tick(&f.p, 1050, gaps, 9), 0); /* gap_retry_ms not over */
    /* A peer's answer arrives out of order; SCL moves once it is durable. */
    rx_ok(&f, 3, 2);
    rx_ok(&f, 2, 1);
    assert_int_equal(stp_scl(&f.p), 1);
    stp_synced(&f.p, 4);
    assert_int_equal(stp_scl(&f.p), 5);
    fix_close(&f);
}

static void segment_serves_only_durable_records(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 64);
    for (uint64_t lsn = 1; lsn <= 4; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    stp_synced(&f.p, 2);
    const stp_rec *out[QUORUM_SERVE_MAX];
    stp_gap old;
    uint32_t n = stp_serve(&f.p, 0, QUORUM_LSN_MAX, out, QUORUM_SERVE_MAX, &old);
    assert_int_equal(n, 2);
    assert_int_equal(out[0]->lsn, 1);
    assert_int_equal(out[1]->lsn, 2);
    assert_non_null(out[1]->payload);
    n = stp_serve(&f.p, 1, 1, out, QUORUM_SERVE_MAX, &old); /* an empty range */
    assert_int_equal(n, 0);
    stp_synced(&f.p, 4);
    n = stp_serve(&f.p, 2, 3, out, QUORUM_SERVE_MAX, &old);
    assert_int_equal(n, 1);
    assert_int_equal(out[0]->lsn, 3);
    fix_close(&f);
}

/* Materialized, complete records at or below the VDL leave memory; the log serves them. */
static void segment_forgets_materialized_records(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 8);
    for (uint64_t lsn = 1; lsn <= 6; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    stp_synced(&f.p, 6);
    assert_int_equal(stp_forget(&f.p, 100), 0); /* nothing materialized yet */
    stp_materialized(&f.p, 4);
    assert_int_equal(stp_forget(&f.p, 3), 3); /* the VDL bounds it */
    assert_int_equal(stp_forget(&f.p, 100), 1); /* then the materialized LSN */
    assert_int_equal(stp_base(&f.p), 4);
    assert_int_equal(stp_records(&f.p), 2);
    assert_null(stp_find(&f.p, 4));
    /* Room again: more fit beside the two held. */
    for (uint64_t lsn = 7; lsn <= 11; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    uint64_t nk, wk;
    assert_int_equal(rx(&f, 2, 1, &nk, &wk), 0); /* a duplicate of a forgotten record */
    assert_int_equal(nk, 0);
    assert_int_equal(wk, 0);
    /* Peers asking below the base are sent to the log, with the keys to scan. */
    const stp_rec *out[QUORUM_SERVE_MAX];
    stp_gap old;
    assert_int_equal(stp_serve(&f.p, 1, 5, out, QUORUM_SERVE_MAX, &old), 0);
    assert_int_equal(old.after, 1);
    assert_int_equal(old.upto, 4);
    uint64_t kmin, kmax;
    assert_true(stp_old_keys(&f.p, 1, 4, &kmin, &kmax)); /* both forgotten ranges */
    assert_int_equal(kmin, 1);
    assert_int_equal(kmax, 4);
    assert_true(stp_old_keys(&f.p, 0, 2, &kmin, &kmax)); /* the first: lsns 1..3, keys 1..3 */
    assert_int_equal(kmin, 1);
    assert_int_equal(kmax, 3);
    assert_true(stp_old_keys(&f.p, 3, 4, &kmin, &kmax));
    assert_int_equal(kmin, 4);
    assert_int_equal(kmax, 4);
    assert_false(stp_old_keys(&f.p, 4, 9, &kmin, &kmax));
    assert_int_equal(stp_serve(&f.p, 4, 5, out, QUORUM_SERVE_MAX, &old), 1);
    assert_int_equal(old.after, old.upto);
    fix_close(&f);
}

static void segment_refuses_beyond_its_limit(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 3);
    uint64_t nk, wk;
    for (uint64_t lsn = 1; lsn <= 3; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    assert_int_equal(rx(&f, 4, 3, &nk, &wk), MRD_EBUSY);
    assert_int_equal(stp_records(&f.p), 3);
    /* A record whose back-link contradicts what is complete belongs to no chain. */
    stp_synced(&f.p, 3);
    fix_close(&f);
    fix_init(&f, 0, NULL, 0, 8);
    rx_ok(&f, 1, 0);
    rx_ok(&f, 3, 1);
    stp_synced(&f.p, 2);
    assert_int_equal(rx(&f, 2, 1, &nk, &wk), MRD_EINVAL); /* below SCL 3, not held */
    fix_close(&f);
}

/* ---- stp: fences --------------------------------------------------------------------------- */

static void fence_drops_voided_records_from_the_index(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 64);
    for (uint64_t lsn = 1; lsn <= 6; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    stp_synced(&f.p, 6);
    assert_int_equal(stp_scl(&f.p), 6);
    bool voided;
    stp_fence(&f.p, (quorum_fence){.epoch = 2, .truncate_lsn = 4}, &voided);
    assert_false(voided);
    assert_int_equal(stp_epoch(&f.p), 2);
    assert_int_equal(stp_records(&f.p), 4);
    assert_null(stp_find(&f.p, 5));
    assert_int_equal(stp_scl(&f.p), 4);
    assert_int_equal(stp_lsn_durable(&f.p), 4);
    /* The old writer's records above the truncation point stay refused. */
    uint64_t nk, wk;
    assert_int_equal(rx(&f, 5, 4, &nk, &wk), MRD_ESTALE);
    /* A fence that voids materialized records says so. */
    stp_materialized(&f.p, 4);
    stp_fence(&f.p, (quorum_fence){.epoch = 3, .truncate_lsn = 2}, &voided);
    assert_true(voided);
    assert_int_equal(stp_records(&f.p), 2);
    fix_close(&f);
}

static void load_replays_the_log_under_the_fences(void **state)
{
    quorum_fence fences[] = {{.epoch = 2, .truncate_lsn = 2}};
    fix f;
    fix_init(&f, 1, fences, 1, 64);
    for (uint64_t lsn = 1; lsn <= 3; lsn++) {
        wire_record w = mkwire(lsn, lsn - 1, 1, 3);
        quorum_rec q;
        encode(&f, &w);
        storage_qrec(&w, &q);
        int rc = stp_load(&f.p, &q, w.page, 10 + lsn, f.enc.data, f.enc.len);
        assert_int_equal(rc, lsn == 3 ? MRD_ESTALE : 0);
    }
    assert_int_equal(stp_scl(&f.p), 2);
    assert_int_equal(stp_lsn_durable(&f.p), 2);
    assert_null(stp_find(&f.p, 1)->payload); /* at or below materialized: in the page file */
    assert_non_null(stp_find(&f.p, 2)->payload);
    assert_int_equal(stp_find(&f.p, 2)->key, 12);
    assert_int_equal(f.p.payload_bytes, stp_find(&f.p, 2)->len);
    fix_close(&f);
}

/* Started at a recorded forget point: what the log still holds below it is noted, not held. */
static void load_starts_at_the_forget_point(void **state)
{
    stp_config cfg = {.pg = 0,
                      .seg = 2,
                      .held_max = 64,
                      .gap_retry_ms = 100,
                      .epoch = 1,
                      .materialized = 4,
                      .base = 4,
                      .base_cpl = 2,
                      .base_key_max = 3};
    fix f;
    mrd_msg msg;
    assert_int_equal(stp_init(&f.p, &cfg, &msg), 0);
    f.key_next = 1;
    mrd_buf_init(&f.enc);
    assert_int_equal(stp_base(&f.p), 4);
    assert_int_equal(stp_scl(&f.p), 4);
    uint64_t lsns[] = {3, 5}, keys[] = {9, 10};
    for (int i = 0; i < 2; i++) {
        wire_record w = mkwire(lsns[i], lsns[i] - 1, 1, 3);
        quorum_rec q;
        encode(&f, &w);
        storage_qrec(&w, &q);
        assert_int_equal(stp_load(&f.p, &q, w.page, keys[i], f.enc.data, f.enc.len), 0);
    }
    assert_null(stp_find(&f.p, 3)); /* gap-filled late, above the key start: noted */
    assert_int_equal(stp_records(&f.p), 1);
    assert_int_equal(stp_scl(&f.p), 5);
    assert_int_equal(stp_key_min(&f.p), 10);
    const stp_rec *out[QUORUM_SERVE_MAX];
    stp_gap old;
    assert_int_equal(stp_serve(&f.p, 0, 9, out, QUORUM_SERVE_MAX, &old), 0);
    assert_int_equal(old.upto, 4);
    uint64_t kmin, kmax;
    assert_true(stp_old_keys(&f.p, 0, 4, &kmin, &kmax));
    assert_int_equal(kmin, 1);
    assert_int_equal(kmax, 9);
    quorum_report r;
    quorum_hdr hdrs[4];
    assert_int_equal(seg_chain_report(&f.p.chain, 4, &r, hdrs, 4), 0);
    assert_int_equal(r.floor_head, 4);
    assert_int_equal(r.floor_cpl, 2);
    cfg.base = 5; /* above the materialized LSN: refused */
    stp pbad;
    assert_int_equal(stp_init(&pbad, &cfg, &msg), MRD_EINVAL);
    fix_close(&f);
}

/* ---- stp: materialization and page reads --------------------------------------------------- */

static void materialization_plans_and_forgets_payloads(void **state)
{
    fix f;
    fix_init(&f, 0, NULL, 0, 64);
    for (uint64_t lsn = 1; lsn <= 10; lsn++)
        rx_ok(&f, lsn, lsn - 1);
    stp_synced(&f.p, 8);
    const stp_rec *plan[16];
    uint64_t upto;
    /* Bounded by the target (a VDL) and the SCL, and by the limits. */
    assert_int_equal(stp_materialize_plan(&f.p, 5, 16, 1 << 20, plan, &upto), 5);
    assert_int_equal(upto, 5);
    assert_int_equal(stp_materialize_plan(&f.p, 100, 16, 1 << 20, plan, &upto), 8);
    assert_int_equal(upto, 8);
    assert_int_equal(stp_materialize_plan(&f.p, 100, 3, 1 << 20, plan, &upto), 3);
    assert_int_equal(upto, 3);
    assert_int_equal(stp_materialize_plan(&f.p, 100, 16, 1, plan, &upto), 1); /* at least one */
    stp_materialized(&f.p, 3);
    assert_null(stp_find(&f.p, 3)->payload);
    assert_non_null(stp_find(&f.p, 4)->payload);
    assert_int_equal(stp_materialize_plan(&f.p, 100, 16, 1 << 20, plan, &upto), 5);
    assert_int_equal(plan[0]->lsn, 4);
    /* A page read from a base older than the materialized records cannot be served. */
    const stp_rec *recs[4];
    uint32_t n;
    assert_int_equal(stp_page_recs(&f.p, 3, 0, 8, recs, 4, &n), MRD_ENOTFOUND);
    assert_int_equal(stp_page_recs(&f.p, 3, 3, 8, recs, 4, &n), MRD_ETOOBIG);
    assert_int_equal(n, 4);
    const stp_rec *all[8];
    assert_int_equal(stp_page_recs(&f.p, 3, 3, 8, all, 8, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(all[4]->lsn, 8);
    assert_int_equal(stp_page_recs(&f.p, 4, 3, 8, all, 8, &n), 0); /* another page */
    assert_int_equal(n, 0);
    fix_close(&f);
}

/* ---- fences list --------------------------------------------------------------------------- */

static void fences_list_keeps_order_and_the_stricter_limit(void **state)
{
    quorum_fence fs[QUORUM_FENCES_MAX];
    uint32_t n = 0;
    assert_true(storage_fences_add(fs, &n, (quorum_fence){5, 100}));
    assert_true(storage_fences_add(fs, &n, (quorum_fence){3, 50}));
    assert_false(storage_fences_add(fs, &n, (quorum_fence){5, 200})); /* idempotent-ish */
    assert_true(storage_fences_add(fs, &n, (quorum_fence){5, 80}));
    assert_int_equal(n, 2);
    assert_int_equal(fs[0].epoch, 3);
    assert_int_equal(fs[1].truncate_lsn, 80);
    for (uint64_t e = 10; e < 10 + QUORUM_FENCES_MAX; e++)
        storage_fences_add(fs, &n, (quorum_fence){e, 1000 + e});
    assert_int_equal(n, QUORUM_FENCES_MAX);
    assert_int_equal(fs[0].epoch, 10); /* 3 and 5 merged, then merged into 10 */
    assert_int_equal(fs[0].truncate_lsn, 50);
    for (uint32_t i = 1; i < n; i++)
        assert_true(fs[i].epoch > fs[i - 1].epoch);
}

/* ---- parsers -------------------------------------------------------------------------------- */

static void u64_values_are_strict(void **state)
{
    uint64_t v;
    assert_int_equal(storage_u64_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(storage_u64_parse("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    const char *bad[] = {"", "-1", "+1", "01", "1 ", " 1", "18446744073709551616", "1e3", "0x10",
                         "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(storage_u64_parse(bad[i], &v), MRD_EPARSE);
    assert_int_equal(storage_u64_parse(NULL, &v), MRD_EPARSE);
}

static void queries_are_parsed_and_refused_by_name(void **state)
{
    storage_query q;
    mrd_msg msg;
    unsigned page = 1u << STQ_PAGE | 1u << STQ_LSN | 1u << STQ_NEED;
    assert_int_equal(storage_query_parse("/v1/page?page=3&lsn=9", page, &q, &msg), 0);
    assert_true(q.has[STQ_PAGE] && q.has[STQ_LSN] && !q.has[STQ_NEED]);
    assert_int_equal(q.value[STQ_LSN], 9);
    assert_int_equal(storage_query_parse("/v1/page", page, &q, &msg), 0);
    assert_false(q.has[STQ_PAGE]);
    assert_int_equal(storage_query_parse("/v1/page?", page, &q, &msg), 0);
    struct {
        const char *path, *says;
    } bad[] = {
        {"/v1/page?page=3&page=4", "given twice"},
        {"/v1/page?pg=3", "unknown key 'pg'"},
        {"/v1/page?bogus=1", "unknown key"},
        {"/v1/page?page", "not key=value"},
        {"/v1/page?page=", "not a decimal"},
        {"/v1/page?page=-1", "not a decimal"},
        {"/v1/page?page=1&", "ends with '&'"},
        {"/v1/page?&page=1", "not key=value"},
        {"/v1/page?page=1&&lsn=2", "not key=value"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(storage_query_parse(bad[i].path, page, &q, &msg), MRD_EPARSE);
        if (strstr(msg.text, bad[i].says) == NULL) fail_msg("%s: %s", bad[i].path, msg.text);
    }
    char long_path[STORAGE_QUERY_BYTES_MAX + 16];
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    assert_int_equal(storage_query_parse(long_path, page, &q, &msg), MRD_EPARSE);
}

static void bodies_are_one_frame_of_one_batch(void **state)
{
    mrd_buf b;
    mrd_buf_init(&b);
    size_t at;
    wire_batch_builder bb;
    wire_record r = mkwire(7, 0, 1, 3);
    assert_int_equal(wire_frame_begin(&b, &at), 0);
    assert_int_equal(wire_batch_begin(&bb, &b, WIRE_BATCH_LOG), 0);
    assert_int_equal(wire_batch_add(&bb, &r, NULL), 0);
    assert_int_equal(wire_batch_finish(&bb, NULL), 0);
    assert_int_equal(wire_frame_end(&b, at, NULL), 0);
    wire_batch batch;
    mrd_msg msg;
    assert_int_equal(storage_body_batch(b.data, b.len, &batch, &msg), 0);
    assert_int_equal(batch.count, 1);
    assert_int_equal(batch.lsn_first, 7);
    assert_int_equal(storage_body_batch(b.data, 0, &batch, &msg), MRD_ENOTFOUND);
    for (size_t cut = 1; cut < b.len; cut++)
        assert_int_not_equal(storage_body_batch(b.data, cut, &batch, &msg), 0);
    mrd_buf_append(&b, "x", 1);
    assert_int_equal(storage_body_batch(b.data, b.len, &batch, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "after the frame"));
    b.len--;
    b.data[b.len - 1] ^= 1;
    assert_int_equal(storage_body_batch(b.data, b.len, &batch, &msg), MRD_ECRC);
    mrd_buf_free(&b);
}

static void records_must_fit_their_pg_and_page(void **state)
{
    mrd_msg msg;
    wire_record r = mkwire(7, 0, 1, 3);
    assert_int_equal(storage_record_fits(&r, 0, PAGES_PER_PG, PAGE_SIZE, &msg), 0);
    assert_int_equal(storage_record_fits(&r, 1, PAGES_PER_PG, PAGE_SIZE, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "pg 0, expected 1"));
    r.page = PAGES_PER_PG;
    assert_int_equal(storage_record_fits(&r, 0, PAGES_PER_PG, PAGE_SIZE, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "is not in pg 0"));
    r = mkwire(7, 0, 1, 3);
    r.deltas[0].offset = PAGE_SIZE - 4;
    assert_int_equal(storage_record_fits(&r, 0, PAGES_PER_PG, PAGE_SIZE, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "past the page size"));
    static uint8_t img[1024];
    r = mkwire(7, 0, 1, 3);
    r.flags |= WIRE_REC_FULL;
    r.deltas[0] = (wire_delta){.offset = 0, .len = 1024, .data = img};
    assert_int_equal(storage_record_fits(&r, 0, PAGES_PER_PG, 1024, &msg), 0);
    assert_int_equal(storage_record_fits(&r, 0, PAGES_PER_PG, 2048, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "full image"));
}

/* ---- reset ---------------------------------------------------------------------------------- */

static void reset_deletes_only_what_storage_writes(void **state)
{
    static const char *const data[] = {"meta", "meta.tmp", "RESET.tmp"};
    static const char *const dirs[] = {"seglog", "pages"};
    static const char *const keep[] = {"LOCK",        "meridiand.pid", "meridiand.pid.tmp",
                                       "meridiand.log", "RESET",       "saved-records",
                                       "meta.bak",    "seglog.old",    "Meta",
                                       "pages2",      "",              "."};
    for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
        assert_int_equal(storage_file_classify(data[i]), STORAGE_FILE_DATA);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        assert_int_equal(storage_file_classify(dirs[i]), STORAGE_FILE_DATA_DIR);
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (storage_file_classify(keep[i]) != STORAGE_FILE_KEEP) fail_msg("deletes '%s'", keep[i]);
    /* the names the node's paths are built from */
    assert_int_equal(storage_file_classify(STORAGE_META_FILE), STORAGE_FILE_DATA);
    assert_int_equal(storage_file_classify(STORAGE_LOG_DIR), STORAGE_FILE_DATA_DIR);
    assert_int_equal(storage_file_classify(STORAGE_PAGES_DIR), STORAGE_FILE_DATA_DIR);
    assert_int_equal(storage_file_classify(STORAGE_RESET_FILE), STORAGE_FILE_KEEP);
}

static int reset_parse(const char *body, mrd_msg *msg)
{
    return storage_reset_parse((const uint8_t *)body, strlen(body), "r1-s1", msg);
}

static void reset_body_names_this_node(void **state)
{
    mrd_msg msg;
    assert_int_equal(reset_parse("{\"node\":\"r1-s1\"}", &msg), 0);
    assert_int_equal(reset_parse(" { \"node\" : \"r1-s1\" }\n", &msg), 0);
    assert_int_equal(reset_parse("{\"node\":\"r1-\\u0073\\u0031\"}", &msg), 0); /* escapes */
    struct {
        const char *body;
        int rc;
        const char *says;
    } bad[] = {
        {"", MRD_EPARSE, "body: empty"},
        {"r1-s1", MRD_EPARSE, "not JSON"},
        {"{\"node\":\"r1-s1\"", MRD_EPARSE, "not JSON"},
        {"{\"node\":\"r1-s1\"} x", MRD_EPARSE, "not JSON"},
        {"\"r1-s1\"", MRD_EPARSE, "JSON string, expected an object"},
        {"[\"r1-s1\"]", MRD_EPARSE, "JSON array, expected an object"},
        {"null", MRD_EPARSE, "JSON null, expected an object"},
        {"{}", MRD_EPARSE, "node: missing"},
        {"{\"id\":\"r1-s1\"}", MRD_EPARSE, "unknown member 'id'"},
        {"{\"node\":\"r1-s1\",\"force\":true}", MRD_EPARSE, "unknown member 'force'"},
        {"{\"node\":\"r1-s1\",\"node\":\"r1-s1\"}", MRD_EPARSE, "not JSON"}, /* duplicate */
        {"{\"node\":1}", MRD_EPARSE, "node: JSON number, expected a string"},
        {"{\"node\":null}", MRD_EPARSE, "node: JSON null"},
        {"{\"node\":[\"r1-s1\"]}", MRD_EPARSE, "node: JSON array"},
        {"{\"node\":\"r1-s2\"}", MRD_EINVAL, "node: 'r1-s2' is not this node (r1-s1)"},
        {"{\"node\":\"\"}", MRD_EINVAL, "node: '' is not this node"},
        {"{\"node\":\"r1-s1 \"}", MRD_EINVAL, "is not this node"},
        {"{\"node\":\"R1-S1\"}", MRD_EINVAL, "is not this node"},
        {"{\"node\":\"r1-s\"}", MRD_EINVAL, "is not this node"},
        {"{\"node\":\"r1-s1\\u0000\"}", MRD_EINVAL, "is not this node"}, /* a NUL inside */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg.text[0] = '\0';
        int rc = reset_parse(bad[i].body, &msg);
        if (rc != bad[i].rc || strstr(msg.text, bad[i].says) == NULL)
            fail_msg("%s: rc %d, message '%s'", bad[i].body, rc, msg.text);
    }
    /* the size limit, checked before any parsing */
    char big[STORAGE_RESET_BODY_BYTES_MAX + 2];
    int n = snprintf(big, sizeof(big), "{\"node\":\"r1-s1\"}");
    memset(big + n, ' ', sizeof(big) - 1 - (size_t)n);
    big[sizeof(big) - 1] = '\0';
    const uint8_t *b = (const uint8_t *)big;
    assert_int_equal(storage_reset_parse(b, STORAGE_RESET_BODY_BYTES_MAX, "r1-s1", &msg), 0);
    assert_int_equal(storage_reset_parse(b, STORAGE_RESET_BODY_BYTES_MAX + 1, "r1-s1", &msg),
                     MRD_EPARSE);
    assert_non_null(strstr(msg.text, "limit"));
}

/* ---- slots and page arithmetic --------------------------------------------------------------- */

static void slots_verify_or_say_why(void **state)
{
    uint8_t page[PAGE_SIZE], slot[STORAGE_SLOT_BYTES(PAGE_SIZE)];
    for (uint32_t i = 0; i < PAGE_SIZE; i++)
        page[i] = (uint8_t)(i * 3);
    uint64_t lsn;
    const uint8_t *got;
    mrd_msg msg;
    memset(slot, 0, sizeof(slot));
    assert_int_equal(storage_slot_decode(slot, PAGE_SIZE, &lsn, &got, &msg), 0); /* empty */
    storage_slot_encode(slot, PAGE_SIZE, 42, page);
    assert_int_equal(storage_slot_decode(slot, PAGE_SIZE, &lsn, &got, &msg), 1);
    assert_int_equal(lsn, 42);
    assert_memory_equal(got, page, PAGE_SIZE);
    assert_int_equal(storage_slot_decode(slot, PAGE_SIZE * 2, &lsn, &got, &msg), MRD_EPARSE);
    for (size_t at = 0; at < sizeof(slot); at += 7) {
        if (at >= 12 && at < 16) continue; /* the page size field: MRD_EPARSE, checked above */
        slot[at] ^= 0x10;
        int rc = storage_slot_decode(slot, PAGE_SIZE, &lsn, &got, &msg);
        assert_true(rc == MRD_ECRC || (at < 8 && rc == 0 && lsn == 0));
        slot[at] ^= 0x10;
    }
}

static void pages_apply_records_above_their_version(void **state)
{
    mrd_buf enc[3];
    storage_page_rec recs[3];
    for (int i = 0; i < 3; i++) {
        mrd_buf_init(&enc[i]);
        wire_record w = mkwire(10 + (uint64_t)i, 0, 1, 3);
        assert_int_equal(wire_record_encode(&w, &enc[i], NULL), 0);
        recs[i] = (storage_page_rec){10 + (uint64_t)i, enc[i].data, (uint32_t)enc[i].len};
    }
    uint8_t page[PAGE_SIZE] = {0};
    uint64_t lsn = 10; /* the base already holds record 10 */
    mrd_msg msg;
    assert_int_equal(storage_page_apply(page, PAGE_SIZE, &lsn, recs, 3, &msg), 0);
    assert_int_equal(lsn, 12);
    assert_int_equal(page[(10 % 60) * 8], 0); /* record 10 not applied again */
    assert_memory_equal(page + (11 % 60) * 8, delta_data, 8);
    assert_memory_equal(page + (12 % 60) * 8, delta_data, 8);
    recs[2].len = 3; /* a damaged payload */
    lsn = 11;
    assert_int_not_equal(storage_page_apply(page, PAGE_SIZE, &lsn, recs, 3, &msg), 0);
    assert_non_null(strstr(msg.text, "record 12"));
    recs[1].lsn = 99; /* a payload that is another record */
    lsn = 10;
    assert_int_equal(storage_page_apply(page, PAGE_SIZE, &lsn, recs, 2, &msg), MRD_EPARSE);
    for (int i = 0; i < 3; i++)
        mrd_buf_free(&enc[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(segment_acks_only_what_is_synced),
        cmocka_unit_test(segment_asks_peers_for_gaps),
        cmocka_unit_test(segment_serves_only_durable_records),
        cmocka_unit_test(segment_forgets_materialized_records),
        cmocka_unit_test(segment_refuses_beyond_its_limit),
        cmocka_unit_test(fence_drops_voided_records_from_the_index),
        cmocka_unit_test(load_replays_the_log_under_the_fences),
        cmocka_unit_test(load_starts_at_the_forget_point),
        cmocka_unit_test(materialization_plans_and_forgets_payloads),
        cmocka_unit_test(fences_list_keeps_order_and_the_stricter_limit),
        cmocka_unit_test(u64_values_are_strict),
        cmocka_unit_test(queries_are_parsed_and_refused_by_name),
        cmocka_unit_test(bodies_are_one_frame_of_one_batch),
        cmocka_unit_test(records_must_fit_their_pg_and_page),
        cmocka_unit_test(reset_deletes_only_what_storage_writes),
        cmocka_unit_test(reset_body_names_this_node),
        cmocka_unit_test(slots_verify_or_say_why),
        cmocka_unit_test(pages_apply_records_above_their_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
