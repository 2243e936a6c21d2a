/*
 * The topo module: the shipped topologies are accepted, and every refusal
 * names the line and the field at fault. Refusals are a table of edits to one
 * good topology (BASE), each with the line and field its message must name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/topo.h"

#define TEXT_MAX 8192

/* Line numbers in the tables below refer to this text. */
static const char BASE[] = "name: db\n"                                         /*  1 */
                           "primary: east\n"                                    /*  2 */
                           "settings:\n"                                        /*  3 */
                           "  pg_size: 1MiB\n"                                  /*  4 */
                           "  page_size: 4096\n"                                /*  5 */
                           "  tls: false\n"                                     /*  6 */
                           "  certs: certs\n"                                   /*  7 */
                           "  rpo_seconds: 0\n"                                 /*  8 */
                           "  reader_lag_max_ms: 10000\n"                       /*  9 */
                           "  write_forwarding: false\n"                        /* 10 */
                           "regions:\n"                                         /* 11 */
                           "  - name: east\n"                                   /* 12 */
                           "    azs: [a, b, c]\n"                               /* 13 */
                           "    storage:\n"                                     /* 14 */
                           "      - {id: s1, az: a, address: 127.0.0.1:7101}\n" /* 15 */
                           "      - {id: s2, az: a, address: 127.0.0.1:7102}\n" /* 16 */
                           "      - {id: s3, az: b, address: 127.0.0.1:7103}\n" /* 17 */
                           "      - {id: s4, az: b, address: 127.0.0.1:7104}\n" /* 18 */
                           "      - {id: s5, az: c, address: 127.0.0.1:7105}\n" /* 19 */
                           "      - {id: s6, az: c, address: 127.0.0.1:7106}\n" /* 20 */
                           "    instances:\n"                                   /* 21 */
                           "      - {id: w1, role: writer, az: a, address: 127.0.0.1:7201}\n"
                           "      - {id: r1, role: reader, az: b, address: 127.0.0.1:7202, "
                           "priority: 1}\n" /* 23 */
                           "      - {id: r2, role: reader, az: c, address: 127.0.0.1:7203, "
                           "priority: 2}\n"                                            /* 24 */
                           "    agent: {id: agent1, az: a, address: 127.0.0.1:7301}\n" /* 25 */
                           "    routers:\n"                                            /* 26 */
                           "      - id: router1\n"                                     /* 27 */
                           "        az: a\n"                                           /* 28 */
                           "        address: 127.0.0.1:7400\n"                         /* 29 */
                           "        cluster: 127.0.0.1:7401\n"                         /* 30 */
                           "        reader: 127.0.0.1:7402\n"                          /* 31 */
                           "        global_writer: 127.0.0.1:7403\n"                   /* 32 */
                           "        custom: {analytics: 127.0.0.1:7404}\n"             /* 33 */
                           "    custom_endpoints:\n"                                   /* 34 */
                           "      - {name: analytics, members: [r2]}\n";               /* 35 */

/* 14 more readers after r2, making 16: the last one (line 38) is one too many. */
#define R(n, a, port)                                                                              \
    "      - {id: r" #n ", role: reader, az: " #a ", address: 127.0.0.1:" #port "}\n"
#define SIXTEEN_READERS                                                                            \
    "      - {id: r2, role: reader, az: c, address: 127.0.0.1:7203, priority: 2}\n" R(3, a, 7204)  \
        R(4, b, 7205) R(5, c, 7206) R(6, a, 7207) R(7, b, 7208) R(8, c, 7209) R(9, a, 7210)        \
            R(10, b, 7211) R(11, c, 7212) R(12, a, 7213) R(13, b, 7214) R(14, c, 7215)             \
                R(15, a, 7216) R(16, b, 7217)

typedef struct {
    const char *find;    /* text in BASE to replace; NULL: `with` is the whole file */
    const char *with;    /* its replacement */
    int line;            /* the line the message must name */
    const char *field;   /* the field it must name */
    const char *problem; /* and a piece of what it must say */
} refusal;

