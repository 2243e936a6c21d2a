/*
 * The region's control state in its agent (include/meridian/region.h): the
 * region.json file, GET /v1/region (long polls) and POST /v1/region, the
 * watches of the other regions' agents that carry a higher epoch here, and
 * what a change means for this agent: a change of role (primary half or
 * secondary half) restarts the process, a new writer in a primary region is
 * followed at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_int.h"

#define AG_SETTLE_MS 1500u /* at start, answers wait this long for the other regions' word */
#define AG_RESTART_DELAY_MS 20u /* a change of role restarts the agent after its answer left */
#define AG_STALL_MS 1000u        /* a tick this late: the process was stopped or starved */

/* The node's topology follows the state: the primary region, this region's writer. */
static void patch_topology(agent *a)
{
    rg_state_to_topology(&a->rs, &a->node->topo);
}

int ag_region_init(agent *a, mrd_msg *msg)
{
    mrd_node *n = a->node;
    snprintf(a->rs_path, sizeof(a->rs_path), "%s/%s", n->data_dir, RG_STATE_FILE);
    int rc = 0;
    if (access(a->rs_path, F_OK) == 0) {
        rc = rg_state_load(&n->topo, a->rs_path, &a->rs, msg);
    } else if (errno != ENOENT) {
        rc = mrd_fail(msg, MRD_EIO, "%s: %s", a->rs_path, strerror(errno));
    } else {
        rg_state_initial(&n->topo, a->region_idx, &a->rs);
        a->rs.version = 1;
        rc = rg_state_save(&a->rs, a->rs_path, msg);
        if (rc == 0) MRD_INFO("region_state_created", "path=%s", a->rs_path);
    }
    if (rc != 0) return rc;
    if (strcmp(a->rs.region, a->region->name) != 0)
        return mrd_fail(msg, MRD_EINVAL, "%s: the state of region %s, not of %s", a->rs_path,
                        a->rs.region, a->region->name);
    patch_topology(a);
    a->settle_until_ms = mrd_now_ms() + (n->topo.region_count > 1 ? AG_SETTLE_MS : 0);
    MRD_INFO("region_state", "epoch=%" PRIu64 " primary=%s writer=%s fork=%" PRIu64 " op=%d",
             a->rs.epoch, a->rs.primary, a->rs.writer, a->rs.fork_lsn, (int)a->rs.op);
    return 0;
}

/* ---- GET /v1/region ---------------------------------------------------------------------- */

static void answer(agent *a, h2_req *req)
{
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{\"state\":{");
    rg_state_encode(&a->rs, &b);
    uint64_t now_wall = mrd_wall_ms();
    mrd_buf_printf(&b, "},\"agent\":\"%s\"", a->primary ? "primary" : "secondary");
    if (a->primary) {
        mrd_buf_printf(&b, ",\"vdl\":%" PRIu64, a->committed_lsn);
    } else {
        mrd_buf_printf(&b, ",\"vdl\":%" PRIu64 ",\"primary_vdl\":%" PRIu64,
                       a->vol != NULL && a->vol_ready ? vol_replica_vdl(a->vol) : a->vdl,
                       a->last_cpl_lsn);
        if (a->last_cpl_wall_ms > 0)
            mrd_buf_printf(&b, ",\"last_commit_age_ms\":%" PRIu64,
                           now_wall > a->last_cpl_wall_ms ? now_wall - a->last_cpl_wall_ms : 0);
    }
    if (a->rejoin[0]) {
        mrd_buf_printf(&b, ",\"rejoin\":");
        mrd_json_quote(&b, a->rejoin);
    }
    if (a->divergent_path[0]) {
        mrd_buf_printf(&b, ",\"divergent\":{\"path\":");
        mrd_json_quote(&b, a->divergent_path);
        mrd_buf_printf(&b, ",\"after_lsn\":%" PRIu64 ",\"to_lsn\":%" PRIu64 ",\"records\":%" PRIu64
                           ",\"commits\":%" PRIu64 "}",
                       a->divergent_after, a->divergent_to, a->divergent_records,
                       a->divergent_commits);
    }
    mrd_buf_printf(&b, "}\n");
    h2_header hdrs[] = {{"content-type", "application/json"}};
    if (b.data != NULL)
        h2_req_respond(req, 200, hdrs, 1, b.data, b.len);
    else
        mrd_node_error(req, 500, "internal", "out of memory");
    mrd_buf_free(&b);
}

static void unhold(agent *a, int i)
{
    h2_req_set_ud(a->polls[i].req, NULL);
    a->polls[i] = a->polls[--a->n_polls];
}

