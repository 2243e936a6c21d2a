/*
 * Background materialization: records at or below both the SCL and the VDL
 * a writer reported are applied to their pages' newest versions in the page
 * files, by a worker, and synced; then their payloads leave memory. One job
 * at a time; it copies the payloads it needs, so nothing the loop does while
 * it runs (a fence, say) can pull memory from under it.
 *
 * Why the VDL bounds it: a record at or below a VDL is committed, so no fence
 * can void it (a fence's truncation point is a recovered VCL, at or above
 * every VDL ever reported), and readers read at or below VDLs, so pages move
 * past their read points only as VDLs do.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage_int.h"

#define MAT_RETRY_MS 5000u /* after a failed job */

typedef struct {
    uint32_t pg;
    int fd; /* -1: the worker opens (creates) the page file */
    uint64_t upto;
} mat_pg;

typedef struct {
    uint32_t pg;
    uint64_t page;
    uint64_t lsn;
    size_t off; /* payload at arena + off */
    uint32_t len;
} mat_rec;

struct storage_mat {
    uv_work_t work;
    storage *s;
    mat_pg pgs[QUORUM_PGS_MAX];
    uint32_t n_pgs;
    mat_rec *recs;
    uint32_t n_recs;
    mrd_buf arena;
    uint64_t pages; /* worker: pages written */
    int rc;         /* worker */
    mrd_msg msg;    /* worker */
};

static int mat_rec_cmp(const void *a, const void *b)
{
    const mat_rec *x = a, *y = b;
    if (x->pg != y->pg) return x->pg < y->pg ? -1 : 1;
    if (x->page != y->page) return x->page < y->page ? -1 : 1;
    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

static void mat_free(storage_mat *m)
{
    free(m->recs);
    mrd_buf_free(&m->arena);
    free(m);
}

/* ---- worker ---------------------------------------------------------------------------- */

/* One page: newest slot + its records, written to the other slot. */
static int mat_page(storage_mat *m, int fd, const mat_rec *recs, uint32_t n, uint8_t *buf)
{
    storage *s = m->s;
    size_t slot = STORAGE_SLOT_BYTES(s->page_size);
    uint64_t off = STORAGE_PAGE_FILE_HEADER_BYTES + (recs[0].page % s->pages_per_pg) * 2 * slot;
    memset(buf, 0, 2 * slot);
    if (pread(fd, buf, 2 * slot, (off_t)off) < 0)
        return mrd_fail(&m->msg, MRD_EIO, "page %" PRIu64 ": read: %s", recs[0].page,
                        strerror(errno));
    uint64_t l[2] = {0, 0};
    const uint8_t *d[2];
    bool ok[2];
    for (int i = 0; i < 2; i++)
        ok[i] = storage_slot_decode(buf + i * slot, s->page_size, &l[i], &d[i], NULL) == 1;
    int best = ok[0] && (!ok[1] || l[0] >= l[1]) ? 0 : ok[1] ? 1 : -1;
    uint8_t *page = buf + 2 * slot; /* scratch after the two slots */
    uint64_t lsn = best >= 0 ? l[best] : 0;
    if (best >= 0)
        memcpy(page, d[best], s->page_size);
    else
        memset(page, 0, s->page_size);
    storage_page_rec pr[64];
    for (uint32_t i = 0; i < n; i += 64) {
        uint32_t k = n - i < 64 ? n - i : 64;
        for (uint32_t j = 0; j < k; j++)
            pr[j] = (storage_page_rec){recs[i + j].lsn, m->arena.data + recs[i + j].off,
                                       recs[i + j].len};
        int rc = storage_page_apply(page, s->page_size, &lsn, pr, k, &m->msg);
        if (rc != 0) return rc;
    }
    int target = best == 0 ? 1 : 0;
    storage_slot_encode(buf + target * slot, s->page_size, lsn, page);
    if (pwrite(fd, buf + target * slot, slot, (off_t)(off + target * slot)) != (ssize_t)slot)
        return mrd_fail(&m->msg, MRD_EIO, "page %" PRIu64 ": write: %s", recs[0].page,
                        strerror(errno));
    m->pages++;
    return 0;
}

static int mat_run_pg(storage_mat *m, mat_pg *mp, const mat_rec *recs, uint32_t n, uint8_t *buf)
{
    if (mp->fd < 0) {
        int rc = storage_page_file_open(m->s, mp->pg, true, &mp->fd, &m->msg);
        if (rc != 0) return rc;
    }
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1;
        while (j < n && recs[j].page == recs[i].page)
            j++;
        int rc = mat_page(m, mp->fd, recs + i, j - i, buf);
        if (rc != 0) return rc;
        i = j;
    }
    if (fdatasync(mp->fd) != 0)
        return mrd_fail(&m->msg, MRD_EIO, "pg %" PRIu32 ": page file fdatasync: %s", mp->pg,
                        strerror(errno));
    return 0;
}

