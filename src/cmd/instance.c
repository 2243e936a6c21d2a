/*
 * An instance process (`--role writer` or `--role reader`): which of the two
 * it runs is the region's word, not the topology's. Before anything else it
 * asks its region's agent for the region state (include/meridian/region.h):
 * the instance the state names as writer runs the writer (taking writes,
 * drained, or standing by in a secondary region), every other instance runs a
 * reader. It keeps following the state; the role decides what a change means
 * (writer_region_changed, reader_region_changed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "instance.h"
#include "meridian/reader.h"
#include "meridian/writer.h"

typedef struct {
    mrd_node *node;
    h2_tls *tls;
    rg_watch *watch;
    writer *w;
    reader *r;
    bool started;
    bool said_waiting;
    mrd_stop_fn role_stop;
    void *role_stop_ud;
} instance;

static instance inst; /* one per process */

/* node->topo follows the state: the primary region and this region's writer. */
static void patch(mrd_node *node, const rg_state *st)
{
    rg_state_to_topology(st, &node->topo);
}

static void stop_fn(mrd_node *node, void *ud)
{
    instance *in = ud;
    rg_watch_stop(in->watch);
    in->watch = NULL;
    if (in->role_stop != NULL) in->role_stop(node, in->role_stop_ud);
}

static bool not_ready(mrd_node *node, void *ud)
{
    return false;
}

/* Until the region says which role this is: SQL is refused as retryable. */
static void sql_starting(mrd_node *node, h2_req *req, void *ud)
{
    mrd_node_error(req, 503, "unavailable",
                   "the instance is starting: it waits for its region's agent to say whether it "
                   "is the writer or a reader");
}

static void confirm(void *ud)
{
    instance *in = ud;
    if (in->watch != NULL) rg_watch_refresh(in->watch);
}

static void start(instance *in, const rg_state *st)
{
    mrd_node *node = in->node;
    rg_inst_mode m = rg_inst_mode_of(st, node->self->id);
    mrd_msg msg = {{0}};
    int rc;
    MRD_INFO("instance_start", "mode=%s epoch=%llu primary=%s writer=%s", rg_inst_mode_name(m),
             (unsigned long long)st->epoch, st->primary, st->writer);
    node->stop_fn = NULL;
    if (m == RG_INST_READER) {
        node->role = TOPO_ROLE_READER;
        rc = reader_start(node, &in->r, &msg);
    } else {
        node->role = TOPO_ROLE_WRITER;
        writer_options o = {.mode = m,
                            .global_epoch = st->epoch,
                            .epoch_min = st->epoch > 0 ? rg_volume_epoch_min(st->epoch) : 0,
                            .confirm = confirm,
                            .confirm_ud = in};
        rc = writer_start(node, &o, &in->w, &msg);
    }
    if (rc != 0) {
        MRD_ERROR("instance_start_failed", "reason=\"%s\"", msg.text);
        fprintf(stderr, "meridiand: %s\n", msg.text);
        exit(1);
    }
    in->started = true;
    in->role_stop = node->stop_fn;
    in->role_stop_ud = node->stop_ud;
    node->stop_fn = stop_fn;
    node->stop_ud = in;
}

/* The state a restart starts from: handed to the next run of this process, so that it
 * does not wait for its agent (which may be restarting into its own new role). */
#define STATE_ENV "MERIDIAN_REGION_STATE"

static void hand_over(const rg_state *st)
{
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{");
    rg_state_encode(st, &b);
    mrd_buf_printf(&b, "}");
    if (b.data != NULL) {
        mrd_buf_append(&b, "", 1);
        setenv(STATE_ENV, (const char *)b.data, 1);
    }
    mrd_buf_free(&b);
}

static void on_state(rg_watch *w, const rg_state *st, int err, void *ud)
{
    instance *in = ud;
    if (in->node->stopping) return;
    if (st != NULL) hand_over(st);
    if (st == NULL) {
        if (!in->started && !in->said_waiting)
            MRD_WARN("instance_waiting", "reason=\"region %s's agent does not answer yet (%s)\"",
                     in->node->topo.regions[in->node->self->region].name, mrd_errname(err));
        in->said_waiting = true;
        return;
    }
    patch(in->node, st);
    if (!in->started) return start(in, st);
    if (in->w != NULL)
        writer_region_changed(in->w, st);
    else
        reader_region_changed(in->r, st);
}

int instance_start(mrd_node *node, mrd_msg *msg)
{
    instance *in = &inst;
    in->node = node;
    int rc = mrd_node_client_tls(node, &in->tls, msg);
    if (rc != 0) return rc;
    node->ready_fn = not_ready;
    mrd_node_route(node, "POST", "/v1/sql", sql_starting, in);
    node->stop_fn = stop_fn;
    node->stop_ud = in;
    rc = rg_watch_start(node->loop, &node->topo, node->self->region, in->tls, on_state, in,
                        &in->watch, msg);
    const char *env = getenv(STATE_ENV);
    if (rc == 0 && env != NULL) { /* restarted: start from the state that made it restart */
        rg_state st;
        mrd_msg why = {{0}};
        if (rg_state_decode(&node->topo, env, strlen(env), &st, &why) != 0)
            MRD_WARN("instance_state_ignored", "reason=\"%s\"", why.text);
        else if (strcmp(st.region, node->topo.regions[node->self->region].name) != 0)
            MRD_WARN("instance_state_ignored", "reason=\"the state of region %s\"", st.region);
        else {
            patch(node, &st);
            start(in, &st);
        }
    }
    unsetenv(STATE_ENV);
    return rc;
}
