/*
 * h2: HTTP/2 for every Meridian link — nghttp2 over libuv, with TLS 1.3
 * through OpenSSL memory BIOs (ALPN "h2", mutual certificates between nodes)
 * or cleartext prior-knowledge h2 where a topology says so.
 *
 * nghttp2 never touches a socket: bytes read from the TCP handle go through
 * the TLS engine (when there is one) into nghttp2_session_mem_recv, and what
 * nghttp2_session_mem_send yields goes back out the same way. Everything runs
 * on the one libuv loop of the process; no function here is thread-safe.
 *
 * Server side, a request is either buffered (the default: on_request is called
 * once the whole body has arrived, up to body_bytes_max) or streamed (the
 * on_headers callback returns H2_STREAM: on_data is called for every chunk and
 * on_end when the peer ends its side). A response is either whole
 * (h2_req_respond) or streamed (h2_req_respond_start, then h2_req_write any
 * number of times, then h2_req_finish). Written data waits in the stream's
 * queue until HTTP/2 flow control lets it out; h2_req_queued tells a producer
 * how much is waiting so that it can stop producing (back-pressure), and
 * on_drain tells it when bytes have left so that it can produce again. A
 * receiver applies back-pressure with h2_req_pause / h2_call_pause: while
 * paused, received data is not acknowledged to the peer's stream window, so
 * the peer stops after at most H2_STREAM_WINDOW_BYTES (other streams on the
 * connection keep flowing: the connection window is returned on receipt).
 *
 * Limits: every connection holds at most H2_CONN_QUEUED_BYTES_MAX bytes in
 * its streams' queues together (a write beyond it fails with MRD_EBUSY; a
 * single write larger than it with MRD_ETOOBIG).
 *
 * Writing to a peer that has gone can raise SIGPIPE: a process using h2 sets
 * SIGPIPE to SIG_IGN in main().
 *
 * Object lifetimes follow libuv's: an h2_req or h2_call stays valid until its
 * on_close callback has returned; a server or client is freed only after its
 * close completes.
 */
#ifndef MERIDIAN_H2_H
#define MERIDIAN_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/common.h"

#define H2_BODY_BYTES_MAX_DEFAULT (16u * 1024 * 1024)
#define H2_STREAMS_MAX_DEFAULT 256u
#define H2_HEADERS_MAX 32
/* Receive window we announce for every stream (SETTINGS_INITIAL_WINDOW_SIZE). */
#define H2_STREAM_WINDOW_BYTES (1u * 1024 * 1024)
/* Bytes all streams of one connection may hold queued for sending. */
#define H2_CONN_QUEUED_BYTES_MAX (64u * 1024 * 1024)
/* Liveness: a connection that received nothing for H2_PING_MS sends a PING (which
 * every HTTP/2 peer answers); one that received nothing for H2_DEAD_MS — not even the
 * end of a TCP connect or a TLS handshake — is closed (MRD_ETIMEDOUT). A silent cut
 * or a stopped peer is thus noticed, the streams on it fail and their owners
 * reconnect, instead of waiting on TCP retransmissions for minutes. */
#define H2_PING_MS 1000u
#define H2_DEAD_MS 5000u

typedef struct {
    const char *name; /* lowercase */
    const char *value;
} h2_header;

/* ---- TLS ---------------------------------------------------------------------------- */

typedef struct h2_tls h2_tls; /* an OpenSSL context: TLS 1.3 only, ALPN h2 */

typedef struct {
    const char *ca_file;   /* PEM: the CA that signs every node's certificate */
    const char *cert_file; /* PEM: this process's certificate */
    const char *key_file;  /* PEM: its private key */
    /* Server: require and verify a client certificate (mutual TLS).
     * Client: verify the server's certificate against ca_file. */
    bool verify_peer;
} h2_tls_config;

int h2_tls_server_new(const h2_tls_config *cfg, h2_tls **out, mrd_msg *msg);
int h2_tls_client_new(const h2_tls_config *cfg, h2_tls **out, mrd_msg *msg);
void h2_tls_free(h2_tls *tls);

