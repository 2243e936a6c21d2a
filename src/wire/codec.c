/*
 * The generic message codec: one function each to decode, encode and size a
 * message map from its field table (wire_private.h). Keys are written and
 * required in strictly ascending order, version (key 0) first, so that a
 * duplicate, an unknown key or a missing required field is seen at the byte
 * where it happens, and a field may rely on the fields before it.
 */
#include <string.h>

#include "wire_private.h"

/* ---- msgpack sizes, as msgpack-c chooses them ------------------------------------------- */

size_t wire_size_uint(uint64_t v)
{
    if (v < 0x80) return 1;
    if (v <= UINT8_MAX) return 2;
    if (v <= UINT16_MAX) return 3;
    if (v <= UINT32_MAX) return 5;
    return 9;
}

size_t wire_size_container(uint32_t n)
{
    if (n < 16) return 1;
    if (n <= UINT16_MAX) return 3;
    return 5;
}

size_t wire_size_bin(uint32_t len)
{
    if (len <= UINT8_MAX) return 2 + (size_t)len;
    if (len <= UINT16_MAX) return 3 + (size_t)len;
    return 5 + (size_t)len;
}

static int buf_write(void *data, const char *bytes, size_t len)
{
    return mrd_buf_append(data, bytes, len) == 0 ? 0 : -1;
}

void wire_packer_init(msgpack_packer *pk, mrd_buf *out)
{
    msgpack_packer_init(pk, out, buf_write);
}

/* ---- field access ----------------------------------------------------------------------- */

static uint64_t field_get(const void *msg, const wire_field *f)
{
    const char *at = (const char *)msg + f->offset;
    if (f->type == WIRE_FT_U32) return *(const uint32_t *)(const void *)at;
    return *(const uint64_t *)(const void *)at;
}

static void field_set(void *msg, const wire_field *f, uint64_t v)
{
    char *at = (char *)msg + f->offset;
    if (f->type == WIRE_FT_U32)
        *(uint32_t *)(void *)at = (uint32_t)v;
    else
        *(uint64_t *)(void *)at = v;
}

static bool field_present(const void *msg, const wire_field *f)
{
    bool scalar = f->type == WIRE_FT_U32 || f->type == WIRE_FT_U64;
    return f->required || !scalar || field_get(msg, f) != 0;
}

/* ---- decode ----------------------------------------------------------------------------- */

static int decode_version(wire_cur *c, const wire_msg_desc *d, mrd_msg *msg)
{
    uint64_t key, version;
    int rc = wire_cur_uint(c, UINT64_MAX, &key);
    if (rc != 0) return mrd_fail(msg, rc, "%s key: %s at byte %zu", d->what, c->why, c->at);
    if (key != WIRE_KEY_VERSION)
        return mrd_fail(msg, MRD_EPARSE, "%s: first key is %llu, expected 0 (version) at byte %zu",
                        d->what, (unsigned long long)key, wire_cur_offset(c));
    rc = wire_cur_uint(c, UINT32_MAX, &version);
    if (rc != 0)
        return mrd_fail(msg, rc, "%s field 0 (version): %s at byte %zu", d->what, c->why, c->at);
    if (version != WIRE_VERSION)
        return mrd_fail(msg, MRD_EVERSION, "%s: version %llu, this build reads version %u", d->what,
                        (unsigned long long)version, WIRE_VERSION);
    return 0;
}

/* Fails on the first required field with a key in (after, before). */
static int check_missing(wire_cur *c, const wire_msg_desc *d, uint32_t after, uint32_t before,
                         mrd_msg *msg)
{
    for (uint32_t i = 0; i < d->count; i++) {
        const wire_field *f = &d->fields[i];
        if (f->key <= after || f->key >= before || !f->required) continue;
        if (before == UINT32_MAX)
            return mrd_fail(msg, MRD_EPARSE, "%s: required field %u (%s) missing at byte %zu",
                            d->what, f->key, f->name, wire_cur_offset(c));
        return mrd_fail(msg, MRD_EPARSE,
                        "%s: required field %u (%s) missing before key %u at byte %zu", d->what,
                        f->key, f->name, before, wire_cur_offset(c));
    }
    return 0;
}

