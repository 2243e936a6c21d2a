/*
 * A region rejoining after a failover it was not part of (src/agent/agent_int.h).
 *
 * When the region state moves to a new epoch whose history forks at LSN F
 * while this region's volume holds records of the old history above F (it
 * was the primary, or followed it further than the new primary did), those
 * records are the divergent tail: acknowledged, perhaps, by the old primary,
 * and not part of the new history. The secondary's agent then
 *
 *   1. reads them from the region's storage (F, head] and writes them to
 *      DATA/divergent-E<epoch>-<F+1>-<last>.log (frames of records, the
 *      encoding of docs/wire.md) and a .json summary (range, commits), both
 *      fsynced: never silently dropped;
 *   2. writes the marker REJOIN (the path of that file): from here on a
 *      restart goes straight on with step 3;
 *   3. waits until the region's writer answers that it does not write (it
 *      stands by, or its process is gone), so nothing writes the volume;
 *   4. empties every storage node of the region (POST /v1/reset, one by one);
 *   5. removes its checksum file and the marker, and restarts: the replica
 *      opens an empty volume and the primary resends the history from the
 *      start.
 * Storage refuses the old writer's records from the moment the replica
 * recovered (it fences at the new epoch's floor), before any of this.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_int.h"
#include "meridian/json.h"

#define RJ_MARKER "REJOIN"
#define RJ_CALL_TIMEOUT_MS 5000u
#define RJ_RETRY_MS 500u

enum { RJ_IDLE, RJ_READ, RJ_WRITER, RJ_RESET, RJ_DONE };

static void say(agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(agent *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->rejoin, sizeof(a->rejoin), fmt, ap);
    va_end(ap);
    MRD_WARN("rejoin", "step=%d what=\"%s\"", a->rejoin_step, a->rejoin);
}

static void marker_path(const agent *a, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", a->node->data_dir, RJ_MARKER);
}

bool ag_rejoin_pending(agent *a)
{
    char path[TOPO_PATH_MAX + 16];
    marker_path(a, path, sizeof(path));
    char *text = NULL;
    size_t len = 0;
    mrd_msg msg = {{0}};
    if (access(path, F_OK) != 0) return false;
    if (mrd_read_file(path, sizeof(a->divergent_path), &text, &len, &msg) == 0) {
        snprintf(a->divergent_path, sizeof(a->divergent_path), "%.*s", (int)len, text);
        char *nl = strchr(a->divergent_path, '\n');
        if (nl != NULL) *nl = '\0';
    }
    free(text);
    a->rejoin_step = RJ_WRITER;
    a->rj_node = -1;
    say(a, "resuming: the divergent tail is saved (%s); emptying the region's storage",
        a->divergent_path[0] ? a->divergent_path : "path unknown");
    return true;
}

void ag_rejoin_start(agent *a, uint64_t head)
{
    a->rejoin_step = RJ_READ;
    a->rejoin_head = head;
    a->rj_node = -1;
    say(a, "the volume holds LSNs %" PRIu64 "..%" PRIu64 " of an older history (epoch %" PRIu64
           " forks after %" PRIu64 "): saving them",
        a->rs.fork_lsn + 1, head, a->rs.epoch, a->rs.fork_lsn);
    /* ag_rejoin_tail_read goes on from the fill's end */
    a->rejoin_next_ms = ag_fill_tail(a, a->rs.fork_lsn, head) == 0 ? UINT64_MAX
                                                                    : mrd_now_ms() + RJ_RETRY_MS;
}

/* ---- step 1: the file ------------------------------------------------------------------- */

