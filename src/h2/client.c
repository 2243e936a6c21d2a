/*
 * The h2 client: one connection (resolve, connect, TLS, SETTINGS) and the
 * calls (streams) opened on it.
 *
 * Callbacks, in order: on_connect once (status 0 when the server's SETTINGS
 * arrived, else why it failed); then, if it connected, on_disconnect once when
 * the connection is gone, after every open call had its on_close. The client's
 * memory is freed only after h2_client_close and the close of its handles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

/* Pseudo-headers before the caller's: :method :path :scheme :authority. */
#define H2_REQUEST_NV_MAX (H2_HEADERS_MAX + 4)
#define H2_HOST_MAX 256

struct h2_client {
    h2_conn c;
    h2_client_cbs cbs;
    void *ud;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai_req;
    nghttp2_session_callbacks *ngcbs;
    uint16_t port;
    char host[H2_HOST_MAX];
    char authority[H2_HOST_MAX + 8];
    bool gai_pending;
    bool handles_closed;
    bool user_closed;
    bool connected;
    bool connect_reported;
    bool goaway;
};

struct h2_call {
    h2_strm s; /* first: an h2_strm * is an h2_call * on a client connection */
    h2_client *client;
    h2_call_cbs cbs;
    void *ud;
    int status;
    bool responded;
    bool reported; /* on_close has run; the memory waits for nghttp2 to let go */
    h2_header_set hdrs;
};

static h2_call *call_of(nghttp2_session *session, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(session, stream_id);
}

static void call_report(h2_call *call, int err)
{
    if (call->reported) return;
    call->reported = true;
    if (call->cbs.on_close != NULL) call->cbs.on_close(call, err, call->ud);
}

/* Reports the close (unless done already) and frees: nghttp2 no longer knows the call. */
static void call_gone(h2_call *call, int err)
{
    call_report(call, err);
    h2_strm_release(&call->s);
    h2_header_set_free(&call->hdrs);
    free(call);
}

