/*
 * node: the life of one meridiand process — whatever its role.
 *
 * A node loads the topology, finds itself in it by id, takes an exclusive
 * lock on its data folder (two processes never share one), opens its HTTP/2
 * listener (TLS with mutual certificates unless the topology says otherwise),
 * writes its pid file once it is ready to serve, and runs one libuv loop until
 * SIGTERM or SIGINT, when it closes everything and removes the pid file.
 *
 * Every node serves GET /v1/status (JSON), GET /metrics (Prometheus text) and
 * GET /v1/health[?max_lag_ms=N] for load balancers: 200 when the role is ready
 * and lags at most N ms, else 503, both with a small JSON body saying why.
 * A role adds its own routes and status fields through mrd_node_route and a
 * status hook; the node itself knows nothing of storage, SQL or replication.
 */
#ifndef MERIDIAN_NODE_H
#define MERIDIAN_NODE_H

#include <uv.h>

#include "meridian/common.h"
#include "meridian/h2.h"
#include "meridian/metrics.h"
#include "meridian/topo.h"

#define MRD_NODE_ROUTES_MAX 32
#define MRD_PID_FILE "meridiand.pid"
#define MRD_LOCK_FILE "LOCK"

typedef struct mrd_node mrd_node;

/* A route's handler gets the whole (buffered) request and must respond, now or later. */
typedef void (*mrd_route_fn)(mrd_node *node, h2_req *req, void *ud);

typedef struct {
    char method[8];
    char path[64]; /* exact match on the path without the query string */
    mrd_route_fn fn;
    void *ud;
} mrd_route;

/*
 * A streaming route (mrd_node_stream_route): the request's body arrives in chunks. on_start
 * sees the headers and returns H2_STREAM to take the body (on_data for each chunk, valid
 * during the call; on_end when the peer ends its side), or answers at once and returns
 * H2_BUFFER. The role's close hook says when the stream is gone.
 */
typedef struct {
    h2_body_mode (*on_start)(mrd_node *node, h2_req *req, void *ud);
    void (*on_data)(mrd_node *node, h2_req *req, const uint8_t *data, size_t len, void *ud);
    void (*on_end)(mrd_node *node, h2_req *req, void *ud);
} mrd_stream_route_cbs;

typedef struct {
    char method[8];
    char path[64];
    const mrd_stream_route_cbs *cbs;
    void *ud;
} mrd_stream_route;

#define MRD_NODE_STREAM_ROUTES_MAX 4

/* Adds role-specific fields to /v1/status: appends `,"key":value...` to out. */
typedef void (*mrd_status_fn)(mrd_node *node, mrd_buf *out, void *ud);

/*
 * A role that answers some requests later (after an fdatasync, say) learns here that
 * a request's stream has closed, answered or not: req is invalid once this returns.
 * Called for every request a route has seen.
 */
typedef void (*mrd_req_close_fn)(mrd_node *node, h2_req *req, void *ud);

/* The node is stopping (SIGTERM/SIGINT): the role closes its timers, clients and
 * handles so that the loop can end. Requests still open get their close hook. */
typedef void (*mrd_stop_fn)(mrd_node *node, void *ud);

/* Whether the role serves what it is for yet (a writer that recovered, a reader whose
 * log stream runs...): /v1/status says "ready", and `meridian up` waits for it. */
typedef bool (*mrd_ready_fn)(mrd_node *node, void *ud);

/* How far behind the role's data is, in ms (a reader's lag; 0 for a writer). */
typedef uint64_t (*mrd_lag_fn)(mrd_node *node, void *ud);

struct mrd_node {
    uv_loop_t *loop;
    topology topo;
    const topo_node *self;
    topo_role role; /* what it runs now: an instance is a writer or a reader as its region says */
    char data_dir[TOPO_PATH_MAX];
    char certs_dir[TOPO_PATH_MAX];
    uint64_t started_ms; /* monotonic */
    uint64_t started_wall_ms;
    int lock_fd;
    h2_tls *tls;
    h2_server *server;
    mrd_metrics metrics;
    mrd_metric *m_requests;
    mrd_metric *m_request_seconds;
    mrd_route routes[MRD_NODE_ROUTES_MAX];
    int route_count;
    mrd_stream_route stream_routes[MRD_NODE_STREAM_ROUTES_MAX];
    int stream_route_count;
    mrd_status_fn status_fn;
    void *status_ud;
    mrd_req_close_fn req_close_fn;
    void *req_close_ud;
    mrd_stop_fn stop_fn;
    void *stop_ud;
    mrd_ready_fn ready_fn; /* NULL: ready as soon as it listens */
    void *ready_ud;
    mrd_lag_fn lag_fn; /* NULL: never behind */
    void *lag_ud;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    bool stopping;
    bool restart; /* mrd_node_restart: the process runs itself again once stopped */
};

typedef struct {
    const char *topology_path;
    const char *id;
    const char *role; /* must match the id's role in the topology */
    const char *data_dir;
    const char *certs_dir; /* NULL: the topology's certs folder */
} mrd_node_config;

/* Loads the topology, checks the role, locks the data folder, opens the listener. */
int mrd_node_init(mrd_node *node, uv_loop_t *loop, const mrd_node_config *cfg, mrd_msg *msg);
/* Adds a route; a route of the same method and path is replaced. */
int mrd_node_route(mrd_node *node, const char *method, const char *path, mrd_route_fn fn,
                   void *ud);
/* A route whose request body streams (see mrd_stream_route_cbs); cbs must outlive the node. */
int mrd_node_stream_route(mrd_node *node, const char *method, const char *path,
                          const mrd_stream_route_cbs *cbs, void *ud);
/* Writes the pid file and runs the loop until a stop signal; then closes everything. */
int mrd_node_run(mrd_node *node, mrd_msg *msg);
/*
 * Stops the node the way SIGTERM does (the role's stop hook, then the listener) and
 * marks it for a restart: once mrd_node_run returns, main runs the same program with
 * the same arguments again (mrd_node_exec), keeping the pid. A role that must become
 * another (a reader promoted to writer, an agent whose region changed roles) or
 * start from empty files restarts this way, with everything closed and synced first.
 */
void mrd_node_restart(mrd_node *node, const char *why);
/* Replaces the process with argv (argv[0] resolved through /proc/self/exe). Returns
 * only on failure, with msg saying why. */
int mrd_node_exec(char *const argv[], mrd_msg *msg);

/*
 * A TLS context for this process's connections to other processes: its own
 * certificate as the client certificate, peers verified against the CA. *out
 * stays NULL when the topology uses no TLS.
 */
int mrd_node_client_tls(const mrd_node *node, h2_tls **out, mrd_msg *msg);

/* Answers with a JSON error body {"error":{"code":...,"message":...}}. */
void mrd_node_error(h2_req *req, int http_status, const char *code, const char *message);

#endif
