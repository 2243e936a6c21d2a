/*
 * router: a region's endpoints (`meridiand --role router`).
 *
 * A router listens on the endpoint addresses the topology gives it and
 * forwards every request it receives there, whole, to one instance:
 *  - cluster: the region's writer;
 *  - reader: a healthy reader with the fewest requests outstanding, skipping
 *    readers that are down or lag more than settings.reader_lag_max_ms; a
 *    request whose reader dies before answering is retried on another;
 *  - custom NAME: like reader, over the endpoint's members (or every reader
 *    but the excluded ones);
 *  - global_writer: the writer of the primary region.
 * Write forwarding (settings.write_forwarding): in a secondary region the
 * cluster endpoint goes to the primary's writer, and a request a reader
 * refuses as a write (403 read_only) is sent on to the primary's writer; its
 * answer carries the primary's commit LSN (header meridian-forwarded:
 * primary), so a session read in the secondary can wait for it. Without it,
 * the refusal stands.
 * Its own address serves /v1/status (every backend's health) and /metrics.
 *
 * Health comes from polling each instance's GET /v1/status: an instance is
 * up when it answers 200 within the poll time-out, and a reader's lag is its
 * reported "lag_ms" (0 until readers report one). The choice of a backend is
 * an I/O-free function (router_pick) so that it is tested on its own.
 *
 * Answers pass through unchanged (status, content-type, meridian-* headers,
 * body), plus `meridian-backend: ID`. When no backend can take a request it
 * waits up to ROUTER_WAIT_MS for one (a writer reconnecting or being
 * promoted, a reader coming back), then the router answers 503
 * {"error":{"code":"unavailable",...}} naming why. A request whose backend
 * dies before answering gets 502 backend_failed: for a write, its outcome is
 * unknown.
 */
#ifndef MERIDIAN_ROUTER_H
#define MERIDIAN_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "meridian/node.h"

#define ROUTER_BACKENDS_MAX 64         /* instances a router may forward to (all regions) */
#define ROUTER_POLL_MS 500             /* health poll period */
#define ROUTER_POLL_TIMEOUT_MS 1500    /* no answer for this long: down */
#define ROUTER_RETRIES_MAX 2           /* extra readers tried for one request */
#define ROUTER_WAIT_MS 3000            /* a request waits this long for a backend to take it */
#define ROUTER_OUTSTANDING_MAX 4096    /* requests in flight through one router */

/* What router_pick knows of one backend. */
typedef struct {
    bool up;
    bool eligible;        /* a member of the endpoint being served */
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

typedef struct router router;

/* Starts the endpoint listeners and the health poller on node's loop. */
int router_start(mrd_node *node, router **out, mrd_msg *msg);

#endif