/* ---- session callbacks ----------------------------------------------------------------- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    h2_call *call = call_of(session, frame->hd.stream_id);
    if (call == NULL || call->responded) return 0; /* trailers are not kept */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        call->status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            call->status = call->status * 10 + (value[i] - '0');
        return 0;
    }
    if (call->status < 200) return 0; /* an interim (1xx) response */
    if (h2_header_set_add(&call->hdrs, name, namelen, value, valuelen) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static void connected(h2_client *c)
{
    if (c->connect_reported) return;
    c->connected = true;
    c->connect_reported = true;
    MRD_INFO("h2_conn_open", "peer=%s side=client tls=%d", c->c.peer, c->c.tls != NULL);
    if (c->cbs.on_connect != NULL) c->cbs.on_connect(c, 0, c->ud);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    h2_client *c = ud;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        connected(c);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        MRD_INFO("h2_goaway_recv", "peer=%s error_code=%u last_stream=%d", c->c.peer,
                 frame->goaway.error_code, frame->goaway.last_stream_id);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    h2_call *call = call_of(session, frame->hd.stream_id);
    if (call == NULL) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !call->responded && call->status >= 200) {
        call->responded = true;
        if (call->cbs.on_response != NULL) call->cbs.on_response(call, call->status, call->ud);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) call->s.remote_ended = true;
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud)
{
    h2_call *call = call_of(session, stream_id);
    nghttp2_session_consume_connection(session, len);
    if (call == NULL) {
        nghttp2_session_consume_stream(session, stream_id, len);
        return 0;
    }
    if (call->cbs.on_data != NULL) call->cbs.on_data(call, data, len, call->ud);
    h2_strm_received(&call->s, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud)
{
    h2_call *call = call_of(session, stream_id);
    if (call == NULL) return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    bool ok = call->s.remote_ended && call->responded;
    if (!ok && error_code == NGHTTP2_REFUSED_STREAM) {
        call_gone(call, MRD_EBUSY); /* never processed: safe to retry */
        return 0;
    }
    call_gone(call, ok ? 0 : MRD_ECLOSED);
    return 0;
}

/* A request whose HEADERS never left (cancelled or refused after GOAWAY) never
 * opens a stream, so no stream close will report it: report it here. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error,
                             void *ud)
{
    h2_client *c = ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    if (nghttp2_session_find_stream(session, frame->hd.stream_id) != NULL) return 0;
    h2_strm *s = h2_conn_find(&c->c, frame->hd.stream_id);
    if (s != NULL) call_gone((h2_call *)s, MRD_ECLOSED);
    return 0;
}

static int client_callbacks(nghttp2_session_callbacks **out)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return MRD_ENOMEM;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    *out = cbs;
    return 0;
}

/* ---- connection ops -------------------------------------------------------------------- */

static int cconn_ready(h2_conn *conn)
{
    h2_client *c = mrd_container_of(conn, h2_client, c);
    return h2_conn_session_new(conn, c->ngcbs, c, H2_STREAMS_MAX_DEFAULT);
}

static void cconn_stream_gone(h2_strm *s, int err)
{
    call_gone((h2_call *)s, err == 0 ? MRD_ECLOSED : err);
}

static void cconn_stream_drained(h2_strm *s)
{
    h2_call *call = (h2_call *)s;
    if (s->cancel_pending) {
        /* nghttp2 still holds the call as its queued request's user data and
         * hands it back when it drops that request: free it then. */
        s->cancel_pending = false;
        call_report(call, MRD_ECLOSED);
        return;
    }
    if (call->reported) return;
    if (call->cbs.on_drain != NULL) call->cbs.on_drain(call, call->ud);
}

static void cconn_closing(h2_conn *conn, int err)
{
    h2_client *c = mrd_container_of(conn, h2_client, c);
    if (!c->connect_reported) {
        c->connect_reported = true;
        if (!c->user_closed && c->cbs.on_connect != NULL) {
            c->cbs.on_connect(c, err != 0 ? err : MRD_ECLOSED, c->ud);
        }
        return;
    }
    c->connected = false;
    if (c->cbs.on_disconnect != NULL) c->cbs.on_disconnect(c, err, c->ud);
}

static void client_free(h2_client *c)
{
    nghttp2_session_callbacks_del(c->ngcbs);
    free(c);
}

static void maybe_free(h2_client *c)
{
    if (c->user_closed && c->handles_closed && !c->gai_pending) client_free(c);
}

static void cconn_freed(h2_conn *conn)
{
    h2_client *c = mrd_container_of(conn, h2_client, c);
    c->handles_closed = true;
    maybe_free(c);
}

static const h2_conn_ops cconn_ops = {
    .transport_ready = cconn_ready,
    .stream_gone = cconn_stream_gone,
    .stream_drained = cconn_stream_drained,
    .closing = cconn_closing,
    .freed = cconn_freed,
};

/* ---- connecting ------------------------------------------------------------------------ */

static void on_connected(uv_connect_t *req, int status)
{
    h2_client *c = mrd_container_of(req, h2_client, connect_req);
    if (c->c.closing) return;
    if (status < 0) {
        MRD_WARN("h2_connect_fail", "host=%s port=%u reason=\"%s\"", c->host, c->port,
                 uv_strerror(status));
        h2_conn_close(&c->c, MRD_ECONN);
        return;
    }
    int rc = h2_conn_start(&c->c);
    if (rc != 0) h2_conn_close(&c->c, rc);
}

static int start_connect(h2_client *c, const struct sockaddr *addr)
{
    int rc = uv_tcp_connect(&c->connect_req, &c->c.tcp, addr, on_connected);
    if (rc < 0) {
        MRD_WARN("h2_connect_fail", "host=%s port=%u reason=\"%s\"", c->host, c->port,
                 uv_strerror(rc));
        return MRD_ECONN;
    }
    return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    h2_client *c = mrd_container_of(req, h2_client, gai_req);
    c->gai_pending = false;
    int rc = MRD_ECONN;
    if (!c->c.closing && status == 0 && res != NULL) rc = start_connect(c, res->ai_addr);
    if (res != NULL) uv_freeaddrinfo(res);
    if (c->c.closing) {
        maybe_free(c);
        return;
    }
    if (rc != 0) {
        if (status < 0) {
            MRD_WARN("h2_resolve_fail", "host=%s reason=\"%s\"", c->host, uv_strerror(status));
        }
        h2_conn_close(&c->c, rc);
    }
}

static int begin_connect(h2_client *c, uv_loop_t *loop)
{
    struct sockaddr_storage ss;
    if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss) == 0) {
        return start_connect(c, (const struct sockaddr *)&ss);
    }
    char port[8];
    snprintf(port, sizeof(port), "%u", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(loop, &c->gai_req, on_resolved, c->host, port, &hints);
    if (rc < 0) return MRD_ECONN;
    c->gai_pending = true;
    return 0;
}

