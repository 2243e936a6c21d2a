/*
 * POST /v1/reset: the node empties itself so that it can rejoin its region's
 * volume from nothing — a region that was primary, failed over from, whose
 * volume diverged from the new primary's history (its divergent records were
 * saved elsewhere first). The node stops taking requests, makes a RESET
 * marker durable, waits for its background jobs, closes and deletes its data
 * files, answers, and restarts itself (mrd_node_restart: the same program,
 * the same pid). The new process finds the marker, finishes the reset and
 * comes up exactly like a node that never ran: epoch 0, no fences, no PGs.
 *
 * Why the marker: a crash between the first deletion and the last would
 * leave a node holding part of its log and metadata — a segment that looks
 * whole to a writer's recovery but lacks records, or a log without the
 * fences that void some of it. The marker is durable before anything is
 * deleted, and a start that finds it deletes the rest before it loads
 * anything, then removes it: a node is either untouched or empty.
 *
 * The states a reset goes through are listed in storage_reset_state
 * (storage_int.h); storage_reset_moves below says which move to which.
 * Blocking file work (the marker, the deletions and their fsyncs) runs on
 * the libuv thread pool, like every other file write of a running node.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_int.h"

#define RESET_PATH_MAX (TOPO_PATH_MAX + 512)

static const char *const reset_state_names[RESET_STATES] = {
    [RESET_IDLE] = "idle",         [RESET_MARKING] = "marking",   [RESET_DRAINING] = "draining",
    [RESET_DELETING] = "deleting", [RESET_ANSWERED] = "answered", [RESET_RESTARTING] = "restarting",
};

/* Where each state may go. A failed marker goes back to IDLE (nothing was deleted);
 * a stop (SIGTERM) may come in any state, and the marker, once durable, makes the
 * next start finish the reset. */
static const unsigned storage_reset_moves[RESET_STATES] = {
    [RESET_IDLE] = 1u << RESET_MARKING,
    [RESET_MARKING] = 1u << RESET_DRAINING | 1u << RESET_IDLE,
    [RESET_DRAINING] = 1u << RESET_DELETING,
    [RESET_DELETING] = 1u << RESET_ANSWERED,
    [RESET_ANSWERED] = 1u << RESET_RESTARTING,
    [RESET_RESTARTING] = 0,
};

/* A move the table does not allow is a bug in this file: stop before it touches files. */
static void reset_move(storage *s, storage_reset_state to)
{
    if (!(storage_reset_moves[s->reset.state] & (1u << to))) {
        MRD_ERROR("reset_bad_move", "from=%s to=%s", reset_state_names[s->reset.state],
                  reset_state_names[to]);
        abort();
    }
    MRD_DEBUG("reset_state", "from=%s to=%s", reset_state_names[s->reset.state],
              reset_state_names[to]);
    s->reset.state = to;
}

bool storage_refuse_resetting(storage *s, h2_req *req)
{
    if (!storage_resetting(s)) return false;
    storage_reply_error(s, req, 503, "resetting",
                        "this node is being reset (%s): it deletes its data files and restarts "
                        "empty; retry once it is back",
                        reset_state_names[s->reset.state]);
    return true;
}

/* ---- file work (no loop state: runs on a worker, or at start) ---------------------------- */

static int reset_fsync_dir(const char *path, mrd_msg *msg)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0) rc = mrd_fail(msg, MRD_EIO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* A folder storage owns whole: every entry in it, then the folder. */
static int reset_delete_dir(const char *path, uint32_t *deleted, mrd_msg *msg)
{
    DIR *d = opendir(path);
    if (d == NULL && errno == ENOENT) return 0;
    if (d == NULL) return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0)
            rc = mrd_fail(msg, MRD_EIO, "%s/%s: cannot delete: %s", path, e->d_name,
                          strerror(errno));
        else
            (*deleted)++;
    }
    closedir(d);
    if (rc == 0) rc = reset_fsync_dir(path, msg);
    if (rc == 0 && rmdir(path) != 0)
        rc = mrd_fail(msg, MRD_EIO, "%s: cannot remove: %s", path, strerror(errno));
    if (rc == 0) (*deleted)++;
    return rc;
}

/* Deletes every data file and folder in the node's folder dir (storage_file_classify
 * says which), then syncs dir. Idempotent: a second run finds nothing to delete. */
