/*
 * Recovery reports as they arrive from a storage node (GET /v1/report):
 * header fields and a body of record headers become one quorum_report, with
 * every value checked; and how many PGs a recovery must cover.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"

static int header_u64(vol_header_fn hdr, void *ctx, const char *name, uint64_t *out, mrd_msg *msg)
{
    const char *v = hdr(ctx, name);
    if (v == NULL) return mrd_fail(msg, MRD_EPROTO, "report: header %s missing", name);
    if (vol_parse_u64(v, out) != 0)
        return mrd_fail(msg, MRD_EPARSE, "report: header %s: '%.40s' is not an unsigned integer",
                        name, v);
    return 0;
}

static int read_fields(vol_header_fn hdr, void *ctx, quorum_report *out, mrd_msg *msg)
{
    int rc = header_u64(hdr, ctx, "meridian-epoch", &out->epoch, msg);
    if (rc == 0) rc = header_u64(hdr, ctx, "meridian-scl", &out->scl, msg);
    if (rc == 0) rc = header_u64(hdr, ctx, "meridian-highest", &out->highest, msg);
    if (rc == 0) rc = header_u64(hdr, ctx, "meridian-floor-head", &out->floor_head, msg);
    if (rc == 0) rc = header_u64(hdr, ctx, "meridian-floor-cpl", &out->floor_cpl, msg);
    out->vdl = 0; /* optional: nodes that forget nothing need not say */
    if (rc == 0 && hdr(ctx, "meridian-vdl") != NULL)
        rc = header_u64(hdr, ctx, "meridian-vdl", &out->vdl, msg);
    if (rc != 0) return rc;
    if (out->scl > out->highest || out->floor_cpl > out->floor_head)
        return mrd_fail(msg, MRD_EPROTO,
                        "report: scl %llu above highest %llu or floor cpl above floor head",
                        (unsigned long long)out->scl, (unsigned long long)out->highest);
    return 0;
}

/* Appends the records of one batch to hdrs (growing it), checking PG and order. */
static int add_batch(const wire_frame *f, uint32_t pg, uint32_t hdrs_max, quorum_hdr **hdrs,
                     uint32_t *n, uint32_t *cap, mrd_msg *msg)
{
    wire_batch batch;
    int rc = wire_batch_decode(f->data, f->len, &batch, msg);
    if (rc != 0) return rc;
    if (*n + batch.count > hdrs_max)
        return mrd_fail(msg, MRD_ETOOBIG, "report: more than %u record headers", hdrs_max);
    if (*n + batch.count > *cap) {
        uint32_t grown_cap = *cap ? *cap : 256;
        while (grown_cap < *n + batch.count)
            grown_cap *= 2;
        quorum_hdr *grown = realloc(*hdrs, (size_t)grown_cap * sizeof(*grown));
        if (grown == NULL) return mrd_fail(msg, MRD_ENOMEM, "report: out of memory");
        *hdrs = grown;
        *cap = grown_cap;
    }
    wire_batch_iter it;
    wire_batch_iter_init(&it, &batch);
    wire_record rec;
    while ((rc = wire_batch_iter_next(&it, &rec)) == 1) {
        if (rec.pg != pg)
            return mrd_fail(msg, MRD_EPROTO, "report for pg %u holds lsn %llu of pg %u", pg,
                            (unsigned long long)rec.lsn, rec.pg);
        if (*n > 0 && (*hdrs)[*n - 1].lsn >= rec.lsn)
            return mrd_fail(msg, MRD_EPROTO, "report: lsn %llu out of order",
                            (unsigned long long)rec.lsn);
        (*hdrs)[(*n)++] = (quorum_hdr){.lsn = rec.lsn,
                                       .prev_lsn = rec.prev_lsn,
                                       .vol_prev_lsn = rec.vol_prev_lsn,
                                       .epoch = rec.epoch,
                                       .is_cpl = (rec.flags & WIRE_REC_CPL) != 0};
    }
    return rc < 0 ? mrd_fail(msg, rc, "report: batch changed while read") : 0;
}

