/* The SQL API's request: JSON in, checked statements out (include/meridian/sql.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/sql.h"

int mrd_sql_fail(mrd_sql_error *err, int http_status, const char *code, const char *fmt, ...)
{
    if (err != NULL) {
        err->http_status = http_status;
        snprintf(err->code, sizeof(err->code), "%s", code);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return http_status < 500 ? MRD_EINVAL : MRD_EIO;
}

int mrd_sql_error_json(const mrd_sql_error *err, mrd_buf *out)
{
    int rc = mrd_buf_printf(out, "{\"error\":{\"code\":");
    if (rc == 0) rc = mrd_json_quote(out, err->code);
    if (rc == 0) rc = mrd_buf_printf(out, ",\"message\":");
    if (rc == 0) rc = mrd_json_quote(out, err->message);
    if (rc == 0) rc = mrd_buf_printf(out, "}}\n");
    return rc;
}

static int bad(mrd_sql_error *err, const char *fmt, const char *a, const char *b)
{
    return mrd_sql_fail(err, 400, "bad_request", fmt, a, b);
}

/* One {"sql": ..., "params": ...} (also the top level of a one-statement request). */
static int statement(const mrd_json_doc *d, const mrd_json *obj, const char *where,
                     mrd_sql_stmt *st, mrd_sql_error *err)
{
    st->sql = mrd_json_get(d, obj, "sql");
    st->params = mrd_json_get(d, obj, "params");
    if (st->sql == NULL) return bad(err, "%s: \"sql\" is missing%s", where, "");
    if (st->sql->kind != MRD_JSON_STRING)
        return bad(err, "%s: \"sql\" must be a string, not %s", where,
                   mrd_json_kind_name(st->sql->kind));
    if (st->sql->str_len == 0 || strlen(mrd_json_str(d, st->sql)) != st->sql->str_len)
        return bad(err, "%s: \"sql\" is empty or holds a NUL character%s", where, "");
    if (st->params != NULL && st->params->kind == MRD_JSON_NULL) st->params = NULL;
    if (st->params != NULL && st->params->kind != MRD_JSON_ARRAY &&
        st->params->kind != MRD_JSON_OBJECT)
        return bad(err, "%s: \"params\" must be an array or an object, not %s", where,
                   mrd_json_kind_name(st->params->kind));
    if (st->params != NULL && st->params->count > MRD_SQL_PARAMS_MAX)
        return mrd_sql_fail(err, 400, "bad_request", "%s: more than %d params", where,
                            MRD_SQL_PARAMS_MAX);
    for (const mrd_json *m = mrd_json_first(d, obj); m != NULL; m = mrd_json_next(d, m)) {
        const char *k = mrd_json_key(d, m);
        if (strcmp(k, "sql") != 0 && strcmp(k, "params") != 0 && strcmp(where, "request") != 0)
            return bad(err, "%s: unknown key \"%.60s\"", where, k);
    }
    return 0;
}

static int options(const mrd_json_doc *d, const mrd_json *root, mrd_sql_request *req,
                   mrd_sql_error *err)
{
    static const char *known[] = {"sql", "params", "statements", "consistency", "after_lsn",
                                  "timeout_ms"};
    for (const mrd_json *m = mrd_json_first(d, root); m != NULL; m = mrd_json_next(d, m)) {
        const char *k = mrd_json_key(d, m);
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok = ok || strcmp(k, known[i]) == 0;
        if (!ok) return bad(err, "request: unknown key \"%.60s\"%s", k, "");
    }
    const mrd_json *c = mrd_json_get(d, root, "consistency");
    const char *cs = mrd_json_str(d, c);
    if (c != NULL && cs == NULL) return bad(err, "request: \"consistency\" must be a string%s%s", "", "");
    if (cs == NULL || strcmp(cs, "eventual") == 0)
        req->consistency = MRD_SQL_EVENTUAL;
    else if (strcmp(cs, "session") == 0)
        req->consistency = MRD_SQL_SESSION;
    else if (strcmp(cs, "strong") == 0)
        req->consistency = MRD_SQL_STRONG;
    else
        return bad(err, "request: \"consistency\" must be eventual, session or strong, not \"%.40s\"%s", cs, "");
    if (mrd_json_get(d, root, "after_lsn") != NULL &&
        !mrd_json_get_u64(d, root, "after_lsn", &req->after_lsn))
        return bad(err, "request: \"after_lsn\" must be a non-negative integer%s%s", "", "");
    if (req->consistency == MRD_SQL_SESSION && mrd_json_get(d, root, "after_lsn") == NULL)
        return bad(err, "request: \"session\" consistency needs \"after_lsn\"%s%s", "", "");
    req->timeout_ms = MRD_SQL_TIMEOUT_MS_DEFAULT;
    if (mrd_json_get(d, root, "timeout_ms") != NULL &&
        (!mrd_json_get_u64(d, root, "timeout_ms", &req->timeout_ms) ||
         req->timeout_ms > MRD_SQL_TIMEOUT_MS_MAX))
        return mrd_sql_fail(err, 400, "bad_request",
                            "request: \"timeout_ms\" must be an integer 0..%u",
                            MRD_SQL_TIMEOUT_MS_MAX);
    return 0;
}

