/* Running a SQL API request as one transaction and writing its results as JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/sql.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int base64_encode(mrd_buf *out, const uint8_t *p, size_t n)
{
    int rc = mrd_buf_reserve(out, out->len + (n + 2) / 3 * 4 + 1);
    for (size_t i = 0; rc == 0 && i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {b64[v >> 18], b64[(v >> 12) & 63], i + 1 < n ? b64[(v >> 6) & 63] : '=',
                     i + 2 < n ? b64[v & 63] : '='};
        rc = mrd_buf_append(out, q, 4);
    }
    return rc;
}

/* Decodes standard base64 (padding required) into out; false if malformed. */
static bool base64_decode(const char *s, size_t n, mrd_buf *out)
{
    if (n % 4 != 0) return false;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *hit = s[i + j] != '\0' ? strchr(b64, s[i + j]) : NULL;
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (hit == NULL || pad > 0) return false;
            v = v << 6 | (uint32_t)(hit - b64);
        }
        uint8_t b[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        if (mrd_buf_append(out, b, (size_t)(3 - pad)) != 0) return false;
    }
    return true;
}

/* ---- binding ---------------------------------------------------------------------------- */

static int bind_one(sqlite3_stmt *st, int idx, const mrd_json_doc *d, const mrd_json *v,
                    const char *where, mrd_sql_error *err)
{
    int rc;
    switch (v->kind) {
    case MRD_JSON_NULL:
        rc = sqlite3_bind_null(st, idx);
        break;
    case MRD_JSON_BOOL:
        rc = sqlite3_bind_int(st, idx, v->boolean);
        break;
    case MRD_JSON_NUMBER:
        rc = v->is_int ? sqlite3_bind_int64(st, idx, v->i) : sqlite3_bind_double(st, idx, v->num);
        break;
    case MRD_JSON_STRING:
        rc = sqlite3_bind_text(st, idx, mrd_json_str(d, v), (int)v->str_len, SQLITE_TRANSIENT);
        break;
    case MRD_JSON_OBJECT: {
        const mrd_json *b = mrd_json_get(d, v, "base64");
        mrd_buf blob;
        mrd_buf_init(&blob);
        if (v->count != 1 || b == NULL || b->kind != MRD_JSON_STRING ||
            !base64_decode(mrd_json_str(d, b), b->str_len, &blob)) {
            mrd_buf_free(&blob);
            return mrd_sql_fail(err, 400, "bad_request",
                                "%s: parameter %d: an object parameter must be "
                                "{\"base64\": \"...\"} with valid base64",
                                where, idx);
        }
        rc = sqlite3_bind_blob(st, idx, blob.data != NULL ? (const void *)blob.data : "",
                               (int)blob.len, SQLITE_TRANSIENT);
        mrd_buf_free(&blob);
        break;
    }
    default:
        return mrd_sql_fail(err, 400, "bad_request", "%s: parameter %d: arrays cannot be bound",
                            where, idx);
    }
    if (rc != SQLITE_OK)
        return mrd_sql_fail(err, 400, "bad_request", "%s: parameter %d: %s", where, idx,
                            sqlite3_errstr(rc));
    return 0;
}

static int bind_all(sqlite3_stmt *st, const mrd_json_doc *d, const mrd_sql_stmt *s,
                    const char *where, mrd_sql_error *err)
{
    int want = sqlite3_bind_parameter_count(st);
    if (s->params == NULL && want == 0) return 0;
    if (s->params == NULL || s->params->kind == MRD_JSON_ARRAY) {
        uint32_t have = s->params != NULL ? s->params->count : 0;
        if ((int)have != want)
            return mrd_sql_fail(err, 400, "bad_request",
                                "%s: the statement has %d parameters, %u given", where, want, have);
        int idx = 1;
        for (const mrd_json *v = mrd_json_first(d, s->params); v != NULL; v = mrd_json_next(d, v)) {
            int rc = bind_one(st, idx++, d, v, where, err);
            if (rc != 0) return rc;
        }
        return 0;
    }
    for (int idx = 1; idx <= want; idx++) {
        const char *name = sqlite3_bind_parameter_name(st, idx);
        const mrd_json *v = NULL;
        if (name != NULL) v = mrd_json_get(d, s->params, name);
        if (name != NULL && v == NULL) v = mrd_json_get(d, s->params, name + 1);
        if (v == NULL)
            return mrd_sql_fail(err, 400, "bad_request", "%s: no value for parameter %s", where,
                                name != NULL ? name : "?");
        int rc = bind_one(st, idx, d, v, where, err);
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- results ---------------------------------------------------------------------------- */

static int column_json(sqlite3_stmt *st, int i, mrd_buf *out)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return mrd_buf_printf(out, "%lld", (long long)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: {
        double v = sqlite3_column_double(st, i);
        if (!isfinite(v)) return mrd_buf_printf(out, "null");
        char num[40];
        snprintf(num, sizeof(num), "%.17g", v);
        /* Keep a float a float: 1.0 is written 1.0, not 1. */
        return mrd_buf_printf(out, strpbrk(num, ".eE") != NULL ? "%s" : "%s.0", num);
    }
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, i);
        return mrd_json_quote(out, t != NULL ? t : "");
    }
    case SQLITE_BLOB: {
        int rc = mrd_buf_printf(out, "{\"base64\":\"");
        if (rc == 0)
            rc = base64_encode(out, sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
        return rc == 0 ? mrd_buf_printf(out, "\"}") : rc;
    }
    default:
        return mrd_buf_printf(out, "null");
    }
}

