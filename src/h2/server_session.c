/*
 * Server-side nghttp2 callbacks: a request's life from its first HEADERS to
 * its stream's close. Each callback finds its h2_req through the stream's
 * user data; nothing here touches the socket.
 */
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

static h2_req *req_of(nghttp2_session *session, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(session, stream_id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    h2_sconn *sc = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2_req *req = calloc(1, sizeof(*req));
    if (req == NULL) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    h2_strm_init(&req->s, &sc->c);
    req->s.id = frame->hd.stream_id;
    req->sc = sc;
    mrd_buf_init(&req->body);
    h2_conn_link(&sc->c, &req->s);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, req);
    return 0;
}

static int keep_pseudo(char **slot, const uint8_t *value, size_t len)
{
    if (*slot != NULL) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    *slot = strndup((const char *)value, len);
    return *slot != NULL ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2_req *req = req_of(session, frame->hd.stream_id);
    if (req == NULL) return 0;
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        return keep_pseudo(&req->method, value, valuelen);
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        return keep_pseudo(&req->path, value, valuelen);
    }
    if (namelen > 0 && name[0] == ':') return 0; /* :scheme, :authority */
    if (h2_header_set_add(&req->hdrs, name, namelen, value, valuelen) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* too many headers: reset */
    }
    return 0;
}

static void headers_done(h2_req *req)
{
    h2_server *srv = req->sc->srv;
    req->announced = true;
    req->mode = H2_BUFFER;
    if (srv->cbs.on_headers != NULL) req->mode = srv->cbs.on_headers(req, srv->ud);
}

static void request_ended(h2_req *req)
{
    h2_server *srv = req->sc->srv;
    req->s.remote_ended = true;
    if (req->mode == H2_STREAM) {
        if (srv->cbs.on_end != NULL) srv->cbs.on_end(req, srv->ud);
        return;
    }
    if (req->too_big) return;
    /* NUL-terminate the body for convenience (not counted in its length). */
    if (mrd_buf_reserve(&req->body, 1) != 0) {
        h2_req_reset(req, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    req->body.data[req->body.len] = '\0';
    if (srv->cbs.on_request != NULL) srv->cbs.on_request(req, srv->ud);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    h2_sconn *sc = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        MRD_INFO("h2_goaway_recv", "peer=%s error_code=%u last_stream=%d", sc->c.peer,
                 frame->goaway.error_code, frame->goaway.last_stream_id);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    h2_req *req = req_of(session, frame->hd.stream_id);
    if (req == NULL) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        headers_done(req);
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !req->s.remote_ended) request_ended(req);
    return 0;
}

static void reject_too_big(h2_req *req)
{
    static const char body[] = "{\"error\":\"body too large\"}";
    h2_header ct = {"content-type", "application/json"};
    req->too_big = true;
    mrd_buf_free(&req->body);
    MRD_WARN("h2_body_too_big", "peer=%s stream=%d max=%zu", req->sc->c.peer, req->s.id,
             req->sc->srv->body_bytes_max);
    if (h2_req_respond(req, 413, &ct, 1, body, sizeof(body) - 1) != 0) {
        h2_req_reset(req, NGHTTP2_INTERNAL_ERROR);
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud)
{
    h2_server *srv = ((h2_sconn *)ud)->srv;
    h2_req *req = req_of(session, stream_id);
    nghttp2_session_consume_connection(session, len);
    if (req == NULL) {
        nghttp2_session_consume_stream(session, stream_id, len);
        return 0;
    }
    if (req->mode == H2_STREAM) {
        if (srv->cbs.on_data != NULL) srv->cbs.on_data(req, data, len, srv->ud);
        h2_strm_received(&req->s, len);
        return 0;
    }
    nghttp2_session_consume_stream(session, stream_id, len);
    if (req->too_big) return 0;
    if (req->body.len + len > srv->body_bytes_max) {
        reject_too_big(req);
        return 0;
    }
    if (mrd_buf_append(&req->body, data, len) != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud)
{
    h2_req *req = req_of(session, stream_id);
    if (req == NULL) return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    h2_req_gone(req, error_code);
    return 0;
}

int h2_server_session_callbacks(nghttp2_session_callbacks **out)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return MRD_ENOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    *out = cbs;
    return 0;
}
