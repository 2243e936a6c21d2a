/* meridian up / down / status / certs over one topology on this machine. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_private.h"


void ctl_sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int find_daemon(ctl_ctx *ctx, mrd_msg *msg)
{
    const char *env = getenv("MERIDIAND");
    if (env != NULL && env[0] != '\0') {
        snprintf(ctx->meridiand, sizeof(ctx->meridiand), "%s", env);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) return mrd_fail(msg, MRD_EIO, "cannot find this program's path");
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) *slash = '\0';
        if ((size_t)snprintf(ctx->meridiand, sizeof(ctx->meridiand), "%s/meridiand", self) >=
            sizeof(ctx->meridiand))
            return mrd_fail(msg, MRD_ETOOBIG, "%s: path too long", self);
    }
    if (access(ctx->meridiand, X_OK) != 0)
        return mrd_fail(msg, MRD_ENOTFOUND, "%s: not an executable (set MERIDIAND)", ctx->meridiand);
    return 0;
}

int ctl_init(ctl_ctx *ctx, const topology *topo, const char *topo_path, const char *data_dir,
             mrd_msg *msg)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->topo = topo;
    ctx->out = stdout;
    ctx->only_role = -1;
    char buf[PATH_MAX];
    if (realpath(topo_path, buf) == NULL)
        return mrd_fail(msg, MRD_EIO, "%s: %s", topo_path, strerror(errno));
    if ((size_t)snprintf(ctx->topo_path, sizeof(ctx->topo_path), "%s", buf) >=
        sizeof(ctx->topo_path))
        return mrd_fail(msg, MRD_ETOOBIG, "%s: path too long", buf);
    int rc = mrd_mkdirs(data_dir, msg);
    if (rc != 0) return rc;
    if (realpath(data_dir, buf) == NULL)
        return mrd_fail(msg, MRD_EIO, "%s: %s", data_dir, strerror(errno));
    if ((size_t)snprintf(ctx->data_dir, sizeof(ctx->data_dir), "%s", buf) >=
        sizeof(ctx->data_dir))
        return mrd_fail(msg, MRD_ETOOBIG, "%s: path too long", buf);
    return find_daemon(ctx, msg);
}

void ctl_certs_dir(const ctl_ctx *ctx, char *buf, size_t len)
{
    if (ctx->topo->certs_dir[0] != '\0')
        topo_certs_dir(ctx->topo, buf, len);
    else if ((size_t)snprintf(buf, len, "%s/certs", ctx->data_dir) >= len)
        buf[0] = '\0'; /* too long: callers then fail to find the folder */
}

typedef struct {
    const char *ids[CTL_NODES_MAX + 1];
    size_t count;
} id_list;

static int collect_id(const topology *topo, const topo_node *node, void *ud)
{
    id_list *list = ud;
    if (list->count < CTL_NODES_MAX) list->ids[list->count++] = node->id;
    return 0;
}

int ctl_certs(ctl_ctx *ctx, mrd_msg *msg)
{
    if (!ctx->topo->tls) return 0;
    static id_list list;
    list.count = 0;
    topo_each_node(ctx->topo, collect_id, &list);
    list.ids[list.count++] = CTL_CLIENT_ID;
    char dir[TOPO_PATH_MAX];
    ctl_certs_dir(ctx, dir, sizeof(dir));
    int rc = mrd_mkdirs(dir, msg);
    if (rc != 0) return rc;
    return h2_certs_generate(dir, list.ids, list.count, msg);
}

int ctl_fetch(const ctl_ctx *ctx, const topo_node *node, const char *method, const char *path,
              const void *body, size_t len, uint64_t timeout_ms, h2_result *out, mrd_msg *msg)
{
    return ctl_fetch_addr(ctx, &node->addr, method, path, body, len, timeout_ms, out, msg);
}

int ctl_fetch_addr(const ctl_ctx *ctx, const topo_addr *addr, const char *method,
                   const char *path, const void *body, size_t len, uint64_t timeout_ms,
                   h2_result *out, mrd_msg *msg)
{
    h2_tls *tls = NULL;
    if (ctx->topo->tls) {
        char dir[TOPO_PATH_MAX], ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 16],
            key[TOPO_PATH_MAX + 16];
        ctl_certs_dir(ctx, dir, sizeof(dir));
        snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
        snprintf(cert, sizeof(cert), "%s/%s.crt", dir, CTL_CLIENT_ID);
        snprintf(key, sizeof(key), "%s/%s.key", dir, CTL_CLIENT_ID);
        h2_tls_config tc = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
        int rc = h2_tls_client_new(&tc, &tls, msg);
        if (rc != 0) return rc;
    }
    h2_client_config cc = {.host = addr->host, .port = addr->port, .tls = tls};
    h2_header hdr = {"content-type", "application/json"};
    int rc = h2_fetch(&cc, method, path, body != NULL ? &hdr : NULL, body != NULL ? 1 : 0, body,
                      len, timeout_ms, out, msg);
    if (tls != NULL) h2_tls_free(tls);
    return rc;
}
