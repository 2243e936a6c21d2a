/*
 * h2 internals: the transport glue every HTTP/2 connection shares (server
 * side and client side), the per-stream send queue, and the TLS engine.
 *
 * A connection (h2_conn) owns one TCP handle, one idle handle that coalesces
 * flushes, one timer that checks the peer is alive, an optional SSL object over two memory BIOs, and the nghttp2
 * session. Bytes flow:
 *
 *   socket -> [SSL_read] -> nghttp2_session_mem_recv -> callbacks
 *   nghttp2_session_mem_send -> [SSL_write] -> out -> uv_write -> socket
 *
 * Lifetimes: streams live in the connection's list from the moment they are
 * created until their close is reported; a connection is freed only after all
 * of its handles have closed. Closing while nghttp2 (or an application
 * callback reached through it) is on the stack is deferred until it returns
 * (`depth`), so that no callback ever runs against a freed session.
 */
#ifndef MERIDIAN_H2_INTERNAL_H
#define MERIDIAN_H2_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "meridian/h2.h"

/* Bytes read from a socket in one go (one embedded buffer per connection). */
#define H2_READ_BYTES (64u * 1024)
/* nghttp2 is asked for more frames only while less than this waits for the socket. */
#define H2_CONN_OUT_BYTES_HIGH (256u * 1024)
/* Minimum allocation of a send-queue chunk; small writes share one. */
#define H2_CHUNK_BYTES (16u * 1024)
/* Plaintext bytes taken out of the TLS engine in one SSL_read. */
#define H2_TLS_READ_BYTES (16u * 1024)
/* Longest peer certificate CN kept for h2_req_peer. */
#define H2_PEER_CN_MAX 256
/* Longest "ip:port" kept for logs. */
#define H2_PEER_NAME_MAX 64

struct h2_tls {
    SSL_CTX *ctx;
    bool server;
    bool verify_peer;
};

typedef struct h2_conn h2_conn;
typedef struct h2_strm h2_strm;

/* One piece of a stream's send queue. */
typedef struct h2_chunk {
    struct h2_chunk *next;
    size_t cap; /* bytes of data[] */
    size_t len; /* bytes written into data[] */
    size_t off; /* bytes already taken by the connection */
    uint8_t data[];
} h2_chunk;

/* What h2_req and h2_call share: queue, flow-control accounting, list links. */
struct h2_strm {
    h2_conn *conn;
    int32_t id;
    h2_strm *prev, *next; /* the connection's open streams */
    h2_chunk *head, *tail;
    size_t queued;       /* bytes in the queue */
    size_t unconsumed;   /* bytes received while paused, not yet returned to the window */
    bool finished;       /* no more writes: EOF after the queue */
    bool deferred;       /* the data provider returned DEFERRED */
    bool paused;         /* receive-side back-pressure */
    bool drained;        /* bytes left the queue since the last report */
    bool remote_ended;   /* the peer sent END_STREAM */
    bool cancel_pending; /* cancelled before its HEADERS left: report at the next flush */
};

typedef struct {
    /* TLS handshake done (or TCP up, cleartext): create the nghttp2 session. */
    int (*transport_ready)(h2_conn *c);
    /* The connection is closing with s still open: report its close and free it. */
    void (*stream_gone)(h2_strm *s, int err);
    /* Bytes left s's queue, or s->cancel_pending is set. */
    void (*stream_drained)(h2_strm *s);
    /* Every stream is gone; the handles are about to close. */
    void (*closing)(h2_conn *c, int err);
    /* Both handles have closed: the owner may free the memory holding c. */
    void (*freed)(h2_conn *c);
} h2_conn_ops;

struct h2_conn {
    uv_tcp_t tcp;
    uv_idle_t flusher;
    uv_timer_t alive;     /* every H2_PING_MS: PING, or close after H2_DEAD_MS of silence */
    uint64_t last_rx_ms; /* when bytes last arrived (or the connection began) */
    uint64_t tick_ms;    /* when the timer last ran */
    uv_write_t write_req;
    uv_loop_t *loop;
    const h2_conn_ops *ops;
    h2_tls *tls;   /* NULL: cleartext */
    SSL *ssl;      /* per-connection engine over bio_in/bio_out */
    BIO *bio_in;   /* network bytes to the engine (owned by ssl) */
    BIO *bio_out;  /* engine's bytes to the network (owned by ssl) */
    bool tls_done; /* handshake finished */
    bool is_server;
    nghttp2_session *session; /* NULL until the transport is ready */
    mrd_buf out;              /* bytes for the socket not yet handed to libuv */
    mrd_buf inflight;         /* bytes of the one uv_write in progress */
    bool writing;
    bool reading;
    bool flush_scheduled;
    int depth;          /* > 0 while nghttp2 or an application callback is on the stack */
    bool close_pending; /* a close was asked for while depth > 0 */
    int close_err;
    bool closing;   /* closing has started: no new work */
    bool goodbye;   /* closing: the last frames (GOAWAY) are being taken */
    bool peer_gone; /* the peer closed or reset the socket: write nothing more */
    int handles_open;
    h2_strm *streams; /* open streams */
    bool any_drained;
    size_t queued_bytes; /* all streams' queues together */
    char peer[H2_PEER_NAME_MAX];
    char peer_cn[H2_PEER_CN_MAX]; /* verified client certificate CN, or "" */
    char server_name[256];        /* client side: name checked in the server's certificate */
    uint8_t read_buf[H2_READ_BYTES];
};