static int save_tail(agent *a, const ag_rec *recs, uint32_t n, uint64_t end, mrd_msg *msg)
{
    char base[TOPO_PATH_MAX + 96];
    snprintf(base, sizeof(base), "%s/divergent-E%" PRIu64 "-%" PRIu64 "-%" PRIu64,
             a->node->data_dir, a->rs.epoch, a->rs.fork_lsn + 1, end);
    mrd_buf frames, sum;
    mrd_buf_init(&frames);
    mrd_buf_init(&sum);
    uint64_t commits = 0;
    int rc = 0;
    mrd_buf_printf(&sum,
                   "{\"epoch\":%" PRIu64 ",\"primary\":", a->rs.epoch);
    mrd_json_quote(&sum, a->rs.primary);
    mrd_buf_printf(&sum,
                   ",\"fork_lsn\":%" PRIu64 ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64
                   ",\"records\":%u,\"commit_lsns\":[",
                   a->rs.fork_lsn, n ? recs[0].lsn : 0, end, n);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        rc = wire_frame_append(&frames, recs[i].enc.data, recs[i].enc.len, msg);
        if (recs[i].cpl) mrd_buf_printf(&sum, "%s%" PRIu64, commits++ ? "," : "", recs[i].lsn);
    }
    mrd_buf_printf(&sum, "],\"commits\":%" PRIu64 ",\"format\":\"frames of records (docs/wire.md)\"}\n", commits);
    char path[TOPO_PATH_MAX + 112];
    snprintf(path, sizeof(path), "%s.log", base);
    if (rc == 0)
        rc = mrd_write_file_atomic(path, frames.data ? (const void *)frames.data : "", frames.len, msg);
    snprintf(path, sizeof(path), "%s.json", base);
    if (rc == 0 && sum.data == NULL) rc = mrd_fail(msg, MRD_ENOMEM, "out of memory");
    if (rc == 0) rc = mrd_write_file_atomic(path, sum.data, sum.len, msg);
    if (rc == 0) {
        snprintf(a->divergent_path, sizeof(a->divergent_path), "%s.log", base);
        a->divergent_after = a->rs.fork_lsn;
        a->divergent_to = end;
        a->divergent_records = n;
        a->divergent_commits = commits;
        char marker[TOPO_PATH_MAX + 16];
        marker_path(a, marker, sizeof(marker));
        char text[TOPO_PATH_MAX + 128];
        int len = snprintf(text, sizeof(text), "%s\n", a->divergent_path);
        rc = mrd_write_file_atomic(marker, text, (size_t)len, msg);
    }
    mrd_buf_free(&frames);
    mrd_buf_free(&sum);
    return rc;
}

void ag_rejoin_tail_read(agent *a, bool ok, const ag_rec *recs, uint32_t n, uint64_t end,
                         const char *why)
{
    if (a->rejoin_step != RJ_READ) return;
    mrd_msg msg = {{0}};
    if (!ok) {
        say(a, "reading the divergent tail from storage failed (%s): trying again",
            why && why[0] ? why : "fewer than 3 nodes answered");
        a->rejoin_next_ms = mrd_now_ms() + RJ_RETRY_MS;
        return;
    }
    if (save_tail(a, recs, n, end, &msg) != 0) {
        say(a, "saving the divergent tail failed: %s: trying again", msg.text);
        a->rejoin_next_ms = mrd_now_ms() + RJ_RETRY_MS;
        return;
    }
    MRD_WARN("divergent_tail_saved",
             "path=%s after=%" PRIu64 " to=%" PRIu64 " records=%u commits=%" PRIu64,
             a->divergent_path, a->divergent_after, end, n, a->divergent_commits);
    a->rejoin_step = RJ_WRITER;
    a->rejoin_next_ms = mrd_now_ms();
    say(a, "divergent tail saved to %s (%" PRIu64 " commits); waiting for the region's writer to stand by",
        a->divergent_path, a->divergent_commits);
}

/* ---- steps 3 and 4: one call at a time ----------------------------------------------------- */

static void call_done(agent *a, int err);

static void c_response(h2_call *call, int status, void *ud)
{
    ((agent *)ud)->rj_status = status;
}

static void c_data(h2_call *call, const uint8_t *data, size_t len, void *ud)
{
    agent *a = ud;
    if (a->rj_body.len + len <= 65536) mrd_buf_append(&a->rj_body, data, len);
}

static void c_close(h2_call *call, int error, void *ud)
{
    agent *a = ud;
    if (a->rj_call == NULL) return;
    a->rj_call = NULL;
    call_done(a, error);
}

static const h2_call_cbs call_cbs = {.on_response = c_response, .on_data = c_data,
                                     .on_close = c_close};

static void c_connect(h2_client *c, int status, void *ud)
{
    agent *a = ud;
    if (status != 0) return call_done(a, status);
    char body[TOPO_NAME_MAX + 16];
    const char *path = "/v1/status", *method = "GET";
    size_t len = 0;
    if (a->rj_node >= 0) {
        method = "POST";
        path = "/v1/reset";
        len = (size_t)snprintf(body, sizeof(body), "{\"node\":\"%s\"}",
                               a->region->storage[a->rj_node].id);
    }
    a->rj_status = 0;
    a->rj_body.len = 0;
    if (h2_client_request(c, method, path, NULL, 0, len ? body : NULL, len, true, &call_cbs, a,
                          &a->rj_call) != 0) {
        a->rj_call = NULL;
        call_done(a, MRD_ECONN);
    }
}

static void c_disconnect(h2_client *c, int error, void *ud)
{
    agent *a = ud;
    if (a->rj_call != NULL) {
        a->rj_call = NULL;
        call_done(a, error ? error : MRD_ECLOSED);
    }
}

static const h2_client_cbs client_cbs = {.on_connect = c_connect, .on_disconnect = c_disconnect};

