/*
 * POST /v1/sql on the writer: the request runs on the SQL thread; the answer
 * leaves once VDL has passed the LSN it depends on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writer_int.h"

typedef struct sql_job {
    writer *w;
    h2_req *req; /* NULL once the client's stream closed */
    mrd_sql_request sql;
    mrd_buf out;       /* the "results" member */
    mrd_sql_error err;
    int rc;
    uint64_t lsn;      /* what the answer depends on */
    uint64_t started_ms;
    bool wrote; /* it changed something (known only when the RPO applies) */
    struct sql_job *next;
} sql_job;

/*
 * Group commit. Requests wait in w->pending; one group job at a time takes up
 * to WRITER_GROUP_MAX of them and runs them in one SQLite transaction, each
 * under its own savepoint (a failing request undoes only itself). One commit
 * then covers them all: page 1 and shared pages travel once, and every
 * request of the group is answered when VDL passes that commit's LSN.
 */
typedef struct {
    sqlx_job job;
    writer *w;
    sql_job *head; /* the group, in arrival order */
    uint32_t n;
} group_job;

/* The error body is the node's own ({"error":{"code","message"}}). */
static void respond_error(h2_req *req, const mrd_sql_error *err)
{
    mrd_node_error(req, err->http_status, err->code, err->message);
}

static void job_free(sql_job *j)
{
    if (j->req != NULL) h2_req_set_ud(j->req, NULL);
    mrd_sql_request_free(&j->sql);
    mrd_buf_free(&j->out);
    free(j);
}

static void answer(sql_job *j)
{
    writer *w = j->w;
    if (j->req == NULL) return job_free(j);
    char lsn[24];
    snprintf(lsn, sizeof(lsn), "%llu", (unsigned long long)j->lsn);
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_buf_printf(&body, "{");
    mrd_buf_append(&body, j->out.data, j->out.len);
    mrd_buf_printf(&body, ",\"lsn\":%s,\"region\":", lsn);
    mrd_json_quote(&body, w->region->name);
    mrd_buf_printf(&body, ",\"instance\":");
    mrd_json_quote(&body, w->node->self->id);
    mrd_buf_printf(&body, "}\n");
    h2_header hdrs[4] = {{"content-type", "application/json"},
                         {"meridian-lsn", lsn},
                         {"meridian-region", w->region->name},
                         {"meridian-instance", w->node->self->id}};
    h2_req_respond(j->req, 200, hdrs, 4, body.data, body.len);
    mrd_buf_free(&body);
    mrd_metric_observe(w->m_durable_seconds, (double)(mrd_now_ms() - j->started_ms) / 1000.0);
    job_free(j);
}

static void durable(vol *v, uint64_t lsn, void *ud)
{
    sql_job *j = ud;
    writer *w = j->w;
    /* durable here, not acknowledged: the RPO holds it; or this writer was stopped and may
     * have been deposed meanwhile: it holds every answer until the region says it is not */
    if ((j->wrote && wr_rpo_blocked(w)) || wr_stalled(w)) {
        j->next = w->held;
        w->held = j;
        w->n_held++;
        return;
    }
    answer(j);
}

void wr_held_drop(writer *w)
{
    while (w->held != NULL) {
        sql_job *j = w->held;
        w->held = j->next;
        w->n_held--;
        h2_req *req = j->req;
        j->req = NULL;
        if (req != NULL) {
            h2_req_set_ud(req, NULL); /* its close hook finds nothing of it */
            h2_req_reset(req, 0x2 /* INTERNAL_ERROR: the outcome is unknown */);
        }
        job_free(j);
    }
}

void wr_rpo_release(writer *w)
{
    if (wr_rpo_blocked(w) || w->stalled) return;
    while (w->held != NULL) {
        sql_job *j = w->held;
        w->held = j->next;
        w->n_held--;
        answer(j);
    }
}

/* SQL thread: with the RPO exceeded, a write is refused before it runs. */
static bool refused_for_rpo(writer *w, sql_job *j)
{
    if (!wr_rpo_applies(w)) return false;
    bool readonly = true;
    if (mrd_sql_request_readonly(w->db, &j->sql, &readonly, &j->err) != 0) return false;
    j->wrote = !readonly;
    if (readonly || !wr_rpo_blocked(w)) return false;
    j->rc = mrd_sql_fail(&j->err, 503, "rpo_exceeded",
                         "no secondary region is within rpo_seconds=%u of this primary: writes "
                         "are refused (nothing of this one was applied) until one is; "
                         "see the writer's status",
                         w->node->topo.rpo_seconds);
    return true;
}

