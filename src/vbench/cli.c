/*
 * Arguments of `meridian volume-bench | volume-verify | volume-probe` and
 * what the three share: the topology, the region, the data and certs
 * folders, and the volume client's configuration.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vb_int.h"

static const char usage_text[] =
    "usage:\n"
    "  meridian volume-bench TOPOLOGY [--data DIR] [--region NAME] [--records N] [--inflight K]\n"
    "                        [--delta-bytes B] [--pages P] [--duration-ms D] [--seed S]\n"
    "                        [--log FILE] [--json]\n"
    "  meridian volume-verify TOPOLOGY [--data DIR] [--region NAME] --log FILE\n"
    "                        [--timeout-ms T] [--json]\n"
    "  meridian volume-probe TOPOLOGY [--data DIR] [--region NAME] [--node ID] [--count N]\n"
    "                        [--json]\n";

static bool parse_u64(const char *s, uint64_t *out)
{
    return vol_parse_u64(s, out) == 0;
}

static int parse_option(int c, const char *arg, vb_args *a)
{
    uint64_t v = 0;
    bool numeric = strchr("nkbpDtsc", c) != NULL;
    if (numeric && !parse_u64(arg, &v)) {
        fprintf(stderr, "meridian %s: '%s' is not an unsigned integer\n", a->command, arg);
        return -1;
    }
    switch (c) {
    case 'd':
        a->data = arg;
        break;
    case 'r':
        a->region = arg;
        break;
    case 'l':
        a->log = arg;
        break;
    case 'N':
        a->node = arg;
        break;
    case 'j':
        a->json = true;
        break;
    case 'n':
        a->records = v, a->records_set = true;
        break;
    case 'k':
        a->inflight = (uint32_t)(v > VB_INFLIGHT_MAX ? VB_INFLIGHT_MAX + 1 : v);
        break;
    case 'b':
        a->delta_bytes = (uint32_t)(v > 65536 ? 65537 : v);
        break;
    case 'p':
        a->pages = v;
        break;
    case 'D':
        a->duration_ms = v;
        break;
    case 't':
        a->timeout_ms = v;
        break;
    case 's':
        a->seed = v;
        break;
    case 'c':
        a->count = (uint32_t)(v > VB_PROBE_COUNT_MAX ? VB_PROBE_COUNT_MAX + 1 : v);
        break;
    default:
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, vb_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"region", required_argument, NULL, 'r'},
        {"records", required_argument, NULL, 'n'},
        {"inflight", required_argument, NULL, 'k'},
        {"delta-bytes", required_argument, NULL, 'b'},
        {"pages", required_argument, NULL, 'p'},
        {"duration-ms", required_argument, NULL, 'D'},
        {"log", required_argument, NULL, 'l'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"node", required_argument, NULL, 'N'},
        {"count", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    a->command = argv[1];
    a->inflight = VB_INFLIGHT_DEFAULT;
    a->delta_bytes = VB_DELTA_BYTES_DEFAULT;
    a->pages = VB_PAGES_DEFAULT;
    a->timeout_ms = VB_VERIFY_TIMEOUT_MS_DEFAULT;
    a->seed = 1;
    a->count = VB_PROBE_COUNT_DEFAULT;
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (c == '?' || parse_option(c, optarg, a) != 0) return -1;
    if (optind + 1 != argc) return -1;
    a->topology = argv[optind];
    if (!a->records_set) a->records = a->duration_ms > 0 ? UINT64_MAX : VB_RECORDS_DEFAULT;
    if (a->inflight == 0 || a->inflight > VB_INFLIGHT_MAX || a->pages == 0 ||
        a->pages > VB_PAGES_MAX || a->count == 0 || a->count > VB_PROBE_COUNT_MAX) {
        fprintf(stderr, "meridian %s: --inflight must be 1..%u, --pages 1..%u, --count 1..%u\n",
                a->command, VB_INFLIGHT_MAX, VB_PAGES_MAX, VB_PROBE_COUNT_MAX);
        return -1;
    }
    return 0;
}

static int load_env(const vb_args *a, vb_env *env, mrd_msg *msg)
{
    int rc = topo_load(a->topology, &env->topo, msg);
    if (rc != 0) return rc;
    env->region = env->topo.primary_region;
    if (a->region != NULL) {
        env->region = -1;
        for (int i = 0; i < env->topo.region_count; i++)
            if (strcmp(env->topo.regions[i].name, a->region) == 0) env->region = i;
        if (env->region < 0)
            return mrd_fail(msg, MRD_ENOTFOUND, "%s: no region named %s", a->topology, a->region);
    }
    int n = a->data != NULL ? snprintf(env->data, sizeof(env->data), "%s", a->data)
                            : snprintf(env->data, sizeof(env->data), "data/%s", env->topo.name);
    if (n < 0 || (size_t)n >= sizeof(env->data))
        return mrd_fail(msg, MRD_ETOOBIG, "data folder path too long");
    if (topo_certs_dir(&env->topo, env->certs, sizeof(env->certs)) == NULL &&
        (size_t)snprintf(env->certs, sizeof(env->certs), "%s/certs", env->data) >=
            sizeof(env->certs))
        return mrd_fail(msg, MRD_ETOOBIG, "certs folder path too long");
    return 0;
}

void vb_vol_config(const vb_env *env, vol_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->topo = &env->topo;
    cfg->region = env->region;
    cfg->certs_dir = env->certs;
}

int vb_cli_main(int argc, char **argv)
{
    vb_args a;
    memset(&a, 0, sizeof(a));
    if (argc < 2 || parse_args(argc, argv, &a) != 0) {
        fputs(usage_text, stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a storage node that goes away must not end the bench */
    /* the volume's warnings (a node down, a reconnect) go to stderr: they explain waits */
    mrd_log_init(a.command, MRD_LOG_WARN);
    vb_env *env = calloc(1, sizeof(*env));
    if (env == NULL) return 1;
    mrd_msg msg = {{0}};
    int code;
    if (load_env(&a, env, &msg) != 0) {
        fprintf(stderr, "meridian %s: %s\n", a.command, msg.text);
        code = 1;
    } else if (strcmp(a.command, "volume-bench") == 0) {
        code = vb_bench(&a, env);
    } else if (strcmp(a.command, "volume-verify") == 0) {
        code = vb_verify(&a, env);
    } else if (strcmp(a.command, "volume-probe") == 0) {
        code = vb_probe(&a, env);
    } else {
        fputs(usage_text, stderr);
        code = 2;
    }
    free(env);
    return code;
}
