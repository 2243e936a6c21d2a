/*
 * router: a region's endpoints (`meridiand --role router`).
 *
 * A router listens on the endpoint addresses the topology gives it and
 * forwards every request it receives there, whole, to one instance. Which
 * instance is a region's writer, and which region is primary, is the
 * regions' word, not the topology's: the router follows every region's agent
 * (rg_watch, GET /v1/region long polls) and keeps each region's latest state.
 *  - cluster: the region's current writer (its state's "writer"; the
 *    topology's until its agent has answered);
 *  - reader: a healthy instance of the region other than its current writer,
 *    with the fewest requests outstanding, skipping instances that are down or
 *    lag more than settings.reader_lag_max_ms; a request whose reader dies
 *    before answering is retried on another;
 *  - custom NAME: like reader, over the endpoint's members (or every instance
 *    but the excluded ones), never the current writer;
 *  - global_writer: the writer of the primary region at the highest global
 *    epoch any agent reports (rg_highest: at equal epochs the primary's own
 *    agent wins).
 * Write forwarding (settings.write_forwarding): in a secondary region (by the
 * states followed) the cluster endpoint goes to the primary's writer, and a
 * request a reader refuses as a write (403 read_only) is sent on to the
 * primary's writer; its answer carries the primary's commit LSN (header
 * meridian-forwarded: primary), so a session read in the secondary can wait
 * for it. Without it, the refusal stands. A write is never sent to a region
 * whose state is at an epoch below the highest known (a stale primary): it
 * waits until that region follows.
 * Its own address serves /v1/status (every backend's health, the primary and
 * epoch followed, each region's writer) and /metrics.
 *
 * Health comes from polling each instance's GET /v1/status: an instance is
 * up when it answers 200 within the poll time-out, and a reader's lag is its
 * reported "lag_ms" (0 until readers report one). The choice of a backend and
 * the reading of a refusal are I/O-free functions (router_pick,
 * router_refusal) so that they are tested on their own.
 *
 * Answers pass through unchanged (status, content-type, meridian-* headers,
 * body), plus `meridian-backend: ID`. A backend that refuses a request before
 * doing anything with it (router_refusal: a writer draining for a switchover,
 * standing by in a secondary, fenced, starting; a stream refused unprocessed)
 * gets it again after the target is resolved anew, as does a request no
 * backend can take yet: it waits (parked; tried again at every poll tick and
 * at once when a region's state changes) up to ROUTER_WAIT_MS, then the
 * router answers with the last refusal as the backend gave it, or 503
 * {"error":{"code":"unavailable",...}} naming why. A request whose backend
 * dies before answering gets 502 backend_failed: for a write, its outcome is
 * unknown, and it is never sent again.
 */
#ifndef MERIDIAN_ROUTER_H
#define MERIDIAN_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/node.h"

/* instances a router may forward to: its region's first (indexes below TOPO_INSTANCES_MAX, so
 * below 64 for router_pick's tried mask), then the other regions' */
#define ROUTER_BACKENDS_MAX (TOPO_REGIONS_MAX * TOPO_INSTANCES_MAX)
#define ROUTER_POLL_MS 500          /* health poll period */
#define ROUTER_POLL_TIMEOUT_MS 1500 /* no answer for this long: down */
#define ROUTER_RETRIES_MAX 2        /* extra readers tried for one request */
/* a request waits this long for a backend to take it: a switchover takes about 1 s */
#define ROUTER_WAIT_MS 5000
#define ROUTER_REDIRECTS_MAX 256    /* refusals one request may be sent again after: parked
                                       requests try every 25 ms for up to ROUTER_WAIT_MS */
#define ROUTER_OUTSTANDING_MAX 4096 /* requests in flight through one router */

/* What router_pick knows of one backend. */
typedef struct {
    bool up;
    bool eligible; /* a member of the endpoint being served */
    uint64_t lag_ms;
    uint32_t outstanding; /* requests forwarded and not yet answered */
} router_backend_view;

/*
 * The backend for a reader-like endpoint: among eligible, up backends not in
 * tried (a bitmask of indexes) whose lag is at most lag_max_ms, the one with
 * the fewest outstanding requests; ties go to the first after `after` in
 * round-robin order. -1 when none qualifies.
 */
int router_pick(const router_backend_view *b, int n, uint64_t tried, uint64_t lag_max_ms,
                int after);

/*
 * Whether a backend's whole answer (HTTP status, body) is a refusal given before
 * the backend did anything with the request, so that sending it again, possibly
 * elsewhere, cannot apply it twice:
 *  - 503 draining, fenced, busy;
 *  - 503 secondary_region when region_primary (the router believes the backend's
 *    region is primary: the writer has not caught up with the state yet; otherwise
 *    it is the answer);
 *  - 503 unavailable said before running ("the writer is recovering the volume",
 *    "the writer is stopping", "the reader is starting", "the instance is
 *    starting", "cannot begin a transaction"), never one said after a commit was
 *    attempted ("the writer cannot make commits durable", "commit failed"): that
 *    outcome is unknown; any 503 unavailable when !to_writer (a reader only
 *    reads: "send it again" is safe, within the router's wait);
 *  - 403 read_only when to_writer (the request was meant for a writer: the
 *    instance has become a reader).
 * code (code_max bytes) receives the error code, "" when the body has none.
 */
bool router_refusal(int status, const uint8_t *body, size_t len, bool to_writer,
                    bool region_primary, char *code, size_t code_max);

typedef struct router router;

/* Starts the endpoint listeners and the health poller on node's loop. */
int router_start(mrd_node *node, router **out, mrd_msg *msg);

#endif
