/* The log record: its field list, invariants, encoder, decoder and deltas. */
#include <stdio.h>
#include <string.h>

#include "wire_private.h"

#define RECORD_DESC(k, m, t, r) WIRE_FIELD_DESC(wire_record, k, m, t, r)
#define RECORD_WIDTH(k, m, t, r) WIRE_FIELD_WIDTH_CHECK(wire_record, k, m, t, r)
#define RECORD_POS(k, m, t, r) WIRE_FIELD_POS(wire_record, k, m, t, r)
#define RECORD_KEY(k, m, t, r) WIRE_FIELD_KEY_CHECK(wire_record, k, m, t, r)

enum { WIRE_RECORD_FIELDS(RECORD_POS) RECORD_FIELD_COUNT };
WIRE_RECORD_FIELDS(RECORD_WIDTH)
WIRE_RECORD_FIELDS(RECORD_KEY)

static const wire_field record_fields[] = {WIRE_RECORD_FIELDS(RECORD_DESC)};

const wire_msg_desc wire_record_desc = {
    .what = "record",
    .fields = record_fields,
    .count = RECORD_FIELD_COUNT,
};

/* ---- invariants ------------------------------------------------------------------------- */

/* Describes the first broken invariant of one delta into why; false if none. */
static bool delta_invalid(const wire_record *rec, uint32_t i, char *why, size_t cap)
{
    const wire_delta *d = &rec->deltas[i];
    uint64_t end = (uint64_t)d->offset + d->len;
    if (d->len == 0) return snprintf(why, cap, "delta %u is empty", i), true;
    if (d->data == NULL) return snprintf(why, cap, "delta %u has no bytes", i), true;
    if (end > WIRE_PAGE_SIZE_MAX)
        return snprintf(why, cap, "delta %u ends at %llu, past the page size limit %u", i,
                        (unsigned long long)end, WIRE_PAGE_SIZE_MAX),
               true;
    if (i > 0 && d->offset < rec->deltas[i - 1].offset + rec->deltas[i - 1].len)
        return snprintf(why, cap, "delta %u at offset %u overlaps or precedes delta %u", i,
                        d->offset, i - 1),
               true;
    return false;
}

/* Describes the first broken invariant of rec into why; false if none. */
static bool record_invalid(const wire_record *rec, char *why, size_t cap)
{
    if (rec->lsn == 0) return snprintf(why, cap, "lsn 0 (LSNs start at 1)"), true;
    if (rec->vol_prev_lsn >= rec->lsn)
        return snprintf(why, cap, "vol_prev_lsn %llu not below lsn %llu",
                        (unsigned long long)rec->vol_prev_lsn, (unsigned long long)rec->lsn),
               true;
    if (rec->prev_lsn >= rec->lsn)
        return snprintf(why, cap, "prev_lsn %llu not below lsn %llu",
                        (unsigned long long)rec->prev_lsn, (unsigned long long)rec->lsn),
               true;
    if (rec->flags & ~WIRE_REC_FLAGS_KNOWN)
        return snprintf(why, cap, "unknown flag bits 0x%x", rec->flags & ~WIRE_REC_FLAGS_KNOWN),
               true;
    if (rec->delta_count > WIRE_DELTAS_MAX)
        return snprintf(why, cap, "%u deltas, limit %u", rec->delta_count, WIRE_DELTAS_MAX), true;
    if ((rec->flags & WIRE_REC_FULL) && (rec->delta_count != 1 || rec->deltas[0].offset != 0))
        return snprintf(why, cap, "a full image is one range at offset 0"), true;
    for (uint32_t i = 0; i < rec->delta_count; i++)
        if (delta_invalid(rec, i, why, cap)) return true;
    return false;
}

int wire_record_check(const wire_record *rec, mrd_msg *msg)
{
    char why[160];
    if (record_invalid(rec, why, sizeof(why)))
        return mrd_fail(msg, MRD_EINVAL, "record lsn %llu: %s", (unsigned long long)rec->lsn, why);
    return 0;
}

/* ---- deltas: an array of [offset, bin] -------------------------------------------------- */

