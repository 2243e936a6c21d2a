/*
 * The writer role's life (include/meridian/writer.h): open the volume, then
 * SQLite on it; status and metrics; what happens when a newer writer fences
 * this one; stopping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writer_int.h"

static const char *state_name(wr_state s)
{
    static const char *names[] = {"recovering", "opening", "ready", "fenced", "failed", "standby"};
    return names[s];
}

/* ---- volume callbacks ------------------------------------------------------------------- */

static void on_ready(vol *v, int status, const char *msg, void *ud)
{
    writer *w = ud;
    if (status != 0) {
        w->state = WR_FAILED;
        snprintf(w->why, sizeof(w->why), "%s", msg);
        MRD_ERROR("volume_open_failed", "reason=\"%s\"", msg);
        wr_sql_hold_expire(w, mrd_now_ms()); /* what it held is answered now */
        return;
    }
    const vol_info *info = vol_info_get(v);
    MRD_INFO("volume_ready",
             "epoch=%llu vcl=%llu vdl=%llu lost_max=%llu first_lsn=%llu pgs=%u reporters=%u",
             (unsigned long long)info->epoch, (unsigned long long)info->vcl,
             (unsigned long long)info->vdl, (unsigned long long)info->lost_max,
             (unsigned long long)info->first_lsn, info->pg_count, info->reporters);
    w->state = WR_OPENING;
    /* Reads before this writer's first commit depend on what recovery found durable. */
    __atomic_store_n(&w->commit_lsn_seen, info->vdl, __ATOMIC_RELEASE);
    wr_sql_open(w);
}

static void on_vdl(vol *v, uint64_t vdl, void *ud)
{
    writer *w = ud;
    mrd_metric_set(w->m_vdl, (double)vdl);
    wr_store_on_vdl(w);
    wr_stream_pump(w);
}

static void on_error(vol *v, int err, const char *msg, void *ud)
{
    writer *w = ud;
    w->state = err == MRD_ESTALE ? WR_FENCED : WR_FAILED;
    snprintf(w->why, sizeof(w->why), "%s", msg);
    MRD_ERROR(err == MRD_ESTALE ? "writer_fenced" : "writer_failed", "reason=\"%s\"", msg);
    wr_sql_hold_expire(w, mrd_now_ms()); /* held requests too (those of a group run on) */
    wr_store_on_vdl(w); /* blocked commits now fail */
    wr_streams_end(w);
}

static void on_record(vol *v, uint64_t lsn, const uint8_t *data, size_t len, void *ud)
{
    writer *w = ud;
    wr_backlog_put(&w->backlog, lsn, data, len);
    wr_stream_pump(w);
}

static const vol_cbs volume_cbs = {
    .on_ready = on_ready, .on_vdl = on_vdl, .on_error = on_error, .on_record = on_record};

/* ---- node hooks ------------------------------------------------------------------------- */

/* Nothing in flight and VDL covers every record: what recovery found (durable only once the
 * new volume epoch's first records are: until then VDL says 0) and every one written since. */
bool wr_drained(const writer *w)
{
    if (w->mode != RG_INST_DRAINED || w->state != WR_READY || w->group_running ||
        w->n_pending != 0 || w->blocked != NULL || w->n_held != 0 || w->vol == NULL)
        return false;
    uint64_t vdl = vol_vdl(w->vol);
    return vdl >= vol_info_get(w->vol)->vdl &&
           vdl >= (w->backlog.count ? w->backlog.first + w->backlog.count - 1 : 0);
}

static void status_fn(mrd_node *node, mrd_buf *out, void *ud)
{
    writer *w = ud;
    mrd_buf_printf(out, ",\"writer_state\":\"%s\",\"mode\":\"%s\",\"global_epoch\":%llu",
                   state_name(w->state), rg_inst_mode_name(w->mode),
                   (unsigned long long)w->global_epoch);
    if (w->mode == RG_INST_DRAINED)
        mrd_buf_printf(out, ",\"drained\":%s", wr_drained(w) ? "true" : "false");
    if (w->why[0]) {
        mrd_buf_printf(out, ",\"reason\":");
        mrd_json_quote(out, w->why);
    }
    wr_rpo_status(w, out);
    if (w->vol == NULL || w->state == WR_RECOVERING) return;
    const vol_info *info = vol_info_get(w->vol);
    mrd_buf_printf(out,
                   ",\"epoch\":%llu,\"vdl\":%llu,\"vcl\":%llu,\"lsn_last\":%llu,"
                   "\"storage_nodes_up\":%u,\"recovered\":{\"vcl\":%llu,\"vdl\":%llu,"
                   "\"lost_max\":%llu,\"pgs\":%u},\"sql_queue\":%u",
                   (unsigned long long)info->epoch, (unsigned long long)vol_vdl(w->vol),
                   (unsigned long long)vol_vcl(w->vol),
                   (unsigned long long)(w->backlog.count ? w->backlog.first + w->backlog.count - 1
                                                         : vol_vdl(w->vol)),
                   vol_nodes_up(w->vol), (unsigned long long)info->vcl,
                   (unsigned long long)info->vdl, (unsigned long long)info->lost_max,
                   info->pg_count, sqlx_depth(w->sqlx));
}

