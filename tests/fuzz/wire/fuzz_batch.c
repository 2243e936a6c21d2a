/*
 * The batch decoder and the frame reader on hostile bytes. The input is
 * decoded as one batch, and fed as a stream to two frame readers — in one
 * piece and in pieces of sizes drawn from the input — which must agree frame
 * for frame and on how the stream ends. Every batch that decodes is rebuilt
 * with the builder and must decode again to the same records.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/wire.h"

static wire_record recs[WIRE_BATCH_RECORDS_MAX];

static void check(bool ok)
{
    if (!ok) abort();
}

static bool known_error(int rc)
{
    return rc == MRD_EPARSE || rc == MRD_ETRUNC || rc == MRD_ETOOBIG || rc == MRD_EVERSION;
}

/* Walks a decoded batch into recs; returns the count. */
static uint32_t walk(const wire_batch *batch)
{
    wire_batch_iter it;
    wire_batch_iter_init(&it, batch);
    uint32_t n = 0;
    int rc;
    while ((rc = wire_batch_iter_next(&it, &recs[n])) == 1) {
        check(n < batch->count);
        n++;
    }
    check(rc == 0 && n == batch->count);
    return n;
}

static void batch_oracle(const uint8_t *data, size_t size)
{
    wire_batch batch, again;
    mrd_msg msg = {{0}};
    int rc = wire_batch_decode(data, size, &batch, &msg);
    if (rc != 0) {
        check(known_error(rc) && msg.text[0] != '\0');
        return;
    }
    uint32_t n = walk(&batch);
    check(recs[0].lsn == batch.lsn_first && recs[n - 1].lsn == batch.lsn_last);
    mrd_buf out;
    mrd_buf_init(&out);
    wire_batch_builder b;
    check(wire_batch_begin(&b, &out, batch.kind) == 0);
    for (uint32_t i = 0; i < n; i++)
        check(wire_batch_add(&b, &recs[i], NULL) == 0);
    check(wire_batch_finish(&b, NULL) == 0);
    check(wire_batch_decode(out.data, out.len, &again, NULL) == 0);
    check(again.count == n && again.lsn_first == batch.lsn_first &&
          again.lsn_last == batch.lsn_last && again.kind == batch.kind);
    wire_batch_iter it;
    wire_batch_iter_init(&it, &again);
    wire_record rec;
    for (uint32_t i = 0; i < n; i++) {
        check(wire_batch_iter_next(&it, &rec) == 1);
        check(wire_record_equal(&rec, &recs[i]));
    }
    mrd_buf_free(&out);
}

typedef struct {
    uint32_t frames;
    uint32_t crc_xor; /* of the frames' payload checksums, in order */
    int rc;           /* how the stream ended: 0 or the error */
    size_t pending;
} stream_result;

/* Feeds data to a frame reader in pieces; piece 0 means all at once. */
static stream_result feed(const uint8_t *data, size_t size, uint64_t seed, bool whole)
{
    stream_result res = {0};
    wire_frame_reader r;
    wire_frame_reader_init(&r, 1u << 16);
    size_t at = 0;
    while (at < size && res.rc == 0) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t piece = whole ? size : 1 + (size_t)(seed >> 33) % 64;
        if (piece > size - at) piece = size - at;
        size_t end = at + piece;
        while (at < end && res.rc == 0) {
            size_t used;
            wire_frame f;
            int rc = wire_frame_reader_feed(&r, data + at, end - at, &used, &f, NULL);
            check(used <= end - at);
            at += used;
            if (rc < 0) res.rc = rc;
            if (rc == 1) {
                res.frames++;
                res.crc_xor = res.crc_xor * 31 + mrd_crc32c(0, f.data, f.len);
                batch_oracle(f.data, f.len);
            }
            if (rc == 0) check(at == end);
        }
    }
    res.pending = res.rc == 0 ? wire_frame_reader_pending(&r) : 0;
    wire_frame_reader_close(&r);
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch_oracle(data, size);
    uint64_t seed = size;
    for (size_t i = 0; i < size && i < 8; i++)
        seed = seed * 131 + data[i];
    stream_result a = feed(data, size, seed, true);
    stream_result b = feed(data, size, seed, false);
    check(a.frames == b.frames && a.crc_xor == b.crc_xor && a.rc == b.rc && a.pending == b.pending);
    check(a.rc == 0 || a.rc == MRD_ECRC || a.rc == MRD_ETOOBIG);
    return 0;
}
