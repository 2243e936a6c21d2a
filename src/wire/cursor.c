/*
 * The bounded msgpack cursor. Every length and count is compared with what
 * is left of the input and with the caller's limit before it is believed;
 * nothing here allocates or recurses.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wire_private.h"

void wire_cur_init(wire_cur *c, const uint8_t *data, size_t len)
{
    c->base = data;
    c->pos = data;
    c->end = data + len;
    c->at = 0;
    c->why[0] = '\0';
}

size_t wire_cur_offset(const wire_cur *c)
{
    return (size_t)(c->pos - c->base);
}

static size_t left(const wire_cur *c)
{
    return (size_t)(c->end - c->pos);
}

static int fail(wire_cur *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(wire_cur *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    c->at = wire_cur_offset(c);
    return err;
}

/* The msgpack family a first byte belongs to, for "got ..." in messages. */
static const char *type_name(uint8_t b)
{
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) return "unsigned integer";
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) return "signed integer";
    if (b <= 0x8f || b == 0xde || b == 0xdf) return "map";
    if (b <= 0x9f || b == 0xdc || b == 0xdd) return "array";
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return "string";
    switch (b) {
    case 0xc0:
        return "nil";
    case 0xc2:
    case 0xc3:
        return "boolean";
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return "bin";
    case 0xca:
    case 0xcb:
        return "float";
    case 0xc1:
        return "reserved byte 0xc1";
    default:
        return "extension";
    }
}

static uint64_t load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The width of the big-endian number that follows a header byte; 0 if none. */
static size_t tail_bytes(uint8_t b)
{
    switch (b) {
    case 0xcc:
    case 0xd0:
    case 0xc4:
        return 1;
    case 0xcd:
    case 0xd1:
    case 0xc5:
    case 0xdc:
    case 0xde:
        return 2;
    case 0xce:
    case 0xd2:
    case 0xc6:
    case 0xdd:
    case 0xdf:
        return 4;
    case 0xcf:
    case 0xd3:
        return 8;
    default:
        return 0;
    }
}

/* Reads a header byte and its big-endian tail; *b gets the header byte. */
static int header(wire_cur *c, const char *expected, uint8_t *b, uint64_t *tail)
{
    if (left(c) == 0) return fail(c, MRD_ETRUNC, "expected %s, input ends", expected);
    *b = c->pos[0];
    size_t n = tail_bytes(*b);
    if (left(c) < 1 + n)
        return fail(c, MRD_ETRUNC, "%s header needs %zu bytes, input ends", type_name(*b), 1 + n);
    *tail = load_be(c->pos + 1, n);
    return 0;
}

static int decode_uint(wire_cur *c, uint8_t b, uint64_t tail, uint64_t *v)
{
    if (b <= 0x7f) {
        *v = b;
        return 0;
    }
    if (b >= 0xcc && b <= 0xcf) {
        *v = tail;
        return 0;
    }
    if (b >= 0xd0 && b <= 0xd3) {
        /* A signed form is accepted when the value is not negative. */
        size_t n = tail_bytes(b);
        if ((tail >> (n * 8 - 1)) & 1)
            return fail(c, MRD_EPARSE, "expected unsigned integer, got a negative one");
        *v = tail;
        return 0;
    }
    if (b >= 0xe0) return fail(c, MRD_EPARSE, "expected unsigned integer, got a negative one");
    return fail(c, MRD_EPARSE, "expected unsigned integer, got %s", type_name(b));
}

int wire_cur_uint(wire_cur *c, uint64_t max, uint64_t *out)
{
    uint8_t b;
    uint64_t tail = 0, v = 0;
    int rc = header(c, "unsigned integer", &b, &tail);
    if (rc != 0) return rc;
    rc = decode_uint(c, b, tail, &v);
    if (rc != 0) return rc;
    if (v > max)
        return fail(c, MRD_EPARSE, "value %llu out of range (max %llu)", (unsigned long long)v,
                    (unsigned long long)max);
    c->pos += 1 + tail_bytes(b);
    *out = v;
    return 0;
}

/* Shared by maps and arrays: each element needs at least min_bytes. */
static int container(wire_cur *c, const char *kind, uint8_t fix_lo, uint8_t b16, uint8_t b32,
                     uint32_t max, size_t min_bytes, uint32_t *n)
{
    uint8_t b;
    uint64_t tail, count;
    int rc = header(c, kind, &b, &tail);
    if (rc != 0) return rc;
    if (b >= fix_lo && b <= fix_lo + 0x0f)
        count = b & 0x0f;
    else if (b == b16 || b == b32)
        count = tail;
    else
        return fail(c, MRD_EPARSE, "expected %s, got %s", kind, type_name(b));
    if (count > max)
        return fail(c, MRD_ETOOBIG, "%s of %llu entries, limit %u", kind, (unsigned long long)count,
                    max);
    size_t head = 1 + tail_bytes(b);
    if (count * min_bytes > left(c) - head)
        return fail(c, MRD_ETRUNC, "%s of %llu entries, only %zu bytes left", kind,
                    (unsigned long long)count, left(c) - head);
    c->pos += head;
    *n = (uint32_t)count;
    return 0;
}

int wire_cur_map(wire_cur *c, uint32_t max, uint32_t *n)
{
    return container(c, "map", 0x80, 0xde, 0xdf, max, 2, n);
}

int wire_cur_array(wire_cur *c, uint32_t max, uint32_t *n)
{
    return container(c, "array", 0x90, 0xdc, 0xdd, max, 1, n);
}

int wire_cur_bin(wire_cur *c, uint32_t max, const uint8_t **data, uint32_t *len)
{
    uint8_t b;
    uint64_t tail;
    int rc = header(c, "bin", &b, &tail);
    if (rc != 0) return rc;
    if (b < 0xc4 || b > 0xc6) return fail(c, MRD_EPARSE, "expected bin, got %s", type_name(b));
    if (tail > max)
        return fail(c, MRD_ETOOBIG, "bin of %llu bytes, limit %u", (unsigned long long)tail, max);
    size_t head = 1 + tail_bytes(b);
    if (tail > left(c) - head)
        return fail(c, MRD_ETRUNC, "bin of %llu bytes, only %zu bytes left",
                    (unsigned long long)tail, left(c) - head);
    *data = c->pos + head;
    *len = (uint32_t)tail;
    c->pos += head + tail;
    return 0;
}

void wire_msg_prefix(mrd_msg *msg, const char *fmt, ...)
{
    if (msg == NULL) return;
    char prefix[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    size_t prefix_len = strlen(prefix);
    size_t rest_len = strnlen(msg->text, MRD_MSG_MAX - 1);
    if (prefix_len + 2 + rest_len > MRD_MSG_MAX - 1) rest_len = MRD_MSG_MAX - 1 - prefix_len - 2;
    memmove(msg->text + prefix_len + 2, msg->text, rest_len);
    memcpy(msg->text, prefix, prefix_len);
    memcpy(msg->text + prefix_len, ": ", 2);
    msg->text[prefix_len + 2 + rest_len] = '\0';
}
