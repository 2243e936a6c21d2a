/*
 * `meridian volume-bench`: writes records through the volume client with at
 * most --inflight writes waiting for VDL, measures each write's quorum
 * acknowledgement latency (submit to VDL >= its LSN), and with --log keeps
 * the log volume-verify checks. It runs until --records writes are durable,
 * --duration-ms passed, or SIGTERM/SIGINT; while no write quorum exists its
 * writes simply wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vb_int.h"

typedef struct vb_bench_state vb_bench_state;

typedef struct {
    vb_bench_state *b;
    uint64_t t0_ns;
    uint64_t lsn;
} vb_slot;

struct vb_bench_state {
    const vb_args *a;
    vb_env *env;
    uv_loop_t loop;
    vol *v;
    FILE *log;
    uv_signal_t sigint, sigterm;
    uv_timer_t deadline;
    uint32_t page_size;
    uint8_t *pages; /* the bench's copy of every page it writes */
    uint8_t *delta;
    uint64_t fetch_next, fetched;
    vb_rng rng;
    vb_slot *slots;
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t pending;
    uint64_t submitted, completed;
    vb_lat lat;
    uint64_t t_start_ns, t_end_ns;
    bool started, stopping;
    const char *stop_reason;
    int exit_code;
    char err[MRD_MSG_MAX];
    vol_info info; /* copied at stop: the vol is gone once the loop ends */
    vol_stats stats;
    uint64_t vdl;
};

static void stop(vb_bench_state *b, const char *reason, int exit_code, const char *err);