/* A request's stream closed: a log stream ends; a SQL request is answered to nobody. */
static void req_close_fn(mrd_node *node, h2_req *req, void *ud)
{
    writer *w = ud;
    void *r = h2_req_ud(req);
    if (r == NULL) return;
    if ((char *)r >= (char *)w->streams && (char *)r < (char *)(w->streams + WRITER_STREAMS_MAX))
        return wr_stream_closed(w, req);
    wr_sql_closed(req);
}

static bool ready_fn(mrd_node *node, void *ud)
{
    return ((writer *)ud)->state == WR_READY || ((writer *)ud)->state == WR_STANDBY;
}

static void vol_closed(void *ud)
{
    writer *w = ud;
    w->vol = NULL;
}

static void sqlx_stopped(void *ud)
{
    writer *w = ud;
    w->sqlx = NULL;
    if (w->db != NULL) sqlite3_close(w->db);
    w->db = NULL;
    mrd_vfs_free(w->vfs);
    w->vfs = NULL;
    if (w->vol != NULL) vol_close(w->vol, vol_closed, w);
}

static void stop_fn(mrd_node *node, void *ud)
{
    writer *w = ud;
    w->stopping = true;
    if (w->stalled) wr_held_drop(w); /* deposed, perhaps: not acknowledged */
    wr_rpo_stop(w); /* held answers leave: they are durable */
    if (w->beat_running) {
        w->beat_running = false;
        uv_timer_stop(&w->beat);
        uv_close((uv_handle_t *)&w->beat, NULL);
    }
    wr_sql_drop_pending(w);
    wr_streams_end(w);
    wr_store_on_vdl(w); /* blocked commits fail: the SQL thread can finish */
    if (w->sqlx != NULL) sqlx_stop(w->sqlx, sqlx_stopped, w); /* none while standing by */
}

/* ---- start ------------------------------------------------------------------------------ */

static void register_metrics(writer *w)
{
    mrd_metrics *m = &w->node->metrics;
    w->m_sql = mrd_metric_add(m, MRD_COUNTER, "meridian_sql_requests_total", NULL,
                              "SQL requests received.");
    w->m_sql_errors = mrd_metric_add(m, MRD_COUNTER, "meridian_sql_errors_total", NULL,
                                     "SQL requests answered with an error.");
    w->m_commits = mrd_metric_add(m, MRD_COUNTER, "meridian_writer_commits_total", NULL,
                                  "Transactions shipped to the volume.");
    w->m_records = mrd_metric_add(m, MRD_COUNTER, "meridian_writer_records_total", NULL,
                                  "Log records (page deltas) shipped to the volume.");
    w->m_durable_seconds = mrd_metric_add(m, MRD_HISTOGRAM, "meridian_sql_answer_seconds", NULL,
                                          "From a SQL request's arrival to its durable answer.");
    w->m_vdl = mrd_metric_add(m, MRD_GAUGE, "meridian_volume_durable_lsn", NULL,
                              "The volume's VDL.");
    w->m_rpo_blocked = mrd_metric_add(m, MRD_GAUGE, "meridian_rpo_blocked", NULL,
                                      "1 while no secondary region is within rpo_seconds.");
    w->m_rpo_refusals = mrd_metric_add(m, MRD_COUNTER, "meridian_rpo_refusals_total", NULL,
                                       "Writes refused because no secondary was within the RPO.");
}

bool wr_stalled(writer *w)
{
    if (!w->stalled && w->beat_ms != 0 && mrd_now_ms() - w->beat_ms > WRITER_STALL_MS) {
        w->stalled = true;
        MRD_WARN("writer_stalled",
                 "silent_ms=%llu reason=\"this process was stopped or starved: answers wait "
                 "until the region state is confirmed afresh\"",
                 (unsigned long long)(mrd_now_ms() - w->beat_ms));
        if (w->confirm != NULL) w->confirm(w->confirm_ud);
    }
    return w->stalled;
}

static void on_beat(uv_timer_t *t)
{
    writer *w = t->data;
    wr_stalled(w);
    w->beat_ms = mrd_now_ms();
    wr_sql_hold_expire(w, w->beat_ms);
}

static int writer_activate(writer *w, uint64_t epoch_min, mrd_msg *msg);

