/*
 * The volume client's replica mode against six fake storage nodes: a volume
 * never written takes its first epoch from the first record; records keep
 * the primary's LSNs, epochs and bytes; a newer epoch (with an LSN gap, as a
 * primary writer restart leaves) waits for everything before it to be
 * durable and then fences the storage at that epoch; a reopened replica
 * resumes at the chain head it recovers, at the epoch it found, and refuses
 * records that do not continue its chain or come from an older epoch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_storage.h"
#include "meridian/volume.h"

#define REPLICA_WAIT_MS 30000 /* generous: sanitizer builds on a busy machine are slow */

typedef struct {
    uv_loop_t loop;
    fk f;
    vol *v;
    bool ready, closed;
    int ready_status, readies;
    uint64_t last;                /* the last record submitted */
    uint64_t pg_last[FK_PGS_MAX]; /* per PG */
    mrd_buf enc;
} tr;

static void on_ready(vol *v, int status, const char *msg, void *ud)
{
    tr *t = ud;
    t->ready = true;
    t->ready_status = status;
    t->readies++;
}

static void on_vdl(vol *v, uint64_t vdl, void *ud) {}

static void on_error(vol *v, int err, const char *msg, void *ud)
{
    fail_msg("replica failed: %s", msg);
}

static const vol_cbs cbs = {.on_ready = on_ready, .on_vdl = on_vdl, .on_error = on_error};

static void spin(tr *t, uint64_t ms)
{
    uint64_t deadline = mrd_now_ms() + ms;
    while (mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
}

static void open_replica(tr *t)
{
    vol_config cfg = {.topo = &t->f.topo, .region = 0, .pg_count_min = 2};
    t->ready = false;
    assert_int_equal(vol_replica_open(&t->loop, &cfg, &cbs, t, &t->v, NULL), 0);
    uint64_t deadline = mrd_now_ms() + REPLICA_WAIT_MS;
    while (!t->ready && mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    assert_true(t->ready);
    assert_int_equal(t->ready_status, 0);
}

static void on_closed(void *ud)
{
    ((tr *)ud)->closed = true;
}

static void close_replica(tr *t)
{
    t->closed = false;
    vol_close(t->v, on_closed, t);
    while (!t->closed)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    t->v = NULL;
}

/* A primary's record at lsn (epoch) on page, continuing the chain; submitted until taken. */
static void submit(tr *t, uint64_t lsn, uint64_t epoch, uint64_t page, bool cpl)
{
    static uint8_t bytes[16];
    memset(bytes, (int)lsn, sizeof(bytes));
    uint32_t pg = (uint32_t)(page / t->f.pages_per_pg);
    wire_record r = {.lsn = lsn,
                     .epoch = epoch,
                     .prev_lsn = t->pg_last[pg],
                     .vol_prev_lsn = t->last,
                     .page = page,
                     .pg = pg,
                     .flags = cpl ? WIRE_REC_CPL : 0,
                     .delta_count = 1};
    r.deltas[0] = (wire_delta){.offset = (uint32_t)(lsn % 64) * 16, .len = 16, .data = bytes};
    t->enc.len = 0;
    assert_int_equal(wire_record_encode(&r, &t->enc, NULL), 0);
    uint64_t deadline = mrd_now_ms() + REPLICA_WAIT_MS;
    int rc;
    while ((rc = vol_replica_submit(t->v, &r, t->enc.data, t->enc.len, NULL)) == MRD_EBUSY &&
           mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    assert_int_equal(rc, 0);
    t->last = lsn;
    t->pg_last[pg] = lsn;
}

static bool vdl_at(tr *t, uint64_t lsn)
{
    uint64_t deadline = mrd_now_ms() + REPLICA_WAIT_MS;
    while (vol_replica_vdl(t->v) < lsn && mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    return vol_replica_vdl(t->v) >= lsn;
}

static int setup(void **state)
{
    tr *t = calloc(1, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(fk_start(&t->f, &t->loop), 0);
    mrd_buf_init(&t->enc);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tr *t = *state;
    if (t->v != NULL) close_replica(t);
    fk_stop(&t->f);
    spin(t, 200);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    mrd_buf_free(&t->enc);
    free(t);
    return 0;
}

/* Whether node n holds lsn with exactly the bytes of a fresh encoding at epoch. */
static const fk_rec *held(const fk_node *n, uint64_t lsn)
{
    for (uint32_t i = 0; i < n->n_recs; i++)
        if (n->recs[i].lsn == lsn) return &n->recs[i];
    return NULL;
}

static void replica_keeps_lsns_epochs_and_bytes(void **state)
{
    tr *t = *state;
    open_replica(t);
    assert_int_equal(vol_replica_epoch(t->v), 0); /* never written */
    assert_int_equal(vol_replica_head(t->v), 0);
    for (uint64_t lsn = 1; lsn <= 50; lsn++)
        submit(t, lsn, 3, lsn % 32, lsn % 5 == 0);
    assert_int_equal(vol_replica_epoch(t->v), 3);
    assert_true(vdl_at(t, 50));
    spin(t, 100);
    for (int s = 0; s < FK_NODES; s++) {
        assert_int_equal(t->f.nodes[s].epoch, 3);
        const fk_rec *r = held(&t->f.nodes[s], 50);
        assert_non_null(r);
        assert_int_equal(r->epoch, 3);
        assert_int_equal(r->enc.len, t->enc.len);
        assert_memory_equal(r->enc.data, t->enc.data, t->enc.len);
    }
    /* the primary's writer restarted: epoch 4, LSNs resume past a gap */
    int readies = t->readies;
    submit(t, 60, 4, 7, false);
    assert_true(t->readies > readies); /* fenced again, at 4 */
    submit(t, 61, 4, 20, true);
    assert_true(vdl_at(t, 61));
    assert_int_equal(vol_replica_epoch(t->v), 4);
    for (int s = 0; s < FK_NODES; s++)
        assert_int_equal(t->f.nodes[s].epoch, 4);
}

static void reopened_replica_resumes_at_its_head(void **state)
{
    tr *t = *state;
    open_replica(t);
    for (uint64_t lsn = 1; lsn <= 30; lsn++)
        submit(t, lsn, 2, lsn % 32, lsn % 3 == 0);
    assert_true(vdl_at(t, 30));
    close_replica(t);
    open_replica(t);
    assert_int_equal(vol_replica_epoch(t->v), 2); /* no new epoch of its own */
    assert_int_equal(vol_replica_head(t->v), 30);
    assert_true(vdl_at(t, 30));
    /* a record that does not continue the chain, and one of an older epoch */
    static uint8_t b[4] = {1, 2, 3, 4};
    wire_record r = {.lsn = 32,
                     .epoch = 2,
                     .prev_lsn = 0,
                     .vol_prev_lsn = 31,
                     .page = 1,
                     .pg = 0,
                     .delta_count = 1};
    r.deltas[0] = (wire_delta){.offset = 0, .len = 4, .data = b};
    t->enc.len = 0;
    assert_int_equal(wire_record_encode(&r, &t->enc, NULL), 0);
    mrd_msg msg = {{0}};
    assert_int_equal(vol_replica_submit(t->v, &r, t->enc.data, t->enc.len, &msg), MRD_EINVAL);
    assert_non_null(strstr(msg.text, "chain"));
    r.epoch = 1;
    assert_int_equal(vol_replica_submit(t->v, &r, t->enc.data, t->enc.len, NULL), MRD_ESTALE);
    submit(t, 31, 2, 9, true);
    assert_true(vdl_at(t, 31));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(replica_keeps_lsns_epochs_and_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(reopened_replica_resumes_at_its_head, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
