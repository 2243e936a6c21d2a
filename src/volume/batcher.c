/*
 * Pending sends, grouped per (segment, PG) so that one append request
 * carries a run of one PG's records in LSN order. qw emits SENDs mostly in
 * ascending LSN order (new records); re-sends after a reconnect or a tick
 * may go back, so a queue inserts in order and ignores duplicates.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"

int vol_batcher_init(vol_batcher *b, uint32_t pg_count, uint32_t pending_max, mrd_msg *msg)
{
    memset(b, 0, sizeof(*b));
    if (pg_count == 0 || pg_count > QUORUM_PGS_MAX || pending_max == 0)
        return mrd_fail(msg, MRD_EINVAL, "batcher: pg_count %u or pending_max %u out of range",
                        pg_count, pending_max);
    b->pg_count = pg_count;
    b->pending_max = pending_max;
    return 0;
}

void vol_batcher_close(vol_batcher *b)
{
    for (uint8_t s = 0; s < QUORUM_SEGMENTS; s++)
        for (uint32_t p = 0; p < QUORUM_PGS_MAX; p++)
            free(b->q[s][p].lsns);
    memset(b, 0, sizeof(*b));
}

/* First index with lsns[i] >= lsn. */
static uint32_t lower_bound(const vol_lsnq *q, uint64_t lsn)
{
    uint32_t lo = 0, hi = q->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (q->lsns[mid] < lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int vol_batcher_add(vol_batcher *b, uint8_t seg, uint32_t pg, uint64_t lsn)
{
    if (seg >= QUORUM_SEGMENTS || pg >= b->pg_count || lsn == 0) return MRD_EINVAL;
    vol_lsnq *q = &b->q[seg][pg];
    uint32_t at = q->n > 0 && q->lsns[q->n - 1] < lsn ? q->n : lower_bound(q, lsn);
    if (at < q->n && q->lsns[at] == lsn) return 0;
    if (b->pending[seg] >= b->pending_max) return MRD_EBUSY;
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 64;
        uint64_t *grown = realloc(q->lsns, (size_t)cap * sizeof(*grown));
        if (grown == NULL) return MRD_ENOMEM;
        q->lsns = grown;
        q->cap = cap;
    }
    memmove(&q->lsns[at + 1], &q->lsns[at], (size_t)(q->n - at) * sizeof(q->lsns[0]));
    q->lsns[at] = lsn;
    q->n++;
    b->pending[seg]++;
    return 0;
}

void vol_batcher_drop(vol_batcher *b, uint8_t seg)
{
    if (seg >= QUORUM_SEGMENTS) return;
    for (uint32_t p = 0; p < b->pg_count; p++)
        b->q[seg][p].n = 0;
    b->pending[seg] = 0;
}

uint32_t vol_batcher_pending(const vol_batcher *b, uint8_t seg)
{
    return seg < QUORUM_SEGMENTS ? b->pending[seg] : 0;
}

bool vol_batcher_next_pg(vol_batcher *b, uint8_t seg, uint32_t *pg)
{
    if (seg >= QUORUM_SEGMENTS || b->pending[seg] == 0) return false;
    for (uint32_t i = 0; i < b->pg_count; i++) {
        uint32_t p = (b->cursor[seg] + i) % b->pg_count;
        if (b->q[seg][p].n > 0) {
            b->cursor[seg] = (p + 1) % b->pg_count;
            *pg = p;
            return true;
        }
    }
    return false;
}

uint32_t vol_batcher_take(vol_batcher *b, uint8_t seg, uint32_t pg, uint32_t records_max,
                          uint32_t bytes_max, vol_size_fn size, void *ctx, uint64_t *out)
{
    if (seg >= QUORUM_SEGMENTS || pg >= b->pg_count) return 0;
    vol_lsnq *q = &b->q[seg][pg];
    uint32_t used = 0, taken = 0;
    uint64_t bytes = 0;
    while (used < q->n && taken < records_max) {
        uint32_t sz = size(ctx, q->lsns[used]);
        if (sz == 0) { /* no longer kept: the segment gets it from its peers */
            used++;
            continue;
        }
        if (taken > 0 && bytes + sz > bytes_max) break;
        bytes += sz;
        out[taken++] = q->lsns[used++];
    }
    if (used == 0) return 0;
    memmove(q->lsns, &q->lsns[used], (size_t)(q->n - used) * sizeof(q->lsns[0]));
    q->n -= used;
    b->pending[seg] -= used;
    return taken;
}
