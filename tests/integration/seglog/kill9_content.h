/* What the kill -9 writer puts at each LSN: length and bytes follow from the LSN alone. */
#ifndef MERIDIAN_KILL9_CONTENT_H
#define MERIDIAN_KILL9_CONTENT_H

#include <stddef.h>
#include <stdint.h>

#define KILL9_PAYLOAD_MAX 2000
#define KILL9_FILE_BYTES_MAX (256u * 1024)
#define KILL9_BATCH_BYTES_MAX (64u * 1024)

static inline uint64_t kill9_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline size_t kill9_payload(uint64_t lsn, uint8_t out[KILL9_PAYLOAD_MAX])
{
    size_t len = 1 + (size_t)(kill9_mix(lsn ^ 0xabcdef) % KILL9_PAYLOAD_MAX);
    uint64_t x = lsn;
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) x = kill9_mix(x);
        out[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
    return len;
}

#endif
