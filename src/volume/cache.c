/*
 * The writer's page versions: the base each new delta is computed against.
 * Entries live in a fixed array (pages_max) found through an open-addressing
 * index; a new page takes a free entry or the least recently used one whose
 * last write is at or below VDL. A page written above VDL is pinned: its
 * version is durable nowhere yet, so it could not be read back.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"

static uint32_t hash_page(uint64_t page)
{
    page ^= page >> 33;
    page *= 0xff51afd7ed558ccdULL;
    page ^= page >> 33;
    return (uint32_t)page;
}

int vol_cache_init(vol_cache *c, uint32_t pages_max, uint32_t page_size, mrd_msg *msg)
{
    memset(c, 0, sizeof(*c));
    if (pages_max == 0 || pages_max > (1u << 24) || page_size == 0 ||
        page_size > WIRE_PAGE_SIZE_MAX)
        return mrd_fail(msg, MRD_EINVAL, "page cache: %u pages of %u bytes out of range", pages_max,
                        page_size);
    c->pages_max = pages_max;
    c->page_size = page_size;
    c->index_cap = 16;
    while (c->index_cap < 2 * pages_max)
        c->index_cap *= 2;
    c->entries = calloc(pages_max, sizeof(*c->entries));
    c->data = malloc((size_t)pages_max * page_size);
    c->index = calloc(c->index_cap, sizeof(*c->index));
    if (c->entries == NULL || c->data == NULL || c->index == NULL) {
        vol_cache_close(c);
        return mrd_fail(msg, MRD_ENOMEM, "page cache: out of memory for %u pages", pages_max);
    }
    return 0;
}

void vol_cache_close(vol_cache *c)
{
    free(c->entries);
    free(c->data);
    free(c->index);
    memset(c, 0, sizeof(*c));
}

/* Index slot holding page, or the empty slot where it would go. */
static uint32_t slot_of(const vol_cache *c, uint64_t page)
{
    uint32_t mask = c->index_cap - 1, i = hash_page(page) & mask;
    while (c->index[i] != 0 && c->entries[c->index[i] - 1].page != page)
        i = (i + 1) & mask;
    return i;
}

/* Removes index slot i, moving later members of its cluster back (no tombstones). */
static void index_remove(vol_cache *c, uint32_t i)
{
    uint32_t mask = c->index_cap - 1;
    c->index[i] = 0;
    for (uint32_t j = (i + 1) & mask; c->index[j] != 0; j = (j + 1) & mask) {
        uint32_t e = c->index[j];
        c->index[j] = 0;
        c->index[slot_of(c, c->entries[e - 1].page)] = e;
    }
}

const uint8_t *vol_cache_get(vol_cache *c, uint64_t page)
{
    uint32_t e = c->index[slot_of(c, page)];
    if (e == 0) return NULL;
    c->entries[e - 1].used = ++c->clock;
    return &c->data[(size_t)(e - 1) * c->page_size];
}

/* A free entry, or the least recently used unpinned one (removed from the index). */
static int take_entry(vol_cache *c, uint64_t vdl, uint32_t *out)
{
    if (c->count < c->pages_max) {
        *out = c->count++;
        return 0;
    }
    uint32_t best = UINT32_MAX;
    for (uint32_t i = 0; i < c->pages_max; i++) {
        const vol_cache_entry *e = &c->entries[i];
        if (e->last_lsn > vdl) continue;
        if (best == UINT32_MAX || e->used < c->entries[best].used) best = i;
    }
    if (best == UINT32_MAX) return MRD_EBUSY;
    index_remove(c, slot_of(c, c->entries[best].page));
    *out = best;
    return 0;
}

int vol_cache_put(vol_cache *c, uint64_t page, const uint8_t *data, uint64_t last_lsn, uint64_t vdl)
{
    uint32_t slot = slot_of(c, page);
    uint32_t e = c->index[slot];
    vol_cache_entry *ent;
    if (e == 0) {
        uint32_t idx;
        int rc = take_entry(c, vdl, &idx);
        if (rc != 0) return rc;
        e = idx + 1;
        ent = &c->entries[idx];
        ent->page = page;
        ent->last_lsn = last_lsn;
        ent->live = true;
        c->index[slot_of(c, page)] = e; /* the removal may have moved slots */
    } else {
        ent = &c->entries[e - 1];
        if (last_lsn > ent->last_lsn) ent->last_lsn = last_lsn;
    }
    ent->used = ++c->clock;
    memcpy(&c->data[(size_t)(e - 1) * c->page_size], data, c->page_size);
    return 0;
}
