/*
 * meridian: the operator's CLI. Parses arguments and calls the ctl module.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/ctl.h"
#include "meridian/topo.h"
#include "meridian/vbench.h"

static const char usage_text[] =
    "usage: meridian COMMAND TOPOLOGY [options]\n"
    "\n"
    "commands:\n"
    "  check TOPOLOGY                 validate a topology file and print it\n"
    "  certs TOPOLOGY [--data DIR]    create missing TLS certificates (CA, every process, cli)\n"
    "  up TOPOLOGY [--data DIR] [--timeout-ms N] [--role ROLE]\n"
    "                                 start every process not running; wait until all answer\n"
    "  down TOPOLOGY [--data DIR] [--grace-ms N] [--purge] [--role ROLE]\n"
    "                                 stop every process (SIGTERM, SIGKILL after the grace\n"
    "                                 period); --purge also removes their data\n"
    "  status TOPOLOGY [--data DIR] [--json]\n"
    "                                 show every process: id, role, region, AZ, address,\n"
    "                                 state, pid, SCL (storage), lag (readers)\n"
    "  sql TOPOLOGY [--endpoint cluster|reader|custom:NAME|global_writer|instance:ID]\n"
    "      [--region NAME] [--json] [--params JSON] [--consistency C] [--after-lsn N] \"SQL\"\n"
    "                                 run SQL through an endpoint; print a table or JSON\n"
    "  lag TOPOLOGY [--data DIR] [--json] [--watch]\n"
    "                                 cross-region lag at the primary's agent: per region\n"
    "                                 lag_ms, LSN and byte gap, durable LSN; --watch: every s\n"
    "  switchover TOPOLOGY --to REGION [--data DIR] [--json] [--timeout-ms N]\n"
    "                                 planned: make REGION the primary with no data loss\n"
    "                                 (drain, catch up, promote, move the global writer);\n"
    "                                 resumes a switchover a crash interrupted\n"
    "  failover TOPOLOGY --to REGION --allow-data-loss [--data DIR] [--json] [--timeout-ms N]\n"
    "                                 unplanned: promote REGION with what it holds even when\n"
    "                                 the primary does not answer; prints the lost LSN range\n"
    "  volume-bench TOPOLOGY [--data DIR] [--records N] [--inflight K] [--delta-bytes B]\n"
    "               [--pages P] [--duration-ms D] [--log FILE] [--json]\n"
    "                                 write records to the volume, report throughput and\n"
    "                                 quorum-acknowledgement latency\n"
    "  volume-verify TOPOLOGY [--data DIR] --log FILE [--json]\n"
    "                                 recover the volume and check it against a bench log\n"
    "  volume-probe TOPOLOGY [--data DIR] [--count N] [--json]\n"
    "                                 fdatasync and HTTP/2 round-trip latency of this machine\n"
    "\n"
    "--data DIR defaults to ./data/NAME, NAME being the topology's database name.\n"
    "--role ROLE makes up and down act on the processes of that role only.\n";

typedef struct {
    const char *command;
    const char *topology;
    const char *data;
    uint64_t timeout_ms;
    uint64_t grace_ms;
    bool purge;
    bool json;
    const char *role; /* up / down: only processes of this role */
    bool watch;       /* lag: print again every second */
    const char *to;   /* switchover / failover: the region to promote */
    bool allow_loss;  /* failover */
    bool timeout_set;
} cli_args;

static int parse_args(int argc, char **argv, cli_args *a)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},     {"timeout-ms", required_argument, NULL, 't'},
        {"grace-ms", required_argument, NULL, 'g'}, {"purge", no_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},           {"help", no_argument, NULL, 'h'},
        {"watch", no_argument, NULL, 'W'},        {"to", required_argument, NULL, 'T'},
        {"allow-data-loss", no_argument, NULL, 'L'},
        {"role", required_argument, NULL, 'r'},     {NULL, 0, NULL, 0},
    };
    a->timeout_ms = CTL_UP_TIMEOUT_MS_DEFAULT;
    a->grace_ms = CTL_DOWN_GRACE_MS_DEFAULT;
    int c;
    while ((c = getopt_long(argc, argv, "d:t:g:pjhr:", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            a->data = optarg;
            break;
        case 't':
            a->timeout_ms = strtoull(optarg, NULL, 10);
            a->timeout_set = true;
            break;
        case 'T':
            a->to = optarg;
            break;
        case 'L':
            a->allow_loss = true;
            break;
        case 'g':
            a->grace_ms = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            a->purge = true;
            break;
        case 'j':
            a->json = true;
            break;
        case 'r':
            a->role = optarg;
            break;
        case 'W':
            a->watch = true;
            break;
        default:
            return -1;
        }
    }
    if (optind + 2 != argc) return -1;
    a->command = argv[optind];
    a->topology = argv[optind + 1];
    return 0;
}

