/*
 * The wire module: round trips of random records and batches, hostile inputs
 * (truncations, bit flips, mistyped fields, oversized counts, duplicate and
 * missing keys, nesting bombs), the frame reader fed in every chunking, and
 * page deltas computed and applied over random edits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/wire.h"

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

static uint32_t rng_below(rng *r, uint32_t n)
{
    return n == 0 ? 0 : (uint32_t)(rng_next(r) % n);
}

/* Integers of every msgpack width. */
static uint64_t rng_u64(rng *r)
{
    static const unsigned bits[] = {7, 8, 16, 32, 64};
    unsigned b = bits[rng_below(r, 5)];
    uint64_t v = rng_next(r);
    return b == 64 ? v : v & ((1ULL << b) - 1);
}

static uint8_t pool[WIRE_PAGE_SIZE_MAX];

static void pool_fill(rng *r)
{
    for (size_t i = 0; i < sizeof(pool); i++)
        pool[i] = (uint8_t)rng_next(r);
}

/* A random valid record; deltas point into pool. */
static void random_record(rng *r, wire_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->lsn = 1 + rng_u64(r) % (UINT64_MAX - 1);
    rec->prev_lsn = rng_below(r, 4) == 0 ? 0 : rng_next(r) % rec->lsn;
    rec->epoch = rng_u64(r);
    rec->page = rng_u64(r);
    rec->pg = (uint32_t)rng_u64(r);
    rec->txn = rng_below(r, 2) ? rng_u64(r) : 0;
    rec->vol_prev_lsn = rng_below(r, 2) ? rec->prev_lsn + rng_next(r) % (rec->lsn - rec->prev_lsn) : 0;
    rec->flags = rng_below(r, 2) ? WIRE_REC_CPL : 0;
    if (rng_below(r, 8) == 0) {
        uint32_t size = 1u << (9 + rng_below(r, 8));
        rec->flags |= WIRE_REC_FULL;
        rec->delta_count = 1;
        rec->deltas[0] = (wire_delta){0, size, pool};
        return;
    }
    uint32_t n = rng_below(r, WIRE_DELTAS_MAX + 1), at = 0;
    for (uint32_t i = 0; i < n && at < WIRE_PAGE_SIZE_MAX; i++) {
        uint32_t room = WIRE_PAGE_SIZE_MAX - at;
        uint32_t skip = rng_below(r, room < 2000 ? room : 2000);
        uint32_t len = 1 + rng_below(r, rng_below(r, 4) ? 64 : 1500);
        if (at + skip + len > WIRE_PAGE_SIZE_MAX) break;
        rec->deltas[i] = (wire_delta){at + skip, len, pool + rng_below(r, 1000)};
        rec->delta_count = i + 1;
        at += skip + len;
    }
}

static void encode_ok(const wire_record *rec, mrd_buf *out)
{
    mrd_msg msg;
    int rc = wire_record_encode(rec, out, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
}

/* A batch of n random records in order, built into out (as a frame if framed). */
static void random_batch(rng *r, uint32_t n, wire_record *recs, mrd_buf *out)
{
    wire_batch_builder b;
    mrd_msg msg;
    assert_int_equal(wire_batch_begin(&b, out, WIRE_BATCH_LOG), 0);
    uint64_t lsn = 1 + rng_below(r, 1000), epoch = rng_below(r, 5);
    for (uint32_t i = 0; i < n; i++) {
        random_record(r, &recs[i]);
        recs[i].lsn = lsn;
        recs[i].prev_lsn = rng_next(r) % lsn;
        recs[i].vol_prev_lsn = recs[i].prev_lsn;
        recs[i].epoch = epoch;
        lsn += 1 + rng_below(r, 3);
        epoch += rng_below(r, 8) == 0;
        int rc = wire_batch_add(&b, &recs[i], &msg);
        if (rc != 0) fail_msg("%s", msg.text);
    }
    assert_int_equal(wire_batch_finish(&b, &msg), 0);
}

/* A tiny msgpack writer for hand-made inputs. */
static int buf_write(void *data, const char *bytes, size_t len)
{
    return mrd_buf_append(data, bytes, len);
}

enum { E_UINT, E_STR, E_NEG, E_NIL, E_DELTAS, E_BOMB, E_SIGNED };
typedef struct {
    uint64_t key;
    int kind;
    uint64_t v;
} ent;

/* A valid record map, entry by entry; tests change copies of it. */
static const ent record_ok[] = {
    {0, E_UINT, 1},  {1, E_UINT, 100}, {2, E_UINT, 7}, {3, E_UINT, 2},
    {4, E_UINT, 99}, {5, E_UINT, 42},  {6, E_UINT, 1}, {7, E_DELTAS, 1},
};
#define RECORD_OK_N MRD_ARRAY_LEN(record_ok)

static void pack_bomb(msgpack_packer *pk, uint64_t depth)
{
    for (uint64_t i = 0; i < depth; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

static void pack_ent(msgpack_packer *pk, const ent *e)
{
    msgpack_pack_uint64(pk, e->key);
    switch (e->kind) {
    case E_UINT:
        msgpack_pack_uint64(pk, e->v);
        break;
    case E_SIGNED:
        msgpack_pack_fix_int64(pk, (int64_t)e->v);
        break;
    case E_STR:
        msgpack_pack_str_with_body(pk, "nope", 4);
        break;
    case E_NEG:
        msgpack_pack_int64(pk, -(int64_t)e->v);
        break;
    case E_NIL:
        msgpack_pack_nil(pk);
        break;
    case E_DELTAS:
        msgpack_pack_array(pk, e->v);
        for (uint64_t i = 0; i < e->v; i++) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_uint64(pk, i * 8);
            msgpack_pack_bin_with_body(pk, "abcd", 4);
        }
        break;
    case E_BOMB:
        pack_bomb(pk, e->v);
        break;
    }
}

static void pack_map(mrd_buf *b, const ent *e, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++)
        pack_ent(&pk, &e[i]);
}

/* Decodes a hand-made record map; checks the error and that msg names want_text. */
static void record_refused(const ent *e, size_t n, int want_rc, const char *want_text)
{
    mrd_buf b;
    mrd_buf_init(&b);
    pack_map(&b, e, n);
    wire_record rec;
    mrd_msg msg = {{0}};
    int rc = wire_record_decode(b.data, b.len, &rec, &msg);
    if (rc != want_rc || (want_text && strstr(msg.text, want_text) == NULL))
        fail_msg("rc %s, want %s; message \"%s\", want \"%s\"", mrd_errname(rc),
                 mrd_errname(want_rc), msg.text, want_text ? want_text : "");
    mrd_buf_free(&b);
}

/* ---- records ---------------------------------------------------------------------------- */

static void record_round_trips(void **state)
{
    rng r = {0x5eed0001};
    pool_fill(&r);
    mrd_buf a, b;
    mrd_buf_init(&a);
    mrd_buf_init(&b);
    for (int iter = 0; iter < 5000; iter++) {
        wire_record rec, back;
        random_record(&r, &rec);
        a.len = b.len = 0;
        encode_ok(&rec, &a);
        assert_int_equal(a.len, wire_record_size(&rec));
        mrd_msg msg;
        int rc = wire_record_decode(a.data, a.len, &back, &msg);
        if (rc != 0) fail_msg("iteration %d: %s", iter, msg.text);
        assert_true(wire_record_equal(&rec, &back));
        encode_ok(&back, &b);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len); /* the encoding is canonical */
    }
    mrd_buf_free(&a);
    mrd_buf_free(&b);
}

