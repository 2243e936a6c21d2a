/*
 * meridiand: one Meridian process. Parses arguments and hands them to the
 * node; the role's logic lives in its module, never here.
 *
 *   meridiand --role storage|writer|reader|agent|router --id ID
 *             --topology FILE --data DIR [--certs DIR]
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "meridian/agent.h"
#include "meridian/node.h"
#include "meridian/router.h"
#include "meridian/storage.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: meridiand --role ROLE --id ID --topology FILE --data DIR [--certs DIR]\n"
                 "  ROLE is storage, writer, reader, agent or router and must match the\n"
                 "  process's role in the topology file. --certs names the folder holding\n"
                 "  ca.crt, ID.crt and ID.key when the topology uses TLS.\n");
}

/* The role's own part, started once the node is up. */
static int start_role(mrd_node *node, mrd_msg *msg)
{
    switch (node->self->role) {
    case TOPO_ROLE_STORAGE: {
        storage_options opts = {0}; /* every limit at its default, but: */
        const char *held = getenv(STORAGE_HELD_MAX_ENV); /* small, for tests */
        uint64_t v;
        if (held != NULL && *held != '\0') {
            if (storage_u64_parse(held, &v) != 0 || v < 2 || v > UINT32_MAX)
                return mrd_fail(msg, MRD_EINVAL, "%s: '%.32s' is not a count in 2..%u",
                                STORAGE_HELD_MAX_ENV, held, UINT32_MAX);
            opts.held_max = (uint32_t)v;
        }
        return storage_start(node, &opts, msg);
    }
    case TOPO_ROLE_WRITER:
    case TOPO_ROLE_READER: /* which of the two: the region's agent says (instance.c) */
        return instance_start(node, msg);
    case TOPO_ROLE_AGENT: {
        agent *a;
        return agent_start(node, &a, msg);
    }
    case TOPO_ROLE_ROUTER: {
        router *r;
        return router_start(node, &r, msg);
    }
    default:
        return 0;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"role", required_argument, NULL, 'r'},   {"id", required_argument, NULL, 'i'},
        {"topology", required_argument, NULL, 't'}, {"data", required_argument, NULL, 'd'},
        {"certs", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    mrd_node_config cfg = {0};
    int c;
    while ((c = getopt_long(argc, argv, "r:i:t:d:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            cfg.role = optarg;
            break;
        case 'i':
            cfg.id = optarg;
            break;
        case 't':
            cfg.topology_path = optarg;
            break;
        case 'd':
            cfg.data_dir = optarg;
            break;
        case 'c':
            cfg.certs_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (cfg.role == NULL || cfg.id == NULL || cfg.topology_path == NULL || cfg.data_dir == NULL) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    mrd_log_init(cfg.id, MRD_LOG_INFO);
    static mrd_node node;
    mrd_msg msg = {{0}};
    uv_loop_t *loop = uv_default_loop();
    int rc = mrd_node_init(&node, loop, &cfg, &msg);
    if (rc == 0) rc = start_role(&node, &msg);
    if (rc == 0) rc = mrd_node_run(&node, &msg);
    if (rc == 0 && node.restart) {
        uv_loop_close(loop);
        rc = mrd_node_exec(argv, &msg);
    }
    if (rc != 0) {
        MRD_ERROR("exit", "error=%s message=\"%s\"", mrd_errname(rc), msg.text);
        fprintf(stderr, "meridiand: %s\n", msg.text);
        return 1;
    }
    return 0;
}
