/* The reader role's life (include/meridian/reader.h): start, tick, status, stop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader_int.h"

static void on_tick(uv_timer_t *t)
{
    reader *r = t->data;
    uint64_t now = mrd_now_ms();
    rd_stream_tick(r, now);
    rd_nodes_tick(r, now);
    rd_reads_tick(r, now);
    rd_sql_tick(r, now);
    rd_primary_tick(r, now);
    rd_stats st;
    rd_core_stats(r->core, now, &st);
    mrd_metric_set(r->m_lag_ms, (double)st.lag_ms);
    mrd_metric_set(r->m_lag_lsn, (double)st.lag_lsn);
}

static void status_fn(mrd_node *node, mrd_buf *out, void *ud)
{
    reader *r = ud;
    rd_stats st;
    rd_core_stats(r->core, mrd_now_ms(), &st);
    mrd_buf_printf(out,
                   ",\"reader_state\":\"%s\",\"vdl\":%llu,\"writer_vdl\":%llu,\"lag_ms\":%llu,"
                   "\"lag_lsn\":%llu,\"epoch\":%llu,\"pages_held\":%llu,\"records_applied\":%llu,"
                   "\"records_dropped\":%llu,\"stream_resets\":%llu,\"received_lsn\":%llu,"
                   "\"read_transactions\":%u,\"page_reads\":%u",
                   !r->sql_ready ? "starting" : st.stream_up ? "streaming" : "stream_down",
                   (unsigned long long)st.applied_vdl, (unsigned long long)st.writer_vdl,
                   (unsigned long long)st.lag_ms, (unsigned long long)st.lag_lsn,
                   (unsigned long long)st.epoch, (unsigned long long)st.pages_held,
                   (unsigned long long)st.records_applied, (unsigned long long)st.records_dropped,
                   (unsigned long long)st.resets, (unsigned long long)st.received, st.pins,
                   r->n_reads);
    rd_reads_status(r, mrd_now_ms(), out);
    if (!st.stream_up && r->stream_why[0]) {
        mrd_buf_printf(out, ",\"stream_down_reason\":");
        mrd_json_quote(out, r->stream_why);
    }
}

static bool ready_fn(mrd_node *node, void *ud)
{
    reader *r = ud;
    rd_stats st;
    rd_core_stats(r->core, mrd_now_ms(), &st);
    return r->sql_ready && st.stream_up;
}

static uint64_t lag_fn(mrd_node *node, void *ud)
{
    reader *r = ud;
    rd_stats st;
    rd_core_stats(r->core, mrd_now_ms(), &st);
    return st.lag_ms;
}

static void req_close_fn(mrd_node *node, h2_req *req, void *ud)
{
    if (h2_req_ud(req) != NULL) rd_sql_closed(req);
}

static void sqlx_stopped(void *ud)
{
    reader *r = ud;
    r->sqlx = NULL;
    if (r->db != NULL) sqlite3_close(r->db);
    r->db = NULL;
    mrd_vfs_free(r->vfs);
    r->vfs = NULL;
    rd_stream_stop(r);
    rd_nodes_stop(r);
    if (r->pc != NULL) h2_client_close(r->pc);
    r->pc = NULL;
}

static void stop_fn(mrd_node *node, void *ud)
{
    reader *r = ud;
    r->stopping = true;
    uv_timer_stop(&r->tick);
    uv_close((uv_handle_t *)&r->tick, NULL);
    /* Reads fail so that the SQL thread can finish its job: those waiting now, those in
     * flight when their calls close with the connections. */
    rd_reads_stop(r);
    rd_nodes_stop(r);
    sqlx_stop(r->sqlx, sqlx_stopped, r);
}

