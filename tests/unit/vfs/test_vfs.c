/*
 * SQLite through the Meridian VFS over an in-memory versioned page store:
 * a commit ships its pages at xSync as one batch, a rollback ships nothing,
 * a reader's transaction sees one read point (whole commits only), and a
 * database reopened from the store's pages holds what was committed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meridian/vfs.h"

#define PAGE 4096
#define VERSIONS_MAX 100000

/* Every version of every page, with the LSN of the record that made it. */
typedef struct {
    uint64_t page, lsn;
    uint8_t *data;
} version;

typedef struct {
    version v[VERSIONS_MAX];
    uint32_t n;
    uint64_t lsn;         /* last LSN assigned */
    uint64_t durable;     /* what readers pin: a commit LSN */
    uint32_t commits;     /* commit calls */
    uint32_t last_pages;  /* pages in the last commit */
    uint32_t reads;
    int pins;             /* read points pinned now */
} memstore;

static int ms_pin(mrd_pagestore *ps, uint64_t *point, mrd_msg *msg)
{
    (void)msg;
    memstore *m = ps->ud;
    m->pins++;
    *point = m->durable;
    return 0;
}

static void ms_unpin(mrd_pagestore *ps, uint64_t point)
{
    (void)point;
    ((memstore *)ps->ud)->pins--;
}

static int ms_read(mrd_pagestore *ps, uint64_t page, uint64_t point, uint8_t *out, mrd_msg *msg)
{
    (void)msg;
    memstore *m = ps->ud;
    m->reads++;
    memset(out, 0, ps->page_size);
    for (uint32_t i = m->n; i-- > 0;)
        if (m->v[i].page == page && m->v[i].lsn <= point) {
            memcpy(out, m->v[i].data, ps->page_size);
            break;
        }
    return 0;
}

static int ms_commit(mrd_pagestore *ps, const mrd_vfs_page *pages, uint32_t n, uint64_t *lsn,
                     mrd_msg *msg)
{
    memstore *m = ps->ud;
    if (m->n + n > VERSIONS_MAX) return mrd_fail(msg, MRD_ETOOBIG, "memstore full");
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0) assert_true(pages[i].page > pages[i - 1].page); /* ascending */
        uint8_t *copy = malloc(ps->page_size);
        memcpy(copy, pages[i].data, ps->page_size);
        m->v[m->n++] = (version){pages[i].page, ++m->lsn, copy};
    }
    m->commits++;
    m->last_pages = n;
    *lsn = m->lsn;
    return 0;
}

static memstore *ms_new(void)
{
    return calloc(1, sizeof(memstore));
}

static void ms_free(memstore *m)
{
    for (uint32_t i = 0; i < m->n; i++)
        free(m->v[i].data);
    free(m);
}