/* ---- conn.c ---------------------------------------------------------------------------- */

/* Initialises both handles; from here on h2_conn_close is the only way out. */
int h2_conn_init(h2_conn *c, uv_loop_t *loop, const h2_conn_ops *ops, h2_tls *tls, bool is_server);
/* The TCP stream is connected: start reading and the TLS handshake (or the session). */
int h2_conn_start(h2_conn *c);
/* Creates the nghttp2 session with Meridian's options and sends our SETTINGS. */
int h2_conn_session_new(h2_conn *c, const nghttp2_session_callbacks *cbs, void *ud,
                        uint32_t streams_max);
void h2_conn_enter(h2_conn *c);
void h2_conn_leave(h2_conn *c);
/* Asks for a flush on the next loop turn (coalesces many writes into one). */
void h2_conn_schedule_flush(h2_conn *c);
void h2_conn_flush(h2_conn *c);
/* Starts closing (deferred while depth > 0); err 0 or MRD_ECLOSED for a local close. */
void h2_conn_close(h2_conn *c, int err);
void h2_conn_link(h2_conn *c, h2_strm *s);
void h2_conn_unlink(h2_conn *c, h2_strm *s);
h2_strm *h2_conn_find(h2_conn *c, int32_t id);

/* ---- stream.c -------------------------------------------------------------------------- */

void h2_strm_init(h2_strm *s, h2_conn *c);
/* Queues bytes; they leave as flow control allows. */
int h2_strm_write(h2_strm *s, const void *data, size_t len);
/* No more writes: the stream's DATA ends with END_STREAM once the queue is empty. */
int h2_strm_finish(h2_strm *s);
void h2_strm_pause(h2_strm *s, bool paused);
/* len bytes of DATA for s were handed to the application: give them back to the
 * peer's stream window unless paused (the connection window is returned on receipt). */
void h2_strm_received(h2_strm *s, size_t len);
/* A data provider that reads s's queue. */
nghttp2_data_provider h2_strm_provider(h2_strm *s);
/* Frees the queue and unlinks s from its connection. */
void h2_strm_release(h2_strm *s);

/* ---- tls.c ----------------------------------------------------------------------------- */

/* Creates the per-connection engine over two memory BIOs. */
int h2_tls_engine_new(h2_conn *c);
/* Drives the handshake; sets c->tls_done. Returns 0 (done or waiting) or MRD_ETLS. */
int h2_tls_engine_handshake(h2_conn *c);
/* Writes the latest TLS failure into buf, for logs. */
void h2_tls_last_error(h2_conn *c, int ssl_rc, char *buf, size_t len);
/* True when ALPN selected h2 (or, on the server, when the client offered no ALPN). */
bool h2_tls_alpn_ok(const h2_conn *c);
void h2_tls_peer_cn(const h2_conn *c, char *buf, size_t len);

/* ---- shared helpers -------------------------------------------------------------------- */

/* Copies of a header list, for requests and responses. */
typedef struct {
    h2_header items[H2_HEADERS_MAX];
    size_t n;
} h2_header_set;

int h2_header_set_add(h2_header_set *set, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen);
const char *h2_header_set_get(const h2_header_set *set, const char *name);
void h2_header_set_free(h2_header_set *set);
/* An nghttp2 name/value pair over NUL-terminated strings (copied at submit). */
nghttp2_nv h2_nv(const char *name, const char *value);

/* ---- server side (server.c, server_session.c, req.c) ----------------------------------- */

/* Most connections one server keeps at once; more are accepted and closed. */
#define H2_SERVER_CONNS_MAX 4096
#define H2_LISTEN_BACKLOG 511

typedef struct h2_sconn {
    h2_conn c;
    h2_server *srv;
    struct h2_sconn *prev, *next;
} h2_sconn;

struct h2_server {
    uv_tcp_t listener;
    uv_loop_t *loop;
    h2_server_cbs cbs;
    void *ud;
    h2_tls *tls;
    size_t body_bytes_max;
    uint32_t streams_max;
    uint16_t port;
    nghttp2_session_callbacks *ngcbs;
    h2_sconn *conns;
    size_t nconns;
    bool listening; /* the listener handle is open */
    bool closing;
    void (*done)(void *ud);
    void *done_ud;
};

struct h2_req {
    h2_strm s; /* first: an h2_strm * is an h2_req * on a server connection */
    h2_sconn *sc;
    char *method;
    char *path;
    h2_header_set hdrs;
    mrd_buf body;
    h2_body_mode mode;
    bool announced; /* the application has seen it: on_close is owed */
    bool responded;
    bool too_big; /* buffered body over the limit: answered 413 */
    void *ud;
};

int h2_server_session_callbacks(nghttp2_session_callbacks **out);
/* Reports req's close to the application (once) and frees it. */
void h2_req_gone(h2_req *req, uint32_t error_code);

#endif