static void record_every_truncation_refused(void **state)
{
    rng r = {0x5eed0002};
    pool_fill(&r);
    mrd_buf a;
    mrd_buf_init(&a);
    for (int iter = 0; iter < 40; iter++) {
        wire_record rec, back;
        random_record(&r, &rec);
        a.len = 0;
        encode_ok(&rec, &a);
        for (size_t cut = 0; cut < a.len; cut++)
            assert_int_equal(wire_record_decode(a.data, cut, &back, NULL), MRD_ETRUNC);
        uint8_t extra = 0;
        assert_int_equal(mrd_buf_append(&a, &extra, 1), 0);
        assert_int_equal(wire_record_decode(a.data, a.len, &back, NULL), MRD_EPARSE);
    }
    mrd_buf_free(&a);
}

static void record_accepts_any_integer_width(void **state)
{
    /* uint64 and non-negative signed forms decode; the canonical form is the smallest. */
    ent e[RECORD_OK_N];
    memcpy(e, record_ok, sizeof(e));
    e[1].kind = E_SIGNED; /* lsn as int64 100 */
    mrd_buf b;
    mrd_buf_init(&b);
    pack_map(&b, e, RECORD_OK_N);
    wire_record rec;
    mrd_msg msg;
    assert_int_equal(wire_record_decode(b.data, b.len, &rec, &msg), 0);
    assert_int_equal(rec.lsn, 100);
    assert_int_equal(rec.delta_count, 1);
    assert_memory_equal(rec.deltas[0].data, "abcd", 4);
    assert_true(rec.deltas[0].data > b.data && rec.deltas[0].data < b.data + b.len);
    mrd_buf_free(&b);
}

static void record_mistyped_fields_refused(void **state)
{
    ent e[RECORD_OK_N];
    memcpy(e, record_ok, sizeof(e));
    e[4].kind = E_STR;
    record_refused(e, RECORD_OK_N, MRD_EPARSE,
                   "record field 4 (prev_lsn): expected unsigned integer, got string at byte 10");
    memcpy(e, record_ok, sizeof(e));
    e[1].kind = E_NEG;
    record_refused(e, RECORD_OK_N, MRD_EPARSE,
                   "record field 1 (lsn): expected unsigned integer, got a negative one");
    memcpy(e, record_ok, sizeof(e));
    e[3].v = 1ULL << 32; /* pg is u32 */
    record_refused(e, RECORD_OK_N, MRD_EPARSE,
                   "record field 3 (pg): value 4294967296 out of range");
    memcpy(e, record_ok, sizeof(e));
    e[7].kind = E_NIL;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "record field 7 (deltas): expected array, got nil");
    memcpy(e, record_ok, sizeof(e));
    e[0].kind = E_STR;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "field 0 (version)");
}

