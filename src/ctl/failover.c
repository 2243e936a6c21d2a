/*
 * `meridian switchover` and `meridian failover`: a loop that asks every
 * region's agent (GET /v1/region) and writer (GET /v1/status) what they hold,
 * asks the planner (rg_plan, include/meridian/region.h) for the next step,
 * carries it out (POST /v1/region to one agent, which keeps it durably
 * before it answers) and asks again. Nothing lives only in this process: a
 * crash of the CLI, an agent or a writer at any point leaves states that
 * the next run reads and continues from. Progress is printed step by step
 * and appended to DATA/failover.log.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_private.h"
#include "meridian/json.h"
#include "meridian/region.h"

#define FO_ASK_TIMEOUT_MS 2000u
#define FO_FAIL_GRACE_MS 5000u /* a step that cannot go on is asked again this long */
#define FO_WAIT_MS 20u
#define FO_RETRY_MS 100u

/* Region r's writer instance (the one its state names). */
static void ask_writer(ctl_ctx *ctx, int r, rg_view *v)
{
    v->writer_reachable = false;
    const topo_node *w = topo_find(ctx->topo, v->st.writer);
    if (w == NULL) return;
    mrd_msg msg = {{0}};
    mrd_json_doc d;
    if (ctl_get_json(ctx, w, "/v1/status", FO_ASK_TIMEOUT_MS, &d, &msg) != 0) return;
    const mrd_json *root = mrd_json_root(&d);
    const char *mode = ctl_json_str(&d, root, "mode");
    const char *state = ctl_json_str(&d, root, "writer_state");
    const mrd_json *ready = mrd_json_get(&d, root, "ready");
    const mrd_json *drained = mrd_json_get(&d, root, "drained");
    bool is_ready = ready != NULL && ready->kind == MRD_JSON_BOOL && ready->boolean;
    v->writer_reachable = strcmp(ctl_json_str(&d, root, "role"), "writer") == 0 && mode[0] != '\0';
    v->writer_mode = strcmp(mode, "drained") == 0   ? RG_INST_DRAINED
                     : strcmp(mode, "standby") == 0 ? RG_INST_STANDBY
                                                    : RG_INST_WRITER;
    v->writer_ready = v->writer_mode == RG_INST_DRAINED
                          ? drained != NULL && drained->kind == MRD_JSON_BOOL && drained->boolean
                          : is_ready && strcmp(state, "ready") == 0;
    mrd_json_get_u64(&d, root, "epoch", &v->writer_epoch);
    mrd_json_get_u64(&d, root, "vdl", &v->writer_vdl);
    const mrd_json *rec = mrd_json_get(&d, root, "recovered");
    if (rec != NULL) mrd_json_get_u64(&d, rec, "vdl", &v->writer_recovered_vdl);
    mrd_json_free(&d);
}

typedef struct {
    ctl_ctx *ctx;
    int region;
    rg_view *view;
    ctl_agent_extra *extra;
} fo_ask;

static void *ask_region(void *arg)
{
    fo_ask *q = arg;
    ctl_ask_agent(q->ctx, q->region, FO_ASK_TIMEOUT_MS, q->view, q->extra);
    if (q->view->reachable) ask_writer(q->ctx, q->region, q->view);
    return NULL;
}

/* Every region at once (a thread each): one round costs the slowest region's answers. */
static void observe(ctl_ctx *ctx, rg_view *views, ctl_agent_extra *extra)
{
    fo_ask q[TOPO_REGIONS_MAX];
    pthread_t th[TOPO_REGIONS_MAX];
    bool started[TOPO_REGIONS_MAX] = {false};
    for (int r = 0; r < ctx->topo->region_count; r++) {
        q[r] = (fo_ask){.ctx = ctx, .region = r, .view = &views[r], .extra = &extra[r]};
        started[r] = pthread_create(&th[r], NULL, ask_region, &q[r]) == 0;
        if (!started[r]) ask_region(&q[r]);
    }
    for (int r = 0; r < ctx->topo->region_count; r++)
        if (started[r]) pthread_join(th[r], NULL);
}