static const refusal refusals[] = {
    /* unknown keys */
    {"name: db\n", "name: db\ncolour: red\n", 2, "colour",
     "unknown key 'colour' (allowed: name, primary, settings, regions)"},
    {"{id: s3, az: b,", "{id: s3, zone: b,", 17, "regions[0].storage[2].zone",
     "unknown key 'zone'"},
    {"  tls: false\n", "  tls: false\n  compression: on\n", 7, "settings.compression",
     "unknown key"},
    {"address: 127.0.0.1:7101}", "address: 127.0.0.1:7101, priority: 1}", 15,
     "regions[0].storage[0].priority", "unknown key 'priority'"},
    /* wrong types */
    {"    agent: {id: agent1, az: a, address: 127.0.0.1:7301}", "    agent: [agent1]", 25,
     "regions[0].agent", "expected a map, found a list"},
    {"azs: [a, b, c]", "azs: a", 13, "regions[0].azs", "expected a list, found the scalar 'a'"},
    {"primary: east", "primary: {x: 1}", 2, "primary", "expected a scalar, found a map"},
    {"primary: east", "primary:", 2, "primary", "expected text, found nothing"},
    {"{id: s4,", "{id: 44,", 18, "regions[0].storage[3].id",
     "expected text, found an integer '44'"},
    {"- name: east", "- name: yes", 12, "regions[0].name", "expected text, found a bool 'yes'"},
    {"  certs: certs", "  certs: 12", 7, "settings.certs", "expected text, found an integer"},
    {"tls: false", "tls: maybe", 6, "settings.tls", "expected a bool (true, false, yes or no)"},
    {"tls: false", "tls: \"true\"", 6, "settings.tls", "found the text 'true'"},
    {"page_size: 4096", "page_size: \"4096\"", 5, "settings.page_size", "expected an integer"},
    {"page_size: 4096", "page_size: 4k", 5, "settings.page_size", "expected a decimal integer"},
    {"settings:\n  pg_size: 1MiB\n  page_size: 4096\n  tls: false\n  certs: certs\n  rpo_seconds: "
     "0\n  reader_lag_max_ms: 10000\n  write_forwarding: false\n",
     "settings: [1]\n", 3, "settings", "expected a map, found a list"},
    /* missing keys */
    {"{id: s5, az: c, address: 127.0.0.1:7105}", "{id: s5, az: c}", 19,
     "regions[0].storage[4].address", "required key is missing"},
    {"name: db\n", "", 1, "name", "required key is missing"},
    {"primary: east\n", "", 1, "primary", "required key is missing"},
    {"    agent: {id: agent1, az: a, address: 127.0.0.1:7301}\n", "", 12, "regions[0].agent",
     "required key is missing"},
    {"{id: w1, role: writer,", "{id: w1,", 22, "regions[0].instances[0].role",
     "required key is missing"},
    /* duplicate keys */
    {"  page_size: 4096\n", "  page_size: 4096\n  page_size: 8192\n", 6, "settings.page_size",
     "duplicate key (first at line 5)"},
    {"{analytics: 127.0.0.1:7404}", "{analytics: 127.0.0.1:7404, analytics: 127.0.0.1:7405}", 33,
     "regions[0].routers[0].custom.analytics", "duplicate key (first at line 33)"},
    /* duplicate ids: one id space for storage, instances, agents and routers */
    {"agent: {id: agent1", "agent: {id: s2", 25, "regions[0].agent.id",
     "duplicate id 's2' (first used at line 16, regions[0].storage[1].id)"},
    {"- id: router1", "- id: w1", 27, "regions[0].routers[0].id",
     "duplicate id 'w1' (first used at line 22"},
    {"{id: r2,", "{id: r1,", 24, "regions[0].instances[2].id", "first used at line 23"},
    /* duplicate addresses, listeners included */
    {"address: 127.0.0.1:7203", "address: 127.0.0.1:7101", 24, "regions[0].instances[2].address",
     "duplicate address 127.0.0.1:7101 (first used at line 15, regions[0].storage[0].address)"},
    {"reader: 127.0.0.1:7402", "reader: 127.0.0.1:7401", 31, "regions[0].routers[0].reader",
     "duplicate address 127.0.0.1:7401 (first used at line 30"},
    {"{analytics: 127.0.0.1:7404}", "{analytics: 127.0.0.1:7400}", 33,
     "regions[0].routers[0].custom.analytics", "duplicate address"},
    /* AZs and storage placement */
    {"{id: w1, role: writer, az: a", "{id: w1, role: writer, az: d", 22,
     "regions[0].instances[0].az", "az 'd' is not one of the region's azs (a, b, c)"},
    {"{id: s3, az: b", "{id: s3, az: a", 17, "regions[0].storage[2].az",
     "az 'a' has more than 2 storage nodes"},
    {"      - {id: s6, az: c, address: 127.0.0.1:7106}\n", "", 15, "regions[0].storage",
     "expected exactly 6 storage nodes, found 5"},
    {"azs: [a, b, c]", "azs: [a, b, a]", 13, "regions[0].azs[2]", "az 'a' is listed twice"},
    {"azs: [a, b, c]", "azs: [a, b]", 13, "regions[0].azs", "expected exactly 3 azs, found 2"},
    /* writers and readers */
    {"role: writer", "role: reader", 22, "regions[0].instances", "no writer"},
    {"{id: r1, role: reader", "{id: r1, role: writer", 23, "regions[0].instances[1].role",
     "a second writer (the first is w1 at line 22)"},
    {"      - {id: r2, role: reader, az: c, address: 127.0.0.1:7203, priority: 2}\n",
     SIXTEEN_READERS, 38, "regions[0].instances[16].role", "more than 15 readers"},
    {"role: writer", "role: boss", 22, "regions[0].instances[0].role",
     "role must be writer or reader, found 'boss'"},
    {"priority: 2}", "priority: 16}", 24, "regions[0].instances[2].priority",
     "must be 0..15, found 16"},
    {"priority: 2}", "priority: -1}", 24, "regions[0].instances[2].priority",
     "must be 0..15, found -1"},
    /* addresses */
    {"address: 127.0.0.1:7101", "address: 127.0.0.1:0", 15, "regions[0].storage[0].address",
     "bad address '127.0.0.1:0': port must be 1..65535"},
    {"address: 127.0.0.1:7101", "address: 127.0.0.1:70000", 15, "regions[0].storage[0].address",
     "port must be 1..65535"},
    {"address: 127.0.0.1:7101", "address: 127.0.0.1", 15, "regions[0].storage[0].address",
     "expected host:port"},
    {"address: 127.0.0.1:7101", "address: bad_host:7101", 15, "regions[0].storage[0].address",
     "host must be an IPv4 literal, [IPv6] literal or a name"},
    {"address: 127.0.0.1:7101", "address: 300.1.1.1:7101", 15, "regions[0].storage[0].address",
     "not a valid IPv4 address"},
    {"address: 127.0.0.1:7400", "address: fe80::1:7400", 29, "regions[0].routers[0].address",
     "an IPv6 address needs brackets"},
    {"address: 127.0.0.1:7400", "address: '[fe80::zz]:7400'", 29, "regions[0].routers[0].address",
     "not a valid IPv6 address"},
    {"cluster: 127.0.0.1:7401", "cluster: 7401", 30, "regions[0].routers[0].cluster",
     "expected host:port"},
    /* ids and names */
    {"- name: east", "- name: ea$t", 12, "regions[0].name", "names and ids use only"},
    {"{id: s1,", "{id: s1234567890123456789012345678901234567890123456789012345678901234,", 15,
     "regions[0].storage[0].id", "longer than 63 characters"},
    {"name: db", "name: ''", 1, "name", "is empty"},
    /* regions */
    {"custom_endpoints:\n      - {name: analytics, members: [r2]}\n",
     "custom_endpoints:\n      - {name: analytics, members: [r2]}\n  - name: east\n    azs: [a]\n",
     36, "regions[1].name", "duplicate region name 'east' (first at line 12)"},
    {"primary: east", "primary: west", 2, "primary", "'west' is not one of the regions"},
    {NULL, "name: db\nprimary: x\nregions: []\n", 3, "regions", "expected 1..11 regions, found 0"},
    /* custom endpoints and routers */
    {"members: [r2]", "members: [s1]", 35, "regions[0].custom_endpoints[0].members[0]",
     "'s1' is not an instance of region east"},
    {"members: [r2]", "members: [r2, r2]", 35, "regions[0].custom_endpoints[0].members[1]",
     "'r2' is listed twice"},
    {"members: [r2]", "members: []", 35, "regions[0].custom_endpoints[0].members",
     "expected 1..16 members, found 0"},
    {"members: [r2]}", "members: [r2], exclude: [r1]}", 35, "regions[0].custom_endpoints[0]",
     "needs exactly one of members or exclude"},
    {"{name: analytics, members: [r2]}", "{name: analytics}", 35, "regions[0].custom_endpoints[0]",
     "needs exactly one of members or exclude"},
    {"members: [r2]}\n", "members: [r2]}\n      - {name: analytics, exclude: []}\n", 36,
     "regions[0].custom_endpoints[1].name",
     "duplicate custom endpoint 'analytics' (first at line 35)"},
    {"custom: {analytics:", "custom: {reports:", 33, "regions[0].routers[0].custom.reports",
     "custom endpoint 'reports' is not declared in custom_endpoints"},
    {"        reader: 127.0.0.1:7402\n", "", 27, "regions[0].routers",
     "no router serves the reader endpoint"},
    {"        cluster: 127.0.0.1:7401\n", "", 27, "regions[0].routers",
     "no router serves the cluster endpoint"},
    /* settings bounds */
    {"pg_size: 1MiB", "pg_size: 32KiB", 4, "settings.pg_size", "must be 64KiB..1024GiB"},
    {"pg_size: 1MiB", "pg_size: 2048G", 4, "settings.pg_size", "must be 64KiB..1024GiB"},
    {"pg_size: 1MiB", "pg_size: 99999999999999999999999G", 4, "settings.pg_size", "must be"},
    {"pg_size: 1MiB", "pg_size: 1MB", 4, "settings.pg_size", "expected bytes or a size"},
    {"pg_size: 1MiB", "pg_size: 100000", 4, "settings.pg_size",
     "pg_size (100000 bytes) is not a multiple of page_size (4096)"},
    {"page_size: 4096", "page_size: 5000", 5, "settings.page_size",
     "must be a power of two, found 5000"},
    {"page_size: 4096", "page_size: 256", 5, "settings.page_size", "must be 512..65536"},
    {"rpo_seconds: 0", "rpo_seconds: 86401", 8, "settings.rpo_seconds", "must be 0..86400"},
    {"reader_lag_max_ms: 10000", "reader_lag_max_ms: 0", 9, "settings.reader_lag_max_ms",
     "must be 1..3600000"},
    /* plain YAML only, one document, no deeper than the format */
    {"azs: [a, b, c]", "azs: &z [a, b, c]", 13, "regions[0].azs",
     "anchors (&name) are not allowed"},
    {"members: [r2]", "members: *z", 35, "regions[0].custom_endpoints[0].members",
     "aliases (*name) are not allowed"},
    {"page_size: 4096", "page_size: !!int 4096", 5, "settings.page_size",
     "tags (!name) are not allowed"},
    {"{analytics: 127.0.0.1:7404}", "{analytics: [127.0.0.1:7404]}", 33,
     "regions[0].routers[0].custom.analytics", "nested deeper than the format's 6 levels"},
    {NULL, "", 1, "(document)", "empty"},
    {NULL, "# just a comment\n", 1, "(document)", "empty"},
    {NULL, "- a\n- b\n", 1, "(document)", "expected a map, found a list"},
    {NULL, "name: db\n---\nname: other\n", 2, "(document)", "a second document"},
    {NULL, "name: db\n  bad: indent\n", 2, "(yaml syntax)", "mapping values are not allowed"},
    {NULL, "name: db\nprimary: [east\n", 3, "(yaml syntax)", "did not find expected ',' or ']'"},
    {NULL, "? [a]\n: b\n", 1, "(complex key)", "a key must be a plain scalar"},
    {NULL, "name: \"d\\0b\"\n", 1, "name", "contains a control character"},
};

