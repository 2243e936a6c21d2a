/*
 * The agent's I/O-free parts: replication frames (compressed batches and
 * acks) round trip and refuse hostile bytes; the lag accounting measures age,
 * LSN and byte gaps with the primary's clock only, never hides lag when its
 * ring is full, and knows the rolling checksum at each commit point.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "meridian/agent.h"

/* A batch of n one-delta records from lsn first, each linking to the one before. */
static void make_batch(mrd_buf *out, uint64_t first, uint32_t n)
{
    static uint8_t bytes[64];
    memset(bytes, 0xab, sizeof(bytes));
    wire_batch_builder b;
    assert_int_equal(wire_batch_begin(&b, out, WIRE_BATCH_LOG), 0);
    for (uint32_t i = 0; i < n; i++) {
        wire_record r = {.lsn = first + i,
                         .epoch = 1,
                         .prev_lsn = first + i - 1,
                         .vol_prev_lsn = first + i - 1,
                         .page = 3,
                         .pg = 0,
                         .flags = i + 1 == n ? WIRE_REC_CPL : 0,
                         .delta_count = 1};
        r.deltas[0] = (wire_delta){.offset = 8 * i % 4000, .len = sizeof(bytes), .data = bytes};
        assert_int_equal(wire_batch_add(&b, &r, NULL), 0);
    }
    assert_int_equal(wire_batch_finish(&b, NULL), 0);
}

/* The payload of the single frame in f (after the 8-byte header). */
static const uint8_t *payload(const mrd_buf *f, size_t *len)
{
    *len = f->len - WIRE_FRAME_HEADER_BYTES;
    return f->data + WIRE_FRAME_HEADER_BYTES;
}

static void batch_frame_round_trips(void **state)
{
    mrd_buf raw, f, back;
    mrd_buf_init(&raw);
    mrd_buf_init(&f);
    mrd_buf_init(&back);
    make_batch(&raw, 10, 200);
    assert_int_equal(ag_frame_batch_encode(raw.data, raw.len, &f, NULL), 0);
    assert_true(f.len < raw.len); /* repetitive deltas compress */
    size_t len;
    const uint8_t *p = payload(&f, &len);
    assert_int_equal(p[0], AG_FRAME_BATCH);
    wire_batch batch;
    mrd_msg msg = {{0}};
    assert_int_equal(ag_frame_batch_decode(p + 1, len - 1, &back, &batch, &msg), 0);
    assert_int_equal(back.len, raw.len);
    assert_memory_equal(back.data, raw.data, raw.len);
    assert_int_equal(batch.count, 200);
    assert_int_equal(batch.lsn_first, 10);
    assert_int_equal(batch.lsn_last, 209);
    mrd_buf_free(&raw);
    mrd_buf_free(&f);
    mrd_buf_free(&back);
}

/* Decodes tag-less payload bytes; expects err and a message. */
static void refuse(const uint8_t *p, size_t len, int err)
{
    mrd_buf raw;
    mrd_buf_init(&raw);
    wire_batch batch;
    mrd_msg msg = {{0}};
    assert_int_equal(ag_frame_batch_decode(p, len, &raw, &batch, &msg), err);
    assert_true(msg.text[0] != '\0');
    mrd_buf_free(&raw);
}

static void batch_frame_refuses_hostile_bytes(void **state)
{
    mrd_buf raw, f;
    mrd_buf_init(&raw);
    mrd_buf_init(&f);
    make_batch(&raw, 1, 50);
    assert_int_equal(ag_frame_batch_encode(raw.data, raw.len, &f, NULL), 0);
    size_t len;
    const uint8_t *p = payload(&f, &len);
    p++, len--; /* past the tag */
    uint8_t *copy = malloc(len + 16);
    refuse(p, 3, MRD_ETRUNC);
    refuse(p, len - 3, MRD_ETRUNC); /* the zlib stream cut */
    memcpy(copy, p, len);
    memcpy(copy + len, "tail", 4);
    refuse(copy, len + 4, MRD_EPARSE); /* bytes after the stream */
    memcpy(copy, p, len);
    copy[0]++; /* declares one byte more than inflates */
    refuse(copy, len, MRD_ETRUNC);
    copy[0] -= 2; /* one byte fewer */
    refuse(copy, len, MRD_ETOOBIG);
    memcpy(copy, p, len);
    copy[3] = 0x7f; /* a raw size past the limit */
    refuse(copy, len, MRD_ETOOBIG);
    memcpy(copy, p, len);
    copy[0] = copy[1] = copy[2] = copy[3] = 0;
    refuse(copy, len, MRD_ETOOBIG);
    memcpy(copy, p, len);
    copy[6] ^= 0xff; /* corrupt deflate data */
    mrd_buf out;
    mrd_buf_init(&out);
    wire_batch batch;
    assert_true(ag_frame_batch_decode(copy, len, &out, &batch, NULL) < 0);
    /* a valid zlib stream of something that is not a batch */
    uint8_t z[128];
    uLongf zlen = sizeof(z);
    assert_int_equal(compress(z + 4, &zlen, (const Bytef *)"not a batch", 11), Z_OK);
    z[0] = 11, z[1] = z[2] = z[3] = 0;
    refuse(z, zlen + 4, MRD_EPARSE);
    free(copy);
    mrd_buf_free(&out);
    mrd_buf_free(&raw);
    mrd_buf_free(&f);
}