static void record_keys_checked(void **state)
{
    ent e[RECORD_OK_N + 1];
    /* version: wrong, missing, not first */
    memcpy(e, record_ok, sizeof(record_ok));
    e[0].v = 2;
    record_refused(e, RECORD_OK_N, MRD_EVERSION, "version 2");
    record_refused(record_ok + 1, RECORD_OK_N - 1, MRD_EPARSE, "first key is 1");
    /* missing required fields: in the middle and at the end */
    memcpy(e, record_ok, sizeof(record_ok));
    memmove(&e[4], &e[5], sizeof(ent) * (RECORD_OK_N - 5));
    record_refused(e, RECORD_OK_N - 1, MRD_EPARSE, "required field 4 (prev_lsn) missing");
    record_refused(record_ok, RECORD_OK_N - 1, MRD_EPARSE, "required field 7 (deltas) missing");
    /* duplicates, disorder, unknown keys */
    memcpy(e, record_ok, sizeof(record_ok));
    e[RECORD_OK_N] = e[6];
    record_refused(e, RECORD_OK_N + 1, MRD_EPARSE, "key 6 after key 7");
    memcpy(e, record_ok, sizeof(record_ok));
    e[2] = record_ok[3];
    e[3] = record_ok[2];
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "required field 2 (epoch) missing before key 3");
    memcpy(e, record_ok, sizeof(record_ok));
    e[RECORD_OK_N] = (ent){10, E_UINT, 1};
    record_refused(e, RECORD_OK_N + 1, MRD_EPARSE, "unknown key 10");
    e[RECORD_OK_N] = (ent){1ULL << 40, E_UINT, 1};
    record_refused(e, RECORD_OK_N + 1, MRD_EPARSE, "unknown key");
    memcpy(e, record_ok, sizeof(record_ok));
    e[1].key = 0;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "key 0 after key 0");
    /* the optional txn (key 8) may be there or not */
    memcpy(e, record_ok, sizeof(record_ok));
    e[RECORD_OK_N] = (ent){8, E_UINT, 77};
    mrd_buf b;
    mrd_buf_init(&b);
    pack_map(&b, e, RECORD_OK_N + 1);
    wire_record rec;
    assert_int_equal(wire_record_decode(b.data, b.len, &rec, NULL), 0);
    assert_int_equal(rec.txn, 77);
    mrd_buf_free(&b);
}

static void record_invariants_checked(void **state)
{
    ent e[RECORD_OK_N];
    memcpy(e, record_ok, sizeof(e));
    e[4].v = 100; /* prev_lsn == lsn */
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "prev_lsn 100 not below lsn 100");
    memcpy(e, record_ok, sizeof(e));
    e[1].v = 0;
    e[4].v = 0;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "lsn 0");
    memcpy(e, record_ok, sizeof(e));
    e[6].v = 0x4;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "unknown flag bits 0x4");
    memcpy(e, record_ok, sizeof(e));
    e[6].v = WIRE_REC_FULL;
    e[7].v = 2;
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "full image");
    memcpy(e, record_ok, sizeof(e));
    e[7].v = WIRE_DELTAS_MAX + 1;
    record_refused(e, RECORD_OK_N, MRD_ETOOBIG,
                   "record field 7 (deltas): array of 65 entries, limit 64");
}

/* Hand-made deltas: each is [offset, bin of len] (or a mistyped variant). */
static void deltas_refused(const uint64_t *offsets, const uint32_t *lens, size_t n, int want_rc,
                           const char *want_text)
{
    mrd_buf b;
    mrd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_map(&pk, RECORD_OK_N);
    for (size_t i = 0; i < RECORD_OK_N - 1; i++)
        pack_ent(&pk, &record_ok[i]);
    msgpack_pack_uint64(&pk, 7);
    msgpack_pack_array(&pk, n);
    static uint8_t zeros[WIRE_PAGE_SIZE_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint64(&pk, offsets[i]);
        msgpack_pack_bin_with_body(&pk, zeros, lens[i]);
    }
    wire_record rec;
    mrd_msg msg = {{0}};
    int rc = wire_record_decode(b.data, b.len, &rec, &msg);
    if (rc != want_rc || strstr(msg.text, want_text) == NULL)
        fail_msg("rc %s, want %s; message \"%s\"", mrd_errname(rc), mrd_errname(want_rc), msg.text);
    mrd_buf_free(&b);
}

static void record_delta_ranges_checked(void **state)
{
    deltas_refused((uint64_t[]){65535}, (uint32_t[]){2}, 1, MRD_ETOOBIG, "page size limit");
    deltas_refused((uint64_t[]){0}, (uint32_t[]){65537}, 1, MRD_ETOOBIG, "bin of 65537 bytes");
    deltas_refused((uint64_t[]){1ULL << 33}, (uint32_t[]){1}, 1, MRD_EPARSE, "offset: value");
    deltas_refused((uint64_t[]){10}, (uint32_t[]){0}, 1, MRD_EPARSE, "delta 0 is empty");
    deltas_refused((uint64_t[]){10, 13}, (uint32_t[]){4, 4}, 2, MRD_EPARSE, "overlaps");
    deltas_refused((uint64_t[]){20, 10}, (uint32_t[]){4, 4}, 2, MRD_EPARSE, "overlaps");
    deltas_refused((uint64_t[]){10, 14}, (uint32_t[]){4, 4}, 2, 0, ""); /* adjacent is fine */
}

static void record_oversized_claims_refused(void **state)
{
    wire_record rec;
    mrd_msg msg;
    /* map32 claiming 4 billion entries */
    const uint8_t big_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01};
    assert_int_equal(wire_record_decode(big_map, sizeof(big_map), &rec, &msg), MRD_ETOOBIG);
    /* a map that fits the limit but not the bytes */
    const uint8_t short_map[] = {0x88, 0x00, 0x01};
    assert_int_equal(wire_record_decode(short_map, sizeof(short_map), &rec, &msg), MRD_ETRUNC);
    /* deltas: array32 of 2^32-1 and a bin32 of 1 GiB */
    mrd_buf b;
    mrd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_map(&pk, RECORD_OK_N);
    for (size_t i = 0; i < RECORD_OK_N - 1; i++)
        pack_ent(&pk, &record_ok[i]);
    size_t at = b.len;
    const uint8_t arr[] = {0x07, 0xdd, 0xff, 0xff, 0xff, 0xff};
    mrd_buf_append(&b, arr, sizeof(arr));
    assert_int_equal(wire_record_decode(b.data, b.len, &rec, &msg), MRD_ETOOBIG);
    b.len = at;
    const uint8_t bin[] = {0x07, 0x91, 0x92, 0x00, 0xc6, 0x40, 0x00, 0x00, 0x00, 1, 2, 3};
    mrd_buf_append(&b, bin, sizeof(bin));
    assert_int_equal(wire_record_decode(b.data, b.len, &rec, &msg), MRD_ETOOBIG);
    assert_non_null(strstr(msg.text, "bin of 1073741824 bytes, limit 65536"));
    mrd_buf_free(&b);
}