/* Held polls whose answer is due: the state changed, or they waited long enough. */
static void answer_polls(agent *a, bool all)
{
    uint64_t now = mrd_now_ms();
    bool settled = now >= a->settle_until_ms;
    for (int i = 0; i < a->n_polls;) {
        ag_poll *p = &a->polls[i];
        bool due = (settled || p->eager) && (all || p->after != a->rs.version || now >= p->until_ms);
        if (!due) {
            i++;
            continue;
        }
        h2_req *req = p->req;
        unhold(a, i);
        answer(a, req);
    }
}

/*
 * What this agent holds may be old: it was stopped or starved (a tick came late), or an
 * instance that was stopped asks with fresh=1. Until every other region's agent has
 * answered anew (or failed to), answers to instances wait, as at start.
 */
static void refresh(agent *a, const char *why)
{
    uint64_t now = mrd_now_ms();
    if (a->node->topo.region_count < 2) return;
    if (now < a->settle_until_ms) return; /* already waiting for the others' word */
    MRD_INFO("region_refresh", "reason=\"%s\"", why);
    a->settle_until_ms = now + AG_SETTLE_MS;
    for (int i = 0; i < a->node->topo.region_count; i++) {
        a->peer_heard[i] = false;
        if (a->peers[i] != NULL) rg_watch_refresh(a->peers[i]);
    }
}

static bool stalled(agent *a)
{
    return a->last_tick_ms != 0 && mrd_now_ms() - a->last_tick_ms > AG_STALL_MS;
}

static void get_route(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    if (strstr(h2_req_path(req), "fresh=1") != NULL) refresh(a, "an instance asks afresh");
    if (stalled(a)) refresh(a, "this agent was stopped or starved");
    const char *path = h2_req_path(req);
    const char *q = strstr(path, "?after=");
    uint64_t after = 0;
    bool wait = false;
    if (q != NULL) {
        char *end = NULL;
        after = strtoull(q + 7, &end, 10);
        wait = end != q + 7 && (*end == '\0' || strcmp(end, "&now=1") == 0);
    }
    /* another agent asks: what this one holds, at once, even while it starts */
    bool eager = strstr(path, "now=1") != NULL;
    bool settled = eager || mrd_now_ms() >= a->settle_until_ms;
    if (settled && (!wait || after != a->rs.version)) return answer(a, req);
    if (a->n_polls == AG_POLLS_MAX) {
        if (!settled)
            return mrd_node_error(req, 503, "unavailable", "the agent is starting");
        return answer(a, req);
    }
    a->polls[a->n_polls++] =
        (ag_poll){.req = req,
                  .after = wait ? after : UINT64_MAX,
                  .until_ms = mrd_now_ms() + RG_POLL_HOLD_MS,
                  .eager = eager};
    h2_req_set_ud(req, &a->polls);
}

void ag_region_closed(agent *a, h2_req *req)
{
    for (int i = 0; i < a->n_polls; i++)
        if (a->polls[i].req == req) return unhold(a, i);
}

/* ---- changes ----------------------------------------------------------------------------- */

/* The counts behind the metrics outlive restarts (a change of role restarts the agent):
 * the file region.counts holds "switchovers failovers writer_changes". */
static void counts_path(const agent *a, char *buf, size_t len)
{
    snprintf(buf, len, "%s/region.counts", a->node->data_dir);
}

static void counts_load(agent *a)
{
    char path[TOPO_PATH_MAX + 32], *text = NULL;
    size_t len = 0;
    mrd_msg msg = {{0}};
    counts_path(a, path, sizeof(path));
    if (access(path, F_OK) != 0 || mrd_read_file(path, 256, &text, &len, &msg) != 0) return;
    unsigned long long c[3];
    if (sscanf(text, "%llu %llu %llu", &c[0], &c[1], &c[2]) == 3)
        for (int i = 0; i < 3; i++)
            a->counts[i] = c[i];
    free(text);
}

