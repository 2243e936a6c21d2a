/*
 * `meridian volume-probe`: what this machine gives the volume at best —
 * the latency of fdatasync after a 4 KiB append in the data folder (a
 * storage node's group commit pays one per batch), and the round trip of
 * one HTTP/2 request (GET /v1/status) to a storage node over the same client
 * stack the volume uses. Also fdatasync with six such loops at once: on one
 * machine the six storage nodes share a disk, and a write waits for the
 * fourth of them. Reported as p50/p99/max in microseconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meridian/h2.h"
#include "vb_int.h"

#define VB_PROBE_WRITE_BYTES 4096u

static int probe_fsync(const char *dir, int index, uint32_t count, vb_lat *lat, mrd_msg *msg)
{
    char path[TOPO_PATH_MAX + 48];
    snprintf(path, sizeof(path), "%s/volume-probe.%ld.%d", dir, (long)getpid(), index);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: %s", path, strerror(errno));
    uint8_t block[VB_PROBE_WRITE_BYTES];
    memset(block, 0xa5, sizeof(block));
    int rc = 0;
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        if (pwrite(fd, block, sizeof(block), (off_t)i * sizeof(block)) != (ssize_t)sizeof(block)) {
            rc = mrd_fail(msg, MRD_EIO, "%s: write: %s", path, strerror(errno));
            break;
        }
        uint64_t t0 = mrd_now_ns();
        if (fdatasync(fd) != 0)
            rc = mrd_fail(msg, MRD_EIO, "%s: fdatasync: %s", path, strerror(errno));
        vb_lat_add(lat, mrd_now_ns() - t0);
    }
    close(fd);
    unlink(path);
    return rc;
}

/* One of the parallel fdatasync loops (six storage nodes on one machine share its disk). */
typedef struct {
    const char *dir;
    int index;
    uint32_t count;
    vb_lat lat;
    int rc;
    mrd_msg msg;
} fsync_worker;

static void fsync_worker_run(void *arg)
{
    fsync_worker *w = arg;
    w->rc = probe_fsync(w->dir, w->index, w->count, &w->lat, &w->msg);
}

/* n loops at once, each on its own file; their latencies merged into lat. */
static int probe_fsync_parallel(const char *dir, uint32_t n, uint32_t count, vb_lat *lat,
                                mrd_msg *msg)
{
    fsync_worker *w = calloc(n, sizeof(*w));
    uv_thread_t *tids = calloc(n, sizeof(*tids));
    int rc = w && tids ? 0 : mrd_fail(msg, MRD_ENOMEM, "probe: out of memory");
    uint32_t started = 0;
    for (; rc == 0 && started < n; started++) {
        w[started] = (fsync_worker){.dir = dir, .index = (int)started + 1, .count = count};
        vb_lat_init(&w[started].lat);
        if (uv_thread_create(&tids[started], fsync_worker_run, &w[started]) != 0)
            rc = mrd_fail(msg, MRD_EIO, "probe: cannot start a thread");
    }
    if (rc != 0 && started > 0) started--; /* the last one did not start */
    for (uint32_t i = 0; i < started; i++) {
        uv_thread_join(&tids[i]);
        if (rc == 0 && w[i].rc != 0) rc = mrd_fail(msg, w[i].rc, "%s", w[i].msg.text);
        vb_lat_merge(lat, &w[i].lat);
    }
    free(w);
    free(tids);
    return rc;
}

typedef struct {
    uv_loop_t *loop;
    h2_client *client;
    uint32_t left;
    uint32_t warmup; /* first requests, not measured (connection warm-up) */
    uint64_t t0;
    vb_lat *lat;
    int rc;
    uv_timer_t timer;
} rtt_state;

static void rtt_done(rtt_state *st, int rc)
{
    if (st->client == NULL) return;
    st->rc = rc;
    h2_client *c = st->client;
    st->client = NULL;
    h2_client_close(c);
    uv_close((uv_handle_t *)&st->timer, NULL);
}

static void rtt_next(rtt_state *st);

static void rtt_on_close(h2_call *call, int error, void *ud)
{
    rtt_state *st = ud;
    if (error != 0) {
        rtt_done(st, error);
        return;
    }
    if (st->warmup > 0) {
        st->warmup--;
    } else {
        vb_lat_add(st->lat, mrd_now_ns() - st->t0);
        st->left--;
    }
    if (st->left == 0)
        rtt_done(st, 0);
    else
        rtt_next(st);
}

static const h2_call_cbs rtt_call_cbs = {.on_close = rtt_on_close};

static void rtt_next(rtt_state *st)
{
    st->t0 = mrd_now_ns();
    int rc = h2_client_request(st->client, "GET", "/v1/status", NULL, 0, NULL, 0, true,
                               &rtt_call_cbs, st, NULL);
    if (rc != 0) rtt_done(st, rc);
}

static void rtt_on_connect(h2_client *c, int status, void *ud)
{
    rtt_state *st = ud;
    if (status != 0)
        rtt_done(st, status);
    else
        rtt_next(st);
}

