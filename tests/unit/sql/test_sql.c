/*
 * The SQL API's request parsing and execution on an in-memory SQLite
 * connection: answers, one transaction per request, every refusal with its
 * code, status and message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answers),
        cmocka_unit_test(one_transaction_per_request),
        cmocka_unit_test(refusals),
        cmocka_unit_test(request_options),
        cmocka_unit_test(group_of_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
