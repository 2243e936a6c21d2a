/*
 * TLS for h2: OpenSSL contexts (TLS 1.3 only, ALPN "h2", optional mutual
 * certificates) and the per-connection engine over two memory BIOs, so that
 * OpenSSL never touches a socket either: libuv reads go into bio_in, and what
 * the engine writes into bio_out is sent by the connection glue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "h2_internal.h"

static const unsigned char alpn_h2[] = {2, 'h', '2'};

/* Longest TLS certificate chain we accept from a peer. */
#define H2_TLS_VERIFY_DEPTH 4

static int ssl_fail(mrd_msg *msg, const char *what, const char *path)
{
    char why[256] = "";
    unsigned long e = ERR_get_error();
    if (e != 0) ERR_error_string_n(e, why, sizeof(why));
    ERR_clear_error();
    return mrd_fail(msg, MRD_ETLS, "%s%s%s: %s", what, path ? " " : "", path ? path : "", why);
}

static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel = NULL;
    int rc = SSL_select_next_proto(&sel, outlen, alpn_h2, sizeof(alpn_h2), in, inlen);
    if (rc != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int load_identity(SSL_CTX *ctx, const h2_tls_config *cfg, mrd_msg *msg)
{
    if (cfg->cert_file == NULL && cfg->key_file == NULL) return 0;
    if (cfg->cert_file == NULL || cfg->key_file == NULL) {
        return mrd_fail(msg, MRD_EINVAL, "tls: cert_file and key_file go together");
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
        return ssl_fail(msg, "tls: cannot load certificate", cfg->cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
        return ssl_fail(msg, "tls: cannot load key", cfg->key_file);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        return ssl_fail(msg, "tls: key does not match certificate", cfg->key_file);
    }
    return 0;
}

static int load_ca(SSL_CTX *ctx, const h2_tls_config *cfg, bool server, mrd_msg *msg)
{
    if (cfg->ca_file == NULL) return mrd_fail(msg, MRD_EINVAL, "tls: verify_peer needs ca_file");
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
        return ssl_fail(msg, "tls: cannot load CA", cfg->ca_file);
    }
    if (server) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
        if (names == NULL) return ssl_fail(msg, "tls: cannot read CA names", cfg->ca_file);
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    int mode = SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_verify_depth(ctx, H2_TLS_VERIFY_DEPTH);
    return 0;
}

static int tls_new(const h2_tls_config *cfg, bool server, h2_tls **out, mrd_msg *msg)
{
    *out = NULL;
    if (cfg == NULL) return mrd_fail(msg, MRD_EINVAL, "tls: no configuration");
    if (server && (cfg->cert_file == NULL || cfg->key_file == NULL)) {
        return mrd_fail(msg, MRD_EINVAL, "tls: a server needs cert_file and key_file");
    }
    h2_tls *tls = calloc(1, sizeof(*tls));
    if (tls == NULL) return mrd_fail(msg, MRD_ENOMEM, "tls: out of memory");
    tls->server = server;
    tls->verify_peer = cfg->verify_peer;
    tls->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    int rc;
    if (tls->ctx == NULL) {
        rc = ssl_fail(msg, "tls: cannot create context", NULL);
        goto fail_ctx;
    }
    SSL_CTX_set_min_proto_version(tls->ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(tls->ctx, SSL_MODE_RELEASE_BUFFERS);
    rc = load_identity(tls->ctx, cfg, msg);
    if (rc == 0 && cfg->verify_peer) rc = load_ca(tls->ctx, cfg, server, msg);
    if (rc != 0) goto fail_config;
    if (server) {
        SSL_CTX_set_alpn_select_cb(tls->ctx, on_alpn_select, NULL);
        SSL_CTX_set_num_tickets(tls->ctx, 0); /* nodes keep connections; no resumption */
    } else if (SSL_CTX_set_alpn_protos(tls->ctx, alpn_h2, sizeof(alpn_h2)) != 0) {
        rc = ssl_fail(msg, "tls: cannot set ALPN", NULL);
        goto fail_config;
    }
    *out = tls;
    return 0;

fail_config:
    SSL_CTX_free(tls->ctx);
fail_ctx:
    free(tls);
    return rc;
}

int h2_tls_server_new(const h2_tls_config *cfg, h2_tls **out, mrd_msg *msg)
{
    return tls_new(cfg, true, out, msg);
}

int h2_tls_client_new(const h2_tls_config *cfg, h2_tls **out, mrd_msg *msg)
{
    return tls_new(cfg, false, out, msg);
}

void h2_tls_free(h2_tls *tls)
{
    if (tls == NULL) return;
    SSL_CTX_free(tls->ctx);
    free(tls);
}

/* ---- per-connection engine ------------------------------------------------------------- */

static bool is_ip_literal(const char *name)
{
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    return uv_ip4_addr(name, 0, &a4) == 0 || uv_ip6_addr(name, 0, &a6) == 0;
}

/* Client side: SNI and the name (or address) the server's certificate must carry. */
static int set_expected_name(h2_conn *c)
{
    const char *name = c->server_name;
    if (name[0] == '\0') return 0;
    if (is_ip_literal(name)) {
        if (!c->tls->verify_peer) return 0;
        X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
        return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 ? 0 : MRD_ETLS;
    }
    if (SSL_set_tlsext_host_name(c->ssl, name) != 1) return MRD_ETLS;
    if (!c->tls->verify_peer) return 0;
    return SSL_set1_host(c->ssl, name) == 1 ? 0 : MRD_ETLS;
}

int h2_tls_engine_new(h2_conn *c)
{
    c->ssl = SSL_new(c->tls->ctx);
    if (c->ssl == NULL) return MRD_ENOMEM;
    c->bio_in = BIO_new(BIO_s_mem());
    c->bio_out = BIO_new(BIO_s_mem());
    if (c->bio_in == NULL || c->bio_out == NULL) {
        BIO_free(c->bio_in);
        BIO_free(c->bio_out);
        c->bio_in = c->bio_out = NULL;
        return MRD_ENOMEM;
    }
    /* An empty input BIO means "wait for more bytes", not end of stream. */
    BIO_set_mem_eof_return(c->bio_in, -1);
    BIO_set_mem_eof_return(c->bio_out, -1);
    SSL_set_bio(c->ssl, c->bio_in, c->bio_out); /* ssl owns both from here */
    if (c->is_server) {
        SSL_set_accept_state(c->ssl);
        return 0;
    }
    SSL_set_connect_state(c->ssl);
    return set_expected_name(c);
}

void h2_tls_last_error(h2_conn *c, int ssl_rc, char *buf, size_t len)
{
    long verify = c->ssl != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    unsigned long e = ERR_get_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
        if (verify != X509_V_OK) {
            size_t used = strlen(buf);
            snprintf(buf + used, len - used, " (%s)", X509_verify_cert_error_string(verify));
        }
    } else if (verify != X509_V_OK) {
        snprintf(buf, len, "%s", X509_verify_cert_error_string(verify));
    } else {
        snprintf(buf, len, "ssl error %d", SSL_get_error(c->ssl, ssl_rc));
    }
    ERR_clear_error();
}

bool h2_tls_alpn_ok(const h2_conn *c)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    if (n == 0) return c->is_server; /* a client without ALPN speaking h2 directly */
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

void h2_tls_peer_cn(const h2_conn *c, char *buf, size_t len)
{
    buf[0] = '\0';
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK) return;
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)len);
    if (n < 0) buf[0] = '\0';
}

int h2_tls_engine_handshake(h2_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->tls_done = true;
        if (c->is_server && c->tls->verify_peer) h2_tls_peer_cn(c, c->peer_cn, sizeof(c->peer_cn));
        MRD_INFO("h2_tls_up", "peer=%s side=%s version=%s cipher=%s peer_cn=%s", c->peer,
                 c->is_server ? "server" : "client", SSL_get_version(c->ssl),
                 SSL_get_cipher_name(c->ssl), c->peer_cn[0] ? c->peer_cn : "-");
        if (!h2_tls_alpn_ok(c)) {
            MRD_WARN("h2_tls_fail", "peer=%s stage=alpn reason=\"peer did not select h2\"",
                     c->peer);
            return MRD_ETLS;
        }
        return 0;
    }
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 0;
    char why[256];
    h2_tls_last_error(c, rc, why, sizeof(why));
    MRD_WARN("h2_tls_fail", "peer=%s side=%s stage=handshake reason=\"%s\"", c->peer,
             c->is_server ? "server" : "client", why);
    return MRD_ETLS;
}
