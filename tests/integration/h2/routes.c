/* The h2 test server's routes (see routes.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"

typedef enum { ROUTE_OTHER, ROUTE_STREAM, ROUTE_SINK, ROUTE_HOLD } route_kind;

typedef struct {
    route_kind kind;
    uint64_t total;
    uint64_t done; /* produced (/stream) or received (/sink) */
    uint32_t crc;
    bool pattern_ok;
} route_state;

static const h2_header json = {"content-type", "application/json"};

void routes_pattern_fill(uint8_t *buf, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = routes_pattern_byte(off + i);
}

static bool path_is(const h2_req *req, const char *path)
{
    const char *p = h2_req_path(req);
    size_t n = strlen(path);
    return strncmp(p, path, n) == 0 && (p[n] == '\0' || p[n] == '?');
}

static void respond_json(h2_req *req, int status, const char *text)
{
    h2_req_respond(req, status, &json, 1, text, strlen(text));
}

static void stream_produce(routes *rt, h2_req *req, route_state *st)
{
    uint8_t chunk[ROUTES_STREAM_CHUNK_BYTES];
    while (st->done < st->total && h2_req_queued(req) < ROUTES_STREAM_QUEUE_HIGH) {
        size_t n = sizeof(chunk);
        if (st->total - st->done < n) n = (size_t)(st->total - st->done);
        routes_pattern_fill(chunk, st->done, n);
        if (h2_req_write(req, chunk, n) != 0) return;
        st->done += n;
    }
    if (rt->stream_req == req) rt->stream_produced = st->done;
    if (st->done == st->total && st->total != UINT64_MAX) {
        h2_req_finish(req);
        st->total = UINT64_MAX; /* finished once */
        st->done = UINT64_MAX;
    }
}

static void stream_start(routes *rt, h2_req *req, route_state *st)
{
    const char *q = strstr(h2_req_path(req), "bytes=");
    st->total = q != NULL ? strtoull(q + 6, NULL, 10) : 0;
    h2_header ct = {"content-type", "application/octet-stream"};
    if (h2_req_respond_start(req, 200, &ct, 1) != 0) return;
    rt->stream_req = req;
    rt->stream_produced = 0;
    stream_produce(rt, req, st);
}

static void hold(routes *rt, h2_req *req)
{
    if (rt->nheld == ROUTES_HELD_MAX) {
        respond_json(req, 503, "{\"error\":\"too many held\"}");
        return;
    }
    rt->held[rt->nheld++] = req;
    if (rt->nheld < rt->hold_release_at) return;
    for (size_t i = 0; i < rt->nheld; i++) {
        size_t len;
        const uint8_t *body = h2_req_body(rt->held[i], &len);
        h2_req_respond(rt->held[i], 200, NULL, 0, body, len);
    }
    rt->nheld = 0;
}

static h2_body_mode on_headers(h2_req *req, void *ud)
{
    routes *rt = ud;
    rt->open_reqs++;
    if (rt->open_reqs > rt->open_reqs_max) rt->open_reqs_max = rt->open_reqs;
    route_state *st = calloc(1, sizeof(*st));
    h2_req_set_ud(req, st);
    if (st == NULL) return H2_BUFFER;
    st->pattern_ok = true;
    if (path_is(req, "/stream")) st->kind = ROUTE_STREAM;
    if (path_is(req, "/hold")) st->kind = ROUTE_HOLD;
    if (!path_is(req, "/sink")) return H2_BUFFER;
    st->kind = ROUTE_SINK;
    rt->sink_req = req;
    rt->sink_received = 0;
    if (rt->sink_start_paused) h2_req_pause(req, true);
    return H2_STREAM;
}

static void on_request(h2_req *req, void *ud)
{
    routes *rt = ud;
    route_state *st = h2_req_ud(req);
    const char *method = h2_req_method(req);
    if (st == NULL) {
        respond_json(req, 500, "{\"error\":\"out of memory\"}");
    } else if (strcmp(method, "GET") == 0 && path_is(req, "/v1/status")) {
        char text[512];
        const char *peer = h2_req_peer(req);
        snprintf(text, sizeof(text), "{\"status\":\"ok\",\"peer\":%s%s%s}", peer ? "\"" : "",
                 peer ? peer : "null", peer ? "\"" : "");
        respond_json(req, 200, text);
    } else if (strcmp(method, "POST") == 0 && path_is(req, "/echo")) {
        size_t len;
        const uint8_t *body = h2_req_body(req, &len);
        const char *ct = h2_req_header(req, "content-type");
        h2_header hdr = {"content-type", ct ? ct : "application/octet-stream"};
        h2_req_respond(req, 200, &hdr, 1, body, len);
    } else if (strcmp(method, "GET") == 0 && st->kind == ROUTE_STREAM) {
        stream_start(rt, req, st);
    } else if (strcmp(method, "POST") == 0 && st->kind == ROUTE_HOLD) {
        hold(rt, req);
    } else {
        respond_json(req, 404, "{\"error\":\"not found\"}");
    }
}

static void on_data(h2_req *req, const uint8_t *data, size_t len, void *ud)
{
    routes *rt = ud;
    route_state *st = h2_req_ud(req);
    if (st == NULL) return;
    for (size_t i = 0; i < len && st->pattern_ok; i++) {
        if (data[i] != routes_pattern_byte(st->done + i)) st->pattern_ok = false;
    }
    st->crc = mrd_crc32c(st->crc, data, len);
    st->done += len;
    if (rt->sink_req == req) rt->sink_received = st->done;
}

static void on_end(h2_req *req, void *ud)
{
    route_state *st = h2_req_ud(req);
    if (st == NULL || strcmp(h2_req_method(req), "POST") != 0) {
        respond_json(req, 405, "{\"error\":\"POST only\"}");
        return;
    }
    char text[160];
    snprintf(text, sizeof(text), "{\"bytes\":%llu,\"crc32c\":%u,\"pattern_ok\":%s}",
             (unsigned long long)st->done, st->crc, st->pattern_ok ? "true" : "false");
    respond_json(req, 200, text);
}

static void on_drain(h2_req *req, void *ud)
{
    route_state *st = h2_req_ud(req);
    if (st != NULL && st->kind == ROUTE_STREAM && st->total != UINT64_MAX) {
        stream_produce(ud, req, st);
    }
}

static void on_close(h2_req *req, uint32_t error_code, void *ud)
{
    routes *rt = ud;
    rt->open_reqs--;
    rt->closes++;
    rt->last_close_code = error_code;
    if (error_code != 0) rt->closes_error++;
    for (size_t i = 0; i < rt->nheld; i++) {
        if (rt->held[i] == req) rt->held[i] = rt->held[--rt->nheld];
    }
    if (rt->stream_req == req) rt->stream_req = NULL;
    if (rt->sink_req == req) rt->sink_req = NULL;
    free(h2_req_ud(req));
}

const h2_server_cbs routes_cbs = {
    .on_headers = on_headers,
    .on_request = on_request,
    .on_data = on_data,
    .on_end = on_end,
    .on_close = on_close,
    .on_drain = on_drain,
};
