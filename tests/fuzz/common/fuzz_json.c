/*
 * The JSON reader on hostile bytes: it either refuses with a message or
 * builds a tree whose links, counts and strings stay inside the document.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"

static void check(bool ok)
{
    if (!ok) abort();
}

static uint32_t walk(const mrd_json_doc *d, const mrd_json *n, int depth)
{
    check(depth <= MRD_JSON_DEPTH_MAX + 1);
    uint32_t seen = 1, children = 0;
    if (n->kind == MRD_JSON_STRING) {
        check(n->str + n->str_len < d->strings_len);
        check(d->strings[n->str + n->str_len] == '\0');
    }
    for (const mrd_json *c = mrd_json_first(d, n); c != NULL; c = mrd_json_next(d, c)) {
        check(c > n && c < d->nodes + d->count);
        /* A key holding \u0000 cannot be asked for by C string; every other can. */
        if (n->kind == MRD_JSON_OBJECT && strlen(mrd_json_key(d, c)) == c->key_len)
            check(mrd_json_get(d, n, mrd_json_key(d, c)) != NULL);
        seen += walk(d, c, depth + 1);
        children++;
    }
    check(children == n->count);
    return seen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mrd_json_doc doc;
    mrd_msg msg = {{0}};
    int rc = mrd_json_parse((const char *)data, size, &doc, &msg);
    if (rc != 0) {
        check(msg.text[0] != '\0' && mrd_json_root(&doc) == NULL);
        return 0;
    }
    check(walk(&doc, mrd_json_root(&doc), 0) == doc.count);
    mrd_json_free(&doc);
    return 0;
}