/* SQLite's error rc as the API says it: a page the volume could not give (an I/O error, on
 * a writer or reader that is stopping, restarting or cut from storage) changed nothing and
 * may be sent again (503); a busy database too; anything else is the request's (400). */
static int sqlite_fail(mrd_sql_error *err, sqlite3 *db, int rc, const char *where)
{
    if ((rc & 0xff) == SQLITE_IOERR)
        return mrd_sql_fail(err, 503, "unavailable",
                            "%s: a page could not be read (%s); nothing was changed, send it "
                            "again",
                            where, sqlite3_errmsg(db));
    return mrd_sql_fail(err, (rc & 0xff) == SQLITE_BUSY ? 503 : 400, "sql_error", "%s: %s",
                        where, sqlite3_errmsg(db));
}

/* Steps one prepared statement to the end, appending its result object. */
static int run_one(sqlite3 *db, sqlite3_stmt *st, const char *where, uint64_t *rows_total,
                   mrd_buf *out, mrd_sql_error *err)
{
    int cols = sqlite3_column_count(st), rc = mrd_buf_printf(out, "{\"columns\":[");
    for (int i = 0; rc == 0 && i < cols; i++) {
        const char *name = sqlite3_column_name(st, i);
        rc = mrd_buf_printf(out, i ? "," : "");
        if (rc == 0) rc = mrd_json_quote(out, name != NULL ? name : "");
    }
    if (rc == 0) rc = mrd_buf_printf(out, "],\"rows\":[");
    int64_t total_before = sqlite3_total_changes64(db);
    bool first = true;
    for (;;) {
        int s = sqlite3_step(st);
        if (s == SQLITE_DONE) break;
        if (s != SQLITE_ROW) return sqlite_fail(err, db, s, where);
        if (++*rows_total > MRD_SQL_ROWS_MAX || out->len > MRD_SQL_ANSWER_BYTES_MAX)
            return mrd_sql_fail(err, 413, "too_large",
                                "%s: the answer passes %d rows or %u bytes; add a LIMIT", where,
                                MRD_SQL_ROWS_MAX, MRD_SQL_ANSWER_BYTES_MAX);
        rc = mrd_buf_printf(out, first ? "[" : ",[");
        first = false;
        for (int i = 0; rc == 0 && i < cols; i++) {
            if (i > 0) rc = mrd_buf_append(out, ",", 1);
            if (rc == 0) rc = column_json(st, i, out);
        }
        if (rc == 0) rc = mrd_buf_append(out, "]", 1);
        if (rc != 0) break;
    }
    /* A statement that changed nothing (a query, DDL) reports 0 for both, not
     * whatever an earlier statement of the connection left behind. */
    bool changed = sqlite3_total_changes64(db) != total_before;
    int64_t changes = changed ? sqlite3_changes64(db) : 0;
    int64_t rowid = changed ? sqlite3_last_insert_rowid(db) : 0;
    if (rc == 0)
        rc = mrd_buf_printf(out, "],\"changes\":%lld,\"last_insert_rowid\":%lld}",
                            (long long)changes, (long long)rowid);
    return rc == 0 ? 0 : mrd_sql_fail(err, 500, "internal", "%s: out of memory", where);
}

/*
 * What a request's own statements may not do: end or nest the request's
 * transaction, attach files of the machine, or change the connection's
 * settings (PRAGMA with a value) that every later request would inherit.
 */
static int authorizer(void *ud, int action, const char *a, const char *b, const char *db,
                      const char *trigger)
{
    (void)ud;
    (void)a;
    (void)db;
    (void)trigger;
    switch (action) {
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        return SQLITE_DENY;
    case SQLITE_PRAGMA:
        return b == NULL ? SQLITE_OK : SQLITE_DENY;
    default:
        return SQLITE_OK;
    }
}