/* SQL thread: the group in one transaction, one savepoint per request. */
static void group_work(sqlx_job *job)
{
    group_job *g = job->ud;
    writer *w = g->w;
    bool open = false;
    for (sql_job *j = g->head; j != NULL; j = j->next) {
        if (!open && sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            j->rc = mrd_sql_fail(&j->err, 503, "unavailable", "cannot begin a transaction: %s",
                                 sqlite3_errmsg(w->db));
            continue;
        }
        open = true;
        if (refused_for_rpo(w, j)) continue;
        j->rc = mrd_sql_run_in_group(w->db, &j->sql, &j->out, &j->err);
        if (j->rc != 0 && sqlite3_get_autocommit(w->db)) {
            /* SQLite rolled the whole transaction back: the group's earlier requests too. */
            for (sql_job *k = g->head; k != j; k = k->next)
                if (k->rc == 0)
                    k->rc = mrd_sql_fail(&k->err, 503, "retry",
                                         "rolled back with another request of its commit "
                                         "group (%s): nothing of it was applied; send it again",
                                         j->err.code);
            open = false;
        }
    }
    if (open && sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        for (sql_job *j = g->head; j != NULL; j = j->next)
            if (j->rc == 0)
                j->rc = mrd_sql_fail(&j->err, 503, "unavailable", "commit failed: %s (%s)",
                                     sqlite3_errmsg(w->db), mrd_vfs_last_error(w->vfs));
        if (!sqlite3_get_autocommit(w->db)) sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    }
    /* Reads depend on every commit made so far; writes on this one, the latest. */
    uint64_t lsn = __atomic_load_n(&w->commit_lsn_seen, __ATOMIC_ACQUIRE);
    for (sql_job *j = g->head; j != NULL; j = j->next)
        j->lsn = lsn;
}

static void group_submit(writer *w);

/* Loop: each request waits for VDL to pass its LSN, or is answered its error. */
static void group_done(sqlx_job *job, bool cancelled)
{
    group_job *g = job->ud;
    writer *w = g->w;
    for (sql_job *j = g->head, *next; j != NULL; j = next) {
        next = j->next;
        if (cancelled || j->rc != 0) {
            if (cancelled) mrd_sql_fail(&j->err, 503, "unavailable", "the writer is stopping");
            if (!cancelled && strcmp(j->err.code, "rpo_exceeded") == 0)
                mrd_metric_inc(w->m_rpo_refusals, 1);
            if (j->req != NULL) respond_error(j->req, &j->err);
            mrd_metric_inc(w->m_sql_errors, 1);
            job_free(j);
        } else if (w->vol == NULL || vol_wait(w->vol, j->lsn, durable, j) != 0) {
            mrd_sql_fail(&j->err, 503, "unavailable", "the writer cannot make commits durable: %s",
                         w->why[0] ? w->why : "stopping");
            if (j->req != NULL) respond_error(j->req, &j->err);
            job_free(j);
        }
    }
    free(g);
    w->group_running = false;
    if (!cancelled) group_submit(w);
}

/* Loop: starts a group with what waits, unless one runs. */
static void group_submit(writer *w)
{
    if (w->group_running || w->pending == NULL || w->state != WR_READY) return;
    group_job *g = calloc(1, sizeof(*g));
    if (g == NULL) return; /* retried at the next request */
    g->w = w;
    sql_job **tail = &g->head;
    while (w->pending != NULL && g->n < WRITER_GROUP_MAX) {
        sql_job *j = w->pending;
        w->pending = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
        g->n++;
        w->n_pending--;
    }
    if (w->pending == NULL) w->pending_tail = NULL;
    g->job = (sqlx_job){.work = group_work, .done = group_done, .ud = g};
    if (sqlx_submit(w->sqlx, &g->job) != 0) {
        g->job.done(&g->job, true);
        return;
    }
    w->group_running = true;
}

/* A writer still recovering the volume or opening the database: it holds requests. */
static bool opening(const writer *w)
{
    return w->state == WR_RECOVERING || w->state == WR_OPENING;
}

/* What a writer that is not ready says of itself after "the writer is ", and the code of
 * the 503 that refuses a request for it. */
static const char *state_phrase(const writer *w, const char **code)
{
    *code = "unavailable";
    switch (w->state) {
    case WR_RECOVERING:
        return "recovering the volume";
    case WR_OPENING:
        return "opening the database";
    case WR_FENCED:
        *code = "fenced";
        return "fenced by a newer writer";
    case WR_STANDBY:
        *code = "secondary_region";
        return "standing by";
    default:
        return "failed";
    }
}

