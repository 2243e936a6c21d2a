/*
 * One region of a topology: its three AZs, six storage nodes (two per AZ),
 * one writer and up to fifteen readers, its agent, its custom endpoints and
 * the routers that serve its endpoints. Keys are read in a fixed order
 * (not the file's) so that cross-references can be checked as they are read:
 * AZs before processes, instances before custom endpoints, custom endpoints
 * before routers.
 */
#include <stdio.h>
#include <string.h>

#include "topo_internal.h"

static const char *const region_keys[] = {"name",  "azs",     "storage",          "instances",
                                          "agent", "routers", "custom_endpoints", NULL};
static const char *const storage_keys[] = {"id", "az", "address", NULL};
static const char *const agent_keys[] = {"id", "az", "address", "peer_address", NULL};
static const char *const instance_keys[] = {"id", "role", "az", "address", "priority", NULL};
static const char *const router_keys[] = {
    "id", "az", "address", "cluster", "reader", "global_writer", "custom", NULL};
static const char *const custom_keys[] = {"name", "members", "exclude", NULL};

#define for_each_item(c, list, item)                                                               \
    for (int item = topo_tree_at(&(c)->tree, list)->first; item >= 0;                              \
         item = topo_tree_at(&(c)->tree, item)->next)

static int parse_azs(topo_ctx *c, int map, topo_region *r)
{
    int list, rc;
    if ((rc = topo_need(c, map, "azs", &list)) != 0) return rc;
    if ((rc = topo_check_list(c, list, TOPO_AZS, TOPO_AZS, "azs")) != 0) return rc;
    int i = 0;
    for_each_item(c, list, item)
    {
        if ((rc = topo_get_name(c, item, r->azs[i])) != 0) return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(r->azs[j], r->azs[i]) == 0)
                return topo_fail(c, item, "az '%s' is listed twice", r->azs[i]);
        i++;
    }
    return 0;
}

static int parse_az_ref(topo_ctx *c, int map, const topo_region *r, int *az)
{
    int node, rc;
    char name[TOPO_NAME_MAX];
    if ((rc = topo_need(c, map, "az", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, name)) != 0) return rc;
    for (*az = 0; *az < TOPO_AZS; (*az)++)
        if (strcmp(r->azs[*az], name) == 0) return 0;
    return topo_fail(c, node, "az '%s' is not one of the region's azs (%s, %s, %s)", name,
                     r->azs[0], r->azs[1], r->azs[2]);
}

/* The part every process shares: id, az and address (keys already checked). */
static int parse_process(topo_ctx *c, int map, int region, topo_role role, topo_node *out)
{
    int node, rc;
    memset(out, 0, sizeof(*out));
    out->role = role;
    out->region = region;
    out->line = topo_tree_at(&c->tree, map)->line;
    if ((rc = topo_need(c, map, "id", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, out->id)) != 0) return rc;
    if ((rc = topo_claim_id(c, node, out->id)) != 0) return rc;
    if ((rc = parse_az_ref(c, map, &c->topo.regions[region], &out->az)) != 0) return rc;
    if ((rc = topo_need(c, map, "address", &node)) != 0) return rc;
    return topo_get_addr(c, node, &out->addr);
}

static int parse_storage(topo_ctx *c, int map, int region)
{
    topo_region *r = &c->topo.regions[region];
    int list, rc, per_az[TOPO_AZS] = {0}, i = 0;
    if ((rc = topo_need(c, map, "storage", &list)) != 0) return rc;
    if ((rc = topo_check_list(c, list, TOPO_STORAGE, TOPO_STORAGE, "storage nodes")) != 0)
        return rc;
    for_each_item(c, list, item)
    {
        topo_node *n = &r->storage[i++];
        if ((rc = topo_check_keys(c, item, storage_keys)) != 0) return rc;
        if ((rc = parse_process(c, item, region, TOPO_ROLE_STORAGE, n)) != 0) return rc;
        if (++per_az[n->az] > TOPO_STORAGE_PER_AZ)
            return topo_fail(c, topo_get(c, item, "az"),
                             "az '%s' has more than %d storage nodes (need exactly %d in each of "
                             "the %d azs)",
                             r->azs[n->az], TOPO_STORAGE_PER_AZ, TOPO_STORAGE_PER_AZ, TOPO_AZS);
    }
    return 0;
}

static int parse_role(topo_ctx *c, int map, topo_node *n)
{
    int node, rc;
    char role[TOPO_NAME_MAX];
    if ((rc = topo_need(c, map, "role", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, role)) != 0) return rc;
    int parsed = topo_role_parse(role);
    if (parsed != TOPO_ROLE_WRITER && parsed != TOPO_ROLE_READER)
        return topo_fail(c, node, "role must be writer or reader, found '%s'", role);
    n->role = (topo_role)parsed;
    return 0;
}