static int delta_decode(wire_cur *c, wire_delta *d, mrd_msg *msg)
{
    uint32_t n, len;
    uint64_t offset;
    const uint8_t *data;
    int rc = wire_cur_array(c, 2, &n);
    if (rc == 0 && n != 2)
        return mrd_fail(msg, MRD_EPARSE, "expected [offset, bytes], got %u elements at byte %zu", n,
                        wire_cur_offset(c));
    if (rc != 0) return mrd_fail(msg, rc, "%s at byte %zu", c->why, c->at);
    rc = wire_cur_uint(c, UINT32_MAX, &offset);
    if (rc != 0) return mrd_fail(msg, rc, "offset: %s at byte %zu", c->why, c->at);
    size_t bytes_at = wire_cur_offset(c);
    rc = wire_cur_bin(c, WIRE_PAGE_SIZE_MAX, &data, &len);
    if (rc != 0) return mrd_fail(msg, rc, "bytes: %s at byte %zu", c->why, c->at);
    if (offset + len > WIRE_PAGE_SIZE_MAX)
        return mrd_fail(msg, MRD_ETOOBIG,
                        "offset %llu + %u bytes passes the page size limit %u at byte %zu",
                        (unsigned long long)offset, len, WIRE_PAGE_SIZE_MAX, bytes_at);
    d->offset = (uint32_t)offset;
    d->len = len;
    d->data = data;
    return 0;
}

int wire_deltas_decode(wire_cur *c, wire_record *rec, mrd_msg *msg)
{
    uint32_t n;
    int rc = wire_cur_array(c, WIRE_DELTAS_MAX, &n);
    if (rc != 0) return mrd_fail(msg, rc, "%s at byte %zu", c->why, c->at);
    for (uint32_t i = 0; i < n; i++) {
        rc = delta_decode(c, &rec->deltas[i], msg);
        if (rc != 0) {
            wire_msg_prefix(msg, "delta %u", i);
            return rc;
        }
    }
    rec->delta_count = n;
    return 0;
}

int wire_deltas_encode(msgpack_packer *pk, const wire_record *rec)
{
    if (msgpack_pack_array(pk, rec->delta_count) != 0) return MRD_ENOMEM;
    for (uint32_t i = 0; i < rec->delta_count; i++) {
        const wire_delta *d = &rec->deltas[i];
        if (msgpack_pack_array(pk, 2) != 0 || msgpack_pack_uint64(pk, d->offset) != 0 ||
            msgpack_pack_bin_with_body(pk, d->data, d->len) != 0)
            return MRD_ENOMEM;
    }
    return 0;
}

size_t wire_deltas_size(const wire_record *rec)
{
    size_t size = wire_size_container(rec->delta_count);
    for (uint32_t i = 0; i < rec->delta_count; i++)
        size += wire_size_container(2) + wire_size_uint(rec->deltas[i].offset) +
                wire_size_bin(rec->deltas[i].len);
    return size;
}

/* ---- the record ------------------------------------------------------------------------- */

int wire_record_read(wire_cur *c, wire_record *rec, mrd_msg *msg)
{
    size_t start = wire_cur_offset(c);
    memset(rec, 0, sizeof(*rec));
    int rc = wire_map_decode(c, &wire_record_desc, rec, msg);
    if (rc != 0) return rc;
    char why[160];
    if (record_invalid(rec, why, sizeof(why)))
        return mrd_fail(msg, MRD_EPARSE, "record at byte %zu: %s", start, why);
    return 0;
}

int wire_record_decode(const uint8_t *data, size_t len, wire_record *rec, mrd_msg *msg)
{
    wire_cur c;
    wire_cur_init(&c, data, len);
    int rc = wire_record_read(&c, rec, msg);
    if (rc != 0) return rc;
    if (c.pos != c.end)
        return mrd_fail(msg, MRD_EPARSE, "record: %zu trailing bytes at byte %zu",
                        (size_t)(c.end - c.pos), wire_cur_offset(&c));
    return 0;
}

size_t wire_record_size(const wire_record *rec)
{
    return wire_map_size(&wire_record_desc, rec);
}

int wire_record_encode(const wire_record *rec, mrd_buf *out, mrd_msg *msg)
{
    int rc = wire_record_check(rec, msg);
    if (rc != 0) return rc;
    size_t start = out->len;
    msgpack_packer pk;
    wire_packer_init(&pk, out);
    rc = wire_map_encode(&pk, &wire_record_desc, rec);
    if (rc != 0) {
        out->len = start;
        return mrd_fail(msg, rc, "record lsn %llu: encoding failed: %s",
                        (unsigned long long)rec->lsn, mrd_strerror(rc));
    }
    return 0;
}

bool wire_record_equal(const wire_record *a, const wire_record *b)
{
    if (a->lsn != b->lsn || a->epoch != b->epoch || a->prev_lsn != b->prev_lsn ||
        a->page != b->page || a->txn != b->txn || a->vol_prev_lsn != b->vol_prev_lsn || a->pg != b->pg || a->flags != b->flags ||
        a->delta_count != b->delta_count)
        return false;
    for (uint32_t i = 0; i < a->delta_count && i < WIRE_DELTAS_MAX; i++) {
        const wire_delta *x = &a->deltas[i], *y = &b->deltas[i];
        if (x->offset != y->offset || x->len != y->len) return false;
        if (x->len > 0 && memcmp(x->data, y->data, x->len) != 0) return false;
    }
    return true;
}
