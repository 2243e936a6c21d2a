/*
 * The volume client's I/O-free parts: answer classification, header numbers,
 * backoff, the send batcher, the record store, the page cache (against a
 * simple model under random operations), report decoding and the PG count
 * of a recovery.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"

static void answers_are_classified(void **state)
{
    char code[64];
    const char *stale = "{\"error\":{\"code\":\"stale_epoch\",\"message\":\"epoch 3 < 4\"}}";
    assert_int_equal(vol_answer_classify(200, NULL, 0, code, sizeof(code)), VOL_ANS_OK);
    assert_int_equal(
        vol_answer_classify(409, (const uint8_t *)stale, strlen(stale), code, sizeof(code)),
        VOL_ANS_STALE);
    assert_string_equal(code, "stale_epoch");
    const char *fence = "{\"error\":{\"code\":\"fence_required\",\"message\":\"x\"}}";
    assert_int_equal(
        vol_answer_classify(409, (const uint8_t *)fence, strlen(fence), code, sizeof(code)),
        VOL_ANS_FENCE);
    const char *inc = "{\"error\":{\"code\":\"incomplete\",\"message\":\"scl 4 < 9\"}}";
    assert_int_equal(vol_answer_classify(409, (const uint8_t *)inc, strlen(inc), NULL, 0),
                     VOL_ANS_INCOMPLETE);
    const char *lf = "{\"error\":{\"code\":\"log_failed\",\"message\":\"x\"}}";
    assert_int_equal(vol_answer_classify(503, (const uint8_t *)lf, strlen(lf), code, sizeof(code)),
                     VOL_ANS_LOG_FAILED);
    const char *busy = "{\"error\":{\"code\":\"busy\",\"message\":\"x\"}}";
    assert_int_equal(
        vol_answer_classify(503, (const uint8_t *)busy, strlen(busy), code, sizeof(code)),
        VOL_ANS_RETRY);
    assert_int_equal(vol_answer_classify(410, NULL, 0, code, sizeof(code)), VOL_ANS_GONE);
    assert_int_equal(vol_answer_classify(400, (const uint8_t *)"nonsense", 8, code, sizeof(code)),
                     VOL_ANS_BAD);
    assert_string_equal(code, "");
    /* a 409 with an unknown code is not taken for one we know */
    const char *odd = "{\"error\":{\"code\":\"stale\",\"message\":\"x\"}}";
    assert_int_equal(
        vol_answer_classify(409, (const uint8_t *)odd, strlen(odd), code, sizeof(code)),
        VOL_ANS_BAD);
    assert_string_equal(vol_answer_name(VOL_ANS_INCOMPLETE), "incomplete");
}

