/*
 * A storage node's request parsers on hostile bytes: the query string of a
 * path and a header's decimal value. Whatever parses must print back to a
 * query that parses to the same values.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/storage.h"

static void check(bool ok)
{
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[STQ_COUNT] = {"pg", "floor", "after", "upto",
                                                 "page", "lsn", "need"};
    char path[STORAGE_QUERY_BYTES_MAX + 64];
    if (size == 0 || size > STORAGE_QUERY_BYTES_MAX) return 0;
    unsigned allowed = data[0] & ((1u << STQ_COUNT) - 1);
    memcpy(path, data + 1, size - 1);
    path[size - 1] = '\0';
    uint64_t v;
    if (storage_u64_parse(path, &v) == 0) {
        char again[24];
        snprintf(again, sizeof(again), "%" PRIu64, v);
        check(strcmp(again, path) == 0); /* one spelling per value */
    }
    storage_query q, q2;
    mrd_msg msg;
    if (storage_query_parse(path, allowed, &q, &msg) != 0) return 0;
    int n = snprintf(path, sizeof(path), "/x?");
    const char *sep = "";
    for (int k = 0; k < STQ_COUNT; k++) {
        if (!q.has[k]) continue;
        check(allowed & (1u << k));
        n += snprintf(path + n, sizeof(path) - (size_t)n, "%s%s=%" PRIu64, sep, names[k],
                      q.value[k]);
        sep = "&";
    }
    check(storage_query_parse(path, allowed, &q2, &msg) == 0);
    check(memcmp(q.has, q2.has, sizeof(q.has)) == 0);
    for (int k = 0; k < STQ_COUNT; k++)
        check(!q.has[k] || q.value[k] == q2.value[k]);
    return 0;
}
