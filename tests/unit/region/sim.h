/*
 * A seeded simulator of rg_plan driving switchovers and failovers the way
 * `meridian switchover/failover` does (src/ctl/failover.c), against an
 * in-memory model of 2 or 3 regions: per region an agent holding its state
 * durably, a volume (durable LSN and records) that follows its primary, and
 * a writer instance that restarts on role changes and takes writes while it
 * may. Faults: the CLI dies, agents stop answering, writers crash, posts are
 * lost before or after being applied, replication links stall. The
 * invariants it checks are listed in sim.c.
 */
#ifndef REGION_SIM_H
#define REGION_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "meridian/region.h"

typedef enum {
    RSIM_PLAN,               /* rg_plan as it is */
    RSIM_BROKEN_NO_CATCH_UP, /* promotes as soon as the old primary has drained */
} rsim_planner;

typedef struct {
    uint64_t seed;
    const topology *topo2, *topo3; /* east, west (and south); region_topo.h */
    rsim_planner planner;
    bool verbose; /* every event and step on stdout */
    bool strict;  /* the limits named in sim.c fail the run too */
} rsim_options;

typedef struct {
    uint64_t ops, rounds, cli_runs, cli_crashes;
    uint64_t sets, sets_applied, sets_refused, sets_lost_before, sets_lost_after;
    uint64_t fails, agent_outages, writer_crashes, writer_restarts, link_stalls;
    uint64_t promotions_planned, promotions_unplanned, undrains, retargets, forks_fixed;
    uint64_t forks_unconfirmed, rejoins, learned_from_peers, writes_acked;
    uint64_t writer_replacements, writer_changes_undone;
    char failure[1024]; /* the first broken invariant, with the seed and the round */
} rsim_result;

/* Runs one seed; true when an invariant broke (res->failure says which). */
bool rsim_run(const rsim_options *o, rsim_result *res);

#endif