static void record_nesting_bombs_refused(void **state)
{
    /* A million nested arrays where deltas, a delta or an unknown key's value go. */
    ent e[RECORD_OK_N + 1];
    memcpy(e, record_ok, sizeof(record_ok));
    e[7] = (ent){7, E_BOMB, 1000000};
    record_refused(e, RECORD_OK_N, MRD_EPARSE, "delta 0: expected [offset, bytes], got 1 elements");
    memcpy(e, record_ok, sizeof(record_ok));
    e[RECORD_OK_N] = (ent){10, E_BOMB, 1000000};
    record_refused(e, RECORD_OK_N + 1, MRD_EPARSE, "unknown key 10");
    memcpy(e, record_ok, sizeof(record_ok));
    e[2] = (ent){2, E_BOMB, 1000000};
    record_refused(e, RECORD_OK_N, MRD_EPARSE,
                   "record field 2 (epoch): expected unsigned integer, got array");
    /* nested maps as the whole input */
    mrd_buf b;
    mrd_buf_init(&b);
    for (int i = 0; i < 100000; i++)
        mrd_buf_append(&b, "\x81\x00", 2);
    wire_record rec;
    assert_int_equal(wire_record_decode(b.data, b.len, &rec, NULL), MRD_EPARSE);
    mrd_buf_free(&b);
}

static void record_encoder_refuses_invalid(void **state)
{
    rng r = {0x5eed0003};
    pool_fill(&r);
    wire_record rec;
    random_record(&r, &rec);
    rec.prev_lsn = rec.lsn;
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_msg msg;
    assert_int_equal(wire_record_encode(&rec, &b, &msg), MRD_EINVAL);
    assert_int_equal(b.len, 0);
    rec.prev_lsn = 0;
    rec.flags = WIRE_REC_FULL;
    rec.delta_count = 2;
    rec.deltas[0] = (wire_delta){0, 4, pool};
    rec.deltas[1] = (wire_delta){8, 4, pool};
    assert_int_equal(wire_record_check(&rec, &msg), MRD_EINVAL);
    rec.flags = 0;
    rec.deltas[1].data = NULL;
    assert_int_equal(wire_record_check(&rec, &msg), MRD_EINVAL);
    mrd_buf_free(&b);
}

/* ---- batches ---------------------------------------------------------------------------- */

static wire_record batch_recs[WIRE_BATCH_RECORDS_MAX];

static void batch_check_equal(const mrd_buf *b, uint32_t n)
{
    wire_batch batch;
    mrd_msg msg;
    int rc = wire_batch_decode(b->data, b->len, &batch, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
    assert_int_equal(batch.kind, WIRE_BATCH_LOG);
    assert_int_equal(batch.count, n);
    assert_int_equal(batch.lsn_first, batch_recs[0].lsn);
    assert_int_equal(batch.lsn_last, batch_recs[n - 1].lsn);
    wire_batch_iter it;
    wire_batch_iter_init(&it, &batch);
    wire_record rec;
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(wire_batch_iter_next(&it, &rec), 1);
        assert_true(wire_record_equal(&rec, &batch_recs[i]));
    }
    assert_int_equal(wire_batch_iter_next(&it, &rec), 0);
}

static void batch_round_trips(void **state)
{
    rng r = {0x5eed0010};
    pool_fill(&r);
    mrd_buf b;
    mrd_buf_init(&b);
    for (int iter = 0; iter < 300; iter++) {
        uint32_t n = 1 + rng_below(&r, iter % 10 == 0 ? 100 : 12);
        b.len = 0;
        random_batch(&r, n, batch_recs, &b);
        batch_check_equal(&b, n);
    }
    mrd_buf_free(&b);
}

static void batch_every_truncation_refused(void **state)
{
    rng r = {0x5eed0011};
    pool_fill(&r);
    mrd_buf b;
    mrd_buf_init(&b);
    for (int iter = 0; iter < 10; iter++) {
        b.len = 0;
        random_batch(&r, 1 + rng_below(&r, 5), batch_recs, &b);
        wire_batch batch;
        for (size_t cut = 0; cut < b.len; cut++)
            assert_int_equal(wire_batch_decode(b.data, cut, &batch, NULL), MRD_ETRUNC);
    }
    mrd_buf_free(&b);
}

/* Re-encodes batch_recs[0..n) by hand with one thing changed and expects a refusal. */
static void batch_refused(uint32_t n, uint64_t kind, uint64_t first, uint64_t last, int want_rc,
                          const char *want_text)
{
    mrd_buf b;
    mrd_buf_init(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_map(&pk, 5);
    uint64_t head[] = {0, 1, 1, kind, 2, first, 3, last, 4};
    for (size_t i = 0; i < MRD_ARRAY_LEN(head); i++)
        msgpack_pack_uint64(&pk, head[i]);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++)
        encode_ok(&batch_recs[i], &b);
    wire_batch batch;
    mrd_msg msg = {{0}};
    int rc = wire_batch_decode(b.data, b.len, &batch, &msg);
    if (rc != want_rc || strstr(msg.text, want_text) == NULL)
        fail_msg("rc %s, want %s; message \"%s\"", mrd_errname(rc), mrd_errname(want_rc), msg.text);
    mrd_buf_free(&b);
}

