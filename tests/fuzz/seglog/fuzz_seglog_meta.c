/*
 * The metadata decoder over hostile bytes. Whatever it accepts must encode back
 * to the very same bytes: the format has one encoding per value. Versions 2
 * and 3 encode as version 4 (the missing fields 0); that must decode back to
 * what was read.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/seglog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static seglog_meta meta;
    static uint8_t again[SEGLOG_META_BYTES_MAX];
    mrd_msg msg;
    memset(&meta, 0, sizeof(meta)); /* compared whole below */
    if (seglog_meta_decode(data, size, &meta, &msg) != 0) return 0;
    size_t len = 0;
    if (seglog_meta_encode(&meta, again, sizeof(again), &len, &msg) != 0) abort();
    if (size >= 6 && data[5] == 0 && (data[4] == 2 || data[4] == 3)) { /* upgraded */
        static seglog_meta back;
        memset(&back, 0, sizeof(back));
        if (seglog_meta_decode(again, len, &back, &msg) != 0) abort();
        if (memcmp(&back, &meta, sizeof(meta)) != 0) abort();
        return 0;
    }
    if (len != size || memcmp(again, data, size) != 0) abort();
    return 0;
}