static int run(const cli_args *a, const topology *topo, mrd_msg *msg)
{
    if (strcmp(a->command, "check") == 0) {
        topo_print(topo, stdout);
        printf("%s: ok\n", a->topology);
        return 0;
    }
    char data[TOPO_PATH_MAX];
    if (a->data != NULL)
        snprintf(data, sizeof(data), "%s", a->data);
    else
        snprintf(data, sizeof(data), "data/%s", topo->name);
    static ctl_ctx ctx;
    int rc = ctl_init(&ctx, topo, a->topology, data, msg);
    if (rc != 0) return rc;
    if (a->role != NULL && (ctx.only_role = topo_role_parse(a->role)) < 0)
        return mrd_fail(msg, MRD_EINVAL, "--role %s: not storage, writer, reader, agent or router",
                        a->role);
    if (strcmp(a->command, "certs") == 0) {
        int rc = ctl_certs(&ctx, msg);
        char dir[TOPO_PATH_MAX];
        ctl_certs_dir(&ctx, dir, sizeof(dir));
        if (rc == 0 && ctx.topo->tls) printf("certs: %s holds the CA and every process's certificate\n", dir);
        if (rc == 0 && !ctx.topo->tls) printf("certs: the topology uses no TLS (settings.tls: false)\n");
        return rc;
    }
    if (strcmp(a->command, "up") == 0) return ctl_up(&ctx, a->timeout_ms, msg);
    if (strcmp(a->command, "down") == 0) return ctl_down(&ctx, a->grace_ms, a->purge, msg);
    if (strcmp(a->command, "status") == 0) return ctl_status(&ctx, a->json, msg);
    if (strcmp(a->command, "lag") == 0) return ctl_lag(&ctx, a->json, a->watch, msg);
    if (strcmp(a->command, "switchover") == 0 || strcmp(a->command, "failover") == 0) {
        bool failover = strcmp(a->command, "failover") == 0;
        if (a->to == NULL) return mrd_fail(msg, MRD_EINVAL, "--to REGION is missing");
        if (failover && !a->allow_loss)
            return mrd_fail(msg, MRD_EINVAL,
                            "an unplanned failover may lose what the primary acknowledged and the "
                            "target lacks: say --allow-data-loss (or run `meridian switchover`, "
                            "which loses nothing but needs the primary)");
        if (!failover && a->allow_loss)
            return mrd_fail(msg, MRD_EINVAL, "--allow-data-loss belongs to `meridian failover`");
        return ctl_failover(&ctx, a->to, failover, a->json,
                            a->timeout_set ? a->timeout_ms : CTL_FAILOVER_TIMEOUT_MS_DEFAULT, msg);
    }
    return mrd_fail(msg, MRD_EINVAL, "unknown command: %s", a->command);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a process that goes away mid-request is an error, not our end */
    if (argc >= 2 && (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "-h") == 0)) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (argc >= 2 && strncmp(argv[1], "volume-", 7) == 0) return vb_cli_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "sql") == 0) return ctl_sql_main(argc, argv);
    cli_args a = {0};
    if (parse_args(argc, argv, &a) != 0) {
        fputs(usage_text, stderr);
        return 2;
    }
    mrd_log_init("cli", MRD_LOG_ERROR); /* the CLI reports failures itself; transport warnings are noise here */
    static topology topo;
    mrd_msg msg = {{0}};
    int rc = topo_load(a.topology, &topo, &msg);
    if (rc == 0) rc = run(&a, &topo, &msg);
    if (rc != 0) {
        fprintf(stderr, "meridian %s: %s\n", a.command, msg.text);
        return 1;
    }
    return 0;
}
