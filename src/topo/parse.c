/*
 * The top of a topology file: its name, primary region, settings and list
 * of regions. The whole file is read into a private topology and copied to
 * the caller only when every check has passed, so a refused file leaves the
 * caller's struct as it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topo_internal.h"

static const char *const top_keys[] = {"name", "primary", "settings", "regions", NULL};
static const char *const settings_keys[] = {
    "pg_size",           "page_size",        "tls", "certs", "rpo_seconds",
    "reader_lag_max_ms", "write_forwarding", "writer_timeout_ms", NULL};

static void settings_defaults(topology *t)
{
    t->pg_size_bytes = TOPO_PG_SIZE_DEFAULT;
    t->page_size = TOPO_PAGE_SIZE_DEFAULT;
    t->tls = true;
    snprintf(t->certs_dir, sizeof(t->certs_dir), "%s", TOPO_CERTS_DEFAULT);
    t->rpo_seconds = 0;
    t->reader_lag_max_ms = TOPO_READER_LAG_MS_DEFAULT;
    t->write_forwarding = false;
    t->writer_timeout_ms = TOPO_WRITER_TIMEOUT_MS_DEFAULT;
}

static int parse_uint(topo_ctx *c, int map, const char *key, long long min, long long max,
                      uint32_t *out)
{
    long long v;
    int node = topo_get(c, map, key), rc;
    if (node < 0) return 0;
    if ((rc = topo_get_int(c, node, min, max, &v)) != 0) return rc;
    *out = (uint32_t)v;
    return 0;
}

static int parse_flag(topo_ctx *c, int map, const char *key, bool *out)
{
    int node = topo_get(c, map, key);
    return node < 0 ? 0 : topo_get_bool(c, node, out);
}

static int parse_sizes(topo_ctx *c, int map)
{
    topology *t = &c->topo;
    int rc = parse_uint(c, map, "page_size", TOPO_PAGE_SIZE_MIN, TOPO_PAGE_SIZE_MAX, &t->page_size);
    if (rc != 0) return rc;
    int page = topo_get(c, map, "page_size"), pg = topo_get(c, map, "pg_size");
    if ((t->page_size & (t->page_size - 1)) != 0)
        return topo_fail(c, page, "must be a power of two, found %u", t->page_size);
    if (pg >= 0 && (rc = topo_get_size(c, pg, &t->pg_size_bytes)) != 0) return rc;
    if (t->pg_size_bytes % t->page_size != 0)
        return topo_fail(c, pg >= 0 ? pg : page,
                         "pg_size (%llu bytes) is not a multiple of "
                         "page_size (%u)",
                         (unsigned long long)t->pg_size_bytes, t->page_size);
    return 0;
}

static int parse_settings(topo_ctx *c, int map)
{
    topology *t = &c->topo;
    int node, rc;
    if ((rc = topo_check_keys(c, map, settings_keys)) != 0) return rc;
    if ((rc = parse_sizes(c, map)) != 0) return rc;
    if ((rc = parse_flag(c, map, "tls", &t->tls)) != 0) return rc;
    if ((node = topo_get(c, map, "certs")) >= 0 &&
        (rc = topo_get_text(c, node, t->certs_dir, sizeof(t->certs_dir))) != 0)
        return rc;
    if ((rc = parse_uint(c, map, "rpo_seconds", 0, TOPO_RPO_SECONDS_MAX, &t->rpo_seconds)) != 0)
        return rc;
    if ((rc = parse_uint(c, map, "reader_lag_max_ms", TOPO_READER_LAG_MS_MIN,
                         TOPO_READER_LAG_MS_MAX, &t->reader_lag_max_ms)) != 0)
        return rc;
    if ((rc = parse_uint(c, map, "writer_timeout_ms", 0, TOPO_WRITER_TIMEOUT_MS_MAX,
                         &t->writer_timeout_ms)) != 0)
        return rc;
    if (t->writer_timeout_ms != 0 && t->writer_timeout_ms < TOPO_WRITER_TIMEOUT_MS_MIN) {
        int node = topo_get(c, map, "writer_timeout_ms");
        return topo_fail(c, node, "must be 0 (no automatic writer failover) or %u..%u, found %u",
                         TOPO_WRITER_TIMEOUT_MS_MIN, TOPO_WRITER_TIMEOUT_MS_MAX,
                         t->writer_timeout_ms);
    }
    return parse_flag(c, map, "write_forwarding", &t->write_forwarding);
}

static int parse_regions(topo_ctx *c, int map)
{
    int list, rc;
    if ((rc = topo_need(c, map, "regions", &list)) != 0) return rc;
    if ((rc = topo_check_list(c, list, 1, TOPO_REGIONS_MAX, "regions")) != 0) return rc;
    for (int item = topo_tree_at(&c->tree, list)->first; item >= 0;
         item = topo_tree_at(&c->tree, item)->next) {
        if ((rc = topo_parse_region(c, item, c->topo.region_count)) != 0) return rc;
        c->topo.region_count++;
    }
    return 0;
}

static int find_primary(topo_ctx *c, int node)
{
    topology *t = &c->topo;
    for (int i = 0; i < t->region_count; i++) {
        if (strcmp(t->regions[i].name, t->primary) != 0) continue;
        t->primary_region = i;
        return 0;
    }
    return topo_fail(c, node, "'%s' is not one of the regions", t->primary);
}

static int parse_top(topo_ctx *c)
{
    int top = c->tree.top, node, primary, rc;
    const topo_tree_node *n = topo_tree_at(&c->tree, top);
    if (n->kind == TOPO_TREE_SCALAR && n->plain && n->len == 0)
        return topo_fail_line(c->name, c->msg, 1, "(document)",
                              "empty: a topology needs at least name, primary and regions");
    if ((rc = topo_check_keys(c, top, top_keys)) != 0) return rc;
    if ((rc = topo_need(c, top, "name", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, c->topo.name)) != 0) return rc;
    if ((rc = topo_need(c, top, "primary", &primary)) != 0) return rc;
    if ((rc = topo_get_name(c, primary, c->topo.primary)) != 0) return rc;
    settings_defaults(&c->topo);
    if ((node = topo_get(c, top, "settings")) >= 0 && (rc = parse_settings(c, node)) != 0)
        return rc;
    if ((rc = parse_regions(c, top)) != 0) return rc;
    return find_primary(c, primary);
}

int topo_parse(const char *name, const char *text, size_t len, topology *out, mrd_msg *msg)
{
    if (name == NULL) name = "topology";
    if (out == NULL || (text == NULL && len > 0))
        return mrd_fail(msg, MRD_EINVAL, "%s: no topology text or no place to put it", name);
    if (strlen(name) >= TOPO_PATH_MAX)
        return mrd_fail(msg, MRD_EINVAL, "topology name longer than %d bytes", TOPO_PATH_MAX - 1);
    if (len > TOPO_FILE_BYTES_MAX)
        return topo_fail_line(name, msg, 1, "(document)", "%zu bytes, more than the limit of %d",
                              len, TOPO_FILE_BYTES_MAX);
    topo_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) return mrd_fail(msg, MRD_ENOMEM, "%s: out of memory", name);
    c->name = name;
    c->msg = msg;
    int rc = topo_tree_load(&c->tree, name, text, len, msg);
    if (rc != 0) goto fail_tree;
    snprintf(c->topo.path, sizeof(c->topo.path), "%s", name);
    rc = parse_top(c);
    if (rc != 0) goto fail_tree;
    memcpy(out, &c->topo, sizeof(*out));
fail_tree:
    topo_tree_free(&c->tree);
    free(c);
    return rc;
}

int topo_load(const char *path, topology *out, mrd_msg *msg)
{
    char *text = NULL;
    size_t len = 0;
    if (path == NULL || out == NULL)
        return mrd_fail(msg, MRD_EINVAL, "topo_load: no path or no out");
    int rc = mrd_read_file(path, TOPO_FILE_BYTES_MAX, &text, &len, msg);
    if (rc != 0) return rc;
    rc = topo_parse(path, text, len, out, msg);
    free(text);
    return rc;
}