static int statements(mrd_sql_request *req, const mrd_json *list, mrd_sql_error *err)
{
    const mrd_json_doc *d = &req->doc;
    if (list->kind != MRD_JSON_ARRAY)
        return bad(err, "request: \"statements\" must be an array, not %s%s",
                   mrd_json_kind_name(list->kind), "");
    if (list->count == 0 || list->count > MRD_SQL_STATEMENTS_MAX)
        return mrd_sql_fail(err, 400, "bad_request",
                            "request: \"statements\" must hold 1..%d statements, not %u",
                            MRD_SQL_STATEMENTS_MAX, list->count);
    req->stmts = calloc(list->count, sizeof(*req->stmts));
    if (req->stmts == NULL) return mrd_sql_fail(err, 500, "internal", "out of memory");
    uint32_t i = 0;
    for (const mrd_json *s = mrd_json_first(d, list); s != NULL; s = mrd_json_next(d, s), i++) {
        char where[48];
        snprintf(where, sizeof(where), "statements[%u]", i);
        if (s->kind != MRD_JSON_OBJECT)
            return bad(err, "%s: must be an object, not %s", where, mrd_json_kind_name(s->kind));
        int rc = statement(d, s, where, &req->stmts[i], err);
        if (rc != 0) return rc;
    }
    req->count = list->count;
    return 0;
}

int mrd_sql_request_parse(const char *body, size_t len, mrd_sql_request *req, mrd_sql_error *err)
{
    memset(req, 0, sizeof(*req));
    mrd_msg msg = {{0}};
    if (mrd_json_parse(body, len, &req->doc, &msg) != 0)
        return mrd_sql_fail(err, 400, "bad_request", "request body is not valid JSON: %s", msg.text);
    const mrd_json_doc *d = &req->doc;
    const mrd_json *root = mrd_json_root(d);
    int rc;
    if (root->kind != MRD_JSON_OBJECT)
        rc = bad(err, "request: must be a JSON object, not %s%s", mrd_json_kind_name(root->kind), "");
    else
        rc = options(d, root, req, err);
    const mrd_json *list = rc == 0 ? mrd_json_get(d, root, "statements") : NULL;
    if (rc == 0 && list != NULL && mrd_json_get(d, root, "sql") != NULL)
        rc = bad(err, "request: give either \"sql\" or \"statements\", not both%s%s", "", "");
    else if (rc == 0 && list != NULL)
        rc = statements(req, list, err);
    else if (rc == 0 && mrd_json_get(d, root, "params") != NULL && mrd_json_get(d, root, "sql") == NULL)
        rc = bad(err, "request: \"params\" without \"sql\"%s%s", "", "");
    else if (rc == 0) {
        req->stmts = calloc(1, sizeof(*req->stmts));
        rc = req->stmts == NULL ? mrd_sql_fail(err, 500, "internal", "out of memory")
                                : statement(d, root, "request", &req->stmts[0], err);
        req->count = rc == 0 ? 1 : 0;
    }
    if (rc != 0) mrd_sql_request_free(req);
    return rc;
}

void mrd_sql_request_free(mrd_sql_request *req)
{
    free(req->stmts);
    mrd_json_free(&req->doc);
    memset(req, 0, sizeof(*req));
}
