/*
 * The transport glue of one HTTP/2 connection: socket reads go through the TLS
 * engine (if any) into nghttp2_session_mem_recv; frames from
 * nghttp2_session_mem_send go back out through the engine into one embedded
 * uv_write at a time. Shared by server and client connections; what differs
 * between them comes in through h2_conn_ops.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "h2_internal.h"

/* The connection-level receive window. It is returned on receipt (see
 * stream.c), so it only has to cover what is in flight on a long link. */
#define H2_CONN_WINDOW_BYTES (16 * 1024 * 1024)
/* Passes of pull -> write -> drain report within one flush. */
#define H2_FLUSH_PASSES_MAX 4

static void conn_close_now(h2_conn *c, int err);

/* ---- stream list ----------------------------------------------------------------------- */

void h2_conn_link(h2_conn *c, h2_strm *s)
{
    s->prev = NULL;
    s->next = c->streams;
    if (c->streams != NULL) c->streams->prev = s;
    c->streams = s;
}

void h2_conn_unlink(h2_conn *c, h2_strm *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else if (c->streams == s)
        c->streams = s->next;
    if (s->next != NULL) s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

h2_strm *h2_conn_find(h2_conn *c, int32_t id)
{
    for (h2_strm *s = c->streams; s != NULL; s = s->next) {
        if (s->id == id) return s;
    }
    return NULL;
}

/* ---- depth: closing waits until nghttp2 is off the stack ------------------------------- */

void h2_conn_enter(h2_conn *c)
{
    c->depth++;
}

void h2_conn_leave(h2_conn *c)
{
    c->depth--;
    if (c->depth == 0 && c->close_pending && !c->closing) conn_close_now(c, c->close_err);
}

/* ---- output ---------------------------------------------------------------------------- */

/* Moves what the TLS engine produced into c->out. */
static int drain_tls(h2_conn *c)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(c->bio_out)) > 0) {
        if (mrd_buf_reserve(&c->out, pending) != 0) return MRD_ENOMEM;
        int n = BIO_read(c->bio_out, c->out.data + c->out.len, (int)pending);
        if (n <= 0) break;
        c->out.len += (size_t)n;
    }
    return 0;
}

/* Hands plaintext frames to the network side (through TLS when there is TLS). */
static int emit(h2_conn *c, const uint8_t *data, size_t len)
{
    if (c->ssl == NULL) return mrd_buf_append(&c->out, data, len);
    ERR_clear_error();
    int n = SSL_write(c->ssl, data, (int)len);
    if (n <= 0 || (size_t)n != len) return MRD_ETLS;
    return drain_tls(c);
}

/* Takes frames from nghttp2 while the socket is keeping up (also once while
 * closing, for the GOAWAY: `goodbye`). */
static int pull_frames(h2_conn *c)
{
    while (c->session != NULL && (!c->closing || c->goodbye) &&
           c->out.len < H2_CONN_OUT_BYTES_HIGH) {
        const uint8_t *data = NULL;
        h2_conn_enter(c);
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n > 0 && emit(c, data, (size_t)n) != 0) n = NGHTTP2_ERR_CALLBACK_FAILURE;
        h2_conn_leave(c);
        if (n < 0) {
            MRD_WARN("h2_send_fail", "peer=%s reason=\"%s\"", c->peer, nghttp2_strerror((int)n));
            return MRD_EPROTO;
        }
        if (n == 0) break;
    }
    return 0;
}

static void on_write(uv_write_t *req, int status)
{
    h2_conn *c = mrd_container_of(req, h2_conn, write_req);
    c->writing = false;
    c->inflight.len = 0;
    if (c->closing) return;
    if (status < 0) {
        MRD_WARN("h2_write_fail", "peer=%s reason=\"%s\"", c->peer, uv_strerror(status));
        h2_conn_close(c, MRD_ECONN);
        return;
    }
    h2_conn_flush(c);
}

