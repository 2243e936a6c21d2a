/*
 * One value at a time: the getters that turn a tree node into a typed field
 * or a refusal naming the line and field, the key checks every map goes
 * through, and the registries that keep ids and addresses unique in a file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "topo_internal.h"

#define TOPO_KEYS_TEXT_MAX 160 /* "allowed: a, b, ..." in an unknown-key message */
#define TOPO_INT_DIGITS_MAX 15 /* more digits than this is out of every range we have */

int topo_fail(topo_ctx *c, int node, const char *fmt, ...)
{
    char what[MRD_MSG_MAX], field[TOPO_FIELD_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    topo_tree_path(&c->tree, node, field, sizeof(field));
    return topo_fail_line(c->name, c->msg, topo_tree_at(&c->tree, node)->line,
                          field[0] ? field : "(document)", "%s", what);
}

int topo_fail_missing(topo_ctx *c, int map, const char *key)
{
    char field[TOPO_FIELD_MAX];
    topo_tree_path(&c->tree, map, field, sizeof(field));
    char full[TOPO_FIELD_MAX + TOPO_NAME_MAX];
    snprintf(full, sizeof(full), "%s%s%s", field, field[0] ? "." : "", key);
    return topo_fail_line(c->name, c->msg, topo_tree_at(&c->tree, map)->line, full,
                          "required key is missing");
}

/* ---- shapes ----------------------------------------------------------------------------- */

static const char *shape_name(topo_tree_kind kind)
{
    switch (kind) {
    case TOPO_TREE_MAP:
        return "a map";
    case TOPO_TREE_LIST:
        return "a list";
    default:
        return "a scalar";
    }
}

static int check_kind(topo_ctx *c, int node, topo_tree_kind kind)
{
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    if (n->kind == kind) return 0;
    if (n->kind != TOPO_TREE_SCALAR)
        return topo_fail(c, node, "expected %s, found %s", shape_name(kind), shape_name(n->kind));
    if (n->plain && n->len == 0)
        return topo_fail(c, node, "expected %s, found nothing", shape_name(kind));
    char shown[TOPO_SHOW_BUF];
    return topo_fail(c, node, "expected %s, found the scalar '%s'", shape_name(kind),
                     topo_show(topo_tree_text(&c->tree, node), n->len, shown, sizeof(shown)));
}

int topo_check_map(topo_ctx *c, int node)
{
    return check_kind(c, node, TOPO_TREE_MAP);
}

int topo_check_list(topo_ctx *c, int node, int min, int max, const char *what)
{
    int rc = check_kind(c, node, TOPO_TREE_LIST);
    if (rc != 0) return rc;
    int count = topo_tree_at(&c->tree, node)->count;
    if (count >= min && count <= max) return 0;
    if (min == max) return topo_fail(c, node, "expected exactly %d %s, found %d", min, what, count);
    return topo_fail(c, node, "expected %d..%d %s, found %d", min, max, what, count);
}

static bool key_is(const topo_tree *t, int key, const char *name)
{
    size_t len = strlen(name);
    return topo_tree_at(t, key)->len == len && memcmp(topo_tree_text(t, key), name, len) == 0;
}

static bool keys_equal(const topo_tree *t, int a, int b)
{
    const topo_tree_node *x = topo_tree_at(t, a), *y = topo_tree_at(t, b);
    return x->len == y->len && memcmp(topo_tree_text(t, a), topo_tree_text(t, b), x->len) == 0;
}

static void keys_text(const char *const allowed[], char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; allowed[i] != NULL && used < cap; i++) {
        int n = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", allowed[i]);
        if (n < 0) break;
        used += (size_t)n;
    }
}

/* Refuses the second of two equal keys; keys before `key` are already known distinct. */
static int check_duplicate_key(topo_ctx *c, int map, int key)
{
    const topo_tree *t = &c->tree;
    for (int k = topo_tree_at(t, map)->first; k != key;
         k = topo_tree_at(t, topo_tree_at(t, k)->next)->next)
        if (keys_equal(t, k, key))
            return topo_fail(c, key, "duplicate key (first at line %d)", topo_tree_at(t, k)->line);
    return 0;
}

int topo_check_keys(topo_ctx *c, int node, const char *const allowed[])
{
    int rc = check_kind(c, node, TOPO_TREE_MAP);
    if (rc != 0) return rc;
    const topo_tree *t = &c->tree;
    for (int k = topo_tree_at(t, node)->first; k >= 0;
         k = topo_tree_at(t, topo_tree_at(t, k)->next)->next) {
        int i = 0;
        while (allowed[i] != NULL && !key_is(t, k, allowed[i]))
            i++;
        if (allowed[i] == NULL) {
            char shown[TOPO_SHOW_BUF], list[TOPO_KEYS_TEXT_MAX];
            keys_text(allowed, list, sizeof(list));
            return topo_fail(
                c, k, "unknown key '%s' (allowed: %s)",
                topo_show(topo_tree_text(t, k), topo_tree_at(t, k)->len, shown, sizeof(shown)),
                list);
        }
        if ((rc = check_duplicate_key(c, node, k)) != 0) return rc;
    }
    return 0;
}