static void register_metrics(reader *r)
{
    mrd_metrics *m = &r->node->metrics;
    r->m_sql = mrd_metric_add(m, MRD_COUNTER, "meridian_sql_requests_total", NULL,
                              "SQL requests received.");
    r->m_sql_errors = mrd_metric_add(m, MRD_COUNTER, "meridian_sql_errors_total", NULL,
                                     "SQL requests answered with an error.");
    r->m_lag_ms = mrd_metric_add(m, MRD_GAUGE, "meridian_reader_lag_ms", NULL,
                                 "Age of the oldest durability mark not yet applied.");
    r->m_lag_lsn = mrd_metric_add(m, MRD_GAUGE, "meridian_reader_lag_lsn", NULL,
                                  "The writer's VDL minus the applied VDL.");
    r->m_storage_reads = mrd_metric_add(m, MRD_COUNTER, "meridian_reader_storage_reads_total",
                                        NULL, "Pages read from storage nodes.");
    r->m_resets = mrd_metric_add(m, MRD_COUNTER, "meridian_reader_stream_starts_total", NULL,
                                 "Times the log stream (re)started from the writer's VDL.");
    r->m_applied = mrd_metric_add(m, MRD_COUNTER, "meridian_reader_records_applied_total", NULL,
                                  "Log records applied from the writer's stream.");
}

/* Where the log comes from: the region's writer in the primary region, else its agent. */
static const topo_node *log_source(const mrd_node *node, const topo_region *region)
{
    return node->self->region == node->topo.primary_region ? &region->instances[region->writer]
                                                           : &region->agent;
}

void reader_region_changed(reader *r, const rg_state *st)
{
    rg_inst_mode m = rg_inst_mode_of(st, r->node->self->id);
    if (m != RG_INST_READER) {
        char why[128];
        snprintf(why, sizeof(why), "this instance is now region %s's writer (%s)",
                 r->region->name, rg_inst_mode_name(m));
        mrd_node_restart(r->node, why);
        return;
    }
    const topo_region *primary = &r->node->topo.regions[r->node->topo.primary_region];
    const topo_node *pw = &primary->instances[primary->writer];
    const topo_node *src = log_source(r->node, r->region);
    if (pw != r->primary_writer) {
        r->primary_writer = pw;
        r->pc_closing = true; /* rd_primary_tick connects to the new one */
    }
    if (src != r->writer_node) {
        MRD_INFO("log_source_moved", "from=%s to=%s epoch=%llu primary=%s", r->writer_node->id,
                 src->id, (unsigned long long)st->epoch, st->primary);
        r->writer_node = src;
        rd_stream_restart(r, "the log's source moved");
    }
}

int reader_start(mrd_node *node, reader **out, mrd_msg *msg)
{
    reader *r = calloc(1, sizeof(*r));
    if (r == NULL) return mrd_fail(msg, MRD_ENOMEM, "reader: out of memory");
    r->node = node;
    r->region = &node->topo.regions[node->self->region];
    /* a secondary region's log comes from its agent, in the writer's format */
    const topo_region *primary = &node->topo.regions[node->topo.primary_region];
    r->primary_writer = &primary->instances[primary->writer];
    r->writer_node = log_source(node, r->region);
    r->pages_per_pg = node->topo.pg_size_bytes / node->topo.page_size;
    mrd_buf_init(&r->scratch);
    wire_frame_reader_init(&r->fr, 0);
    register_metrics(r);
    int rc = mrd_node_client_tls(node, &r->client_tls, msg);
    if (rc == 0) rc = rd_core_new(node->topo.page_size, r->pages_per_pg, 0, &r->core, msg);
    if (rc == 0) rc = sqlx_start(node->loop, &r->sqlx, msg);
    if (rc != 0) return rc;
    rd_pages_init(r);
    rd_sql_open(r);
    uv_timer_init(node->loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, 0, RD_TICK_MS);
    mrd_node_route(node, "POST", "/v1/sql", rd_sql_route, r);
    node->status_fn = status_fn;
    node->status_ud = r;
    node->req_close_fn = req_close_fn;
    node->req_close_ud = r;
    node->stop_fn = stop_fn;
    node->stop_ud = r;
    node->ready_fn = ready_fn;
    node->ready_ud = r;
    node->lag_fn = lag_fn;
    node->lag_ud = r;
    *out = r;
    return 0;
}