static void batch_invariants_checked(void **state)
{
    rng r = {0x5eed0012};
    pool_fill(&r);
    mrd_buf b;
    mrd_buf_init(&b);
    random_batch(&r, 3, batch_recs, &b);
    mrd_buf_free(&b);
    uint64_t first = batch_recs[0].lsn, last = batch_recs[2].lsn;
    batch_refused(3, WIRE_BATCH_LOG, first, last, 0, "");
    batch_refused(3, 9, first, last, MRD_EPARSE, "unknown kind 9");
    batch_refused(3, WIRE_BATCH_LOG, first + 1, last, MRD_EPARSE, "lsn_first");
    batch_refused(3, WIRE_BATCH_LOG, first, last + 1, MRD_EPARSE, "record 2: lsn");
    batch_refused(0, WIRE_BATCH_LOG, first, last, MRD_EPARSE, "no records");
    batch_recs[1].lsn = first; /* not above the previous */
    batch_recs[1].prev_lsn = 0;
    batch_refused(3, WIRE_BATCH_LOG, first, last, MRD_EPARSE,
                  "batch field 4 (records): record 1: lsn");
    batch_recs[1].lsn = first + 1;
    batch_recs[2].epoch = batch_recs[1].epoch + 1;
    batch_recs[1].epoch = batch_recs[2].epoch + 1;
    batch_refused(3, WIRE_BATCH_LOG, first, last, MRD_EPARSE, "record 2: epoch");
}

static void batch_oversized_claims_refused(void **state)
{
    /* a records array claiming more than WIRE_BATCH_RECORDS_MAX, and more than the bytes */
    const uint8_t big[] = {0x85, 0, 1, 1, 1, 2, 1, 3, 1, 4, 0xdd, 0, 0, 0x10, 0x01, 0x80};
    wire_batch batch;
    mrd_msg msg;
    assert_int_equal(wire_batch_decode(big, sizeof(big), &batch, &msg), MRD_ETOOBIG);
    assert_non_null(strstr(msg.text, "array of 4097 entries, limit 4096"));
    const uint8_t many[] = {0x85, 0, 1, 1, 1, 2, 1, 3, 1, 4, 0xdc, 0x10, 0x00, 0x80};
    assert_int_equal(wire_batch_decode(many, sizeof(many), &batch, &msg), MRD_ETRUNC);
    /* nested arrays where records go */
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_append(&b, big, 10);
    for (int i = 0; i < 100000; i++)
        mrd_buf_append(&b, "\x91", 1);
    mrd_buf_append(&b, "\xc0", 1);
    assert_int_equal(wire_batch_decode(b.data, b.len, &batch, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "record 0: record: expected map, got array"));
    mrd_buf_free(&b);
}

static void batch_builder_limits(void **state)
{
    rng r = {0x5eed0013};
    pool_fill(&r);
    mrd_buf b;
    mrd_buf_init(&b);
    wire_batch_builder bb;
    mrd_msg msg;
    /* empty */
    assert_int_equal(wire_batch_begin(&bb, &b, WIRE_BATCH_LOG), 0);
    assert_int_equal(wire_batch_finish(&bb, &msg), MRD_EINVAL);
    assert_int_equal(b.len, 0);
    assert_int_equal(wire_batch_begin(&bb, &b, 77), MRD_EINVAL);
    /* count limit */
    assert_int_equal(wire_batch_begin(&bb, &b, WIRE_BATCH_LOG), 0);
    wire_record rec;
    random_record(&r, &rec);
    rec.delta_count = 0;
    rec.flags = 0;
    rec.vol_prev_lsn = rec.prev_lsn;
    for (uint32_t i = 0; i < WIRE_BATCH_RECORDS_MAX; i++) {
        rec.lsn = rec.prev_lsn + 1 + i;
        assert_int_equal(wire_batch_add(&bb, &rec, &msg), 0);
    }
    rec.lsn++;
    assert_int_equal(wire_batch_add(&bb, &rec, &msg), MRD_ETOOBIG);
    assert_int_equal(wire_batch_finish(&bb, &msg), 0);
    wire_batch batch;
    assert_int_equal(wire_batch_decode(b.data, b.len, &batch, &msg), 0);
    assert_int_equal(batch.count, WIRE_BATCH_RECORDS_MAX);
    /* byte limit: full 64 KiB images */
    b.len = 0;
    assert_int_equal(wire_batch_begin(&bb, &b, WIRE_BATCH_LOG), 0);
    rec.flags = WIRE_REC_FULL;
    rec.delta_count = 1;
    rec.deltas[0] = (wire_delta){0, WIRE_PAGE_SIZE_MAX, pool};
    uint32_t added = 0;
    int rc;
    while ((rc = wire_batch_add(&bb, &rec, &msg)) == 0) {
        added++;
        rec.lsn++;
    }
    assert_int_equal(rc, MRD_ETOOBIG);
    assert_true(added > 60 && added < 64);
    size_t len = b.len;
    /* order and epochs */
    rec.lsn--;
    assert_int_equal(wire_batch_add(&bb, &rec, &msg), MRD_EINVAL);
    assert_int_equal(b.len, len);
    assert_int_equal(wire_batch_finish(&bb, &msg), 0);
    assert_true(b.len <= WIRE_FRAME_BYTES_MAX);
    assert_int_equal(wire_batch_decode(b.data, b.len, &batch, &msg), 0);
    assert_int_equal(batch.count, added);
    mrd_buf_free(&b);
}

/* ---- frames ----------------------------------------------------------------------------- */