int topo_get(topo_ctx *c, int map, const char *key)
{
    const topo_tree *t = &c->tree;
    for (int k = topo_tree_at(t, map)->first; k >= 0;
         k = topo_tree_at(t, topo_tree_at(t, k)->next)->next)
        if (key_is(t, k, key)) return topo_tree_at(t, k)->next;
    return -1;
}

int topo_need(topo_ctx *c, int map, const char *key, int *value)
{
    *value = topo_get(c, map, key);
    return *value >= 0 ? 0 : topo_fail_missing(c, map, key);
}

/* ---- scalars ---------------------------------------------------------------------------- */

static bool is_integer_text(const char *s, size_t len)
{
    size_t i = (len > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (i == len) return false;
    for (; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static bool is_bool_text(const char *s, size_t len)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off"};
    for (size_t i = 0; i < MRD_ARRAY_LEN(words); i++)
        if (strlen(words[i]) == len && strncasecmp(s, words[i], len) == 0) return true;
    return false;
}

static bool is_null_text(const char *s, size_t len)
{
    return len == 0 || (len == 1 && s[0] == '~') || (len == 4 && strncasecmp(s, "null", 4) == 0);
}

/* A plain scalar that YAML reads as something other than text: what it is, or NULL. */
static const char *not_text(const topo_tree_node *n, const char *s)
{
    if (!n->plain) return NULL;
    if (is_null_text(s, n->len)) return "nothing";
    if (is_integer_text(s, n->len)) return "an integer";
    if (is_bool_text(s, n->len)) return "a bool";
    return NULL;
}

int topo_get_text(topo_ctx *c, int node, char *out, size_t cap)
{
    int rc = check_kind(c, node, TOPO_TREE_SCALAR);
    if (rc != 0) return rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    const char *s = topo_tree_text(&c->tree, node);
    char shown[TOPO_SHOW_BUF];
    const char *other = not_text(n, s);
    if (other != NULL && n->len == 0) return topo_fail(c, node, "expected text, found nothing");
    if (other != NULL)
        return topo_fail(c, node, "expected text, found %s '%s' (quote it to mean text)", other,
                         topo_show(s, n->len, shown, sizeof(shown)));
    if (n->len == 0) return topo_fail(c, node, "is empty");
    if (n->len >= cap) return topo_fail(c, node, "longer than %zu characters", cap - 1);
    for (size_t i = 0; i < n->len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return topo_fail(c, node, "contains a control character");
    memcpy(out, s, n->len);
    out[n->len] = '\0';
    return 0;
}

int topo_get_name(topo_ctx *c, int node, char out[TOPO_NAME_MAX])
{
    int rc = topo_get_text(c, node, out, TOPO_NAME_MAX);
    if (rc != 0) return rc;
    for (const char *p = out; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-';
        if (!ok) return topo_fail(c, node, "'%s': names and ids use only A-Z a-z 0-9 _ . -", out);
    }
    return 0;
}

/* Parses -?[0-9]+ without leading zeros; false when text is not such an integer. */
static bool parse_decimal(const char *s, size_t len, long long *out, bool *huge)
{
    size_t i = (len > 0 && s[0] == '-') ? 1 : 0;
    size_t digits = len - i;
    if (digits == 0 || (digits > 1 && s[i] == '0')) return false;
    long long v = 0;
    *huge = digits > TOPO_INT_DIGITS_MAX;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        if (!*huge) v = v * 10 + (s[i] - '0');
    }
    *out = s[0] == '-' ? -v : v;
    return true;
}

int topo_get_int(topo_ctx *c, int node, long long min, long long max, long long *out)
{
    int rc = check_kind(c, node, TOPO_TREE_SCALAR);
    if (rc != 0) return rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    const char *s = topo_tree_text(&c->tree, node);
    char shown[TOPO_SHOW_BUF];
    topo_show(s, n->len, shown, sizeof(shown));
    long long v = 0;
    bool huge = false;
    if (!n->plain) return topo_fail(c, node, "expected an integer, found the text '%s'", shown);
    if (!parse_decimal(s, n->len, &v, &huge))
        return topo_fail(c, node, "expected a decimal integer, found '%s'", shown);
    if (huge || v < min || v > max)
        return topo_fail(c, node, "must be %lld..%lld, found %s", min, max, shown);
    *out = v;
    return 0;
}

int topo_get_bool(topo_ctx *c, int node, bool *out)
{
    int rc = check_kind(c, node, TOPO_TREE_SCALAR);
    if (rc != 0) return rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    const char *s = topo_tree_text(&c->tree, node);
    if (n->plain && (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0))
        *out = true;
    else if (n->plain && (strcmp(s, "false") == 0 || strcmp(s, "no") == 0))
        *out = false;
    else {
        char shown[TOPO_SHOW_BUF];
        return topo_fail(c, node, "expected a bool (true, false, yes or no), found %s'%s'",
                         n->plain ? "" : "the text ", topo_show(s, n->len, shown, sizeof(shown)));
    }
    return 0;
}

/* "123", "64KiB", "1 MiB", "10G": bytes in 1024-multiples. False when malformed. */
static bool parse_size(const char *s, size_t len, uint64_t *out, bool *huge)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0}, {"K", 10}, {"KiB", 10}, {"M", 20}, {"MiB", 20}, {"G", 30}, {"GiB", 30}};
    size_t i = 0;
    uint64_t v = 0;
    *huge = false;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > TOPO_PG_SIZE_MAX)
            *huge = true;
        else
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0) return false;
    while (i < len && s[i] == ' ')
        i++;
    for (size_t u = 0; u < MRD_ARRAY_LEN(units); u++) {
        if (strlen(units[u].suffix) != len - i || memcmp(s + i, units[u].suffix, len - i) != 0)
            continue;
        if (v > (TOPO_PG_SIZE_MAX >> units[u].shift)) *huge = true;
        *out = *huge ? 0 : v << units[u].shift;
        return true;
    }
    return false;
}

