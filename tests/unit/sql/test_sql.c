/*
 * The SQL API's request parsing and execution on an in-memory SQLite
 * connection: answers, one transaction per request, every refusal with its
 * code, status and message; and, on a file whose reads fail on demand, that an
 * I/O error while SQLite prepares or steps a statement answers 503 unavailable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "meridian/sql.h"

static sqlite3 *db;

static int setup(void **state)
{
    (void)state;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sqlite3_close(db);
    return 0;
}

/* Runs body; returns the answer's results text (caller frees) or NULL with *err. */
static char *run(const char *body, bool read_only, mrd_sql_error *err)
{
    mrd_sql_request req;
    memset(err, 0, sizeof(*err));
    if (mrd_sql_request_parse(body, strlen(body), &req, err) != 0) return NULL;
    mrd_buf out;
    mrd_buf_init(&out);
    int rc = mrd_sql_run(db, &req, read_only, &out, err);
    mrd_sql_request_free(&req);
    if (rc != 0) {
        assert_int_equal(out.len, 0);
        mrd_buf_free(&out);
        return NULL;
    }
    mrd_buf_append(&out, "", 1);
    return (char *)out.data;
}

static void expect(const char *body, const char *want)
{
    mrd_sql_error err;
    char *got = run(body, false, &err);
    if (got == NULL) fail_msg("%s: %s %s", body, err.code, err.message);
    if (strcmp(got, want) != 0) fail_msg("%s:\n got  %s\n want %s", body, got, want);
    free(got);
}

static void refused(const char *body, bool read_only, int status, const char *code,
                    const char *message)
{
    mrd_sql_error err;
    char *got = run(body, read_only, &err);
    if (got != NULL) fail_msg("%s: accepted: %s", body, got);
    if (err.http_status != status || strcmp(err.code, code) != 0 || strstr(err.message, message) == NULL)
        fail_msg("%s: got %d %s \"%s\", want %d %s \"%s\"", body, err.http_status, err.code,
                 err.message, status, code, message);
}

static void answers(void **state)
{
    (void)state;
    expect("{\"sql\": \"CREATE TABLE t (k INTEGER PRIMARY KEY, v, b BLOB)\"}",
           "\"results\":[{\"columns\":[],\"rows\":[],\"changes\":0,\"last_insert_rowid\":0}]");
    expect("{\"sql\": \"INSERT INTO t (v, b) VALUES (?, ?)\", \"params\": [\"h\\u00e9\\\"\", "
           "{\"base64\": \"AAEC/w==\"}]}",
           "\"results\":[{\"columns\":[],\"rows\":[],\"changes\":1,\"last_insert_rowid\":1}]");
    expect("{\"statements\": [{\"sql\": \"INSERT INTO t (v) VALUES (:v)\", \"params\": {\"v\": 2.5}},"
           " {\"sql\": \"INSERT INTO t (v) VALUES ($x)\", \"params\": {\"$x\": true}},"
           " {\"sql\": \"SELECT k, v, b, 1.0, 1e300 * 1e300 FROM t ORDER BY k\"}]}",
           "\"results\":[{\"columns\":[],\"rows\":[],\"changes\":1,\"last_insert_rowid\":2},"
           "{\"columns\":[],\"rows\":[],\"changes\":1,\"last_insert_rowid\":3},"
           "{\"columns\":[\"k\",\"v\",\"b\",\"1.0\",\"1e300 * 1e300\"],\"rows\":["
           "[1,\"h\xc3\xa9\\\"\",{\"base64\":\"AAEC/w==\"},1.0,null],"
           "[2,2.5,null,1.0,null],[3,1,null,1.0,null]],\"changes\":0,\"last_insert_rowid\":0}]");
}

