/*
 * ctl: what the `meridian` CLI does to a topology on this machine — start
 * every process in the background (up), stop them (down), and show them
 * (status).
 *
 * Each process gets DATA/<id>/ as its data folder; its log is
 * DATA/<id>/meridiand.log (structured, one event per line) and, while it
 * runs, DATA/<id>/meridiand.pid holds its pid. A process counts as running
 * when that pid is alive and is a meridiand started for that id (so a reused
 * pid is never mistaken for it), and as healthy when it answers
 * GET /v1/status. Processes are only ever signalled by the pid they wrote.
 */
#ifndef MERIDIAN_CTL_H
#define MERIDIAN_CTL_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "meridian/common.h"
#include "meridian/h2.h"
#include "meridian/topo.h"

#define CTL_UP_TIMEOUT_MS_DEFAULT 15000
#define CTL_DOWN_GRACE_MS_DEFAULT 5000
#define CTL_STATUS_TIMEOUT_MS 2000
#define CTL_CLIENT_ID "cli" /* the CLI's certificate name */

typedef struct {
    const topology *topo;
    char topo_path[TOPO_PATH_MAX]; /* absolute */
    char data_dir[TOPO_PATH_MAX];  /* absolute */
    char meridiand[TOPO_PATH_MAX]; /* the daemon binary */
    FILE *out;                     /* progress and tables */
    int only_role;                 /* -1: every process; else a topo_role: act on that role only */
} ctl_ctx;

/* Fills ctx: resolves paths, finds meridiand beside the running binary (or $MERIDIAND). */
int ctl_init(ctl_ctx *ctx, const topology *topo, const char *topo_path, const char *data_dir,
             mrd_msg *msg);

/* Creates any missing certificates (CA, one per process, one for the CLI) when tls is on. */
int ctl_certs(ctl_ctx *ctx, mrd_msg *msg);
/* The certs folder: the topology's settings.certs, or DATA/certs. */
void ctl_certs_dir(const ctl_ctx *ctx, char *buf, size_t len);

/* Starts every process not running; returns once all answer, or fails with the reason. */
int ctl_up(ctl_ctx *ctx, uint64_t timeout_ms, mrd_msg *msg);

/* SIGTERM to every running process, SIGKILL after grace_ms; with purge, removes data. */
int ctl_down(ctl_ctx *ctx, uint64_t grace_ms, bool purge, mrd_msg *msg);

/* Prints every process with id, role, AZ, address, state and pid (a table, or JSON). */
int ctl_status(ctl_ctx *ctx, bool json, mrd_msg *msg);

/*
 * `meridian lag`: the primary region's agent's view of every region — name, role, lag_ms
 * (age of the oldest committed record a secondary does not hold durably, by the primary's
 * clock), lsn_gap, bytes_gap, durable_lsn — as a table or one JSON object {"regions":[...]};
 * with watch, again every second until interrupted.
 */
int ctl_lag(ctl_ctx *ctx, bool json, bool watch, mrd_msg *msg);

#define CTL_FAILOVER_TIMEOUT_MS_DEFAULT 60000
/*
 * Makes region `to` the primary (src/ctl/failover.c): a planned switchover (nothing
 * acknowledged is lost; the old primary drains first and must answer), or with
 * allow_loss an unplanned failover that promotes `to` with what it holds and reports
 * the lost LSN range. Resumes whatever a previous run left under way.
 */
int ctl_failover(ctl_ctx *ctx, const char *to, bool allow_loss, bool json, uint64_t timeout_ms,
                 mrd_msg *msg);

/* The pid of a running meridiand for this id, or 0. */
pid_t ctl_running_pid(const ctl_ctx *ctx, const topo_node *node);

/* One request to a process's own address, with the CLI's client certificate under TLS. */
int ctl_fetch(const ctl_ctx *ctx, const topo_node *node, const char *method, const char *path,
              const void *body, size_t len, uint64_t timeout_ms, h2_result *out, mrd_msg *msg);
/* The same to any address of the topology (an endpoint listener). */
int ctl_fetch_addr(const ctl_ctx *ctx, const topo_addr *addr, const char *method,
                   const char *path, const void *body, size_t len, uint64_t timeout_ms,
                   h2_result *out, mrd_msg *msg);

/*
 * `meridian sql TOPOLOGY [--data DIR] [--region NAME] [--endpoint E] [--json]
 * [--params JSON] [--consistency C] [--after-lsn N] "SQL"`: sends one SQL
 * request to an endpoint (cluster, reader, custom:NAME, global_writer or
 * instance:ID; default cluster) and prints the answer as a table or JSON.
 */
int ctl_sql_main(int argc, char **argv);

#endif