static int log_line(vb_bench_state *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int log_line(vb_bench_state *b, const char *fmt, ...)
{
    if (b->log == NULL) return 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(b->log, fmt, ap);
    va_end(ap);
    if (n < 0 || fflush(b->log) != 0) {
        char err[MRD_MSG_MAX];
        snprintf(err, sizeof(err), "%s: %s", b->a->log, strerror(errno));
        stop(b, "error", 1, err);
        return MRD_EIO;
    }
    return 0;
}

static void on_durable(vol *v, uint64_t lsn, void *ud);

/* One write: change delta_bytes of a page, log it, hand it to the volume, wait for VDL. */
static bool write_one(vb_bench_state *b)
{
    const vb_args *a = b->a;
    vb_change ch = vb_change_next(&b->rng, a->pages, b->page_size, a->delta_bytes, b->delta);
    uint8_t *page = &b->pages[ch.page * b->page_size];
    memcpy(page + ch.offset, b->delta, a->delta_bytes);
    uint32_t crc = mrd_crc32c(0, page, b->page_size);
    uint32_t id = b->free_slots[--b->n_free];
    vb_slot *s = &b->slots[id];
    s->t0_ns = mrd_now_ns();
    mrd_msg msg = {{0}};
    int rc = vol_write(b->v, ch.page, page, true, &s->lsn, &msg);
    if (rc == 0) rc = log_line(b, "submit %" PRIu64 " %" PRIu64 " %08x\n", s->lsn, ch.page, crc);
    if (rc == 0) rc = vol_wait(b->v, s->lsn, on_durable, s);
    if (rc != 0) {
        b->free_slots[b->n_free++] = id;
        if (!b->stopping) stop(b, "error", 1, msg.text[0] ? msg.text : mrd_strerror(rc));
        return false;
    }
    b->pending++;
    b->submitted++;
    return true;
}

static void fill(vb_bench_state *b)
{
    while (!b->stopping && b->pending < b->a->inflight && b->submitted < b->a->records)
        if (!write_one(b)) return;
    if (!b->stopping && b->pending == 0 && b->submitted >= b->a->records)
        stop(b, "records", 0, NULL);
}

static void on_durable(vol *v, uint64_t lsn, void *ud)
{
    vb_slot *s = ud;
    vb_bench_state *b = s->b;
    uint64_t now = mrd_now_ns();
    vb_lat_add(&b->lat, now - s->t0_ns);
    b->free_slots[b->n_free++] = (uint32_t)(s - b->slots);
    b->pending--;
    b->completed++;
    b->t_end_ns = now;
    fill(b);
}

/* ---- start: recovery done, pages fetched ------------------------------------------------------
 */

static void fetch_more(vb_bench_state *b);

static void on_fetched(vol *v, int status, uint64_t page, const uint8_t *data, const char *msg,
                       void *ud)
{
    vb_bench_state *b = ud;
    if (status != 0) {
        char err[MRD_MSG_MAX];
        snprintf(err, sizeof(err), "reading page %" PRIu64 ": %s", page, msg);
        stop(b, "error", 1, err);
        return;
    }
    memcpy(&b->pages[page * b->page_size], data, b->page_size);
    b->fetched++;
    fetch_more(b);
}

static void fetch_more(vb_bench_state *b)
{
    if (b->stopping) return;
    while (b->fetch_next < b->a->pages && b->fetch_next - b->fetched < VB_FETCH_INFLIGHT_MAX) {
        int rc = vol_fetch(b->v, b->fetch_next, on_fetched, b);
        if (rc != 0) {
            stop(b, "error", 1, mrd_strerror(rc));
            return;
        }
        b->fetch_next++;
    }
    if (b->fetched == b->a->pages && !b->started) {
        b->started = true;
        b->t_start_ns = b->t_end_ns = mrd_now_ns();
        fill(b);
    }
}

static void on_ready(vol *v, int status, const char *msg, void *ud)
{
    vb_bench_state *b = ud;
    if (status != 0) {
        stop(b, "error", 1, msg);
        return;
    }
    const vol_info *info = vol_info_get(v);
    if (log_line(b, "recovered %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", info->epoch, info->vcl,
                 info->vdl) != 0)
        return;
    fetch_more(b);
}

static void on_vdl(vol *v, uint64_t vdl, void *ud)
{
    log_line(ud, "vdl %" PRIu64 "\n", vdl);
}

static void on_error(vol *v, int err, const char *msg, void *ud)
{
    stop(ud, "error", 1, msg);
}

static const vol_cbs bench_cbs = {.on_ready = on_ready, .on_vdl = on_vdl, .on_error = on_error};

/* ---- stop ---------------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {}

static void stop(vb_bench_state *b, const char *reason, int exit_code, const char *err)
{
    if (b->stopping) return;
    b->stopping = true;
    b->stop_reason = reason;
    b->exit_code = exit_code;
    if (err != NULL) snprintf(b->err, sizeof(b->err), "%s", err);
    if (!b->started) b->t_start_ns = b->t_end_ns = mrd_now_ns();
    uv_close((uv_handle_t *)&b->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&b->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&b->deadline, on_handle_closed);
    if (b->v != NULL) {
        b->info = *vol_info_get(b->v);
        b->stats = *vol_stats_get(b->v);
        b->vdl = vol_vdl(b->v);
        vol_close(b->v, NULL, NULL);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    vb_bench_state *b = s->data;
    stop(b, "signal", 0, NULL);
}

static void on_deadline(uv_timer_t *t)
{
    vb_bench_state *b = t->data;
    stop(b, "duration", 0, NULL);
}

/* ---- results ------------------------------------------------------------------------------- */

static void print_results(const vb_bench_state *b)
{
    const vb_args *a = b->a;
    double secs = (double)(b->t_end_ns - b->t_start_ns) / 1e9;
    double rate = secs > 0 ? (double)b->completed / secs : 0;
    double p50 = (double)vb_lat_quantile(&b->lat, 0.50) / 1e3;
    double p99 = (double)vb_lat_quantile(&b->lat, 0.99) / 1e3;
    double max = (double)b->lat.max / 1e3;
    double mean = b->lat.n ? b->lat.sum / (double)b->lat.n / 1e3 : 0;
    if (a->json) {
        printf("{\"records\":%" PRIu64 ",\"submitted\":%" PRIu64 ",\"seconds\":%.3f,"
               "\"records_per_s\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f,"
               "\"mean\":%.1f},\"inflight\":%u,\"delta_bytes\":%u,\"pages\":%" PRIu64
               ",\"seed\":%" PRIu64 ",\"epoch\":%" PRIu64 ",\"first_lsn\":%" PRIu64
               ",\"vdl\":%" PRIu64 ",\"appends\":%" PRIu64 ",\"append_records\":%" PRIu64
               ",\"stopped_by\":\"%s\"}\n",
               b->completed, b->submitted, secs, rate, p50, p99, max, mean, a->inflight,
               a->delta_bytes, a->pages, a->seed, b->info.epoch, b->info.first_lsn, b->vdl,
               b->stats.appends, b->stats.append_records, b->stop_reason);
    } else {
        printf("volume-bench: %" PRIu64 " records durable in %.3f s: %.0f records/s\n",
               b->completed, secs, rate);
        printf("quorum ack latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms\n",
               p50 / 1e3, p99 / 1e3, max / 1e3, mean / 1e3);
        printf("inflight %u, %u-byte changes over %" PRIu64 " pages, epoch %" PRIu64
               ", vdl %" PRIu64 ", %" PRIu64 " appends carried %" PRIu64
               " records; stopped by %s\n",
               a->inflight, a->delta_bytes, a->pages, b->info.epoch, b->vdl, b->stats.appends,
               b->stats.append_records, b->stop_reason);
    }
    fflush(stdout);
}

static int setup(vb_bench_state *b, const vb_args *a, vb_env *env, mrd_msg *msg)
{
    b->page_size = env->topo.page_size;
    uint64_t pages_per_pg = env->topo.pg_size_bytes / env->topo.page_size;
    uint64_t pgs = (a->pages + pages_per_pg - 1) / pages_per_pg;
    if (pgs > QUORUM_PGS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG,
                        "%" PRIu64 " pages need %" PRIu64 " protection groups, at most %u",
                        a->pages, pgs, QUORUM_PGS_MAX);
    if (a->delta_bytes == 0 || a->delta_bytes > b->page_size)
        return mrd_fail(msg, MRD_EINVAL, "--delta-bytes must be 1..%u (the page size)",
                        b->page_size);
    b->pages = calloc(a->pages, b->page_size);
    b->delta = calloc(1, a->delta_bytes);
    b->slots = calloc(a->inflight, sizeof(*b->slots));
    b->free_slots = calloc(a->inflight, sizeof(*b->free_slots));
    if (!b->pages || !b->delta || !b->slots || !b->free_slots)
        return mrd_fail(msg, MRD_ENOMEM, "out of memory for %" PRIu64 " pages", a->pages);
    for (uint32_t i = 0; i < a->inflight; i++) {
        b->slots[i].b = b;
        b->free_slots[b->n_free++] = a->inflight - 1 - i;
    }
    if (a->log != NULL && (b->log = fopen(a->log, "a")) == NULL)
        return mrd_fail(msg, MRD_EIO, "%s: %s", a->log, strerror(errno));
    vol_config cfg;
    vb_vol_config(env, &cfg);
    cfg.pg_count_min = (uint32_t)pgs;
    cfg.cache_pages_max = (uint32_t)a->pages + a->inflight + 64;
    cfg.inflight_max = a->inflight + 64;
    return vol_open(&b->loop, &cfg, &bench_cbs, b, &b->v, msg);
}

static void start_handles(vb_bench_state *b)
{
    uv_signal_init(&b->loop, &b->sigint);
    uv_signal_init(&b->loop, &b->sigterm);
    uv_timer_init(&b->loop, &b->deadline);
    b->sigint.data = b->sigterm.data = b->deadline.data = b;
    uv_signal_start(&b->sigint, on_signal, SIGINT);
    uv_signal_start(&b->sigterm, on_signal, SIGTERM);
    if (b->a->duration_ms > 0) uv_timer_start(&b->deadline, on_deadline, b->a->duration_ms, 0);
}

/* Runs the loop until the bench stops; frees what setup made. */
static int run(vb_bench_state *b, const vb_args *a, vb_env *env)
{
    b->a = a;
    b->env = env;
    vb_lat_init(&b->lat);
    vb_rng_seed(&b->rng, a->seed);
    uv_loop_init(&b->loop);
    mrd_msg msg = {{0}};
    int rc = setup(b, a, env, &msg);
    if (rc == 0) {
        start_handles(b);
        uv_run(&b->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&b->loop);
    if (b->log != NULL) fclose(b->log);
    free(b->pages);
    free(b->delta);
    free(b->slots);
    free(b->free_slots);
    if (rc != 0) {
        fprintf(stderr, "meridian volume-bench: %s\n", msg.text);
        return 1;
    }
    print_results(b);
    if (b->exit_code != 0) fprintf(stderr, "meridian volume-bench: %s\n", b->err);
    return b->exit_code;
}

int vb_bench(const vb_args *a, vb_env *env)
{
    vb_bench_state *b = calloc(1, sizeof(*b)); /* large (the histogram): not on the stack */
    if (b == NULL) {
        fprintf(stderr, "meridian volume-bench: out of memory\n");
        return 1;
    }
    int code = run(b, a, env);
    free(b);
    return code;
}
