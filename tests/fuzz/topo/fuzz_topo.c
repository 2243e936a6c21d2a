/*
 * Fuzzes the topology parser: any bytes either parse into a topology that
 * every reader of the struct can walk, or are refused with a message; never
 * a crash, a leak or a hang.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/topo.h"

#define FUZZ_ADDR_TEXT_MAX 128

static int visit(const topology *topo, const topo_node *node, void *ud)
{
    const topo_node *found = topo_find(topo, node->id);
    if (found == NULL || strcmp(found->id, node->id) != 0) abort();
    if (node->role == TOPO_ROLE_ROUTER && topo_router_of(topo, node) == NULL) abort();
    char buf[TOPO_HOST_MAX + 8];
    topo_addr back;
    if (topo_addr_parse(topo_addr_str(&node->addr, buf, sizeof(buf)), &back) != 0) abort();
    (*(int *)ud)++;
    return 0;
}

static void walk(const topology *topo)
{
    int count = 0;
    topo_each_node(topo, visit, &count);
    char dir[TOPO_PATH_MAX * 2];
    topo_certs_dir(topo, dir, sizeof(dir));
    FILE *out = fopen("/dev/null", "w");
    if (out != NULL) {
        topo_print(topo, out);
        fclose(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The raw bytes as one address, too. */
    char text[FUZZ_ADDR_TEXT_MAX];
    size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    topo_addr addr;
    topo_addr_parse(text, &addr);

    topology *topo = malloc(sizeof(*topo));
    if (topo == NULL) return 0;
    mrd_msg msg;
    if (topo_parse("fuzz/topo.yaml", (const char *)data, size, topo, &msg) == 0) walk(topo);
    free(topo);
    return 0;
}
