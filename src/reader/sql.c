/*
 * POST /v1/sql on a reader: read-only, at the reader's read point. A
 * request asking for "session" (after_lsn) or "strong" (the writer's VDL as
 * the reader last heard it) consistency waits, up to its timeout_ms, until
 * the applied VDL reaches that LSN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "reader_int.h"

typedef struct rd_wait {
    sqlx_job job;
    reader *r;
    h2_req *req;
    mrd_sql_request sql;
    mrd_buf out;
    mrd_sql_error err;
    int rc;
    uint64_t lsn;       /* the read point the answer was read at */
    uint64_t wait_lsn;  /* wait for the applied VDL to reach this first */
    uint64_t deadline_ms;
    mrd_buf vdl_body; /* strong: the writer's status answer */
    struct rd_wait *next;
} rd_job;

/* The error body is the node's own ({"error":{"code","message"}}). */
static void respond_error(h2_req *req, const mrd_sql_error *err)
{
    mrd_node_error(req, err->http_status, err->code, err->message);
}

static void job_free(rd_job *j)
{
    if (j->req != NULL) h2_req_set_ud(j->req, NULL);
    mrd_buf_free(&j->vdl_body);
    mrd_sql_request_free(&j->sql);
    mrd_buf_free(&j->out);
    free(j);
}

static void job_work(sqlx_job *job)
{
    rd_job *j = job->ud;
    j->rc = mrd_sql_run(j->r->db, &j->sql, true, &j->out, &j->err);
    j->lsn = mrd_vfs_read_point(j->r->vfs);
}

static void job_done(sqlx_job *job, bool cancelled)
{
    rd_job *j = job->ud;
    reader *r = j->r;
    mrd_metric_inc(r->m_applied, rd_core_apply(r->core, mrd_now_ms())); /* unpinned: catch up */
    if (j->req == NULL) return job_free(j);
    if (cancelled) mrd_sql_fail(&j->err, 503, "unavailable", "the reader is stopping");
    if (cancelled || j->rc != 0) {
        mrd_metric_inc(r->m_sql_errors, 1);
        respond_error(j->req, &j->err);
        return job_free(j);
    }
    rd_stats st;
    rd_core_stats(r->core, mrd_now_ms(), &st);
    char lsn[24], lag[24];
    snprintf(lsn, sizeof(lsn), "%llu", (unsigned long long)j->lsn);
    snprintf(lag, sizeof(lag), "%llu", (unsigned long long)st.lag_ms);
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_buf_printf(&body, "{");
    mrd_buf_append(&body, j->out.data, j->out.len);
    mrd_buf_printf(&body, ",\"lsn\":%s,\"lag_ms\":%s,\"region\":", lsn, lag);
    mrd_json_quote(&body, r->region->name);
    mrd_buf_printf(&body, ",\"instance\":");
    mrd_json_quote(&body, r->node->self->id);
    mrd_buf_printf(&body, "}\n");
    h2_header hdrs[5] = {{"content-type", "application/json"},
                         {"meridian-lsn", lsn},
                         {"meridian-lag-ms", lag},
                         {"meridian-region", r->region->name},
                         {"meridian-instance", r->node->self->id}};
    h2_req_respond(j->req, 200, hdrs, 5, body.data, body.len);
    mrd_buf_free(&body);
    job_free(j);
}

static void submit(rd_job *j)
{
    mrd_sql_error err;
    j->job = (sqlx_job){.work = job_work, .done = job_done, .ud = j};
    if (sqlx_submit(j->r->sqlx, &j->job) != 0) {
        mrd_sql_fail(&err, 503, "busy", "too many requests are waiting for the SQL thread");
        if (j->req != NULL) respond_error(j->req, &err);
        job_free(j);
    }
}

/* Requests waiting for the read point: go when it is there, fail at their deadline. */
void rd_sql_tick(reader *r, uint64_t now)
{
    rd_stats st;
    rd_core_stats(r->core, now, &st);
    for (rd_job **p = &r->waits; *p != NULL;) {
        rd_job *j = *p;
        bool ready = st.applied_vdl >= j->wait_lsn;
        if (!ready && now < j->deadline_ms && j->req != NULL) {
            p = &j->next;
            continue;
        }
        *p = j->next;
        if (j->req == NULL) {
            job_free(j);
        } else if (ready) {
            submit(j);
        } else {
            mrd_sql_fail(&j->err, 504, "lagging",
                         "this reader's read point %llu did not reach lsn %llu within %llu ms "
                         "(lag %llu ms)",
                         (unsigned long long)st.applied_vdl, (unsigned long long)j->wait_lsn,
                         (unsigned long long)j->sql.timeout_ms, (unsigned long long)st.lag_ms);
            respond_error(j->req, &j->err);
            job_free(j);
        }
    }
}

/* Runs now if the read point is there, else waits for it (rd_sql_tick). */
static void wait_or_submit(rd_job *j)
{
    reader *r = j->r;
    rd_stats st;
    uint64_t now = mrd_now_ms();
    rd_core_stats(r->core, now, &st);
    if (st.applied_vdl >= j->wait_lsn) return submit(j);
    j->deadline_ms = now + j->sql.timeout_ms;
    j->next = r->waits;
    r->waits = j;
}

