/*
 * The quorum cores under the seeded simulator: many schedules with crashes of
 * up to one AZ plus one node, writer restarts, drops, duplicates and delays,
 * every invariant checked at every step, with segments forgetting up to the
 * VDL they heard; and proof that the checker fails when the writer's rule is
 * broken, or when segments forget past that VDL.
 *
 * MRD_SIM_SEED=n replays one seed (MRD_SIM_VERBOSE=1 prints every event);
 * MRD_SIM_SEEDS=n runs n seeds (default 2000), MRD_SIM_FIRST=n starts there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "meridian/common.h"
#include "meridian/quorum.h"
#include "sim.h"

#define SIM_SEEDS_DEFAULT 2000
#define SIM_BROKEN_SEEDS_MAX 200

static uint64_t env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : fallback;
}

static void sim_many_seeds(void **state)
{
    bool one = getenv("MRD_SIM_SEED") != NULL;
    uint64_t first = one ? env_u64("MRD_SIM_SEED", 0) : env_u64("MRD_SIM_FIRST", 1);
    uint64_t count = one ? 1 : env_u64("MRD_SIM_SEEDS", SIM_SEEDS_DEFAULT);
    sim_options opt = {.write_quorum = QUORUM_WRITE, .verbose = env_u64("MRD_SIM_VERBOSE", 0)};
    sim_result total = {0}, res;
    uint64_t failed = 0, t0 = mrd_now_ms(), all_down[QUORUM_SEGMENTS + 1] = {0};
    for (uint64_t seed = first; seed < first + count; seed++) {
        opt.seed = seed;
        if (sim_run(&opt, &res)) failed++;
        total.records += res.records;
        total.crashes += res.crashes;
        total.writer_restarts += res.writer_restarts;
        total.served += res.served;
        total.msgs += res.msgs;
        total.truncations += res.truncations;
        total.forgotten += res.forgotten;
        all_down[res.max_down]++;
    }
    printf("quorum sim: %llu seeds from %llu, %llu failed, %llu ms: %llu records, %llu messages, "
           "%llu node crashes, %llu writer restarts, %llu records gap-filled\n",
           (unsigned long long)count, (unsigned long long)first, (unsigned long long)failed,
           (unsigned long long)(mrd_now_ms() - t0), (unsigned long long)total.records,
           (unsigned long long)total.msgs, (unsigned long long)total.crashes,
           (unsigned long long)total.writer_restarts, (unsigned long long)total.served);
    printf("quorum sim: %llu writer restarts truncated a tail; seeds by most nodes down at once: "
           "0:%llu 1:%llu 2:%llu 3:%llu; LSN span forgotten %llu\n",
           (unsigned long long)total.truncations, (unsigned long long)all_down[0],
           (unsigned long long)all_down[1], (unsigned long long)all_down[2],
           (unsigned long long)all_down[3], (unsigned long long)total.forgotten);
    assert_int_equal(failed, 0);
}

/* With a write quorum of 3 the writer's VCL passes records on 3 segments: caught. */
static void sim_catches_quorum_of_three(void **state)
{
    sim_options opt = {.write_quorum = 3, .quiet = true};
    sim_result res;
    uint64_t seed;
    for (seed = 1; seed <= SIM_BROKEN_SEEDS_MAX; seed++) {
        opt.seed = seed;
        if (sim_run(&opt, &res)) break;
    }
    assert_true(seed <= SIM_BROKEN_SEEDS_MAX);
    printf("quorum sim: quorum of 3 caught at seed %llu: %s\n", (unsigned long long)seed,
           res.failure);
}

/* Segments that forget past the VDL they heard break recovery's floor: caught. */
static void sim_catches_forgetting_past_the_vdl(void **state)
{
    sim_options opt = {.write_quorum = QUORUM_WRITE, .quiet = true, .forget_past_vdl = true};
    sim_result res;
    uint64_t seed;
    for (seed = 1; seed <= SIM_BROKEN_SEEDS_MAX; seed++) {
        opt.seed = seed;
        if (sim_run(&opt, &res)) break;
    }
    assert_true(seed <= SIM_BROKEN_SEEDS_MAX);
    printf("quorum sim: forgetting past the VDL caught at seed %llu: %s\n",
           (unsigned long long)seed, res.failure);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sim_many_seeds),
        cmocka_unit_test(sim_catches_quorum_of_three),
        cmocka_unit_test(sim_catches_forgetting_past_the_vdl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
