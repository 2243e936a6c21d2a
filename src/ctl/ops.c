/* The operations behind `meridian up`, `down` and `status`. */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl_private.h"

#define CTL_HEALTH_PROBE_MS 500

typedef struct {
    const topo_node *node;
    pid_t pid;
    bool started; /* by this call */
    bool done;    /* healthy (up) or gone (down) */
} ctl_entry;

typedef struct {
    ctl_entry e[CTL_NODES_MAX];
    int count;
} ctl_table;

typedef struct {
    ctl_table *t;
    int only_role;
} ctl_collect;

static int collect_node(const topology *topo, const topo_node *node, void *ud)
{
    ctl_collect *cc = ud;
    ctl_table *t = cc->t;
    if (cc->only_role >= 0 && (int)node->role != cc->only_role) return 0;
    if (t->count >= CTL_NODES_MAX) return MRD_ETOOBIG;
    memset(&t->e[t->count], 0, sizeof(t->e[0]));
    t->e[t->count++].node = node;
    return 0;
}

static int collect(const ctl_ctx *ctx, ctl_table *t)
{
    t->count = 0;
    ctl_collect cc = {.t = t, .only_role = ctx->only_role};
    return topo_each_node(ctx->topo, collect_node, &cc);
}

/* Healthy: answers GET /v1/status with 200, reports the pid we know, and says it is ready. */
static bool healthy(const ctl_ctx *ctx, const topo_node *node, pid_t pid)
{
    h2_result res;
    memset(&res, 0, sizeof(res));
    int rc = ctl_fetch(ctx, node, "GET", "/v1/status", NULL, 0, CTL_HEALTH_PROBE_MS, &res, NULL);
    const char *p = rc == 0 && res.body.data != NULL ? strstr((char *)res.body.data, "\"pid\":")
                                                     : NULL;
    bool ok = rc == 0 && res.status == 200 && p != NULL && strtol(p + 6, NULL, 10) == (long)pid &&
              strstr((char *)res.body.data, "\"ready\":false") == NULL;
    h2_result_free(&res);
    return ok;
}

static int start_missing(ctl_ctx *ctx, ctl_table *t, int *started, mrd_msg *msg)
{
    *started = 0;
    for (int i = 0; i < t->count; i++) {
        ctl_entry *e = &t->e[i];
        e->pid = ctl_running_pid(ctx, e->node);
        if (e->pid != 0) continue;
        int rc = ctl_spawn(ctx, e->node, &e->pid, msg);
        if (rc != 0) return rc;
        e->started = true;
        (*started)++;
        fprintf(ctx->out, "starting %-20s %-8s pid %ld\n", e->node->id,
                topo_role_name(e->node->role), (long)e->pid);
    }
    return 0;
}

/* A process this call started has exited: say how, with the end of its log. */
static int report_exit(ctl_ctx *ctx, const ctl_entry *e, int status, mrd_msg *msg)
{
    char tail[1500];
    ctl_log_tail(ctx, e->node, 4, tail, sizeof(tail));
    char how[64];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
    return mrd_fail(msg, MRD_ESTATE, "%s (pid %ld) %s; the end of %s/%s/%s:\n%s", e->node->id,
                    (long)e->pid, how, ctx->data_dir, e->node->id, CTL_LOG_FILE, tail);
}

/* One pass over the processes not yet healthy; returns how many still are not. */
static int probe_pass(ctl_ctx *ctx, ctl_table *t, int *rc, mrd_msg *msg)
{
    int waiting = 0;
    for (int i = 0; i < t->count && *rc == 0; i++) {
        ctl_entry *e = &t->e[i];
        if (e->done) continue;
        int status = 0;
        if (e->started && waitpid(e->pid, &status, WNOHANG) == e->pid) {
            *rc = report_exit(ctx, e, status, msg);
            break;
        }
        if (!e->started && !ctl_pid_is_node(e->pid, e->node->id)) {
            /* It was still going away (a kill just sent) when we looked: start it now. */
            *rc = ctl_spawn(ctx, e->node, &e->pid, msg);
            if (*rc != 0) break;
            e->started = true;
            fprintf(ctx->out, "starting %-20s %-8s pid %ld\n", e->node->id,
                    topo_role_name(e->node->role), (long)e->pid);
            waiting++;
            continue;
        }
        if (healthy(ctx, e->node, e->pid))
            e->done = true;
        else
            waiting++;
    }
    return waiting;
}

