/*
 * A deterministic, seeded simulation of one writer and six storage nodes
 * (node i holds segment i of every PG) around the quorum cores: a fake network
 * (delays, drops, duplicates, reordering), a fake disk per segment that loses
 * what was not fdatasynced at a crash, crash-restarts of up to one AZ plus one
 * node, writer restarts through recovery at a read quorum, gossip gap
 * fill, and segments that forget records up to the VDL they heard (then serve
 * them from their disk). The checker runs at every step; on a broken invariant the run stops
 * and prints the seed, the rule and the last events of the schedule.
 */
#ifndef MERIDIAN_TEST_QUORUM_SIM_H
#define MERIDIAN_TEST_QUORUM_SIM_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t seed;
    uint32_t write_quorum; /* the writer core's quorum: QUORUM_WRITE, or a broken rule */
    bool verbose;          /* print every event as it happens */
    bool quiet;            /* do not print the failure report */
    bool forget_past_vdl;  /* a broken rule: segments forget up to SCL, ignoring the VDL */
} sim_options;

typedef struct {
    bool ok;
    char failure[256]; /* the invariant that broke */
    uint64_t records, vdl, crashes, writer_restarts, served, msgs, end_ms;
    uint64_t max_down;    /* most nodes down at once */
    uint64_t truncations; /* writer restarts that discarded records */
    uint64_t forgotten;   /* LSN span segments forgot (SC_EV_FORGET) */
} sim_result;

/* Runs one seed. Returns 0 when every invariant held and the volume converged. */
int sim_run(const sim_options *opt, sim_result *res);

#endif