static void ack_round_trips_and_refusals(void **state)
{
    ag_ack cases[] = {{0, 0, false}, {1, 0xdeadbeef, true}, {UINT64_MAX, UINT32_MAX, true}};
    for (size_t i = 0; i < MRD_ARRAY_LEN(cases); i++) {
        mrd_buf f;
        mrd_buf_init(&f);
        assert_int_equal(ag_frame_ack_encode(&cases[i], &f, NULL), 0);
        size_t len;
        const uint8_t *p = payload(&f, &len);
        assert_int_equal(p[0], AG_FRAME_ACK);
        ag_ack back;
        assert_int_equal(ag_frame_ack_decode(p + 1, len - 1, &back, NULL), 0);
        assert_int_equal(back.durable_lsn, cases[i].durable_lsn);
        assert_int_equal(back.checksum, cases[i].checksum);
        assert_int_equal(back.checksum_known, cases[i].checksum_known);
        for (size_t cut = 0; cut + 1 < len; cut++) /* every truncation is refused */
            assert_true(ag_frame_ack_decode(p + 1, cut, &back, NULL) < 0);
        mrd_buf_free(&f);
    }
    mrd_msg msg = {{0}};
    ag_ack a;
    const uint8_t version2[] = {0x84, 0, 2, 1, 5, 2, 7, 3, 0xc3};
    assert_int_equal(ag_frame_ack_decode(version2, sizeof(version2), &a, &msg), MRD_EVERSION);
    const uint8_t small[] = {0x84, 0, 1, 1, 5, 2, 7, 3, 0xc3}; /* fixints are fine */
    assert_int_equal(ag_frame_ack_decode(small, sizeof(small), &a, NULL), 0);
    assert_int_equal(a.durable_lsn, 5);
    const uint8_t big_crc[] = {0x84, 0, 1, 1, 5, 2, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 3, 0xc2};
    assert_int_equal(ag_frame_ack_decode(big_crc, sizeof(big_crc), &a, NULL), MRD_EPARSE);
    const uint8_t order[] = {0x84, 0, 1, 2, 5, 1, 7, 3, 0xc3};
    assert_int_equal(ag_frame_ack_decode(order, sizeof(order), &a, NULL), MRD_EPARSE);
    const uint8_t notbool[] = {0x84, 0, 1, 1, 5, 2, 7, 3, 1};
    assert_int_equal(ag_frame_ack_decode(notbool, sizeof(notbool), &a, NULL), MRD_EPARSE);
    const uint8_t trailing[] = {0x84, 0, 1, 1, 5, 2, 7, 3, 0xc3, 0};
    assert_int_equal(ag_frame_ack_decode(trailing, sizeof(trailing), &a, NULL), MRD_EPARSE);
    const uint8_t str[] = {0x84, 0, 1, 1, 0xa1, 'x', 2, 7, 3, 0xc3};
    assert_int_equal(ag_frame_ack_decode(str, sizeof(str), &a, NULL), MRD_EPARSE);
}

static void checksum_chains_lsn_and_bytes(void **state)
{
    const uint8_t rec[] = {1, 2, 3};
    uint32_t a = ag_checksum_advance(0, 1, rec, sizeof(rec));
    assert_int_not_equal(a, ag_checksum_advance(0, 2, rec, sizeof(rec)));
    assert_int_not_equal(ag_checksum_advance(a, 2, rec, 3), ag_checksum_advance(a, 2, rec, 2));
    assert_int_equal(ag_checksum_advance(a, 2, rec, 3), ag_checksum_advance(a, 2, rec, 3));
}

