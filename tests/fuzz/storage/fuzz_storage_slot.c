/*
 * Page slots as read back from a page file (a crash may have torn one),
 * and records applied to a page: never a crash, and a slot that verifies
 * re-encodes to the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/storage.h"

#define SLOT_PAGE 512u

static void check(bool ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t slot[STORAGE_SLOT_BYTES(SLOT_PAGE)], again[STORAGE_SLOT_BYTES(SLOT_PAGE)];
    static uint8_t page[SLOT_PAGE];
    size_t n = size < sizeof(slot) ? size : sizeof(slot);
    memset(slot, 0, sizeof(slot));
    memcpy(slot, data, n);
    uint64_t lsn;
    const uint8_t *got;
    mrd_msg msg;
    if (storage_slot_decode(slot, SLOT_PAGE, &lsn, &got, &msg) == 1) {
        storage_slot_encode(again, SLOT_PAGE, lsn, got);
        check(memcmp(again, slot, sizeof(slot)) == 0);
    }
    /* The rest of the input as one record's payload, applied to a page. */
    if (size > sizeof(slot)) {
        storage_page_rec r = {.lsn = 1, .payload = data + sizeof(slot),
                              .len = (uint32_t)(size - sizeof(slot))};
        wire_record rec;
        if (wire_record_decode(r.payload, r.len, &rec, &msg) == 0) r.lsn = rec.lsn;
        uint64_t at = 0;
        memset(page, 0, sizeof(page));
        storage_page_apply(page, SLOT_PAGE, &at, &r, 1, &msg);
    }
    return 0;
}