static int start_write(h2_conn *c)
{
    if (c->writing || c->out.len == 0) return 0;
    mrd_buf swap = c->inflight;
    c->inflight = c->out;
    c->out = swap;
    c->out.len = 0;
    uv_buf_t buf = uv_buf_init((char *)c->inflight.data, (unsigned)c->inflight.len);
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        MRD_WARN("h2_write_fail", "peer=%s reason=\"%s\"", c->peer, uv_strerror(rc));
        c->inflight.len = 0;
        return MRD_ECONN;
    }
    c->writing = true;
    return 0;
}

/* Tells producers which streams' queues went down (on_drain), and reports
 * cancelled streams that never opened. */
static void report_drained(h2_conn *c)
{
    if (!c->any_drained) return;
    c->any_drained = false;
    h2_conn_enter(c);
    h2_strm *next;
    for (h2_strm *s = c->streams; s != NULL && !c->closing; s = next) {
        next = s->next;
        if (!s->drained && !s->cancel_pending) continue;
        s->drained = false;
        c->ops->stream_drained(s);
    }
    h2_conn_leave(c);
}

/* Both sides said goodbye (GOAWAY sent and received, no streams): close. */
static bool session_finished(const h2_conn *c)
{
    return c->session != NULL && !nghttp2_session_want_read(c->session) &&
           !nghttp2_session_want_write(c->session) && c->out.len == 0 && !c->writing;
}

void h2_conn_flush(h2_conn *c)
{
    if (c->closing) return;
    if (c->depth > 0) {
        h2_conn_schedule_flush(c);
        return;
    }
    for (int pass = 0; pass < H2_FLUSH_PASSES_MAX && !c->closing; pass++) {
        c->flush_scheduled = false;
        int rc = pull_frames(c);
        if (rc == 0 && c->ssl != NULL) rc = drain_tls(c);
        if (rc == 0 && !c->closing) rc = start_write(c);
        if (rc != 0) {
            h2_conn_close(c, rc);
            return;
        }
        report_drained(c);
        if (!c->flush_scheduled) break;
    }
    if (c->closing) return;
    if (!c->flush_scheduled) uv_idle_stop(&c->flusher);
    if (session_finished(c)) h2_conn_close(c, 0);
}

static void on_flush_idle(uv_idle_t *idle)
{
    h2_conn *c = mrd_container_of(idle, h2_conn, flusher);
    uv_idle_stop(idle);
    h2_conn_flush(c);
}

void h2_conn_schedule_flush(h2_conn *c)
{
    if (c->closing || c->flush_scheduled) return;
    c->flush_scheduled = true;
    uv_idle_start(&c->flusher, on_flush_idle);
}

/* ---- input ----------------------------------------------------------------------------- */

static int feed_session(h2_conn *c, const uint8_t *data, size_t len)
{
    if (c->session == NULL) return MRD_EPROTO;
    h2_conn_enter(c);
    ssize_t n = nghttp2_session_mem_recv(c->session, data, len);
    h2_conn_leave(c);
    if (n < 0) {
        MRD_WARN("h2_recv_fail", "peer=%s reason=\"%s\"", c->peer, nghttp2_strerror((int)n));
        return MRD_EPROTO;
    }
    return 0;
}

static int read_tls_records(h2_conn *c)
{
    uint8_t plain[H2_TLS_READ_BYTES];
    while (!c->closing) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, plain, (int)sizeof(plain));
        if (n > 0) {
            int rc = feed_session(c, plain, (size_t)n);
            if (rc != 0) return rc;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ) return 0; /* a partial record waits for more */
        if (err == SSL_ERROR_ZERO_RETURN) return MRD_ECLOSED;
        char why[256];
        h2_tls_last_error(c, n, why, sizeof(why));
        MRD_WARN("h2_tls_fail", "peer=%s side=%s stage=read reason=\"%s\"", c->peer,
                 c->is_server ? "server" : "client", why);
        return MRD_ETLS;
    }
    return 0;
}

