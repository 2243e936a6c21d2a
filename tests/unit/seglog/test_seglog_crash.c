/*
 * Power cuts at random calls over many seeds: every entry whose sync returned 0
 * is there after recovery, and nothing half-written ever appears (the log reads
 * back as LSNs 1..n, each with the payload its LSN implies).
 */
#include <errno.h>

#include "seglog_test.h"

#define CRASH_SEEDS 2000
#define CRASH_ROUNDS 4        /* crashes per seed; the disk carries over */
#define CRASH_SYNCS_MAX 40    /* syncs per round */
#define CRASH_CALLS_BUDGET 90 /* the power goes out within this many calls */

typedef struct {
    test_rng rng;
    seglog_fake *fake;
    uint64_t acked; /* highest LSN a successful sync covered */
    uint64_t syncs_ok;
    uint64_t tails_cut;
    uint64_t logs_failed;
} crash_run;

/* Stages one to three appends, then syncs; a fault switch fires now and then. */
static int crash_step(crash_run *c, seglog *log)
{
    int appends = 1 + (int)(test_rand(&c->rng) % 3);
    for (int i = 0; i < appends; i++) {
        uint64_t lsn = seglog_lsn_last(log);
        uint64_t n = 1 + test_rand(&c->rng) % 3;
        int rc = test_append_range(log, lsn + 1, lsn + n);
        if (rc == MRD_ETOOBIG) break;
        if (rc != 0) return rc;
    }
    uint64_t dice = test_rand(&c->rng) % 20;
    if (dice == 0) seglog_fake_fail(c->fake, SEGLOG_OP_PWRITE, 1, ENOSPC);
    if (dice == 1) seglog_fake_fail(c->fake, SEGLOG_OP_FDATASYNC, 1, EIO);
    mrd_msg msg;
    int rc = seglog_sync(log, &msg);
    if (rc == 0) c->acked = seglog_lsn_durable(log);
    c->syncs_ok += rc == 0;
    return rc;
}

static void crash_round(crash_run *c)
{
    seglog_recovery rep;
    seglog *log = test_open(c->fake, &rep);
    uint64_t last = test_check_log(log, 0);
    if (last < c->acked)
        fail_msg("acknowledged lsn %llu lost (log ends at %llu)", (unsigned long long)c->acked,
                 (unsigned long long)last);
    assert_int_equal(rep.lsn_last, last);
    c->tails_cut += rep.truncated;
    c->acked = last; /* what survived a crash is on disk now */
    seglog_fake_power_cut(c->fake, test_rand(&c->rng) % CRASH_CALLS_BUDGET);
    for (int i = 0; i < CRASH_SYNCS_MAX; i++) {
        int rc = crash_step(c, log);
        if (rc != 0 && seglog_failed(log)) break;
    }
    c->logs_failed += seglog_failed(log);
    seglog_close(log);
    seglog_fake_crash(c->fake, (seglog_crash_mode)(test_rand(&c->rng) % 3));
}

static void acknowledged_entries_survive_power_cuts(void **state)
{
    uint64_t tails = 0, syncs = 0, failed = 0, entries = 0;
    for (uint64_t seed = 1; seed <= CRASH_SEEDS; seed++) {
        crash_run c = {.rng = {seed}, .fake = seglog_fake_new(seed)};
        for (int r = 0; r < CRASH_ROUNDS; r++)
            crash_round(&c);
        seglog_recovery rep;
        seglog *log = test_open(c.fake, &rep);
        c.tails_cut += rep.truncated;
        uint64_t last = test_check_log(log, 0);
        assert_true(last >= c.acked);
        tails += c.tails_cut;
        syncs += c.syncs_ok;
        failed += c.logs_failed;
        entries += last;
        seglog_close(log);
        seglog_fake_free(c.fake);
    }
    /* The schedules must actually tear tails, or the test proves little. */
    print_message("%d seeds x %d crashes: %llu syncs acknowledged, %llu entries at the end, "
                  "%llu torn tails cut, %llu logs failed on a fault\n",
                  CRASH_SEEDS, CRASH_ROUNDS, (unsigned long long)syncs, (unsigned long long)entries,
                  (unsigned long long)tails, (unsigned long long)failed);
    assert_true(tails > CRASH_SEEDS / 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(acknowledged_entries_survive_power_cuts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
