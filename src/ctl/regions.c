/*
 * Who is primary now, as the regions' agents say (GET /v1/region on each).
 * Which region is primary and which instance writes in each region are
 * run-time facts that switchover, failover and in-region writer failover
 * change; the topology file only says where things started. `meridian
 * status`, `lag` and `sql` ask here: the current primary is the primary of
 * the highest epoch any agent reports (rg_highest: at equal epochs a region's
 * word about itself wins), and the topology's primary only when no agent
 * answers.
 */
#include <pthread.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"

int ctl_get_json(const ctl_ctx *ctx, const topo_node *node, const char *path, uint64_t timeout_ms,
                 mrd_json_doc *doc, mrd_msg *msg)
{
    h2_result res;
    memset(&res, 0, sizeof(res));
    int rc = ctl_fetch(ctx, node, "GET", path, NULL, 0, timeout_ms, &res, msg);
    if (rc == 0 && res.status != 200)
        rc = mrd_fail(msg, MRD_EPROTO, "%s answered %d", node->id, res.status);
    if (rc == 0 && mrd_json_parse((const char *)res.body.data, res.body.len, doc, msg) != 0)
        rc = MRD_EPARSE;
    h2_result_free(&res);
    return rc;
}

const char *ctl_json_str(const mrd_json_doc *d, const mrd_json *o, const char *key)
{
    const mrd_json *v = mrd_json_get(d, o, key);
    const char *s = v != NULL && v->kind == MRD_JSON_STRING ? mrd_json_str(d, v) : NULL;
    return s != NULL ? s : "";
}

/* The answer's members beside "state"; unknown or missing ones are left empty. */
static void read_extra(const mrd_json_doc *d, const mrd_json *root, rg_view *v, ctl_agent_extra *x)
{
    mrd_json_get_u64(d, root, "vdl", &v->vdl);
    mrd_json_get_u64(d, root, "primary_vdl", &v->primary_vdl);
    if (x == NULL) return;
    x->has_age = mrd_json_get_u64(d, root, "last_commit_age_ms", &x->last_commit_age_ms);
    snprintf(x->rejoin, sizeof(x->rejoin), "%s", ctl_json_str(d, root, "rejoin"));
    const mrd_json *dv = mrd_json_get(d, root, "divergent");
    if (dv == NULL || dv->kind != MRD_JSON_OBJECT) return;
    x->has_divergent = true;
    snprintf(x->divergent_path, sizeof(x->divergent_path), "%s", ctl_json_str(d, dv, "path"));
    mrd_json_get_u64(d, dv, "after_lsn", &x->divergent_after_lsn);
    mrd_json_get_u64(d, dv, "to_lsn", &x->divergent_to_lsn);
    mrd_json_get_u64(d, dv, "records", &x->divergent_records);
    mrd_json_get_u64(d, dv, "commits", &x->divergent_commits);
}

void ctl_ask_agent(const ctl_ctx *ctx, int r, uint64_t timeout_ms, rg_view *v, ctl_agent_extra *x)
{
    memset(v, 0, sizeof(*v));
    if (x != NULL) memset(x, 0, sizeof(*x));
    mrd_msg msg = {{0}};
    mrd_json_doc d;
    if (ctl_get_json(ctx, &ctx->topo->regions[r].agent, "/v1/region", timeout_ms, &d, &msg) != 0)
        return;
    const mrd_json *root = mrd_json_root(&d);
    const mrd_json *st = mrd_json_get(&d, root, "state");
    /* a state that is not this region's own is not its agent's word */
    if (st != NULL && rg_state_from_json(ctx->topo, &d, st, &v->st, &msg) == 0 &&
        strcmp(v->st.region, ctx->topo->regions[r].name) == 0) {
        v->reachable = true;
        read_extra(&d, root, v, x);
    }
    mrd_json_free(&d);
}

typedef struct {
    const ctl_ctx *ctx;
    int region;
    uint64_t timeout_ms;
    rg_view *view;
    ctl_agent_extra *extra;
} ask_job;

static void *ask_job_run(void *arg)
{
    ask_job *j = arg;
    ctl_ask_agent(j->ctx, j->region, j->timeout_ms, j->view, j->extra);
    return NULL;
}

/* Every agent at once (a thread each): an agent that does not answer costs one time-out. */
void ctl_regions_ask(const ctl_ctx *ctx, uint64_t timeout_ms, ctl_regions *out)
{
    const topology *t = ctx->topo;
    ask_job jobs[TOPO_REGIONS_MAX];
    pthread_t th[TOPO_REGIONS_MAX];
    bool started[TOPO_REGIONS_MAX] = {false};
    for (int r = 0; r < t->region_count; r++) {
        jobs[r] = (ask_job){.ctx = ctx,
                            .region = r,
                            .timeout_ms = timeout_ms,
                            .view = &out->views[r],
                            .extra = &out->extra[r]};
        started[r] = pthread_create(&th[r], NULL, ask_job_run, &jobs[r]) == 0;
        if (!started[r]) ask_job_run(&jobs[r]);
    }
    out->answered = 0;
    for (int r = 0; r < t->region_count; r++) {
        if (started[r]) pthread_join(th[r], NULL);
        if (out->views[r].reachable) out->answered++;
    }
    const rg_state *h = rg_highest(out->views, t->region_count);
    out->highest = -1;
    for (int r = 0; h != NULL && r < t->region_count; r++)
        if (&out->views[r].st == h) out->highest = r;
    int p = h != NULL ? topo_region_index(t, h->primary) : -1;
    out->primary = p >= 0 ? p : t->primary_region;
}