/* Prepares statement i; exactly one SQL statement per entry. */
static int prepare(sqlite3 *db, const mrd_sql_request *req, uint32_t i, sqlite3_stmt **st,
                   char *where, size_t where_len, mrd_sql_error *err)
{
    const char *sql = mrd_json_str(&req->doc, req->stmts[i].sql), *tail = NULL;
    if (req->count == 1)
        snprintf(where, where_len, "sql");
    else
        snprintf(where, where_len, "statements[%u]", i);
    sqlite3_set_authorizer(db, authorizer, NULL);
    int rc = sqlite3_prepare_v2(db, sql, (int)req->stmts[i].sql->str_len + 1, st, &tail);
    sqlite3_set_authorizer(db, NULL, NULL);
    if (rc == SQLITE_AUTH)
        return mrd_sql_fail(err, 400, "not_allowed",
                            "%s: transaction control, ATTACH/DETACH and PRAGMA assignments are "
                            "not allowed (each request runs as one transaction)",
                            where);
    if (rc != SQLITE_OK) return sqlite_fail(err, db, rc, where);
    if (*st == NULL)
        return mrd_sql_fail(err, 400, "sql_error", "%s: holds no statement", where);
    sqlite3_stmt *next = NULL;
    if (tail != NULL && sqlite3_prepare_v2(db, tail, -1, &next, NULL) == SQLITE_OK && next != NULL) {
        sqlite3_finalize(next);
        sqlite3_finalize(*st);
        *st = NULL;
        return mrd_sql_fail(err, 400, "bad_request",
                            "%s: holds more than one statement; send them as \"statements\"", where);
    }
    return 0;
}

int mrd_sql_request_readonly(sqlite3 *db, const mrd_sql_request *req, bool *readonly,
                             mrd_sql_error *err)
{
    *readonly = true;
    for (uint32_t i = 0; i < req->count; i++) {
        sqlite3_stmt *st;
        char where[48];
        int rc = prepare(db, req, i, &st, where, sizeof(where), err);
        if (rc != 0) return rc;
        *readonly = *readonly && sqlite3_stmt_readonly(st);
        sqlite3_finalize(st);
    }
    return 0;
}

static int run_all(sqlite3 *db, const mrd_sql_request *req, mrd_buf *out, mrd_sql_error *err)
{
    uint64_t rows = 0;
    int rc = mrd_buf_printf(out, "\"results\":[");
    for (uint32_t i = 0; rc == 0 && i < req->count; i++) {
        sqlite3_stmt *st = NULL;
        char where[48];
        rc = prepare(db, req, i, &st, where, sizeof(where), err);
        if (rc == 0) rc = bind_all(st, &req->doc, &req->stmts[i], where, err);
        if (rc == 0 && i > 0) rc = mrd_buf_append(out, ",", 1);
        if (rc == 0) rc = run_one(db, st, where, &rows, out, err);
        sqlite3_finalize(st);
    }
    return rc == 0 ? mrd_buf_append(out, "]", 1) : rc;
}

int mrd_sql_run(sqlite3 *db, const mrd_sql_request *req, bool read_only_instance, mrd_buf *out,
                mrd_sql_error *err)
{
    bool readonly;
    int rc = mrd_sql_request_readonly(db, req, &readonly, err);
    if (rc != 0) return rc;
    if (!readonly && read_only_instance)
        return mrd_sql_fail(err, 403, "read_only",
                            "this endpoint is read-only: send writes to the cluster endpoint "
                            "or the writer");
    if (sqlite3_exec(db, readonly ? "BEGIN" : "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return mrd_sql_fail(err, 503, "unavailable", "cannot begin a transaction: %s",
                            sqlite3_errmsg(db));
    size_t start = out->len;
    rc = run_all(db, req, out, err);
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        rc = mrd_sql_fail(err, 503, "unavailable", "commit failed: %s", sqlite3_errmsg(db));
    if (rc != 0) {
        if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        out->len = start;
    }
    return rc;
}

int mrd_sql_run_in_group(sqlite3 *db, const mrd_sql_request *req, mrd_buf *out,
                         mrd_sql_error *err)
{
    if (sqlite3_exec(db, "SAVEPOINT mrd_request", NULL, NULL, NULL) != SQLITE_OK)
        return mrd_sql_fail(err, 503, "unavailable", "cannot open a savepoint: %s",
                            sqlite3_errmsg(db));
    size_t start = out->len;
    int rc = run_all(db, req, out, err);
    if (rc == 0) {
        sqlite3_exec(db, "RELEASE mrd_request", NULL, NULL, NULL);
        return 0;
    }
    out->len = start;
    if (!sqlite3_get_autocommit(db)) { /* undo this request only */
        sqlite3_exec(db, "ROLLBACK TO mrd_request", NULL, NULL, NULL);
        sqlite3_exec(db, "RELEASE mrd_request", NULL, NULL, NULL);
    }
    return rc;
}
