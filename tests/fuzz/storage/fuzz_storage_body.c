/*
 * The body of an append or of a peer's gap-fill answer on hostile bytes:
 * exactly one frame holding one batch of log records, each record then
 * checked against a PG and a page size as the storage node does. A body
 * that decodes re-encodes (record by record) to records that decode equal.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/storage.h"

static void check(bool ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_batch batch;
    mrd_msg msg;
    if (storage_body_batch(data, size, &batch, &msg) != 0) return 0;
    check(batch.kind == WIRE_BATCH_LOG && batch.count >= 1);
    wire_batch_iter it;
    wire_record rec, back;
    mrd_buf enc;
    mrd_buf_init(&enc);
    wire_batch_iter_init(&it, &batch);
    while (wire_batch_iter_next(&it, &rec) == 1) {
        storage_record_fits(&rec, rec.pg, 256, 4096, &msg);
        storage_record_fits(&rec, 0, 1, 512, &msg);
        quorum_rec q;
        storage_qrec(&rec, &q);
        check(q.lsn == rec.lsn && q.prev_lsn < q.lsn);
        enc.len = 0;
        check(wire_record_encode(&rec, &enc, &msg) == 0);
        check(wire_record_decode(enc.data, enc.len, &back, &msg) == 0);
        check(wire_record_equal(&rec, &back));
    }
    mrd_buf_free(&enc);
    return 0;
}
