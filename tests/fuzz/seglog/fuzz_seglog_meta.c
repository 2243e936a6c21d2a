/*
 * The metadata decoder over hostile bytes. Whatever it accepts must encode back
 * to the very same bytes: the format has one encoding per value. A version 2
 * file (no VDL) encodes as version 3, 8 bytes longer, with VDL 0.
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
    if (seglog_meta_decode(data, size, &meta, &msg) != 0) return 0;
    size_t len = 0;
    if (seglog_meta_encode(&meta, again, sizeof(again), &len, &msg) != 0) abort();
    if (size >= 6 && data[4] == 2 && data[5] == 0) { /* version 2: upgraded */
        if (len != size + 8 || meta.vdl != 0) abort();
        if (memcmp(again + 32, data + 24, size - 28) != 0) abort(); /* fences, groups */
        return 0;
    }
    if (len != size || memcmp(again, data, size) != 0) abort();
    return 0;
}
