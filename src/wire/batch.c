/*
 * The batch: a header and a run of records in strictly increasing LSN order.
 * Decoding validates every record once and keeps them encoded in the input;
 * the iterator walks them again without checks that could fail. The builder
 * writes the header's LSNs as 9-byte uint64 and the records array header as a
 * 5-byte array32 so that it can fill them in when the batch is finished.
 */
#include <string.h>

#include "wire_private.h"

#define BATCH_DESC(k, m, t, r) WIRE_FIELD_DESC(wire_batch, k, m, t, r)
#define BATCH_WIDTH(k, m, t, r) WIRE_FIELD_WIDTH_CHECK(wire_batch, k, m, t, r)
#define BATCH_POS(k, m, t, r) WIRE_FIELD_POS(wire_batch, k, m, t, r)
#define BATCH_KEY_CHECK(k, m, t, r) WIRE_FIELD_KEY_CHECK(wire_batch, k, m, t, r)
#define BATCH_KEY(k, m, t, r) BATCH_KEY_##m = k,

enum { WIRE_BATCH_FIELDS(BATCH_POS) BATCH_FIELD_COUNT };
enum { WIRE_BATCH_FIELDS(BATCH_KEY) };
WIRE_BATCH_FIELDS(BATCH_WIDTH)
WIRE_BATCH_FIELDS(BATCH_KEY_CHECK)

static const wire_field batch_fields[] = {WIRE_BATCH_FIELDS(BATCH_DESC)};

const wire_msg_desc wire_batch_desc = {
    .what = "batch",
    .fields = batch_fields,
    .count = BATCH_FIELD_COUNT,
};

/* ---- decode ----------------------------------------------------------------------------- */

/* Checks record i against the batch header and the record before it. */
static int record_in_order(const wire_batch *batch, uint32_t i, uint32_t n, const wire_record *rec,
                           const wire_record *prev, mrd_msg *msg)
{
    if (i == 0 && rec->lsn != batch->lsn_first)
        return mrd_fail(msg, MRD_EPARSE, "lsn %llu but the header's lsn_first is %llu",
                        (unsigned long long)rec->lsn, (unsigned long long)batch->lsn_first);
    if (i > 0 && rec->lsn <= prev->lsn)
        return mrd_fail(msg, MRD_EPARSE, "lsn %llu not above the previous record's %llu",
                        (unsigned long long)rec->lsn, (unsigned long long)prev->lsn);
    if (i > 0 && rec->epoch < prev->epoch)
        return mrd_fail(msg, MRD_EPARSE, "epoch %llu below the previous record's %llu",
                        (unsigned long long)rec->epoch, (unsigned long long)prev->epoch);
    if (i == n - 1 && rec->lsn != batch->lsn_last)
        return mrd_fail(msg, MRD_EPARSE, "lsn %llu but the header's lsn_last is %llu",
                        (unsigned long long)rec->lsn, (unsigned long long)batch->lsn_last);
    return 0;
}

int wire_records_decode(wire_cur *c, wire_batch *batch, mrd_msg *msg)
{
    uint32_t n;
    int rc = wire_cur_array(c, WIRE_BATCH_RECORDS_MAX, &n);
    if (rc != 0) return mrd_fail(msg, rc, "%s at byte %zu", c->why, c->at);
    if (n == 0) return mrd_fail(msg, MRD_EPARSE, "no records at byte %zu", wire_cur_offset(c));
    wire_record recs[2]; /* the current record and the one before it */
    batch->records = c->pos;
    for (uint32_t i = 0; i < n; i++) {
        wire_record *rec = &recs[i & 1], *prev = &recs[(i + 1) & 1];
        rc = wire_record_read(c, rec, msg);
        if (rc == 0) rc = record_in_order(batch, i, n, rec, prev, msg);
        if (rc != 0) {
            wire_msg_prefix(msg, "record %u", i);
            return rc;
        }
    }
    batch->count = n;
    batch->records_len = (size_t)(c->pos - batch->records);
    return 0;
}

int wire_batch_decode(const uint8_t *data, size_t len, wire_batch *batch, mrd_msg *msg)
{
    wire_cur c;
    wire_cur_init(&c, data, len);
    memset(batch, 0, sizeof(*batch));
    int rc = wire_map_decode(&c, &wire_batch_desc, batch, msg);
    if (rc != 0) return rc;
    if (c.pos != c.end)
        return mrd_fail(msg, MRD_EPARSE, "batch: %zu trailing bytes at byte %zu",
                        (size_t)(c.end - c.pos), wire_cur_offset(&c));
    if (batch->kind != WIRE_BATCH_LOG)
        return mrd_fail(msg, MRD_EPARSE, "batch: unknown kind %u", batch->kind);
    return 0;
}

