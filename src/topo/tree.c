/*
 * libyaml's events to a plain tree. A topology is plain data: one document
 * of maps, lists and scalars, no aliases, anchors or tags, no complex keys,
 * no deeper nesting than the format needs. Anything else is refused here,
 * before any of it is interpreted, with the line and the field where it is.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "topo_internal.h"

#define TOPO_TREE_CAP_MIN 64
#define TOPO_DOCUMENT "(document)"

typedef struct {
    topo_tree *t;
    const char *name;
    mrd_msg *msg;
    int stack[TOPO_YAML_DEPTH_MAX]; /* open maps and lists */
    int depth;
    int documents;
    bool done;
} tree_builder;

int topo_fail_line(const char *name, mrd_msg *msg, int line, const char *field, const char *fmt,
                   ...)
{
    char what[MRD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return mrd_fail(msg, MRD_EPARSE, "%s:%d: %s: %s", name, line, field, what);
}

const char *topo_show(const char *text, size_t len, char *buf, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap && i < TOPO_SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)text[i];
        buf[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (len > TOPO_SHOW_MAX && n + 4 <= cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* ---- field paths ------------------------------------------------------------------------ */

static void path_append(char *buf, size_t len, size_t *used, const char *segment)
{
    size_t n = strlen(segment);
    if (*used + n >= len) n = len - 1 - *used;
    memcpy(buf + *used, segment, n);
    *used += n;
    buf[*used] = '\0';
}

static void path_segment(const topo_tree *t, int node, bool first, char *buf, size_t len,
                         size_t *used)
{
    const topo_tree_node *n = topo_tree_at(t, node);
    int named = n->is_key ? node : n->key;
    char segment[TOPO_SHOW_BUF + 2];
    if (named >= 0) {
        char shown[TOPO_SHOW_BUF] = "(complex key)";
        const topo_tree_node *k = topo_tree_at(t, named);
        if (k->kind == TOPO_TREE_SCALAR)
            topo_show(topo_tree_text(t, named), k->len, shown, sizeof(shown));
        snprintf(segment, sizeof(segment), "%s%s", first ? "" : ".", shown);
    } else if (n->index >= 0) {
        snprintf(segment, sizeof(segment), "[%d]", n->index);
    } else {
        return;
    }
    path_append(buf, len, used, segment);
}

void topo_tree_path(const topo_tree *t, int node, char *buf, size_t len)
{
    int chain[2 * TOPO_YAML_DEPTH_MAX + 2];
    int count = 0;
    for (int i = node; i >= 0 && count < (int)MRD_ARRAY_LEN(chain); i = t->nodes[i].parent)
        chain[count++] = i;
    size_t used = 0;
    buf[0] = '\0';
    /* chain[count - 1] is the top node, which adds nothing to a path. */
    for (int k = count - 2; k >= 0; k--)
        path_segment(t, chain[k], k == count - 2, buf, len, &used);
}

/* ---- building --------------------------------------------------------------------------- */

static int line_of(yaml_mark_t mark)
{
    return mark.line >= (size_t)INT_MAX - 1 ? INT_MAX : (int)mark.line + 1;
}

static int build_fail(tree_builder *b, int node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int build_fail(tree_builder *b, int node, const char *fmt, ...)
{
    char field[TOPO_FIELD_MAX], what[MRD_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    topo_tree_path(b->t, node, field, sizeof(field));
    return topo_fail_line(b->name, b->msg, b->t->nodes[node].line, field[0] ? field : TOPO_DOCUMENT,
                          "%s", what);
}

static int tree_grow(tree_builder *b)
{
    topo_tree *t = b->t;
    int cap = t->cap < TOPO_TREE_CAP_MIN ? TOPO_TREE_CAP_MIN : t->cap * 2;
    if (cap > TOPO_YAML_NODES_MAX) cap = TOPO_YAML_NODES_MAX;
    topo_tree_node *nodes = realloc(t->nodes, (size_t)cap * sizeof(*nodes));
    if (nodes == NULL) return mrd_fail(b->msg, MRD_ENOMEM, "%s: out of memory", b->name);
    t->nodes = nodes;
    t->cap = cap;
    return 0;
}

/* Links a new node id under the innermost open map or list. */
static void tree_link(topo_tree *t, int parent, int id)
{
    topo_tree_node *p = &t->nodes[parent], *n = &t->nodes[id];
    n->parent = parent;
    if (p->kind == TOPO_TREE_MAP && p->count % 2 == 0)
        n->is_key = true;
    else if (p->kind == TOPO_TREE_MAP)
        n->key = p->last;
    else
        n->index = p->count;
    if (p->last >= 0)
        t->nodes[p->last].next = id;
    else
        p->first = id;
    p->last = id;
    p->count++;
}

static int tree_add(tree_builder *b, topo_tree_kind kind, yaml_mark_t mark, int *out)
{
    topo_tree *t = b->t;
    int line = line_of(mark);
    if (t->count >= TOPO_YAML_NODES_MAX)
        return topo_fail_line(b->name, b->msg, line, TOPO_DOCUMENT,
                              "more than %d values: far larger than any topology",
                              TOPO_YAML_NODES_MAX);
    int rc = t->count == t->cap ? tree_grow(b) : 0;
    if (rc != 0) return rc;
    int id = t->count++;
    t->nodes[id] = (topo_tree_node){.kind = kind,
                                    .line = line,
                                    .parent = -1,
                                    .key = -1,
                                    .index = -1,
                                    .first = -1,
                                    .last = -1,
                                    .next = -1};
    if (b->depth > 0)
        tree_link(t, b->stack[b->depth - 1], id);
    else if (t->top < 0)
        t->top = id;
    else
        return build_fail(b, id, "more than one top-level value");
    *out = id;
    if (t->nodes[id].is_key && kind != TOPO_TREE_SCALAR)
        return build_fail(b, id, "a key must be a plain scalar, not a map or list");
    return 0;
}

/* Anchors, aliases and tags make a topology something other than plain data. */
static int check_plain(tree_builder *b, int node, const yaml_char_t *anchor, const yaml_char_t *tag)
{
    if (anchor != NULL)
        return build_fail(b, node, "anchors (&name) are not allowed: a topology is plain data");
    if (tag != NULL)
        return build_fail(b, node, "tags (!name) are not allowed: a topology is plain data");
    return 0;
}

static int on_scalar(tree_builder *b, yaml_event_t *ev)
{
    int id;
    int rc = tree_add(b, TOPO_TREE_SCALAR, ev->start_mark, &id);
    if (rc != 0) return rc;
    topo_tree_node *n = &b->t->nodes[id];
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->text = b->t->arena.len;
    n->len = ev->data.scalar.length;
    if (mrd_buf_append(&b->t->arena, ev->data.scalar.value, n->len) != 0 ||
        mrd_buf_append(&b->t->arena, "", 1) != 0)
        return mrd_fail(b->msg, MRD_ENOMEM, "%s: out of memory", b->name);
    return check_plain(b, id, ev->data.scalar.anchor, ev->data.scalar.tag);
}

static int on_open(tree_builder *b, yaml_event_t *ev, topo_tree_kind kind)
{
    int id;
    int rc = tree_add(b, kind, ev->start_mark, &id);
    if (rc != 0) return rc;
    bool map = kind == TOPO_TREE_MAP;
    rc = check_plain(b, id, map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor,
                     map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
    if (rc != 0) return rc;
    if (b->depth == TOPO_YAML_DEPTH_MAX)
        return build_fail(b, id, "nested deeper than the format's %d levels of maps and lists",
                          TOPO_YAML_DEPTH_MAX);
    b->stack[b->depth++] = id;
    return 0;
}

static int on_alias(tree_builder *b, yaml_event_t *ev)
{
    int id;
    int rc = tree_add(b, TOPO_TREE_SCALAR, ev->start_mark, &id);
    if (rc != 0) return rc;
    if (mrd_buf_append(&b->t->arena, "", 1) != 0)
        return mrd_fail(b->msg, MRD_ENOMEM, "%s: out of memory", b->name);
    b->t->nodes[id].text = b->t->arena.len - 1;
    return build_fail(b, id, "aliases (*name) are not allowed: a topology is plain data");
}

static int on_event(tree_builder *b, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (b->documents++ > 0)
            return topo_fail_line(b->name, b->msg, line_of(ev->start_mark), TOPO_DOCUMENT,
                                  "a second document: a topology file holds exactly one");
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_open(b, ev, TOPO_TREE_LIST);
    case YAML_MAPPING_START_EVENT:
        return on_open(b, ev, TOPO_TREE_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0) b->depth--;
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_STREAM_END_EVENT:
        b->done = true;
        return 0;
    default:
        return 0;
    }
}

static int syntax_error(tree_builder *b, const yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        return mrd_fail(b->msg, MRD_ENOMEM, "%s: out of memory", b->name);
    int line = line_of(p->problem_mark);
    if (p->error == YAML_READER_ERROR) {
        line = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++)
            line += text[i] == '\n';
    }
    const char *problem = p->problem != NULL ? p->problem : "malformed YAML";
    if (p->context == NULL)
        return topo_fail_line(b->name, b->msg, line, "(yaml syntax)", "%s", problem);
    return topo_fail_line(b->name, b->msg, line, "(yaml syntax)", "%s (%s at line %d)", problem,
                          p->context, line_of(p->context_mark));
}

int topo_tree_load(topo_tree *t, const char *name, const char *text, size_t len, mrd_msg *msg)
{
    memset(t, 0, sizeof(*t));
    t->top = -1;
    mrd_buf_init(&t->arena);
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text != NULL ? text : ""), len);
    tree_builder b = {.t = t, .name = name, .msg = msg};
    int rc = 0;
    while (rc == 0 && !b.done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = syntax_error(&b, &parser, text, len);
            break;
        }
        rc = on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (rc == 0 && t->top < 0)
        rc = topo_fail_line(name, msg, 1, TOPO_DOCUMENT, "empty: a topology needs at least %s",
                            "name, primary and regions");
    return rc;
}

void topo_tree_free(topo_tree *t)
{
    free(t->nodes);
    mrd_buf_free(&t->arena);
    memset(t, 0, sizeof(*t));
    t->top = -1;
}