static int reset_delete(const char *dir, uint32_t *deleted, mrd_msg *msg)
{
    DIR *d = opendir(dir);
    if (d == NULL) return mrd_fail(msg, MRD_EIO, "%s: cannot open: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        storage_file_kind kind = storage_file_classify(e->d_name);
        if (kind == STORAGE_FILE_KEEP) continue;
        char path[RESET_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (kind == STORAGE_FILE_DATA_DIR)
            rc = reset_delete_dir(path, deleted, msg);
        else if (unlink(path) != 0 && errno != ENOENT)
            rc = mrd_fail(msg, MRD_EIO, "%s: cannot delete: %s", path, strerror(errno));
        else
            (*deleted)++;
    }
    closedir(d);
    return rc == 0 ? reset_fsync_dir(dir, msg) : rc;
}

int storage_reset_finish(storage *s, mrd_msg *msg)
{
    char marker[RESET_PATH_MAX];
    snprintf(marker, sizeof(marker), "%s/%s", s->dir, STORAGE_RESET_FILE);
    struct stat st;
    if (stat(marker, &st) != 0) {
        if (errno == ENOENT) return 0;
        return mrd_fail(msg, MRD_EIO, "%s: cannot stat: %s", marker, strerror(errno));
    }
    uint32_t deleted = 0;
    int rc = reset_delete(s->dir, &deleted, msg);
    if (rc == 0 && unlink(marker) != 0)
        rc = mrd_fail(msg, MRD_EIO, "%s: cannot delete: %s", marker, strerror(errno));
    if (rc == 0) rc = reset_fsync_dir(s->dir, msg);
    if (rc != 0) return rc; /* the marker stays (or is gone with everything else) */
    /* deleted is 0 after a reset that ran to its answer; more after one a crash cut. */
    MRD_INFO("reset_finished", "dir=%s deleted=%" PRIu32, s->dir, deleted);
    return 0;
}

/* ---- workers ---------------------------------------------------------------------------- */

static void reset_mark_work(uv_work_t *w)
{
    storage_reset *r = mrd_container_of(w, storage_reset, work);
    storage *s = mrd_container_of(r, storage, reset);
    char path[RESET_PATH_MAX], text[TOPO_NAME_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", s->dir, STORAGE_RESET_FILE);
    int n = snprintf(text, sizeof(text), "node=%s requested_at_ms=%" PRIu64 "\n", s->node->self->id,
                     mrd_wall_ms());
    /* temp file, fdatasync, rename, fsync of the folder */
    r->rc = mrd_write_file_atomic(path, text, (size_t)n, &r->msg);
}

static void reset_delete_work(uv_work_t *w)
{
    storage_reset *r = mrd_container_of(w, storage_reset, work);
    storage *s = mrd_container_of(r, storage, reset);
    r->files = 0;
    r->rc = reset_delete(s->dir, &r->files, &r->msg);
}

static void reset_queue(storage *s, uv_work_cb work, uv_after_work_cb done)
{
    s->reset.active = true;
    s->reset.rc = 0;
    s->reset.msg.text[0] = '\0';
    if (uv_queue_work(s->loop, &s->reset.work, work, done) != 0) {
        work(&s->reset.work); /* no worker: do it here rather than never */
        done(&s->reset.work, 0);
    }
}

/* ---- the steps ---------------------------------------------------------------------------- */

static void reset_on_timer(uv_timer_t *t)
{
    storage *s = t->data;
    reset_move(s, RESET_RESTARTING);
    mrd_node_restart(s->node, "reset");
}

static void reset_delete_done(uv_work_t *w, int status)
{
    storage *s = mrd_container_of(w, storage, reset.work);
    s->reset.active = false;
    if (s->stopping) { /* the marker is durable: the next start finishes the reset */
        storage_maybe_free(s);
        return;
    }
    reset_move(s, RESET_ANSWERED);
    h2_req *req = s->reset.req;
    if (s->reset.rc == 0) {
        MRD_INFO("reset_deleted", "deleted=%" PRIu32 " epoch_was=%" PRIu64, s->reset.files,
                 s->epoch);
        s->epoch = s->epoch_staged = 0; /* what the node holds now: nothing */
        if (req != NULL) {
            mrd_buf body;
            mrd_buf_init(&body);
            mrd_buf_printf(&body, "{\"reset\":true,\"node\":");
            mrd_json_quote(&body, s->node->self->id);
            mrd_buf_printf(&body, "}\n");
            storage_reply(s, req, 200, "application/json", NULL, 0, body.data, body.len);
            mrd_buf_free(&body);
        }
    } else {
        MRD_ERROR("reset_failed", "step=delete reason=\"%s\"", s->reset.msg.text);
        if (req != NULL)
            storage_reply_error(s, req, 500, "reset_failed",
                                "%s; the %s marker stays, and the restart finishes the reset",
                                s->reset.msg.text, STORAGE_RESET_FILE);
    }
    /* The restart closes every connection: it waits for the answer's stream to close
     * (the answer has then been handed to the socket), and a little more so that the
     * client reads it before the connection goes. */
    uv_timer_start(&s->reset.timer, reset_on_timer,
                   req != NULL ? STORAGE_RESET_ANSWER_WAIT_MS : STORAGE_RESET_RESTART_MS, 0);
}

void storage_reset_step(storage *s)
{
    if (s->reset.state != RESET_DRAINING || s->stopping) return;
    if (s->sync.active || s->meta.active || s->mat != NULL) return;
    /* Nothing writes the files any more (every kick refuses while resetting): close them. */
    seglog_close(s->log);
    s->log = NULL;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        if (s->page_fd[pg] >= 0) close(s->page_fd[pg]);
        s->page_fd[pg] = -1;
    }
    reset_move(s, RESET_DELETING);
    reset_queue(s, reset_delete_work, reset_delete_done);
}

static void reset_mark_done(uv_work_t *w, int status)
{
    storage *s = mrd_container_of(w, storage, reset.work);
    s->reset.active = false;
    if (s->stopping) {
        storage_maybe_free(s);
        return;
    }
    if (s->reset.rc != 0) {
        /* The disk failed a write or a sync: as after a failed metadata write, the node
         * takes no more writes until a restart (which finishes the reset if the marker
         * reached the disk after all). */
        MRD_ERROR("reset_failed", "step=marker reason=\"%s\"", s->reset.msg.text);
        storage_fail(s, "reset marker", &s->reset.msg);
        reset_move(s, RESET_IDLE);
        if (s->reset.req != NULL)
            storage_reply_error(s, s->reset.req, 500, "reset_failed",
                                "writing the %s marker: %s; nothing was deleted",
                                STORAGE_RESET_FILE, s->reset.msg.text);
        s->reset.req = NULL;
        return;
    }
    MRD_INFO("reset_marked", "file=%s/%s", s->dir, STORAGE_RESET_FILE);
    reset_move(s, RESET_DRAINING);
    storage_reset_step(s);
}

/* Requests waiting for a sync, a metadata write or the log: none of them will be true. */
static void reset_refuse_held(storage *s)
{
    while (s->held_head.next != &s->held_head) {
        held *h = s->held_head.next;
        storage_refuse_resetting(s, h->req);
        storage_unhold(h);
    }
}

void storage_route_reset(mrd_node *node, h2_req *req, void *ud)
{
    storage *s = ud;
    if (storage_refuse_resetting(s, req)) return;
    size_t len;
    const uint8_t *body = h2_req_body(req, &len);
    mrd_msg msg;
    if (storage_reset_parse(body, len, node->self->id, &msg) != 0) {
        storage_reply_error(s, req, 400, "bad_request", "%s", msg.text);
        return;
    }
    uint64_t records = 0;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++)
        if (s->pgs[pg] != NULL) records += stp_records(s->pgs[pg]);
    const char *peer = h2_req_peer(req);
    MRD_INFO("reset_started",
             "epoch=%" PRIu64 " vdl=%" PRIu64 " key_next=%" PRIu64 " records=%" PRIu64 " peer=%s",
             s->epoch, s->vdl, s->key_next, records, peer != NULL ? peer : "-");
    reset_move(s, RESET_MARKING);
    s->reset.req = req;
    reset_refuse_held(s);
    storage_peers_close(s); /* no gap filling: nothing more goes into the log */
    reset_queue(s, reset_mark_work, reset_mark_done);
}

void storage_reset_req_closed(storage *s, h2_req *req)
{
    if (req != s->reset.req) return;
    s->reset.req = NULL;
    if (s->reset.state == RESET_ANSWERED && !s->stopping)
        uv_timer_start(&s->reset.timer, reset_on_timer, STORAGE_RESET_RESTART_MS, 0);
}

/* ---- the timer's handle ------------------------------------------------------------------- */

void storage_reset_start_timer(storage *s)
{
    uv_timer_init(s->loop, &s->reset.timer);
    s->reset.timer.data = s;
    s->reset.timer_open = true;
}

static void reset_timer_closed(uv_handle_t *h)
{
    storage *s = h->data;
    s->reset.timer_open = false;
    storage_maybe_free(s);
}

void storage_reset_stop(storage *s)
{
    if (!s->reset.timer_open || uv_is_closing((uv_handle_t *)&s->reset.timer)) return;
    uv_timer_stop(&s->reset.timer);
    uv_close((uv_handle_t *)&s->reset.timer, reset_timer_closed);
}