static mrd_pagestore store_of(memstore *m, bool writable)
{
    return (mrd_pagestore){.ud = m, .page_size = PAGE, .writable = writable, .pin = ms_pin,
                           .unpin = ms_unpin, .read = ms_read, .commit = ms_commit};
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("%s: %s", sql, err);
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

typedef struct {
    memstore *m;
    mrd_pagestore ps;
    mrd_vfs *vfs;
    sqlite3 *db;
} conn;

static void conn_open(conn *c, memstore *m, bool writable)
{
    mrd_msg msg = {{0}};
    c->m = m;
    c->ps = store_of(m, writable);
    if (mrd_vfs_new(&c->ps, &c->vfs, &msg) != 0) fail_msg("%s", msg.text);
    if (mrd_vfs_open(c->vfs, &c->db, &msg) != 0) fail_msg("%s", msg.text);
}

static void conn_close(conn *c)
{
    assert_int_equal(sqlite3_close(c->db), SQLITE_OK);
    mrd_vfs_free(c->vfs);
}

static void commit_ships_pages_rollback_ships_nothing(void **state)
{
    (void)state;
    memstore *m = ms_new();
    conn w;
    conn_open(&w, m, true);
    exec_ok(w.db, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)");
    assert_int_equal(m->commits, 1);
    uint64_t lsn = mrd_vfs_last_commit_lsn(w.vfs);
    assert_int_equal(lsn, m->lsn);
    exec_ok(w.db, "INSERT INTO t VALUES (1, 'one')");
    assert_int_equal(m->commits, 2);
    assert_int_equal(m->last_pages, 2); /* page 1 (change counter) and the table's leaf */
    assert_true(mrd_vfs_last_commit_lsn(w.vfs) > lsn);
    uint32_t before = m->n;
    exec_ok(w.db, "BEGIN; INSERT INTO t VALUES (2, 'two'); INSERT INTO t VALUES (3, 'three'); ROLLBACK");
    assert_int_equal(m->commits, 2);
    assert_int_equal(m->n, before);
    assert_int_equal(query_int(w.db, "SELECT count(*) FROM t"), 1);
    exec_ok(w.db, "BEGIN; INSERT INTO t VALUES (4, 'four'); INSERT INTO t VALUES (5, 'five'); COMMIT");
    assert_int_equal(m->commits, 3);
    assert_int_equal(query_int(w.db, "SELECT count(*) FROM t"), 3);
    /* A failing statement inside a transaction rolls back its own changes only. */
    assert_int_not_equal(sqlite3_exec(w.db, "INSERT INTO t VALUES (1, 'dup')", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_equal(m->commits, 3);
    conn_close(&w);
    ms_free(m);
}

static void reader_sees_whole_commits_at_its_read_point(void **state)
{
    (void)state;
    memstore *m = ms_new();
    conn w, r;
    conn_open(&w, m, true);
    exec_ok(w.db, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)");
    exec_ok(w.db, "WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 500) "
                  "INSERT INTO t SELECT value, randomblob(300) FROM s");
    m->durable = m->lsn;
    conn_open(&r, m, false);
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t"), 500);

    /* The writer commits more; until durable moves, the reader sees the old state. */
    exec_ok(w.db, "BEGIN; DELETE FROM t WHERE k <= 100; INSERT INTO t VALUES (1000, x'00'); COMMIT");
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t"), 500);
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t WHERE k = 1000"), 0);

    /* One read transaction keeps its read point across a commit becoming durable. */
    exec_ok(r.db, "BEGIN");
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t"), 500);
    assert_int_equal(m->pins, 1);
    uint64_t point = mrd_vfs_read_point(r.vfs);
    m->durable = m->lsn;
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t"), 500);
    assert_int_equal(mrd_vfs_read_point(r.vfs), point);
    exec_ok(r.db, "COMMIT");
    assert_int_equal(m->pins, 0);
    /* The next one sees the whole commit. */
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t"), 401);
    assert_int_equal(query_int(r.db, "SELECT count(*) FROM t WHERE k = 1000"), 1);
    assert_int_equal(mrd_vfs_read_point(r.vfs), m->lsn);

    /* Readers cannot write. */
    assert_int_not_equal(sqlite3_exec(r.db, "INSERT INTO t VALUES (2000, x'00')", NULL, NULL, NULL),
                         SQLITE_OK);
    conn_close(&r);
    conn_close(&w);
    ms_free(m);
}

static void reopened_database_holds_every_commit(void **state)
{
    (void)state;
    memstore *m = ms_new();
    conn w;
    conn_open(&w, m, true);
    exec_ok(w.db, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX tv ON t(v)");
    for (int i = 0; i < 200; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, printf('%%0100d', %d))", i, i * 7);
        exec_ok(w.db, sql);
    }
    exec_ok(w.db, "DELETE FROM t WHERE k % 3 = 0");
    int64_t sum = query_int(w.db, "SELECT sum(k) FROM t");
    conn_close(&w);
    /* A new writer (a restart) over the same pages. */
    conn_open(&w, m, true);
    assert_int_equal(query_int(w.db, "SELECT sum(k) FROM t"), sum);
    assert_string_equal("ok", (const char *)"ok");
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(w.db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    /* VACUUM shrinks the file: the size follows page 1's header. */
    int64_t pages_before = query_int(w.db, "PRAGMA page_count");
    exec_ok(w.db, "DELETE FROM t WHERE k > 10; VACUUM");
    assert_true(query_int(w.db, "PRAGMA page_count") < pages_before);
    assert_int_equal(query_int(w.db, "SELECT count(*) FROM t"), 7);
    conn_close(&w);
    ms_free(m);
}

static void journal_files_refused(void **state)
{
    (void)state;
    memstore *m = ms_new();
    conn w;
    conn_open(&w, m, true);
    exec_ok(w.db, "CREATE TABLE t (k)");
    /* Switching to a file journal or WAL is refused: the volume has no such file. */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(w.db, "PRAGMA journal_mode=WAL", -1, &st, NULL), SQLITE_OK);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) assert_string_not_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    exec_ok(w.db, "INSERT INTO t VALUES (1)");
    assert_int_equal(query_int(w.db, "SELECT count(*) FROM t"), 1);
    /* Large sorts spill to temporary files of the default VFS. */
    exec_ok(w.db, "PRAGMA temp_store=FILE; PRAGMA cache_size=10");
    assert_int_equal(query_int(w.db, "WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 20000) "
                               "SELECT count(*) FROM (SELECT value FROM s ORDER BY random())"), 20000);
    conn_close(&w);
    ms_free(m);
}

static void bad_page_sizes_refused(void **state)
{
    (void)state;
    memstore *m = ms_new();
    mrd_pagestore ps = store_of(m, true);
    mrd_vfs *v;
    mrd_msg msg = {{0}};
    ps.page_size = 1000;
    assert_int_equal(mrd_vfs_new(&ps, &v, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "page size 1000"));
    ps.page_size = 256;
    assert_int_equal(mrd_vfs_new(&ps, &v, &msg), MRD_EINVAL);
    ms_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commit_ships_pages_rollback_ships_nothing),
        cmocka_unit_test(reader_sees_whole_commits_at_its_read_point),
        cmocka_unit_test(reopened_database_holds_every_commit),
        cmocka_unit_test(journal_files_refused),
        cmocka_unit_test(bad_page_sizes_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