static int feed_tls(h2_conn *c, const uint8_t *data, size_t len)
{
    if (BIO_write(c->bio_in, data, (int)len) != (int)len) return MRD_ENOMEM;
    if (!c->tls_done) {
        int rc = h2_tls_engine_handshake(c);
        if (rc != 0) return rc;
        if (!c->tls_done) return 0;
        rc = c->ops->transport_ready(c);
        if (rc != 0) return rc;
    }
    return read_tls_records(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    h2_conn *c = mrd_container_of((uv_tcp_t *)h, h2_conn, tcp);
    *buf = uv_buf_init((char *)c->read_buf, sizeof(c->read_buf));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    h2_conn *c = mrd_container_of((uv_tcp_t *)stream, h2_conn, tcp);
    if (c->closing || n == 0) return;
    if (n < 0) {
        if (n != UV_EOF) {
            MRD_WARN("h2_read_fail", "peer=%s reason=\"%s\"", c->peer, uv_strerror((int)n));
        }
        c->peer_gone = true;
        h2_conn_close(c, n == UV_EOF ? MRD_ECLOSED : MRD_ECONN);
        return;
    }
    c->last_rx_ms = uv_now(c->loop);
    const uint8_t *data = (const uint8_t *)buf->base;
    int rc = c->ssl != NULL ? feed_tls(c, data, (size_t)n) : feed_session(c, data, (size_t)n);
    if (c->closing) return;
    if (rc != 0) {
        h2_conn_close(c, rc); /* says goodbye: a TLS alert or a GOAWAY */
        return;
    }
    h2_conn_flush(c);
}

/* ---- life cycle ------------------------------------------------------------------------ */

static void on_alive_tick(uv_timer_t *t)
{
    h2_conn *c = mrd_container_of(t, h2_conn, alive);
    if (c->closing) return;
    uint64_t now = uv_now(c->loop);
    /* this process itself was stopped or starved: what the peer sent meanwhile may wait
     * unread in the socket, so the silence counts from now */
    if (now - c->tick_ms > 2 * H2_PING_MS) c->last_rx_ms = now;
    c->tick_ms = now;
    uint64_t silent = now - c->last_rx_ms;
    if (silent >= H2_DEAD_MS) {
        MRD_WARN("h2_conn_dead", "peer=%s side=%s silent_ms=%llu reason=\"%s\"", c->peer,
                 c->is_server ? "server" : "client", (unsigned long long)silent,
                 c->session == NULL ? "the connection did not come up"
                                    : "nothing arrived, not even a PING's answer");
        h2_conn_close(c, MRD_ETIMEDOUT);
        return;
    }
    if (silent >= H2_PING_MS && c->session != NULL &&
        nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) == 0)
        h2_conn_flush(c);
}

int h2_conn_init(h2_conn *c, uv_loop_t *loop, const h2_conn_ops *ops, h2_tls *tls, bool is_server)
{
    c->loop = loop;
    c->ops = ops;
    c->tls = tls;
    c->is_server = is_server;
    mrd_buf_init(&c->out);
    mrd_buf_init(&c->inflight);
    snprintf(c->peer, sizeof(c->peer), "-");
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc < 0) return MRD_EIO;
    c->handles_open = 1;
    rc = uv_idle_init(loop, &c->flusher); /* cannot fail on a live loop */
    if (rc < 0) return MRD_EIO;
    c->handles_open = 2;
    rc = uv_timer_init(loop, &c->alive);
    if (rc < 0) return MRD_EIO;
    c->handles_open = 3;
    c->last_rx_ms = c->tick_ms = uv_now(loop);
    uv_timer_start(&c->alive, on_alive_tick, H2_PING_MS, H2_PING_MS);
    return 0;
}

