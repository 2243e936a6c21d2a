/*
 * A stream's send queue and its receive-side flow control, shared by server
 * requests (h2_req) and client calls (h2_call).
 *
 * Writes are copied into chunks; nghttp2 takes bytes from the head through a
 * data provider as the peer's window allows. An empty queue that is not
 * finished answers NGHTTP2_ERR_DEFERRED, and the next write resumes it. The
 * connection counts every queued byte so that one connection cannot hold more
 * than H2_CONN_QUEUED_BYTES_MAX.
 *
 * Received DATA is returned to the peer's connection window at once and to
 * the stream's window once the application has it and is not paused: a paused
 * stream stops its peer after one window, without blocking the other streams.
 */
#include <stdlib.h>
#include <string.h>

#include "h2_internal.h"

void h2_strm_init(h2_strm *s, h2_conn *c)
{
    memset(s, 0, sizeof(*s));
    s->conn = c;
    s->id = -1;
}

static int queue_append(h2_strm *s, const uint8_t *data, size_t len)
{
    h2_chunk *t = s->tail;
    if (t != NULL && t->cap - t->len >= len) {
        memcpy(t->data + t->len, data, len);
        t->len += len;
        return 0;
    }
    size_t cap = len > H2_CHUNK_BYTES ? len : H2_CHUNK_BYTES;
    h2_chunk *ch = malloc(sizeof(*ch) + cap);
    if (ch == NULL) return MRD_ENOMEM;
    ch->next = NULL;
    ch->cap = cap;
    ch->len = len;
    ch->off = 0;
    memcpy(ch->data, data, len);
    if (t != NULL)
        t->next = ch;
    else
        s->head = ch;
    s->tail = ch;
    return 0;
}

static void resume(h2_strm *s)
{
    h2_conn *c = s->conn;
    if (s->deferred && c->session != NULL && s->id > 0) {
        s->deferred = false;
        nghttp2_session_resume_data(c->session, s->id);
    }
    h2_conn_schedule_flush(c);
}

int h2_strm_write(h2_strm *s, const void *data, size_t len)
{
    h2_conn *c = s->conn;
    if (c->closing) return MRD_ECLOSED;
    if (s->finished) return MRD_ESTATE;
    if (len == 0) return 0;
    if (len > H2_CONN_QUEUED_BYTES_MAX) return MRD_ETOOBIG;
    if (c->queued_bytes + len > H2_CONN_QUEUED_BYTES_MAX) return MRD_EBUSY;
    int rc = queue_append(s, data, len);
    if (rc != 0) return rc;
    s->queued += len;
    c->queued_bytes += len;
    resume(s);
    return 0;
}

int h2_strm_finish(h2_strm *s)
{
    if (s->conn->closing) return MRD_ECLOSED;
    if (s->finished) return MRD_ESTATE;
    s->finished = true;
    resume(s);
    return 0;
}

/* Copies up to len queued bytes into buf and frees the chunks it empties. */
static size_t queue_take(h2_strm *s, uint8_t *buf, size_t len)
{
    size_t n = 0;
    while (n < len && s->head != NULL) {
        h2_chunk *ch = s->head;
        size_t k = ch->len - ch->off;
        if (k > len - n) k = len - n;
        memcpy(buf + n, ch->data + ch->off, k);
        ch->off += k;
        n += k;
        if (ch->off < ch->len) break;
        s->head = ch->next;
        if (s->head == NULL) s->tail = NULL;
        free(ch);
    }
    s->queued -= n;
    s->conn->queued_bytes -= n;
    return n;
}

static ssize_t provider_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t len,
                             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2_strm *s = src->ptr;
    if (s->conn->closing) return NGHTTP2_ERR_DEFERRED; /* going away: only GOAWAY leaves */
    size_t n = queue_take(s, buf, len);
    if (n > 0) {
        s->drained = true;
        s->conn->any_drained = true;
    }
    if (s->queued == 0 && s->finished) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

nghttp2_data_provider h2_strm_provider(h2_strm *s)
{
    nghttp2_data_provider p;
    p.source.ptr = s;
    p.read_callback = provider_read;
    return p;
}

void h2_strm_received(h2_strm *s, size_t len)
{
    h2_conn *c = s->conn;
    if (c->session == NULL || s->id <= 0) return;
    if (s->paused) {
        s->unconsumed += len;
        return;
    }
    nghttp2_session_consume_stream(c->session, s->id, len);
}

void h2_strm_pause(h2_strm *s, bool paused)
{
    h2_conn *c = s->conn;
    s->paused = paused;
    if (paused || s->unconsumed == 0 || c->closing || c->session == NULL) return;
    nghttp2_session_consume_stream(c->session, s->id, s->unconsumed);
    s->unconsumed = 0;
    h2_conn_schedule_flush(c); /* the WINDOW_UPDATE */
}

void h2_strm_release(h2_strm *s)
{
    while (s->head != NULL) {
        h2_chunk *ch = s->head;
        s->head = ch->next;
        free(ch);
    }
    s->tail = NULL;
    s->conn->queued_bytes -= s->queued;
    s->queued = 0;
    h2_conn_unlink(s->conn, s);
}

/* ---- headers --------------------------------------------------------------------------- */

int h2_header_set_add(h2_header_set *set, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen)
{
    if (set->n == H2_HEADERS_MAX) return MRD_ETOOBIG;
    char *n = strndup((const char *)name, namelen);
    char *v = strndup((const char *)value, valuelen);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return MRD_ENOMEM;
    }
    set->items[set->n].name = n;
    set->items[set->n].value = v;
    set->n++;
    return 0;
}

const char *h2_header_set_get(const h2_header_set *set, const char *name)
{
    for (size_t i = 0; i < set->n; i++) {
        if (strcmp(set->items[i].name, name) == 0) return set->items[i].value;
    }
    return NULL;
}

void h2_header_set_free(h2_header_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free((char *)set->items[i].name);
        free((char *)set->items[i].value);
    }
    set->n = 0;
}

nghttp2_nv h2_nv(const char *name, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}
