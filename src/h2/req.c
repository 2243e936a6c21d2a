/*
 * h2_req: one request on a server connection, as the application sees it —
 * what arrived (method, path, headers, body, peer) and how to answer (whole
 * or streamed), plus receive-side pausing for streamed bodies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

/* :status and content-length come before the caller's headers. */
#define H2_RESPONSE_NV_MAX (H2_HEADERS_MAX + 2)

void h2_req_gone(h2_req *req, uint32_t error_code)
{
    h2_server *srv = req->sc->srv;
    if (req->announced && srv->cbs.on_close != NULL) srv->cbs.on_close(req, error_code, srv->ud);
    h2_strm_release(&req->s);
    h2_header_set_free(&req->hdrs);
    mrd_buf_free(&req->body);
    free(req->method);
    free(req->path);
    free(req);
}

const char *h2_req_method(const h2_req *req)
{
    return req->method != NULL ? req->method : "";
}

const char *h2_req_path(const h2_req *req)
{
    return req->path != NULL ? req->path : "";
}

const char *h2_req_header(const h2_req *req, const char *name)
{
    return h2_header_set_get(&req->hdrs, name);
}

const uint8_t *h2_req_body(const h2_req *req, size_t *len)
{
    if (len != NULL) *len = req->body.len;
    return req->body.data != NULL ? req->body.data : (const uint8_t *)"";
}

const char *h2_req_peer(const h2_req *req)
{
    return req->sc->c.peer_cn[0] != '\0' ? req->sc->c.peer_cn : NULL;
}

void h2_req_set_ud(h2_req *req, void *ud)
{
    req->ud = ud;
}

void *h2_req_ud(const h2_req *req)
{
    return req->ud;
}

static int submit(h2_req *req, int status, const h2_header *hdrs, size_t nhdrs,
                  const char *content_length, bool with_body)
{
    h2_conn *c = &req->sc->c;
    if (c->closing || c->session == NULL) return MRD_ECLOSED;
    if (req->responded) return MRD_ESTATE;
    if (status < 100 || status > 999 || nhdrs > H2_HEADERS_MAX) return MRD_EINVAL;
    nghttp2_nv nva[H2_RESPONSE_NV_MAX];
    size_t n = 0;
    char status_text[4];
    snprintf(status_text, sizeof(status_text), "%d", status);
    nva[n++] = h2_nv(":status", status_text);
    if (content_length != NULL) nva[n++] = h2_nv("content-length", content_length);
    for (size_t i = 0; i < nhdrs; i++) {
        if (content_length != NULL && strcmp(hdrs[i].name, "content-length") == 0) continue;
        nva[n++] = h2_nv(hdrs[i].name, hdrs[i].value);
    }
    nghttp2_data_provider prov = h2_strm_provider(&req->s);
    int rv = nghttp2_submit_response(c->session, req->s.id, nva, n, with_body ? &prov : NULL);
    if (rv != 0) return rv == NGHTTP2_ERR_NOMEM ? MRD_ENOMEM : MRD_ESTATE;
    req->responded = true;
    h2_conn_schedule_flush(c);
    return 0;
}

int h2_req_respond(h2_req *req, int status, const h2_header *hdrs, size_t nhdrs, const void *body,
                   size_t len)
{
    char length_text[24];
    snprintf(length_text, sizeof(length_text), "%zu", len);
    if (len > H2_CONN_QUEUED_BYTES_MAX) return MRD_ETOOBIG;
    if (len > 0 && req->sc->c.queued_bytes + len > H2_CONN_QUEUED_BYTES_MAX) return MRD_EBUSY;
    int rc = submit(req, status, hdrs, nhdrs, length_text, len > 0);
    if (rc != 0 || len == 0) return rc;
    rc = h2_strm_write(&req->s, body, len);
    if (rc == 0) rc = h2_strm_finish(&req->s);
    if (rc != 0) h2_req_reset(req, NGHTTP2_INTERNAL_ERROR);
    return rc;
}

int h2_req_respond_start(h2_req *req, int status, const h2_header *hdrs, size_t nhdrs)
{
    return submit(req, status, hdrs, nhdrs, NULL, true);
}

int h2_req_write(h2_req *req, const void *data, size_t len)
{
    if (!req->responded) return MRD_ESTATE;
    return h2_strm_write(&req->s, data, len);
}

int h2_req_finish(h2_req *req)
{
    if (!req->responded) return MRD_ESTATE;
    return h2_strm_finish(&req->s);
}

size_t h2_req_queued(const h2_req *req)
{
    return req->s.queued;
}

void h2_req_reset(h2_req *req, uint32_t error_code)
{
    h2_conn *c = &req->sc->c;
    if (c->closing || c->session == NULL) return;
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, req->s.id, error_code);
    h2_conn_schedule_flush(c);
}

void h2_req_pause(h2_req *req, bool paused)
{
    h2_strm_pause(&req->s, paused);
}
