/*
 * Replication frames (include/meridian/agent.h, docs/wire.md): a batch of
 * records compressed with zlib, and the secondary's acknowledgement as a
 * small msgpack map. Decoders take hostile bytes: the inflated size is
 * declared up front, bounded, and must come out exactly; the ack's map must
 * hold exactly its four keys, in order, with the right types.
 */
#include <string.h>
#include <zlib.h>

#include "meridian/agent.h"

#define AG_ACK_KEYS 4u

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int ag_frame_batch_encode(const uint8_t *batch, size_t len, mrd_buf *out, mrd_msg *msg)
{
    if (len == 0 || len > AG_FRAME_RAW_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "replication batch of %zu bytes: 1..%u", len,
                        AG_FRAME_RAW_MAX);
    uLong bound = compressBound((uLong)len);
    size_t start = out->len, at;
    int rc = wire_frame_begin(out, &at);
    if (rc == 0) rc = mrd_buf_reserve(out, 5 + (size_t)bound);
    if (rc != 0) {
        out->len = start;
        return mrd_fail(msg, MRD_ENOMEM, "replication batch: out of memory");
    }
    uint8_t *p = out->data + out->len;
    p[0] = AG_FRAME_BATCH;
    put_u32le(p + 1, (uint32_t)len);
    uLongf zlen = bound;
    if (compress2(p + 5, &zlen, batch, (uLong)len, Z_BEST_SPEED) != Z_OK) {
        out->len = start;
        return mrd_fail(msg, MRD_EINVAL, "replication batch: zlib refused %zu bytes", len);
    }
    out->len += 5 + (size_t)zlen;
    return wire_frame_end(out, at, msg);
}

static int inflate_exact(const uint8_t *z, size_t zlen, uint8_t *dst, uint32_t raw_len,
                         mrd_msg *msg)
{
    z_stream s;
    memset(&s, 0, sizeof(s));
    if (inflateInit(&s) != Z_OK) return mrd_fail(msg, MRD_ENOMEM, "zlib: cannot start inflate");
    s.next_in = (Bytef *)z;
    s.avail_in = (uInt)zlen;
    s.next_out = dst;
    s.avail_out = raw_len;
    int zr = inflate(&s, Z_FINISH);
    size_t produced = raw_len - s.avail_out, left = s.avail_in;
    const char *zmsg = s.msg != NULL ? s.msg : "corrupt stream"; /* static strings in zlib */
    inflateEnd(&s);
    if (zr == Z_STREAM_END && produced == raw_len && left == 0) return 0;
    if (zr == Z_STREAM_END && left != 0)
        return mrd_fail(msg, MRD_EPARSE, "replication batch: %zu bytes after the zlib stream",
                        left);
    if (zr == Z_STREAM_END || (zr == Z_BUF_ERROR && left == 0))
        return mrd_fail(msg, MRD_ETRUNC,
                        "replication batch: the zlib stream ends early (%zu of %u bytes)", produced,
                        raw_len);
    if (zr == Z_BUF_ERROR || zr == Z_OK)
        return mrd_fail(msg, MRD_ETOOBIG, "replication batch: inflates past its declared %u bytes",
                        raw_len);
    return mrd_fail(msg, MRD_EPARSE, "replication batch: zlib: %s", zmsg);
}

int ag_frame_batch_decode(const uint8_t *data, size_t len, mrd_buf *raw, wire_batch *batch,
                          mrd_msg *msg)
{
    if (len < 4 + 2)
        return mrd_fail(msg, MRD_ETRUNC, "replication batch: %zu bytes, no room for its header",
                        len);
    uint32_t raw_len = get_u32le(data);
    if (raw_len == 0 || raw_len > AG_FRAME_RAW_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "replication batch: raw length %u outside 1..%u", raw_len,
                        AG_FRAME_RAW_MAX);
    raw->len = 0;
    if (mrd_buf_reserve(raw, raw_len) != 0)
        return mrd_fail(msg, MRD_ENOMEM, "replication batch: out of memory for %u bytes", raw_len);
    int rc = inflate_exact(data + 4, len - 4, raw->data, raw_len, msg);
    if (rc != 0) return rc;
    raw->len = raw_len;
    rc = wire_batch_decode(raw->data, raw->len, batch, msg);
    if (rc == 0 && batch->kind != WIRE_BATCH_LOG)
        rc = mrd_fail(msg, MRD_EPARSE, "replication batch: kind %u, not a log batch", batch->kind);
    return rc;
}

/* ---- the ack ------------------------------------------------------------------------------ */

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

