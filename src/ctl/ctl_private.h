/* Internals shared by the ctl module's files. */
#ifndef MERIDIAN_CTL_PRIVATE_H
#define MERIDIAN_CTL_PRIVATE_H

#include "meridian/ctl.h"
#include "meridian/json.h"
#include "meridian/region.h"

#define CTL_PID_FILE "meridiand.pid"
#define CTL_LOG_FILE "meridiand.log"
#define CTL_POLL_MS 100
#define CTL_NODES_MAX (TOPO_REGIONS_MAX * (TOPO_STORAGE + TOPO_INSTANCES_MAX + 1 + TOPO_ROUTERS_MAX))

void ctl_node_dir(const ctl_ctx *ctx, const topo_node *node, char *buf, size_t len);
bool ctl_pid_is_node(pid_t pid, const char *id);
int ctl_spawn(const ctl_ctx *ctx, const topo_node *node, pid_t *out, mrd_msg *msg);
void ctl_log_tail(const ctl_ctx *ctx, const topo_node *node, int lines, char *buf, size_t len);
void ctl_sleep_ms(uint64_t ms);

/* ---- regions.c: what the regions' agents say (GET /v1/region) ----------------------------- */

/* What an agent's answer carries besides its state (src/agent/region.c). */
typedef struct {
    bool has_age;
    uint64_t last_commit_age_ms; /* secondary: since the last commit it received */
    char rejoin[MRD_MSG_MAX];    /* a diverged region's rejoin under way, or empty */
    bool has_divergent;          /* a divergent tail it saved */
    char divergent_path[TOPO_PATH_MAX + 128];
    uint64_t divergent_after_lsn, divergent_to_lsn, divergent_records, divergent_commits;
} ctl_agent_extra;

/* Region r's agent: v->reachable when it answered with a state; x may be NULL. */
void ctl_ask_agent(const ctl_ctx *ctx, int r, uint64_t timeout_ms, rg_view *v, ctl_agent_extra *x);

/* Every region's agent, and what follows from their answers. */
typedef struct {
    rg_view views[TOPO_REGIONS_MAX];
    ctl_agent_extra extra[TOPO_REGIONS_MAX];
    int answered; /* agents that answered */
    int highest;  /* the region whose state has the highest epoch (rg_highest), or -1 */
    int primary;  /* the current primary region: that state's primary; else the topology's */
} ctl_regions;

void ctl_regions_ask(const ctl_ctx *ctx, uint64_t timeout_ms, ctl_regions *out);
/* The highest state, or NULL when no agent answered. */
static inline const rg_state *ctl_regions_highest(const ctl_regions *g)
{
    return g->highest >= 0 ? &g->views[g->highest].st : NULL;
}
/* GET path from node, answered 200 with JSON: *doc parsed (free it with mrd_json_free).
 * Otherwise an error, msg naming the node and what went wrong. */
int ctl_get_json(const ctl_ctx *ctx, const topo_node *node, const char *path, uint64_t timeout_ms,
                 mrd_json_doc *doc, mrd_msg *msg);
/* A string member of an object, or "" when missing or not a string. */
const char *ctl_json_str(const mrd_json_doc *d, const mrd_json *obj, const char *key);

#endif
