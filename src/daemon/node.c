/*
 * One meridiand process: topology, data-folder lock, HTTP/2 listener, status
 * and metrics routes, signals. Roles plug in through routes and a status hook.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "meridian/node.h"

#define NODE_VERSION "0.1.0"

void mrd_node_error(h2_req *req, int http_status, const char *code, const char *message)
{
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_buf_printf(&body, "{\"error\":{\"code\":");
    mrd_json_quote(&body, code);
    mrd_buf_printf(&body, ",\"message\":");
    mrd_json_quote(&body, message);
    mrd_buf_printf(&body, "}}\n");
    h2_header hdr = {"content-type", "application/json"};
    h2_req_respond(req, http_status, &hdr, 1, body.data, body.len);
    mrd_buf_free(&body);
}

static void status_route(mrd_node *node, h2_req *req, void *ud)
{
    char addr[128];
    mrd_buf body;
    mrd_buf_init(&body);
    const topo_region *region = &node->topo.regions[node->self->region];
    mrd_buf_printf(&body, "{\"id\":");
    mrd_json_quote(&body, node->self->id);
    mrd_buf_printf(&body, ",\"role\":\"%s\",\"region\":", topo_role_name(node->role));
    mrd_json_quote(&body, region->name);
    mrd_buf_printf(&body, ",\"az\":");
    mrd_json_quote(&body, region->azs[node->self->az]);
    mrd_buf_printf(&body, ",\"address\":");
    mrd_json_quote(&body, topo_addr_str(&node->self->addr, addr, sizeof(addr)));
    mrd_buf_printf(&body, ",\"database\":");
    mrd_json_quote(&body, node->topo.name);
    mrd_buf_printf(&body,
                   ",\"state\":\"running\",\"pid\":%ld,\"uptime_ms\":%llu,"
                   "\"started_at_ms\":%llu,\"version\":\"%s\"",
                   (long)getpid(), (unsigned long long)(mrd_now_ms() - node->started_ms),
                   (unsigned long long)node->started_wall_ms, NODE_VERSION);
    bool ready = node->ready_fn == NULL || node->ready_fn(node, node->ready_ud);
    mrd_buf_printf(&body, ",\"ready\":%s", ready ? "true" : "false");
    if (node->status_fn != NULL) node->status_fn(node, &body, node->status_ud);
    mrd_buf_printf(&body, "}\n");
    h2_header hdr = {"content-type", "application/json"};
    h2_req_respond(req, 200, &hdr, 1, body.data, body.len);
    mrd_buf_free(&body);
}

static void metrics_route(mrd_node *node, h2_req *req, void *ud)
{
    mrd_metric *up = mrd_metric_add(&node->metrics, MRD_GAUGE, "meridian_uptime_seconds", NULL,
                                    "Seconds since this process started.");
    mrd_metric_set(up, (double)(mrd_now_ms() - node->started_ms) / 1000.0);
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_metrics_render(&node->metrics, &body);
    h2_header hdr = {"content-type", "text/plain; version=0.0.4"};
    h2_req_respond(req, 200, &hdr, 1, body.data, body.len);
    mrd_buf_free(&body);
}

/* GET /v1/health[?max_lag_ms=N]: 200 when ready and within N ms of lag, else 503. */
static void health_route(mrd_node *node, h2_req *req, void *ud)
{
    const char *q = strchr(h2_req_path(req), '?');
    uint64_t max_lag = UINT64_MAX;
    if (q != NULL) {
        const char *p = strstr(q, "max_lag_ms=");
        char *end = NULL;
        if (p == NULL || (p != q + 1 && p[-1] != '&'))
            return mrd_node_error(req, 400, "bad_request", "the only parameter is max_lag_ms");
        max_lag = strtoull(p + 11, &end, 10);
        if (end == p + 11 || (*end != '\0' && *end != '&'))
            return mrd_node_error(req, 400, "bad_request",
                                  "max_lag_ms must be a non-negative integer");
    }
    bool ready = node->ready_fn == NULL || node->ready_fn(node, node->ready_ud);
    uint64_t lag = node->lag_fn != NULL ? node->lag_fn(node, node->lag_ud) : 0;
    const char *state = !ready ? "not_ready" : lag > max_lag ? "lagging" : "ok";
    mrd_buf body;
    mrd_buf_init(&body);
    mrd_buf_printf(&body, "{\"status\":\"%s\",\"lag_ms\":%llu", state, (unsigned long long)lag);
    if (max_lag != UINT64_MAX) mrd_buf_printf(&body, ",\"max_lag_ms\":%llu", (unsigned long long)max_lag);
    mrd_buf_printf(&body, "}\n");
    h2_header hdr = {"content-type", "application/json"};
    h2_req_respond(req, strcmp(state, "ok") == 0 ? 200 : 503, &hdr, 1, body.data, body.len);
    mrd_buf_free(&body);
}

