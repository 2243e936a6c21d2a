/*
 * The bench's workload: a seeded splitmix64 stream picks, for every write,
 * a page, an offset and the new bytes, so that a run is the same whenever
 * its seed is.
 */
#include "meridian/vbench.h"

void vb_rng_seed(vb_rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t vb_rng_next(vb_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

vb_change vb_change_next(vb_rng *r, uint64_t pages, uint32_t page_size, uint32_t delta_bytes,
                         uint8_t *bytes)
{
    vb_change c;
    c.page = pages > 0 ? vb_rng_next(r) % pages : 0;
    uint32_t span = delta_bytes < page_size ? page_size - delta_bytes + 1 : 1;
    c.offset = (uint32_t)(vb_rng_next(r) % span);
    for (uint32_t i = 0; i < delta_bytes; i += 8) {
        uint64_t x = vb_rng_next(r);
        for (uint32_t k = 0; k < 8 && i + k < delta_bytes; k++)
            bytes[i + k] = (uint8_t)(x >> (8 * k));
    }
    return c;
}
