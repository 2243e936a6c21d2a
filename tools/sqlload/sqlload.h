/*
 * sqlload's parts shared between its files: the blocking SQL request that setup and
 * the checks use, and the list-append workload (append.c) that main() hands its
 * options to.
 */
#ifndef SQLLOAD_H
#define SQLLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "meridian/h2.h"
#include "meridian/json.h"
#include "meridian/topo.h"

#define SQLLOAD_FETCH_TRY_MS 30000     /* how long 502, 503, no connection are retried */
#define SQLLOAD_FETCH_TIMEOUT_MS 15000 /* one request */

/* One SQL request, sent again while the endpoint answers 502 or 503 or cannot be reached,
 * for up to SQLLOAD_FETCH_TRY_MS. 0 and the parsed answer of a 200; else a message on
 * stderr and -1. */
int sqlload_fetch(const topo_addr *addr, h2_tls *tls, const char *body, mrd_json_doc *doc);

/* What `sqlload append` and `sqlload append-check` are told (see append.c). */
typedef struct {
    topo_addr addr;      /* appends; append-check: where the final lists are read */
    topo_addr read_addr; /* reads, when has_read_addr; else addr */
    bool has_read_addr;
    h2_tls *tls;
    int clients;
    uint64_t duration_ms;
    const char *log;          /* the history: written by append, read by append-check */
    const char *final;        /* append-check: where the final lists go as JSON */
    int keys;                 /* keys appended to at any moment */
    uint64_t appends_per_key; /* appends a key takes before a fresh key replaces it */
    int reads_percent;        /* share of operations that are reads */
    uint64_t id_base, key_base;
    bool has_id_base, has_key_base;
    const char *consistency; /* append: of reads; append-check: of the final read */
    uint64_t after_lsn;
    bool has_after_lsn;
    uint64_t op_timeout_ms;
    uint64_t seed;
    bool has_seed;
} ap_config;

/* The workload: 0, or 2 when its setup failed. */
int ap_run_workload(const ap_config *cfg);
/* The final lists of every key of the log: 0, or 2 when they could not be read. */
int ap_check(const ap_config *cfg);

#endif
