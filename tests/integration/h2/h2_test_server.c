/*
 * h2_test_server: the test routes (routes.h) on a real port, for external
 * clients (curl, h2load) and process-level tests.
 *
 *   h2_test_server [--host H] --port N (--cleartext | --tls CERTDIR)
 *       prints "port=N" once listening; runs until SIGTERM or SIGINT.
 *       With --tls: CERTDIR/ca.crt, server.crt, server.key; clients must
 *       present a certificate from the same CA, unless --no-client-cert
 *       (server authentication only, for clients such as h2load that have
 *       no client-certificate option).
 *   h2_test_server --gen-certs DIR ID...
 *       writes a CA and a certificate per ID into DIR (h2_certs_generate).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"

#define CERT_PATH_MAX 4096

typedef struct {
    uv_loop_t *loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    h2_server *srv;
    routes rt;
} app;

static void on_server_closed(void *ud)
{
    app *a = ud;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    app *a = sig->data;
    uv_signal_stop(&a->sigterm);
    uv_signal_stop(&a->sigint);
    h2_server_close(a->srv, on_server_closed, a);
}

static int gen_certs(int argc, char **argv)
{
    mrd_msg msg;
    if (argc < 3) return 2;
    int rc = h2_certs_generate(argv[2], (const char *const *)argv + 3, (size_t)(argc - 3), &msg);
    if (rc != 0) fprintf(stderr, "h2_test_server: %s\n", msg.text);
    return rc == 0 ? 0 : 1;
}

static int make_tls(const char *dir, bool verify_client, h2_tls **tls)
{
    char ca[CERT_PATH_MAX], crt[CERT_PATH_MAX], key[CERT_PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
    snprintf(crt, sizeof(crt), "%s/server.crt", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    h2_tls_config cfg = {
        .ca_file = ca, .cert_file = crt, .key_file = key, .verify_peer = verify_client};
    mrd_msg msg;
    int rc = h2_tls_server_new(&cfg, tls, &msg);
    if (rc != 0) fprintf(stderr, "h2_test_server: %s\n", msg.text);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: h2_test_server [--host H] --port N (--cleartext | --tls CERTDIR "
                    "[--no-client-cert])\n"
                    "       h2_test_server --gen-certs DIR ID...\n");
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    mrd_log_init("h2-test-server", MRD_LOG_INFO);
    if (argc >= 2 && strcmp(argv[1], "--gen-certs") == 0) return gen_certs(argc, argv);
    const char *host = "127.0.0.1", *certdir = NULL;
    int port = -1;
    bool cleartext = false, verify_client = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tls") == 0 && i + 1 < argc)
            certdir = argv[++i];
        else if (strcmp(argv[i], "--cleartext") == 0)
            cleartext = true;
        else if (strcmp(argv[i], "--no-client-cert") == 0)
            verify_client = false;
        else
            return usage();
    }
    if (port < 0 || port > 65535 || cleartext == (certdir != NULL)) return usage();
    h2_tls *tls = NULL;
    if (certdir != NULL && make_tls(certdir, verify_client, &tls) != 0) return 1;
    app a = {.loop = uv_default_loop()};
    h2_server_config cfg = {.host = host, .port = (uint16_t)port, .tls = tls};
    mrd_msg msg;
    int rc = h2_server_start(a.loop, &cfg, &routes_cbs, &a.rt, &a.srv, &msg);
    if (rc != 0) {
        fprintf(stderr, "h2_test_server: %s\n", msg.text);
        uv_run(a.loop, UV_RUN_DEFAULT);
        h2_tls_free(tls);
        return 1;
    }
    printf("port=%u\n", h2_server_port(a.srv));
    fflush(stdout);
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    h2_tls_free(tls);
    return 0;
}