static int post_state(ctl_ctx *ctx, int r, const rg_state *s, const char *reason, mrd_msg *msg)
{
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{");
    rg_state_encode(s, &b);
    mrd_buf_printf(&b, "}");
    char path[64];
    snprintf(path, sizeof(path), "/v1/region?reason=%s", reason);
    h2_result res;
    memset(&res, 0, sizeof(res));
    int rc = b.data == NULL ? mrd_fail(msg, MRD_ENOMEM, "out of memory")
                            : ctl_fetch(ctx, &ctx->topo->regions[r].agent, "POST", path, b.data,
                                        b.len, FO_ASK_TIMEOUT_MS * 2, &res, msg);
    if (rc == 0 && res.status != 200)
        rc = mrd_fail(msg, MRD_EPROTO, "%s answered %d: %.*s", ctx->topo->regions[r].agent.id,
                      res.status, (int)(res.body.len < 300 ? res.body.len : 300),
                      res.body.data ? (const char *)res.body.data : "");
    h2_result_free(&res);
    mrd_buf_free(&b);
    return rc;
}


/* One progress line, on stdout (unless --json) and in DATA/failover.log. */
static void progress(ctl_ctx *ctx, FILE *log, bool json, uint64_t t0, const char *name,
                     const char *what)
{
    double s = (double)(mrd_now_ms() - t0) / 1000.0;
    if (!json) {
        fprintf(ctx->out, "[%7.3f s] %-9s %s\n", s, name, what);
        fflush(ctx->out);
    }
    if (log != NULL) {
        fprintf(log, "%" PRIu64 " %s %s\n", mrd_wall_ms(), name, what);
        fflush(log);
    }
}

int ctl_failover(ctl_ctx *ctx, const char *to, bool allow_loss, bool json, uint64_t timeout_ms,
                 mrd_msg *msg)
{
    const topology *t = ctx->topo;
    int target = topo_region_index(t, to);
    if (target < 0) return mrd_fail(msg, MRD_EINVAL, "--to %s: no such region in %s", to, t->path);
    if (t->region_count < 2)
        return mrd_fail(msg, MRD_EINVAL, "%s has one region: nothing to switch over to", t->path);
    char path[TOPO_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/failover.log", ctx->data_dir);
    FILE *log = fopen(path, "a");
    const char *kind = allow_loss ? "failover" : "switchover";
    uint64_t t0 = mrd_now_ms();
    static rg_view views[TOPO_REGIONS_MAX];
    static ctl_agent_extra extra[TOPO_REGIONS_MAX];
    rg_plan_req req = {.topo = t, .target = target, .allow_loss = allow_loss};
    char last[MRD_MSG_MAX + 32] = "";
    int rc = 0, failures = 0;
    uint64_t fail_since = 0;
    /* the loss report of an unplanned failover: what the old primary acknowledged that the
     * target lacks, as far as anyone reachable knows */
    bool reported = false;
    uint64_t known_vdl = 0, target_vdl = 0, age_ms = 0, new_epoch = 0;
    bool have_age = false;
    char old_primary[TOPO_NAME_MAX] = "";
    progress(ctx, log, json, t0, kind, to);
    for (;;) {
        observe(ctx, views, extra);
        rg_step step;
        rg_plan(&req, views, &step);
        if (allow_loss && !reported && step.kind == RG_STEP_SET &&
            strcmp(step.name, "promote") == 0 && step.region == target) {
            const rg_state *h = rg_highest(views, t->region_count);
            snprintf(old_primary, sizeof(old_primary), "%s", h->primary);
            int p = topo_region_index(t, h->primary);
            if (p >= 0 && views[p].reachable) known_vdl = views[p].vdl;
            for (int r = 0; r < t->region_count; r++)
                if (views[r].reachable && views[r].primary_vdl > known_vdl)
                    known_vdl = views[r].primary_vdl;
            target_vdl = views[target].vdl;
            have_age = extra[target].has_age;
            age_ms = extra[target].last_commit_age_ms;
            new_epoch = step.set.epoch;
            reported = true;
            char what[400];
            if (known_vdl > target_vdl)
                snprintf(what, sizeof(what),
                         "%s holds LSN %" PRIu64 "; the old primary %s was last known at VDL "
                         "%" PRIu64 ": LSNs %" PRIu64 "..%" PRIu64 " are lost (at least)",
                         to, target_vdl, old_primary, known_vdl, target_vdl + 1, known_vdl);
            else
                snprintf(what, sizeof(what),
                         "%s holds LSN %" PRIu64 ", all the old primary %s was known to have "
                         "committed",
                         to, target_vdl, old_primary);
            progress(ctx, log, json, t0, "loss", what);
            if (have_age) {
                snprintf(what, sizeof(what), "the last commit reached %s %" PRIu64 " ms ago", to,
                         age_ms);
                progress(ctx, log, json, t0, "loss", what);
            }
        }
        char line[MRD_MSG_MAX + 32];
        snprintf(line, sizeof(line), "%s|%s", step.name, step.why);
        /* an agent restarting into its new role does not answer for a moment: not news */
        bool transient = step.kind == RG_STEP_FAIL &&
                         (fail_since == 0 || mrd_now_ms() - fail_since < FO_FAIL_GRACE_MS);
        if (strcmp(line, last) != 0 && step.kind != RG_STEP_DONE && !transient) {
            progress(ctx, log, json, t0, step.name, step.why);
            snprintf(last, sizeof(last), "%s", line);
        }
        if (step.kind == RG_STEP_DONE) {
            progress(ctx, log, json, t0, "done", step.why);
            break;
        }
        if (step.kind == RG_STEP_FAIL) {
            /* an agent that did not answer once may answer the next time */
            if (fail_since == 0) fail_since = mrd_now_ms();
            if (mrd_now_ms() - fail_since < FO_FAIL_GRACE_MS) {
                ctl_sleep_ms(FO_RETRY_MS);
                continue;
            }
            rc = mrd_fail(msg, MRD_ESTATE, "%s", step.why);
            break;
        }
        fail_since = 0;
        if (mrd_now_ms() - t0 > timeout_ms) {
            rc = mrd_fail(msg, MRD_ETIMEDOUT, "timed out after %" PRIu64 " ms at step %s: %s",
                          timeout_ms, step.name, step.why);
            break;
        }
        if (step.kind == RG_STEP_WAIT) {
            ctl_sleep_ms(FO_WAIT_MS);
            continue;
        }
        mrd_msg why = {{0}};
        if (post_state(ctx, step.region, &step.set, allow_loss ? "failover" : "switchover",
                       &why) != 0) {
            if (failures++ % 20 == 0) progress(ctx, log, json, t0, step.name, why.text);
            ctl_sleep_ms(FO_RETRY_MS);
        }
    }
    uint64_t elapsed = mrd_now_ms() - t0;
    if (rc == 0) {
        const rg_view *tv = &views[target];
        uint64_t fork = tv->st.fork_lsn;
        if (json) {
            fprintf(ctx->out,
                    "{\"command\":\"%s\",\"target\":\"%s\",\"epoch\":%" PRIu64
                    ",\"fork_lsn\":%" PRIu64 ",\"writer\":\"%s\",\"elapsed_ms\":%" PRIu64,
                    kind, to, tv->st.epoch, fork, tv->st.writer, elapsed);
            if (reported) {
                fprintf(ctx->out,
                        ",\"old_primary\":\"%s\",\"target_vdl\":%" PRIu64
                        ",\"old_primary_known_vdl\":%" PRIu64,
                        old_primary, target_vdl, known_vdl);
                if (known_vdl > fork)
                    fprintf(ctx->out, ",\"lost\":{\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64 "}",
                            fork + 1, known_vdl);
                else
                    fprintf(ctx->out, ",\"lost\":null");
                if (have_age) fprintf(ctx->out, ",\"last_commit_age_ms\":%" PRIu64, age_ms);
            }
            fprintf(ctx->out, "}\n");
        } else if (reported) {
            fprintf(ctx->out,
                    "%s is primary at epoch %" PRIu64 "; its history continues after LSN %" PRIu64
                    ".\n",
                    to, new_epoch, fork);
            if (known_vdl > fork)
                fprintf(ctx->out,
                        "lost: LSNs %" PRIu64 "..%" PRIu64 " (the old primary %s's last known "
                        "VDL); when %s returns, its agent saves its divergent tail to a file "
                        "(meridian status names it) and it rejoins as a secondary.\n",
                        fork + 1, known_vdl, old_primary, old_primary);
            else
                fprintf(ctx->out,
                        "lost: no commit the reachable regions knew of. Whatever %s acknowledged "
                        "after LSN %" PRIu64 " is its divergent tail: when %s returns, its agent "
                        "saves it to a file (meridian status names it) and it rejoins as a "
                        "secondary.\n",
                        old_primary, fork, old_primary);
        }
        fflush(ctx->out);
    }
    if (log != NULL) fclose(log);
    return rc;
}
