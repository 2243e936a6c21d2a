/*
 * The small message decoders — the ack (a storage node's answer to an
 * append) and the mark (the writer's durability mark to readers) — on
 * hostile bytes: what decodes keeps its invariant and re-encodes the same.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/wire.h"

static void fuzz_mark(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_mark(data, size);
    wire_ack ack, back;
    mrd_msg msg = {{0}};
    int rc = wire_ack_decode(data, size, &ack, &msg);
    if (rc != 0) {
        if (msg.text[0] == '\0') abort();
        return 0;
    }
    if (ack.lsn_durable < ack.scl) abort();
    mrd_buf buf;
    mrd_buf_init(&buf);
    if (wire_ack_encode(&ack, &buf, &msg) != 0) abort();
    if (wire_ack_decode(buf.data, buf.len, &back, &msg) != 0) abort();
    if (memcmp(&ack, &back, sizeof(ack)) != 0) abort();
    mrd_buf_free(&buf);
    return 0;
}

/* The same for the writer's mark, on the same bytes. */
static void fuzz_mark(const uint8_t *data, size_t size)
{
    wire_mark mark, back;
    mrd_msg msg = {{0}};
    if (wire_mark_decode(data, size, &mark, &msg) != 0) {
        if (msg.text[0] == '\0') abort();
        return;
    }
    if (mark.lsn_last < mark.vdl) abort();
    mrd_buf buf;
    mrd_buf_init(&buf);
    if (wire_mark_encode(&mark, &buf, &msg) != 0) abort();
    if (wire_mark_decode(buf.data, buf.len, &back, &msg) != 0) abort();
    if (memcmp(&mark, &back, sizeof(mark)) != 0) abort();
    mrd_buf_free(&buf);
}
