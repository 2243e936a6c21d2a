/*
 * Finding, starting and signalling this machine's meridiand processes by the
 * pid files they write. A pid counts only while /proc shows it is a meridiand
 * started with this process's --id, so a recycled pid is never signalled.
 *
 * With MERIDIAN_SPAWN_WRAPPER set, a process is started as
 *   WRAPPER NODE-ID REGION AZ MERIDIAND-PATH --role ... (meridiand's arguments)
 * so that a harness can place it, say in its AZ's network namespace
 * (tools/torturelib/hosts.py: `exec ip netns exec NS "$@"`). The wrapper must end
 * by exec'ing the rest of its arguments unchanged: the pid the CLI forked stays the
 * process's pid, and /proc shows meridiand with its --id once the chain has run.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl_private.h"

#define CTL_SPAWN_WRAPPER_ENV "MERIDIAN_SPAWN_WRAPPER"

void ctl_node_dir(const ctl_ctx *ctx, const topo_node *node, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", ctx->data_dir, node->id);
}

static pid_t read_pid_file(const ctl_ctx *ctx, const topo_node *node)
{
    char dir[TOPO_PATH_MAX + TOPO_NAME_MAX + 2], path[sizeof(dir) + 32];
    ctl_node_dir(ctx, node, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/%s", dir, CTL_PID_FILE);
    char *text = NULL;
    if (mrd_read_file(path, 64, &text, NULL, NULL) != 0) return 0;
    char *end = NULL;
    long pid = strtol(text, &end, 10);
    bool ok = end != text && (*end == '\n' || *end == '\0') && pid > 1 && pid < (1L << 30);
    free(text);
    return ok ? (pid_t)pid : 0;
}

/* True when pid is a live (not zombie) meridiand whose arguments include --id ID. */
bool ctl_pid_is_node(pid_t pid, const char *id)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    char *stat = NULL;
    if (mrd_read_file(path, 4096, &stat, NULL, NULL) != 0) return false;
    const char *paren = strrchr(stat, ')');
    bool zombie = paren != NULL && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
    free(stat);
    if (zombie) return false;
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    char *cmd = NULL;
    size_t len = 0;
    if (mrd_read_file(path, 65536, &cmd, &len, NULL) != 0) return false;
    bool is_daemon = false, has_id = false;
    const char *prev = NULL;
    for (size_t off = 0; off < len; off += strlen(cmd + off) + 1) {
        const char *arg = cmd + off;
        if (off == 0) {
            const char *base = strrchr(arg, '/');
            is_daemon = strcmp(base != NULL ? base + 1 : arg, "meridiand") == 0;
        }
        if (prev != NULL && strcmp(prev, "--id") == 0 && strcmp(arg, id) == 0) has_id = true;
        prev = arg;
    }
    free(cmd);
    return is_daemon && has_id;
}

pid_t ctl_running_pid(const ctl_ctx *ctx, const topo_node *node)
{
    pid_t pid = read_pid_file(ctx, node);
    if (pid == 0) return 0;
    return ctl_pid_is_node(pid, node->id) ? pid : 0;
}

static void child_exec(const ctl_ctx *ctx, const topo_node *node, const char *dir,
                       const char *certs, const char *wrapper)
{
    char log[TOPO_PATH_MAX + TOPO_NAME_MAX + 40];
    snprintf(log, sizeof(log), "%s/%s", dir, CTL_LOG_FILE);
    setsid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || null < 0) _exit(126);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    const topo_region *region = &ctx->topo->regions[node->region];
    /* The wrapper's arguments start at [0], meridiand's own at [4]. */
    const char *args[] = {wrapper, node->id, region->name, region->azs[node->az],
                          ctx->meridiand, "--role", topo_role_name(node->role), "--id", node->id,
                          "--topology", ctx->topo_path, "--data", dir, "--certs", certs, NULL};
    const char *const *argv = wrapper != NULL ? args : args + 4;
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "meridian: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* The wrapper named by MERIDIAN_SPAWN_WRAPPER, or NULL when it is unset or empty. */
static int spawn_wrapper(const char **out, mrd_msg *msg)
{
    const char *w = getenv(CTL_SPAWN_WRAPPER_ENV);
    *out = w != NULL && w[0] != '\0' ? w : NULL;
    if (*out != NULL && access(w, X_OK) != 0)
        return mrd_fail(msg, MRD_ENOTFOUND, "%s=%s: not an executable: %s", CTL_SPAWN_WRAPPER_ENV,
                        w, strerror(errno));
    return 0;
}

int ctl_spawn(const ctl_ctx *ctx, const topo_node *node, pid_t *out, mrd_msg *msg)
{
    const char *wrapper = NULL;
    int rc = spawn_wrapper(&wrapper, msg);
    if (rc != 0) return rc;
    char dir[TOPO_PATH_MAX + TOPO_NAME_MAX + 2];
    ctl_node_dir(ctx, node, dir, sizeof(dir));
    rc = mrd_mkdirs(dir, msg);
    if (rc != 0) return rc;
    char certs[TOPO_PATH_MAX];
    ctl_certs_dir(ctx, certs, sizeof(certs));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return mrd_fail(msg, MRD_EIO, "%s: fork failed: %s", node->id, strerror(errno));
    if (pid == 0) child_exec(ctx, node, dir, certs, wrapper);
    *out = pid;
    return 0;
}

/* The last lines of a process's log, for a message about why it did not start. */
void ctl_log_tail(const ctl_ctx *ctx, const topo_node *node, int lines, char *buf, size_t len)
{
    char path[TOPO_PATH_MAX + TOPO_NAME_MAX + 40];
    snprintf(path, sizeof(path), "%s/%s/%s", ctx->data_dir, node->id, CTL_LOG_FILE);
    buf[0] = '\0';
    char *text = NULL;
    size_t n = 0;
    if (mrd_read_file(path, 64 << 20, &text, &n, NULL) != 0) return;
    size_t start = n;
    int seen = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && start != n && ++seen == lines) break;
        start--;
    }
    snprintf(buf, len, "%s", text + start);
    free(text);
}
