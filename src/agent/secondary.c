/*
 * A secondary region's agent: it takes the primary's replication stream
 * (POST /v1/replicate), treats every byte as hostile (a bad frame, batch,
 * record or link closes that one stream with a logged reason), and writes
 * the records into the local volume in replica mode with the primary's LSNs,
 * epochs and back-links. Every 100 ms it saves its rolling checksum at the
 * local VDL (the checksum file) and then acknowledges that VDL to the
 * primary: what it acknowledged it can always resume from with a known
 * checksum. Records at or below the chain head recovery found are already
 * in the volume: they only advance the checksum.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"

#define H2_PROTOCOL_ERROR 0x1u

static void process(agent *a);

/* ---- commit points and their checksums ---------------------------------------------------- */

static void cpl_add(agent *a, uint64_t lsn, uint32_t crc)
{
    if (a->cpl_count == AG_CPL_RING) {
        a->cpl_head = (a->cpl_head + 1) % AG_CPL_RING;
        a->cpl_count--;
    }
    uint32_t i = (a->cpl_head + a->cpl_count++) % AG_CPL_RING;
    a->cpl_lsn[i] = lsn;
    a->cpl_crc[i] = crc;
}

static bool cpl_find(agent *a, uint64_t lsn, uint32_t *crc)
{
    /* drop what is below lsn but the entry itself: acks only move up */
    while (a->cpl_count > 1 && a->cpl_lsn[(a->cpl_head + 1) % AG_CPL_RING] <= lsn) {
        a->cpl_head = (a->cpl_head + 1) % AG_CPL_RING;
        a->cpl_count--;
    }
    if (a->cpl_count == 0 || a->cpl_lsn[a->cpl_head] != lsn) return false;
    *crc = a->cpl_crc[a->cpl_head];
    return true;
}

/* ---- the stream from the primary ---------------------------------------------------------- */

static void in_reset_state(agent *a)
{
    a->in = NULL;
    a->pend = false;
    a->paused = false;
    a->inbox.len = 0;
    a->in_frames = 0;
    wire_frame_reader_close(&a->ifr);
    wire_frame_reader_init(&a->ifr, 0);
}

static void in_fail(agent *a, int rc, const char *why)
{
    MRD_WARN("replication_stream_closed", "primary=%s error=%s reason=\"%s\" chain=%" PRIu64,
             a->in_peer, mrd_errname(rc), why, a->chain_lsn);
    snprintf(a->in_why, sizeof(a->in_why), "%s", why);
    h2_req *req = a->in;
    in_reset_state(a);
    if (req != NULL) h2_req_reset(req, H2_PROTOCOL_ERROR);
}

/* One record: checksum only (already in the volume), or into the volume. MRD_EBUSY: later. */
static int take_record(agent *a, const wire_record *rec, mrd_msg *msg)
{
    if (rec->lsn <= a->chain_lsn || rec->vol_prev_lsn != a->chain_lsn)
        return mrd_fail(msg, MRD_EPROTO,
                        "record %" PRIu64 " links to %" PRIu64 ", the local chain ends at %" PRIu64,
                        rec->lsn, rec->vol_prev_lsn, a->chain_lsn);
    a->scratch.len = 0;
    int rc = wire_record_encode(rec, &a->scratch, msg);
    if (rc != 0) return rc;
    if (rec->lsn > a->open_head) {
        rc = vol_replica_submit(a->vol, rec, a->scratch.data, a->scratch.len, msg);
        if (rc != 0) return rc;
        if (ag_backlog_full(&a->backlog)) ag_backlog_drop_oldest(&a->backlog);
        (void)ag_backlog_put(&a->backlog, rec->lsn, (rec->flags & WIRE_REC_CPL) != 0,
                             a->scratch.data, a->scratch.len);
    }
    a->crc = ag_checksum_advance(a->crc, rec->lsn, a->scratch.data, a->scratch.len);
    a->chain_lsn = rec->lsn;
    if (rec->flags & WIRE_REC_CPL) {
        cpl_add(a, rec->lsn, a->crc);
        a->last_cpl_lsn = rec->lsn;
        a->last_cpl_wall_ms = mrd_wall_ms();
    }
    a->records_in++;
    return 0;
}

/* Takes the held batch's records; false when one must wait (the batch stays held). */
static bool take_pending(agent *a)
{
    while (a->pend) {
        wire_batch_iter save = a->pend_it;
        wire_record rec;
        int rc = wire_batch_iter_next(&a->pend_it, &rec);
        if (rc == 0) {
            a->pend = false;
            break;
        }
        mrd_msg msg = {{0}};
        if (rc == 1) rc = take_record(a, &rec, &msg);
        if (rc == MRD_EBUSY) {
            a->pend_it = save;
            return false;
        }
        if (rc != 0) {
            in_fail(a, rc, msg.text[0] ? msg.text : mrd_strerror(rc));
            return false;
        }
    }
    return true;
}

