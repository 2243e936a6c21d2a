/*
 * volume-bench's I/O-free parts: the latency histogram against exact
 * quantiles, the seeded workload, and the log checker behind volume-verify
 * (durable and later writes, truncation by a recovery, LSNs used again,
 * refusals naming the line).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/vbench.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void histogram_quantiles_within_one_percent(void **state)
{
    enum { N = 100000 };
    static vb_lat h;
    static uint64_t v[N];
    vb_lat_init(&h);
    assert_int_equal(vb_lat_quantile(&h, 0.5), 0);
    vb_rng r;
    vb_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        /* a long tail: mostly 100 us .. 2 ms, a few up to seconds */
        uint64_t x = 100000 + vb_rng_next(&r) % 1900000;
        if (i % 1000 == 0) x = vb_rng_next(&r) % 3000000000ULL;
        v[i] = x;
        vb_lat_add(&h, x);
    }
    qsort(v, N, sizeof(v[0]), cmp_u64);
    double qs[] = {0.01, 0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < MRD_ARRAY_LEN(qs); i++) {
        uint64_t exact = v[(size_t)(qs[i] * N)];
        uint64_t got = vb_lat_quantile(&h, qs[i]);
        assert_true(got >= exact);
        assert_true((double)(got - exact) <= 0.01 * (double)exact);
    }
    assert_true(vb_lat_quantile(&h, 1.0) == v[N - 1]);
    assert_true(h.max == v[N - 1]);
    assert_true(h.min == v[0]);
    /* small values are exact */
    vb_lat_init(&h);
    for (uint64_t x = 0; x < 200; x++)
        vb_lat_add(&h, x);
    assert_int_equal(vb_lat_quantile(&h, 0.5), 100);
    vb_lat_add(&h, UINT64_MAX); /* the largest value has a bucket */
    assert_true(vb_lat_quantile(&h, 1.0) == UINT64_MAX);
    /* merging two halves gives the histogram of the whole */
    static vb_lat a, b;
    vb_lat_init(&a);
    vb_lat_init(&b);
    for (uint64_t x = 0; x < 200; x++)
        vb_lat_add(x % 2 ? &a : &b, x);
    vb_lat_merge(&a, &b);
    assert_int_equal(a.n, 200);
    assert_int_equal(a.min, 0);
    assert_int_equal(a.max, 199);
    assert_int_equal(vb_lat_quantile(&a, 0.5), 100);
}

static void workload_is_seeded_and_in_bounds(void **state)
{
    vb_rng a, b;
    vb_rng_seed(&a, 42);
    vb_rng_seed(&b, 42);
    uint8_t x[200], y[200];
    for (int i = 0; i < 10000; i++) {
        vb_change ca = vb_change_next(&a, 1000, 4096, 200, x);
        vb_change cb = vb_change_next(&b, 1000, 4096, 200, y);
        assert_true(ca.page == cb.page && ca.offset == cb.offset);
        assert_memory_equal(x, y, sizeof(x));
        assert_true(ca.page < 1000);
        assert_true(ca.offset + 200 <= 4096);
    }
    static uint8_t page[4096];
    vb_change whole = vb_change_next(&a, 1, 4096, 4096, page);
    assert_int_equal(whole.offset, 0);
    assert_int_equal(whole.page, 0);
    vb_rng_seed(&b, 43);
    vb_rng_seed(&a, 42);
    assert_true(vb_rng_next(&a) != vb_rng_next(&b));
}

/* ---- log checker --------------------------------------------------------------------------- */

static vb_check check;

static int feed(const char *const *lines, size_t n, mrd_msg *msg)
{
    for (size_t i = 0; i < n; i++) {
        int rc = vb_check_line(&check, lines[i], i + 1, msg);
        if (rc != 0) return rc;
    }
    return 0;
}

static int setup_check(void **state)
{
    return vb_check_init(&check, 4096, NULL);
}

static int teardown_check(void **state)
{
    vb_check_close(&check);
    return 0;
}

static void check_durable_and_later_writes(void **state)
{
    const char *log[] = {"recovered 1 0 0",     "submit 1 7 0000000a",
                         "submit 2 8 0000000b", "vdl 1",
                         "submit 3 7 0000000c", "vdl 2",
                         "submit 4 7 0000000d", ""};
    mrd_msg msg = {{0}};
    assert_int_equal(feed(log, MRD_ARRAY_LEN(log), &msg), 0);
    assert_int_equal(check.vdl_max, 2);
    assert_int_equal(check.n_pages, 2);
    /* page 7: 0xa is durable (lsn 1 <= vdl 2); 0xc and 0xd above the vdl may have survived */
    assert_int_equal(vb_check_page(&check, 7, 0xa, &msg), VB_MATCH_DURABLE);
    assert_int_equal(vb_check_page(&check, 7, 0xc, &msg), VB_MATCH_LATER);
    assert_int_equal(vb_check_page(&check, 7, 0xd, &msg), VB_MATCH_LATER);
    assert_int_equal(vb_check_page(&check, 7, 0xe, &msg), VB_MISMATCH);
    assert_non_null(strstr(msg.text, "page 7: crc 0000000e, expected 0000000a of lsn 1"));
    assert_int_equal(vb_check_page(&check, 8, 0xb, &msg), VB_MATCH_DURABLE);
    /* a page the log never wrote holds zeros */
    assert_int_equal(vb_check_page(&check, 9, check.zero_crc, &msg), VB_MATCH_DURABLE);
    assert_int_equal(vb_check_page(&check, 9, 0xb, &msg), VB_MISMATCH);
    assert_non_null(strstr(msg.text, "never written"));
}