int ag_frame_ack_encode(const ag_ack *ack, mrd_buf *out, mrd_msg *msg)
{
    uint8_t p[1 + 1 + 2 + 2 + 9 + 2 + 5 + 2];
    size_t n = 0;
    p[n++] = AG_FRAME_ACK;
    p[n++] = 0x80 | AG_ACK_KEYS; /* fixmap */
    p[n++] = 0;
    p[n++] = AG_VERSION;
    p[n++] = 1;
    p[n++] = 0xcf; /* uint 64 */
    put_u64be(p + n, ack->durable_lsn);
    n += 8;
    p[n++] = 2;
    p[n++] = 0xce; /* uint 32 */
    for (int i = 0; i < 4; i++)
        p[n++] = (uint8_t)(ack->checksum >> (24 - 8 * i));
    p[n++] = 3;
    p[n++] = ack->checksum_known ? 0xc3 : 0xc2;
    return wire_frame_append(out, p, n, msg);
}

/* A msgpack unsigned integer of any width at *pos. */
static int read_uint(const uint8_t *d, size_t len, size_t *pos, uint64_t *v, unsigned key,
                     mrd_msg *msg)
{
    if (*pos >= len) return mrd_fail(msg, MRD_ETRUNC, "ack key %u: value missing", key);
    uint8_t t = d[(*pos)++];
    size_t w = t <= 0x7f ? 0 : t == 0xcc ? 1 : t == 0xcd ? 2 : t == 0xce ? 4 : t == 0xcf ? 8 : 9;
    if (w == 9)
        return mrd_fail(msg, MRD_EPARSE,
                        "ack key %u: expected unsigned integer, got 0x%02x at byte %zu", key, t,
                        *pos - 1);
    if (w == 0) {
        *v = t;
        return 0;
    }
    if (len - *pos < w) return mrd_fail(msg, MRD_ETRUNC, "ack key %u: integer cut short", key);
    *v = 0;
    for (size_t i = 0; i < w; i++)
        *v = *v << 8 | d[(*pos)++];
    return 0;
}

int ag_frame_ack_decode(const uint8_t *data, size_t len, ag_ack *ack, mrd_msg *msg)
{
    memset(ack, 0, sizeof(*ack));
    size_t pos = 0;
    if (len < 1) return mrd_fail(msg, MRD_ETRUNC, "ack: empty");
    if (data[pos++] != (0x80 | AG_ACK_KEYS))
        return mrd_fail(msg, MRD_EPARSE, "ack: expected a map of %u keys, got 0x%02x", AG_ACK_KEYS,
                        data[0]);
    uint64_t v[AG_ACK_KEYS - 1];
    for (unsigned k = 0; k < AG_ACK_KEYS; k++) {
        if (pos >= len) return mrd_fail(msg, MRD_ETRUNC, "ack: key %u missing", k);
        if (data[pos] != k)
            return mrd_fail(msg, MRD_EPARSE, "ack: expected key %u, got 0x%02x at byte %zu", k,
                            data[pos], pos);
        pos++;
        if (k == AG_ACK_KEYS - 1) break;
        int rc = read_uint(data, len, &pos, &v[k], k, msg);
        if (rc != 0) return rc;
    }
    if (pos >= len) return mrd_fail(msg, MRD_ETRUNC, "ack key 3: value missing");
    uint8_t b = data[pos++];
    if (b != 0xc2 && b != 0xc3)
        return mrd_fail(msg, MRD_EPARSE, "ack key 3 (checksum_known): expected bool, got 0x%02x",
                        b);
    if (pos != len) return mrd_fail(msg, MRD_EPARSE, "ack: %zu bytes after the map", len - pos);
    if (v[0] != AG_VERSION)
        return mrd_fail(msg, MRD_EVERSION, "ack: version %llu, this code reads %u",
                        (unsigned long long)v[0], AG_VERSION);
    if (v[2] > UINT32_MAX)
        return mrd_fail(msg, MRD_EPARSE, "ack key 2 (checksum): %llu exceeds 32 bits",
                        (unsigned long long)v[2]);
    *ack = (ag_ack){.durable_lsn = v[1], .checksum = (uint32_t)v[2], .checksum_known = b == 0xc3};
    return 0;
}

uint32_t ag_checksum_advance(uint32_t crc, uint64_t lsn, const uint8_t *enc, size_t len)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(lsn >> (8 * i));
    crc = mrd_crc32c(crc, le, sizeof(le));
    return mrd_crc32c(crc, enc, len);
}