/* One frame of the stream: a compressed batch, held until its records are taken. */
static int on_frame(agent *a, const wire_frame *f, mrd_msg *msg)
{
    if (f->len < 1 || f->data[0] != AG_FRAME_BATCH)
        return mrd_fail(msg, MRD_EPARSE,
                        "frame %llu of the stream: expected tag 'Z' (a "
                        "compressed batch), got 0x%02x",
                        (unsigned long long)a->in_frames + 1, f->len ? f->data[0] : 0);
    wire_batch batch;
    int rc = ag_frame_batch_decode(f->data + 1, f->len - 1, &a->raw, &batch, msg);
    if (rc != 0) return rc;
    wire_batch_iter_init(&a->pend_it, &batch);
    a->pend = true;
    a->frames_in++;
    a->in_frames++;
    return 0;
}

static void process(agent *a)
{
    while (a->in != NULL && a->vol_ready) {
        if (!take_pending(a)) return;
        if (a->inbox.len == 0) break;
        size_t used = 0;
        wire_frame f;
        mrd_msg msg = {{0}};
        int rc = wire_frame_reader_feed(&a->ifr, a->inbox.data, a->inbox.len, &used, &f, &msg);
        if (rc == 1) rc = on_frame(a, &f, &msg);
        if (rc < 0) return in_fail(a, rc, msg.text);
        mrd_buf_consume(&a->inbox, used);
        if (rc == 0 && !a->pend) break;
    }
    if (a->in != NULL && a->paused && a->inbox.len < AG_INBOX_BYTES_MAX / 8) {
        a->paused = false;
        h2_req_pause(a->in, false);
    }
}

static void send_ack(agent *a, bool force)
{
    uint64_t vdl = vol_replica_vdl(a->vol);
    if (a->in == NULL || (!force && vdl <= a->acked_lsn)) return;
    ag_ack ack = {.durable_lsn = vdl};
    ack.checksum_known = a->crc_known && cpl_find(a, vdl, &ack.checksum);
    if (ack.checksum_known && vdl > a->ck_lsn_saved) ag_checksum_save(a, vdl, ack.checksum);
    if (ack.checksum_known) {
        a->ck_lsn = vdl;
        a->ck_crc = ack.checksum;
    }
    mrd_buf f;
    mrd_buf_init(&f);
    if (ag_frame_ack_encode(&ack, &f, NULL) == 0 && h2_req_write(a->in, f.data, f.len) == 0)
        a->acked_lsn = vdl;
    mrd_buf_free(&f);
}

static h2_body_mode s_start(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    const char *region = h2_req_header(req, "meridian-region");
    const char *primary = node->topo.regions[node->topo.primary_region].name;
    a->streams_refused++;
    if (!a->vol_ready) {
        mrd_node_error(req, 503, "unavailable",
                       "the agent is still recovering its region's volume");
        return H2_STREAM; /* answered: the bytes that follow are dropped */
    }
    if (region == NULL || strcmp(region, primary) != 0) {
        mrd_node_error(req, 403, "not_primary", "only the primary region's agent replicates here");
        return H2_STREAM;
    }
    if (a->in != NULL) in_fail(a, MRD_EBUSY, "a new stream from the primary replaces this one");
    a->streams_refused--;
    in_reset_state(a);
    a->in = req;
    h2_req_set_ud(req, &a->in);
    snprintf(a->in_peer, sizeof(a->in_peer), "%s", h2_req_peer(req) ? h2_req_peer(req) : region);
    char resume[24], durable[24];
    snprintf(resume, sizeof(resume), "%" PRIu64, a->chain_lsn);
    snprintf(durable, sizeof(durable), "%" PRIu64, vol_replica_vdl(a->vol));
    h2_header hdrs[] = {{"content-type", "application/vnd.meridian.replication"},
                        {"meridian-resume-lsn", resume},
                        {"meridian-durable-lsn", durable}};
    if (h2_req_respond_start(req, 200, hdrs, MRD_ARRAY_LEN(hdrs)) != 0) {
        in_fail(a, MRD_ECLOSED, "cannot answer the stream");
        return H2_STREAM;
    }
    a->in_why[0] = '\0';
    MRD_INFO("replication_stream_start", "primary=%s resume=%s durable=%s", a->in_peer, resume,
             durable);
    send_ack(a, true);
    return H2_STREAM;
}