static void mat_work(uv_work_t *w)
{
    storage_mat *m = mrd_container_of(w, storage_mat, work);
    uint8_t *buf = malloc(3 * STORAGE_SLOT_BYTES(m->s->page_size));
    m->rc = buf ? 0 : mrd_fail(&m->msg, MRD_ENOMEM, "materialize: out of memory");
    uint32_t i = 0;
    for (uint32_t k = 0; m->rc == 0 && k < m->n_pgs; k++) {
        uint32_t j = i;
        while (j < m->n_recs && m->recs[j].pg == m->pgs[k].pg)
            j++;
        m->rc = mat_run_pg(m, &m->pgs[k], m->recs + i, j - i, buf);
        i = j;
    }
    free(buf);
}

/* ---- loop ------------------------------------------------------------------------------ */

static void mat_done(uv_work_t *w, int status)
{
    storage_mat *m = mrd_container_of(w, storage_mat, work);
    storage *s = m->s;
    s->mat = NULL;
    for (uint32_t k = 0; k < m->n_pgs; k++) {
        mat_pg *mp = &m->pgs[k];
        if (mp->fd >= 0 && s->page_fd[mp->pg] < 0) s->page_fd[mp->pg] = mp->fd;
        if (m->rc != 0 || s->pages_stale[mp->pg]) continue;
        stp_materialized(s->pgs[mp->pg], mp->upto);
    }
    if (m->rc != 0) {
        MRD_ERROR("materialize_failed", "reason=\"%s\" retry_ms=%u", m->msg.text, MAT_RETRY_MS);
        s->mat_next_ms = mrd_now_ms() + MAT_RETRY_MS;
    } else {
        MRD_DEBUG("materialized", "records=%" PRIu32 " pages=%" PRIu64, m->n_recs, m->pages);
    }
    mat_free(m);
    if (s->stopping)
        storage_maybe_free(s);
    else
        storage_reset_step(s);
}

/* Copies the plan of one PG into the job; false when the budget is spent. */
static bool mat_plan_pg(storage *s, storage_mat *m, uint32_t pg, const stp_rec **plan,
                        uint32_t *recs_left, uint64_t *bytes_left)
{
    stp *p = s->pgs[pg];
    if (p == NULL || s->pages_stale[pg] || *recs_left == 0) return *recs_left > 0;
    uint64_t upto;
    uint32_t n = stp_materialize_plan(p, s->vdl, *recs_left, *bytes_left, plan, &upto);
    if (n == 0) return true;
    for (uint32_t i = 0; i < n; i++) {
        m->recs[m->n_recs++] = (mat_rec){.pg = pg,
                                         .page = plan[i]->page,
                                         .lsn = plan[i]->lsn,
                                         .off = m->arena.len,
                                         .len = plan[i]->len};
        mrd_buf_append(&m->arena, plan[i]->payload, plan[i]->len); /* reserved */
        *bytes_left = *bytes_left > plan[i]->len ? *bytes_left - plan[i]->len : 0;
    }
    *recs_left -= n;
    m->pgs[m->n_pgs++] = (mat_pg){.pg = pg, .fd = s->page_fd[pg], .upto = upto};
    return *recs_left > 0 && *bytes_left > 0;
}

static storage_mat *mat_build(storage *s)
{
    storage_mat *m = calloc(1, sizeof(*m));
    const stp_rec **plan = malloc(STORAGE_MATERIALIZE_RECORDS_MAX * sizeof(*plan));
    if (m != NULL) m->recs = malloc(STORAGE_MATERIALIZE_RECORDS_MAX * sizeof(*m->recs));
    if (m != NULL) mrd_buf_init(&m->arena);
    if (m == NULL || plan == NULL || m->recs == NULL ||
        mrd_buf_reserve(&m->arena, STORAGE_MATERIALIZE_BYTES_MAX + WIRE_FRAME_BYTES_MAX) != 0) {
        free(plan);
        if (m != NULL) mat_free(m);
        return NULL;
    }
    m->s = s;
    uint32_t recs_left = STORAGE_MATERIALIZE_RECORDS_MAX;
    uint64_t bytes_left = STORAGE_MATERIALIZE_BYTES_MAX;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
        if (!mat_plan_pg(s, m, pg, plan, &recs_left, &bytes_left)) break;
    free(plan);
    if (m->n_recs == 0) {
        mat_free(m);
        return NULL;
    }
    qsort(m->recs, m->n_recs, sizeof(m->recs[0]), mat_rec_cmp);
    return m;
}

void storage_materialize_tick(storage *s, uint64_t now_ms)
{
    if (s->mat != NULL || s->stopping || storage_resetting(s) || now_ms < s->mat_next_ms ||
        s->vdl == 0)
        return;
    s->mat_next_ms = now_ms + STORAGE_MATERIALIZE_MS;
    storage_mat *m = mat_build(s);
    if (m == NULL) return;
    s->mat = m;
    if (uv_queue_work(s->loop, &m->work, mat_work, mat_done) != 0) {
        mat_work(&m->work);
        mat_done(&m->work, 0);
    }
}