static int decode_value(wire_cur *c, const wire_msg_desc *d, const wire_field *f, void *out,
                        mrd_msg *msg)
{
    uint64_t v;
    int rc;
    switch (f->type) {
    case WIRE_FT_U32:
    case WIRE_FT_U64:
        rc = wire_cur_uint(c, f->type == WIRE_FT_U32 ? UINT32_MAX : UINT64_MAX, &v);
        if (rc != 0)
            return mrd_fail(msg, rc, "%s field %u (%s): %s at byte %zu", d->what, f->key, f->name,
                            c->why, c->at);
        field_set(out, f, v);
        return 0;
    case WIRE_FT_DELTAS:
        rc = wire_deltas_decode(c, out, msg);
        break;
    case WIRE_FT_RECORDS:
        rc = wire_records_decode(c, out, msg);
        break;
    default:
        rc = mrd_fail(msg, MRD_EINVAL, "unknown field type %u", f->type);
        break;
    }
    if (rc != 0) wire_msg_prefix(msg, "%s field %u (%s)", d->what, f->key, f->name);
    return rc;
}

static int decode_entry(wire_cur *c, const wire_msg_desc *d, void *out, uint32_t *last,
                        mrd_msg *msg)
{
    uint64_t key;
    size_t key_at = wire_cur_offset(c);
    int rc = wire_cur_uint(c, UINT64_MAX, &key);
    if (rc != 0) return mrd_fail(msg, rc, "%s key: %s at byte %zu", d->what, c->why, c->at);
    if (key <= *last)
        return mrd_fail(msg, MRD_EPARSE,
                        "%s: key %llu after key %u (keys ascend; no duplicates) at byte %zu",
                        d->what, (unsigned long long)key, *last, key_at);
    if (key > d->count)
        return mrd_fail(msg, MRD_EPARSE, "%s: unknown key %llu at byte %zu", d->what,
                        (unsigned long long)key, key_at);
    rc = check_missing(c, d, *last, (uint32_t)key, msg);
    if (rc != 0) return rc;
    *last = (uint32_t)key;
    return decode_value(c, d, &d->fields[key - 1], out, msg);
}

int wire_map_decode(wire_cur *c, const wire_msg_desc *d, void *out, mrd_msg *msg)
{
    uint32_t n, last = WIRE_KEY_VERSION;
    int rc = wire_cur_map(c, d->count + 1, &n);
    if (rc != 0) return mrd_fail(msg, rc, "%s: %s at byte %zu", d->what, c->why, c->at);
    if (n == 0)
        return mrd_fail(msg, MRD_EPARSE, "%s: empty map, no version at byte %zu", d->what,
                        wire_cur_offset(c));
    rc = decode_version(c, d, msg);
    if (rc != 0) return rc;
    for (uint32_t i = 1; i < n; i++) {
        rc = decode_entry(c, d, out, &last, msg);
        if (rc != 0) return rc;
    }
    return check_missing(c, d, last, UINT32_MAX, msg);
}

/* ---- encode and size -------------------------------------------------------------------- */

static uint32_t present_count(const wire_msg_desc *d, const void *in)
{
    uint32_t n = 1; /* the version */
    for (uint32_t i = 0; i < d->count; i++)
        n += field_present(in, &d->fields[i]);
    return n;
}

static int encode_value(msgpack_packer *pk, const wire_field *f, const void *in)
{
    switch (f->type) {
    case WIRE_FT_U32:
    case WIRE_FT_U64:
        return msgpack_pack_uint64(pk, field_get(in, f)) == 0 ? 0 : MRD_ENOMEM;
    case WIRE_FT_DELTAS:
        return wire_deltas_encode(pk, in);
    default:
        return MRD_EINVAL; /* batches are written by the builder */
    }
}

int wire_map_encode(msgpack_packer *pk, const wire_msg_desc *d, const void *in)
{
    if (msgpack_pack_map(pk, present_count(d, in)) != 0 ||
        msgpack_pack_uint64(pk, WIRE_KEY_VERSION) != 0 ||
        msgpack_pack_uint64(pk, WIRE_VERSION) != 0)
        return MRD_ENOMEM;
    for (uint32_t i = 0; i < d->count; i++) {
        const wire_field *f = &d->fields[i];
        if (!field_present(in, f)) continue;
        if (msgpack_pack_uint64(pk, f->key) != 0) return MRD_ENOMEM;
        int rc = encode_value(pk, f, in);
        if (rc != 0) return rc;
    }
    return 0;
}

size_t wire_map_size(const wire_msg_desc *d, const void *in)
{
    size_t size = wire_size_container(present_count(d, in)) + wire_size_uint(WIRE_KEY_VERSION) +
                  wire_size_uint(WIRE_VERSION);
    for (uint32_t i = 0; i < d->count; i++) {
        const wire_field *f = &d->fields[i];
        if (!field_present(in, f)) continue;
        size += wire_size_uint(f->key);
        if (f->type == WIRE_FT_DELTAS)
            size += wire_deltas_size(in);
        else
            size += wire_size_uint(field_get(in, f));
    }
    return size;
}
