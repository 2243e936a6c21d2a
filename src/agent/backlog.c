/*
 * The agent's recent records: a ring by LSN, bounded in records and bytes
 * ("full" at keep records; the ring has room beyond for records received
 * ahead of their durability mark, which are never dropped).
 * LSNs increase; they may skip where a primary writer restarted, so a
 * record is found by binary search, not by offset.
 */
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"

int ag_backlog_init(ag_backlog *b, uint32_t keep, uint64_t bytes_max)
{
    memset(b, 0, sizeof(*b));
    uint32_t cap = keep + AG_UNCOMMITTED_MAX;
    b->recs = calloc(cap, sizeof(*b->recs));
    if (b->recs == NULL) return MRD_ENOMEM;
    b->cap = cap;
    b->keep = keep;
    b->bytes_max = bytes_max;
    return 0;
}

void ag_backlog_free(ag_backlog *b)
{
    while (b->count > 0)
        ag_backlog_drop_oldest(b);
    free(b->recs);
    b->recs = NULL;
}

ag_rec *ag_backlog_at(const ag_backlog *b, uint32_t i)
{
    return &b->recs[(b->head + i) % b->cap];
}

bool ag_backlog_full(const ag_backlog *b)
{
    return b->count >= b->keep || b->bytes > b->bytes_max;
}

void ag_backlog_drop_oldest(ag_backlog *b)
{
    ag_rec *r = ag_backlog_at(b, 0);
    b->bytes -= r->enc.len;
    mrd_buf_free(&r->enc);
    b->head = (b->head + 1) % b->cap;
    b->count--;
}

int ag_backlog_put(ag_backlog *b, uint64_t lsn, bool cpl, const uint8_t *enc, size_t len)
{
    if (b->count > 0 && lsn <= ag_backlog_at(b, b->count - 1)->lsn) return MRD_EINVAL;
    if (b->count == b->cap) return MRD_EBUSY;
    ag_rec *r = ag_backlog_at(b, b->count);
    r->lsn = lsn;
    r->cpl = cpl;
    mrd_buf_init(&r->enc);
    if (mrd_buf_append(&r->enc, enc, len) != 0) return MRD_ENOMEM;
    b->count++;
    b->bytes += len;
    return 0;
}

uint32_t ag_backlog_after(const ag_backlog *b, uint64_t x)
{
    uint32_t lo = 0, hi = b->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ag_backlog_at(b, mid)->lsn > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void ag_backlog_truncate_after(ag_backlog *b, uint64_t lsn)
{
    while (b->count > 0 && ag_backlog_at(b, b->count - 1)->lsn > lsn) {
        ag_rec *r = ag_backlog_at(b, b->count - 1);
        b->bytes -= r->enc.len;
        mrd_buf_free(&r->enc);
        b->count--;
    }
}