/* The path without its query string, into buf. */
static const char *path_only(const char *path, char *buf, size_t len)
{
    size_t n = strcspn(path, "?");
    if (n >= len) n = len - 1;
    memcpy(buf, path, n);
    buf[n] = '\0';
    return buf;
}

static void on_request(h2_req *req, void *ud)
{
    mrd_node *node = ud;
    char path[256];
    path_only(h2_req_path(req), path, sizeof(path));
    const char *method = h2_req_method(req);
    mrd_metric_inc(node->m_requests, 1);
    bool path_known = false;
    for (int i = 0; i < node->route_count; i++) {
        mrd_route *r = &node->routes[i];
        if (strcmp(r->path, path) != 0) continue;
        path_known = true;
        if (strcmp(r->method, method) != 0) continue;
        r->fn(node, req, r->ud);
        return;
    }
    if (path_known) {
        mrd_node_error(req, 405, "method_not_allowed", "this path does not take that method");
        return;
    }
    char text[300];
    snprintf(text, sizeof(text), "no such path: %s", path);
    mrd_node_error(req, 404, "not_found", text);
}

int mrd_node_route(mrd_node *node, const char *method, const char *path, mrd_route_fn fn,
                   void *ud)
{
    mrd_route *r = NULL;
    for (int i = 0; i < node->route_count; i++) /* a role takes over a placeholder */
        if (strcmp(node->routes[i].method, method) == 0 && strcmp(node->routes[i].path, path) == 0)
            r = &node->routes[i];
    if (r == NULL && node->route_count >= MRD_NODE_ROUTES_MAX) return MRD_ETOOBIG;
    if (r == NULL) r = &node->routes[node->route_count++];
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->fn = fn;
    r->ud = ud;
    return 0;
}

