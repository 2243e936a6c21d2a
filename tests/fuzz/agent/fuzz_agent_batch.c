/*
 * A compressed replication batch (the payload after its 'Z' tag) from
 * hostile bytes: refused with a message, or inflated to exactly its declared
 * size, a valid log batch whose records all decode, and which compresses back
 * to something that decodes the same.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mrd_buf raw, again, raw2;
    mrd_buf_init(&raw);
    wire_batch batch;
    mrd_msg msg = {{0}};
    int rc = ag_frame_batch_decode(data, size, &raw, &batch, &msg);
    if (rc != 0) {
        if (msg.text[0] == '\0') abort();
        mrd_buf_free(&raw);
        return 0;
    }
    if (raw.len == 0 || raw.len > AG_FRAME_RAW_MAX || batch.kind != WIRE_BATCH_LOG) abort();
    wire_batch_iter it;
    wire_batch_iter_init(&it, &batch);
    wire_record rec;
    uint32_t n = 0;
    while ((rc = wire_batch_iter_next(&it, &rec)) == 1)
        n++;
    if (rc != 0 || n != batch.count) abort();
    mrd_buf_init(&again);
    mrd_buf_init(&raw2);
    if (ag_frame_batch_encode(raw.data, raw.len, &again, &msg) != 0) abort();
    wire_batch b2;
    if (ag_frame_batch_decode(again.data + WIRE_FRAME_HEADER_BYTES + 1,
                              again.len - WIRE_FRAME_HEADER_BYTES - 1, &raw2, &b2, &msg) != 0)
        abort();
    if (raw2.len != raw.len || memcmp(raw2.data, raw.data, raw.len) != 0) abort();
    mrd_buf_free(&again);
    mrd_buf_free(&raw2);
    mrd_buf_free(&raw);
    return 0;
}