static void counted(agent *a, const char *reason, const rg_state *old)
{
    bool promoted = a->rs.epoch > old->epoch && strcmp(a->rs.primary, a->rs.region) == 0;
    uint64_t before[3] = {a->counts[0], a->counts[1], a->counts[2]};
    if (promoted && strcmp(reason, "switchover") == 0) a->counts[0]++;
    if (promoted && strcmp(reason, "failover") == 0) a->counts[1]++;
    if (strcmp(a->rs.writer, old->writer) != 0) a->counts[2]++;
    if (memcmp(before, a->counts, sizeof(before)) == 0) return;
    mrd_metric_set(a->m_switchovers, (double)a->counts[0]);
    mrd_metric_set(a->m_failovers, (double)a->counts[1]);
    mrd_metric_set(a->m_writer_failovers, (double)a->counts[2]);
    char path[TOPO_PATH_MAX + 32], text[96];
    counts_path(a, path, sizeof(path));
    int n = snprintf(text, sizeof(text), "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", a->counts[0],
                     a->counts[1], a->counts[2]);
    mrd_msg msg = {{0}};
    if (mrd_write_file_atomic(path, text, (size_t)n, &msg) != 0)
        MRD_WARN("region_counts_save_failed", "reason=\"%s\"", msg.text);
}

static void restart_soon(uv_timer_t *t)
{
    agent *a = t->data;
    mrd_node_restart(a->node, a->restart_why);
}

/* Takes state n (already checked), durably; then acts on it. */
int ag_region_apply(agent *a, const rg_state *n, const char *reason, mrd_msg *msg)
{
    rg_state old = a->rs, s = *n;
    s.version = old.version + 1;
    int rc = rg_state_save(&s, a->rs_path, msg);
    if (rc != 0) {
        MRD_ERROR("region_state_save_failed", "reason=\"%s\"", msg->text);
        return rc;
    }
    a->rs = s;
    patch_topology(a);
    counted(a, reason, &old);
    mrd_metric_set(a->m_epoch, (double)s.epoch);
    MRD_INFO("region_state_changed",
             "reason=%s epoch=%" PRIu64 " primary=%s writer=%s fork=%" PRIu64 " op=%d op_to=%s "
             "version=%" PRIu64,
             reason, s.epoch, s.primary, s.writer, s.fork_lsn, (int)s.op, s.op_to, s.version);
    answer_polls(a, true);
    bool primary_now = strcmp(s.primary, s.region) == 0;
    /* a new role, or a secondary's new primary (its replica must check for a divergent
     * tail against the new fork and resume from the new primary): restart */
    bool new_primary = !primary_now && strcmp(old.primary, s.primary) != 0;
    if (primary_now != a->primary || new_primary) {
        /* from the tick, once the answers to this change have left */
        a->restart_why = primary_now   ? "this region is now the primary"
                         : new_primary ? "this secondary follows a new primary"
                                       : "this region is now a secondary";
        uv_timer_start(&a->soon, restart_soon, AG_RESTART_DELAY_MS, 0);
        return 0;
    }
    if (strcmp(old.writer, s.writer) != 0) a->writer_since_ms = mrd_now_ms();
    if (a->primary && strcmp(old.writer, s.writer) != 0) ag_primary_writer_changed(a);
    return 0;
}

/* Whether n may replace the current state; msg says why not. */
static int acceptable(agent *a, const rg_state *n, mrd_msg *msg)
{
    const rg_state *c = &a->rs;
    if (strcmp(n->region, c->region) != 0)
        return mrd_fail(msg, MRD_EINVAL, "this is region %s's agent, not %s's", c->region,
                        n->region);
    if (n->epoch < c->epoch)
        return mrd_fail(msg, MRD_ESTALE, "epoch %" PRIu64 " is below this region's %" PRIu64,
                        n->epoch, c->epoch);
    if (n->epoch == c->epoch && strcmp(n->primary, c->primary) != 0)
        return mrd_fail(msg, MRD_ESTALE,
                        "at epoch %" PRIu64 " the primary is %s; a new primary needs a new epoch",
                        c->epoch, c->primary);
    return 0; /* a lower writer_gen keeps this region's writer (post_route) */
}

static void post_route(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    size_t len = 0;
    const uint8_t *body = h2_req_body(req, &len);
    rg_state n;
    mrd_msg msg = {{0}};
    if (rg_state_decode(&node->topo, (const char *)body, len, &n, &msg) != 0)
        return mrd_node_error(req, 400, "bad_request", msg.text);
    int rc = acceptable(a, &n, &msg);
    if (rc == MRD_ESTALE) return mrd_node_error(req, 409, "stale_epoch", msg.text);
    if (rc != 0) return mrd_node_error(req, 400, "bad_request", msg.text);
    const char *q = strstr(h2_req_path(req), "?reason=");
    const char *reason = q != NULL ? q + 8 : "told";
    if (strcmp(reason, "switchover") != 0 && strcmp(reason, "failover") != 0 &&
        strcmp(reason, "told") != 0 && strcmp(reason, "writer_failover") != 0)
        return mrd_node_error(req, 400, "bad_request",
                              "reason: switchover, failover, writer_failover or told");
    /* a step planned before this region changed its writer keeps the new writer */
    if (n.writer_gen < a->rs.writer_gen) {
        snprintf(n.writer, sizeof(n.writer), "%s", a->rs.writer);
        n.writer_gen = a->rs.writer_gen;
    }
    /* the same state again (a retried step) changes nothing */
    n.version = a->rs.version;
    if (memcmp(&n, &a->rs, sizeof(n)) != 0 && ag_region_apply(a, &n, reason, &msg) != 0)
        return mrd_node_error(req, 500, "internal", msg.text);
    answer(a, req);
}