static void frame_every_bit_flip_refused(void **state)
{
    rng r = {0x5eed0020};
    pool_fill(&r);
    mrd_buf b;
    mrd_buf_init(&b);
    random_batch(&r, 3, batch_recs, &b); /* for LSNs and epochs in order */
    /* Small deltas, so that flipping every bit stays quick. */
    b.len = 0;
    size_t at;
    wire_batch_builder bb;
    assert_int_equal(wire_frame_begin(&b, &at), 0);
    assert_int_equal(wire_batch_begin(&bb, &b, WIRE_BATCH_LOG), 0);
    for (uint32_t i = 0; i < 3; i++) {
        wire_record rec = batch_recs[i];
        rec.flags &= ~WIRE_REC_FULL;
        rec.delta_count = 2;
        rec.deltas[0] = (wire_delta){10, 20, pool};
        rec.deltas[1] = (wire_delta){4000, 9, pool + 50};
        assert_int_equal(wire_batch_add(&bb, &rec, NULL), 0);
    }
    assert_int_equal(wire_batch_finish(&bb, NULL), 0);
    assert_int_equal(wire_frame_end(&b, at, NULL), 0);
    unsigned flips = 0, crc = 0, big = 0, cut = 0;
    for (size_t bit = 0; bit < b.len * 8; bit++) {
        b.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        wire_frame_reader fr;
        wire_frame_reader_init(&fr, 0);
        size_t used;
        wire_frame f;
        mrd_msg msg;
        int rc = wire_frame_reader_feed(&fr, b.data, b.len, &used, &f, &msg);
        assert_true(rc != 1);
        if (rc == MRD_ECRC) crc++;
        if (rc == MRD_ETOOBIG) big++;
        if (rc == 0) {
            assert_true(wire_frame_reader_pending(&fr) > 0); /* length grew: the stream is cut */
            cut++;
        }
        wire_frame_reader_close(&fr);
        b.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        flips++;
    }
    assert_int_equal(flips, crc + big + cut);
    assert_true(crc >= (b.len - 8) * 8);
    mrd_buf_free(&b);
}

/* Frames n random payloads into stream and keeps them in payloads. */
static void make_stream(rng *r, mrd_buf *stream, mrd_buf *payloads, size_t *lens, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        size_t len = rng_below(r, 8) == 0 ? 0 : rng_below(r, rng_below(r, 4) ? 100 : 20000);
        lens[i] = len;
        size_t off = rng_below(r, WIRE_PAGE_SIZE_MAX - 20000);
        assert_int_equal(mrd_buf_append(&payloads[0], pool + off, len), 0);
        assert_int_equal(wire_frame_append(stream, pool + off, len, NULL), 0);
    }
}

/* Feeds stream in pieces (chunk 0 = random sizes) and checks the frames that come out. */
static void feed_stream(rng *r, const mrd_buf *stream, const mrd_buf *payloads, const size_t *lens,
                        uint32_t n, size_t chunk)
{
    wire_frame_reader fr;
    wire_frame_reader_init(&fr, 0);
    size_t at = 0, got = 0, payload_at = 0;
    while (at < stream->len) {
        size_t piece = chunk ? chunk : 1 + rng_below(r, rng_below(r, 2) ? 16 : 70000);
        if (piece > stream->len - at) piece = stream->len - at;
        const uint8_t *p = stream->data + at;
        size_t left = piece;
        while (left > 0) {
            size_t used;
            wire_frame f;
            mrd_msg msg;
            int rc = wire_frame_reader_feed(&fr, p, left, &used, &f, &msg);
            assert_true(rc == 0 || rc == 1);
            assert_true(used <= left);
            p += used;
            left -= used;
            if (rc == 1) {
                assert_true(got < n);
                assert_int_equal(f.len, lens[got]);
                if (f.len) assert_memory_equal(f.data, payloads->data + payload_at, f.len);
                payload_at += f.len;
                got++;
            } else {
                assert_int_equal(left, 0);
            }
        }
        at += piece;
    }
    assert_int_equal(got, n);
    assert_int_equal(wire_frame_reader_pending(&fr), 0);
    wire_frame_reader_close(&fr);
}

static void frame_reader_any_chunking(void **state)
{
    rng r = {0x5eed0021};
    pool_fill(&r);
    enum { N = 60 };
    mrd_buf stream, payloads;
    size_t lens[N];
    mrd_buf_init(&stream);
    mrd_buf_init(&payloads);
    make_stream(&r, &stream, &payloads, lens, N);
    feed_stream(&r, &stream, &payloads, lens, N, 1);
    feed_stream(&r, &stream, &payloads, lens, N, 7);
    feed_stream(&r, &stream, &payloads, lens, N, stream.len);
    for (int i = 0; i < 50; i++)
        feed_stream(&r, &stream, &payloads, lens, N, 0);
    mrd_buf_free(&stream);
    mrd_buf_free(&payloads);
}