static bool writer_stands_by(agent *a)
{
    mrd_json_doc d;
    mrd_msg msg = {{0}};
    if (mrd_json_parse((const char *)a->rj_body.data, a->rj_body.len, &d, &msg) != 0) return false;
    const mrd_json *root = mrd_json_root(&d);
    const mrd_json *role = mrd_json_get(&d, root, "role");
    const mrd_json *mode = mrd_json_get(&d, root, "mode");
    bool ok = (role != NULL && role->kind == MRD_JSON_STRING &&
               strcmp(mrd_json_str(&d, role), "reader") == 0) ||
              (mode != NULL && mode->kind == MRD_JSON_STRING &&
               strcmp(mrd_json_str(&d, mode), "standby") == 0);
    mrd_json_free(&d);
    return ok;
}

static void call_done(agent *a, int err)
{
    a->rj_next_close = true;
    uint64_t now = mrd_now_ms();
    if (a->rejoin_step == RJ_WRITER) {
        /* refused: the process is gone (it asks this agent when it starts again) */
        bool gone = err == MRD_ECONN;
        if (gone || (err == 0 && a->rj_status == 200 && writer_stands_by(a))) {
            a->rejoin_step = RJ_RESET;
            a->rj_node = 0;
            say(a, "the writer %s %s; emptying storage node 1 of 6", a->rs.writer,
                gone ? "is not running" : "stands by");
            a->rejoin_next_ms = now;
            return;
        }
        a->rejoin_next_ms = now + RJ_RETRY_MS;
        return;
    }
    if (a->rejoin_step != RJ_RESET) return;
    if (err == 0 && a->rj_status == 200) {
        MRD_WARN("rejoin_storage_reset", "node=%s", a->region->storage[a->rj_node].id);
        a->rj_node++;
        a->rejoin_next_ms = now;
        if (a->rj_node == TOPO_STORAGE) {
            a->rejoin_step = RJ_DONE;
            return;
        }
        say(a, "emptying storage node %d of 6", a->rj_node + 1);
        return;
    }
    say(a, "emptying storage node %s failed (%s, status %d): trying again",
        a->region->storage[a->rj_node].id, mrd_errname(err), a->rj_status);
    a->rejoin_next_ms = now + RJ_RETRY_MS;
}

static void vol_closed(void *ud)
{
    agent *a = ud;
    a->vol = NULL;
    a->vol_closing = false;
}

void ag_rejoin_tick(agent *a, uint64_t now)
{
    if (a->rejoin_step == RJ_IDLE || a->node->stopping) return;
    /* the replica would fence emptied nodes as they come back: it goes first */
    if (a->rejoin_step >= RJ_WRITER && a->vol != NULL) {
        if (!a->vol_closing) {
            a->vol_closing = true;
            vol_close(a->vol, vol_closed, a);
        }
        return;
    }
    if (a->rj_next_close && a->rj_client != NULL) {
        h2_client_close(a->rj_client);
        a->rj_client = NULL;
    }
    a->rj_next_close = false;
    if (a->rj_call != NULL || a->rj_client != NULL) {
        if (now > a->rj_call_at_ms + RJ_CALL_TIMEOUT_MS) a->rj_next_close = true; /* timed out */
        return;
    }
    if (now < a->rejoin_next_ms) return;
    if (a->rejoin_step == RJ_READ) { /* a failed read or save, tried again */
        if (a->fill == NULL)
            a->rejoin_next_ms = ag_fill_tail(a, a->rs.fork_lsn, a->rejoin_head) == 0
                                    ? UINT64_MAX
                                    : now + RJ_RETRY_MS;
        return;
    }
    if (a->rejoin_step == RJ_DONE) {
        char path[TOPO_PATH_MAX + 16];
        unlink(a->ck_path);
        marker_path(a, path, sizeof(path));
        unlink(path);
        MRD_WARN("rejoin_restart", "reason=\"the region's storage is empty: resync from the "
                                   "primary %s\"",
                 a->rs.primary);
        a->rejoin_step = RJ_IDLE;
        mrd_node_restart(a->node, "rejoining: resync from the start");
        return;
    }
    const topo_node *target = a->rejoin_step == RJ_WRITER ? topo_find(&a->node->topo, a->rs.writer)
                                                         : &a->region->storage[a->rj_node];
    if (target == NULL) return;
    if (a->rejoin_step == RJ_WRITER) a->rj_node = -1;
    h2_client_config cc = {.host = target->addr.host, .port = target->addr.port,
                           .tls = a->client_tls};
    a->rj_call_at_ms = now;
    if (h2_client_connect(a->node->loop, &cc, &client_cbs, a, &a->rj_client, NULL) != 0) {
        a->rj_client = NULL;
        a->rejoin_next_ms = now + RJ_RETRY_MS;
    }
}
