/*
 * The volume client's glue against six fake storage nodes on loopback
 * (fake_storage.c): ready after recovery and fence, writes durable at a
 * quorum and read back, read fallback on 409 incomplete, writes that wait
 * while no write quorum exists and go on when nodes return, a second writer
 * recovering what the first made, and the answers that end a writer
 * (stale_epoch, a malformed ack) or only one connection (log_failed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_storage.h"
#include "meridian/volume.h"

typedef struct {
    uv_loop_t loop;
    fk f;
    vol *v;
    bool ready, closed;
    int ready_status;
    int error;
    char error_msg[MRD_MSG_MAX];
    uint64_t vdl;
    uint64_t durable; /* vol_wait callbacks run */
    bool read_done;
    int read_status;
    uint8_t page[4096];
} tx;

static void on_ready(vol *v, int status, const char *msg, void *ud)
{
    tx *t = ud;
    t->ready = true;
    t->ready_status = status;
}

static void on_vdl(vol *v, uint64_t vdl, void *ud)
{
    ((tx *)ud)->vdl = vdl;
}

static void on_error(vol *v, int err, const char *msg, void *ud)
{
    tx *t = ud;
    t->error = err;
    snprintf(t->error_msg, sizeof(t->error_msg), "%s", msg);
}

static const vol_cbs cbs = {.on_ready = on_ready, .on_vdl = on_vdl, .on_error = on_error};

