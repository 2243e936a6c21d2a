/*
 * The writer's page store: what the VFS asks on the SQL thread, done on the
 * loop through the volume client. A read fetches the writer's current version
 * of a page (cached, or read from storage at VDL); a commit writes its pages
 * in order as log records, the last one the transaction's CPL, and returns
 * the CPL's LSN at once: durability is waited for when answering.
 */
#include <stdlib.h>
#include <string.h>

#include "writer_int.h"

/* ---- reads ------------------------------------------------------------------------------ */

typedef struct {
    sqlx_call call;
    writer *w;
    uint64_t page;
    uint8_t *out;
    mrd_msg *msg;
} read_op;

static void fetched(vol *v, int status, uint64_t page, const uint8_t *data, const char *msg,
                    void *ud)
{
    read_op *op = ud;
    if (status == 0)
        memcpy(op->out, data, vol_page_size(v));
    else
        mrd_fail(op->msg, status, "page %llu: %s", (unsigned long long)page, msg);
    sqlx_call_done(&op->call, status);
}

static void read_on_loop(sqlx_call *call)
{
    read_op *op = call->ud;
    if (op->w->vol == NULL || op->w->stopping) {
        sqlx_call_done(call, mrd_fail(op->msg, MRD_ECLOSED, "the writer is stopping"));
        return;
    }
    int rc = vol_fetch(op->w->vol, op->page, fetched, op);
    if (rc != 0)
        sqlx_call_done(call, mrd_fail(op->msg, rc, "page %llu: cannot read: %s",
                                      (unsigned long long)op->page, mrd_strerror(rc)));
}

static int ps_read(mrd_pagestore *ps, uint64_t page, uint64_t read_point, uint8_t *out,
                   mrd_msg *msg)
{
    writer *w = ps->ud;
    if (page >= w->max_pages) { /* past the volume: SQLite never wrote it */
        memset(out, 0, ps->page_size);
        return 0;
    }
    read_op op = {.call = {.fn = read_on_loop}, .w = w, .page = page, .out = out, .msg = msg};
    op.call.ud = &op;
    return sqlx_call_loop(w->sqlx, &op.call);
}

/* ---- commits ---------------------------------------------------------------------------- */

typedef struct wr_commit {
    sqlx_call call;
    writer *w;
    const mrd_vfs_page *pages;
    uint32_t n, next; /* pages, and the next one to write */
    uint64_t lsn;     /* the CPL's LSN once written */
    mrd_msg *msg;
    struct wr_commit *blocked_next;
} wr_commit;

static void commit_step(wr_commit *c);

static void commit_fetched(vol *v, int status, uint64_t page, const uint8_t *data,
                           const char *msg, void *ud)
{
    wr_commit *c = ud;
    if (status != 0) {
        sqlx_call_done(&c->call, mrd_fail(c->msg, status, "page %llu: cannot read its base: %s",
                                          (unsigned long long)page, msg));
        return;
    }
    commit_step(c);
}

/* Writes the pages from c->next on; waits (fetch, or room) where it must. */
static void commit_step(wr_commit *c)
{
    writer *w = c->w;
    while (c->next < c->n) {
        if (w->vol == NULL || (w->state != WR_READY && w->state != WR_OPENING)) {
            sqlx_call_done(&c->call, mrd_fail(c->msg, MRD_ESTATE, "the writer cannot write: %s",
                                              w->why[0] ? w->why : "stopping"));
            return;
        }
        const mrd_vfs_page *p = &c->pages[c->next];
        uint64_t lsn;
        mrd_msg m = {{0}};
        int rc = vol_write(w->vol, p->page, p->data, c->next + 1 == c->n, &lsn, &m);
        if (rc == MRD_ENOTFOUND) { /* its base is not cached: fetch it, then write */
            rc = vol_fetch(w->vol, p->page, commit_fetched, c);
            if (rc == 0) return;
        }
        if (rc == MRD_EBUSY) { /* too much in flight: wait for VDL to move */
            c->blocked_next = w->blocked;
            w->blocked = c;
            return;
        }
        if (rc != 0) {
            sqlx_call_done(&c->call, mrd_fail(c->msg, rc, "%s", m.text));
            return;
        }
        mrd_metric_inc(w->m_records, 1);
        c->lsn = lsn;
        c->next++;
    }
    mrd_metric_inc(w->m_commits, 1);
    sqlx_call_done(&c->call, 0);
}

void wr_store_on_vdl(writer *w)
{
    wr_commit *c = w->blocked;
    w->blocked = NULL;
    while (c != NULL) {
        wr_commit *next = c->blocked_next;
        commit_step(c);
        c = next;
    }
}

static void commit_on_loop(sqlx_call *call)
{
    commit_step(call->ud);
}

static int ps_commit(mrd_pagestore *ps, const mrd_vfs_page *pages, uint32_t n, uint64_t *lsn,
                     mrd_msg *msg)
{
    writer *w = ps->ud;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i].page >= w->max_pages)
            return mrd_fail(msg, MRD_ETOOBIG, "page %llu is past the volume's %llu pages",
                            (unsigned long long)pages[i].page, (unsigned long long)w->max_pages);
    wr_commit c = {.call = {.fn = commit_on_loop}, .w = w, .pages = pages, .n = n, .msg = msg};
    c.call.ud = &c;
    int rc = sqlx_call_loop(w->sqlx, &c.call);
    if (rc == 0) {
        *lsn = c.lsn;
        __atomic_store_n(&w->commit_lsn_seen, c.lsn, __ATOMIC_RELEASE);
    }
    return rc;
}

void wr_store_init(writer *w)
{
    w->ps = (mrd_pagestore){.ud = w,
                            .page_size = w->node->topo.page_size,
                            .writable = true,
                            .read = ps_read,
                            .commit = ps_commit};
}