static void one_transaction_per_request(void **state)
{
    (void)state;
    expect("{\"sql\": \"CREATE TABLE u (k INTEGER PRIMARY KEY)\"}",
           "\"results\":[{\"columns\":[],\"rows\":[],\"changes\":0,\"last_insert_rowid\":0}]");
    /* The second statement fails: the first is rolled back with it. */
    refused("{\"statements\": [{\"sql\": \"INSERT INTO u VALUES (1)\"},"
            " {\"sql\": \"INSERT INTO u VALUES (1)\"}]}",
            false, 400, "sql_error", "statements[1]: UNIQUE constraint failed: u.k");
    expect("{\"sql\": \"SELECT count(*) AS n FROM u\"}",
           "\"results\":[{\"columns\":[\"n\"],\"rows\":[[0]],\"changes\":0,\"last_insert_rowid\":0}]");
    refused("{\"sql\": \"BEGIN\"}", false, 400, "not_allowed", "transaction control");
    refused("{\"sql\": \"COMMIT\"}", false, 400, "not_allowed", "transaction control");
    refused("{\"sql\": \"ATTACH '/etc/passwd' AS x\"}", false, 400, "not_allowed", "ATTACH");
    refused("{\"sql\": \"PRAGMA journal_mode=DELETE\"}", false, 400, "not_allowed", "PRAGMA");
    expect("{\"sql\": \"PRAGMA user_version\"}",
           "\"results\":[{\"columns\":[\"user_version\"],\"rows\":[[0]],\"changes\":0,"
           "\"last_insert_rowid\":0}]");
    assert_true(sqlite3_get_autocommit(db));
}

static void refusals(void **state)
{
    (void)state;
    expect("{\"sql\": \"CREATE TABLE r (k)\"}",
           "\"results\":[{\"columns\":[],\"rows\":[],\"changes\":0,\"last_insert_rowid\":0}]");
    refused("{\"sql\": \"INSERT INTO r VALUES (1)\"}", true, 403, "read_only", "read-only");
    refused("{\"sql\": \"SELEC 1\"}", false, 400, "sql_error", "sql: near \"SELEC\": syntax error");
    refused("{\"sql\": \"SELECT * FROM nope\"}", false, 400, "sql_error", "no such table: nope");
    refused("{\"sql\": \"SELECT 1; SELECT 2\"}", false, 400, "bad_request", "more than one statement");
    refused("{\"sql\": \"SELECT ?\"}", false, 400, "bad_request", "has 1 parameters, 0 given");
    refused("{\"sql\": \"SELECT ?\", \"params\": [1, 2]}", false, 400, "bad_request", "2 given");
    refused("{\"sql\": \"SELECT :a\", \"params\": {\"b\": 1}}", false, 400, "bad_request",
            "no value for parameter :a");
    refused("{\"sql\": \"SELECT ?\", \"params\": [[1]]}", false, 400, "bad_request", "arrays");
    refused("{\"sql\": \"SELECT ?\", \"params\": [{\"base64\": \"@@\"}]}", false, 400,
            "bad_request", "valid base64");
    refused("{\"sql\": 7}", false, 400, "bad_request", "\"sql\" must be a string, not number");
    refused("{\"sql\": \"\"}", false, 400, "bad_request", "empty");
    refused("{\"sq\": \"SELECT 1\"}", false, 400, "bad_request", "unknown key \"sq\"");
    refused("{}", false, 400, "bad_request", "\"sql\" is missing");
    refused("[]", false, 400, "bad_request", "must be a JSON object, not array");
    refused("{\"sql\": \"SELECT 1\"", false, 400, "bad_request", "not valid JSON: JSON line 1 column 19");
    refused("{\"statements\": []}", false, 400, "bad_request", "1..1000 statements, not 0");
    refused("{\"statements\": [1]}", false, 400, "bad_request", "statements[0]: must be an object");
    refused("{\"statements\": [{\"sql\": \"SELECT 1\", \"x\": 1}]}", false, 400, "bad_request",
            "statements[0]: unknown key \"x\"");
    refused("{\"sql\": \"SELECT 1\", \"statements\": []}", false, 400, "bad_request", "not both");
    refused("{\"sql\": \"SELECT 1\", \"consistency\": \"linear\"}", false, 400, "bad_request",
            "eventual, session or strong");
    refused("{\"sql\": \"SELECT 1\", \"consistency\": \"session\"}", false, 400, "bad_request",
            "needs \"after_lsn\"");
    refused("{\"sql\": \"SELECT 1\", \"after_lsn\": -1}", false, 400, "bad_request", "after_lsn");
    refused("{\"sql\": \"SELECT 1\", \"timeout_ms\": 999999}", false, 400, "bad_request", "timeout_ms");
    refused("{\"sql\": \"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s) "
            "SELECT x FROM s\"}",
            false, 413, "too_large", "add a LIMIT");
}

