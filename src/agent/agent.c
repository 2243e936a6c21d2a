/*
 * The agent role's life (include/meridian/agent.h): which half it runs (the
 * primary region's or a secondary's), the client TLS context, the checksum
 * file, the tick, status, metrics and stopping.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_int.h"

#define AG_CHECKSUM_FILE_BYTES_MAX 256

/* The checksum file: "LSN CRC\n" (decimal, 8 hex digits), replaced atomically. */
static void checksum_load(agent *a)
{
    char *text = NULL;
    size_t len = 0;
    mrd_msg msg = {{0}};
    if (mrd_read_file(a->ck_path, AG_CHECKSUM_FILE_BYTES_MAX, &text, &len, &msg) != 0) return;
    unsigned long long lsn;
    unsigned crc;
    char end;
    if (sscanf(text, "%llu %8x%c", &lsn, &crc, &end) == 3 && end == '\n') {
        a->ck_file = true;
        a->ck_lsn = a->ck_lsn_saved = lsn;
        a->ck_crc = crc;
        MRD_INFO("checksum_loaded", "lsn=%llu checksum=%08x", lsn, crc);
    } else {
        MRD_WARN("checksum_file_bad", "path=%s reason=\"not 'LSN CRC'\"", a->ck_path);
    }
    free(text);
}

void ag_checksum_save(agent *a, uint64_t lsn, uint32_t crc)
{
    char text[48];
    int n = snprintf(text, sizeof(text), "%" PRIu64 " %08x\n", lsn, crc);
    mrd_msg msg = {{0}};
    if (mrd_write_file_atomic(a->ck_path, text, (size_t)n, &msg) != 0) {
        MRD_WARN("checksum_save_failed", "lsn=%" PRIu64 " reason=\"%s\"", lsn, msg.text);
        return;
    }
    a->ck_lsn_saved = lsn;
    a->ck_file = true;
}

static int client_tls(agent *a, mrd_msg *msg)
{
    mrd_node *n = a->node;
    if (!n->topo.tls) return 0;
    char ca[TOPO_PATH_MAX + 16], cert[TOPO_PATH_MAX + 80], key[TOPO_PATH_MAX + 80];
    snprintf(ca, sizeof(ca), "%s/ca.crt", n->certs_dir);
    snprintf(cert, sizeof(cert), "%s/%s.crt", n->certs_dir, n->self->id);
    snprintf(key, sizeof(key), "%s/%s.key", n->certs_dir, n->self->id);
    h2_tls_config cfg = {.ca_file = ca, .cert_file = cert, .key_file = key, .verify_peer = true};
    return h2_tls_client_new(&cfg, &a->client_tls, msg);
}

static void on_tick(uv_timer_t *t)
{
    agent *a = t->data;
    if (a->stopping) return;
    uint64_t now = mrd_now_ms();
    ag_region_tick(a, now);
    if (a->primary)
        ag_primary_tick(a, now);
    else
        ag_secondary_tick(a, now);
}

static void status_fn(mrd_node *node, mrd_buf *out, void *ud)
{
    agent *a = ud;
    if (a->primary)
        ag_primary_status(a, out);
    else
        ag_secondary_status(a, out);
}

static bool ready_fn(mrd_node *node, void *ud)
{
    agent *a = ud;
    /* the primary half serves the region state before its writer runs: instances ask it first */
    if (mrd_now_ms() < a->settle_until_ms) return false;
    return a->primary ? true : a->vol_ready;
}

static void req_close_fn(mrd_node *node, h2_req *req, void *ud)
{
    agent *a = ud;
    void *r = h2_req_ud(req);
    if (r == NULL) return;
    if (r == (void *)&a->in) return ag_secondary_closed(a, req);
    if (r == (void *)&a->polls) return ag_region_closed(a, req);
    ag_log_closed(a, req);
}

static void stop_fn(mrd_node *node, void *ud)
{
    agent *a = ud;
    a->stopping = true;
    uv_timer_stop(&a->tick);
    uv_close((uv_handle_t *)&a->tick, NULL);
    ag_region_stop(a);
    if (a->primary)
        ag_primary_stop(a);
    else
        ag_secondary_stop(a);
}

static void register_metrics(agent *a)
{
    mrd_metrics *m = &a->node->metrics;
    a->m_lag_ms =
        mrd_metric_add(m, MRD_GAUGE, "meridian_agent_lag_ms", NULL,
                       "Primary: the largest secondary lag, in ms of the primary's clock.");
    a->m_records = mrd_metric_add(m, MRD_COUNTER, "meridian_agent_records_sent_total", NULL,
                                  "Primary: records sent to secondaries.");
    a->m_bytes_raw = mrd_metric_add(m, MRD_COUNTER, "meridian_agent_bytes_raw_total", NULL,
                                    "Primary: batch bytes sent, before compression.");
    a->m_bytes_sent = mrd_metric_add(m, MRD_COUNTER, "meridian_agent_bytes_sent_total", NULL,
                                     "Primary: replication bytes sent, after compression.");
    a->m_durable = mrd_metric_add(m, MRD_GAUGE, "meridian_agent_durable_lsn", NULL,
                                  "Committed LSN (primary) or local VDL (secondary).");
}

int agent_start(mrd_node *node, agent **out, mrd_msg *msg)
{
    agent *a = calloc(1, sizeof(*a));
    if (a == NULL) return mrd_fail(msg, MRD_ENOMEM, "agent: out of memory");
    a->node = node;
    a->region_idx = node->self->region;
    a->region = &node->topo.regions[a->region_idx];
    snprintf(a->ck_path, sizeof(a->ck_path), "%s/%s", node->data_dir, AG_CHECKSUM_FILE);
    mrd_buf_init(&a->scratch);
    mrd_buf_init(&a->frame);
    register_metrics(a);
    checksum_load(a);
    int rc = client_tls(a, msg);
    if (rc == 0) rc = ag_region_init(a, msg); /* node->topo now follows the region state */
    a->primary = a->region_idx == node->topo.primary_region;
    uint32_t cap = AG_BACKLOG_RECORDS_MAX;
    const char *env = getenv(AG_BACKLOG_RECORDS_ENV); /* small, for tests */
    if (env != NULL && atoi(env) >= 16 && (uint32_t)atoi(env) < cap) cap = (uint32_t)atoi(env);
    if (rc == 0 && ag_backlog_init(&a->backlog, cap, AG_BACKLOG_BYTES_MAX) != 0)
        rc = mrd_fail(msg, MRD_ENOMEM, "agent: out of memory for the backlog");
    if (rc == 0) rc = a->primary ? ag_primary_start(a, msg) : ag_secondary_start(a, msg);
    uv_timer_init(node->loop, &a->soon);
    a->soon.data = a;
    if (rc == 0) rc = ag_region_start(a, msg);
    if (rc != 0) return rc;
    uv_timer_init(node->loop, &a->tick);
    a->tick.data = a;
    uv_timer_start(&a->tick, on_tick, AG_TICK_MS, AG_TICK_MS);
    node->status_fn = status_fn;
    node->status_ud = a;
    node->req_close_fn = req_close_fn;
    node->req_close_ud = a;
    node->stop_fn = stop_fn;
    node->stop_ud = a;
    node->ready_fn = ready_fn;
    node->ready_ud = a;
    MRD_INFO("agent_start", "role=%s region=%s", a->primary ? "primary" : "secondary",
             a->region->name);
    *out = a;
    return 0;
}