static void lag_follows_commits_and_acks(void **state)
{
    ag_lag l;
    assert_int_equal(ag_lag_init(&l, 16, 100, 0x11, true, 1000, NULL), 0);
    ag_lag_view v;
    ag_lag_of(&l, 1, 1000, &v);
    assert_int_equal(v.lag_ms, 0); /* nothing committed above the base */
    ag_lag_commit(&l, 110, 500, 0x22, 2000);
    ag_lag_commit(&l, 120, 300, 0x33, 2500);
    ag_lag_ack(&l, 1, 100);
    ag_lag_of(&l, 1, 3000, &v);
    assert_int_equal(v.lag_ms, 1000); /* records above 100 committed at 2000 */
    assert_int_equal(v.lsn_gap, 20);
    assert_int_equal(v.bytes_gap, 800);
    ag_lag_ack(&l, 1, 110);
    ag_lag_of(&l, 1, 3000, &v);
    assert_int_equal(v.lag_ms, 500);
    assert_int_equal(v.lsn_gap, 10);
    assert_int_equal(v.bytes_gap, 300);
    ag_lag_ack(&l, 1, 105); /* never goes back */
    ag_lag_of(&l, 1, 3000, &v);
    assert_int_equal(v.lsn_gap, 10);
    ag_lag_ack(&l, 1, 120);
    ag_lag_of(&l, 1, 9000, &v);
    assert_int_equal(v.lag_ms, 0);
    assert_int_equal(v.bytes_gap, 0);
    /* a peer that never acknowledged lags from the start of the accounting */
    ag_lag_of(&l, 2, 3000, &v);
    assert_int_equal(v.lag_ms, 2000);
    assert_int_equal(v.lsn_gap, 120);
    uint32_t crc;
    assert_true(ag_lag_checksum_at(&l, 110, &crc));
    assert_int_equal(crc, 0x22);
    assert_true(ag_lag_checksum_at(&l, 100, &crc));
    assert_int_equal(crc, 0x11);
    assert_false(ag_lag_checksum_at(&l, 115, &crc));
    ag_lag_sent(&l, 1, 1000, 300);
    assert_int_equal(l.peers[1].bytes_raw, 1000);
    assert_int_equal(l.peers[1].bytes_sent, 300);
    ag_lag_free(&l);
}

static void lag_full_ring_never_hides_lag(void **state)
{
    ag_lag l;
    assert_int_equal(ag_lag_init(&l, 4, 0, 0, true, 0, NULL), 0);
    for (uint64_t i = 1; i <= 10; i++)
        ag_lag_commit(&l, i * 10, 1, (uint32_t)i, i * 100);
    ag_lag_ack(&l, 0, 15);
    ag_lag_view v;
    ag_lag_of(&l, 0, 2000, &v);
    /* record 20 was committed at 200; merged marks may only make it look older */
    assert_true(v.lag_ms >= 2000 - 200);
    assert_int_equal(v.lsn_gap, 85);
    ag_lag_ack(&l, 0, 100);
    ag_lag_of(&l, 0, 2000, &v);
    assert_int_equal(v.lag_ms, 0);
    ag_mark m;
    assert_true(ag_lag_mark_at_or_below(&l, 95, &m));
    assert_int_equal(m.lsn, 90);
    ag_lag_forget(&l, 95);
    assert_int_equal(l.count, 2); /* the mark at 90 stays: the byte reference */
    assert_true(ag_lag_mark_at_or_below(&l, 100, &m));
    assert_int_equal(m.lsn, 100);
    ag_lag_free(&l);
}

static void lag_unknown_checksum(void **state)
{
    ag_lag l;
    assert_int_equal(ag_lag_init(&l, 0, 50, 0, false, 0, NULL), 0);
    ag_lag_commit(&l, 60, 10, 7, 10);
    uint32_t crc;
    assert_false(ag_lag_checksum_at(&l, 60, &crc));
    assert_false(ag_lag_checksum_at(&l, 50, &crc));
    ag_lag_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batch_frame_round_trips),
        cmocka_unit_test(batch_frame_refuses_hostile_bytes),
        cmocka_unit_test(ack_round_trips_and_refusals),
        cmocka_unit_test(checksum_chains_lsn_and_bytes),
        cmocka_unit_test(lag_follows_commits_and_acks),
        cmocka_unit_test(lag_full_ring_never_hides_lag),
        cmocka_unit_test(lag_unknown_checksum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