static void check_recovery_discards_and_lsns_return(void **state)
{
    const char *log[] = {
        "recovered 1 0 0",
        "submit 1 7 00000001",
        "vdl 1",
        "submit 2 7 00000002",
        "submit 3 7 00000003", /* above vdl 1: lost by the next writer */
        "recovered 2 2 2",     /* epoch 2 kept lsn 2, discarded 3 */
        "submit 3 7 00000033", /* lsn 3 again, a new record */
        "vdl 3",
    };
    mrd_msg msg = {{0}};
    assert_int_equal(feed(log, MRD_ARRAY_LEN(log), &msg), 0);
    assert_int_equal(check.truncated, 1);
    assert_int_equal(check.recoveries, 2);
    assert_int_equal(vb_check_page(&check, 7, 0x33, &msg), VB_MATCH_DURABLE);
    assert_int_equal(vb_check_page(&check, 7, 0x3, &msg), VB_MISMATCH);
    assert_int_equal(vb_check_page(&check, 7, 0x2, &msg), VB_MISMATCH); /* older than durable */
}

static void check_refuses_lost_acknowledged_writes(void **state)
{
    const char *log[] = {"submit 1 7 00000001", "submit 2 7 00000002", "vdl 2", "recovered 2 1 1"};
    mrd_msg msg = {{0}};
    assert_int_equal(feed(log, MRD_ARRAY_LEN(log), &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "log line 4"));
    assert_non_null(strstr(msg.text, "acknowledged writes were lost"));
}

static void check_refuses_bad_lines(void **state)
{
    mrd_msg msg = {{0}};
    const char *bad[] = {"submit 1 7",
                         "submit x 7 00000001",
                         "submit 1 7 zz",
                         "vdl",
                         "vdl -1",
                         "flush 3",
                         "submit 0 7 00000001",
                         "submit 1 7 1ffffffff",
                         "vdl 99999999999999999999"};
    for (size_t i = 0; i < MRD_ARRAY_LEN(bad); i++) {
        assert_int_equal(vb_check_line(&check, bad[i], 12, &msg), MRD_EPARSE);
        assert_non_null(strstr(msg.text, "log line 12"));
    }
    assert_int_equal(vb_check_line(&check, "submit 5 7 00000001", 1, &msg), 0);
    assert_int_equal(vb_check_line(&check, "submit 5 8 00000001", 2, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "not above"));
    char longline[400];
    memset(longline, 'a', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    assert_int_equal(vb_check_line(&check, longline, 3, &msg), MRD_EPARSE);
}

static void check_many_pages_and_writes(void **state)
{
    char line[128];
    mrd_msg msg = {{0}};
    uint64_t lsn = 0;
    for (uint64_t round = 0; round < 50; round++) {
        for (uint64_t p = 0; p < 5000; p++) {
            snprintf(line, sizeof(line), "submit %llu %llu %08llx", (unsigned long long)++lsn,
                     (unsigned long long)p, (unsigned long long)(round * 5000 + p));
            assert_int_equal(vb_check_line(&check, line, lsn, &msg), 0);
        }
        snprintf(line, sizeof(line), "vdl %llu", (unsigned long long)(lsn - 100));
        assert_int_equal(vb_check_line(&check, line, lsn, &msg), 0);
    }
    assert_int_equal(check.n_pages, 5000);
    for (uint64_t p = 0; p < 5000; p++) {
        vb_match m = vb_check_page(&check, p, (uint32_t)(49 * 5000 + p), &msg);
        assert_int_equal(m, p < 4900 ? VB_MATCH_DURABLE : VB_MATCH_LATER);
        if (p >= 4900) /* the last write at or below the vdl is the previous round's */
            assert_int_equal(vb_check_page(&check, p, (uint32_t)(48 * 5000 + p), &msg),
                             VB_MATCH_DURABLE);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(histogram_quantiles_within_one_percent),
        cmocka_unit_test(workload_is_seeded_and_in_bounds),
        cmocka_unit_test_setup_teardown(check_durable_and_later_writes, setup_check,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(check_recovery_discards_and_lsns_return, setup_check,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(check_refuses_lost_acknowledged_writes, setup_check,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(check_refuses_bad_lines, setup_check, teardown_check),
        cmocka_unit_test_setup_teardown(check_many_pages_and_writes, setup_check, teardown_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