static void request_options(void **state)
{
    (void)state;
    mrd_sql_request req;
    mrd_sql_error err;
    const char *body = "{\"sql\": \"SELECT 1\", \"consistency\": \"session\", \"after_lsn\": 42, "
                       "\"timeout_ms\": 250}";
    assert_int_equal(mrd_sql_request_parse(body, strlen(body), &req, &err), 0);
    assert_int_equal(req.consistency, MRD_SQL_SESSION);
    assert_int_equal(req.after_lsn, 42);
    assert_int_equal(req.timeout_ms, 250);
    mrd_sql_request_free(&req);
    body = "{\"sql\": \"SELECT 1\"}";
    assert_int_equal(mrd_sql_request_parse(body, strlen(body), &req, &err), 0);
    assert_int_equal(req.consistency, MRD_SQL_EVENTUAL);
    assert_int_equal(req.timeout_ms, MRD_SQL_TIMEOUT_MS_DEFAULT);
    mrd_sql_request_free(&req);
    mrd_buf out;
    mrd_buf_init(&out);
    mrd_sql_fail(&err, 403, "read_only", "a \"quoted\" message");
    mrd_sql_error_json(&err, &out);
    mrd_buf_append(&out, "", 1);
    assert_string_equal((char *)out.data,
                        "{\"error\":{\"code\":\"read_only\",\"message\":\"a \\\"quoted\\\" message\"}}\n");
    mrd_buf_free(&out);
}

/* Group commit: requests under savepoints in one transaction; a failing one undoes itself only. */
static void group_of_requests(void **state)
{
    (void)state;
    const char *bodies[] = {"{\"sql\": \"INSERT INTO g VALUES (1)\"}",
                            ("{\"statements\": [{\"sql\": \"INSERT INTO g VALUES (2)\"},"
                             " {\"sql\": \"INSERT INTO g VALUES (1)\"}]}"),
                            "{\"sql\": \"INSERT INTO g VALUES (3)\"}"};
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE g (k INTEGER PRIMARY KEY)", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int want[] = {0, MRD_EINVAL, 0};
    for (int i = 0; i < 3; i++) {
        mrd_sql_request req;
        mrd_sql_error err;
        mrd_buf out;
        mrd_buf_init(&out);
        assert_int_equal(mrd_sql_request_parse(bodies[i], strlen(bodies[i]), &req, &err), 0);
        assert_int_equal(mrd_sql_run_in_group(db, &req, &out, &err), want[i]);
        if (want[i] != 0) {
            assert_int_equal(out.len, 0);
            assert_non_null(strstr(err.message, "statements[1]: UNIQUE constraint failed"));
        }
        assert_false(sqlite3_get_autocommit(db));
        mrd_sql_request_free(&req);
        mrd_buf_free(&out);
    }
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    expect("{\"sql\": \"SELECT group_concat(k) AS ks FROM g\"}",
           "\"results\":[{\"columns\":[\"ks\"],\"rows\":[[\"1,3\"]],\"changes\":0,"
           "\"last_insert_rowid\":0}]");
}

/* ---- a VFS whose reads fail on demand (a volume that cannot give a page) ---------------- */

