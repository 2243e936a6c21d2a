/*
 * rg_plan under the seeded region simulator (sim.h, sim.c): many runs of
 * switchovers, there-and-back, retargets, aborts and unplanned failovers
 * under faults, every invariant checked as the run goes; and proof that the
 * checker fails when the planner promotes before the target has caught up.
 *
 * MRD_SIM_SEED=n replays one seed (MRD_SIM_VERBOSE=1 prints every event);
 * MRD_SIM_SEEDS=n runs n seeds (default 2000), MRD_SIM_FIRST=n starts there;
 * MRD_SIM_STRICT=1 also fails on the limits sim.c names (unconfirmed forks, writer changes
 * undone by a stale post).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "meridian/common.h"
#include "region_topo.h"
#include "sim.h"

#define SIM_SEEDS_DEFAULT 2000
#define SIM_BROKEN_SEEDS_MAX 300
#define SIM_FAILURES_SHOWN 10

typedef struct {
    topology *t2, *t3;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL) return -1;
    f->t2 = rt_topology(2);
    f->t3 = rt_topology(3);
    *state = f;
    return f->t2 == NULL || f->t3 == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->t2);
    free(f->t3);
    free(f);
    return 0;
}

static uint64_t env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : fallback;
}

static void add(rsim_result *total, const rsim_result *r)
{
    total->ops += r->ops;
    total->rounds += r->rounds;
    total->cli_runs += r->cli_runs;
    total->cli_crashes += r->cli_crashes;
    total->sets += r->sets;
    total->sets_applied += r->sets_applied;
    total->sets_refused += r->sets_refused;
    total->sets_lost_before += r->sets_lost_before;
    total->sets_lost_after += r->sets_lost_after;
    total->fails += r->fails;
    total->agent_outages += r->agent_outages;
    total->writer_crashes += r->writer_crashes;
    total->writer_restarts += r->writer_restarts;
    total->link_stalls += r->link_stalls;
    total->promotions_planned += r->promotions_planned;
    total->promotions_unplanned += r->promotions_unplanned;
    total->undrains += r->undrains;
    total->retargets += r->retargets;
    total->forks_fixed += r->forks_fixed;
    total->forks_unconfirmed += r->forks_unconfirmed;
    total->rejoins += r->rejoins;
    total->learned_from_peers += r->learned_from_peers;
    total->writes_acked += r->writes_acked;
    total->writer_replacements += r->writer_replacements;
    total->writer_changes_undone += r->writer_changes_undone;
}

#define U(x) ((unsigned long long)(x))

static void sim_many_seeds(void **state)
{
    fixture *f = *state;
    bool one = getenv("MRD_SIM_SEED") != NULL;
    uint64_t first = one ? env_u64("MRD_SIM_SEED", 0) : env_u64("MRD_SIM_FIRST", 1);
    uint64_t count = one ? 1 : env_u64("MRD_SIM_SEEDS", SIM_SEEDS_DEFAULT);
    rsim_options opt = {.topo2 = f->t2,
                        .topo3 = f->t3,
                        .verbose = env_u64("MRD_SIM_VERBOSE", 0) != 0,
                        .strict = env_u64("MRD_SIM_STRICT", 0) != 0};
    rsim_result total = {0}, res;
    uint64_t failed = 0, t0 = mrd_now_ms();
    for (uint64_t seed = first; seed < first + count; seed++) {
        opt.seed = seed;
        if (rsim_run(&opt, &res) && ++failed <= SIM_FAILURES_SHOWN)
            printf("region sim: FAILED %s (replay: MRD_SIM_SEED=%llu MRD_SIM_VERBOSE=1)\n",
                   res.failure, U(seed));
        add(&total, &res);
    }
    printf("region sim: %llu seeds from %llu, %llu failed, %llu ms: %llu operations, %llu rounds, "
           "%llu CLI runs (%llu died), %llu FAILs\n",
           U(count), U(first), U(failed), U(mrd_now_ms() - t0), U(total.ops), U(total.rounds),
           U(total.cli_runs), U(total.cli_crashes), U(total.fails));
    printf("region sim: %llu posts: %llu applied, %llu refused as stale, %llu lost before, "
           "%llu answers lost; %llu planned and %llu unplanned promotions, %llu undrains, "
           "%llu retargets, %llu forks fixed, %llu forks unconfirmed\n",
           U(total.sets), U(total.sets_applied), U(total.sets_refused), U(total.sets_lost_before),
           U(total.sets_lost_after), U(total.promotions_planned), U(total.promotions_unplanned),
           U(total.undrains), U(total.retargets), U(total.forks_fixed), U(total.forks_unconfirmed));
    printf("region sim: %llu agent outages, %llu writer crashes, %llu writers replaced (%llu "
           "undone by a stale post), %llu writer starts, %llu link stalls, %llu epochs learned "
           "from peers, %llu rejoins, %llu writes acknowledged\n",
           U(total.agent_outages), U(total.writer_crashes), U(total.writer_replacements),
           U(total.writer_changes_undone), U(total.writer_restarts), U(total.link_stalls),
           U(total.learned_from_peers), U(total.rejoins), U(total.writes_acked));
    assert_int_equal(failed, 0);
}

/* A planner that promotes as soon as the old primary has drained loses acknowledged writes. */
static void sim_catches_promotion_without_catch_up(void **state)
{
    fixture *f = *state;
    rsim_options opt = {.topo2 = f->t2, .topo3 = f->t3, .planner = RSIM_BROKEN_NO_CATCH_UP};
    rsim_result res;
    uint64_t seed;
    for (seed = 1; seed <= SIM_BROKEN_SEEDS_MAX; seed++) {
        opt.seed = seed;
        if (rsim_run(&opt, &res)) break;
    }
    assert_true(seed <= SIM_BROKEN_SEEDS_MAX);
    printf("region sim: promotion without catch-up caught at seed %llu: %s\n", U(seed),
           res.failure);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sim_many_seeds),
        cmocka_unit_test(sim_catches_promotion_without_catch_up),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