static int lock_data_dir(mrd_node *node, mrd_msg *msg)
{
    int rc = mrd_mkdirs(node->data_dir, msg);
    if (rc != 0) return rc;
    char path[TOPO_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", node->data_dir, MRD_LOCK_FILE);
    node->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (node->lock_fd < 0)
        return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (flock(node->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return mrd_fail(msg, MRD_EBUSY, "%s: another meridiand holds this data folder", path);
    return 0;
}

static int open_tls(mrd_node *node, mrd_msg *msg)
{
    if (!node->topo.tls) return 0;
    char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 80], key[TOPO_PATH_MAX + 80];
    const char *dir = node->certs_dir;
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(cert, sizeof(cert), "%s/%s.crt", dir, node->self->id);
    snprintf(key, sizeof(key), "%s/%s.key", dir, node->self->id);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    return h2_tls_server_new(&cfg, &node->tls, msg);
}

static void on_req_close(h2_req *req, uint32_t error_code, void *ud)
{
    mrd_node *node = ud;
    if (node->req_close_fn != NULL) node->req_close_fn(node, req, node->req_close_ud);
}

int mrd_node_client_tls(const mrd_node *node, h2_tls **out, mrd_msg *msg)
{
    *out = NULL;
    if (!node->topo.tls) return 0;
    char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 80], key[TOPO_PATH_MAX + 80];
    snprintf(ca, sizeof(ca), "%s/ca.crt", node->certs_dir);
    snprintf(cert, sizeof(cert), "%s/%s.crt", node->certs_dir, node->self->id);
    snprintf(key, sizeof(key), "%s/%s.key", node->certs_dir, node->self->id);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    return h2_tls_client_new(&cfg, out, msg);
}

static const mrd_stream_route *stream_route_of(mrd_node *node, h2_req *req)
{
    char path[256];
    path_only(h2_req_path(req), path, sizeof(path));
    for (int i = 0; i < node->stream_route_count; i++) {
        const mrd_stream_route *r = &node->stream_routes[i];
        if (strcmp(r->path, path) == 0 && strcmp(r->method, h2_req_method(req)) == 0) return r;
    }
    return NULL;
}

static h2_body_mode on_headers(h2_req *req, void *ud)
{
    mrd_node *node = ud;
    const mrd_stream_route *r = stream_route_of(node, req);
    if (r == NULL) return H2_BUFFER;
    mrd_metric_inc(node->m_requests, 1);
    return r->cbs->on_start(node, req, r->ud);
}

static void on_stream_data(h2_req *req, const uint8_t *data, size_t len, void *ud)
{
    mrd_node *node = ud;
    const mrd_stream_route *r = stream_route_of(node, req);
    if (r != NULL && r->cbs->on_data != NULL) r->cbs->on_data(node, req, data, len, r->ud);
}

static void on_stream_end(h2_req *req, void *ud)
{
    mrd_node *node = ud;
    const mrd_stream_route *r = stream_route_of(node, req);
    if (r != NULL && r->cbs->on_end != NULL) r->cbs->on_end(node, req, r->ud);
}

int mrd_node_stream_route(mrd_node *node, const char *method, const char *path,
                          const mrd_stream_route_cbs *cbs, void *ud)
{
    if (node->stream_route_count >= MRD_NODE_STREAM_ROUTES_MAX) return MRD_ETOOBIG;
    mrd_stream_route *r = &node->stream_routes[node->stream_route_count++];
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->cbs = cbs;
    r->ud = ud;
    return 0;
}

static const h2_server_cbs node_server_cbs = {.on_headers = on_headers,
                                              .on_request = on_request,
                                              .on_data = on_stream_data,
                                              .on_end = on_stream_end,
                                              .on_close = on_req_close};

static void node_register_metrics(mrd_node *node)
{
    mrd_metrics_init(&node->metrics);
    char labels[200];
    snprintf(labels, sizeof(labels), "id=\"%s\",role=\"%s\"", node->self->id,
             topo_role_name(node->self->role));
    mrd_metric *info = mrd_metric_add(&node->metrics, MRD_GAUGE, "meridian_node_info", labels,
                                      "This process's id and role (always 1).");
    mrd_metric_set(info, 1);
    node->m_requests = mrd_metric_add(&node->metrics, MRD_COUNTER, "meridian_http_requests_total",
                                      NULL, "HTTP/2 requests received.");
}

int mrd_node_init(mrd_node *node, uv_loop_t *loop, const mrd_node_config *cfg, mrd_msg *msg)
{
    memset(node, 0, sizeof(*node));
    node->loop = loop;
    node->lock_fd = -1;
    node->started_ms = mrd_now_ms();
    node->started_wall_ms = mrd_wall_ms();
    int rc = topo_load(cfg->topology_path, &node->topo, msg);
    if (rc != 0) return rc;
    node->self = topo_find(&node->topo, cfg->id);
    if (node->self == NULL)
        return mrd_fail(msg, MRD_ENOTFOUND, "%s: no process with id %s", cfg->topology_path,
                        cfg->id);
    node->role = node->self->role;
    if (cfg->role != NULL && topo_role_parse(cfg->role) != (int)node->self->role)
        return mrd_fail(msg, MRD_EINVAL, "%s: %s is a %s, not a %s", cfg->topology_path, cfg->id,
                        topo_role_name(node->self->role), cfg->role);
    snprintf(node->data_dir, sizeof(node->data_dir), "%s", cfg->data_dir);
    if (cfg->certs_dir != NULL)
        snprintf(node->certs_dir, sizeof(node->certs_dir), "%s", cfg->certs_dir);
    else if (topo_certs_dir(&node->topo, node->certs_dir, sizeof(node->certs_dir)) == NULL &&
             (size_t)snprintf(node->certs_dir, sizeof(node->certs_dir), "%s/../certs",
                              cfg->data_dir) >= sizeof(node->certs_dir))
        return mrd_fail(msg, MRD_ETOOBIG, "%s: data path too long", cfg->data_dir);
    mrd_log_init(node->self->id, MRD_LOG_INFO);
    rc = lock_data_dir(node, msg);
    if (rc == 0) rc = open_tls(node, msg);
    if (rc != 0) return rc;
    node_register_metrics(node);
    mrd_node_route(node, "GET", "/v1/status", status_route, NULL);
    mrd_node_route(node, "GET", "/metrics", metrics_route, NULL);
    mrd_node_route(node, "GET", "/v1/health", health_route, NULL);
    h2_server_config scfg = {.host = node->self->addr.host, .port = node->self->addr.port,
                             .tls = node->tls};
    return h2_server_start(loop, &scfg, &node_server_cbs, node, &node->server, msg);
}

static void on_server_closed(void *ud)
{
    mrd_node *node = ud;
    uv_close((uv_handle_t *)&node->sig_term, NULL);
    uv_close((uv_handle_t *)&node->sig_int, NULL);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    mrd_node *node = sig->data;
    if (node->stopping) return;
    node->stopping = true;
    MRD_INFO("stopping", "signal=%d", signum);
    if (node->stop_fn != NULL) node->stop_fn(node, node->stop_ud);
    h2_server_close(node->server, on_server_closed, node);
    node->server = NULL;
}

void mrd_node_restart(mrd_node *node, const char *why)
{
    if (node->stopping) return;
    MRD_INFO("restarting", "reason=\"%s\"", why);
    node->restart = true;
    node->stopping = true;
    if (node->stop_fn != NULL) node->stop_fn(node, node->stop_ud);
    h2_server_close(node->server, on_server_closed, node);
    node->server = NULL;
}

int mrd_node_exec(char *const argv[], mrd_msg *msg)
{
    execv("/proc/self/exe", argv);
    return mrd_fail(msg, MRD_EIO, "exec /proc/self/exe: %s", strerror(errno));
}

static int write_pid_file(mrd_node *node, mrd_msg *msg)
{
    char path[TOPO_PATH_MAX + 32], text[32];
    snprintf(path, sizeof(path), "%s/%s", node->data_dir, MRD_PID_FILE);
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    return mrd_write_file_atomic(path, text, (size_t)n, msg);
}

int mrd_node_run(mrd_node *node, mrd_msg *msg)
{
    uv_signal_init(node->loop, &node->sig_term);
    uv_signal_init(node->loop, &node->sig_int);
    node->sig_term.data = node;
    node->sig_int.data = node;
    uv_signal_start(&node->sig_term, on_signal, SIGTERM);
    uv_signal_start(&node->sig_int, on_signal, SIGINT);
    int rc = write_pid_file(node, msg);
    if (rc != 0) return rc;
    char addr[128];
    MRD_INFO("ready", "role=%s address=%s tls=%s pid=%ld", topo_role_name(node->self->role),
             topo_addr_str(&node->self->addr, addr, sizeof(addr)), node->topo.tls ? "on" : "off",
             (long)getpid());
    uv_run(node->loop, UV_RUN_DEFAULT);
    char path[TOPO_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", node->data_dir, MRD_PID_FILE);
    if (!node->restart) unlink(path); /* a restart keeps the pid: the file stays true */
    if (node->tls != NULL) h2_tls_free(node->tls);
    if (node->lock_fd >= 0) close(node->lock_fd);
    MRD_INFO("stopped", "%s", "");
    return 0;
}