static void numbers_and_backoff(void **state)
{
    uint64_t v = 7;
    assert_int_equal(vol_parse_u64("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(vol_parse_u64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(vol_parse_u64("18446744073709551616", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64("", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64("-1", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64(" 1", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64("01", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64("12a", &v), MRD_EPARSE);
    assert_int_equal(vol_parse_u64(NULL, &v), MRD_EPARSE);
    assert_int_equal(vol_backoff_ms(0), VOL_BACKOFF_MS_MIN);
    assert_int_equal(vol_backoff_ms(1), 2 * VOL_BACKOFF_MS_MIN);
    for (uint32_t f = 1; f < 100; f++) {
        assert_true(vol_backoff_ms(f) >= vol_backoff_ms(f - 1));
        assert_true(vol_backoff_ms(f) <= VOL_BACKOFF_MS_MAX);
    }
    assert_int_equal(vol_backoff_ms(99), VOL_BACKOFF_MS_MAX);
}

/* ---- batcher ------------------------------------------------------------------------------ */

static uint32_t size_100(void *ctx, uint64_t lsn)
{
    const uint64_t *gone = ctx; /* LSNs below *gone are no longer kept */
    return gone != NULL && lsn < *gone ? 0 : 100;
}

static void batcher_orders_and_dedupes(void **state)
{
    vol_batcher b;
    assert_int_equal(vol_batcher_init(&b, 4, 1000, NULL), 0);
    uint64_t in[] = {5, 7, 6, 7, 3, 9, 5};
    for (size_t i = 0; i < MRD_ARRAY_LEN(in); i++)
        assert_int_equal(vol_batcher_add(&b, 2, 1, in[i]), 0);
    assert_int_equal(vol_batcher_pending(&b, 2), 5);
    uint32_t pg = 99;
    assert_true(vol_batcher_next_pg(&b, 2, &pg));
    assert_int_equal(pg, 1);
    uint64_t out[16];
    uint32_t n = vol_batcher_take(&b, 2, 1, 16, 1 << 20, size_100, NULL, out);
    assert_int_equal(n, 5);
    uint64_t want[] = {3, 5, 6, 7, 9};
    for (uint32_t i = 0; i < n; i++)
        assert_true(out[i] == want[i]);
    assert_int_equal(vol_batcher_pending(&b, 2), 0);
    assert_false(vol_batcher_next_pg(&b, 2, &pg));
    assert_int_equal(vol_batcher_add(&b, 6, 0, 1), MRD_EINVAL);
    assert_int_equal(vol_batcher_add(&b, 0, 4, 1), MRD_EINVAL);
    assert_int_equal(vol_batcher_add(&b, 0, 0, 0), MRD_EINVAL);
    vol_batcher_close(&b);
}

static void batcher_limits(void **state)
{
    vol_batcher b;
    assert_int_equal(vol_batcher_init(&b, 2, 10, NULL), 0);
    for (uint64_t l = 1; l <= 10; l++)
        assert_int_equal(vol_batcher_add(&b, 0, l % 2, l), 0);
    assert_int_equal(vol_batcher_add(&b, 0, 0, 11), MRD_EBUSY); /* per-segment bound */
    assert_int_equal(vol_batcher_add(&b, 0, 0, 2), 0);          /* a duplicate is fine */
    assert_int_equal(vol_batcher_add(&b, 1, 0, 11), 0);         /* another segment */
    uint64_t out[16];
    /* records_max */
    assert_int_equal(vol_batcher_take(&b, 0, 1, 2, 1 << 20, size_100, NULL, out), 2);
    assert_true(out[0] == 1 && out[1] == 3);
    /* bytes_max: 250 bytes hold two 100-byte records */
    assert_int_equal(vol_batcher_take(&b, 0, 1, 16, 250, size_100, NULL, out), 2);
    assert_true(out[0] == 5 && out[1] == 7);
    /* at least one record even when it alone exceeds bytes_max */
    assert_int_equal(vol_batcher_take(&b, 0, 1, 16, 10, size_100, NULL, out), 1);
    assert_true(out[0] == 9);
    /* records no longer kept are skipped and dropped */
    uint64_t gone = 7;
    assert_int_equal(vol_batcher_take(&b, 0, 0, 16, 1 << 20, size_100, &gone, out), 2);
    assert_true(out[0] == 8 && out[1] == 10);
    assert_int_equal(vol_batcher_pending(&b, 0), 0);
    vol_batcher_drop(&b, 1);
    assert_int_equal(vol_batcher_pending(&b, 1), 0);
    vol_batcher_close(&b);
}

static void batcher_round_robin(void **state)
{
    vol_batcher b;
    assert_int_equal(vol_batcher_init(&b, 3, 100, NULL), 0);
    assert_int_equal(vol_batcher_add(&b, 0, 0, 1), 0);
    assert_int_equal(vol_batcher_add(&b, 0, 2, 2), 0);
    uint32_t pg;
    assert_true(vol_batcher_next_pg(&b, 0, &pg));
    assert_int_equal(pg, 0);
    assert_true(vol_batcher_next_pg(&b, 0, &pg)); /* PG 0 still has its record: PG 2 next */
    assert_int_equal(pg, 2);
    assert_true(vol_batcher_next_pg(&b, 0, &pg));
    assert_int_equal(pg, 0);
    vol_batcher_close(&b);
}

/* ---- record store -------------------------------------------------------------------------- */

static void store_keeps_the_newest(void **state)
{
    vol_store s;
    assert_int_equal(vol_store_init(&s, 3, NULL), 0);
    assert_null(vol_store_get(&s, 1));
    uint8_t d[4] = {1, 2, 3, 4};
    assert_int_equal(vol_store_put(&s, 10, d, 1, 0), 0);
    assert_int_equal(vol_store_put(&s, 12, d, 1, 0), MRD_EINVAL); /* not the next LSN */
    assert_int_equal(vol_store_put(&s, 11, d, 2, 0), 0);
    assert_int_equal(vol_store_put(&s, 12, d, 3, 0), 0);
    /* full, and the oldest (10) is above VCL: it may still be needed */
    assert_int_equal(vol_store_put(&s, 13, d, 4, 9), MRD_EBUSY);
    assert_int_equal(vol_store_put(&s, 13, d, 4, 10), 0);
    assert_null(vol_store_get(&s, 10));
    assert_int_equal(vol_store_get(&s, 11)->len, 2);
    assert_int_equal(vol_store_get(&s, 13)->len, 4);
    assert_memory_equal(vol_store_get(&s, 13)->data, d, 4);
    assert_null(vol_store_get(&s, 14));
    vol_store_close(&s);
}

/* ---- page cache ---------------------------------------------------------------------------- */

static void cache_pins_pages_above_vdl(void **state)
{
    vol_cache c;
    uint8_t p[64];
    assert_int_equal(vol_cache_init(&c, 2, sizeof(p), NULL), 0);
    memset(p, 1, sizeof(p));
    assert_int_equal(vol_cache_put(&c, 100, p, 5, 0), 0); /* written at 5, VDL 0: pinned */
    memset(p, 2, sizeof(p));
    assert_int_equal(vol_cache_put(&c, 200, p, 6, 0), 0);
    memset(p, 3, sizeof(p));
    assert_int_equal(vol_cache_put(&c, 300, p, 0, 0), MRD_EBUSY); /* both pinned */
    assert_int_equal(vol_cache_put(&c, 300, p, 0, 5), 0);         /* VDL 5 frees page 100 */
    assert_null(vol_cache_get(&c, 100));
    assert_int_equal(vol_cache_get(&c, 200)[0], 2);
    assert_int_equal(vol_cache_get(&c, 300)[0], 3);
    /* replacing a cached page never evicts, and keeps the highest write LSN */
    memset(p, 4, sizeof(p));
    assert_int_equal(vol_cache_put(&c, 200, p, 0, 0), 0);
    assert_int_equal(vol_cache_get(&c, 200)[0], 4);
    /* 200 stays pinned (written at 6 > VDL 5): 300 makes room for 400 */
    assert_int_equal(vol_cache_put(&c, 400, p, 0, 5), 0);
    assert_null(vol_cache_get(&c, 300));
    assert_non_null(vol_cache_get(&c, 200));
    assert_int_equal(vol_cache_put(&c, 500, p, 7, 5), 0); /* 400 goes; 500 pinned at 7 */
    assert_int_equal(vol_cache_put(&c, 600, p, 0, 5), MRD_EBUSY);
    vol_cache_close(&c);
}

/* Random puts and gets against a model: what the cache returns is always the last version
 * put, pinned pages are never evicted, and the LRU unpinned page goes first. */
static void cache_matches_a_model(void **state)
{
    enum { PAGES = 64, MAX = 16, PSZ = 16 };
    vol_cache c;
    assert_int_equal(vol_cache_init(&c, MAX, PSZ, NULL), 0);
    uint8_t model[PAGES];
    uint64_t last[PAGES];
    bool present[PAGES] = {false};
    memset(model, 0, sizeof(model));
    memset(last, 0, sizeof(last));
    uint64_t vdl = 0, lsn = 0, rng = 12345;
    for (int step = 0; step < 200000; step++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t page = (uint32_t)(rng >> 33) % PAGES;
        uint8_t val = (uint8_t)(rng >> 20);
        if ((rng >> 60) < 3) vdl = lsn; /* VDL catches up now and then */
        uint8_t buf[PSZ];
        memset(buf, val, sizeof(buf));
        bool write = (rng >> 58) & 1;
        uint64_t at = write ? ++lsn : 0;
        int rc = vol_cache_put(&c, page, buf, at, vdl);
        uint32_t pinned = 0, count = 0;
        for (uint32_t i = 0; i < PAGES; i++) {
            pinned += present[i] && last[i] > vdl;
            count += present[i];
        }
        if (rc == MRD_EBUSY) {
            assert_false(present[page]);
            assert_int_equal(count, MAX);
            assert_int_equal(pinned, MAX);
            if (write) lsn--;
        } else {
            assert_int_equal(rc, 0);
            model[page] = val;
            if (!present[page]) last[page] = 0;
            if (at > last[page]) last[page] = at;
            present[page] = true;
        }
        uint32_t seen = 0;
        for (uint32_t i = 0; i < PAGES; i++) {
            const uint8_t *got = vol_cache_get(&c, i);
            if (got == NULL) {
                if (present[i]) { /* evicted: it must have been unpinned */
                    assert_true(last[i] <= vdl);
                    present[i] = false;
                }
                continue;
            }
            assert_true(present[i]);
            assert_int_equal(got[0], model[i]);
            assert_int_equal(got[PSZ - 1], model[i]);
            seen++;
        }
        assert_true(seen <= MAX);
    }
    vol_cache_close(&c);
}

/* ---- reports ------------------------------------------------------------------------------- */

typedef struct {
    const char *names[8];
    const char *values[8];
} fake_headers;

static const char *fake_header(void *ctx, const char *name)
{
    fake_headers *h = ctx;
    for (int i = 0; i < 8 && h->names[i]; i++)
        if (strcmp(h->names[i], name) == 0) return h->values[i];
    return NULL;
}

static fake_headers report_headers(const char *epoch, const char *scl, const char *highest)
{
    fake_headers h = {{"meridian-epoch", "meridian-scl", "meridian-highest", "meridian-floor-head",
                       "meridian-floor-cpl"},
                      {epoch, scl, highest, "0", "0"}};
    return h;
}

/* Appends one frame with a batch of header-only records of pg, LSNs first..last. */
static void add_frame(mrd_buf *out, uint32_t pg, uint64_t first, uint64_t last)
{
    size_t at;
    assert_int_equal(wire_frame_begin(out, &at), 0);
    wire_batch_builder b;
    assert_int_equal(wire_batch_begin(&b, out, WIRE_BATCH_LOG), 0);
    for (uint64_t l = first; l <= last; l++) {
        wire_record r;
        memset(&r, 0, sizeof(r));
        r.lsn = l;
        r.epoch = 2;
        r.pg = pg;
        r.prev_lsn = l - 1;
        r.vol_prev_lsn = l - 1;
        r.page = 7;
        r.flags = l % 2 ? WIRE_REC_CPL : 0;
        assert_int_equal(wire_batch_add(&b, &r, NULL), 0);
    }
    assert_int_equal(wire_batch_finish(&b, NULL), 0);
    assert_int_equal(wire_frame_end(out, at, NULL), 0);
}

static void report_decodes_fields_and_frames(void **state)
{
    fake_headers h = report_headers("3", "40", "50");
    mrd_buf body;
    mrd_buf_init(&body);
    add_frame(&body, 5, 41, 45);
    add_frame(&body, 5, 46, 50);
    quorum_report r;
    mrd_msg msg = {{0}};
    assert_int_equal(vol_report_decode(5, 2, fake_header, &h, body.data, body.len, 100, &r, &msg),
                     0);
    assert_int_equal(r.pg, 5);
    assert_int_equal(r.seg, 2);
    assert_int_equal(r.epoch, 3);
    assert_int_equal(r.scl, 40);
    assert_int_equal(r.highest, 50);
    assert_int_equal(r.n_hdrs, 10);
    assert_int_equal(r.hdrs[0].lsn, 41);
    assert_int_equal(r.hdrs[9].lsn, 50);
    assert_true(r.hdrs[0].is_cpl);
    assert_false(r.hdrs[1].is_cpl);
    assert_int_equal(r.hdrs[3].prev_lsn, 43);
    free((void *)r.hdrs);

    /* limit on headers */
    assert_int_equal(vol_report_decode(5, 2, fake_header, &h, body.data, body.len, 9, &r, &msg),
                     MRD_ETOOBIG);
    /* another PG's records */
    assert_int_equal(vol_report_decode(4, 2, fake_header, &h, body.data, body.len, 100, &r, &msg),
                     MRD_EPROTO);
    assert_non_null(strstr(msg.text, "pg 5"));
    /* a body cut inside a frame */
    assert_int_equal(
        vol_report_decode(5, 2, fake_header, &h, body.data, body.len - 3, 100, &r, &msg),
        MRD_ETRUNC);
    /* frames out of LSN order */
    mrd_buf twisted;
    mrd_buf_init(&twisted);
    add_frame(&twisted, 5, 46, 50);
    add_frame(&twisted, 5, 41, 45);
    assert_int_equal(
        vol_report_decode(5, 2, fake_header, &h, twisted.data, twisted.len, 100, &r, &msg),
        MRD_EPROTO);
    /* headers above the reported highest */
    fake_headers low = report_headers("3", "40", "45");
    assert_int_equal(vol_report_decode(5, 2, fake_header, &low, body.data, body.len, 100, &r, &msg),
                     MRD_EPROTO);
    mrd_buf_free(&twisted);
    mrd_buf_free(&body);
}

static void report_refuses_bad_fields(void **state)
{
    quorum_report r;
    mrd_msg msg = {{0}};
    fake_headers h = report_headers("3", "x", "50");
    assert_int_equal(vol_report_decode(0, 0, fake_header, &h, NULL, 0, 0, &r, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "meridian-scl"));
    h = report_headers("3", "60", "50"); /* scl above highest */
    assert_int_equal(vol_report_decode(0, 0, fake_header, &h, NULL, 0, 0, &r, &msg), MRD_EPROTO);
    fake_headers missing = {{"meridian-epoch"}, {"1"}};
    assert_int_equal(vol_report_decode(0, 0, fake_header, &missing, NULL, 0, 0, &r, &msg),
                     MRD_EPROTO);
    assert_non_null(strstr(msg.text, "missing"));
    h = report_headers("0", "0", "0"); /* a PG never seen: zeros, no body */
    assert_int_equal(vol_report_decode(9, 1, fake_header, &h, NULL, 0, 0, &r, &msg), 0);
    assert_null(r.hdrs);
    assert_int_equal(r.n_hdrs, 0);
}

static void recovery_covers_every_pg_unless_all_six_answered(void **state)
{
    quorum_report reps[QUORUM_SEGMENTS * QUORUM_PGS_MAX];
    uint32_t n = 0;
    memset(reps, 0, sizeof(reps));
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        for (uint32_t p = 0; p < QUORUM_PGS_MAX; p++) {
            reps[n].seg = s;
            reps[n].pg = p;
            reps[n].highest = p <= 2 && s == 4 ? 10 + p : 0; /* PGs 0..2 hold records */
            n++;
        }
    assert_int_equal(vol_recover_pg_count(reps, n, 0), 3);
    assert_int_equal(vol_recover_pg_count(reps, n, 5), 5); /* the writer's own need */
    assert_int_equal(vol_recover_pg_count(reps, n, 99), QUORUM_PGS_MAX);
    /* one node missing: a PG empty on five may hold records on the sixth */
    assert_int_equal(vol_recover_pg_count(reps, n - QUORUM_PGS_MAX, 0), QUORUM_PGS_MAX);
    /* an empty volume still has one PG */
    for (uint32_t i = 0; i < n; i++)
        reps[i].highest = 0;
    assert_int_equal(vol_recover_pg_count(reps, n, 0), 1);
}

static void empty_pgs_leave_the_floor_to_the_others(void **state)
{
    quorum_report reps[QUORUM_SEGMENTS * 4];
    uint32_t n = 0;
    memset(reps, 0, sizeof(reps));
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        for (uint32_t p = 0; p < 4; p++) {
            quorum_report *r = &reps[n++];
            r->seg = s;
            r->pg = p;
            if (p < 2) { /* PGs 0 and 1 hold records: SCLs 500 and 900 */
                r->scl = r->highest = r->floor_head = p == 0 ? 500 : 900;
            }
        }
    bool empty[QUORUM_PGS_MAX];
    vol_recover_empty_pgs(reps, n, 4, empty);
    assert_false(empty[0]);
    assert_false(empty[1]);
    assert_true(empty[2]);
    assert_true(empty[3]);
    assert_false(empty[4]); /* beyond pg_count */
    uint64_t floor = 0;
    assert_int_equal(quorum_recover_floor(4, reps, n, &floor, NULL), 0);
    assert_int_equal(floor, 0); /* the empty PGs hold it down */
    assert_int_equal(vol_recover_mask_empty(reps, n, empty, QUORUM_LSN_MAX), 0);
    assert_int_equal(quorum_recover_floor(4, reps, n, &floor, NULL), 0);
    assert_int_equal(floor, 500);
    /* round two: masked at the floor, recovery accepts them */
    for (uint32_t i = 0; i < n; i++)
        if (reps[i].pg >= 2) reps[i].scl = reps[i].highest = 0;
    assert_int_equal(vol_recover_mask_empty(reps, n, empty, 500), 0);
    quorum_recovery rec;
    mrd_msg msg = {{0}};
    assert_int_equal(quorum_recover(4, 500, reps, n, &rec, &msg), 0);
    assert_int_equal(rec.pg_head[2], 0);
    /* records that appear in an "empty" PG during recovery stop it */
    reps[3].highest = 7;
    reps[3].scl = 0;
    assert_int_equal(vol_recover_mask_empty(reps, n, empty, 500), MRD_ESTATE);
    /* one node missing: nothing is known empty */
    vol_recover_empty_pgs(reps, n - 4, 4, empty);
    for (uint32_t p = 0; p < 4; p++)
        assert_false(empty[p]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answers_are_classified),
        cmocka_unit_test(numbers_and_backoff),
        cmocka_unit_test(batcher_orders_and_dedupes),
        cmocka_unit_test(batcher_limits),
        cmocka_unit_test(batcher_round_robin),
        cmocka_unit_test(store_keeps_the_newest),
        cmocka_unit_test(cache_pins_pages_above_vdl),
        cmocka_unit_test(cache_matches_a_model),
        cmocka_unit_test(report_decodes_fields_and_frames),
        cmocka_unit_test(report_refuses_bad_fields),
        cmocka_unit_test(recovery_covers_every_pg_unless_all_six_answered),
        cmocka_unit_test(empty_pgs_leave_the_floor_to_the_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