static void rtt_on_disconnect(h2_client *c, int error, void *ud)
{
    rtt_done(ud, error != 0 ? error : MRD_ECLOSED);
}

static void rtt_on_timeout(uv_timer_t *t)
{
    rtt_done(t->data, MRD_ETIMEDOUT);
}

static const h2_client_cbs rtt_client_cbs = {.on_connect = rtt_on_connect,
                                             .on_disconnect = rtt_on_disconnect};

static int probe_rtt(const vb_env *env, const topo_node *node, uint32_t count, vb_lat *lat,
                     mrd_msg *msg)
{
    h2_tls *tls = NULL;
    if (env->topo.tls) {
        char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 16], key[TOPO_PATH_MAX + 16];
        snprintf(ca, sizeof(ca), "%s/ca.crt", env->certs);
        snprintf(cert, sizeof(cert), "%s/cli.crt", env->certs);
        snprintf(key, sizeof(key), "%s/cli.key", env->certs);
        h2_tls_config tc = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
        int rc = h2_tls_client_new(&tc, &tls, msg);
        if (rc != 0) return rc;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    rtt_state st = {.loop = &loop, .left = count, .warmup = 10, .lat = lat};
    uv_timer_init(&loop, &st.timer);
    st.timer.data = &st;
    h2_client_config cc = {.host = node->addr.host, .port = node->addr.port, .tls = tls};
    int rc = h2_client_connect(&loop, &cc, &rtt_client_cbs, &st, &st.client, msg);
    if (rc == 0) {
        uv_timer_start(&st.timer, rtt_on_timeout, 60000, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = st.rc;
        if (rc != 0) mrd_fail(msg, rc, "GET /v1/status on %s: %s", node->id, mrd_strerror(rc));
    } else {
        uv_close((uv_handle_t *)&st.timer, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    if (tls != NULL) h2_tls_free(tls);
    return rc;
}

static void print_lat(const char *name, const vb_lat *h, bool comma)
{
    printf("\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}%s", name, h->n,
           (double)vb_lat_quantile(h, 0.5) / 1e3, (double)vb_lat_quantile(h, 0.99) / 1e3,
           (double)h->max / 1e3, comma ? "," : "");
}

int vb_probe(const vb_args *a, vb_env *env)
{
    const topo_region *region = &env->topo.regions[env->region];
    const topo_node *node = a->node ? topo_find(&env->topo, a->node) : &region->storage[0];
    if (node == NULL) {
        fprintf(stderr, "meridian volume-probe: no process %s in the topology\n", a->node);
        return 1;
    }
    vb_lat *fs = calloc(1, sizeof(*fs)), *rtt = calloc(1, sizeof(*rtt));
    vb_lat *fs6 = calloc(1, sizeof(*fs6));
    int code = 1;
    mrd_msg msg = {{0}};
    if (fs == NULL || rtt == NULL || fs6 == NULL) goto out;
    vb_lat_init(fs);
    vb_lat_init(fs6);
    vb_lat_init(rtt);
    int rc = mrd_mkdirs(env->data, &msg);
    if (rc == 0) rc = probe_fsync(env->data, 0, a->count, fs, &msg);
    if (rc == 0) rc = probe_fsync_parallel(env->data, TOPO_STORAGE, a->count, fs6, &msg);
    if (rc == 0) rc = probe_rtt(env, node, a->count, rtt, &msg);
    if (rc != 0) {
        fprintf(stderr, "meridian volume-probe: %s\n", msg.text);
        goto out;
    }
    if (a->json) {
        printf("{\"unit\":\"us\",\"fdatasync_dir\":");
        mrd_buf b;
        mrd_buf_init(&b);
        mrd_json_quote(&b, env->data);
        printf("%.*s,\"rtt_node\":\"%s\",", (int)b.len, (const char *)b.data, node->id);
        mrd_buf_free(&b);
        print_lat("fdatasync", fs, true);
        print_lat("fdatasync_6_parallel", fs6, true);
        print_lat("h2_rtt", rtt, false);
        printf("}\n");
    } else {
        printf("fdatasync after a 4 KiB append in %s: p50 %.1f us, p99 %.1f us, max %.1f us\n",
               env->data, (double)vb_lat_quantile(fs, 0.5) / 1e3,
               (double)vb_lat_quantile(fs, 0.99) / 1e3, (double)fs->max / 1e3);
        printf("the same, six at once (one per storage node): p50 %.1f us, p99 %.1f us, "
               "max %.1f us\n",
               (double)vb_lat_quantile(fs6, 0.5) / 1e3, (double)vb_lat_quantile(fs6, 0.99) / 1e3,
               (double)fs6->max / 1e3);
        printf("HTTP/2 GET /v1/status round trip to %s: p50 %.1f us, p99 %.1f us, max %.1f us\n",
               node->id, (double)vb_lat_quantile(rtt, 0.5) / 1e3,
               (double)vb_lat_quantile(rtt, 0.99) / 1e3, (double)rtt->max / 1e3);
    }
    code = 0;
out:
    free(fs6);
    free(fs);
    free(rtt);
    return code;
}
