/*
 * Reading a parsed topology: printing it for `meridian check`, walking its
 * processes, finding one by id, and resolving the certs folder.
 */
#include <stdio.h>
#include <string.h>

#include "topo_internal.h"

#define TOPO_ADDR_TEXT_MAX (TOPO_HOST_MAX + 8) /* "[host]:65535" */
#define TOPO_SIZE_TEXT_MAX 32

static const char *size_text(uint64_t bytes, char *buf, size_t len)
{
    static const struct {
        const char *unit;
        unsigned shift;
    } units[] = {{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}};
    for (size_t i = 0; i < MRD_ARRAY_LEN(units); i++) {
        uint64_t one = 1ull << units[i].shift;
        if (bytes >= one && bytes % one == 0) {
            snprintf(buf, len, "%llu %s", (unsigned long long)(bytes / one), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%llu bytes", (unsigned long long)bytes);
    return buf;
}

/* Column widths shared by every line of a region, so that columns line up. */
typedef struct {
    int id, az, addr;
} print_widths;

static void widen(print_widths *w, const topo_region *r, const topo_node *n)
{
    char addr[TOPO_ADDR_TEXT_MAX];
    int id = (int)strlen(n->id), az = (int)strlen(r->azs[n->az]);
    int a = (int)strlen(topo_addr_str(&n->addr, addr, sizeof(addr)));
    if (id > w->id) w->id = id;
    if (az > w->az) w->az = az;
    if (a > w->addr) w->addr = a;
}

static int widen_cb(const topology *topo, const topo_node *node, void *ud)
{
    widen(ud, &topo->regions[node->region], node);
    return 0;
}

static void print_node(FILE *out, const topology *topo, const topo_node *n, const print_widths *w)
{
    char addr[TOPO_ADDR_TEXT_MAX];
    fprintf(out, "  %-8s %-*s  az %-*s  %-*s", topo_role_name(n->role), w->id, n->id, w->az,
            topo->regions[n->region].azs[n->az], w->addr,
            topo_addr_str(&n->addr, addr, sizeof(addr)));
    if (n->role == TOPO_ROLE_WRITER || n->role == TOPO_ROLE_READER)
        fprintf(out, "  priority %d", n->priority);
}

static void print_router(FILE *out, const topology *topo, const topo_router *rt,
                         const print_widths *w)
{
    const topo_region *r = &topo->regions[rt->node.region];
    char addr[TOPO_ADDR_TEXT_MAX];
    print_node(out, topo, &rt->node, w);
    if (rt->has_cluster)
        fprintf(out, "  cluster %s", topo_addr_str(&rt->cluster, addr, sizeof(addr)));
    if (rt->has_reader) fprintf(out, "  reader %s", topo_addr_str(&rt->reader, addr, sizeof(addr)));
    if (rt->has_global_writer)
        fprintf(out, "  global_writer %s", topo_addr_str(&rt->global_writer, addr, sizeof(addr)));
    for (int i = 0; i < r->custom_count; i++)
        if (rt->has_custom[i])
            fprintf(out, "  custom %s %s", r->custom[i].name,
                    topo_addr_str(&rt->custom[i], addr, sizeof(addr)));
    fputc('\n', out);
}

static void print_custom(FILE *out, const topo_custom *e)
{
    fprintf(out, "  custom endpoint %s: %s", e->name,
            e->exclude ? "all readers except" : "members");
    if (e->member_count == 0) fprintf(out, " none");
    for (int i = 0; i < e->member_count; i++)
        fprintf(out, " %s", e->members[i]);
    fputc('\n', out);
}

static void print_region(FILE *out, const topology *topo, int index, const print_widths *w)
{
    const topo_region *r = &topo->regions[index];
    fprintf(out, "region %s%s  azs %s %s %s\n", r->name,
            index == topo->primary_region ? " (primary)" : "", r->azs[0], r->azs[1], r->azs[2]);
    for (int i = 0; i < TOPO_STORAGE; i++) {
        print_node(out, topo, &r->storage[i], w);
        fputc('\n', out);
    }
    for (int i = 0; i < r->instance_count; i++) {
        print_node(out, topo, &r->instances[i], w);
        fputc('\n', out);
    }
    print_node(out, topo, &r->agent, w);
    if (r->agent_peer.port != r->agent.addr.port || strcmp(r->agent_peer.host, r->agent.addr.host)) {
        char peer[128];
        fprintf(out, "  peer %s", topo_addr_str(&r->agent_peer, peer, sizeof(peer)));
    }
    fputc('\n', out);
    for (int i = 0; i < r->router_count; i++)
        print_router(out, topo, &r->routers[i], w);
    for (int i = 0; i < r->custom_count; i++)
        print_custom(out, &r->custom[i]);
}

void topo_print(const topology *topo, FILE *out)
{
    char pg[TOPO_SIZE_TEXT_MAX];
    fprintf(out, "global database %s, primary region %s, tls %s, pg_size %s, page_size %u, ",
            topo->name, topo->primary, topo->tls ? "on" : "off",
            size_text(topo->pg_size_bytes, pg, sizeof(pg)), topo->page_size);
    if (topo->rpo_seconds == 0)
        fprintf(out, "rpo off\n");
    else
        fprintf(out, "rpo %u s\n", topo->rpo_seconds);
    fprintf(out, "certs %s, reader_lag_max_ms %u, write_forwarding %s, writer_timeout_ms %u\n",
            topo->certs_dir[0] != '\0' ? topo->certs_dir : "DATA/certs",
            topo->reader_lag_max_ms, topo->write_forwarding ? "on" : "off",
            topo->writer_timeout_ms);
    print_widths w = {0, 0, 0};
    topo_each_node(topo, widen_cb, &w);
    for (int i = 0; i < topo->region_count; i++)
        print_region(out, topo, i, &w);
}

static int each_in_region(const topology *topo, const topo_region *r, topo_node_fn fn, void *ud)
{
    int rc;
    for (int i = 0; i < TOPO_STORAGE; i++)
        if ((rc = fn(topo, &r->storage[i], ud)) != 0) return rc;
    for (int i = 0; i < r->instance_count; i++)
        if ((rc = fn(topo, &r->instances[i], ud)) != 0) return rc;
    if ((rc = fn(topo, &r->agent, ud)) != 0) return rc;
    for (int i = 0; i < r->router_count; i++)
        if ((rc = fn(topo, &r->routers[i].node, ud)) != 0) return rc;
    return 0;
}

int topo_each_node(const topology *topo, topo_node_fn fn, void *ud)
{
    for (int i = 0; i < topo->region_count; i++) {
        int rc = each_in_region(topo, &topo->regions[i], fn, ud);
        if (rc != 0) return rc;
    }
    return 0;
}

typedef struct {
    const char *id;
    const topo_node *found;
} find_state;

static int find_cb(const topology *topo, const topo_node *node, void *ud)
{
    find_state *s = ud;
    if (strcmp(node->id, s->id) != 0) return 0;
    s->found = node;
    return 1;
}

const topo_node *topo_find(const topology *topo, const char *id)
{
    find_state s = {.id = id, .found = NULL};
    if (topo == NULL || id == NULL) return NULL;
    topo_each_node(topo, find_cb, &s);
    return s.found;
}

int topo_region_index(const topology *topo, const char *name)
{
    for (int i = 0; i < topo->region_count; i++)
        if (strcmp(topo->regions[i].name, name) == 0) return i;
    return -1;
}

int topo_instance_index(const topo_region *region, const char *id)
{
    for (int i = 0; i < region->instance_count; i++)
        if (strcmp(region->instances[i].id, id) == 0) return i;
    return -1;
}

const topo_router *topo_router_of(const topology *topo, const topo_node *node)
{
    if (topo == NULL || node == NULL || node->role != TOPO_ROLE_ROUTER) return NULL;
    if (node->region < 0 || node->region >= topo->region_count) return NULL;
    const topo_region *r = &topo->regions[node->region];
    for (int i = 0; i < r->router_count; i++)
        if (strcmp(r->routers[i].node.id, node->id) == 0) return &r->routers[i];
    return NULL;
}

const char *topo_certs_dir(const topology *topo, char *buf, size_t len)
{
    const char *certs = topo->certs_dir, *slash = strrchr(topo->path, '/');
    int n;
    if (certs[0] == '\0') return NULL;
    if (certs[0] == '/' || slash == NULL)
        n = snprintf(buf, len, "%s", certs);
    else
        n = snprintf(buf, len, "%.*s/%s", (int)(slash - topo->path), topo->path, certs);
    return n >= 0 && (size_t)n < len ? buf : NULL;
}

int topo_segment_of(const topo_region *region, const topo_node *node)
{
    for (int seg = 0; seg < TOPO_STORAGE; seg++)
        if (topo_segment_node(region, seg) == node) return seg;
    return -1;
}

const topo_node *topo_segment_node(const topo_region *region, int seg)
{
    if (seg < 0 || seg >= TOPO_STORAGE) return NULL;
    int want_az = seg / TOPO_STORAGE_PER_AZ, want_rank = seg % TOPO_STORAGE_PER_AZ, rank = 0;
    for (int i = 0; i < TOPO_STORAGE; i++) {
        if (region->storage[i].az != want_az) continue;
        if (rank++ == want_rank) return &region->storage[i];
    }
    return NULL;
}
