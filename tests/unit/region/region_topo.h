/*
 * Topologies for the region tests, built in memory: 1..3 regions named
 * east (the primary), west and south, each with a writer NAME-w1, a reader
 * NAME-r1, six storage nodes NAME-s1..s6, an agent NAME-agent and a router.
 */
#ifndef REGION_TOPO_H
#define REGION_TOPO_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/topo.h"

#define RT_REGIONS_MAX 3
#define RT_TEXT_MAX 8192

static const char *const rt_region_names[RT_REGIONS_MAX] = {"east", "west", "south"};

/* The YAML text of a topology of n regions; returns its length. */
static inline size_t rt_topology_text(int n, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap,
                                  "name: db\nprimary: east\nsettings:\n  pg_size: 1MiB\n"
                                  "  tls: false\nregions:\n");
    for (int r = 0; r < n && len < cap; r++) {
        const char *nm = rt_region_names[r];
        int port = 7000 + 100 * r;
        len += (size_t)snprintf(buf + len, cap - len,
                                "  - name: %s\n    azs: [a, b, c]\n    storage:\n", nm);
        for (int i = 0; i < 6 && len < cap; i++)
            len += (size_t)snprintf(buf + len, cap - len,
                                    "      - {id: %s-s%d, az: %c, address: 127.0.0.1:%d}\n", nm,
                                    i + 1, "abc"[i / 2], port + i);
        if (len >= cap) break;
        len += (size_t)snprintf(
            buf + len, cap - len,
            "    instances:\n"
            "      - {id: %s-w1, role: writer, az: a, address: 127.0.0.1:%d}\n"
            "      - {id: %s-r1, role: reader, az: b, address: 127.0.0.1:%d}\n"
            "    agent: {id: %s-agent, az: a, address: 127.0.0.1:%d}\n"
            "    routers:\n"
            "      - {id: %s-router, az: a, address: 127.0.0.1:%d, cluster: 127.0.0.1:%d, "
            "reader: 127.0.0.1:%d}\n",
            nm, port + 10, nm, port + 11, nm, port + 20, nm, port + 30, port + 31, port + 32);
    }
    return len < cap ? len : cap;
}

/* A parsed topology of n regions (malloc'd: the struct is large); NULL when it is refused. */
static inline topology *rt_topology(int n)
{
    char text[RT_TEXT_MAX];
    size_t len = rt_topology_text(n, text, sizeof(text));
    topology *t = malloc(sizeof(*t));
    mrd_msg msg = {{0}};
    if (t == NULL) return NULL;
    if (len >= sizeof(text) || topo_parse("region-test.yaml", text, len, t, &msg) != 0) {
        fprintf(stderr, "region test topology refused: %s\n", msg.text);
        free(t);
        return NULL;
    }
    return t;
}

#endif