/* ---- the other regions' word ---------------------------------------------------------------- */

static void peer_state(rg_watch *w, const rg_state *st, int err, void *ud)
{
    agent *a = ud;
    int r = -1;
    for (int i = 0; i < a->node->topo.region_count; i++)
        if (a->peers[i] == w) r = i;
    if (r >= 0) a->peer_heard[r] = true;
    if (st == NULL || a->node->stopping || st->epoch <= a->rs.epoch) return;
    rg_state n = a->rs;
    n.epoch = st->epoch;
    snprintf(n.primary, sizeof(n.primary), "%s", st->primary);
    n.fork_lsn = st->fork_lsn;
    n.op = RG_OP_NONE;
    n.op_epoch = 0;
    n.op_to[0] = '\0';
    MRD_WARN("region_epoch_learned",
             "from=%s epoch=%" PRIu64 " primary=%s fork=%" PRIu64 " was_epoch=%" PRIu64
             " was_primary=%s",
             st->region, st->epoch, st->primary, st->fork_lsn, a->rs.epoch, a->rs.primary);
    mrd_msg msg = {{0}};
    ag_region_apply(a, &n, "told", &msg);
}

void ag_region_tick(agent *a, uint64_t now)
{
    if (stalled(a)) refresh(a, "this agent was stopped or starved");
    a->last_tick_ms = now;
    if (now < a->settle_until_ms) {
        bool all = true;
        for (int i = 0; i < a->node->topo.region_count; i++)
            if (i != a->region_idx && !a->peer_heard[i]) all = false;
        if (all) a->settle_until_ms = now;
        if (all) MRD_INFO("region_settled", "reason=\"every other region's agent answered\"");
    }
    answer_polls(a, false);
    ag_monitor_tick(a, now);
}

int ag_region_start(agent *a, mrd_msg *msg)
{
    mrd_metrics *m = &a->node->metrics;
    a->m_switchovers = mrd_metric_add(m, MRD_COUNTER, "meridian_region_switchovers_total", NULL,
                                      "Planned switchovers that made this region the primary.");
    a->m_failovers = mrd_metric_add(m, MRD_COUNTER, "meridian_region_failovers_total", NULL,
                                    "Unplanned failovers that made this region the primary.");
    a->m_writer_failovers =
        mrd_metric_add(m, MRD_COUNTER, "meridian_region_writer_changes_total", NULL,
                       "Times this region's writer instance changed (in-region failovers).");
    counts_load(a);
    mrd_metric_set(a->m_switchovers, (double)a->counts[0]);
    mrd_metric_set(a->m_failovers, (double)a->counts[1]);
    mrd_metric_set(a->m_writer_failovers, (double)a->counts[2]);
    a->m_epoch = mrd_metric_add(m, MRD_GAUGE, "meridian_region_epoch", NULL,
                                "The global epoch this region knows.");
    mrd_metric_set(a->m_epoch, (double)a->rs.epoch);
    ag_monitor_start(a);
    int rc = mrd_node_route(a->node, "GET", "/v1/region", get_route, a);
    if (rc == 0) rc = mrd_node_route(a->node, "POST", "/v1/region", post_route, a);
    for (int i = 0; rc == 0 && i < a->node->topo.region_count; i++) {
        if (i == a->region_idx) continue;
        rc = rg_watch_start(a->node->loop, &a->node->topo, i, a->client_tls, peer_state, a,
                            &a->peers[i], msg);
        if (rc == 0) rg_watch_set_eager(a->peers[i]);
    }
    return rc;
}

void ag_region_stop(agent *a)
{
    uv_timer_stop(&a->soon);
    uv_close((uv_handle_t *)&a->soon, NULL);
    ag_monitor_stop(a);
    for (int i = 0; i < TOPO_REGIONS_MAX; i++) {
        rg_watch_stop(a->peers[i]);
        a->peers[i] = NULL;
    }
    while (a->n_polls > 0) {
        h2_req *req = a->polls[0].req;
        unhold(a, 0);
        answer(a, req);
    }
}