static void frame_reader_errors(void **state)
{
    wire_frame_reader fr;
    size_t used;
    wire_frame f;
    mrd_msg msg;
    /* oversize: refused once the header is in, before any payload, and sticky */
    wire_frame_reader_init(&fr, 1000);
    const uint8_t head[8] = {0xe9, 0x03, 0, 0, 0, 0, 0, 0}; /* 1001 bytes */
    for (int i = 0; i < 7; i++)
        assert_int_equal(wire_frame_reader_feed(&fr, head + i, 1, &used, &f, &msg), 0);
    assert_int_equal(wire_frame_reader_feed(&fr, head + 7, 1, &used, &f, &msg), MRD_ETOOBIG);
    assert_non_null(strstr(msg.text, "frame at stream byte 0: 1001 bytes, limit 1000"));
    assert_int_equal(wire_frame_reader_feed(&fr, head, 8, &used, &f, &msg), MRD_ETOOBIG);
    assert_int_equal(used, 0);
    wire_frame_reader_close(&fr);
    /* the default limit */
    wire_frame_reader_init(&fr, 0);
    const uint8_t huge[8] = {0x01, 0x00, 0x40, 0x00, 0, 0, 0, 0};
    assert_int_equal(wire_frame_reader_feed(&fr, huge, 8, &used, &f, &msg), MRD_ETOOBIG);
    wire_frame_reader_close(&fr);
    /* crc mismatch on the second frame names its stream offset */
    mrd_buf b;
    mrd_buf_init(&b);
    assert_int_equal(wire_frame_append(&b, "hello", 5, NULL), 0);
    assert_int_equal(wire_frame_append(&b, "world", 5, NULL), 0);
    b.data[b.len - 1] ^= 1;
    wire_frame_reader_init(&fr, 0);
    assert_int_equal(wire_frame_reader_feed(&fr, b.data, b.len, &used, &f, &msg), 1);
    assert_int_equal(used, 13);
    assert_memory_equal(f.data, "hello", 5);
    assert_int_equal(wire_frame_reader_feed(&fr, b.data + 13, b.len - 13, &used, &f, &msg),
                     MRD_ECRC);
    assert_non_null(strstr(msg.text, "frame at stream byte 13: crc32c"));
    wire_frame_reader_close(&fr);
    /* a cut stream leaves bytes pending */
    wire_frame_reader_init(&fr, 0);
    assert_int_equal(wire_frame_reader_feed(&fr, b.data, 10, &used, &f, &msg), 0);
    assert_int_equal(wire_frame_reader_pending(&fr), 10);
    wire_frame_reader_close(&fr);
    /* the writer's limit */
    assert_int_equal(wire_frame_append(&b, pool, WIRE_FRAME_BYTES_MAX + 1, &msg), MRD_ETOOBIG);
    assert_int_equal(b.len, 26);
    mrd_buf_free(&b);
}

/* ---- page deltas ------------------------------------------------------------------------ */

/* A random edit of page: a few bytes, some runs, or most of it. */
static void random_edit(rng *r, uint8_t *page, uint32_t size)
{
    uint32_t kind = rng_below(r, 5);
    uint32_t edits = kind == 0   ? 1
                     : kind == 1 ? rng_below(r, 10)
                     : kind == 2 ? rng_below(r, 200)
                                 : rng_below(r, 3000);
    for (uint32_t i = 0; i < edits; i++) {
        uint32_t at = rng_below(r, size);
        uint32_t len = 1 + rng_below(r, kind == 4 ? 300 : 12);
        if (len > size - at) len = size - at;
        for (uint32_t j = 0; j < len; j++)
            page[at + j] = (uint8_t)rng_next(r);
    }
}

static void delta_compute_apply_round_trips(void **state)
{
    rng r = {0x5eed0030};
    static uint8_t base[WIRE_PAGE_SIZE_MAX], page[WIRE_PAGE_SIZE_MAX], copy[WIRE_PAGE_SIZE_MAX];
    static const uint32_t sizes[] = {1, 16, 512, 4096, 65536};
    mrd_buf enc;
    mrd_buf_init(&enc);
    unsigned full = 0, deltas = 0, same = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint32_t size = sizes[rng_below(&r, MRD_ARRAY_LEN(sizes))];
        for (uint32_t i = 0; i < size; i++)
            base[i] = (uint8_t)(rng_below(&r, 3) ? 0 : rng_next(&r));
        memcpy(page, base, size);
        random_edit(&r, page, size);
        wire_record rec = {.lsn = 5, .prev_lsn = 4, .flags = WIRE_REC_CPL};
        bool no_base = rng_below(&r, 20) == 0;
        assert_int_equal(wire_delta_compute(no_base ? NULL : base, page, size, &rec), 0);
        assert_int_equal(wire_record_check(&rec, NULL), 0);
        assert_true(rec.flags & WIRE_REC_CPL);
        full += (rec.flags & WIRE_REC_FULL) != 0;
        same += rec.delta_count == 0;
        deltas += rec.delta_count > 0 && !(rec.flags & WIRE_REC_FULL);
        if (no_base) assert_true(rec.flags & WIRE_REC_FULL);
        /* through the wire and back, then onto the old page */
        enc.len = 0;
        encode_ok(&rec, &enc);
        wire_record back;
        assert_int_equal(wire_record_decode(enc.data, enc.len, &back, NULL), 0);
        memcpy(copy, base, size);
        mrd_msg msg;
        int rc = wire_record_apply(copy, size, &back, &msg);
        if (rc != 0) fail_msg("%s", msg.text);
        assert_memory_equal(copy, page, size);
        /* deltas cost no more than a full image plus framing */
        assert_true(enc.len <= size + 64);
    }
    if (full < 100 || deltas < 1000 || same == 0)
        fail_msg("full %u, deltas %u, unchanged %u", full, deltas, same);
    mrd_buf_free(&enc);
}

static void delta_merges_small_gaps(void **state)
{
    static uint8_t base[4096], page[4096];
    memset(base, 0, sizeof(base));
    memcpy(page, base, sizeof(page));
    page[100] = 1;
    page[100 + 1 + WIRE_DELTA_GAP_BYTES] = 1; /* a gap of exactly GAP: merged */
    page[1000] = 1;
    page[1000 + 2 + WIRE_DELTA_GAP_BYTES] = 1; /* a gap of GAP + 1: kept apart */
    wire_record rec = {.lsn = 1};
    assert_int_equal(wire_delta_compute(base, page, sizeof(page), &rec), 0);
    assert_int_equal(rec.delta_count, 3);
    assert_int_equal(rec.deltas[0].offset, 100);
    assert_int_equal(rec.deltas[0].len, WIRE_DELTA_GAP_BYTES + 2);
    assert_int_equal(rec.deltas[1].offset, 1000);
    assert_int_equal(rec.deltas[1].len, 1);
    /* more runs than WIRE_DELTAS_MAX: the gap widens until they fit */
    for (uint32_t i = 0; i < 100; i++)
        page[2000 + i * 20] = 2;
    assert_int_equal(wire_delta_compute(base, page, sizeof(page), &rec), 0);
    assert_true(rec.delta_count <= WIRE_DELTAS_MAX);
    assert_false(rec.flags & WIRE_REC_FULL);
    /* most of the page changed: a full image */
    memset(page, 3, 3000);
    assert_int_equal(wire_delta_compute(base, page, sizeof(page), &rec), 0);
    assert_true(rec.flags & WIRE_REC_FULL);
    assert_int_equal(rec.delta_count, 1);
    assert_int_equal(rec.deltas[0].len, sizeof(page));
    assert_int_equal(wire_delta_compute(base, page, 0, &rec), MRD_EINVAL);
    assert_int_equal(wire_delta_compute(base, page, WIRE_PAGE_SIZE_MAX + 1, &rec), MRD_EINVAL);
}

