/* Shared helpers of the seglog unit tests: entry content derived from the LSN. */
#ifndef MERIDIAN_SEGLOG_TEST_H
#define MERIDIAN_SEGLOG_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/seglog.h"

#define TEST_DIR "/seg"
#define TEST_PAYLOAD_MAX 200

static inline uint64_t test_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A seeded PRNG for schedules. */
typedef struct {
    uint64_t s;
} test_rng;

static inline uint64_t test_rand(test_rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return test_mix(r->s);
}

/* The payload of lsn: its length and bytes follow from the LSN alone. */
static inline size_t test_payload(uint64_t lsn, uint8_t out[TEST_PAYLOAD_MAX])
{
    size_t len = 1 + (size_t)(test_mix(lsn) % TEST_PAYLOAD_MAX);
    uint64_t x = lsn * 31 + 7;
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) x = test_mix(x);
        out[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    return len;
}

/* Appends LSNs first..last (payloads from test_payload) as one call. */
static inline int test_append_range(seglog *log, uint64_t first, uint64_t last)
{
    static uint8_t bufs[64][TEST_PAYLOAD_MAX];
    seglog_entry e[64];
    assert_true(last - first < 64);
    for (uint64_t l = first; l <= last; l++) {
        size_t i = (size_t)(l - first);
        e[i].lsn = l;
        e[i].len = test_payload(l, bufs[i]);
        e[i].data = bufs[i];
    }
    mrd_msg msg;
    return seglog_append(log, e, (size_t)(last - first + 1), &msg);
}

static inline seglog *test_open_opts(seglog_fake *fake, uint64_t file_max, uint64_t batch_max,
                                     seglog_recovery *rep, int *rc_out)
{
    seglog_options o = {.io = seglog_fake_io(fake),
                        .dir = TEST_DIR,
                        .file_bytes_max = file_max,
                        .batch_bytes_max = batch_max};
    seglog *log = NULL;
    mrd_msg msg = {{0}};
    int rc = seglog_open(&o, &log, rep, &msg);
    if (rc_out != NULL)
        *rc_out = rc;
    else if (rc != 0)
        fail_msg("seglog_open: %s", msg.text);
    return log;
}

static inline seglog *test_open(seglog_fake *fake, seglog_recovery *rep)
{
    return test_open_opts(fake, 4096, 1024, rep, NULL);
}

/* Reads the whole log: LSNs must run first..n contiguously with the right payloads. */
static inline uint64_t test_check_log(seglog *log, uint64_t lsn_from)
{
    seglog_iter *it;
    mrd_msg msg;
    assert_int_equal(seglog_iter_open(log, lsn_from, &it, &msg), 0);
    uint64_t want = lsn_from ? lsn_from : 1, n = 0;
    seglog_entry e;
    int rc;
    uint8_t expect[TEST_PAYLOAD_MAX];
    while ((rc = seglog_iter_next(it, &e, &msg)) == 1) {
        if (e.lsn != want)
            fail_msg("lsn %llu, expected %llu", (unsigned long long)e.lsn,
                     (unsigned long long)want);
        size_t len = test_payload(e.lsn, expect);
        assert_int_equal(e.len, len);
        assert_memory_equal(e.data, expect, len);
        want++;
        n++;
    }
    if (rc != 0) fail_msg("iter: %s", msg.text);
    seglog_iter_close(it);
    return want - 1;
}

static inline void test_sync_ok(seglog *log)
{
    mrd_msg msg = {{0}};
    int rc = seglog_sync(log, &msg);
    if (rc != 0) fail_msg("sync: %s", msg.text);
}

#endif