static void s_data(mrd_node *node, h2_req *req, const uint8_t *data, size_t len, void *ud)
{
    agent *a = ud;
    if (req != a->in) return; /* refused or replaced: its bytes are dropped */
    a->bytes_in += len;
    if (a->inbox.len + len > AG_INBOX_BYTES_MAX)
        return in_fail(a, MRD_ETOOBIG, "the primary sent past flow control");
    if (mrd_buf_append(&a->inbox, data, len) != 0) return in_fail(a, MRD_ENOMEM, "out of memory");
    if (!a->paused && a->inbox.len > AG_INBOX_BYTES_MAX / 4) {
        a->paused = true;
        h2_req_pause(req, true);
    }
    process(a);
}

static void s_end(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    if (req != a->in) return;
    process(a);
    MRD_INFO("replication_stream_end", "primary=%s chain=%" PRIu64, a->in_peer, a->chain_lsn);
    in_reset_state(a);
    h2_req_finish(req);
}

void ag_secondary_closed(agent *a, h2_req *req)
{
    if (req == a->in) in_reset_state(a);
}

/* ---- the local volume ----------------------------------------------------------------------- */

/* Recovered: the stream resumes after the saved checksum's LSN when it is in the volume. */
static void on_first_ready(agent *a)
{
    a->open_head = vol_replica_head(a->vol);
    const vol_info *info = vol_info_get(a->vol);
    if (a->rs.epoch > 0 && a->open_head > a->rs.fork_lsn &&
        info->epoch_found < rg_volume_epoch_min(a->rs.epoch)) {
        /* records of an older history above the fork: this volume diverged */
        a->vol_failed = false;
        ag_rejoin_start(a, a->open_head);
        return;
    }
    if (a->ck_file && a->ck_lsn <= a->open_head) {
        a->chain_lsn = a->ck_lsn;
        a->crc = a->ck_crc;
        a->crc_known = true;
    } else {
        a->chain_lsn = a->open_head;
        a->crc = 0;
        a->crc_known = a->open_head == 0;
        if (!a->crc_known)
            MRD_WARN("checksum_unknown",
                     "head=%" PRIu64 " saved=%" PRIu64
                     " reason=\"no saved checksum at or below the volume's head\"",
                     a->open_head, a->ck_lsn);
    }
    if (a->crc_known) cpl_add(a, a->chain_lsn, a->crc);
    a->vol_ready = true;
    MRD_INFO("replica_ready", "head=%" PRIu64 " resume=%" PRIu64 " epoch=%" PRIu64, a->open_head,
             a->chain_lsn, vol_replica_epoch(a->vol));
}

/* The local volume cannot go on: close it and open it again (recovery) a little later. */
static void vol_failed(agent *a, const char *msg)
{
    snprintf(a->in_why, sizeof(a->in_why), "volume: %s", msg);
    a->vol_ready = false;
    a->vol_failed = true;
    a->reopen_at_ms = mrd_now_ms() + AG_REOPEN_MS;
    if (a->in != NULL) in_fail(a, MRD_ESTATE, "the local volume failed");
    ag_log_end(a);
}

static void v_ready(vol *v, int status, const char *msg, void *ud)
{
    agent *a = ud;
    if (status != 0) {
        MRD_ERROR("replica_open_failed", "reason=\"%s\"", msg);
        return vol_failed(a, msg);
    }
    if (!a->vol_ready) on_first_ready(a); /* recovered (after the start or a reopen) */
    if (a->vol_ready) process(a);
}

static void v_vdl(vol *v, uint64_t vdl, void *ud)
{
    agent *a = ud;
    a->vdl = vol_replica_vdl(v);
    mrd_metric_set(a->m_durable, (double)a->vdl);
    process(a);
    ag_log_pump(a);
}

static void v_error(vol *v, int err, const char *msg, void *ud)
{
    agent *a = ud;
    MRD_ERROR("replica_failed", "error=%s reason=\"%s\"", mrd_errname(err), msg);
    vol_failed(a, msg);
}

static const vol_cbs replica_cbs = {.on_ready = v_ready, .on_vdl = v_vdl, .on_error = v_error};

static int open_replica(agent *a, mrd_msg *msg)
{
    vol_config cfg = {.topo = &a->node->topo,
                      .region = a->region_idx,
                      .certs_dir = a->node->certs_dir,
                      .cert_id = a->node->self->id,
                      .pg_count_min = QUORUM_PGS_MAX,
                      /* no writer of an older global epoch adds to this volume any more */
                      .epoch_min = a->rs.epoch * RG_EPOCH_STEP,
                      .epoch_min_lsn = a->rs.fork_lsn};
    a->cpl_head = a->cpl_count = 0;
    a->acked_lsn = 0;
    while (a->backlog.count > 0)
        ag_backlog_drop_oldest(&a->backlog);
    return vol_replica_open(a->node->loop, &cfg, &replica_cbs, a, &a->vol, msg);
}

