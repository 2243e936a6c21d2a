/*
 * The real kill -9 test: starts kill9_writer on a temporary folder, reads the
 * LSNs it acknowledges, kills it with SIGKILL (by pid) at a random moment, then
 * runs kill9_check with the highest acknowledged LSN. Repeats over the same
 * folder, so each writer starts from what the previous one left, and removes
 * the folder at the end.
 *
 * usage: kill9_test WRITER CHECKER [ROUNDS [SEED]]
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KILL9_ROUNDS_DEFAULT 20
#define KILL9_RUN_MS_MIN 20
#define KILL9_RUN_MS_SPAN 400
#define KILL9_LINE_MAX 64

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static pid_t spawn(char *const argv[], int *out_fd)
{
    int p[2] = {-1, -1};
    if (out_fd != NULL && pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (out_fd != NULL) {
            dup2(p[1], 1);
            close(p[0]);
            close(p[1]);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (out_fd != NULL) {
        close(p[1]);
        *out_fd = p[0];
    }
    return pid;
}

/* Consumes complete lines from buf, keeping the highest number; leaves a partial tail. */
static void take_lines(char *buf, size_t *len, uint64_t *acked)
{
    size_t start = 0;
    for (size_t i = 0; i < *len; i++) {
        if (buf[i] != '\n') continue;
        buf[i] = '\0';
        uint64_t v = strtoull(buf + start, NULL, 10);
        if (v > *acked) *acked = v;
        start = i + 1;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
}

/*
 * Reads acknowledged LSNs from fd until deadline_ms, or with deadline_ms 0 until
 * EOF. False on EOF (or error) before the deadline: the writer is gone.
 */
static bool read_until(int fd, uint64_t deadline_ms, uint64_t *acked)
{
    static char buf[4096];
    static size_t len = 0;
    for (;;) {
        int wait = -1;
        if (deadline_ms != 0) {
            uint64_t now = now_ms();
            if (now >= deadline_ms) return true;
            wait = (int)(deadline_ms - now);
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, wait);
        if (rc < 0 && errno == EINTR) continue;
        if (rc == 0) continue;
        ssize_t n = rc < 0 ? -1 : read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0) {
            len = 0; /* a partial last line was never a whole acknowledgement */
            return false;
        }
        len += (size_t)n;
        take_lines(buf, &len, acked);
        if (len == sizeof(buf)) return false; /* a line longer than any LSN: not our writer */
    }
}

/* Kills the writer, then takes what it had already acknowledged into the pipe. */
static int kill_writer(pid_t pid, int fd, uint64_t *acked)
{
    if (kill(pid, SIGKILL) != 0) return -1;
    int status;
    if (waitpid(pid, &status, 0) != pid) return -1;
    read_until(fd, 0, acked);
    close(fd);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "kill9: writer exited by itself (status %d)\n", status);
        return -1;
    }
    return 0;
}

static int run_check(const char *checker, const char *dir, uint64_t acked)
{
    char num[32];
    snprintf(num, sizeof(num), "%" PRIu64, acked);
    char *argv[] = {(char *)checker, (char *)dir, num, NULL};
    pid_t pid = spawn(argv, NULL);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int one_round(const char *writer, const char *checker, const char *dir, unsigned *seed,
                     uint64_t *acked)
{
    int fd;
    char *argv[] = {(char *)writer, (char *)dir, NULL};
    pid_t pid = spawn(argv, &fd);
    if (pid < 0) return -1;
    uint64_t run_ms = KILL9_RUN_MS_MIN + (uint64_t)(rand_r(seed) % KILL9_RUN_MS_SPAN);
    if (!read_until(fd, now_ms() + run_ms, acked)) {
        fprintf(stderr, "kill9: writer stopped early\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    if (kill_writer(pid, fd, acked) != 0) return -1;
    return run_check(checker, dir, *acked);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s WRITER CHECKER [ROUNDS [SEED]]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : KILL9_ROUNDS_DEFAULT;
    unsigned seed = argc > 4 ? (unsigned)atoi(argv[4]) : (unsigned)time(NULL);
    char dir[] = "/tmp/mrd-seglog-kill9-XXXXXX";
    if (mkdtemp(dir) == NULL) return 1;
    printf("kill9: seed=%u rounds=%d dir=%s\n", seed, rounds, dir);
    fflush(stdout);
    uint64_t acked = 0;
    int rc = 0;
    for (int r = 0; r < rounds && rc == 0; r++) {
        rc = one_round(argv[1], argv[2], dir, &seed, &acked);
        if (rc != 0) fprintf(stderr, "kill9: round %d failed (acked %" PRIu64 ")\n", r, acked);
    }
    remove_dir(dir);
    printf("kill9: %s, highest acknowledged lsn %" PRIu64 "\n", rc == 0 ? "ok" : "FAILED", acked);
    return rc == 0 ? 0 : 1;
}
