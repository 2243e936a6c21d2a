/*
 * The SQL API's request parser on hostile bytes: a refusal is a 400
 * bad_request with a message; an accepted request has 1..max statements,
 * each with a non-empty SQL string and params that are an array, an object
 * or absent.
 */
#include <stdlib.h>
#include <string.h>

#include "meridian/sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mrd_sql_request req;
    mrd_sql_error err;
    if (mrd_sql_request_parse((const char *)data, size, &req, &err) != 0) {
        if (err.http_status != 400 || strcmp(err.code, "bad_request") != 0 || err.message[0] == '\0')
            abort();
        return 0;
    }
    if (req.count == 0 || req.count > MRD_SQL_STATEMENTS_MAX) abort();
    for (uint32_t i = 0; i < req.count; i++) {
        const mrd_sql_stmt *s = &req.stmts[i];
        if (s->sql == NULL || s->sql->kind != MRD_JSON_STRING || s->sql->str_len == 0) abort();
        if (s->params != NULL && s->params->kind != MRD_JSON_ARRAY &&
            s->params->kind != MRD_JSON_OBJECT)
            abort();
    }
    mrd_sql_request_free(&req);
    return 0;
}
