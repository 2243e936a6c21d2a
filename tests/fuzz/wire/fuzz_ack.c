/*
 * The ack decoder (a storage node's answer to an append) on hostile bytes:
 * what decodes keeps its invariant and re-encodes to the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
