/*
 * Page deltas: from two versions of a page to the byte ranges that differ,
 * and from a record back onto a page. A range costs about seven bytes of
 * msgpack on top of its data ([offset, bin]), so runs of changed bytes a few
 * bytes apart are cheaper as one range; past a fraction of the page a full
 * image is cheaper still and gives storage a new base.
 */
#include <string.h>

#include "wire_private.h"

/* End of the changed run starting at i, swallowing gaps of at most gap equal bytes. */
static uint32_t run_end(const uint8_t *a, const uint8_t *b, uint32_t size, uint32_t gap, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        while (j < size && a[j] != b[j])
            j++;
        uint32_t k = j;
        while (k < size && a[k] == b[k] && k - j <= gap)
            k++;
        if (k < size && a[k] != b[k] && k - j <= gap) {
            j = k;
            continue;
        }
        return j;
    }
}

/* Fills rec's deltas with the changed runs; false if more than WIRE_DELTAS_MAX. */
static bool scan(const uint8_t *base, const uint8_t *page, uint32_t size, uint32_t gap,
                 wire_record *rec)
{
    uint32_t n = 0, i = 0;
    for (;;) {
        while (i < size && base[i] == page[i])
            i++;
        if (i == size) break;
        if (n == WIRE_DELTAS_MAX) return false;
        uint32_t end = run_end(base, page, size, gap, i);
        rec->deltas[n++] = (wire_delta){.offset = i, .len = end - i, .data = page + i};
        i = end;
    }
    rec->delta_count = n;
    return true;
}

static void full_image(const uint8_t *page, uint32_t page_size, wire_record *rec)
{
    rec->delta_count = 1;
    rec->deltas[0] = (wire_delta){.offset = 0, .len = page_size, .data = page};
    rec->flags |= WIRE_REC_FULL;
}

int wire_delta_compute(const uint8_t *base, const uint8_t *page, uint32_t page_size,
                       wire_record *rec)
{
    if (page_size == 0 || page_size > WIRE_PAGE_SIZE_MAX) return MRD_EINVAL;
    rec->flags &= ~WIRE_REC_FULL;
    if (base == NULL) {
        full_image(page, page_size, rec);
        return 0;
    }
    uint32_t gap = WIRE_DELTA_GAP_BYTES;
    while (!scan(base, page, page_size, gap, rec))
        gap = gap * 2 + 1;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < rec->delta_count; i++)
        bytes += rec->deltas[i].len;
    if (bytes * 100 > (uint64_t)page_size * WIRE_DELTA_FULL_PERCENT)
        full_image(page, page_size, rec);
    return 0;
}

/* Checks that every range of rec lands inside a page of page_size bytes. */
static int apply_check(uint32_t page_size, const wire_record *rec, mrd_msg *msg)
{
    if (page_size == 0 || page_size > WIRE_PAGE_SIZE_MAX)
        return mrd_fail(msg, MRD_EINVAL, "page size %u outside 1..%u", page_size,
                        WIRE_PAGE_SIZE_MAX);
    if (rec->delta_count > WIRE_DELTAS_MAX)
        return mrd_fail(msg, MRD_EINVAL, "record lsn %llu: %u deltas, limit %u",
                        (unsigned long long)rec->lsn, rec->delta_count, WIRE_DELTAS_MAX);
    if ((rec->flags & WIRE_REC_FULL) &&
        (rec->delta_count != 1 || rec->deltas[0].offset != 0 || rec->deltas[0].len != page_size))
        return mrd_fail(msg, MRD_EINVAL,
                        "record lsn %llu: full image does not cover a page of %u bytes",
                        (unsigned long long)rec->lsn, page_size);
    for (uint32_t i = 0; i < rec->delta_count; i++) {
        const wire_delta *d = &rec->deltas[i];
        if ((uint64_t)d->offset + d->len > page_size || (d->len > 0 && d->data == NULL))
            return mrd_fail(msg, MRD_EINVAL,
                            "record lsn %llu: delta %u [%u, +%u) outside a page of %u bytes",
                            (unsigned long long)rec->lsn, i, d->offset, d->len, page_size);
    }
    return 0;
}

int wire_record_apply(uint8_t *page, uint32_t page_size, const wire_record *rec, mrd_msg *msg)
{
    int rc = apply_check(page_size, rec, msg);
    if (rc != 0) return rc;
    for (uint32_t i = 0; i < rec->delta_count; i++)
        memmove(page + rec->deltas[i].offset, rec->deltas[i].data, rec->deltas[i].len);
    return 0;
}