void writer_region_changed(writer *w, const rg_state *st)
{
    rg_inst_mode m = rg_inst_mode_of(st, w->node->self->id);
    bool open_now = w->mode == RG_INST_WRITER || w->mode == RG_INST_DRAINED;
    bool open_next = m == RG_INST_WRITER || m == RG_INST_DRAINED;
    if (open_now && open_next && st->epoch == w->global_epoch) {
        if (m != w->mode)
            MRD_INFO(m == RG_INST_DRAINED ? "writer_draining" : "writer_undrained",
                     "epoch=%llu op_to=%s", (unsigned long long)st->epoch, st->op_to);
        w->mode = m;
        if (w->stalled) { /* the region says, afresh, that this is still its writer */
            w->stalled = false;
            MRD_INFO("writer_confirmed", "epoch=%llu held_answers=%u",
                     (unsigned long long)st->epoch, w->n_held);
            wr_rpo_release(w);
        }
        return;
    }
    if (m == w->mode && st->epoch == w->global_epoch) return;
    if (w->state == WR_STANDBY && m == RG_INST_WRITER && !w->stopping) {
        /* promoted (a switchover or failover to this region): the volume opens in this
         * process, on the connections clients already hold, without a restart */
        MRD_INFO("writer_promoted", "epoch=%llu was_epoch=%llu primary=%s",
                 (unsigned long long)st->epoch, (unsigned long long)w->global_epoch, st->primary);
        w->mode = m;
        w->global_epoch = st->epoch;
        mrd_msg msg = {{0}};
        if (writer_activate(w, rg_volume_epoch_min(st->epoch), &msg) == 0) return;
        MRD_ERROR("writer_promote_failed", "reason=\"%s\"", msg.text);
        mrd_node_restart(w->node, "opening the volume in place failed: start afresh");
        return;
    }
    char why[160];
    snprintf(why, sizeof(why), "this instance is now %s (global epoch %llu, primary %s)",
             rg_inst_mode_name(m), (unsigned long long)st->epoch, st->primary);
    mrd_node_restart(w->node, why);
}

/* Opens the volume at epoch_min or above and takes writes once it is open: the writer of
 * the primary region (from the start, or promoted in place from standing by). */
static int writer_activate(writer *w, uint64_t epoch_min, mrd_msg *msg)
{
    mrd_node *node = w->node;
    w->state = WR_RECOVERING;
    w->why[0] = '\0';
    uv_timer_init(node->loop, &w->beat);
    w->beat.data = w;
    w->beat_ms = mrd_now_ms();
    uv_timer_start(&w->beat, on_beat, WRITER_BEAT_MS, WRITER_BEAT_MS);
    w->beat_running = true;
    w->max_pages = (uint64_t)QUORUM_PGS_MAX * (node->topo.pg_size_bytes / node->topo.page_size);
    register_metrics(w);
    int rc = wr_backlog_init(&w->backlog, WRITER_BACKLOG_RECORDS, 64u << 20);
    if (rc == 0) rc = sqlx_start(node->loop, &w->sqlx, msg);
    if (rc != 0) return rc;
    wr_store_init(w);
    vol_config cfg = {.topo = &node->topo,
                      .region = node->self->region,
                      .certs_dir = node->certs_dir,
                      .cert_id = node->self->id,
                      .pg_count_min = QUORUM_PGS_MAX,
                      .epoch_min = epoch_min};
    rc = vol_open(node->loop, &cfg, &volume_cbs, w, &w->vol, msg);
    if (rc == 0) rc = wr_rpo_start(w, msg);
    if (rc != 0) return rc;
    mrd_node_route(node, "GET", "/v1/log", wr_stream_route, w);
    return 0;
}

/* A secondary region's writer opens nothing: its region's agent writes the volume. */
static void writer_standby(writer *w)
{
    mrd_node *node = w->node;
    w->state = WR_STANDBY;
    snprintf(w->why, sizeof(w->why),
             "region %s is a secondary: its volume follows region %s through the agent; "
             "write through the primary region",
             w->region->name, node->topo.regions[node->topo.primary_region].name);
    MRD_INFO("writer_standby", "region=%s", w->region->name);
}

int writer_start(mrd_node *node, const writer_options *o, writer **out, mrd_msg *msg)
{
    writer *w = calloc(1, sizeof(*w));
    if (w == NULL) return mrd_fail(msg, MRD_ENOMEM, "writer: out of memory");
    w->node = node;
    w->region = &node->topo.regions[node->self->region];
    w->mode = o->mode;
    w->global_epoch = o->global_epoch;
    w->confirm = o->confirm;
    w->confirm_ud = o->confirm_ud;
    w->m_refused = mrd_metric_add(&node->metrics, MRD_COUNTER, "meridian_fenced_requests_total",
                                  NULL, "Writes refused: standing by, draining or fenced.");
    mrd_node_route(node, "POST", "/v1/sql", wr_sql_route, w);
    node->status_fn = status_fn;
    node->status_ud = w;
    node->req_close_fn = req_close_fn;
    node->req_close_ud = w;
    node->stop_fn = stop_fn;
    node->stop_ud = w;
    node->ready_fn = ready_fn;
    node->ready_ud = w;
    *out = w;
    if (o->mode == RG_INST_STANDBY) {
        writer_standby(w);
        return 0;
    }
    return writer_activate(w, o->epoch_min, msg);
}
