/*
 * reader: a region's read-only instance (`meridiand --role reader`).
 *
 * A reader runs read-only SQLite over the region's volume through the
 * Meridian VFS. It holds some pages in memory and keeps them current from
 * the writer's log stream (GET /v1/log on the writer): records arrive ahead
 * of the writer's durability marks; once a mark says VDL reached L, the
 * records up to L are applied — to the pages the reader holds; records of
 * other pages are dropped (they are read from storage when needed). A page it
 * does not hold is read from one storage node whose segment is complete up to
 * what the read needs (GET /v1/page, 409 incomplete sends it to the next).
 *
 * Each read transaction pins one read point, the VDL applied so far; nothing
 * is applied while a transaction runs, so it sees whole commits only. The
 * lag behind the writer is measured with the reader's own clock: the age of
 * the oldest durability mark not yet applied (0 when caught up), and in LSN,
 * the writer's last VDL minus the applied one. While the stream is down the
 * lag grows from the moment it went down. A restarted reader, or one whose
 * stream broke, starts over from the writer's VDL of that moment with an
 * empty cache: it catches up by itself.
 *
 * The part that decides what is applied, what a read sees and what lag is
 * reported is rd_core, I/O-free and unit-tested; the glue around it (the
 * stream, storage reads, the SQL route) is thin.
 */
#ifndef MERIDIAN_READER_H
#define MERIDIAN_READER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/node.h"
#include "meridian/region.h"
#include "meridian/quorum.h"
#include "meridian/wire.h"

#define RD_CACHE_PAGES_DEFAULT 16384u     /* pages held */
#define RD_PENDING_RECORDS_MAX 262144u    /* records received and not yet applied */
#define RD_PENDING_BYTES_MAX (256u << 20)
#define RD_MARKS_MAX 4096u                /* durability marks not yet applied */

/* ---- rd_core: the reader's state, I/O-free ------------------------------------------- */

typedef struct rd_core rd_core;

int rd_core_new(uint32_t page_size, uint64_t pages_per_pg, uint32_t cache_pages, rd_core **out,
                mrd_msg *msg);
void rd_core_free(rd_core *c);

/* The stream (re)started at the writer's vdl: everything held is dropped. */
void rd_core_reset(rd_core *c, uint64_t vdl, uint64_t epoch, uint64_t now_ms);
/* The stream went down at now_ms: lag counts from here until the next reset. */
void rd_core_stream_down(rd_core *c, uint64_t now_ms);
/* A record from the stream (encoded, copied). MRD_EPROTO if it is not the next LSN after the
 * last one received, MRD_ETOOBIG beyond the pending limits: start the stream over. */
int rd_core_record(rd_core *c, const wire_record *rec, const uint8_t *enc, size_t len);
/* A durability mark; MRD_EPROTO if it goes back or passes records not received. */
int rd_core_mark(rd_core *c, uint64_t vdl, uint64_t lsn_last, uint64_t now_ms);
/* Applies what marks made durable, unless a read transaction is pinned; returns records applied. */
uint32_t rd_core_apply(rd_core *c, uint64_t now_ms);

/* A read transaction: the read point (applied VDL); applying stops until unpin. */
uint64_t rd_core_pin(rd_core *c);
void rd_core_unpin(rd_core *c);

/* A held page's bytes at the pinned read point into out: true when held. */
bool rd_core_page(rd_core *c, uint64_t page, uint8_t *out);
/* A page read from storage at read_point; kept if the read point is still current. */
void rd_core_page_put(rd_core *c, uint64_t page, uint64_t read_point, const uint8_t *data);
/*
 * The LSN a storage read of pg at the current read point needs its segment
 * complete to (the PG's last record at or below it): true and *need when
 * known, false when the PG's head at the stream's starting point must first
 * be learned from a read quorum. Every record applied since then moves it on.
 */
bool rd_core_need(rd_core *c, uint32_t pg, uint64_t *need);
/* Where the stream (re)started: heads are asked for at this LSN. */
uint64_t rd_core_reset_vdl(rd_core *c);
/* The stream is up and (re)started at reset_vdl (not since restarted, nor down). */
bool rd_core_started_at(rd_core *c, uint64_t reset_vdl);
/* The first PG below pgs whose head is not known yet. */
bool rd_core_heads_missing(rd_core *c, uint32_t pgs, uint32_t *pg);
/* What a read quorum said the head of pg is at the reset point (ignored for an older one). */
void rd_core_set_head(rd_core *c, uint32_t pg, uint64_t reset_vdl, uint64_t head);

typedef struct {
    uint64_t applied_vdl; /* the read point for the next transaction */
    uint64_t writer_vdl;  /* the last VDL the writer announced */
    uint64_t lag_ms;
    uint64_t lag_lsn;
    uint64_t epoch;
    uint64_t records_applied, records_dropped, pages_held, resets;
    uint32_t pins;        /* read transactions running: nothing is applied meanwhile */
    uint64_t received;    /* the last LSN received from the stream */
    bool stream_up;
} rd_stats;

void rd_core_stats(rd_core *c, uint64_t now_ms, rd_stats *out);

/* ---- the role --------------------------------------------------------------------------- */

typedef struct reader reader;

int reader_start(mrd_node *node, reader **out, mrd_msg *msg);
/* The region's state changed: the log's source and the primary's writer follow it; a
 * reader that became the region's writer restarts as the writer (mrd_node_restart). */
void reader_region_changed(reader *r, const rg_state *st);

#endif
