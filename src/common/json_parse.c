/* A strict JSON reader into an index-linked tree (include/meridian/json.h). */
#include <errno.h>
#include <math.h> /* isfinite */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"

#define JSON_MEMBERS_MAX 4096u /* members of one object: keeps the duplicate check cheap */

typedef struct {
    const char *text;
    size_t len, pos;
    mrd_json_doc *doc;
    mrd_msg *msg;
} parser;

static int fail_at(parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(parser *p, size_t pos, const char *fmt, ...)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return mrd_fail(p->msg, MRD_EPARSE, "JSON line %zu column %zu: %s", line, col, why);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int new_node(parser *p, mrd_json_kind kind, uint32_t *idx)
{
    mrd_json_doc *d = p->doc;
    if (d->count >= MRD_JSON_NODES_MAX)
        return fail_at(p, p->pos, "more than %u values", MRD_JSON_NODES_MAX);
    if (d->count == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 16;
        mrd_json *n = realloc(d->nodes, (size_t)cap * sizeof(*n));
        if (n == NULL) return mrd_fail(p->msg, MRD_ENOMEM, "JSON: out of memory");
        d->nodes = n;
        d->cap = cap;
    }
    *idx = d->count++;
    mrd_json *n = &d->nodes[*idx];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->first = n->next = MRD_JSON_NONE;
    return 0;
}

static int arena_put(parser *p, const void *data, size_t len)
{
    mrd_json_doc *d = p->doc;
    if (d->strings_len + len > d->strings_cap) {
        size_t cap = d->strings_cap ? d->strings_cap : 256;
        while (cap < d->strings_len + len)
            cap *= 2;
        char *s = realloc(d->strings, cap);
        if (s == NULL) return mrd_fail(p->msg, MRD_ENOMEM, "JSON: out of memory");
        d->strings = s;
        d->strings_cap = cap;
    }
    memcpy(d->strings + d->strings_len, data, len);
    d->strings_len += len;
    return 0;
}

static int hex4(parser *p, size_t at, unsigned *out)
{
    if (at + 4 > p->len) return fail_at(p, at, "string ends inside a \\u escape");
    unsigned v = 0;
    for (size_t i = at; i < at + 4; i++) {
        char c = p->text[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return fail_at(p, i, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static int put_utf8(parser *p, unsigned cp)
{
    uint8_t b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xc0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xe0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xf0 | cp >> 18);
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (uint8_t)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return arena_put(p, b, n);
}

/* \uXXXX, possibly a surrogate pair; p->pos is at the 'u'. */
static int unicode_escape(parser *p)
{
    size_t at = p->pos - 1;
    unsigned hi, lo;
    int rc = hex4(p, p->pos + 1, &hi);
    if (rc != 0) return rc;
    p->pos += 5;
    if (hi >= 0xdc00 && hi <= 0xdfff) return fail_at(p, at, "lone low surrogate \\u%04x", hi);
    if (hi < 0xd800 || hi > 0xdbff) return put_utf8(p, hi);
    if (p->pos + 2 > p->len || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
        return fail_at(p, at, "high surrogate \\u%04x without its low half", hi);
    rc = hex4(p, p->pos + 2, &lo);
    if (rc != 0) return rc;
    if (lo < 0xdc00 || lo > 0xdfff)
        return fail_at(p, at, "high surrogate \\u%04x followed by \\u%04x", hi, lo);
    p->pos += 6;
    return put_utf8(p, 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00));
}

/* Length of a valid UTF-8 sequence starting at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (len == 0 || len > n || (s[0] >= 0xf8)) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    unsigned cp = len == 2   ? (s[0] & 0x1fu) << 6 | (s[1] & 0x3fu)
                  : len == 3 ? (s[0] & 0x0fu) << 12 | (s[1] & 0x3fu) << 6 | (s[2] & 0x3fu)
                             : (s[0] & 0x07u) << 18 | (s[1] & 0x3fu) << 12 |
                                   (s[2] & 0x3fu) << 6 | (s[3] & 0x3fu);
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return len;
}

static int escape(parser *p)
{
    char c = p->pos < p->len ? p->text[p->pos] : '\0';
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *hit = c != '\0' ? strchr(from, c) : NULL;
    if (c == 'u') return unicode_escape(p);
    if (hit == NULL) return fail_at(p, p->pos - 1, "bad escape in string");
    p->pos++;
    return arena_put(p, &to[hit - from], 1);
}

/* A string at p->pos (the opening quote); its unescaped bytes go to the arena. */
static int string(parser *p, size_t *off, size_t *len)
{
    size_t start = p->pos++;
    *off = p->doc->strings_len;
    for (;;) {
        if (p->pos >= p->len) return fail_at(p, start, "string not terminated");
        unsigned char c = (unsigned char)p->text[p->pos];
        int rc = 0;
        if (c == '"') {
            p->pos++;
            break;
        } else if (c == '\\') {
            p->pos++;
            rc = escape(p);
        } else if (c < 0x20) {
            return fail_at(p, p->pos, "control character 0x%02x in string", c);
        } else {
            size_t n = utf8_len((const unsigned char *)p->text + p->pos, p->len - p->pos);
            if (n == 0) return fail_at(p, p->pos, "invalid UTF-8 in string");
            rc = arena_put(p, p->text + p->pos, n);
            p->pos += n;
        }
        if (rc != 0) return rc;
    }
    *len = p->doc->strings_len - *off;
    return arena_put(p, "", 1);
}

static int number(parser *p, mrd_json *n)
{
    size_t start = p->pos, i = p->pos;
    const char *t = p->text;
    bool integer = true;
    if (i < p->len && t[i] == '-') i++;
    if (i >= p->len || t[i] < '0' || t[i] > '9') return fail_at(p, start, "bad number");
    if (t[i] == '0' && i + 1 < p->len && t[i + 1] >= '0' && t[i + 1] <= '9')
        return fail_at(p, start, "number with a leading zero");
    while (i < p->len && t[i] >= '0' && t[i] <= '9')
        i++;
    if (i < p->len && t[i] == '.') {
        integer = false;
        if (++i >= p->len || t[i] < '0' || t[i] > '9')
            return fail_at(p, start, "bad number: no digit after '.'");
        while (i < p->len && t[i] >= '0' && t[i] <= '9')
            i++;
    }
    if (i < p->len && (t[i] == 'e' || t[i] == 'E')) {
        integer = false;
        if (++i < p->len && (t[i] == '+' || t[i] == '-')) i++;
        if (i >= p->len || t[i] < '0' || t[i] > '9')
            return fail_at(p, start, "bad number: no digit in the exponent");
        while (i < p->len && t[i] >= '0' && t[i] <= '9')
            i++;
    }
    char buf[64];
    size_t len = i - start;
    if (len >= sizeof(buf)) return fail_at(p, start, "number longer than %zu characters", sizeof(buf) - 1);
    memcpy(buf, t + start, len);
    buf[len] = '\0';
    errno = 0;
    if (integer) {
        long long v = strtoll(buf, NULL, 10);
        n->is_int = errno != ERANGE;
        n->i = n->is_int ? v : 0;
        if (buf[0] != '-') {
            errno = 0;
            unsigned long long u = strtoull(buf, NULL, 10);
            n->is_uint = errno != ERANGE;
            n->u = n->is_uint ? u : 0;
        }
    }
    n->num = strtod(buf, NULL);
    if (!isfinite(n->num)) return fail_at(p, start, "number out of range");
    p->pos = i;
    return 0;
}

static int literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return fail_at(p, p->pos, "unexpected character '%c'", p->text[p->pos]);
    p->pos += n;
    return 0;
}

static int value(parser *p, int depth, uint32_t *out);

static bool key_taken(const parser *p, uint32_t first, size_t off, size_t len)
{
    const mrd_json_doc *d = p->doc;
    for (uint32_t i = first; i != MRD_JSON_NONE; i = d->nodes[i].next)
        if (d->nodes[i].key_len == len && memcmp(d->strings + d->nodes[i].key, d->strings + off, len) == 0)
            return true;
    return false;
}

/* Arrays and objects: p->pos is at the opening bracket. */
static int container(parser *p, int depth, uint32_t idx, bool object)
{
    char close = object ? '}' : ']';
    uint32_t last = MRD_JSON_NONE;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == close) return p->pos++, 0;
    for (;;) {
        size_t key = 0, key_len = 0, key_pos = p->pos;
        int rc;
        if (object) {
            if (p->pos >= p->len || p->text[p->pos] != '"')
                return fail_at(p, p->pos, "expected a member name in quotes");
            if ((rc = string(p, &key, &key_len)) != 0) return rc;
            if (key_taken(p, p->doc->nodes[idx].first, key, key_len))
                return fail_at(p, key_pos, "duplicate key \"%.40s\"", p->doc->strings + key);
            if (p->doc->nodes[idx].count >= JSON_MEMBERS_MAX)
                return fail_at(p, key_pos, "more than %u members in one object", JSON_MEMBERS_MAX);
            skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != ':')
                return fail_at(p, p->pos, "expected ':' after the member name");
            p->pos++;
        }
        uint32_t child;
        if ((rc = value(p, depth + 1, &child)) != 0) return rc;
        mrd_json *c = &p->doc->nodes[child];
        c->key = key;
        c->key_len = key_len;
        if (last == MRD_JSON_NONE)
            p->doc->nodes[idx].first = child;
        else
            p->doc->nodes[last].next = child;
        last = child;
        p->doc->nodes[idx].count++;
        skip_ws(p);
        if (p->pos < p->len && p->text[p->pos] == ',') {
            p->pos++;
            skip_ws(p);
            continue;
        }
        if (p->pos < p->len && p->text[p->pos] == close) return p->pos++, 0;
        return fail_at(p, p->pos, "expected ',' or '%c'", close);
    }
}

static int value(parser *p, int depth, uint32_t *out)
{
    skip_ws(p);
    if (depth > MRD_JSON_DEPTH_MAX)
        return fail_at(p, p->pos, "nested deeper than %d levels", MRD_JSON_DEPTH_MAX);
    if (p->pos >= p->len) return fail_at(p, p->pos, "unexpected end of text");
    char c = p->text[p->pos];
    mrd_json_kind kind = c == '{'   ? MRD_JSON_OBJECT
                         : c == '[' ? MRD_JSON_ARRAY
                         : c == '"' ? MRD_JSON_STRING
                         : c == 't' || c == 'f' ? MRD_JSON_BOOL
                         : c == 'n'             ? MRD_JSON_NULL
                                                : MRD_JSON_NUMBER;
    int rc = new_node(p, kind, out);
    if (rc != 0) return rc;
    mrd_json *n = &p->doc->nodes[*out];
    switch (kind) {
    case MRD_JSON_OBJECT:
    case MRD_JSON_ARRAY:
        return container(p, depth, *out, kind == MRD_JSON_OBJECT);
    case MRD_JSON_STRING: {
        size_t off, len;
        rc = string(p, &off, &len);
        n = &p->doc->nodes[*out];
        n->str = off;
        n->str_len = len;
        return rc;
    }
    case MRD_JSON_BOOL:
        n->boolean = c == 't';
        return literal(p, c == 't' ? "true" : "false");
    case MRD_JSON_NULL:
        return literal(p, "null");
    default:
        if (c != '-' && (c < '0' || c > '9'))
            return fail_at(p, p->pos, "unexpected character '%c'", c);
        return number(p, n);
    }
}

int mrd_json_parse(const char *text, size_t len, mrd_json_doc *doc, mrd_msg *msg)
{
    memset(doc, 0, sizeof(*doc));
    if (len > MRD_JSON_TEXT_BYTES_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "JSON: %zu bytes, more than the limit of %u", len,
                        MRD_JSON_TEXT_BYTES_MAX);
    parser p = {.text = text, .len = len, .doc = doc, .msg = msg};
    uint32_t root;
    int rc = value(&p, 0, &root);
    if (rc == 0) {
        skip_ws(&p);
        if (p.pos < len) rc = fail_at(&p, p.pos, "text after the value");
    }
    if (rc != 0) mrd_json_free(doc);
    return rc;
}

void mrd_json_free(mrd_json_doc *doc)
{
    free(doc->nodes);
    free(doc->strings);
    memset(doc, 0, sizeof(*doc));
}

const mrd_json *mrd_json_root(const mrd_json_doc *doc)
{
    return doc->count > 0 ? &doc->nodes[0] : NULL;
}

const mrd_json *mrd_json_first(const mrd_json_doc *doc, const mrd_json *node)
{
    return node != NULL && node->first != MRD_JSON_NONE ? &doc->nodes[node->first] : NULL;
}

const mrd_json *mrd_json_next(const mrd_json_doc *doc, const mrd_json *node)
{
    return node != NULL && node->next != MRD_JSON_NONE ? &doc->nodes[node->next] : NULL;
}

const mrd_json *mrd_json_get(const mrd_json_doc *doc, const mrd_json *obj, const char *key)
{
    if (obj == NULL || obj->kind != MRD_JSON_OBJECT) return NULL;
    size_t len = strlen(key);
    for (const mrd_json *m = mrd_json_first(doc, obj); m != NULL; m = mrd_json_next(doc, m))
        if (m->key_len == len && memcmp(doc->strings + m->key, key, len) == 0) return m;
    return NULL;
}

const char *mrd_json_str(const mrd_json_doc *doc, const mrd_json *node)
{
    return node != NULL && node->kind == MRD_JSON_STRING ? doc->strings + node->str : NULL;
}

const char *mrd_json_key(const mrd_json_doc *doc, const mrd_json *node)
{
    return node != NULL && doc->strings != NULL ? doc->strings + node->key : "";
}

bool mrd_json_get_u64(const mrd_json_doc *doc, const mrd_json *obj, const char *key,
                      uint64_t *out)
{
    const mrd_json *v = mrd_json_get(doc, obj, key);
    if (v == NULL || v->kind != MRD_JSON_NUMBER) return false;
    if (!v->is_uint) return false;
    *out = v->u;
    return true;
}

const char *mrd_json_kind_name(mrd_json_kind kind)
{
    static const char *names[] = {"null", "bool", "number", "string", "array", "object"};
    return (unsigned)kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "?";
}
