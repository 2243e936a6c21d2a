/*
 * `meridian volume-verify`: reads a bench log into the checker, recovers the
 * volume as a new writer (a new epoch: the bench must have stopped), reads
 * every page the log names at the recovered VDL and checks it (vb_check).
 * Exit 1 names the first mismatch.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vb_int.h"

typedef struct {
    const vb_args *a;
    uv_loop_t loop;
    vol *v;
    uv_timer_t deadline;
    vb_check check;
    vol_info info;
    uint32_t next, done;
    uint64_t durable, later, mismatches;
    bool stopping;
    int exit_code;
    char err[MRD_MSG_MAX];
    char first_mismatch[MRD_MSG_MAX];
} vb_verify_state;

static void finish(vb_verify_state *s, int exit_code, const char *err)
{
    if (s->stopping) return;
    s->stopping = true;
    s->exit_code = exit_code;
    if (err != NULL) snprintf(s->err, sizeof(s->err), "%s", err);
    uv_close((uv_handle_t *)&s->deadline, NULL);
    if (s->v != NULL) vol_close(s->v, NULL, NULL);
}

static void read_more(vb_verify_state *s);

static void on_page(vol *v, int status, uint64_t page, const uint8_t *data, const char *msg,
                    void *ud)
{
    vb_verify_state *s = ud;
    if (status != 0) {
        char err[MRD_MSG_MAX];
        snprintf(err, sizeof(err), "reading page %" PRIu64 ": %s", page, msg);
        finish(s, 1, err);
        return;
    }
    s->done++;
    mrd_msg m = {{0}};
    vb_match r = vb_check_page(&s->check, page, mrd_crc32c(0, data, vol_page_size(v)), &m);
    if (r == VB_MATCH_DURABLE) s->durable++;
    if (r == VB_MATCH_LATER) s->later++;
    if (r == VB_MISMATCH && s->mismatches++ == 0)
        snprintf(s->first_mismatch, sizeof(s->first_mismatch), "%s", m.text);
    read_more(s);
}

static void read_more(vb_verify_state *s)
{
    while (!s->stopping && s->next < s->check.n_pages &&
           s->next - s->done < VB_FETCH_INFLIGHT_MAX) {
        uint64_t page = vb_check_page_at(&s->check, s->next);
        int rc = vol_read(s->v, page, s->info.vdl, on_page, s);
        if (rc != 0) {
            finish(s, 1, mrd_strerror(rc));
            return;
        }
        s->next++;
    }
    if (!s->stopping && s->done == s->check.n_pages) finish(s, s->mismatches ? 1 : 0, NULL);
}

static void on_ready(vol *v, int status, const char *msg, void *ud)
{
    vb_verify_state *s = ud;
    if (status != 0) {
        finish(s, 1, msg);
        return;
    }
    s->info = *vol_info_get(v);
    if (s->info.vdl < s->check.vdl_max) {
        char err[MRD_MSG_MAX];
        snprintf(err, sizeof(err),
                 "recovered vdl %" PRIu64 " is below the logged vdl %" PRIu64
                 ": acknowledged writes were lost",
                 s->info.vdl, s->check.vdl_max);
        finish(s, 1, err);
        return;
    }
    read_more(s);
}

static void on_error(vol *v, int err, const char *msg, void *ud)
{
    finish(ud, 1, msg);
}

static const vol_cbs verify_cbs = {.on_ready = on_ready, .on_error = on_error};

static void on_deadline(uv_timer_t *t)
{
    vb_verify_state *s = t->data;
    char err[MRD_MSG_MAX];
    snprintf(err, sizeof(err), "not done after %" PRIu64 " ms (%u of %u pages read)",
             s->a->timeout_ms, s->done, s->check.n_pages);
    finish(s, 1, err);
}

static int load_log(vb_verify_state *s, const char *path, mrd_msg *msg)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return mrd_fail(msg, MRD_EIO, "%s: %s", path, strerror(errno));
    char line[VB_LOG_LINE_MAX + 2];
    uint64_t no = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        no++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        else if (!feof(f))
            rc = mrd_fail(msg, MRD_EPARSE, "%s:%" PRIu64 ": line longer than %u bytes", path, no,
                          VB_LOG_LINE_MAX);
        else
            break; /* a last line cut short (the bench was killed while writing it) */
        if (rc == 0) rc = vb_check_line(&s->check, line, no, msg);
    }
    if (rc == 0 && ferror(f)) rc = mrd_fail(msg, MRD_EIO, "%s: %s", path, strerror(errno));
    fclose(f);
    return rc;
}

