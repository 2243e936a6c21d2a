/*
 * topo's private parts: the YAML tree the file is first read into, the
 * parsing context, and the typed getters every part of the schema uses.
 *
 * Reading happens in two steps. tree.c turns libyaml's events into a small
 * tree of scalars, maps and lists (refusing aliases, anchors, tags, several
 * documents and nesting deeper than the format needs), each node knowing its
 * one-based line and its place in the file, so that any refusal can name
 * "FILE:LINE: FIELD". parse.c and region.c then walk that tree against the
 * format, filling a topology; value.c holds the getters that check one value
 * each and the registries that keep ids and addresses unique across the file.
 */
#ifndef MERIDIAN_TOPO_INTERNAL_H
#define MERIDIAN_TOPO_INTERNAL_H

#include <stdarg.h>

#include "meridian/common.h"
#include "meridian/topo.h"

/* Deepest nesting of maps and lists the format needs:
 * top map > regions > region > routers > router > custom. */
#define TOPO_YAML_DEPTH_MAX 6
/* A full topology (11 regions, every list at its maximum) is about 6000 nodes. */
#define TOPO_YAML_NODES_MAX 16384
/* Longest piece of user text quoted back in a message. */
#define TOPO_SHOW_MAX 40
/* Field paths in messages. */
#define TOPO_FIELD_MAX 256

#define TOPO_PRIORITY_MIN 0
#define TOPO_PRIORITY_MAX 15
#define TOPO_PRIORITY_DEFAULT 1
#define TOPO_PAGE_SIZE_MIN 512u
#define TOPO_PAGE_SIZE_MAX 65536u
#define TOPO_PAGE_SIZE_DEFAULT 4096u
#define TOPO_PG_SIZE_MIN (64ull << 10)
#define TOPO_PG_SIZE_MAX (1ull << 40)
#define TOPO_PG_SIZE_DEFAULT (10ull << 30)
#define TOPO_RPO_SECONDS_MAX 86400u
#define TOPO_READER_LAG_MS_MIN 1u
#define TOPO_READER_LAG_MS_MAX 3600000u
#define TOPO_READER_LAG_MS_DEFAULT 10000u
#define TOPO_WRITER_TIMEOUT_MS_MIN 100u
#define TOPO_WRITER_TIMEOUT_MS_MAX 600000u
#define TOPO_WRITER_TIMEOUT_MS_DEFAULT 1000u
#define TOPO_CERTS_DEFAULT "" /* empty: DATA/certs, chosen by the CLI */

/* Every process id of a file, and every address a process owns or listens on. */
#define TOPO_IDS_MAX (TOPO_REGIONS_MAX * (TOPO_STORAGE + TOPO_INSTANCES_MAX + 1 + TOPO_ROUTERS_MAX))
#define TOPO_ADDRS_MAX                                                                             \
    (TOPO_REGIONS_MAX *                                                                            \
     (TOPO_STORAGE + TOPO_INSTANCES_MAX + 1 + TOPO_ROUTERS_MAX * (4 + TOPO_CUSTOM_MAX)))

/* ---- the YAML tree -------------------------------------------------------------------- */

typedef enum { TOPO_TREE_SCALAR, TOPO_TREE_MAP, TOPO_TREE_LIST } topo_tree_kind;

typedef struct {
    topo_tree_kind kind;
    bool plain;            /* scalar written without quotes (so `12` is an integer, `"12"` text) */
    bool is_key;           /* a map's key */
    int line;              /* one-based */
    int parent;            /* -1 for the top node */
    int key;               /* a map's value: its key node; otherwise -1 */
    int index;             /* a list's item: its position; otherwise -1 */
    int first, last, next; /* children; a map's are key, value, key, value, ... */
    int count;             /* number of children */
    size_t text;           /* scalar: offset of its NUL-terminated text in the arena */
    size_t len;            /* scalar: length of the text (it may hold a NUL) */
} topo_tree_node;

