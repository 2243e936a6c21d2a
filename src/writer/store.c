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

/* ---- the SQL thread's page copies ------------------------------------------------------- */

/*
 * The writer is the only one changing the volume, so its last version of a
 * page is the page: keeping a copy on the SQL thread saves a trip through the
 * loop for every page SQLite reads again (page 1's change counter at every
 * transaction, the file size). Only the SQL thread touches it. Eviction is a
 * clock hand over the slots; the volume client still holds what it needs.
 */
#define WR_PCACHE_PAGES 8192u

typedef struct {
    uint64_t page;
    int32_t next;
    bool live;
} pc_slot;

struct wr_pcache {
    uint32_t page_size, hand, nbuckets;
    pc_slot slots[WR_PCACHE_PAGES];
    int32_t *buckets;
    uint8_t *data;
};

static uint32_t pc_bucket(const wr_pcache *c, uint64_t page)
{
    return (uint32_t)((page * 0x9e3779b97f4a7c15ull) >> 40) & (c->nbuckets - 1);
}

static int32_t pc_find(const wr_pcache *c, uint64_t page)
{
    for (int32_t i = c->buckets[pc_bucket(c, page)]; i >= 0; i = c->slots[i].next)
        if (c->slots[i].page == page) return i;
    return -1;
}

static void pc_put(wr_pcache *c, uint64_t page, const uint8_t *data)
{
    int32_t i = pc_find(c, page);
    if (i < 0) {
        i = (int32_t)c->hand;
        c->hand = (c->hand + 1) % WR_PCACHE_PAGES;
        pc_slot *s = &c->slots[i];
        if (s->live) { /* unlink the page it held */
            int32_t *p = &c->buckets[pc_bucket(c, s->page)];
            while (*p != i)
                p = &c->slots[*p].next;
            *p = s->next;
        }
        uint32_t b = pc_bucket(c, page);
        *s = (pc_slot){.page = page, .next = c->buckets[b], .live = true};
        c->buckets[b] = i;
    }
    memcpy(c->data + (size_t)i * c->page_size, data, c->page_size);
}

static bool pc_get(const wr_pcache *c, uint64_t page, uint8_t *out)
{
    int32_t i = pc_find(c, page);
    if (i >= 0) memcpy(out, c->data + (size_t)i * c->page_size, c->page_size);
    return i >= 0;
}

static wr_pcache *pc_new(uint32_t page_size)
{
    wr_pcache *c = calloc(1, sizeof(*c));
    if (c == NULL) return NULL;
    c->page_size = page_size;
    c->nbuckets = 2 * WR_PCACHE_PAGES;
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    c->data = malloc((size_t)WR_PCACHE_PAGES * page_size);
    if (c->buckets == NULL || c->data == NULL) {
        free(c->buckets);
        free(c->data);
        free(c);
        return NULL;
    }
    memset(c->buckets, 0xff, c->nbuckets * sizeof(*c->buckets));
    return c;
}

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
    if (w->pcache != NULL && pc_get(w->pcache, page, out)) return 0;
    read_op op = {.call = {.fn = read_on_loop}, .w = w, .page = page, .out = out, .msg = msg};
    op.call.ud = &op;
    int rc = sqlx_call_loop(w->sqlx, &op.call);
    if (rc == 0 && w->pcache != NULL) pc_put(w->pcache, page, out);
    return rc;
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
    /* What was written is the page now, written or not: a failed commit leaves the
     * writer unable to go on (the volume client failed), so no copy can mislead. */
    for (uint32_t i = 0; i < n && w->pcache != NULL; i++)
        pc_put(w->pcache, pages[i].page, pages[i].data);
    if (rc == 0) {
        *lsn = c.lsn;
        __atomic_store_n(&w->commit_lsn_seen, c.lsn, __ATOMIC_RELEASE);
    }
    return rc;
}

void wr_store_init(writer *w)
{
    w->pcache = pc_new(w->node->topo.page_size); /* NULL: every read goes through the loop */
    w->ps = (mrd_pagestore){.ud = w,
                            .page_size = w->node->topo.page_size,
                            .writable = true,
                            .read = ps_read,
                            .commit = ps_commit};
}
