/* Small fixed messages, declared once and decoded as hostile bytes: a storage
 * node's acknowledgement of an append, and the writer's durability mark. */
#include <string.h>

#include "wire_private.h"

#define ACK_DESC(k, m, t, r) WIRE_FIELD_DESC(wire_ack, k, m, t, r)
#define ACK_WIDTH(k, m, t, r) WIRE_FIELD_WIDTH_CHECK(wire_ack, k, m, t, r)
#define ACK_POS(k, m, t, r) WIRE_FIELD_POS(wire_ack, k, m, t, r)
#define ACK_KEY(k, m, t, r) WIRE_FIELD_KEY_CHECK(wire_ack, k, m, t, r)

enum { WIRE_ACK_FIELDS(ACK_POS) ACK_FIELD_COUNT };
WIRE_ACK_FIELDS(ACK_WIDTH)
WIRE_ACK_FIELDS(ACK_KEY)

static const wire_field ack_fields[] = {WIRE_ACK_FIELDS(ACK_DESC)};

const wire_msg_desc wire_ack_desc = {
    .what = "ack",
    .fields = ack_fields,
    .count = ACK_FIELD_COUNT,
};

int wire_ack_encode(const wire_ack *ack, mrd_buf *out, mrd_msg *msg)
{
    if (ack->lsn_durable < ack->scl)
        return mrd_fail(msg, MRD_EINVAL, "ack: lsn_durable %llu below scl %llu",
                        (unsigned long long)ack->lsn_durable, (unsigned long long)ack->scl);
    size_t start = out->len;
    msgpack_packer pk;
    wire_packer_init(&pk, out);
    int rc = wire_map_encode(&pk, &wire_ack_desc, ack);
    if (rc != 0) {
        out->len = start;
        return mrd_fail(msg, rc, "ack: encoding failed: %s", mrd_strerror(rc));
    }
    return 0;
}

int wire_ack_decode(const uint8_t *data, size_t len, wire_ack *ack, mrd_msg *msg)
{
    wire_cur c;
    wire_cur_init(&c, data, len);
    memset(ack, 0, sizeof(*ack));
    int rc = wire_map_decode(&c, &wire_ack_desc, ack, msg);
    if (rc != 0) return rc;
    if (c.pos != c.end)
        return mrd_fail(msg, MRD_EPARSE, "ack: %zu trailing bytes at byte %zu",
                        (size_t)(c.end - c.pos), wire_cur_offset(&c));
    if (ack->lsn_durable < ack->scl)
        return mrd_fail(msg, MRD_EPARSE, "ack: lsn_durable %llu below scl %llu",
                        (unsigned long long)ack->lsn_durable, (unsigned long long)ack->scl);
    return 0;
}

#define MARK_DESC(k, m, t, r) WIRE_FIELD_DESC(wire_mark, k, m, t, r)
#define MARK_WIDTH(k, m, t, r) WIRE_FIELD_WIDTH_CHECK(wire_mark, k, m, t, r)
#define MARK_POS(k, m, t, r) WIRE_FIELD_POS(wire_mark, k, m, t, r)
#define MARK_KEY(k, m, t, r) WIRE_FIELD_KEY_CHECK(wire_mark, k, m, t, r)

enum { WIRE_MARK_FIELDS(MARK_POS) MARK_FIELD_COUNT };
WIRE_MARK_FIELDS(MARK_WIDTH)
WIRE_MARK_FIELDS(MARK_KEY)

static const wire_field mark_fields[] = {WIRE_MARK_FIELDS(MARK_DESC)};

const wire_msg_desc wire_mark_desc = {
    .what = "mark",
    .fields = mark_fields,
    .count = MARK_FIELD_COUNT,
};

int wire_mark_encode(const wire_mark *mark, mrd_buf *out, mrd_msg *msg)
{
    if (mark->lsn_last < mark->vdl)
        return mrd_fail(msg, MRD_EINVAL, "mark: lsn_last %llu below vdl %llu",
                        (unsigned long long)mark->lsn_last, (unsigned long long)mark->vdl);
    size_t start = out->len;
    msgpack_packer pk;
    wire_packer_init(&pk, out);
    int rc = wire_map_encode(&pk, &wire_mark_desc, mark);
    if (rc != 0) {
        out->len = start;
        return mrd_fail(msg, rc, "mark: encoding failed: %s", mrd_strerror(rc));
    }
    return 0;
}

int wire_mark_decode(const uint8_t *data, size_t len, wire_mark *mark, mrd_msg *msg)
{
    wire_cur c;
    wire_cur_init(&c, data, len);
    memset(mark, 0, sizeof(*mark));
    int rc = wire_map_decode(&c, &wire_mark_desc, mark, msg);
    if (rc != 0) return rc;
    if (c.pos != c.end)
        return mrd_fail(msg, MRD_EPARSE, "mark: %zu trailing bytes at byte %zu",
                        (size_t)(c.end - c.pos), wire_cur_offset(&c));
    if (mark->lsn_last < mark->vdl)
        return mrd_fail(msg, MRD_EPARSE, "mark: lsn_last %llu below vdl %llu",
                        (unsigned long long)mark->lsn_last, (unsigned long long)mark->vdl);
    return 0;
}