typedef struct {
    topo_tree_node *nodes;
    int count, cap;
    mrd_buf arena; /* every scalar's text */
    int top;       /* the document's top node, -1 when none */
} topo_tree;

/* Reads YAML text into t (which it initialises; free it with topo_tree_free either way). */
int topo_tree_load(topo_tree *t, const char *name, const char *text, size_t len, mrd_msg *msg);
void topo_tree_free(topo_tree *t);

static inline const topo_tree_node *topo_tree_at(const topo_tree *t, int node)
{
    return &t->nodes[node];
}

static inline const char *topo_tree_text(const topo_tree *t, int node)
{
    return (const char *)t->arena.data + t->nodes[node].text;
}

/* The dotted field path of node ("regions[0].storage[3].address"); "" for the top node. */
void topo_tree_path(const topo_tree *t, int node, char *buf, size_t len);

/* Copies text for a message: at most TOPO_SHOW_MAX characters, control bytes as '?'. */
const char *topo_show(const char *text, size_t len, char *buf, size_t cap);
#define TOPO_SHOW_BUF (TOPO_SHOW_MAX + 4)

/* Formats "NAME:LINE: FIELD: what" into msg and returns MRD_EPARSE. */
int topo_fail_line(const char *name, mrd_msg *msg, int line, const char *field, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/* ---- the parsing context ---------------------------------------------------------------- */

typedef struct {
    char id[TOPO_NAME_MAX];
    int node;
} topo_seen_id;

typedef struct {
    topo_addr addr;
    int node;
} topo_seen_addr;

typedef struct {
    const char *name; /* for messages */
    mrd_msg *msg;
    topo_tree tree;
    topology topo; /* filled here, copied out only when the whole file is good */
    topo_seen_id ids[TOPO_IDS_MAX];
    int id_count;
    topo_seen_addr addrs[TOPO_ADDRS_MAX];
    int addr_count;
} topo_ctx;

/* Refuses at node: "NAME:LINE: FIELD: what"; returns MRD_EPARSE. */
int topo_fail(topo_ctx *c, int node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Refuses a required key missing from map. */
int topo_fail_missing(topo_ctx *c, int map, const char *key);

/* Checks that node is a map whose keys are all in allowed (NULL-terminated), each once. */
int topo_check_keys(topo_ctx *c, int node, const char *const allowed[]);
/* The value of key in a checked map, or -1. */
int topo_get(topo_ctx *c, int map, const char *key);
/* Like topo_get but refuses a missing key. */
int topo_need(topo_ctx *c, int map, const char *key, int *value);

/* Checks that node is a list of min..max items; what names the items in the message. */
int topo_check_list(topo_ctx *c, int node, int min, int max, const char *what);
int topo_check_map(topo_ctx *c, int node);

/* Typed values. */
int topo_get_text(topo_ctx *c, int node, char *out, size_t cap);
int topo_get_name(topo_ctx *c, int node, char out[TOPO_NAME_MAX]);
int topo_get_int(topo_ctx *c, int node, long long min, long long max, long long *out);
int topo_get_bool(topo_ctx *c, int node, bool *out);
int topo_get_size(topo_ctx *c, int node, uint64_t *out);
/* Parses an address and claims it: every address is used once in a file. */
int topo_get_addr(topo_ctx *c, int node, topo_addr *out);
/* Claims a process id: every id is used once in a file. */
int topo_claim_id(topo_ctx *c, int node, const char *id);

/* Why text is not a valid address (NULL when it is; then *out holds it). */
const char *topo_addr_problem(const char *text, size_t len, topo_addr *out);
/* Same host (case-insensitive) and port. */
bool topo_addr_equal(const topo_addr *a, const topo_addr *b);

/* One region: regions[index] from its map node. */
int topo_parse_region(topo_ctx *c, int node, int index);

#endif
