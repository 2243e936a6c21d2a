/*
 * writer: a region's writer instance (`meridiand --role writer`).
 *
 * The writer keeps no database file. At start it opens the region's volume
 * through the quorum client (vol_*: recovery from a read quorum, a new epoch
 * fenced on the storage nodes), then opens SQLite on the volume through the
 * Meridian VFS on its SQL thread. From then on:
 *
 *  - POST /v1/sql runs a request on the SQL thread as one transaction.
 *    Requests that arrive while the SQL thread is busy share one commit
 *    (group commit: each runs under its own savepoint, so a failing one
 *    undoes only itself). A commit becomes one run of log records (one per
 *    changed page, the last one the CPL) handed to the volume client, which
 *    ships them to the six segments of their PGs; the SQL thread goes on with
 *    the next group at once (commits are asynchronous, and records of
 *    concurrent commits share network batches). The answer — for reads as for writes — is sent only
 *    when VDL has passed every LSN it depends on: the request's own commit,
 *    or for a read, the last commit the writer had made when it ran.
 *  - GET /v1/log?from=LSN streams the log to readers: a mark with the VDL,
 *    every record above it the writer still holds, then each new record and
 *    each VDL advance as they happen (frames of docs/wire.md).
 *  - /v1/status adds state (recovering, ready, fenced, failed), epoch, vdl,
 *    vcl, lsn_last and recovery's findings; /metrics adds SQL requests,
 *    commits, records and the latency from commit to durable.
 *
 * With settings.rpo_seconds in a global database, the primary's writer asks
 * its agent for the secondaries' lag; while none is within the RPO it refuses
 * new writes (503 rpo_exceeded, nothing applied) and holds the answers of
 * commits already made, and resumes by itself (src/writer/rpo.c).
 *
 * A newer writer (a higher epoch on storage) fences this one: it stops
 * answering SQL (503 fenced) and says so on status; nothing it acknowledged
 * is lost, because it acknowledged only what was durable.
 */
#ifndef MERIDIAN_WRITER_H
#define MERIDIAN_WRITER_H

#include "meridian/node.h"
#include "meridian/region.h"

#define WRITER_SQL_QUEUE_MAX 4096      /* requests waiting for the SQL thread */
#define WRITER_OPEN_HOLD_MS 1000u      /* requests wait this long for a writer still opening */
#define WRITER_GROUP_MAX 256           /* requests that share one commit (group commit) */
#define WRITER_RPO_POLL_MS 250         /* how often the primary's writer asks its agent for lag */
#define WRITER_STREAMS_MAX 32          /* readers streaming the log */
#define WRITER_STREAM_QUEUED_MAX (8u << 20) /* bytes queued to one reader before it is cut off */
#define WRITER_BACKLOG_RECORDS 65536u  /* recent records kept for readers that (re)connect */

typedef struct writer writer;

typedef struct {
    rg_inst_mode mode;  /* RG_INST_WRITER, RG_INST_DRAINED or RG_INST_STANDBY */
    uint64_t epoch_min; /* the volume epoch to open at, at least (rg_volume_epoch_min) */
    uint64_t global_epoch;
    /* Asks for the region state afresh (rg_watch_refresh): called when the writer finds
     * it was stopped or starved for a while; writer_region_changed then confirms it. */
    void (*confirm)(void *ud);
    void *confirm_ud;
} writer_options;

/*
 * Starts the writer in o->mode: WRITER opens the volume and takes writes; DRAINED
 * opens it and takes none (a planned switchover drains this region: 503 draining,
 * retryable); STANDBY opens nothing (the region is a secondary: 503 secondary_region).
 */
int writer_start(mrd_node *node, const writer_options *o, writer **out, mrd_msg *msg);
/*
 * The region's state changed (st's mode for this instance: rg_inst_mode_of). WRITER
 * and DRAINED switch in place: a draining writer refuses new requests, finishes those
 * in flight and then reports "drained" with its final VDL on /v1/status. Any other
 * change restarts the process (mrd_node_restart) as what the instance now is.
 */
void writer_region_changed(writer *w, const rg_state *st);

#endif