static bool reads_fail;
static sqlite3_vfs *base_vfs;
static sqlite3_vfs failing_vfs;

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, right after this struct */
} failing_file;

#define REAL(f) (((failing_file *)(f))->real)

static int ff_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    if (reads_fail) return SQLITE_IOERR_READ;
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int ff_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int ff_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static const sqlite3_io_methods failing_methods = {
    .iVersion = 1, /* no shared memory: rollback journal only */
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_reserved,
    .xFileControl = ff_control,
    .xSectorSize = ff_sector,
    .xDeviceCharacteristics = ff_device,
};

static int ff_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    failing_file *ff = (failing_file *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = base_vfs->xOpen(base_vfs, name, ff->real, flags, out);
    ff->base.pMethods = rc == SQLITE_OK ? &failing_methods : NULL;
    return rc;
}

static void failing_vfs_register(void)
{
    if (base_vfs != NULL) return;
    base_vfs = sqlite3_vfs_find(NULL);
    failing_vfs = *base_vfs;
    failing_vfs.iVersion = 1;
    failing_vfs.szOsFile = (int)sizeof(failing_file) + base_vfs->szOsFile;
    failing_vfs.zName = "failing";
    failing_vfs.pNext = NULL;
    failing_vfs.xOpen = ff_open;
    assert_int_equal(sqlite3_vfs_register(&failing_vfs, 0), SQLITE_OK);
}

/* A request on a connection that cannot read a page answers 503 unavailable (nothing
 * changed: send it again), whether SQLite fails while it prepares the statement (a fresh
 * connection loading the schema), while it steps it (a new read transaction re-reading
 * the header) or as a write transaction begins; a syntax error stays 400. */
static void io_errors(void **state)
{
    (void)state;
    failing_vfs_register();
    char dir[] = "/tmp/mrd-test-sql-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/db", dir);
    sqlite3 *keep = db, *fdb = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    assert_int_equal(sqlite3_open_v2(path, &fdb, flags, "failing"), SQLITE_OK);
    assert_int_equal(sqlite3_exec(fdb, "CREATE TABLE f (k); INSERT INTO f VALUES (1)", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(fdb);

    assert_int_equal(sqlite3_open_v2(path, &fdb, flags, "failing"), SQLITE_OK);
    db = fdb;
    reads_fail = true; /* the schema was never read: preparing needs page 1 */
    refused("{\"sql\": \"SELECT k FROM f\"}", false, 503, "unavailable",
            "sql: a page could not be read");
    refused("{\"statements\": [{\"sql\": \"INSERT INTO f VALUES (2)\"}]}", false, 503,
            "unavailable", "nothing was changed, send it again");
    reads_fail = false;
    expect("{\"sql\": \"SELECT count(*) FROM f\"}",
           "\"results\":[{\"columns\":[\"count(*)\"],\"rows\":[[1]],\"changes\":0,"
           "\"last_insert_rowid\":0}]");
    reads_fail = true; /* the schema is known: a query's first read, while it steps */
    refused("{\"sql\": \"SELECT k FROM f\"}", false, 503, "unavailable",
            "sql: a page could not be read");
    refused("{\"sql\": \"INSERT INTO f VALUES (3)\"}", false, 503, "unavailable",
            "cannot begin a transaction"); /* BEGIN IMMEDIATE reads the header */
    refused("{\"sql\": \"SELEC 1\"}", false, 400, "sql_error", "syntax error");
    reads_fail = false;
    expect("{\"sql\": \"SELECT count(*) FROM f\"}",
           "\"results\":[{\"columns\":[\"count(*)\"],\"rows\":[[1]],\"changes\":0,"
           "\"last_insert_rowid\":0}]");
    db = keep;
    assert_int_equal(sqlite3_close(fdb), SQLITE_OK);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answers),
        cmocka_unit_test(one_transaction_per_request),
        cmocka_unit_test(refusals),
        cmocka_unit_test(request_options),
        cmocka_unit_test(group_of_requests),
        cmocka_unit_test(io_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