static void reopen_closed(void *ud)
{
    agent *a = ud;
    a->vol = NULL;
    a->vol_closing = false;
    if (a->stopping) return;
    mrd_msg msg = {{0}};
    a->vol_failed = false;
    MRD_INFO("replica_reopen", "reason=\"%s\"", a->in_why);
    if (open_replica(a, &msg) != 0) {
        a->vol = NULL;
        a->vol_failed = true;
        a->reopen_at_ms = mrd_now_ms() + AG_REOPEN_MS;
        MRD_ERROR("replica_reopen_failed", "reason=\"%s\"", msg.text);
    }
}

void ag_secondary_tick(agent *a, uint64_t now)
{
    ag_rejoin_tick(a, now);
    if (a->rejoin[0]) return;
    if (a->vol_failed && now >= a->reopen_at_ms && !a->vol_closing) {
        a->vol_closing = true;
        if (a->vol != NULL) return vol_close(a->vol, reopen_closed, a);
        return reopen_closed(a);
    }
    if (a->vol == NULL || a->vol_failed) return;
    process(a);
    send_ack(a, false);
    ag_log_pump(a);
}

int ag_secondary_start(agent *a, mrd_msg *msg)
{
    static const mrd_stream_route_cbs cbs = {
        .on_start = s_start, .on_data = s_data, .on_end = s_end};
    wire_frame_reader_init(&a->ifr, 0);
    mrd_buf_init(&a->inbox);
    mrd_buf_init(&a->raw);
    a->cpl_lsn = calloc(AG_CPL_RING, sizeof(*a->cpl_lsn));
    a->cpl_crc = calloc(AG_CPL_RING, sizeof(*a->cpl_crc));
    if (a->cpl_lsn == NULL || a->cpl_crc == NULL)
        return mrd_fail(msg, MRD_ENOMEM, "agent: out of memory");
    int rc = ag_rejoin_pending(a) ? 0 : open_replica(a, msg);
    if (rc == 0) rc = mrd_node_stream_route(a->node, "POST", "/v1/replicate", &cbs, a);
    if (rc == 0) rc = mrd_node_route(a->node, "GET", "/v1/log", ag_log_route, a);
    return rc;
}

static void vol_closed(void *ud)
{
    agent *a = ud;
    a->vol = NULL;
}

void ag_secondary_stop(agent *a)
{
    if (a->in != NULL) {
        h2_req *req = a->in;
        in_reset_state(a);
        h2_req_finish(req);
    }
    ag_log_end(a);
    if (a->vol != NULL && !a->vol_closing) vol_close(a->vol, vol_closed, a);
}

void ag_secondary_status(agent *a, mrd_buf *out)
{
    const char *state = a->vol_ready ? "ready" : a->vol_failed ? "failed" : "recovering";
    uint64_t vdl = a->vol != NULL ? vol_replica_vdl(a->vol) : 0;
    mrd_buf_printf(out,
                   ",\"agent_role\":\"secondary\",\"replica_state\":\"%s\",\"durable_lsn\":%" PRIu64
                   ",\"chain_lsn\":%" PRIu64 ",\"epoch\":%" PRIu64 ",\"stream\":%s"
                   ",\"records_in\":%" PRIu64 ",\"frames_in\":%" PRIu64 ",\"bytes_in\":%" PRIu64
                   ",\"streams_refused\":%" PRIu64,
                   state, vdl, a->chain_lsn, a->vol != NULL ? vol_replica_epoch(a->vol) : 0,
                   a->in != NULL ? "true" : "false", a->records_in, a->frames_in, a->bytes_in,
                   a->streams_refused);
    if (a->crc_known && a->ck_lsn_saved > 0)
        mrd_buf_printf(out, ",\"checksum\":\"%08x\",\"checksum_lsn\":%" PRIu64, a->ck_crc,
                       a->ck_lsn);
    if (a->in_why[0]) {
        mrd_buf_printf(out, ",\"reason\":");
        mrd_json_quote(out, a->in_why);
    }
    mrd_buf_printf(out, ",\"regions\":[{\"name\":");
    mrd_json_quote(out, a->region->name);
    mrd_buf_printf(out, ",\"role\":\"secondary\",\"durable_lsn\":%" PRIu64 "}]", vdl);
}
