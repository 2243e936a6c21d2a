/*
 * Page slots: one materialized version of one page, as the page file holds
 * it (docs/storage-format.md): [u64 lsn][u32 crc32c][u32 page size][page].
 * The CRC covers the LSN's eight bytes and the page, so a slot a crash tore
 * while it was being written does not verify. And the arithmetic that turns
 * a base version plus records into a newer version.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "meridian/storage.h"

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t slot_crc(const uint8_t *lsn8, const uint8_t *page, uint32_t page_size)
{
    return mrd_crc32c(mrd_crc32c(0, lsn8, 8), page, page_size);
}

void storage_slot_encode(uint8_t *slot, uint32_t page_size, uint64_t lsn, const uint8_t *page)
{
    put_le(slot, lsn, 8);
    memmove(slot + STORAGE_SLOT_HEADER_BYTES, page, page_size);
    put_le(slot + 8, slot_crc(slot, slot + STORAGE_SLOT_HEADER_BYTES, page_size), 4);
    put_le(slot + 12, page_size, 4);
}

int storage_slot_decode(const uint8_t *slot, uint32_t page_size, uint64_t *lsn,
                        const uint8_t **page, mrd_msg *msg)
{
    *lsn = get_le(slot, 8);
    if (*lsn == 0) return 0;
    uint32_t size = (uint32_t)get_le(slot + 12, 4);
    if (size != page_size)
        return mrd_fail(msg, MRD_EPARSE, "slot of lsn %" PRIu64 ": page size %" PRIu32
                                         ", expected %" PRIu32,
                        *lsn, size, page_size);
    uint32_t want = (uint32_t)get_le(slot + 8, 4);
    if (slot_crc(slot, slot + STORAGE_SLOT_HEADER_BYTES, page_size) != want)
        return mrd_fail(msg, MRD_ECRC, "slot of lsn %" PRIu64 ": crc mismatch", *lsn);
    *page = slot + STORAGE_SLOT_HEADER_BYTES;
    return 1;
}

int storage_page_apply(uint8_t *page, uint32_t page_size, uint64_t *lsn,
                       const storage_page_rec *recs, uint32_t n, mrd_msg *msg)
{
    for (uint32_t i = 0; i < n; i++) {
        if (recs[i].lsn <= *lsn) continue; /* already in the base */
        wire_record rec;
        mrd_msg inner;
        int rc = wire_record_decode(recs[i].payload, recs[i].len, &rec, &inner);
        if (rc == 0 && rec.lsn != recs[i].lsn) rc = mrd_fail(&inner, MRD_EPARSE, "lsn differs");
        if (rc == 0) rc = wire_record_apply(page, page_size, &rec, &inner);
        if (rc != 0)
            return mrd_fail(msg, rc, "record %" PRIu64 ": %s", recs[i].lsn, inner.text);
        *lsn = recs[i].lsn;
    }
    return 0;
}