/*
 * Creates, in dir, a local certificate authority (ca.crt, ca.key) unless it
 * exists, and for every id without one a certificate id.crt / id.key signed by
 * it (CN=id, SAN for the ids' hosts, 127.0.0.1, ::1 and localhost; usable for
 * both server and client authentication). Keys are written 0600.
 */
int h2_certs_generate(const char *dir, const char *const *ids, size_t n, mrd_msg *msg);

/* ---- server ------------------------------------------------------------------------- */

typedef struct h2_server h2_server;
typedef struct h2_req h2_req;

typedef enum { H2_BUFFER = 0, H2_STREAM = 1 } h2_body_mode;

typedef struct {
    /* Optional. Headers have arrived; return H2_STREAM to receive the body in chunks
     * (on_data/on_end), H2_BUFFER (or leave NULL) to get on_request with the whole body. */
    h2_body_mode (*on_headers)(h2_req *req, void *ud);
    /* Buffered mode: the whole request is here. Respond now or later (before on_close). */
    void (*on_request)(h2_req *req, void *ud);
    /* Streaming mode: one chunk of the body; the data is only valid during the call. */
    void (*on_data)(h2_req *req, const uint8_t *data, size_t len, void *ud);
    /* Streaming mode: the peer ended its side of the stream. */
    void (*on_end)(h2_req *req, void *ud);
    /* The stream is gone (completed, reset or the connection died); error_code is the
     * HTTP/2 error code (0 for a normal close; CANCEL (8) when the connection went away).
     * Only requests the application has seen (on_headers or on_request) get it.
     * req is invalid after this returns. */
    void (*on_close)(h2_req *req, uint32_t error_code, void *ud);
    /* Optional. Bytes left the response queue (h2_req_queued went down): a producer
     * holding back because of back-pressure may write again. */
    void (*on_drain)(h2_req *req, void *ud);
} h2_server_cbs;

typedef struct {
    const char *host; /* address to listen on */
    uint16_t port;    /* 0 picks a free port; see h2_server_port */
    h2_tls *tls;      /* NULL: cleartext prior-knowledge h2 */
    size_t body_bytes_max;  /* buffered request bodies; 0 = H2_BODY_BYTES_MAX_DEFAULT */
    uint32_t streams_max;   /* concurrent streams per connection; 0 = default */
} h2_server_config;

int h2_server_start(uv_loop_t *loop, const h2_server_config *cfg, const h2_server_cbs *cbs,
                    void *ud, h2_server **out, mrd_msg *msg);
uint16_t h2_server_port(const h2_server *srv);
/* Stops listening, closes every connection (on_close runs for every open stream),
 * then calls done (may be NULL) and frees the server. */
void h2_server_close(h2_server *srv, void (*done)(void *ud), void *ud);

const char *h2_req_method(const h2_req *req);
const char *h2_req_path(const h2_req *req); /* including any ?query */
/* A request header by lowercase name, or NULL. */
const char *h2_req_header(const h2_req *req, const char *name);
/* Buffered mode: the body (NUL-terminated for convenience; len excludes the NUL). */
const uint8_t *h2_req_body(const h2_req *req, size_t *len);
/* With mutual TLS: the peer certificate's CN; otherwise NULL. */
const char *h2_req_peer(const h2_req *req);

void h2_req_set_ud(h2_req *req, void *ud);
void *h2_req_ud(const h2_req *req);

/* A whole response: headers, body, END_STREAM. content-length is added. */
int h2_req_respond(h2_req *req, int status, const h2_header *hdrs, size_t nhdrs,
                   const void *body, size_t len);