static int parse_instance(topo_ctx *c, int map, int region, topo_node *n)
{
    int node, rc;
    long long priority = TOPO_PRIORITY_DEFAULT;
    if ((rc = topo_check_keys(c, map, instance_keys)) != 0) return rc;
    if ((rc = parse_process(c, map, region, TOPO_ROLE_READER, n)) != 0) return rc;
    if ((rc = parse_role(c, map, n)) != 0) return rc;
    node = topo_get(c, map, "priority");
    if (node >= 0 &&
        (rc = topo_get_int(c, node, TOPO_PRIORITY_MIN, TOPO_PRIORITY_MAX, &priority)) != 0)
        return rc;
    n->priority = (int)priority;
    return 0;
}

/* Exactly one writer and at most fifteen readers, so never more than TOPO_INSTANCES_MAX. */
static int parse_instances(topo_ctx *c, int map, int region)
{
    topo_region *r = &c->topo.regions[region];
    int list, rc, readers = 0;
    if ((rc = topo_need(c, map, "instances", &list)) != 0) return rc;
    if ((rc = topo_check_list(c, list, 0, TOPO_YAML_NODES_MAX, "instances")) != 0) return rc;
    r->writer = -1;
    for_each_item(c, list, item)
    {
        topo_node n;
        if ((rc = parse_instance(c, item, region, &n)) != 0) return rc;
        int role = topo_get(c, item, "role");
        if (n.role == TOPO_ROLE_WRITER && r->writer >= 0)
            return topo_fail(c, role, "a second writer (the first is %s at line %d)",
                             r->instances[r->writer].id, r->instances[r->writer].line);
        if (n.role == TOPO_ROLE_READER && readers == TOPO_READERS_MAX)
            return topo_fail(c, role, "more than %d readers", TOPO_READERS_MAX);
        if (n.role == TOPO_ROLE_WRITER)
            r->writer = r->instance_count;
        else
            readers++;
        r->instances[r->instance_count++] = n;
    }
    if (r->writer < 0)
        return topo_fail(c, list, "no writer: exactly one instance must have role writer");
    return 0;
}

static int parse_agent(topo_ctx *c, int map, int region)
{
    int node, rc;
    if ((rc = topo_need(c, map, "agent", &node)) != 0) return rc;
    if ((rc = topo_check_keys(c, node, agent_keys)) != 0) return rc;
    topo_region *r = &c->topo.regions[region];
    if ((rc = parse_process(c, node, region, TOPO_ROLE_AGENT, &r->agent)) != 0) return rc;
    /* Optional: where other regions' agents reach this one (a proxy, a WAN emulator). */
    int peer = topo_get(c, node, "peer_address");
    r->agent_peer = r->agent.addr;
    return peer >= 0 ? topo_get_addr(c, peer, &r->agent_peer) : 0;
}

static int instance_index(const topo_region *r, const char *id)
{
    for (int i = 0; i < r->instance_count; i++)
        if (strcmp(r->instances[i].id, id) == 0) return i;
    return -1;
}

static int parse_members(topo_ctx *c, int list, const topo_region *r, topo_custom *e)
{
    int rc = topo_check_list(c, list, e->exclude ? 0 : 1, TOPO_CUSTOM_MEMBERS_MAX,
                             e->exclude ? "excluded instances" : "members");
    if (rc != 0) return rc;
    for_each_item(c, list, item)
    {
        char *id = e->members[e->member_count];
        if ((rc = topo_get_name(c, item, id)) != 0) return rc;
        if (instance_index(r, id) < 0)
            return topo_fail(c, item, "'%s' is not an instance of region %s", id, r->name);
        for (int j = 0; j < e->member_count; j++)
            if (strcmp(e->members[j], id) == 0)
                return topo_fail(c, item, "'%s' is listed twice", id);
        e->member_count++;
    }
    return 0;
}

static int parse_custom(topo_ctx *c, int map, topo_region *r, topo_custom *e)
{
    int node, rc;
    memset(e, 0, sizeof(*e));
    e->line = topo_tree_at(&c->tree, map)->line;
    if ((rc = topo_check_keys(c, map, custom_keys)) != 0) return rc;
    if ((rc = topo_need(c, map, "name", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, e->name)) != 0) return rc;
    for (int j = 0; j < r->custom_count; j++)
        if (strcmp(r->custom[j].name, e->name) == 0)
            return topo_fail(c, node, "duplicate custom endpoint '%s' (first at line %d)", e->name,
                             r->custom[j].line);
    int members = topo_get(c, map, "members"), exclude = topo_get(c, map, "exclude");
    if ((members >= 0) == (exclude >= 0))
        return topo_fail(c, map, "needs exactly one of members or exclude");
    e->exclude = exclude >= 0;
    return parse_members(c, e->exclude ? exclude : members, r, e);
}