/* Runs the loop until *flag (or ms pass); returns *flag. */
static bool run_until(tx *t, const bool *flag, uint64_t ms)
{
    uint64_t deadline = mrd_now_ms() + ms;
    while (!*flag && mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    return *flag;
}

static void open_vol_pgs(tx *t, uint32_t pgs)
{
    vol_config cfg = {.topo = &t->f.topo, .region = 0, .pg_count_min = pgs};
    mrd_msg msg;
    t->ready = false;
    t->error = 0;
    assert_int_equal(vol_open(&t->loop, &cfg, &cbs, t, &t->v, &msg), 0);
    assert_true(run_until(t, &t->ready, 10000));
    assert_int_equal(t->ready_status, 0);
}

static void open_vol(tx *t)
{
    open_vol_pgs(t, 2);
}

static void on_closed(void *ud)
{
    ((tx *)ud)->closed = true;
}

static void close_vol(tx *t)
{
    t->closed = false;
    vol_close(t->v, on_closed, t);
    assert_true(run_until(t, &t->closed, 5000));
    t->v = NULL;
}

static int setup(void **state)
{
    tx *t = calloc(1, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(fk_start(&t->f, &t->loop), 0);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tx *t = *state;
    if (t->v != NULL) close_vol(t);
    fk_stop(&t->f);
    bool never = false;
    run_until(t, &never, 200); /* lets the servers' handles close */
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(t);
    return 0;
}

static void on_durable(vol *v, uint64_t lsn, void *ud)
{
    ((tx *)ud)->durable++;
}

static void on_read(vol *v, int status, uint64_t page, const uint8_t *data, const char *msg,
                    void *ud)
{
    tx *t = ud;
    t->read_done = true;
    t->read_status = status;
    if (status == 0) memcpy(t->page, data, sizeof(t->page));
}

/* The writer's version of page into t->page (vol_fetch). */
static void fetch(tx *t, uint64_t page)
{
    t->read_done = false;
    assert_int_equal(vol_fetch(t->v, page, on_read, t), 0);
    assert_true(run_until(t, &t->read_done, 10000));
    assert_int_equal(t->read_status, 0);
}

/* Writes n records, each changing one byte of one of pages 0..31 (two PGs). */
static uint64_t write_some(tx *t, uint32_t n, uint8_t mark)
{
    uint64_t lsn = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t page = i % 32;
        fetch(t, page);
        t->page[i % 4096] = mark;
        mrd_msg msg;
        assert_int_equal(vol_write(t->v, page, t->page, true, &lsn, &msg), 0);
        assert_int_equal(vol_wait(t->v, lsn, on_durable, t), 0);
    }
    return lsn;
}

static bool vdl_at(tx *t, uint64_t lsn, uint64_t ms)
{
    uint64_t deadline = mrd_now_ms() + ms;
    while (vol_vdl(t->v) < lsn && mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    return vol_vdl(t->v) >= lsn;
}

static void writes_become_durable_and_read_back(void **state)
{
    tx *t = *state;
    open_vol(t);
    assert_int_equal(vol_info_get(t->v)->epoch, 1);
    assert_int_equal(vol_nodes_up(t->v), 6);
    uint64_t last = write_some(t, 100, 0x5a);
    assert_true(vdl_at(t, last, 10000));
    bool flag = false;
    run_until(t, &flag, 50); /* the waiters of the last records run from the loop */
    assert_int_equal(t->durable, 100);
    assert_true(t->vdl >= last);
    /* page 3 at VDL, read from storage, is what the writer has */
    fetch(t, 3);
    uint8_t want[4096];
    memcpy(want, t->page, sizeof(want));
    t->read_done = false;
    assert_int_equal(vol_read(t->v, 3, vol_vdl(t->v), on_read, t), 0);
    assert_true(run_until(t, &t->read_done, 10000));
    assert_int_equal(t->read_status, 0);
    assert_memory_equal(t->page, want, sizeof(want));
    for (int s = 0; s < FK_NODES; s++)
        assert_int_equal(t->f.nodes[s].epoch, 1); /* all six fenced */
}

static void reads_fall_back_on_incomplete(void **state)
{
    tx *t = *state;
    open_vol(t);
    uint64_t last = write_some(t, 40, 0x11);
    assert_true(vdl_at(t, last, 10000));
    for (int s = 0; s < 5; s++)
        t->f.nodes[s].reads_incomplete = true;
    t->read_done = false;
    assert_int_equal(vol_read(t->v, 5, vol_vdl(t->v), on_read, t), 0);
    assert_true(run_until(t, &t->read_done, 10000));
    assert_int_equal(t->read_status, 0);
    assert_true(vol_stats_get(t->v)->read_fallbacks >= 1);
    assert_true(t->f.nodes[5].reads >= 1);
}

static void writes_wait_without_a_quorum(void **state)
{
    tx *t = *state;
    open_vol(t);
    uint64_t before = write_some(t, 10, 0x21);
    assert_true(vdl_at(t, before, 10000));
    /* AZ a and one more: three nodes left, no write quorum */
    fk_node_stop(&t->f.nodes[0]);
    fk_node_stop(&t->f.nodes[1]);
    fk_node_stop(&t->f.nodes[2]);
    uint64_t last = write_some(t, 10, 0x22);
    assert_false(vdl_at(t, last, 1500));
    assert_int_equal(t->error, 0); /* waiting is no error */
    assert_int_equal(fk_node_start(&t->f.nodes[2]), 0);
    assert_true(vdl_at(t, last, 10000));
    assert_int_equal(fk_node_start(&t->f.nodes[0]), 0);
    assert_int_equal(fk_node_start(&t->f.nodes[1]), 0);
    uint64_t more = write_some(t, 10, 0x23);
    assert_true(vdl_at(t, more, 10000));
    assert_int_equal(t->error, 0);
}

static void a_second_writer_recovers_the_first(void **state)
{
    tx *t = *state;
    open_vol(t);
    uint64_t last = write_some(t, 64, 0x31);
    assert_true(vdl_at(t, last, 10000));
    fetch(t, 7);
    uint8_t want[4096];
    memcpy(want, t->page, sizeof(want));
    close_vol(t);
    open_vol(t);
    const vol_info *info = vol_info_get(t->v);
    assert_int_equal(info->epoch, 2);
    assert_int_equal(info->vcl, last);
    assert_int_equal(info->vdl, last);
    assert_true(info->first_lsn > last);
    fetch(t, 7); /* read from storage at the restart point */
    assert_memory_equal(t->page, want, sizeof(want));
    uint64_t next = write_some(t, 5, 0x32);
    assert_true(next > last);
    assert_true(vdl_at(t, next, 10000));
}

/* PGs 2 and 3 are tracked but hold nothing anywhere: the floor stays at PG 0/1's SCLs,
 * and round two reads only what lies above it. */
static void empty_pgs_keep_recovery_short(void **state)
{
    tx *t = *state;
    open_vol_pgs(t, 4);
    uint64_t last = write_some(t, 64, 0x61);
    assert_true(vdl_at(t, last, 10000));
    close_vol(t);
    open_vol_pgs(t, 4);
    const vol_info *info = vol_info_get(t->v);
    assert_int_equal(info->pg_count, 4);
    assert_int_equal(info->vcl, last);
    /* pages 0..31 in runs of 16: PG 0 took LSNs 1-16 and 33-48, PG 1 17-32 and 49-64; the
     * floor is PG 0's last record and round two reads PG 1's last 16 from six nodes (with
     * PGs 2 and 3 holding it down, the floor would be 0 and it would read all 64 six times) */
    assert_int_equal(last, 64);
    assert_int_equal(info->floor, 48);
    assert_int_equal(info->headers, 16 * 6);
    uint64_t next = write_some(t, 4, 0x62);
    assert_true(vdl_at(t, next, 10000));
}

static void stale_epoch_ends_the_writer(void **state)
{
    tx *t = *state;
    open_vol(t);
    t->f.nodes[4].append_status = 409;
    t->f.nodes[4].append_code = "stale_epoch";
    uint64_t lsn = 0;
    fetch(t, 1);
    mrd_msg msg;
    assert_int_equal(vol_write(t->v, 1, t->page, true, &lsn, &msg), 0);
    bool flag = false;
    run_until(t, &flag, 500);
    assert_int_equal(t->error, MRD_ESTALE);
    assert_non_null(strstr(t->error_msg, "s5"));
    assert_int_equal(vol_write(t->v, 1, t->page, true, &lsn, &msg), MRD_ESTATE);
}

static void a_malformed_ack_ends_the_writer(void **state)
{
    tx *t = *state;
    open_vol(t);
    t->f.nodes[2].garbage_ack = true;
    write_some(t, 1, 0x41);
    bool flag = false;
    run_until(t, &flag, 500);
    assert_int_equal(t->error, MRD_EPROTO);
    assert_non_null(strstr(t->error_msg, "s3"));
}

static void log_failed_drops_only_that_node(void **state)
{
    tx *t = *state;
    open_vol(t);
    t->f.nodes[0].append_status = 503;
    t->f.nodes[0].append_code = "log_failed";
    t->f.nodes[0].append_faults_left = 3;
    uint64_t last = write_some(t, 30, 0x51);
    assert_true(vdl_at(t, last, 10000));
    assert_int_equal(t->error, 0);
    assert_true(vol_stats_get(t->v)->reconnects >= 1);
    /* back after the faults: it gets its records again */
    uint64_t deadline = mrd_now_ms() + 10000;
    while (t->f.nodes[0].n_recs < 30 && mrd_now_ms() < deadline)
        uv_run(&t->loop, UV_RUN_NOWAIT), uv_sleep(1);
    assert_int_equal(t->f.nodes[0].n_recs, 30);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* h2 writes to peers that may be gone */
    mrd_log_init("test_vol_fake", getenv("VOL_TEST_LOG")
                                      ? MRD_LOG_INFO
                                      : MRD_LOG_ERROR); /* reconnect warnings are expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writes_become_durable_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_fall_back_on_incomplete, setup, teardown),
        cmocka_unit_test_setup_teardown(writes_wait_without_a_quorum, setup, teardown),
        cmocka_unit_test_setup_teardown(a_second_writer_recovers_the_first, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_pgs_keep_recovery_short, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_epoch_ends_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(a_malformed_ack_ends_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(log_failed_drops_only_that_node, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
