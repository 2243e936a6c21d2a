/*
 * Lag accounting at the primary (include/meridian/agent.h), with nothing
 * but the primary's own clock: every durability mark of the writer becomes
 * one entry (its VDL, the record bytes committed so far, when it arrived,
 * the rolling checksum there). A secondary's lag is the age of the first
 * entry above what it acknowledged durable. When the ring is full the two
 * oldest entries merge, keeping the older time: lag can only be
 * over-stated, never hidden.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/agent.h"

static ag_mark *mark_at(const ag_lag *l, uint32_t i)
{
    return &l->marks[(l->head + i) % l->cap];
}

int ag_lag_init(ag_lag *l, uint32_t cap, uint64_t base_lsn, uint32_t base_crc, bool crc_known,
                uint64_t now_ms, mrd_msg *msg)
{
    memset(l, 0, sizeof(*l));
    l->cap = cap ? cap : AG_LAG_MARKS_MAX;
    if (l->cap < 2) l->cap = 2;
    l->marks = calloc(l->cap, sizeof(*l->marks));
    if (l->marks == NULL) return mrd_fail(msg, MRD_ENOMEM, "lag: out of memory");
    l->base_lsn = l->committed_lsn = base_lsn;
    l->base_ms = now_ms;
    l->base_crc = l->crc = base_crc;
    l->crc_known = crc_known;
    return 0;
}

void ag_lag_free(ag_lag *l)
{
    free(l->marks);
    l->marks = NULL;
}

void ag_lag_commit(ag_lag *l, uint64_t lsn, uint64_t bytes, uint32_t crc, uint64_t now_ms)
{
    if (lsn <= l->committed_lsn) return;
    if (l->count == l->cap) { /* merge the two oldest: the newer's LSN, the older's time */
        ag_mark *a = mark_at(l, 0), *b = mark_at(l, 1);
        b->at_ms = a->at_ms;
        l->head = (l->head + 1) % l->cap;
        l->count--;
    }
    l->committed_lsn = lsn;
    l->bytes_cum += bytes;
    l->crc = crc;
    *mark_at(l, l->count++) =
        (ag_mark){.lsn = lsn, .bytes_cum = l->bytes_cum, .at_ms = now_ms, .crc = crc};
}

void ag_lag_ack(ag_lag *l, int p, uint64_t durable_lsn)
{
    if (p < 0 || p >= TOPO_REGIONS_MAX) return;
    if (!l->peers[p].acked || durable_lsn > l->peers[p].durable_lsn)
        l->peers[p].durable_lsn = durable_lsn;
    l->peers[p].acked = true;
}

void ag_lag_sent(ag_lag *l, int p, uint64_t raw, uint64_t sent)
{
    if (p < 0 || p >= TOPO_REGIONS_MAX) return;
    l->peers[p].bytes_raw += raw;
    l->peers[p].bytes_sent += sent;
}

/* Index of the first mark with lsn > x (count if none). */
static uint32_t first_above(const ag_lag *l, uint64_t x)
{
    uint32_t lo = 0, hi = l->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (mark_at(l, mid)->lsn > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void ag_lag_of(const ag_lag *l, int p, uint64_t now_ms, ag_lag_view *out)
{
    memset(out, 0, sizeof(*out));
    if (p < 0 || p >= TOPO_REGIONS_MAX) return;
    uint64_t d = l->peers[p].acked ? l->peers[p].durable_lsn : 0;
    if (d >= l->committed_lsn) return;
    out->lsn_gap = l->committed_lsn - d;
    uint32_t i = first_above(l, d);
    uint64_t since = l->base_ms; /* below the base: committed before this agent started */
    if (d >= l->base_lsn && i < l->count) since = mark_at(l, i)->at_ms;
    out->lag_ms = now_ms > since ? now_ms - since : 0;
    uint64_t below = i > 0 ? mark_at(l, i - 1)->bytes_cum : 0;
    out->bytes_gap = l->bytes_cum - below;
}

bool ag_lag_checksum_at(const ag_lag *l, uint64_t lsn, uint32_t *crc)
{
    if (!l->crc_known) return false;
    if (lsn == l->base_lsn) {
        *crc = l->base_crc;
        return true;
    }
    uint32_t i = first_above(l, lsn);
    if (i == 0 || mark_at(l, i - 1)->lsn != lsn) return false;
    *crc = mark_at(l, i - 1)->crc;
    return true;
}

bool ag_lag_mark_at_or_below(const ag_lag *l, uint64_t lsn, ag_mark *out)
{
    uint32_t i = first_above(l, lsn);
    if (i > 0) {
        *out = *mark_at(l, i - 1);
        return true;
    }
    if (lsn < l->base_lsn) return false;
    *out = (ag_mark){.lsn = l->base_lsn, .at_ms = l->base_ms, .crc = l->base_crc};
    return true;
}

void ag_lag_forget(ag_lag *l, uint64_t lsn)
{
    uint32_t i = first_above(l, lsn);
    while (i > 1) {
        l->head = (l->head + 1) % l->cap;
        l->count--;
        i--;
    }
}
