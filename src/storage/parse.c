/*
 * External bytes a storage node receives, turned into typed values in one
 * place: decimal header values, query strings, request and answer bodies
 * (one frame, one batch), the body of a reset and the names a reset finds in
 * the data folder, and the check that a record belongs to the PG and page
 * size it is headed for. Everything is refused with a message naming
 * the field; nothing here allocates or keeps a pointer past the call.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/storage.h"

static const char *const stq_names[STQ_COUNT] = {
    [STQ_PG] = "pg",     [STQ_FLOOR] = "floor", [STQ_AFTER] = "after", [STQ_UPTO] = "upto",
    [STQ_PAGE] = "page", [STQ_LSN] = "lsn",     [STQ_NEED] = "need",
};

#define STORAGE_U64_DIGITS_MAX 20

static int storage_u64_span(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > STORAGE_U64_DIGITS_MAX) return MRD_EPARSE;
    if (len > 1 && s[0] == '0') return MRD_EPARSE;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return MRD_EPARSE;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return MRD_EPARSE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int storage_u64_parse(const char *text, uint64_t *out)
{
    if (text == NULL) return MRD_EPARSE;
    return storage_u64_span(text, strlen(text), out);
}

/* One k=v pair of len bytes at s. */
static int storage_query_pair(const char *s, size_t len, unsigned allowed, storage_query *q,
                              mrd_msg *msg)
{
    const char *eq = memchr(s, '=', len);
    if (eq == NULL)
        return mrd_fail(msg, MRD_EPARSE, "query: '%.*s' is not key=value", (int)len, s);
    size_t klen = (size_t)(eq - s);
    int key = -1;
    for (int k = 0; k < STQ_COUNT; k++)
        if (strlen(stq_names[k]) == klen && memcmp(stq_names[k], s, klen) == 0) key = k;
    if (key < 0 || !(allowed & (1u << key)))
        return mrd_fail(msg, MRD_EPARSE, "query: unknown key '%.*s'", (int)klen, s);
    if (q->has[key]) return mrd_fail(msg, MRD_EPARSE, "query: %s given twice", stq_names[key]);
    if (storage_u64_span(eq + 1, len - klen - 1, &q->value[key]) != 0)
        return mrd_fail(msg, MRD_EPARSE, "query: %s: '%.*s' is not a decimal unsigned 64-bit integer",
                        stq_names[key], (int)(len - klen - 1), eq + 1);
    q->has[key] = true;
    return 0;
}

int storage_query_parse(const char *path, unsigned allowed, storage_query *q, mrd_msg *msg)
{
    memset(q, 0, sizeof(*q));
    size_t total = strlen(path);
    if (total > STORAGE_QUERY_BYTES_MAX)
        return mrd_fail(msg, MRD_EPARSE, "query: path of %zu bytes, limit %u", total,
                        STORAGE_QUERY_BYTES_MAX);
    const char *s = strchr(path, '?');
    if (s == NULL) return 0;
    s++;
    while (*s != '\0') {
        size_t len = strcspn(s, "&");
        int rc = storage_query_pair(s, len, allowed, q, msg);
        if (rc != 0) return rc;
        s += len;
        if (*s == '&') {
            s++;
            if (*s == '\0') return mrd_fail(msg, MRD_EPARSE, "query: ends with '&'");
        }
    }
    return 0;
}

int storage_body_batch(const uint8_t *body, size_t len, wire_batch *batch, mrd_msg *msg)
{
    if (len == 0) return mrd_fail(msg, MRD_ENOTFOUND, "body: empty");
    wire_frame_reader r;
    wire_frame frame;
    size_t used = 0;
    mrd_msg inner;
    wire_frame_reader_init(&r, WIRE_FRAME_BYTES_MAX);
    int rc = wire_frame_reader_feed(&r, body, len, &used, &frame, &inner);
    if (rc == 0) {
        wire_frame_reader_close(&r);
        return mrd_fail(msg, MRD_ETRUNC, "body: a cut frame (%zu bytes)", len);
    }
    if (rc < 0) {
        wire_frame_reader_close(&r);
        return mrd_fail(msg, rc, "body: frame: %s", inner.text);
    }
    /* A frame fed whole in one piece points into body, not into the reader. */
    wire_frame_reader_close(&r);
    if (used != len)
        return mrd_fail(msg, MRD_EPARSE, "body: %zu bytes after the frame", len - used);
    if (frame.data < body || frame.data + frame.len > body + len)
        return mrd_fail(msg, MRD_EPARSE, "body: frame not in the body");
    rc = wire_batch_decode(frame.data, frame.len, batch, &inner);
    if (rc != 0) return mrd_fail(msg, rc, "body: %s", inner.text);
    if (batch->kind != WIRE_BATCH_LOG)
        return mrd_fail(msg, MRD_EPARSE, "body: batch kind %" PRIu32 ", expected %u (log records)",
                        batch->kind, WIRE_BATCH_LOG);
    return 0;
}

int storage_record_fits(const wire_record *rec, uint32_t pg, uint64_t pages_per_pg,
                        uint32_t page_size, mrd_msg *msg)
{
    if (rec->pg != pg)
        return mrd_fail(msg, MRD_EPARSE, "record %" PRIu64 ": pg %" PRIu32 ", expected %" PRIu32,
                        rec->lsn, rec->pg, pg);
    if (pages_per_pg == 0 || rec->page / pages_per_pg != pg)
        return mrd_fail(msg, MRD_EPARSE,
                        "record %" PRIu64 ": page %" PRIu64 " is not in pg %" PRIu32
                        " (%" PRIu64 " pages each)",
                        rec->lsn, rec->page, pg, pages_per_pg);
    if (rec->delta_count > 0) {
        const wire_delta *last = &rec->deltas[rec->delta_count - 1];
        if ((uint64_t)last->offset + last->len > page_size)
            return mrd_fail(msg, MRD_EPARSE,
                            "record %" PRIu64 ": a delta ends at byte %" PRIu64
                            ", past the page size %" PRIu32,
                            rec->lsn, (uint64_t)last->offset + last->len, page_size);
    }
    if ((rec->flags & WIRE_REC_FULL) && rec->deltas[0].len != page_size)
        return mrd_fail(msg, MRD_EPARSE,
                        "record %" PRIu64 ": full image of %" PRIu32 " bytes, page size %" PRIu32,
                        rec->lsn, rec->deltas[0].len, page_size);
    return 0;
}

