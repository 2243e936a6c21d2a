/*
 * The record decoder on hostile bytes. What decodes must satisfy the record
 * invariants, re-encode to exactly wire_record_size bytes, decode again to
 * an equal record, and apply to a page without complaint.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/wire.h"

static uint8_t page[WIRE_PAGE_SIZE_MAX];

static void check(bool ok)
{
    if (!ok) abort();
}

static bool known_error(int rc)
{
    return rc == MRD_EPARSE || rc == MRD_ETRUNC || rc == MRD_ETOOBIG || rc == MRD_EVERSION;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_record rec, back;
    mrd_msg msg = {{0}};
    int rc = wire_record_decode(data, size, &rec, &msg);
    if (rc != 0) {
        check(known_error(rc) && msg.text[0] != '\0');
        return 0;
    }
    check(wire_record_check(&rec, NULL) == 0);
    mrd_buf out;
    mrd_buf_init(&out);
    check(wire_record_encode(&rec, &out, NULL) == 0);
    check(out.len == wire_record_size(&rec));
    check(out.len <= size);
    check(wire_record_decode(out.data, out.len, &back, NULL) == 0);
    check(wire_record_equal(&rec, &back));
    uint32_t page_size = rec.flags & WIRE_REC_FULL ? rec.deltas[0].len : WIRE_PAGE_SIZE_MAX;
    check(wire_record_apply(page, page_size, &rec, NULL) == 0);
    mrd_buf_free(&out);
    return 0;
}