/* A streamed response: headers now, then h2_req_write ... h2_req_finish. */
int h2_req_respond_start(h2_req *req, int status, const h2_header *hdrs, size_t nhdrs);
/* Copies data into the stream's queue; it leaves as flow control allows. */
int h2_req_write(h2_req *req, const void *data, size_t len);
/* Ends the response after everything queued. */
int h2_req_finish(h2_req *req);
/* Bytes queued on this stream and not yet handed to the connection. */
size_t h2_req_queued(const h2_req *req);
/* Resets the stream with an HTTP/2 error code (on_close follows). */
void h2_req_reset(h2_req *req, uint32_t error_code);
/* Streaming mode: while paused, received bytes are not returned to the peer's window. */
void h2_req_pause(h2_req *req, bool paused);

/* ---- client ------------------------------------------------------------------------- */

typedef struct h2_client h2_client;
typedef struct h2_call h2_call;

typedef struct {
    /* The connection is up (status 0; TLS handshake and the server's SETTINGS done) or
     * failed (MRD_ECONN, MRD_ETLS, ...). Called once, unless h2_client_close came first. */
    void (*on_connect)(h2_client *c, int status, void *ud);
    /* The connection that came up is gone (dropped, or h2_client_close); every open call
     * has had its on_close. Called at most once. The client stays allocated until
     * h2_client_close, which must be called in every case (also after a failed connect). */
    void (*on_disconnect)(h2_client *c, int error, void *ud);
} h2_client_cbs;

typedef struct {
    const char *host;
    uint16_t port;
    h2_tls *tls;             /* NULL: cleartext prior-knowledge h2 */
    const char *server_name; /* SNI and the name checked in the server's certificate;
                                NULL: host */
} h2_client_config;

int h2_client_connect(uv_loop_t *loop, const h2_client_config *cfg, const h2_client_cbs *cbs,
                      void *ud, h2_client **out, mrd_msg *msg);
bool h2_client_connected(const h2_client *c);
/* Closes the connection (calls get on_close, then on_disconnect) and frees the client
 * once its handles have closed. */
void h2_client_close(h2_client *c);

typedef struct {
    void (*on_response)(h2_call *call, int status, void *ud); /* response headers */
    void (*on_data)(h2_call *call, const uint8_t *data, size_t len, void *ud);
    /* The call is over: error 0 when the response ended normally, else an mrd_err
     * (MRD_ECLOSED: reset, cancelled, or the connection closed; MRD_ECONN: the connection
     * failed; MRD_EBUSY: refused unprocessed, safe to retry). */
    void (*on_close)(h2_call *call, int error, void *ud);
    /* Optional. Bytes of the request body left the queue (h2_call_queued went down). */
    void (*on_drain)(h2_call *call, void *ud);
} h2_call_cbs;

/* Opens a stream. With end_stream false the body continues with h2_call_write and
 * ends with h2_call_finish (a long-lived stream). Needs a connected client (else
 * MRD_ECLOSED). out may be NULL. */
int h2_client_request(h2_client *c, const char *method, const char *path, const h2_header *hdrs,
                      size_t nhdrs, const void *body, size_t len, bool end_stream,
                      const h2_call_cbs *cbs, void *ud, h2_call **out);
int h2_call_write(h2_call *call, const void *data, size_t len);
int h2_call_finish(h2_call *call);
size_t h2_call_queued(const h2_call *call);
void h2_call_pause(h2_call *call, bool paused);
/* Resets the stream (on_close follows with MRD_ECLOSED). */
void h2_call_cancel(h2_call *call);
const char *h2_call_header(const h2_call *call, const char *name); /* response header */
void *h2_call_ud(const h2_call *call);

/* ---- one blocking request, for the CLI and tests --------------------------------------- */

typedef struct {
    int status;
    mrd_buf body; /* NUL-terminated for convenience; len excludes the NUL */
    char content_type[128];
} h2_result;

/* Runs a private loop: connect, one request, whole response, close. timeout_ms bounds
 * the whole exchange (MRD_ETIMEDOUT). */
int h2_fetch(const h2_client_config *cfg, const char *method, const char *path,
             const h2_header *hdrs, size_t nhdrs, const void *body, size_t len,
             uint64_t timeout_ms, h2_result *out, mrd_msg *msg);
void h2_result_free(h2_result *res);

#endif
