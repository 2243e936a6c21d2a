/*
 * The body of POST /v1/reset on hostile bytes. Whatever comes, the answer is
 * one of three (a reset of this node, a malformed body, another node's id),
 * with a message when refused; a body accepted names this node, so the same
 * bytes asked of another node are refused as another node's.
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
    mrd_msg msg;
    msg.text[0] = '\0';
    int rc = storage_reset_parse(data, size, "r1-s1", &msg);
    check(rc == 0 || rc == MRD_EPARSE || rc == MRD_EINVAL);
    check(rc == 0 || msg.text[0] != '\0');
    if (rc == 0) {
        check(size <= STORAGE_RESET_BODY_BYTES_MAX);
        check(storage_reset_parse(data, size, "r1-s2", &msg) == MRD_EINVAL);
    }
    return 0;
}
