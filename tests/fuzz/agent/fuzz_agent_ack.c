/*
 * A secondary's acknowledgement (the payload after its 'A' tag) from hostile
 * bytes: refused with a message, or decoded into an ack whose encoding
 * decodes to the same fields.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ag_ack ack, back;
    mrd_msg msg = {{0}};
    if (ag_frame_ack_decode(data, size, &ack, &msg) != 0) {
        if (msg.text[0] == '\0') abort();
        return 0;
    }
    mrd_buf f;
    mrd_buf_init(&f);
    if (ag_frame_ack_encode(&ack, &f, &msg) != 0) abort();
    const uint8_t *p = f.data + WIRE_FRAME_HEADER_BYTES;
    size_t len = f.len - WIRE_FRAME_HEADER_BYTES;
    if (p[0] != AG_FRAME_ACK || ag_frame_ack_decode(p + 1, len - 1, &back, &msg) != 0) abort();
    if (back.durable_lsn != ack.durable_lsn || back.checksum != ack.checksum ||
        back.checksum_known != ack.checksum_known)
        abort();
    mrd_buf_free(&f);
    return 0;
}
