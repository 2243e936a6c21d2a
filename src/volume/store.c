/*
 * The encoded records a writer may still have to send, by LSN. A writer's
 * LSNs are consecutive, so the store is a ring indexed by lsn - first; it
 * keeps the newest `cap` records, which covers every record qw can still
 * ask to send (those above VCL, at most inflight_max, and the retained ones
 * below it, at most retain_max).
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/volume.h"

int vol_store_init(vol_store *s, uint32_t cap, mrd_msg *msg)
{
    memset(s, 0, sizeof(*s));
    if (cap == 0) return mrd_fail(msg, MRD_EINVAL, "record store: capacity 0");
    s->slots = calloc(cap, sizeof(*s->slots));
    if (s->slots == NULL) return mrd_fail(msg, MRD_ENOMEM, "record store: out of memory");
    s->cap = cap;
    return 0;
}

void vol_store_close(vol_store *s)
{
    for (uint32_t i = 0; s->slots != NULL && i < s->cap; i++)
        mrd_buf_free(&s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

int vol_store_put(vol_store *s, uint64_t lsn, const uint8_t *data, size_t len, uint64_t vcl)
{
    if (s->count > 0 && lsn != s->first + s->count) return MRD_EINVAL;
    if (s->count == s->cap) {
        if (s->first > vcl) return MRD_EBUSY;
        s->slots[s->head].len = 0; /* the buffer is reused by the new record */
        s->head = (s->head + 1) % s->cap;
        s->first++;
        s->count--;
    }
    if (s->count == 0) s->first = lsn, s->head = 0;
    mrd_buf *slot = &s->slots[(s->head + s->count) % s->cap];
    slot->len = 0;
    if (mrd_buf_append(slot, data, len) != 0) return MRD_ENOMEM;
    s->count++;
    return 0;
}

const mrd_buf *vol_store_get(const vol_store *s, uint64_t lsn)
{
    if (s->count == 0 || lsn < s->first || lsn - s->first >= s->count) return NULL;
    return &s->slots[(s->head + (lsn - s->first)) % s->cap];
}
