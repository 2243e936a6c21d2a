/*
 * h2_fetch: one request on a private loop, for the CLI and tests. Connect,
 * send, collect the whole response (up to H2_FETCH_BODY_BYTES_MAX), close;
 * a timer bounds the whole exchange.
 */
#include <stdio.h>
#include <string.h>

#include "meridian/h2.h"

/* Largest response body h2_fetch keeps. */
#define H2_FETCH_BODY_BYTES_MAX (64u * 1024 * 1024)

typedef struct {
    const char *method;
    const char *path;
    const h2_header *hdrs;
    size_t nhdrs;
    const void *body;
    size_t len;
    h2_client *client;
    uv_timer_t timer;
    h2_result *out;
    int rc;
    bool got_response;
    bool finished;
} fetch_state;

static void finish(fetch_state *st, int rc)
{
    if (st->finished) return;
    st->finished = true;
    st->rc = rc;
    uv_timer_stop(&st->timer);
    uv_close((uv_handle_t *)&st->timer, NULL);
    h2_client_close(st->client);
}

static void on_response(h2_call *call, int status, void *ud)
{
    fetch_state *st = ud;
    st->got_response = true;
    st->out->status = status;
    const char *ct = h2_call_header(call, "content-type");
    if (ct != NULL) snprintf(st->out->content_type, sizeof(st->out->content_type), "%s", ct);
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    fetch_state *st = ud;
    if (st->out->body.len + len > H2_FETCH_BODY_BYTES_MAX ||
        mrd_buf_append(&st->out->body, data, len) != 0) {
        h2_call_cancel(call);
        finish(st, MRD_ETOOBIG);
    }
}

static void on_call_close(h2_call *call, int error, void *ud)
{
    fetch_state *st = ud;
    finish(st, error == 0 && !st->got_response ? MRD_EPROTO : error);
}

static const h2_call_cbs fetch_call_cbs = {
    .on_response = on_response,
    .on_data = on_data,
    .on_close = on_call_close,
};

static void on_connect(h2_client *c, int status, void *ud)
{
    fetch_state *st = ud;
    if (status != 0) {
        finish(st, status);
        return;
    }
    int rc = h2_client_request(c, st->method, st->path, st->hdrs, st->nhdrs, st->body, st->len,
                               true, &fetch_call_cbs, st, NULL);
    if (rc != 0) finish(st, rc);
}

static void on_disconnect(h2_client *c, int error, void *ud)
{
    finish(ud, error != 0 ? error : MRD_ECLOSED);
}

static void on_timeout(uv_timer_t *t)
{
    fetch_state *st = mrd_container_of(t, fetch_state, timer);
    finish(st, MRD_ETIMEDOUT);
}

static const h2_client_cbs fetch_client_cbs = {
    .on_connect = on_connect,
    .on_disconnect = on_disconnect,
};

int h2_fetch(const h2_client_config *cfg, const char *method, const char *path,
             const h2_header *hdrs, size_t nhdrs, const void *body, size_t len, uint64_t timeout_ms,
             h2_result *out, mrd_msg *msg)
{
    memset(out, 0, sizeof(*out));
    mrd_buf_init(&out->body);
    fetch_state st = {.method = method,
                      .path = path,
                      .hdrs = hdrs,
                      .nhdrs = nhdrs,
                      .body = body,
                      .len = len,
                      .out = out};
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return mrd_fail(msg, MRD_EIO, "h2: cannot create a loop");
    uv_timer_init(&loop, &st.timer);
    int rc = h2_client_connect(&loop, cfg, &fetch_client_cbs, &st, &st.client, msg);
    if (rc != 0) {
        uv_close((uv_handle_t *)&st.timer, NULL);
        uv_run(&loop, UV_RUN_DEFAULT); /* lets the client's handles close */
        uv_loop_close(&loop);
        return rc;
    }
    uv_timer_start(&st.timer, on_timeout, timeout_ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    /* NUL-terminated for callers that search the body as text (not counted in len). */
    if (st.rc == 0 && mrd_buf_reserve(&out->body, 1) != 0) st.rc = MRD_ENOMEM;
    if (st.rc == 0) out->body.data[out->body.len] = '\0';
    if (st.rc != 0) {
        h2_result_free(out);
        return mrd_fail(msg, st.rc, "h2: %s %s on %s:%u: %s", method, path, cfg->host, cfg->port,
                        mrd_strerror(st.rc));
    }
    return 0;
}

void h2_result_free(h2_result *res)
{
    mrd_buf_free(&res->body);
}