int topo_get_size(topo_ctx *c, int node, uint64_t *out)
{
    int rc = check_kind(c, node, TOPO_TREE_SCALAR);
    if (rc != 0) return rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    const char *s = topo_tree_text(&c->tree, node);
    char shown[TOPO_SHOW_BUF];
    topo_show(s, n->len, shown, sizeof(shown));
    uint64_t v = 0;
    bool huge = false;
    if (!parse_size(s, n->len, &v, &huge))
        return topo_fail(c, node, "expected bytes or a size like 64KiB, 1MiB, 10GiB; found '%s'",
                         shown);
    if (huge || v < TOPO_PG_SIZE_MIN || v > TOPO_PG_SIZE_MAX)
        return topo_fail(c, node, "must be 64KiB..1024GiB (1TiB), found %s", shown);
    *out = v;
    return 0;
}

/* ---- unique ids and addresses ----------------------------------------------------------- */

int topo_claim_id(topo_ctx *c, int node, const char *id)
{
    for (int i = 0; i < c->id_count; i++) {
        if (strcmp(c->ids[i].id, id) != 0) continue;
        char first[TOPO_FIELD_MAX];
        topo_tree_path(&c->tree, c->ids[i].node, first, sizeof(first));
        return topo_fail(c, node, "duplicate id '%s' (first used at line %d, %s)", id,
                         topo_tree_at(&c->tree, c->ids[i].node)->line, first);
    }
    if (c->id_count == TOPO_IDS_MAX) return topo_fail(c, node, "more than %d ids", TOPO_IDS_MAX);
    snprintf(c->ids[c->id_count].id, TOPO_NAME_MAX, "%s", id);
    c->ids[c->id_count++].node = node;
    return 0;
}

bool topo_addr_equal(const topo_addr *a, const topo_addr *b)
{
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

static int claim_addr(topo_ctx *c, int node, const topo_addr *addr)
{
    for (int i = 0; i < c->addr_count; i++) {
        if (!topo_addr_equal(&c->addrs[i].addr, addr)) continue;
        char first[TOPO_FIELD_MAX], text[TOPO_HOST_MAX + 16];
        topo_tree_path(&c->tree, c->addrs[i].node, first, sizeof(first));
        return topo_fail(c, node, "duplicate address %s (first used at line %d, %s)",
                         topo_addr_str(addr, text, sizeof(text)),
                         topo_tree_at(&c->tree, c->addrs[i].node)->line, first);
    }
    if (c->addr_count == TOPO_ADDRS_MAX)
        return topo_fail(c, node, "more than %d addresses", TOPO_ADDRS_MAX);
    c->addrs[c->addr_count].addr = *addr;
    c->addrs[c->addr_count++].node = node;
    return 0;
}

int topo_get_addr(topo_ctx *c, int node, topo_addr *out)
{
    int rc = check_kind(c, node, TOPO_TREE_SCALAR);
    if (rc != 0) return rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, node);
    const char *s = topo_tree_text(&c->tree, node);
    const char *problem = topo_addr_problem(s, n->len, out);
    if (problem != NULL) {
        char shown[TOPO_SHOW_BUF];
        return topo_fail(c, node, "bad address '%s': %s",
                         topo_show(s, n->len, shown, sizeof(shown)), problem);
    }
    return claim_addr(c, node, out);
}