void wr_sql_route(mrd_node *node, h2_req *req, void *ud)
{
    writer *w = ud;
    mrd_metric_inc(w->m_sql, 1);
    mrd_sql_error err;
    /* draining: new writes are refused, also while a writer replaced mid-drain opens */
    if (w->mode == RG_INST_DRAINED && (w->state == WR_READY || opening(w))) {
        mrd_metric_inc(w->m_refused, 1);
        mrd_sql_fail(&err, 503, "draining",
                     "region %s is handing the primary role over (switchover): "
                     "retry through the global writer endpoint",
                     w->region->name);
        return respond_error(req, &err);
    }
    /* a writer still recovering or opening holds the request (up to WRITER_OPEN_HOLD_MS,
     * wr_sql_hold_expire) and runs it the moment it is ready: a switchover or a writer
     * failover costs the clients no retry round */
    if (w->state != WR_READY && !opening(w)) {
        mrd_metric_inc(w->m_refused, 1);
        const char *code, *phrase = state_phrase(w, &code);
        mrd_sql_fail(&err, 503, code, "the writer is %s%s%s", phrase, w->why[0] ? ": " : "",
                     w->why);
        return respond_error(req, &err);
    }
    sql_job *j = calloc(1, sizeof(*j));
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
    j->w = w;
    j->req = req;
    j->started_ms = mrd_now_ms();
    mrd_buf_init(&j->out);
    if (w->n_pending >= WRITER_SQL_QUEUE_MAX) {
        mrd_sql_fail(&err, 503, "busy", "%d requests are waiting for the SQL thread",
                     WRITER_SQL_QUEUE_MAX);
        respond_error(req, &err);
        j->req = NULL;
        return job_free(j);
    }
    h2_req_set_ud(req, j);
    if (w->pending_tail != NULL)
        w->pending_tail->next = j;
    else
        w->pending = j;
    w->pending_tail = j;
    w->n_pending++;
    group_submit(w);
}

/* Answers every request still waiting (none of them ran): 503 unavailable, why. */
static void fail_pending(writer *w, const char *code, const char *why)
{
    while (w->pending != NULL) {
        sql_job *j = w->pending;
        w->pending = j->next;
        mrd_sql_fail(&j->err, 503, code, "%s; nothing was changed, send it again", why);
        if (j->req != NULL) respond_error(j->req, &j->err);
        job_free(j);
    }
    w->pending_tail = NULL;
    w->n_pending = 0;
}

void wr_sql_drop_pending(writer *w)
{
    fail_pending(w, "unavailable", "the writer is stopping");
}

void wr_sql_hold_expire(writer *w, uint64_t now_ms)
{
    if (w->state == WR_READY || w->pending == NULL) return;
    const char *code, *phrase = state_phrase(w, &code);
    char why[MRD_MSG_MAX];
    if (opening(w)) {
        if (now_ms - w->pending->started_ms < WRITER_OPEN_HOLD_MS) return;
        snprintf(why, sizeof(why), "the writer is still %s after %u ms", phrase,
                 WRITER_OPEN_HOLD_MS);
    } else { /* it will not open: failed or fenced meanwhile */
        snprintf(why, sizeof(why), "the writer is %s%s%.300s", phrase, w->why[0] ? ": " : "",
                 w->why);
    }
    mrd_metric_inc(w->m_refused, w->n_pending);
    fail_pending(w, code, why);
}

void wr_sql_closed(h2_req *req)
{
    sql_job *j = h2_req_ud(req);
    j->req = NULL;
    h2_req_set_ud(req, NULL);
}

/* ---- opening SQLite on the volume (a job on the SQL thread) -------------------------- */

typedef struct {
    sqlx_job job;
    writer *w;
    int rc;
    mrd_msg msg;
} open_job;

static void open_work(sqlx_job *job)
{
    open_job *o = job->ud;
    writer *w = o->w;
    o->rc = mrd_vfs_new(&w->ps, &w->vfs, &o->msg);
    if (o->rc == 0) o->rc = mrd_vfs_open(w->vfs, &w->db, &o->msg);
    if (o->rc != 0) return;
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%llu", (unsigned long long)w->max_pages);
    sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    /* Touch the schema now: the first request should not pay for reading it. */
    if (sqlite3_exec(w->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK)
        o->rc = mrd_fail(&o->msg, MRD_EIO, "the database on the volume cannot be read: %s (%s)",
                         sqlite3_errmsg(w->db), mrd_vfs_last_error(w->vfs));
}

static void open_done(sqlx_job *job, bool cancelled)
{
    open_job *o = job->ud;
    writer *w = o->w;
    if (!cancelled && o->rc == 0 && w->state == WR_OPENING) {
        w->state = WR_READY;
        MRD_INFO("sql_ready", "epoch=%llu vdl=%llu held=%u",
                 (unsigned long long)vol_info_get(w->vol)->epoch,
                 (unsigned long long)vol_vdl(w->vol), w->n_pending);
        group_submit(w); /* what arrived while it opened */
    } else if (!cancelled && o->rc != 0) {
        w->state = WR_FAILED;
        snprintf(w->why, sizeof(w->why), "%s", o->msg.text);
        MRD_ERROR("sql_open_failed", "reason=\"%s\"", o->msg.text);
        wr_sql_hold_expire(w, mrd_now_ms());
    }
    free(o);
}

void wr_sql_open(writer *w)
{
    open_job *o = calloc(1, sizeof(*o));
    if (o == NULL) return;
    o->w = w;
    o->job = (sqlx_job){.work = open_work, .done = open_done, .ud = o};
    if (sqlx_submit(w->sqlx, &o->job) != 0) free(o);
}