static int fill_names(h2_client *c, const h2_client_config *cfg, mrd_msg *msg)
{
    const char *name = cfg->server_name != NULL ? cfg->server_name : cfg->host;
    if (strlen(cfg->host) >= sizeof(c->host) || strlen(name) >= sizeof(c->c.server_name)) {
        return mrd_fail(msg, MRD_EINVAL, "h2: host name too long");
    }
    snprintf(c->host, sizeof(c->host), "%s", cfg->host);
    snprintf(c->c.server_name, sizeof(c->c.server_name), "%s", name);
    bool v6 = strchr(cfg->host, ':') != NULL;
    snprintf(c->authority, sizeof(c->authority), v6 ? "[%s]:%u" : "%s:%u", cfg->host, cfg->port);
    return 0;
}

int h2_client_connect(uv_loop_t *loop, const h2_client_config *cfg, const h2_client_cbs *cbs,
                      void *ud, h2_client **out, mrd_msg *msg)
{
    *out = NULL;
    if (loop == NULL || cfg == NULL || cfg->host == NULL || cfg->port == 0 || cbs == NULL) {
        return mrd_fail(msg, MRD_EINVAL, "h2: connect needs a host and a port");
    }
    if (cfg->tls != NULL && cfg->tls->server) {
        return mrd_fail(msg, MRD_EINVAL, "h2: client given a server TLS context");
    }
    h2_client *c = calloc(1, sizeof(*c));
    if (c == NULL) return mrd_fail(msg, MRD_ENOMEM, "h2: out of memory");
    c->cbs = *cbs;
    c->ud = ud;
    c->port = cfg->port;
    int rc = fill_names(c, cfg, msg);
    if (rc != 0) goto fail_names;
    rc = client_callbacks(&c->ngcbs);
    if (rc != 0) goto fail_names;
    if (h2_conn_init(&c->c, loop, &cconn_ops, cfg->tls, false) != 0) {
        rc = MRD_EIO;
        goto fail_init;
    }
    rc = begin_connect(c, loop);
    if (rc != 0) {
        c->user_closed = true; /* no callbacks; freed once the handles have closed */
        h2_conn_close(&c->c, rc);
        return mrd_fail(msg, rc, "h2: cannot connect to %s:%u", cfg->host, cfg->port);
    }
    *out = c;
    return 0;

fail_init:
    nghttp2_session_callbacks_del(c->ngcbs);
fail_names:
    free(c);
    return rc == MRD_EINVAL ? rc : mrd_fail(msg, rc, "h2: cannot create client");
}

bool h2_client_connected(const h2_client *c)
{
    return c->connected && !c->c.closing && !c->goaway;
}

void h2_client_close(h2_client *c)
{
    if (c->user_closed) return;
    c->user_closed = true;
    if (!c->c.closing) {
        h2_conn_close(&c->c, MRD_ECLOSED);
        return;
    }
    maybe_free(c);
}