void storage_qrec(const wire_record *rec, quorum_rec *q)
{
    *q = (quorum_rec){.lsn = rec->lsn,
                      .prev_lsn = rec->prev_lsn,
                      .vol_prev_lsn = rec->vol_prev_lsn,
                      .epoch = rec->epoch,
                      .pg = rec->pg,
                      .size_bytes = 0,
                      .is_cpl = (rec->flags & WIRE_REC_CPL) != 0};
}

bool storage_fences_add(quorum_fence *fences, uint32_t *n, quorum_fence f)
{
    uint32_t i = 0;
    while (i < *n && fences[i].epoch < f.epoch)
        i++;
    if (i < *n && fences[i].epoch == f.epoch) {
        if (f.truncate_lsn >= fences[i].truncate_lsn) return false;
        fences[i].truncate_lsn = f.truncate_lsn;
        return true;
    }
    if (*n == QUORUM_FENCES_MAX) {
        /* As seg_chain: merge the two oldest, keeping the stricter limit. */
        if (fences[0].truncate_lsn < fences[1].truncate_lsn)
            fences[1].truncate_lsn = fences[0].truncate_lsn;
        memmove(&fences[0], &fences[1], (*n - 1) * sizeof(fences[0]));
        (*n)--;
        if (i > 0) i--;
    }
    memmove(&fences[i + 1], &fences[i], (*n - i) * sizeof(fences[0]));
    fences[i] = f;
    (*n)++;
    return true;
}

/* ---- reset ------------------------------------------------------------------------------- */

storage_file_kind storage_file_classify(const char *name)
{
    /* Only what storage itself creates: the process's LOCK, pid file and log, the
     * RESET marker (removed last, once the rest is durably gone) and anything an
     * operator put there stay. */
    static const char *const files[] = {STORAGE_META_FILE, STORAGE_META_FILE ".tmp",
                                        STORAGE_RESET_FILE ".tmp"};
    static const char *const dirs[] = {STORAGE_LOG_DIR, STORAGE_PAGES_DIR};
    for (size_t i = 0; i < MRD_ARRAY_LEN(files); i++)
        if (strcmp(name, files[i]) == 0) return STORAGE_FILE_DATA;
    for (size_t i = 0; i < MRD_ARRAY_LEN(dirs); i++)
        if (strcmp(name, dirs[i]) == 0) return STORAGE_FILE_DATA_DIR;
    return STORAGE_FILE_KEEP;
}

/* The members of the body's object: exactly one, "node", a string. */
static int storage_reset_node(const mrd_json_doc *doc, const mrd_json *root, const char **id,
                              size_t *id_len, mrd_msg *msg)
{
    for (const mrd_json *m = mrd_json_first(doc, root); m != NULL; m = mrd_json_next(doc, m))
        if (strcmp(mrd_json_key(doc, m), "node") != 0)
            return mrd_fail(msg, MRD_EPARSE, "body: unknown member '%.64s'; the only one is node",
                            mrd_json_key(doc, m));
    const mrd_json *node = mrd_json_get(doc, root, "node");
    if (node == NULL) return mrd_fail(msg, MRD_EPARSE, "node: missing; it must be this node's id");
    if (node->kind != MRD_JSON_STRING)
        return mrd_fail(msg, MRD_EPARSE, "node: JSON %s, expected a string (this node's id)",
                        mrd_json_kind_name(node->kind));
    *id = mrd_json_str(doc, node);
    *id_len = node->str_len;
    return 0;
}

int storage_reset_parse(const uint8_t *body, size_t len, const char *self_id, mrd_msg *msg)
{
    if (len == 0)
        return mrd_fail(msg, MRD_EPARSE, "body: empty; expected {\"node\": \"<this node's id>\"}");
    if (len > STORAGE_RESET_BODY_BYTES_MAX)
        return mrd_fail(msg, MRD_EPARSE, "body: %zu bytes, limit %u", len,
                        STORAGE_RESET_BODY_BYTES_MAX);
    mrd_json_doc doc;
    mrd_msg inner;
    if (mrd_json_parse((const char *)body, len, &doc, &inner) != 0)
        return mrd_fail(msg, MRD_EPARSE, "body: not JSON: %s", inner.text);
    const mrd_json *root = mrd_json_root(&doc);
    const char *id = NULL;
    size_t id_len = 0;
    int rc = 0;
    if (root == NULL || root->kind != MRD_JSON_OBJECT)
        rc = mrd_fail(msg, MRD_EPARSE, "body: JSON %s, expected an object {\"node\": ...}",
                      root ? mrd_json_kind_name(root->kind) : "of nothing");
    else
        rc = storage_reset_node(&doc, root, &id, &id_len, msg);
    if (rc == 0 && (id_len != strlen(self_id) || memcmp(id, self_id, id_len) != 0))
        rc = mrd_fail(msg, MRD_EINVAL, "node: '%.64s' is not this node (%s); nothing was reset", id,
                      self_id);
    mrd_json_free(&doc);
    return rc;
}
