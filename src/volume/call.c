/*
 * One HTTP/2 request to a storage node and its answer: the body is collected
 * (bounded per kind), and when the stream closes the answer goes to the
 * handler of its kind. Counters of calls in flight per node live here.
 */
#include <stdlib.h>
#include <string.h>

#include "vol_int.h"

static void on_response(h2_call *call, int status, void *ud)
{
    vol_call *c = ud;
    c->status = status;
}

static void on_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    vol_call *c = ud;
    if (c->too_big) return;
    if (c->body.len + len > c->body_max || mrd_buf_append(&c->body, data, len) != 0) {
        c->too_big = true;
        h2_call_cancel(call);
    }
}

static void on_close(h2_call *call, int error, void *ud)
{
    vol_call *c = ud;
    vol_node *n = c->n;
    if (c->kind == CALL_APPEND)
        n->appends--;
    else
        n->calls--;
    if (error == 0) n->progress_ms = vol_now_ms(c->v);
    if (error == 0 && c->too_big) error = MRD_ETOOBIG;
    if (c->kind == CALL_PAGE) {
        vol_read_on_answer(c, call, error); /* frees a cancelled read even while closing */
    } else if (c->v->phase != PHASE_CLOSING) {
        switch (c->kind) {
        case CALL_REPORT:
            vol_recover_on_report(c, call, error);
            break;
        case CALL_FENCE:
            vol_fence_on_answer(c, call, error);
            break;
        case CALL_APPEND:
            vol_append_on_answer(c, call, error);
            break;
        case CALL_PAGE:
            break;
        case CALL_SCL:
            vol_scl_on_answer(c, call, error);
            break;
        }
    }
    vol_call_free(c);
}

static const h2_call_cbs call_cbs = {
    .on_response = on_response,
    .on_data = on_data,
    .on_close = on_close,
};

void vol_call_free(vol_call *c)
{
    mrd_buf_free(&c->body);
    free(c->lsns);
    free(c);
}

int vol_call_start(vol_node *n, const vol_call *proto, const char *method, const char *path,
                   const h2_header *hdrs, size_t nhdrs, const void *body, size_t len)
{
    if (n->client == NULL || n->state < NODE_CONNECTED) return MRD_ECLOSED;
    vol_call *c = malloc(sizeof(*c));
    if (c == NULL) return MRD_ENOMEM;
    *c = *proto;
    c->v = n->v;
    c->n = n;
    c->status = 0;
    c->too_big = false;
    mrd_buf_init(&c->body);
    if (c->body_max == 0) c->body_max = VOL_ANSWER_BYTES_MAX;
    if (n->appends == 0 && n->calls == 0) n->progress_ms = vol_now_ms(n->v);
    int rc = h2_client_request(n->client, method, path, hdrs, nhdrs, body, len, true, &call_cbs, c,
                               NULL);
    if (rc != 0) {
        c->lsns = NULL; /* the caller still owns them */
        vol_call_free(c);
        return rc;
    }
    if (c->kind == CALL_APPEND)
        n->appends++;
    else
        n->calls++;
    return 0;
}
