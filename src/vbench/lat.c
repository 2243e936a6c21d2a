/*
 * A latency histogram with bounded memory: values below 2^VB_LAT_SUB_BITS
 * have a bucket each, larger ones share 2^(VB_LAT_SUB_BITS-1) buckets per
 * power of two, so a quantile is off by less than 1 % of its value whatever
 * the number of samples.
 */
#include <string.h>

#include "meridian/vbench.h"

#define SUB (1u << VB_LAT_SUB_BITS)
#define HALF (SUB / 2)

static uint32_t bucket_of(uint64_t v)
{
    if (v < SUB) return (uint32_t)v;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(v);
    uint32_t e = msb - (VB_LAT_SUB_BITS - 1); /* v >> e lies in [HALF, SUB) */
    return SUB + (e - 1) * HALF + (uint32_t)((v >> e) - HALF);
}

/* The highest value that falls into bucket b. */
static uint64_t bucket_high(uint32_t b)
{
    if (b < SUB) return b;
    uint32_t e = (b - SUB) / HALF + 1;
    uint64_t m = (b - SUB) % HALF + HALF;
    return ((m + 1) << e) - 1;
}

void vb_lat_init(vb_lat *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void vb_lat_add(vb_lat *h, uint64_t value)
{
    h->counts[bucket_of(value)]++;
    h->n++;
    h->sum += (double)value;
    if (value > h->max) h->max = value;
    if (value < h->min) h->min = value;
}

uint64_t vb_lat_quantile(const vb_lat *h, double q)
{
    if (h->n == 0) return 0;
    if (q <= 0) return h->min;
    if (q >= 1) return h->max;
    uint64_t rank = (uint64_t)(q * (double)h->n); /* samples strictly below the answer */
    if (rank >= h->n) rank = h->n - 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < VB_LAT_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > rank) {
            uint64_t v = bucket_high(b);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

void vb_lat_merge(vb_lat *dst, const vb_lat *src)
{
    for (uint32_t b = 0; b < VB_LAT_BUCKETS; b++)
        dst->counts[b] += src->counts[b];
    dst->n += src->n;
    dst->sum += src->sum;
    if (src->max > dst->max) dst->max = src->max;
    if (src->min < dst->min) dst->min = src->min;
}