static void name_peer(h2_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        uv_ip4_name(sin, ip, sizeof(ip));
        port = ntohs(sin->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(sin6, ip, sizeof(ip));
        port = ntohs(sin6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
}

int h2_conn_start(h2_conn *c)
{
    name_peer(c);
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) return MRD_ECONN;
    c->reading = true;
    if (c->tls == NULL) {
        rc = c->ops->transport_ready(c);
        if (rc == 0) h2_conn_flush(c);
        return rc;
    }
    rc = h2_tls_engine_new(c);
    if (rc == 0 && !c->is_server) rc = h2_tls_engine_handshake(c); /* ClientHello */
    if (rc == 0) h2_conn_flush(c);
    return rc;
}

int h2_conn_session_new(h2_conn *c, const nghttp2_session_callbacks *cbs, void *ud,
                        uint32_t streams_max)
{
    nghttp2_option *opt = NULL;
    if (nghttp2_option_new(&opt) != 0) return MRD_ENOMEM;
    /* Windows are returned by h2_strm_received, which is what makes pausing work. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rv = c->is_server ? nghttp2_session_server_new2(&c->session, cbs, ud, opt)
                          : nghttp2_session_client_new2(&c->session, cbs, ud, opt);
    nghttp2_option_del(opt);
    if (rv != 0) return MRD_ENOMEM;
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, streams_max},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW_BYTES},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    size_t niv = c->is_server ? 2 : 3;
    rv = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, niv);
    if (rv == 0) {
        rv = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                                   H2_CONN_WINDOW_BYTES);
    }
    return rv == 0 ? 0 : MRD_ENOMEM;
}

/* Best effort: a GOAWAY and a TLS close_notify (or the TLS alert that explains
 * a failed handshake), written without waiting. */
static void say_goodbye(h2_conn *c, int err)
{
    if (c->writing || c->peer_gone || err == MRD_ECONN) return; /* busy or broken socket */
    bool tls_ok = err != MRD_ETLS;
    if (c->session != NULL && tls_ok && (c->ssl == NULL || c->tls_done)) {
        uint32_t code =
            (err == 0 || err == MRD_ECLOSED) ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR;
        if (err == MRD_EPROTO) code = NGHTTP2_PROTOCOL_ERROR;
        nghttp2_session_terminate_session(c->session, code);
        c->goodbye = true;
        pull_frames(c);
        c->goodbye = false;
    }
    if (c->ssl != NULL && c->tls_done && tls_ok) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
    }
    if (c->ssl != NULL) drain_tls(c);
    if (c->out.len > 0) {
        uv_buf_t buf = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
        uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
        c->out.len = 0;
    }
}

static void fail_streams(h2_conn *c, int err)
{
    while (c->streams != NULL) {
        h2_strm *s = c->streams;
        if (c->session != NULL && s->id > 0) {
            nghttp2_session_set_stream_user_data(c->session, s->id, NULL);
        }
        c->ops->stream_gone(s, err);               /* unlinks and frees s */
        if (c->streams == s) h2_conn_unlink(c, s); /* never loop on a stream left behind */
    }
}

static void release(h2_conn *c)
{
    if (c->session != NULL) nghttp2_session_del(c->session);
    c->session = NULL;
    if (c->ssl != NULL) SSL_free(c->ssl);
    c->ssl = NULL;
    mrd_buf_free(&c->out);
    mrd_buf_free(&c->inflight);
}

static void on_handle_closed(uv_handle_t *h)
{
    h2_conn *c = h->data;
    if (--c->handles_open > 0) return;
    release(c);
    c->ops->freed(c);
}

static void conn_close_now(h2_conn *c, int err)
{
    c->close_pending = false;
    c->closing = true;
    c->flush_scheduled = false;
    if (err == 0 || err == MRD_ECLOSED) {
        MRD_INFO("h2_conn_close", "peer=%s side=%s", c->peer, c->is_server ? "server" : "client");
    } else {
        MRD_WARN("h2_conn_close", "peer=%s side=%s err=%s", c->peer,
                 c->is_server ? "server" : "client", mrd_errname(err));
    }
    say_goodbye(c, err);
    fail_streams(c, err);
    c->ops->closing(c, err);
    c->tcp.data = c;
    c->flusher.data = c;
    c->alive.data = c;
    int handles = c->handles_open;
    if (handles >= 1) uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    if (handles >= 2) uv_close((uv_handle_t *)&c->flusher, on_handle_closed);
    if (handles >= 3) uv_close((uv_handle_t *)&c->alive, on_handle_closed);
}

void h2_conn_close(h2_conn *c, int err)
{
    if (c->closing) return;
    if (c->depth > 0) {
        if (!c->close_pending) c->close_err = err;
        c->close_pending = true;
        return;
    }
    conn_close_now(c, err);
}
