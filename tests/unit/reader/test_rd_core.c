/*
 * rd_core, the reader's state: records apply only up to a durability mark
 * and only between read transactions; records of pages not held are
 * dropped; a page read at a read point that is no longer current is not
 * kept; PG heads come from the reset point plus what was applied; lag.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "meridian/reader.h"

#define PAGE 512

static uint8_t enc_buf[4096];

/* Record lsn: byte `off` of page `page` (PG = page / 4) becomes `val`. */
static void feed(rd_core *c, uint64_t lsn, uint64_t page, uint32_t off, uint8_t val, int want)
{
    static uint8_t byte;
    byte = val;
    wire_record rec = {.lsn = lsn, .epoch = 1, .pg = (uint32_t)(page / 4), .page = page,
                       .delta_count = 1, .flags = WIRE_REC_CPL};
    rec.deltas[0] = (wire_delta){.offset = off, .len = 1, .data = &byte};
    mrd_buf b;
    mrd_buf_init(&b);
    assert_int_equal(wire_record_encode(&rec, &b, NULL), 0);
    memcpy(enc_buf, b.data, b.len);
    assert_int_equal(rd_core_record(c, &rec, enc_buf, b.len), want);
    mrd_buf_free(&b);
}

static void apply_at_marks_between_transactions(void **state)
{
    (void)state;
    rd_core *c;
    assert_int_equal(rd_core_new(PAGE, 4, 8, &c, NULL), 0);
    rd_core_reset(c, 10, 1, 1000);
    uint8_t page[PAGE] = {0}, out[PAGE];
    assert_int_equal(rd_core_pin(c), 10);
    rd_core_page_put(c, 0, 10, page); /* read from storage at the read point: kept */
    rd_core_unpin(c);
    feed(c, 11, 0, 5, 0xaa, 0);
    feed(c, 12, 9, 1, 0xbb, 0);       /* a page not held: dropped when applied */
    feed(c, 14, 0, 6, 0xcc, MRD_EPROTO); /* not the next LSN */
    assert_int_equal(rd_core_apply(c, 1000), 0); /* no mark yet */
    assert_int_equal(rd_core_mark(c, 13, 12, 1000), MRD_EPROTO); /* past the records */
    assert_int_equal(rd_core_mark(c, 11, 12, 1000), 0);
    /* a read transaction pins 10: nothing applies while it runs */
    assert_int_equal(rd_core_pin(c), 10);
    assert_int_equal(rd_core_apply(c, 1001), 0);
    assert_true(rd_core_page(c, 0, out));
    assert_int_equal(out[5], 0);
    rd_stats st;
    rd_core_stats(c, 1050, &st);
    assert_int_equal(st.lag_ms, 50); /* the mark of 11 waits since t=1000 */
    assert_int_equal(st.lag_lsn, 1);
    rd_core_unpin(c);
    assert_int_equal(rd_core_apply(c, 1060), 1);
    assert_int_equal(rd_core_pin(c), 11);
    assert_true(rd_core_page(c, 0, out));
    assert_int_equal(out[5], 0xaa);
    rd_core_unpin(c);
    assert_int_equal(rd_core_mark(c, 12, 12, 1070), 0);
    assert_int_equal(rd_core_apply(c, 1070), 1);
    rd_core_stats(c, 1080, &st);
    assert_int_equal(st.lag_ms, 0);
    assert_int_equal(st.records_dropped, 1);
    assert_int_equal(st.applied_vdl, 12);
    assert_int_equal(rd_core_mark(c, 11, 12, 1090), MRD_EPROTO); /* marks never go back */
    rd_core_free(c);
}

static void stale_reads_and_heads(void **state)
{
    (void)state;
    rd_core *c;
    uint8_t page[PAGE] = {1}, out[PAGE];
    assert_int_equal(rd_core_new(PAGE, 4, 8, &c, NULL), 0);
    rd_core_reset(c, 20, 1, 0);
    uint64_t need;
    assert_false(rd_core_need(c, 2, &need));
    rd_core_set_head(c, 2, 19, 15); /* an older reset point: ignored */
    assert_false(rd_core_need(c, 2, &need));
    rd_core_set_head(c, 2, 20, 17);
    assert_true(rd_core_need(c, 2, &need));
    assert_int_equal(need, 17);
    feed(c, 21, 9, 0, 7, 0); /* page 9 is PG 2 */
    assert_int_equal(rd_core_mark(c, 21, 21, 0), 0);
    assert_int_equal(rd_core_apply(c, 0), 1);
    assert_true(rd_core_need(c, 2, &need));
    assert_int_equal(need, 21); /* the head moved with the applied record */
    /* a page read at 20 arrives after 21 applied without it: not kept */
    rd_core_page_put(c, 9, 20, page);
    assert_false(rd_core_page(c, 9, out));
    rd_core_page_put(c, 9, 21, page);
    assert_true(rd_core_page(c, 9, out));
    uint32_t pg;
    assert_true(rd_core_heads_missing(c, 4, &pg));
    assert_int_equal(pg, 0);
    /* a new stream start forgets pages and heads */
    rd_core_reset(c, 30, 2, 0);
    assert_false(rd_core_page(c, 9, out));
    assert_false(rd_core_need(c, 2, &need));
    assert_int_equal(rd_core_reset_vdl(c), 30);
    /* a read asked at the old start (20) names no running stream: it restarts nothing */
    assert_true(rd_core_started_at(c, 30));
    assert_false(rd_core_started_at(c, 20));
    rd_core_free(c);
}

static void stream_down_counts_as_lag_and_cache_evicts(void **state)
{
    (void)state;
    rd_core *c;
    uint8_t page[PAGE] = {0}, out[PAGE];
    assert_int_equal(rd_core_new(PAGE, 4, 2, &c, NULL), 0);
    rd_core_reset(c, 5, 1, 100);
    assert_true(rd_core_started_at(c, 5));
    rd_core_stream_down(c, 200);
    assert_false(rd_core_started_at(c, 5)); /* down: already starting over */
    rd_stats st;
    rd_core_stats(c, 700, &st);
    assert_false(st.stream_up);
    assert_int_equal(st.lag_ms, 500);
    for (uint64_t p = 0; p < 3; p++) /* 3 pages in a cache of 2: the least recent goes */
        rd_core_page_put(c, p, 5, page);
    assert_false(rd_core_page(c, 0, out));
    assert_true(rd_core_page(c, 1, out) && rd_core_page(c, 2, out));
    rd_core_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(apply_at_marks_between_transactions),
        cmocka_unit_test(stale_reads_and_heads),
        cmocka_unit_test(stream_down_counts_as_lag_and_cache_evicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