static int parse_customs(topo_ctx *c, int map, topo_region *r)
{
    int list = topo_get(c, map, "custom_endpoints"), rc;
    if (list < 0) return 0;
    if ((rc = topo_check_list(c, list, 0, TOPO_CUSTOM_MAX, "custom endpoints")) != 0) return rc;
    for_each_item(c, list, item)
    {
        if ((rc = parse_custom(c, item, r, &r->custom[r->custom_count])) != 0) return rc;
        r->custom_count++;
    }
    return 0;
}

static int custom_index(const topo_region *r, const char *name, size_t len)
{
    for (int i = 0; i < r->custom_count; i++)
        if (strlen(r->custom[i].name) == len && memcmp(r->custom[i].name, name, len) == 0) return i;
    return -1;
}

/* custom: {name: address, ...}; every name declared in the region's custom_endpoints. */
static int parse_custom_listeners(topo_ctx *c, int map, const topo_region *r, topo_router *out)
{
    int rc = topo_check_map(c, map);
    if (rc != 0) return rc;
    const topo_tree *t = &c->tree;
    int first_line[TOPO_CUSTOM_MAX] = {0};
    for (int k = topo_tree_at(t, map)->first; k >= 0;
         k = topo_tree_at(t, topo_tree_at(t, k)->next)->next) {
        int value = topo_tree_at(t, k)->next;
        int i = custom_index(r, topo_tree_text(t, k), topo_tree_at(t, k)->len);
        char shown[TOPO_SHOW_BUF];
        topo_show(topo_tree_text(t, k), topo_tree_at(t, k)->len, shown, sizeof(shown));
        if (i < 0)
            return topo_fail(c, k, "custom endpoint '%s' is not declared in custom_endpoints",
                             shown);
        if (out->has_custom[i])
            return topo_fail(c, k, "duplicate key (first at line %d)", first_line[i]);
        if ((rc = topo_get_addr(c, value, &out->custom[i])) != 0) return rc;
        out->has_custom[i] = true;
        first_line[i] = topo_tree_at(t, k)->line;
    }
    return 0;
}

static int parse_listener(topo_ctx *c, int map, const char *key, topo_addr *addr, bool *has)
{
    int node = topo_get(c, map, key);
    if (node < 0) return 0;
    *has = true;
    return topo_get_addr(c, node, addr);
}

static int parse_router(topo_ctx *c, int map, int region, topo_router *out)
{
    int rc, node;
    memset(out, 0, sizeof(*out));
    if ((rc = topo_check_keys(c, map, router_keys)) != 0) return rc;
    if ((rc = parse_process(c, map, region, TOPO_ROLE_ROUTER, &out->node)) != 0) return rc;
    if ((rc = parse_listener(c, map, "cluster", &out->cluster, &out->has_cluster)) != 0 ||
        (rc = parse_listener(c, map, "reader", &out->reader, &out->has_reader)) != 0 ||
        (rc = parse_listener(c, map, "global_writer", &out->global_writer,
                             &out->has_global_writer)) != 0)
        return rc;
    node = topo_get(c, map, "custom");
    if (node < 0) return 0;
    return parse_custom_listeners(c, node, &c->topo.regions[region], out);
}

static int parse_routers(topo_ctx *c, int map, int region)
{
    topo_region *r = &c->topo.regions[region];
    int list, rc;
    bool cluster = false, reader = false;
    if ((rc = topo_need(c, map, "routers", &list)) != 0) return rc;
    if ((rc = topo_check_list(c, list, 1, TOPO_ROUTERS_MAX, "routers")) != 0) return rc;
    for_each_item(c, list, item)
    {
        topo_router *router = &r->routers[r->router_count];
        if ((rc = parse_router(c, item, region, router)) != 0) return rc;
        cluster = cluster || router->has_cluster;
        reader = reader || router->has_reader;
        r->router_count++;
    }
    if (!cluster || !reader)
        return topo_fail(c, list,
                         "no router serves the %s endpoint (the routers of a region "
                         "together must serve cluster and reader)",
                         cluster ? "reader" : "cluster");
    return 0;
}

int topo_parse_region(topo_ctx *c, int map, int region)
{
    topo_region *r = &c->topo.regions[region];
    int node, rc;
    if ((rc = topo_check_keys(c, map, region_keys)) != 0) return rc;
    r->line = topo_tree_at(&c->tree, map)->line;
    if ((rc = topo_need(c, map, "name", &node)) != 0) return rc;
    if ((rc = topo_get_name(c, node, r->name)) != 0) return rc;
    for (int j = 0; j < region; j++)
        if (strcmp(c->topo.regions[j].name, r->name) == 0)
            return topo_fail(c, node, "duplicate region name '%s' (first at line %d)", r->name,
                             c->topo.regions[j].line);
    if ((rc = parse_azs(c, map, r)) != 0 || (rc = parse_storage(c, map, region)) != 0 ||
        (rc = parse_instances(c, map, region)) != 0 || (rc = parse_agent(c, map, region)) != 0 ||
        (rc = parse_customs(c, map, r)) != 0 || (rc = parse_routers(c, map, region)) != 0)
        return rc;
    return 0;
}