/* "strong": the writer's VDL now, asked on the log stream's connection. */
static void vdl_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    rd_job *j = ud;
    if (j->vdl_body.len + len <= 65536) mrd_buf_append(&j->vdl_body, data, len);
}

static void vdl_close(h2_call *call, int error, void *ud)
{
    rd_job *j = ud;
    if (j->req == NULL) return job_free(j);
    mrd_json_doc d;
    uint64_t vdl = 0;
    bool ok = error == 0 &&
              mrd_json_parse((const char *)j->vdl_body.data, j->vdl_body.len, &d, NULL) == 0;
    if (ok) {
        ok = mrd_json_get_u64(&d, mrd_json_root(&d), "vdl", &vdl);
        mrd_json_free(&d);
    }
    if (!ok) {
        mrd_sql_fail(&j->err, 503, "unavailable",
                     "strong consistency needs the primary writer's VDL, and %s did not "
                     "give it: use eventual or session consistency, or the cluster endpoint",
                     j->r->primary_writer->id);
        respond_error(j->req, &j->err);
        return job_free(j);
    }
    j->wait_lsn = vdl;
    wait_or_submit(j);
}

static const h2_call_cbs vdl_cbs = {.on_data = vdl_data, .on_close = vdl_close};

/*
 * The primary writer's VDL: in the primary region on the log stream's
 * connection; in a secondary, on a connection of its own to the primary's
 * writer (kept open by rd_primary_tick).
 */
static void ask_writer_vdl(rd_job *j)
{
    reader *r = j->r;
    h2_client *c = r->writer_node == r->primary_writer ? r->wc : r->pc;
    if (c == NULL || !h2_client_connected(c) ||
        h2_client_request(c, "GET", "/v1/status", NULL, 0, NULL, 0, true, &vdl_cbs, j, NULL) != 0)
        vdl_close(NULL, MRD_ECONN, j);
}

static void pc_connect(h2_client *c, int status, void *ud)
{
    if (status != 0) ((reader *)ud)->pc_closing = true;
}

static void pc_disconnect(h2_client *c, int error, void *ud)
{
    ((reader *)ud)->pc_closing = true;
}

static const h2_client_cbs pc_cbs = {.on_connect = pc_connect, .on_disconnect = pc_disconnect};

void rd_primary_tick(reader *r, uint64_t now)
{
    if (r->writer_node == r->primary_writer || r->stopping) return;
    if (r->pc_closing && r->pc != NULL) {
        h2_client_close(r->pc);
        r->pc = NULL;
    }
    r->pc_closing = false;
    if (r->pc == NULL) {
        h2_client_config cc = {.host = r->primary_writer->addr.host,
                               .port = r->primary_writer->addr.port,
                               .tls = r->client_tls};
        if (h2_client_connect(r->node->loop, &cc, &pc_cbs, r, &r->pc, NULL) != 0) r->pc = NULL;
    }
}

void rd_sql_route(mrd_node *node, h2_req *req, void *ud)
{
    reader *r = ud;
    mrd_sql_error err;
    mrd_metric_inc(r->m_sql, 1);
    if (!r->sql_ready) {
        mrd_sql_fail(&err, 503, "unavailable", "the reader is starting");
        return respond_error(req, &err);
    }
    rd_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        mrd_sql_fail(&err, 503, "busy", "out of memory");
        return respond_error(req, &err);
    }
    size_t len;
    const uint8_t *body = h2_req_body(req, &len);
    if (mrd_sql_request_parse((const char *)body, len, &j->sql, &j->err) != 0) {
        respond_error(req, &j->err);
        return job_free(j);
    }
    j->r = r;
    j->req = req;
    mrd_buf_init(&j->out);
    mrd_buf_init(&j->vdl_body);
    h2_req_set_ud(req, j);
    if (j->sql.consistency == MRD_SQL_STRONG) return ask_writer_vdl(j);
    if (j->sql.consistency == MRD_SQL_SESSION) j->wait_lsn = j->sql.after_lsn;
    wait_or_submit(j);
}

void rd_sql_closed(h2_req *req)
{
    rd_job *j = h2_req_ud(req);
    j->req = NULL;
    h2_req_set_ud(req, NULL);
}

/* ---- opening SQLite --------------------------------------------------------------------- */

typedef struct {
    sqlx_job job;
    reader *r;
    int rc;
    mrd_msg msg;
} open_job;

static void open_work(sqlx_job *job)
{
    open_job *o = job->ud;
    reader *r = o->r;
    o->rc = mrd_vfs_new(&r->ps, &r->vfs, &o->msg);
    if (o->rc == 0) o->rc = mrd_vfs_open(r->vfs, &r->db, &o->msg);
}

static void open_done(sqlx_job *job, bool cancelled)
{
    open_job *o = job->ud;
    if (!cancelled && o->rc == 0)
        o->r->sql_ready = true;
    else if (!cancelled)
        MRD_ERROR("sql_open_failed", "reason=\"%s\"", o->msg.text);
    free(o);
}

void rd_sql_open(reader *r)
{
    open_job *o = calloc(1, sizeof(*o));
    if (o == NULL) return;
    o->r = r;
    o->job = (sqlx_job){.work = open_work, .done = open_done, .ud = o};
    if (sqlx_submit(r->sqlx, &o->job) != 0) free(o);
}