int ctl_up(ctl_ctx *ctx, uint64_t timeout_ms, mrd_msg *msg)
{
    static ctl_table t;
    int rc = collect(ctx, &t);
    if (rc == 0) rc = ctl_certs(ctx, msg);
    int started = 0;
    if (rc == 0) rc = start_missing(ctx, &t, &started, msg);
    if (rc != 0) return rc;
    uint64_t begin = mrd_now_ms(), deadline = begin + timeout_ms;
    for (;;) {
        int waiting = probe_pass(ctx, &t, &rc, msg);
        if (rc != 0) return rc;
        if (waiting == 0) break;
        if (mrd_now_ms() >= deadline) {
            for (int i = 0; i < t.count; i++)
                if (!t.e[i].done)
                    return mrd_fail(msg, MRD_ETIMEDOUT,
                                    "%s (pid %ld) is running but did not answer GET /v1/status "
                                    "as ready within %llu ms (%d processes not healthy); "
                                    "see meridian status and its log",
                                    t.e[i].node->id, (long)t.e[i].pid,
                                    (unsigned long long)timeout_ms, waiting);
        }
        ctl_sleep_ms(CTL_POLL_MS);
    }
    fprintf(ctx->out, "up: %d processes healthy (%d started, %d already running) in %.1f s\n",
            t.count, started, t.count - started, (double)(mrd_now_ms() - begin) / 1000.0);
    return 0;
}

static int wait_gone(ctl_table *t, uint64_t ms)
{
    uint64_t deadline = mrd_now_ms() + ms;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < t->count; i++) {
            ctl_entry *e = &t->e[i];
            if (e->pid == 0 || e->done) continue;
            if (ctl_pid_is_node(e->pid, e->node->id))
                alive++;
            else
                e->done = true;
        }
        if (alive == 0 || mrd_now_ms() >= deadline) return alive;
        ctl_sleep_ms(50);
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

static int purge(ctl_ctx *ctx, ctl_table *t, mrd_msg *msg)
{
    char dir[TOPO_PATH_MAX + TOPO_NAME_MAX + 2];
    for (int i = 0; i < t->count; i++) {
        ctl_node_dir(ctx, t->e[i].node, dir, sizeof(dir));
        if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
            return mrd_fail(msg, MRD_EIO, "%s: cannot remove: %s", dir, strerror(errno));
    }
    if (ctx->topo->certs_dir[0] == '\0' && ctx->only_role < 0) { /* others may still use them */
        snprintf(dir, sizeof(dir), "%s/certs", ctx->data_dir);
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    rmdir(ctx->data_dir); /* only when nothing else is left in it */
    fprintf(ctx->out, "purged %s\n", ctx->data_dir);
    return 0;
}

int ctl_down(ctl_ctx *ctx, uint64_t grace_ms, bool purge_data, mrd_msg *msg)
{
    static ctl_table t;
    int rc = collect(ctx, &t);
    if (rc != 0) return rc;
    int signalled = 0;
    for (int i = 0; i < t.count; i++) {
        ctl_entry *e = &t.e[i];
        e->pid = ctl_running_pid(ctx, e->node);
        if (e->pid == 0) continue;
        kill(e->pid, SIGTERM);
        signalled++;
        fprintf(ctx->out, "stopping %-20s pid %ld\n", e->node->id, (long)e->pid);
    }
    int left = wait_gone(&t, grace_ms);
    if (left > 0) {
        for (int i = 0; i < t.count; i++) {
            ctl_entry *e = &t.e[i];
            if (e->pid == 0 || e->done) continue;
            fprintf(ctx->out, "killing  %-20s pid %ld (still running after %llu ms)\n",
                    e->node->id, (long)e->pid, (unsigned long long)grace_ms);
            kill(e->pid, SIGKILL);
        }
        left = wait_gone(&t, 5000);
    }
    if (left > 0) return mrd_fail(msg, MRD_ETIMEDOUT, "%d processes did not stop", left);
    fprintf(ctx->out, "down: %d processes stopped\n", signalled);
    return purge_data ? purge(ctx, &t, msg) : 0;
}