int vol_report_decode(uint32_t pg, uint8_t seg, vol_header_fn hdr, void *ctx, const uint8_t *body,
                      size_t len, uint32_t hdrs_max, quorum_report *out, mrd_msg *msg)
{
    memset(out, 0, sizeof(*out));
    out->pg = pg;
    out->seg = seg;
    int rc = read_fields(hdr, ctx, out, msg);
    if (rc != 0) return rc;
    quorum_hdr *hdrs = NULL;
    uint32_t n = 0, cap = 0;
    wire_frame_reader r;
    wire_frame_reader_init(&r, 0);
    size_t at = 0;
    while (rc == 0 && at < len) {
        size_t used = 0;
        wire_frame f;
        int got = wire_frame_reader_feed(&r, body + at, len - at, &used, &f, msg);
        at += used;
        if (got < 0) rc = got;
        if (got == 1) rc = add_batch(&f, pg, hdrs_max, &hdrs, &n, &cap, msg);
    }
    if (rc == 0 && wire_frame_reader_pending(&r) != 0)
        rc = mrd_fail(msg, MRD_ETRUNC, "report: body ends inside a frame");
    wire_frame_reader_close(&r);
    if (rc == 0 && n > 0 && hdrs[n - 1].lsn > out->highest)
        rc = mrd_fail(msg, MRD_EPROTO, "report: lsn %llu above highest %llu",
                      (unsigned long long)hdrs[n - 1].lsn, (unsigned long long)out->highest);
    if (rc != 0) {
        free(hdrs);
        return rc;
    }
    out->hdrs = hdrs;
    out->n_hdrs = n;
    return 0;
}

uint32_t vol_recover_pg_count(const quorum_report *reports, uint32_t n, uint32_t pg_min)
{
    uint8_t seen[QUORUM_PGS_MAX] = {0};
    uint32_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        const quorum_report *r = &reports[i];
        if (r->pg >= QUORUM_PGS_MAX || r->seg >= QUORUM_SEGMENTS) continue;
        seen[r->pg] |= (uint8_t)(1u << r->seg);
        if (r->highest > 0 && r->pg + 1 > used) used = r->pg + 1;
    }
    uint32_t count = used;
    for (uint32_t p = 0; p < QUORUM_PGS_MAX; p++)
        if (seen[p] != (1u << QUORUM_SEGMENTS) - 1) count = QUORUM_PGS_MAX;
    if (count < pg_min) count = pg_min;
    if (count == 0) count = 1;
    return count > QUORUM_PGS_MAX ? QUORUM_PGS_MAX : count;
}

void vol_recover_empty_pgs(const quorum_report *reports, uint32_t n, uint32_t pg_count,
                           bool empty[QUORUM_PGS_MAX])
{
    uint8_t seen[QUORUM_PGS_MAX] = {0}, holding[QUORUM_PGS_MAX] = {0};
    for (uint32_t i = 0; i < n; i++) {
        const quorum_report *r = &reports[i];
        if (r->pg >= QUORUM_PGS_MAX || r->seg >= QUORUM_SEGMENTS) continue;
        seen[r->pg] |= (uint8_t)(1u << r->seg);
        if (r->highest > 0 || r->n_hdrs > 0) holding[r->pg] = 1;
    }
    for (uint32_t p = 0; p < QUORUM_PGS_MAX; p++)
        empty[p] = p < pg_count && seen[p] == (1u << QUORUM_SEGMENTS) - 1 && !holding[p];
}

int vol_recover_mask_empty(quorum_report *reports, uint32_t n, const bool empty[QUORUM_PGS_MAX],
                           uint64_t floor)
{
    for (uint32_t i = 0; i < n; i++) {
        quorum_report *r = &reports[i];
        if (r->pg >= QUORUM_PGS_MAX || !empty[r->pg]) continue;
        if (r->n_hdrs > 0 || r->floor_head > 0 || r->highest > 0) return MRD_ESTATE;
        r->scl = r->highest = floor;
    }
    return 0;
}