/* BASE with the first `find` replaced by `with`. */
static void edit(const refusal *r, char *out, size_t cap)
{
    if (r->find == NULL) {
        snprintf(out, cap, "%s", r->with);
        return;
    }
    const char *at = strstr(BASE, r->find);
    assert_non_null(at);
    int n = snprintf(out, cap, "%.*s%s%s", (int)(at - BASE), BASE, r->with, at + strlen(r->find));
    assert_true(n > 0 && (size_t)n < cap);
}

static topology *new_topology(void)
{
    topology *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    return t;
}

static void base_is_accepted(void **state)
{
    topology *t = new_topology();
    mrd_msg msg = {{0}};
    int rc = topo_parse("t.yaml", BASE, strlen(BASE), t, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
    assert_int_equal(t->regions[0].instance_count, 3);
    assert_int_equal(t->regions[0].routers[0].has_custom[0], true);
    free(t);
}

static void each_refusal_names_line_and_field(void **state)
{
    char text[TEXT_MAX], want[512];
    topology *t = new_topology();
    t->region_count = 77; /* a refusal leaves the output as it was */
    for (size_t i = 0; i < MRD_ARRAY_LEN(refusals); i++) {
        const refusal *r = &refusals[i];
        mrd_msg msg = {{0}};
        edit(r, text, sizeof(text));
        int rc = topo_parse("t.yaml", text, strlen(text), t, &msg);
        snprintf(want, sizeof(want), "t.yaml:%d: %s: ", r->line, r->field);
        if (rc != MRD_EPARSE || strncmp(msg.text, want, strlen(want)) != 0 ||
            strstr(msg.text, r->problem) == NULL)
            fail_msg("case %zu: rc=%d\n  got:  %s\n  want: %s...%s", i, rc, msg.text, want,
                     r->problem);
        assert_int_equal(t->region_count, 77);
    }
    free(t);
}

static void shipped_local_topology_is_accepted(void **state)
{
    topology *t = new_topology();
    mrd_msg msg = {{0}};
    int rc = topo_load(MRD_SOURCE_DIR "/regions/local-1region.yaml", t, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
    assert_string_equal(t->name, "meridian-local");
    assert_int_equal(t->primary_region, 0);
    assert_int_equal(t->pg_size_bytes, 1u << 20);
    assert_int_equal(t->page_size, 4096);
    assert_true(t->tls);
    assert_int_equal(t->reader_lag_max_ms, 10000);
    const topo_region *r = &t->regions[0];
    assert_string_equal(r->azs[2], "c");
    assert_int_equal(r->storage[3].az, 1);
    assert_int_equal(r->instance_count, 3);
    assert_int_equal(r->writer, 0);
    assert_int_equal(r->instances[2].priority, 2);
    assert_int_equal(r->instances[0].priority, 1);
    assert_int_equal(r->routers[0].global_writer.port, 7403);
    assert_int_equal(r->custom_count, 1);
    assert_string_equal(r->custom[0].members[0], "local-r2");
    assert_int_equal(r->routers[0].custom[0].port, 7404);

    char buf[TOPO_PATH_MAX];
    assert_null(topo_certs_dir(t, buf, sizeof(buf))); /* unset: DATA/certs */
    for (int seg = 0; seg < TOPO_STORAGE; seg++) {
        const topo_node *n = topo_segment_node(r, seg);
        assert_non_null(n);
        assert_int_equal(n->az, seg / 2);
        assert_int_equal(topo_segment_of(r, n), seg);
    }
    assert_int_equal(topo_segment_of(r, &r->instances[0]), -1);
    assert_int_equal(r->agent_peer.port, r->agent.addr.port); /* no peer_address: address */

    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    topo_print(t, f);
    fclose(f);
    assert_non_null(strstr(out, "global database meridian-local, primary region local, tls on, "
                                "pg_size 1 MiB, page_size 4096, rpo off"));
    assert_non_null(strstr(out, "region local (primary)  azs a b c"));
    assert_non_null(strstr(out, "custom analytics 127.0.0.1:7404"));
    assert_non_null(strstr(out, "custom endpoint analytics: members local-r2"));
    free(out);
    free(t);
}

static int count_node(const topology *topo, const topo_node *node, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

static void three_regions_with_fifteen_readers(void **state)
{
    topology *t = new_topology();
    mrd_msg msg = {{0}};
    int rc = topo_load(TOPO_TEST_DIR "/three-regions.yaml", t, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
    assert_int_equal(t->region_count, 3);
    assert_int_equal(t->regions[0].instance_count, 16);
    assert_int_equal(t->regions[2].instance_count, 1);
    assert_int_equal(t->rpo_seconds, 30);
    assert_true(t->write_forwarding);
    assert_int_equal(t->pg_size_bytes, 10ull << 30);
    assert_true(t->regions[0].custom[0].exclude);

    int count = 0;
    topo_each_node(t, count_node, &count);
    assert_int_equal(count, 3 * (6 + 1 + 1 + 2) + 15 + 2);

    const topo_node *n = topo_find(t, "eu-west-router2");
    assert_non_null(n);
    assert_int_equal(n->role, TOPO_ROLE_ROUTER);
    assert_int_equal(n->region, 1);
    const topo_router *router = topo_router_of(t, n);
    assert_non_null(router);
    assert_true(router->has_reader);
    assert_false(router->has_cluster);
    assert_null(topo_router_of(t, topo_find(t, "eu-west-s1")));
    assert_null(topo_find(t, "nobody"));

    char buf[TOPO_PATH_MAX];
    assert_string_equal(topo_certs_dir(t, buf, sizeof(buf)), "/etc/meridian/certs");
    free(t);
}

static void defaults_and_other_hosts(void **state)
{
    static const char text[] =
        "name: db\nprimary: x\nregions:\n"
        "  - name: x\n    azs: [a, b, c]\n    storage:\n"
        "      - {id: s1, az: a, address: '[::1]:7101'}\n"
        "      - {id: s2, az: a, address: '[0:0::1]:7102'}\n"
        "      - {id: s3, az: b, address: node3.example:7103}\n"
        "      - {id: s4, az: b, address: NODE3.example:7104}\n"
        "      - {id: s5, az: c, address: localhost:7105}\n"
        "      - {id: s6, az: c, address: 10.1.2.3:7106}\n"
        "    instances: [{id: w, role: writer, az: a, address: localhost:1}]\n"
        "    agent: {id: ag, az: b, address: localhost:2}\n"
        "    routers:\n"
        "      - {id: ro1, az: c, address: localhost:3, cluster: localhost:4}\n"
        "      - {id: ro2, az: c, address: localhost:5, reader: '[::1]:6'}\n";
    topology *t = new_topology();
    mrd_msg msg = {{0}};
    int rc = topo_parse("dir/t.yaml", text, strlen(text), t, &msg);
    if (rc != 0) fail_msg("%s", msg.text);
    assert_int_equal(t->pg_size_bytes, 10ull << 30);
    assert_int_equal(t->page_size, 4096);
    assert_true(t->tls);
    assert_string_equal(t->certs_dir, "");
    assert_int_equal(t->rpo_seconds, 0);
    assert_int_equal(t->reader_lag_max_ms, 10000);
    assert_false(t->write_forwarding);
    assert_string_equal(t->regions[0].storage[1].addr.host, "::1");
    char buf[TOPO_PATH_MAX];
    assert_null(topo_certs_dir(t, buf, sizeof(buf)));
    snprintf(t->certs_dir, sizeof(t->certs_dir), "certs");
    assert_string_equal(topo_certs_dir(t, buf, sizeof(buf)), "dir/certs");
    assert_null(topo_certs_dir(t, buf, 8));
    free(t);

    /* The same IPv6 address written two ways, or a host name in two cases, is one address. */
    char dup[TEXT_MAX];
    snprintf(dup, sizeof(dup), "%s", text);
    memcpy(strstr(dup, "0:0::1]:7102"), "0:0::1]:7101", 12);
    t = new_topology();
    assert_int_equal(topo_parse("t.yaml", dup, strlen(dup), t, &msg), MRD_EPARSE);
    assert_non_null(
        strstr(msg.text, "t.yaml:8: regions[0].storage[1].address: duplicate address [::1]:7101"));
    snprintf(dup, sizeof(dup), "%s", text);
    memcpy(strstr(dup, "NODE3.example:7104"), "NODE3.example:7103", 18);
    assert_int_equal(topo_parse("t.yaml", dup, strlen(dup), t, &msg), MRD_EPARSE);
    assert_non_null(
        strstr(msg.text, "t.yaml:10: regions[0].storage[3].address: duplicate address"));
    free(t);
}

static void hostile_inputs_are_refused(void **state)
{
    topology *t = new_topology();
    mrd_msg msg = {{0}};
    assert_int_equal(topo_parse("t.yaml", NULL, 0, t, &msg), MRD_EPARSE);
    assert_int_equal(topo_parse("t.yaml", NULL, 5, t, &msg), MRD_EINVAL);
    assert_int_equal(topo_parse("t.yaml", BASE, strlen(BASE), NULL, &msg), MRD_EINVAL);
    assert_int_equal(topo_parse("t.yaml", "\0\0\0", 3, t, NULL), MRD_EPARSE);
    size_t big = TOPO_FILE_BYTES_MAX + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    assert_int_equal(topo_parse("t.yaml", text, big, t, &msg), MRD_EPARSE);
    /* Many small values: refused at the node limit, quickly. */
    size_t len = 0;
    len += (size_t)snprintf(text, big, "x: [");
    while (len < 200000)
        len += (size_t)snprintf(text + len, big - len, "1,");
    len += (size_t)snprintf(text + len, big - len, "1]\n");
    assert_int_equal(topo_parse("t.yaml", text, len, t, &msg), MRD_EPARSE);
    assert_non_null(strstr(msg.text, "more than"));
    free(text);
    assert_int_equal(topo_load("/nonexistent/t.yaml", t, &msg), MRD_EIO);
    free(t);
}

typedef struct {
    const char *text;
    const char *host; /* NULL: refused */
    unsigned port;
    const char *str; /* topo_addr_str's form */
} addr_case;

static const addr_case addr_cases[] = {
    {"127.0.0.1:7000", "127.0.0.1", 7000, "127.0.0.1:7000"},
    {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
    {"[::1]:7000", "::1", 7000, "[::1]:7000"},
    {"[0:0:0:0:0:0:0:1]:7000", "::1", 7000, "[::1]:7000"},
    {"[fe80::1:2]:65535", "fe80::1:2", 65535, "[fe80::1:2]:65535"},
    {"db1.example:7000", "db1.example", 7000, "db1.example:7000"},
    {"localhost:80", "localhost", 80, "localhost:80"},
    {"a-b.c-d:9", "a-b.c-d", 9, "a-b.c-d:9"},
    {"123abc:9", "123abc", 9, "123abc:9"},
    {"a23456789012345678901234567890123456789012345678901234567890123:1",
     "a23456789012345678901234567890123456789012345678901234567890123", 1, NULL},
    {"a234567890123456789012345678901234567890123456789012345678901234:1", NULL, 0, NULL},
    {"127.0.0.1:65536", NULL, 0, NULL},
    {"127.0.0.1:0", NULL, 0, NULL},
    {"127.0.0.1:07000", NULL, 0, NULL},
    {"127.0.0.1:", NULL, 0, NULL},
    {"127.0.0.1:7x", NULL, 0, NULL},
    {"127.0.0.1:-1", NULL, 0, NULL},
    {"127.0.0.1:123456", NULL, 0, NULL},
    {":7000", NULL, 0, NULL},
    {"127.0.0.1", NULL, 0, NULL},
    {"", NULL, 0, NULL},
    {"::1:7000", NULL, 0, NULL},
    {"[::1]7000", NULL, 0, NULL},
    {"[::1]", NULL, 0, NULL},
    {"[::1", NULL, 0, NULL},
    {"[]:7000", NULL, 0, NULL},
    {"[1.2.3.4]:7000", NULL, 0, NULL},
    {"[::1%eth0]:7000", NULL, 0, NULL},
    {"256.0.0.1:7000", NULL, 0, NULL},
    {"1.2.3:7000", NULL, 0, NULL},
    {"01.2.3.4:7000", NULL, 0, NULL},
    {"a..b:7000", NULL, 0, NULL},
    {".a:7000", NULL, 0, NULL},
    {"a.:7000", NULL, 0, NULL},
    {"-a.b:7000", NULL, 0, NULL},
    {"a-.b:7000", NULL, 0, NULL},
    {"a_b:7000", NULL, 0, NULL},
    {"a b:7000", NULL, 0, NULL},
    {"h\xc3\xa9:7000", NULL, 0, NULL},
};

static void addresses_parse_and_print(void **state)
{
    for (size_t i = 0; i < MRD_ARRAY_LEN(addr_cases); i++) {
        const addr_case *c = &addr_cases[i];
        topo_addr a = {.port = 42};
        int rc = topo_addr_parse(c->text, &a);
        if (c->host == NULL) {
            if (rc != MRD_EPARSE) fail_msg("'%s' was accepted", c->text);
            assert_int_equal(a.port, 42); /* untouched */
            continue;
        }
        if (rc != 0) fail_msg("'%s' was refused", c->text);
        assert_string_equal(a.host, c->host);
        assert_int_equal(a.port, c->port);
        char buf[TOPO_HOST_MAX + 8];
        if (c->str != NULL) assert_string_equal(topo_addr_str(&a, buf, sizeof(buf)), c->str);
    }
    assert_int_equal(topo_addr_parse(NULL, NULL), MRD_EINVAL);
}

static void roles_have_names(void **state)
{
    for (int r = TOPO_ROLE_STORAGE; r <= TOPO_ROLE_ROUTER; r++)
        assert_int_equal(topo_role_parse(topo_role_name((topo_role)r)), r);
    assert_string_equal(topo_role_name(TOPO_ROLE_READER), "reader");
    assert_int_equal(topo_role_parse("primary"), -1);
    assert_int_equal(topo_role_parse(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base_is_accepted),
        cmocka_unit_test(each_refusal_names_line_and_field),
        cmocka_unit_test(shipped_local_topology_is_accepted),
        cmocka_unit_test(three_regions_with_fifteen_readers),
        cmocka_unit_test(defaults_and_other_hosts),
        cmocka_unit_test(hostile_inputs_are_refused),
        cmocka_unit_test(addresses_parse_and_print),
        cmocka_unit_test(roles_have_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
