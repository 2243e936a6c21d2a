/*
 * What a storage node adds to GET /v1/status and GET /metrics
 * (docs/storage-protocol.md lists the fields).
 */
#include <inttypes.h>
#include <stdio.h>

#include "storage_int.h"

void storage_status(mrd_node *node, mrd_buf *out, void *ud)
{
    storage *s = ud;
    uint64_t scl_min = 0, records = 0;
    bool any = false;
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        const stp *p = s->pgs[pg];
        if (p == NULL) continue;
        uint64_t scl = stp_scl(p);
        if (!any || scl < scl_min) scl_min = scl;
        any = true;
        records += stp_records(p);
    }
    mrd_buf_printf(out,
                   ",\"epoch\":%" PRIu64 ",\"segment\":%u,\"scl\":%" PRIu64 ",\"vdl\":%" PRIu64
                   ",\"records\":%" PRIu64 ",\"log_failed\":%s",
                   s->epoch, s->seg, scl_min, s->vdl, records, s->failed ? "true" : "false");
    if (s->failed) {
        mrd_buf_printf(out, ",\"log_failed_reason\":");
        mrd_json_quote(out, s->failed_why);
    }
    mrd_buf_printf(out, ",\"pgs\":[");
    const char *sep = "";
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        const stp *p = s->pgs[pg];
        if (p == NULL) continue;
        mrd_buf_printf(out,
                       "%s{\"pg\":%" PRIu32 ",\"scl\":%" PRIu64 ",\"durable\":%" PRIu64
                       ",\"records\":%" PRIu32 ",\"materialized\":%" PRIu64
                       ",\"forgotten\":%" PRIu64 "}",
                       sep, pg, stp_scl(p), stp_lsn_durable(p), stp_records(p), p->materialized,
                       stp_base(p));
        sep = ",";
    }
    mrd_buf_printf(out, "]");
}

void storage_metrics_init(storage *s)
{
    mrd_metrics *m = &s->node->metrics;
    s->m_records = mrd_metric_add(m, MRD_COUNTER, "meridian_storage_records_received_total", NULL,
                                  "Records received in appends (duplicates included).");
    s->m_bytes = mrd_metric_add(m, MRD_COUNTER, "meridian_storage_bytes_received_total", NULL,
                                "Bytes of append bodies received.");
    s->m_fsync_batches = mrd_metric_add(m, MRD_COUNTER, "meridian_storage_fsync_batches_total",
                                        NULL, "Batches of log entries written and fdatasync'd.");
    s->m_fsync_seconds = mrd_metric_add(m, MRD_HISTOGRAM, "meridian_storage_fsync_seconds", NULL,
                                        "Time to write and fdatasync one batch.");
    s->m_gap_records = mrd_metric_add(m, MRD_COUNTER, "meridian_storage_gap_fill_records_total",
                                      NULL, "New records obtained from peers by gap filling.");
    s->m_stale = mrd_metric_add(m, MRD_COUNTER, "meridian_storage_stale_epoch_refusals_total",
                                NULL, "Requests refused with 409 stale_epoch.");
    storage_metrics_update(s);
}

void storage_metrics_update(storage *s)
{
    for (uint32_t pg = 0; pg < QUORUM_PGS_MAX; pg++) {
        if (s->pgs[pg] == NULL) continue;
        char labels[32];
        snprintf(labels, sizeof(labels), "pg=\"%" PRIu32 "\"", pg);
        mrd_metric *m = mrd_metric_add(&s->node->metrics, MRD_GAUGE, "meridian_storage_scl",
                                       labels, "The segment's SCL for each PG it holds.");
        mrd_metric_set(m, (double)stp_scl(s->pgs[pg]));
    }
}