/* ---- calls ----------------------------------------------------------------------------- */

static int submit_request(h2_call *call, const char *method, const char *path,
                          const h2_header *hdrs, size_t nhdrs, bool with_body)
{
    h2_client *c = call->client;
    nghttp2_nv nva[H2_REQUEST_NV_MAX];
    size_t n = 0;
    nva[n++] = h2_nv(":method", method);
    nva[n++] = h2_nv(":path", path);
    nva[n++] = h2_nv(":scheme", c->c.tls != NULL ? "https" : "http");
    nva[n++] = h2_nv(":authority", c->authority);
    for (size_t i = 0; i < nhdrs; i++)
        nva[n++] = h2_nv(hdrs[i].name, hdrs[i].value);
    nghttp2_data_provider prov = h2_strm_provider(&call->s);
    int32_t id = nghttp2_submit_request(c->c.session, NULL, nva, n, with_body ? &prov : NULL, call);
    if (id < 0) return id == NGHTTP2_ERR_NOMEM ? MRD_ENOMEM : MRD_EBUSY;
    call->s.id = id;
    return 0;
}

int h2_client_request(h2_client *c, const char *method, const char *path, const h2_header *hdrs,
                      size_t nhdrs, const void *body, size_t len, bool end_stream,
                      const h2_call_cbs *cbs, void *ud, h2_call **out)
{
    if (out != NULL) *out = NULL;
    if (method == NULL || path == NULL || nhdrs > H2_HEADERS_MAX || cbs == NULL) return MRD_EINVAL;
    if (!h2_client_connected(c) || c->c.session == NULL) return MRD_ECLOSED;
    if (len > H2_CONN_QUEUED_BYTES_MAX) return MRD_ETOOBIG;
    if (c->c.queued_bytes + len > H2_CONN_QUEUED_BYTES_MAX) return MRD_EBUSY;
    h2_call *call = calloc(1, sizeof(*call));
    if (call == NULL) return MRD_ENOMEM;
    h2_strm_init(&call->s, &c->c);
    call->client = c;
    call->cbs = *cbs;
    call->ud = ud;
    bool with_body = len > 0 || !end_stream;
    int rc = submit_request(call, method, path, hdrs, nhdrs, with_body);
    if (rc != 0) {
        free(call);
        return rc;
    }
    h2_conn_link(&c->c, &call->s);
    if (len > 0) h2_strm_write(&call->s, body, len); /* within the limit checked above */
    if (end_stream) call->s.finished = true;
    h2_conn_schedule_flush(&c->c);
    if (out != NULL) *out = call;
    return 0;
}

int h2_call_write(h2_call *call, const void *data, size_t len)
{
    return h2_strm_write(&call->s, data, len);
}

int h2_call_finish(h2_call *call)
{
    return h2_strm_finish(&call->s);
}

size_t h2_call_queued(const h2_call *call)
{
    return call->s.queued;
}

void h2_call_pause(h2_call *call, bool paused)
{
    h2_strm_pause(&call->s, paused);
}

void h2_call_cancel(h2_call *call)
{
    h2_conn *c = call->s.conn;
    if (c->closing || c->session == NULL || call->s.cancel_pending) return;
    /* nghttp2 keeps a cancelled request that waits for a stream slot in its queue
     * until a slot frees; such a call is reported at the next flush instead. */
    if (nghttp2_session_find_stream(c->session, call->s.id) == NULL) {
        call->s.cancel_pending = true;
        c->any_drained = true;
    }
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->s.id, NGHTTP2_CANCEL);
    h2_conn_schedule_flush(c);
}

const char *h2_call_header(const h2_call *call, const char *name)
{
    return h2_header_set_get(&call->hdrs, name);
}

void *h2_call_ud(const h2_call *call)
{
    return call->ud;
}