void wire_batch_iter_init(wire_batch_iter *it, const wire_batch *batch)
{
    it->pos = batch->records;
    it->end = batch->records + batch->records_len;
    it->left = batch->count;
}

int wire_batch_iter_next(wire_batch_iter *it, wire_record *rec)
{
    if (it->left == 0) return 0;
    wire_cur c;
    wire_cur_init(&c, it->pos, (size_t)(it->end - it->pos));
    int rc = wire_record_read(&c, rec, NULL);
    if (rc != 0) {
        it->left = 0;
        return rc;
    }
    it->pos = c.pos;
    it->left--;
    return 1;
}

/* ---- build ------------------------------------------------------------------------------ */

/* Byte positions of the patched header values, from the batch's start. */
#define AT_LSN_FIRST 6u /* map, 0, 1, 1, kind (1 byte: WIRE_BATCH_LOG), 2 */
#define AT_LSN_LAST 16u /* 0xcf + 8 bytes, 3 */
#define AT_COUNT 26u    /* 0xcf + 8 bytes, 4 */
#define HEAD_BYTES 31u  /* 0xdd + 4 bytes */

static void store_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

int wire_batch_begin(wire_batch_builder *b, mrd_buf *out, uint32_t kind)
{
    if (kind != WIRE_BATCH_LOG) return MRD_EINVAL;
    /* clang-format off */
    uint8_t head[HEAD_BYTES] = {
        0x80 | (1 + BATCH_FIELD_COUNT), WIRE_KEY_VERSION, WIRE_VERSION,
        BATCH_KEY_kind, (uint8_t)kind,
        BATCH_KEY_lsn_first, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0,
        BATCH_KEY_lsn_last, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0,
        BATCH_KEY_records, 0xdd, 0, 0, 0, 0,
    };
    /* clang-format on */
    _Static_assert(WIRE_BATCH_LOG < 0x80, "kind fits a positive fixint");
    memset(b, 0, sizeof(*b));
    b->out = out;
    b->start = out->len;
    return mrd_buf_append(out, head, sizeof(head));
}

static int builder_admits(const wire_batch_builder *b, const wire_record *rec, mrd_msg *msg)
{
    if (b->count >= WIRE_BATCH_RECORDS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "batch full: %u records", b->count);
    if (b->count > 0 && rec->lsn <= b->lsn_last)
        return mrd_fail(msg, MRD_EINVAL, "record lsn %llu not above the batch's last %llu",
                        (unsigned long long)rec->lsn, (unsigned long long)b->lsn_last);
    if (b->count > 0 && rec->epoch < b->epoch_last)
        return mrd_fail(msg, MRD_EINVAL, "record epoch %llu below the batch's last %llu",
                        (unsigned long long)rec->epoch, (unsigned long long)b->epoch_last);
    size_t bytes = b->out->len - b->start + wire_record_size(rec);
    if (bytes > WIRE_FRAME_BYTES_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "batch would be %zu bytes, limit %u", bytes,
                        WIRE_FRAME_BYTES_MAX);
    return 0;
}

int wire_batch_add(wire_batch_builder *b, const wire_record *rec, mrd_msg *msg)
{
    int rc = wire_record_check(rec, msg);
    if (rc == 0) rc = builder_admits(b, rec, msg);
    if (rc == 0) rc = wire_record_encode(rec, b->out, msg);
    if (rc != 0) return rc;
    if (b->count == 0) b->lsn_first = rec->lsn;
    b->lsn_last = rec->lsn;
    b->epoch_last = rec->epoch;
    b->count++;
    return 0;
}

int wire_batch_finish(wire_batch_builder *b, mrd_msg *msg)
{
    if (b->count == 0) {
        wire_batch_abort(b);
        return mrd_fail(msg, MRD_EINVAL, "empty batch");
    }
    uint8_t *head = b->out->data + b->start;
    store_be(head + AT_LSN_FIRST + 1, b->lsn_first, 8);
    store_be(head + AT_LSN_LAST + 1, b->lsn_last, 8);
    store_be(head + AT_COUNT + 1, b->count, 4);
    return 0;
}

void wire_batch_abort(wire_batch_builder *b)
{
    b->out->len = b->start;
    b->count = 0;
}
