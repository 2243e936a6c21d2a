/*
 * The h2 server: one listening TCP handle and the connections it accepted.
 * Closing the server closes every connection (each open request gets its
 * on_close), then calls done and frees the server once every handle is gone.
 */
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

static void maybe_done(h2_server *srv)
{
    if (!srv->closing || srv->listening || srv->conns != NULL) return;
    MRD_INFO("h2_server_closed", "port=%u", srv->port);
    void (*done)(void *) = srv->done;
    void *done_ud = srv->done_ud;
    nghttp2_session_callbacks_del(srv->ngcbs);
    free(srv);
    if (done != NULL) done(done_ud);
}

/* ---- connection ops -------------------------------------------------------------------- */

static int sconn_ready(h2_conn *c)
{
    h2_sconn *sc = mrd_container_of(c, h2_sconn, c);
    int rc = h2_conn_session_new(c, sc->srv->ngcbs, sc, sc->srv->streams_max);
    if (rc == 0) MRD_INFO("h2_conn_open", "peer=%s side=server tls=%d", c->peer, c->tls != NULL);
    return rc;
}

static void sconn_stream_gone(h2_strm *s, int err)
{
    h2_req_gone((h2_req *)s, NGHTTP2_CANCEL);
}

static void sconn_stream_drained(h2_strm *s)
{
    h2_req *req = (h2_req *)s;
    h2_server *srv = req->sc->srv;
    if (srv->cbs.on_drain != NULL) srv->cbs.on_drain(req, srv->ud);
}

static void sconn_closing(h2_conn *c, int err) {}

static void sconn_freed(h2_conn *c)
{
    h2_sconn *sc = mrd_container_of(c, h2_sconn, c);
    h2_server *srv = sc->srv;
    if (sc->prev != NULL)
        sc->prev->next = sc->next;
    else
        srv->conns = sc->next;
    if (sc->next != NULL) sc->next->prev = sc->prev;
    srv->nconns--;
    free(sc);
    maybe_done(srv);
}

static const h2_conn_ops sconn_ops = {
    .transport_ready = sconn_ready,
    .stream_gone = sconn_stream_gone,
    .stream_drained = sconn_stream_drained,
    .closing = sconn_closing,
    .freed = sconn_freed,
};

/* ---- listener -------------------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status)
{
    h2_server *srv = mrd_container_of((uv_tcp_t *)listener, h2_server, listener);
    if (status < 0) {
        MRD_WARN("h2_accept_fail", "port=%u reason=\"%s\"", srv->port, uv_strerror(status));
        return;
    }
    h2_sconn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL) return; /* the connection waits in the backlog */
    sc->srv = srv;
    if (h2_conn_init(&sc->c, srv->loop, &sconn_ops, srv->tls, true) != 0) {
        free(sc); /* uv_tcp_init and uv_idle_init cannot fail on a live loop */
        return;
    }
    sc->next = srv->conns;
    if (srv->conns != NULL) srv->conns->prev = sc;
    srv->conns = sc;
    srv->nconns++;
    int rc = uv_accept(listener, (uv_stream_t *)&sc->c.tcp);
    if (rc < 0 || srv->nconns > H2_SERVER_CONNS_MAX) {
        MRD_WARN("h2_accept_fail", "port=%u conns=%zu reason=\"%s\"", srv->port, srv->nconns,
                 rc < 0 ? uv_strerror(rc) : "too many connections");
        h2_conn_close(&sc->c, MRD_EBUSY);
        return;
    }
    rc = h2_conn_start(&sc->c);
    if (rc != 0) h2_conn_close(&sc->c, rc);
}

static int resolve_listen(const h2_server_config *cfg, struct sockaddr_storage *ss)
{
    const char *host = cfg->host != NULL ? cfg->host : "0.0.0.0";
    if (uv_ip4_addr(host, cfg->port, (struct sockaddr_in *)ss) == 0) return 0;
    if (uv_ip6_addr(host, cfg->port, (struct sockaddr_in6 *)ss) == 0) return 0;
    if (strcmp(host, "localhost") == 0) {
        return uv_ip4_addr("127.0.0.1", cfg->port, (struct sockaddr_in *)ss);
    }
    return UV_EINVAL;
}

static void on_failed_listener_closed(uv_handle_t *h)
{
    h2_server *srv = mrd_container_of((uv_tcp_t *)h, h2_server, listener);
    nghttp2_session_callbacks_del(srv->ngcbs);
    free(srv);
}

static int bind_and_listen(h2_server *srv, const h2_server_config *cfg, mrd_msg *msg)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (resolve_listen(cfg, &ss) != 0) {
        return mrd_fail(msg, MRD_EINVAL, "h2: cannot listen on host '%s' (an IP address)",
                        cfg->host);
    }
    int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, H2_LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        return mrd_fail(msg, MRD_EIO, "h2: cannot listen on %s:%u: %s",
                        cfg->host ? cfg->host : "0.0.0.0", cfg->port, uv_strerror(rc));
    }
    int len = sizeof(ss);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int h2_server_start(uv_loop_t *loop, const h2_server_config *cfg, const h2_server_cbs *cbs,
                    void *ud, h2_server **out, mrd_msg *msg)
{
    *out = NULL;
    if (loop == NULL || cfg == NULL || cbs == NULL)
        return mrd_fail(msg, MRD_EINVAL, "h2: bad args");
    if (cfg->tls != NULL && !cfg->tls->server) {
        return mrd_fail(msg, MRD_EINVAL, "h2: server given a client TLS context");
    }
    h2_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) return mrd_fail(msg, MRD_ENOMEM, "h2: out of memory");
    srv->loop = loop;
    srv->cbs = *cbs;
    srv->ud = ud;
    srv->tls = cfg->tls;
    srv->body_bytes_max = cfg->body_bytes_max ? cfg->body_bytes_max : H2_BODY_BYTES_MAX_DEFAULT;
    srv->streams_max = cfg->streams_max ? cfg->streams_max : H2_STREAMS_MAX_DEFAULT;
    if (h2_server_session_callbacks(&srv->ngcbs) != 0) {
        free(srv);
        return mrd_fail(msg, MRD_ENOMEM, "h2: out of memory");
    }
    uv_tcp_init(loop, &srv->listener);
    int rc = bind_and_listen(srv, cfg, msg);
    if (rc != 0) {
        /* freed once the loop has closed the handle */
        uv_close((uv_handle_t *)&srv->listener, on_failed_listener_closed);
        return rc;
    }
    srv->listening = true;
    MRD_INFO("h2_listen", "host=%s port=%u tls=%d verify_peer=%d",
             cfg->host ? cfg->host : "0.0.0.0", srv->port, cfg->tls != NULL,
             cfg->tls != NULL && cfg->tls->verify_peer);
    *out = srv;
    return 0;
}

uint16_t h2_server_port(const h2_server *srv)
{
    return srv->port;
}

static void on_listener_closed(uv_handle_t *h)
{
    h2_server *srv = mrd_container_of((uv_tcp_t *)h, h2_server, listener);
    srv->listening = false;
    maybe_done(srv);
}

void h2_server_close(h2_server *srv, void (*done)(void *ud), void *ud)
{
    if (srv->closing) return;
    srv->closing = true;
    srv->done = done;
    srv->done_ud = ud;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (h2_sconn *sc = srv->conns; sc != NULL; sc = sc->next) {
        h2_conn_close(&sc->c, MRD_ECLOSED);
    }
}