static void apply_checks_bounds(void **state)
{
    uint8_t page[512], before[512];
    memset(page, 7, sizeof(page));
    memcpy(before, page, sizeof(page));
    wire_record rec = {.lsn = 1, .delta_count = 2};
    rec.deltas[0] = (wire_delta){0, 4, (const uint8_t *)"abcd"};
    rec.deltas[1] = (wire_delta){510, 4, (const uint8_t *)"abcd"};
    mrd_msg msg;
    assert_int_equal(wire_record_apply(page, sizeof(page), &rec, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "delta 1 [510, +4) outside a page of 512 bytes"));
    assert_memory_equal(page, before, sizeof(page)); /* nothing applied */
    rec.delta_count = 1;
    rec.flags = WIRE_REC_FULL;
    assert_int_equal(wire_record_apply(page, sizeof(page), &rec, &msg), MRD_EINVAL);
    rec.flags = 0;
    assert_int_equal(wire_record_apply(page, sizeof(page), &rec, &msg), 0);
    assert_memory_equal(page, "abcd", 4);
    rec.delta_count = WIRE_DELTAS_MAX + 1;
    assert_int_equal(wire_record_apply(page, sizeof(page), &rec, &msg), MRD_EINVAL);
}


/* An ack round-trips; every truncation, trailing byte and broken invariant is refused. */
static void ack_round_trips_and_refusals(void **state)
{
    (void)state;
    wire_ack ack = {.epoch = 7, .pg = 3, .scl = 1000, .lsn_durable = 1234567890123ull}, back;
    mrd_buf buf;
    mrd_buf_init(&buf);
    mrd_msg msg = {{0}};
    assert_int_equal(wire_ack_encode(&ack, &buf, &msg), 0);
    assert_int_equal(wire_ack_decode(buf.data, buf.len, &back, &msg), 0);
    assert_memory_equal(&ack, &back, sizeof(ack));
    for (size_t cut = 0; cut < buf.len; cut++)
        assert_int_not_equal(wire_ack_decode(buf.data, cut, &back, &msg), 0);
    mrd_buf_append(&buf, "x", 1);
    assert_int_equal(wire_ack_decode(buf.data, buf.len, &back, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "trailing"));
    ack.lsn_durable = 5; /* below scl */
    assert_int_equal(wire_ack_encode(&ack, &buf, &msg), MRD_EINVAL);
    mrd_buf_free(&buf);
}

static void mark_round_trips_and_refusals(void **state)
{
    (void)state;
    wire_mark mark = {.vdl = 99, .epoch = 3, .lsn_last = 120}, back;
    mrd_buf buf;
    mrd_buf_init(&buf);
    mrd_msg msg = {{0}};
    assert_int_equal(wire_mark_encode(&mark, &buf, &msg), 0);
    assert_int_equal(wire_mark_decode(buf.data, buf.len, &back, &msg), 0);
    assert_memory_equal(&mark, &back, sizeof(mark));
    for (size_t cut = 0; cut < buf.len; cut++)
        assert_int_not_equal(wire_mark_decode(buf.data, cut, &back, &msg), 0);
    /* An ack is not a mark: it has a fourth field. */
    wire_ack ack = {.epoch = 1, .pg = 0, .scl = 1, .lsn_durable = 1};
    buf.len = 0;
    assert_int_equal(wire_ack_encode(&ack, &buf, &msg), 0);
    assert_int_not_equal(wire_mark_decode(buf.data, buf.len, &back, &msg), 0);
    mark.vdl = 121; /* above lsn_last */
    assert_int_equal(wire_mark_encode(&mark, &buf, &msg), MRD_EINVAL);
    mrd_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(record_round_trips),
        cmocka_unit_test(record_every_truncation_refused),
        cmocka_unit_test(record_accepts_any_integer_width),
        cmocka_unit_test(record_mistyped_fields_refused),
        cmocka_unit_test(record_keys_checked),
        cmocka_unit_test(record_invariants_checked),
        cmocka_unit_test(record_delta_ranges_checked),
        cmocka_unit_test(record_oversized_claims_refused),
        cmocka_unit_test(record_nesting_bombs_refused),
        cmocka_unit_test(record_encoder_refuses_invalid),
        cmocka_unit_test(batch_round_trips),
        cmocka_unit_test(batch_every_truncation_refused),
        cmocka_unit_test(batch_invariants_checked),
        cmocka_unit_test(batch_oversized_claims_refused),
        cmocka_unit_test(batch_builder_limits),
        cmocka_unit_test(frame_every_bit_flip_refused),
        cmocka_unit_test(frame_reader_any_chunking),
        cmocka_unit_test(frame_reader_errors),
        cmocka_unit_test(delta_compute_apply_round_trips),
        cmocka_unit_test(delta_merges_small_gaps),
        cmocka_unit_test(apply_checks_bounds),
        cmocka_unit_test(ack_round_trips_and_refusals),
        cmocka_unit_test(mark_round_trips_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
