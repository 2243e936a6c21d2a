/*
 * Recovery at a read quorum: where a restarting writer may resume. Round one
 * finds a floor below which every record is known held; round two walks the
 * volume back-link chain upwards from the floor through the union of the
 * headers the reporters hold. quorum.h explains why the answer is safe.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/quorum.h"

typedef struct {
    quorum_hdr h;
    uint32_t pg;
} rec_hdr;

static int check_quorum(uint32_t pg_count, const quorum_report *reports, uint32_t n,
                        uint64_t pgcl[QUORUM_PGS_MAX], uint64_t *vdl_max, mrd_msg *msg)
{
    if (pg_count == 0 || pg_count > QUORUM_PGS_MAX)
        return mrd_fail(msg, MRD_EINVAL, "recovery: pg_count %u outside 1..%u", pg_count,
                        QUORUM_PGS_MAX);
    uint8_t seen[QUORUM_PGS_MAX] = {0};
    memset(pgcl, 0, QUORUM_PGS_MAX * sizeof(pgcl[0]));
    *vdl_max = 0;
    for (uint32_t i = 0; i < n; i++) {
        const quorum_report *r = &reports[i];
        if (r->pg >= pg_count || r->seg >= QUORUM_SEGMENTS || r->scl > r->highest ||
            r->floor_cpl > r->floor_head)
            return mrd_fail(msg, MRD_EINVAL, "recovery: report %u (pg %u seg %u) is malformed", i,
                            r->pg, r->seg);
        seen[r->pg] |= (uint8_t)(1u << r->seg);
        if (r->scl > pgcl[r->pg]) pgcl[r->pg] = r->scl;
        if (r->vdl > *vdl_max) *vdl_max = r->vdl;
    }
    for (uint32_t p = 0; p < pg_count; p++) {
        unsigned count = 0;
        for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
            count += (seen[p] >> s) & 1u;
        if (count < QUORUM_READ)
            return mrd_fail(msg, MRD_EBUSY, "recovery: pg %u has %u of %u segments, needs %u", p,
                            count, QUORUM_SEGMENTS, QUORUM_READ);
    }
    return 0;
}

int quorum_recover_floor(uint32_t pg_count, const quorum_report *reports, uint32_t n,
                         uint64_t *floor, mrd_msg *msg)
{
    uint64_t pgcl[QUORUM_PGS_MAX], vdl_max;
    int rc = check_quorum(pg_count, reports, n, pgcl, &vdl_max, msg);
    if (rc) return rc;
    uint64_t low = QUORUM_LSN_MAX;
    for (uint32_t p = 0; p < pg_count; p++)
        if (pgcl[p] < low) low = pgcl[p];
    /* A reported VDL is as good a floor (quorum.h), and no reporter forgot above it. */
    *floor = low > vdl_max ? low : vdl_max;
    return 0;
}

static int cmp_hdr(const void *a, const void *b)
{
    const rec_hdr *x = a, *y = b;
    if (x->h.lsn != y->h.lsn) return x->h.lsn < y->h.lsn ? -1 : 1;
    if (x->h.epoch != y->h.epoch) return x->h.epoch > y->h.epoch ? -1 : 1;
    return 0;
}

/* All reported headers above floor, with their PG, sorted by LSN (higher epoch first). */
static int gather(uint64_t floor, const quorum_report *reports, uint32_t n, rec_hdr **out,
                  size_t *count, mrd_msg *msg)
{
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += reports[i].n_hdrs;
    if (total > QUORUM_RECOVER_HDRS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "recovery: %zu headers, at most %u", total,
                        QUORUM_RECOVER_HDRS_MAX);
    rec_hdr *all = calloc(total ? total : 1, sizeof(*all));
    if (!all) return mrd_fail(msg, MRD_ENOMEM, "recovery: out of memory");
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < reports[i].n_hdrs; j++) {
            const quorum_hdr *h = &reports[i].hdrs[j];
            if (h->lsn <= floor || h->prev_lsn >= h->lsn || h->vol_prev_lsn >= h->lsn) {
                free(all);
                return mrd_fail(msg, MRD_EINVAL, "recovery: pg %u seg %u: bad header lsn %llu",
                                reports[i].pg, reports[i].seg, (unsigned long long)h->lsn);
            }
            all[k++] = (rec_hdr){.h = *h, .pg = reports[i].pg};
        }
    }
    qsort(all, total, sizeof(*all), cmp_hdr);
    *out = all;
    *count = total;
    return 0;
}

