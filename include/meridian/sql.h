/*
 * sql: the SQL API's request and answer, independent of where SQLite runs.
 *
 * A request is JSON: {"sql": "...", "params": [...]} for one statement, or
 * {"statements": [{"sql": "...", "params": [...]}, ...]} for several that run
 * as one transaction; optional "consistency" ("eventual", "session",
 * "strong"), "after_lsn" and "timeout_ms" say how fresh a read must be.
 * Parameters are JSON null, true/false (1/0), integers, floats, strings, or
 * {"base64": "..."} for a blob; `?`, `?NNN`, `:name`, `@name` and `$name`
 * placeholders bind positionally from the array (named ones by position
 * too), or from an object by name ({"name": value}, the sigil optional).
 *
 * mrd_sql_run executes a parsed request on a connection as one transaction
 * and writes the "results" array of the answer: per statement its columns,
 * rows (blobs as {"base64": "..."}, non-finite floats as null), the rows it
 * changed and the last inserted rowid. Every failure is an mrd_sql_error with
 * an HTTP status and a stable code: bad_request (the body), sql_error (what
 * SQLite said, and which statement), read_only (a write sent to a reader),
 * too_large (an answer past the limits).
 */
#ifndef MERIDIAN_SQL_H
#define MERIDIAN_SQL_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "meridian/common.h"
#include "meridian/json.h"

#define MRD_SQL_STATEMENTS_MAX 1000
#define MRD_SQL_PARAMS_MAX 999
#define MRD_SQL_ROWS_MAX 100000               /* rows in one answer, all statements */
#define MRD_SQL_ANSWER_BYTES_MAX (32u << 20)  /* bytes of one answer */
#define MRD_SQL_TIMEOUT_MS_DEFAULT 5000u
#define MRD_SQL_TIMEOUT_MS_MAX 60000u

typedef enum {
    MRD_SQL_EVENTUAL, /* whatever the instance has */
    MRD_SQL_SESSION,  /* at least after_lsn */
    MRD_SQL_STRONG,   /* at least the primary's VDL when the request arrived */
} mrd_sql_consistency;

typedef struct {
    const mrd_json *sql;    /* STRING */
    const mrd_json *params; /* ARRAY, OBJECT or NULL */
} mrd_sql_stmt;

typedef struct {
    mrd_json_doc doc; /* owns everything the statements point to */
    mrd_sql_stmt *stmts;
    uint32_t count;
    mrd_sql_consistency consistency;
    uint64_t after_lsn;
    uint64_t timeout_ms;
} mrd_sql_request;

typedef struct {
    int http_status; /* 400, 403, 413, 500, 503 ... */
    char code[32];   /* bad_request, sql_error, read_only, too_large, ... */
    char message[MRD_MSG_MAX];
} mrd_sql_error;

/* Parses a request body; on failure err says what is wrong (400 bad_request). */
int mrd_sql_request_parse(const char *body, size_t len, mrd_sql_request *req, mrd_sql_error *err);
void mrd_sql_request_free(mrd_sql_request *req);

/* Whether every statement of the request only reads (prepared on db to tell). */
int mrd_sql_request_readonly(sqlite3 *db, const mrd_sql_request *req, bool *readonly,
                             mrd_sql_error *err);

/*
 * Runs the request on db as one transaction (BEGIN IMMEDIATE when it writes)
 * and appends `"results":[...]` to out. When read_only_instance is set, a
 * statement that would write is refused (403 read_only) before anything runs.
 * On error nothing of the request stays applied and out is unchanged.
 */
int mrd_sql_run(sqlite3 *db, const mrd_sql_request *req, bool read_only_instance, mrd_buf *out,
                mrd_sql_error *err);

/*
 * Group commit: runs the request inside a transaction the caller opened
 * (BEGIN IMMEDIATE) and will commit with others, under a savepoint: on error
 * only this request's changes are undone. If SQLite rolled the whole
 * transaction back (sqlite3_get_autocommit(db) is then true), the requests
 * run before it in the group are undone too: the caller must say so.
 */
int mrd_sql_run_in_group(sqlite3 *db, const mrd_sql_request *req, mrd_buf *out,
                         mrd_sql_error *err);

/* Sets err and returns its mrd code (MRD_EINVAL for 4xx, MRD_EIO otherwise). */
int mrd_sql_fail(mrd_sql_error *err, int http_status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The JSON error body {"error":{"code":...,"message":...}}. */
int mrd_sql_error_json(const mrd_sql_error *err, mrd_buf *out);

#endif