static void print_summary(const vb_verify_state *s)
{
    const vb_check *c = &s->check;
    if (s->a->json) {
        printf("{\"ok\":%s,\"pages\":%u,\"pages_read\":%u,\"match_durable\":%" PRIu64
               ",\"match_later\":%" PRIu64 ",\"mismatches\":%" PRIu64 ",\"logged_vdl\":%" PRIu64
               ",\"recovered_vcl\":%" PRIu64 ",\"recovered_vdl\":%" PRIu64 ",\"epoch\":%" PRIu64
               ",\"submits\":%" PRIu64 ",\"recoveries\":%" PRIu64 ",\"error\":",
               s->exit_code == 0 ? "true" : "false", c->n_pages, s->done, s->durable, s->later,
               s->mismatches, c->vdl_max, s->info.vcl, s->info.vdl, s->info.epoch, c->submits,
               c->recoveries);
        mrd_buf b;
        mrd_buf_init(&b);
        mrd_json_quote(&b, s->first_mismatch[0] ? s->first_mismatch : s->err);
        printf("%.*s}\n", (int)b.len, (const char *)b.data);
        mrd_buf_free(&b);
    } else {
        printf("volume-verify: %s: %u pages read at the recovered vdl %" PRIu64 " (vcl %" PRIu64
               ", epoch %" PRIu64 "): %" PRIu64
               " hold their last write at or below the logged vdl %" PRIu64 ", %" PRIu64
               " a later write, %" PRIu64 " neither\n",
               s->exit_code == 0 ? "ok" : "FAILED", s->done, s->info.vdl, s->info.vcl,
               s->info.epoch, s->durable, c->vdl_max, s->later, s->mismatches);
        printf("log: %" PRIu64 " writes, %" PRIu64 " vdl lines, %" PRIu64 " writers, %" PRIu64
               " writes discarded by recoveries\n",
               c->submits, c->vdls, c->recoveries, c->truncated);
    }
    if (s->first_mismatch[0])
        fprintf(stderr, "meridian volume-verify: %s\n", s->first_mismatch);
    else if (s->exit_code != 0)
        fprintf(stderr, "meridian volume-verify: %s\n", s->err);
    fflush(stdout);
}

static int run(vb_verify_state *s, const vb_args *a, vb_env *env, mrd_msg *msg)
{
    int rc = vb_check_init(&s->check, env->topo.page_size, msg);
    if (rc == 0) rc = load_log(s, a->log, msg);
    if (rc != 0) return rc;
    uint64_t pages_per_pg = env->topo.pg_size_bytes / env->topo.page_size, pgs = 1;
    for (uint32_t i = 0; i < s->check.n_pages; i++)
        if (vb_check_page_at(&s->check, i) / pages_per_pg + 1 > pgs)
            pgs = vb_check_page_at(&s->check, i) / pages_per_pg + 1;
    if (pgs > QUORUM_PGS_MAX)
        return mrd_fail(msg, MRD_ETOOBIG, "the log names pages beyond %u protection groups",
                        QUORUM_PGS_MAX);
    vol_config cfg;
    vb_vol_config(env, &cfg);
    cfg.pg_count_min = (uint32_t)pgs;
    uv_loop_init(&s->loop);
    rc = vol_open(&s->loop, &cfg, &verify_cbs, s, &s->v, msg);
    if (rc == 0) {
        uv_timer_init(&s->loop, &s->deadline);
        s->deadline.data = s;
        uv_timer_start(&s->deadline, on_deadline, a->timeout_ms, 0);
        uv_run(&s->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&s->loop);
    return rc;
}

int vb_verify(const vb_args *a, vb_env *env)
{
    if (a->log == NULL) {
        fprintf(stderr, "meridian volume-verify: --log FILE is required\n");
        return 2;
    }
    vb_verify_state *s = calloc(1, sizeof(*s));
    if (s == NULL) return 1;
    s->a = a;
    mrd_msg msg = {{0}};
    int rc = run(s, a, env, &msg);
    int code = rc != 0 ? 1 : s->exit_code;
    if (rc != 0)
        fprintf(stderr, "meridian volume-verify: %s\n", msg.text);
    else
        print_summary(s);
    vb_check_close(&s->check);
    free(s);
    return code;
}