/* What the reporters know at and below floor. */
static void start_at_floor(const quorum_report *reports, uint32_t n, quorum_recovery *out)
{
    for (uint32_t i = 0; i < n; i++) {
        const quorum_report *r = &reports[i];
        if (r->floor_head > out->pg_head[r->pg]) out->pg_head[r->pg] = r->floor_head;
        if (r->floor_cpl > out->vdl) out->vdl = r->floor_cpl;
        if (r->epoch > out->epoch_max) out->epoch_max = r->epoch;
    }
}

/*
 * Follows vol_prev_lsn links upwards from floor; stops at the first missing
 * record. The restart point is the last CPL on the way, not the end of the
 * chain: records after it belong to a transaction whose commit is not
 * durable, which no client was told about and which must not show in pages.
 * The PG heads are the ones at that CPL.
 */
static int walk(const rec_hdr *all, size_t count, uint64_t floor, quorum_recovery *out,
                mrd_msg *msg)
{
    uint64_t cur = floor, cur_epoch = 0;
    uint64_t heads_at_cpl[QUORUM_PGS_MAX];
    bool cpl_known = out->vdl == floor; /* the floor itself is a CPL (or the very start) */
    memcpy(heads_at_cpl, out->pg_head, sizeof(heads_at_cpl));
    for (size_t i = 0; i < count; i++) {
        const rec_hdr *r = &all[i];
        if (r->h.epoch > out->epoch_max) out->epoch_max = r->h.epoch;
        if (r->h.lsn <= cur) continue;      /* another copy of a walked record */
        if (r->h.vol_prev_lsn > cur) break; /* its predecessor is held by no reporter */
        if (r->h.vol_prev_lsn < cur || r->h.epoch < cur_epoch) continue; /* not on the chain */
        if (r->h.prev_lsn != out->pg_head[r->pg])
            return mrd_fail(msg, MRD_EINVAL,
                            "recovery: pg %u lsn %llu links to %llu, the pg's head is %llu", r->pg,
                            (unsigned long long)r->h.lsn, (unsigned long long)r->h.prev_lsn,
                            (unsigned long long)out->pg_head[r->pg]);
        cur = r->h.lsn;
        cur_epoch = r->h.epoch;
        out->pg_head[r->pg] = cur;
        if (r->h.is_cpl) {
            out->vdl = cur;
            memcpy(heads_at_cpl, out->pg_head, sizeof(heads_at_cpl));
            cpl_known = true;
        }
    }
    if (!cpl_known) { /* the last CPL lies below floor: its heads need reports taken there */
        out->again = true;
        return 0;
    }
    out->vcl = out->vdl;
    memcpy(out->pg_head, heads_at_cpl, sizeof(heads_at_cpl));
    for (size_t i = 0; i < count; i++)
        if (all[i].h.lsn > out->vcl && all[i].h.lsn > out->lost_max) out->lost_max = all[i].h.lsn;
    return 0;
}

int quorum_recover(uint32_t pg_count, uint64_t floor, const quorum_report *reports, uint32_t n,
                   quorum_recovery *out, mrd_msg *msg)
{
    uint64_t pgcl[QUORUM_PGS_MAX], vdl_max;
    memset(out, 0, sizeof(*out));
    int rc = check_quorum(pg_count, reports, n, pgcl, &vdl_max, msg);
    if (rc) return rc;
    for (uint32_t p = 0; p < pg_count && floor > vdl_max; p++)
        if (pgcl[p] < floor)
            return mrd_fail(msg, MRD_EINVAL, "recovery: floor %llu above pg %u's SCL %llu",
                            (unsigned long long)floor, p, (unsigned long long)pgcl[p]);
    rec_hdr *all = NULL;
    size_t count = 0;
    rc = gather(floor, reports, n, &all, &count, msg);
    if (rc) return rc;
    out->pg_count = pg_count;
    start_at_floor(reports, n, out);
    rc = walk(all, count, floor, out, msg);
    free(all);
    if (rc) return rc;
    if (out->again) return 0;
    if (out->vdl > out->vcl) return mrd_fail(msg, MRD_EINVAL, "recovery: CPL above VCL");
    return 0;
}
