/*
 * volume: the writer side of one region's quorum-replicated volume — the
 * client that turns page writes into log records on the six storage nodes
 * (docs/storage-protocol.md is the contract with them).
 *
 * A vol runs on one libuv loop. vol_open connects to the region's six
 * storage nodes over HTTP/2 (one connection each, reconnected with backoff),
 * recovers the volume from a read quorum (reports of every protection group
 * from >= 3 nodes, quorum_recover), fences it at epoch_max + 1 with the
 * recovered VCL as truncation point (on >= 4 nodes; the others get the fence
 * when they come back, before any append) and then calls on_ready. From then
 * on vol_write turns a new page image into one log record — a delta against
 * the writer's cached previous version of the page, a full image only when
 * there is no base — with the next LSN, the PG back-link, the volume
 * back-link and this writer's epoch, and hands it to the writer core (qw_*,
 * quorum.h), which decides where records go and when they are durable.
 * The glue here groups the core's SEND actions per (node, PG) into append
 * batches, many in flight on each connection, feeds every answer back as an
 * ack, re-sends after reconnects and on a timer, and calls vol_wait
 * callbacks once VDL passes their LSN. Reads go to one complete segment
 * (qw_read_segment) and fall back to the others on 409 incomplete.
 *
 * Guarantees:
 * - nothing leaves inside vol_write: records are sent from the loop's
 *   prepare phase, so a caller may log a record's LSN after vol_write
 *   returns and before the record reaches any node;
 * - a write is never reported durable before 4 of the 6 segments of its PG
 *   hold it and every record below it is durable (VDL, from qw);
 * - when no write quorum exists writes wait, for as long as it takes; the
 *   only errors are the ones that are final: a newer writer fenced this one
 *   (a node answered stale_epoch: everything stops, on_error says who), a
 *   node refused our bytes as malformed, or memory ran out;
 * - every queue is bounded (VOL_* limits below and in vol_config); beyond,
 *   calls fail with MRD_EBUSY instead of growing.
 *
 * Ownership: a vol owns its connections, timers and buffers; vol_close
 * releases them asynchronously. Callbacks run on the loop and may call back
 * into the vol, vol_close included (no callback of that vol runs after it).
 *
 * The lower half of this header holds the I/O-free parts the glue is built
 * from (batching, the record store, the page cache, answer classification,
 * report decoding); they are tested on their own in tests/unit/volume.
 */
#ifndef MERIDIAN_VOLUME_H
#define MERIDIAN_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/common.h"
#include "meridian/quorum.h"
#include "meridian/topo.h"
#include "meridian/wire.h"

/* ---- limits and timings ------------------------------------------------------------------ */

#define VOL_INFLIGHT_MAX_DEFAULT 4096u     /* records above VCL */
#define VOL_RETAIN_MAX_DEFAULT 8192u       /* durable records kept to re-send to laggards */
#define VOL_BATCH_RECORDS_MAX_DEFAULT 512u /* records in one append */
#define VOL_BATCH_BYTES_MAX_DEFAULT (1u << 20)
#define VOL_CACHE_PAGES_DEFAULT 8192u      /* cached page versions (bases for deltas) */
#define VOL_WAITERS_MAX_DEFAULT 8192u      /* pending vol_wait callbacks */
#define VOL_APPENDS_PER_NODE_MAX 64u       /* appends in flight on one connection */
#define VOL_CALLS_PER_NODE_MAX 128u        /* reports, fences, page reads in flight per node */
#define VOL_READS_MAX 1024u                /* vol_read / vol_fetch in flight */
#define VOL_TICK_MS 100u                   /* re-send timer period */
#define VOL_RESEND_MS 1000u                /* re-send what stayed unacknowledged this long */
#define VOL_BACKOFF_MS_MIN 50u             /* reconnect backoff: doubles from here ... */
#define VOL_BACKOFF_MS_MAX 1000u           /* ... up to here */
#define VOL_RECOVER_WAIT_MS 1000u          /* wait this long for all six before recovering from >= 3 */
#define VOL_SCL_POLL_MS 200u               /* reports polled for SCLs while recovered heads wait */
#define VOL_READ_RETRY_MS 50u              /* all segments incomplete: ask again after this */
#define VOL_READ_TIMEOUT_MS 15000u         /* a read gives up after this */
#define VOL_CALL_TIMEOUT_MS 10000u         /* one request without an answer: the connection is dropped */

/* ---- the volume client -------------------------------------------------------------------- */

typedef struct vol vol;

typedef struct {
    const topology *topo;
    int region;            /* index into topo->regions */
    const char *certs_dir; /* ca.crt, cli.crt, cli.key when topo->tls */
    const char *cert_id;   /* certificate name in certs_dir; NULL: "cli" */
    uint32_t pg_count_min; /* PGs this writer will write (pages it uses); recovery covers more if found */
    uint32_t inflight_max; /* 0: defaults for every limit left 0 */
    uint32_t retain_max;
    uint32_t batch_records_max;
    uint32_t batch_bytes_max;
    uint32_t cache_pages_max;
    uint32_t waiters_max;
    /* The lowest epoch to run at: a writer claims max(epoch_max + 1, epoch_min); a replica
     * fences a volume that holds records at max(epoch_max, epoch_min), so that no writer
     * of an older global epoch can add to it. 0: no floor. */
    uint64_t epoch_min;
    /* Replica: the floor applies only to a volume whose chain reaches this LSN (the
     * history below it was written at older epochs and may still be arriving). */
    uint64_t epoch_min_lsn;
} vol_config;

typedef struct {
    /* Recovered and fenced (status 0), or could not be (status < 0, msg says why). */
    void (*on_ready)(vol *v, int status, const char *msg, void *ud);
    /* VDL moved up to vdl. */
    void (*on_vdl)(vol *v, uint64_t vdl, void *ud);
    /* A final error after on_ready: fenced by a newer writer (MRD_ESTALE), refused bytes
     * (MRD_EPROTO), out of memory. The vol writes nothing more; close it. */
    void (*on_error)(vol *v, int err, const char *msg, void *ud);
    /* Optional: vol_write made record lsn (its encoding, valid during the call). The
     * writer streams these to its readers. Called inside vol_write; may not call vol_write. */
    void (*on_record)(vol *v, uint64_t lsn, const uint8_t *data, size_t len, void *ud);
} vol_cbs;

/* What recovery found and what this writer runs at. */
typedef struct {
    uint64_t epoch;        /* this writer's epoch (epoch_max + 1) */
    uint64_t vcl;          /* recovered VCL: the truncation point */
    uint64_t vdl;          /* recovered VDL */
    uint64_t lost_max;     /* highest LSN seen above the VCL (discarded), 0 if none */
    uint64_t first_lsn;    /* the LSN of this writer's first record */
    uint32_t pg_count;     /* PGs tracked */
    uint32_t reporters;    /* nodes whose reports recovery used */
    uint64_t floor;        /* recovery's floor: round two read the headers above it */
    uint64_t headers;      /* record headers round two read */
    uint64_t epoch_found;  /* the highest epoch recovery saw on storage */
} vol_info;

typedef struct {
    uint64_t records;   /* records written */
    uint64_t appends;   /* append requests answered 200 */
    uint64_t append_records;
    uint64_t append_failures;
    uint64_t reconnects;
    uint64_t reads;
    uint64_t read_fallbacks; /* reads answered 409 incomplete and sent to another segment */
    uint64_t cache_misses;
} vol_stats;

int vol_open(uv_loop_t *loop, const vol_config *cfg, const vol_cbs *cbs, void *ud, vol **out,
             mrd_msg *msg);
/* Stops everything; done (may be NULL) runs once every handle has closed and v is freed. */
void vol_close(vol *v, void (*done)(void *ud), void *ud);

const vol_info *vol_info_get(const vol *v);
const vol_stats *vol_stats_get(const vol *v);
uint64_t vol_vdl(const vol *v);
uint64_t vol_vcl(const vol *v);
uint32_t vol_page_size(const vol *v);
/* Storage nodes currently connected and fenced. */
uint32_t vol_nodes_up(const vol *v);

/*
 * Writes page `page` as `image` (page_size bytes): one record, the next LSN
 * in *lsn, CPL when end_of_txn. The previous version must be cached (it is
 * after vol_fetch of the page or a write to it; a page of a PG never written
 * needs no fetch): otherwise MRD_ENOTFOUND. MRD_EBUSY beyond inflight_max
 * records above VCL or when the cache holds only pages with writes above VDL;
 * MRD_ESTATE before on_ready or after a final error. Nothing is sent before
 * the function returns.
 */
int vol_write(vol *v, uint64_t page, const uint8_t *image, bool end_of_txn, uint64_t *lsn,
              mrd_msg *msg);

/* Calls cb once VDL >= lsn (right away, from the loop, when it is already). */
typedef void (*vol_wait_cb)(vol *v, uint64_t lsn, void *ud);
int vol_wait(vol *v, uint64_t lsn, vol_wait_cb cb, void *ud);

/* A read's result: status 0 and the page (page_size bytes, valid during the call), or an error. */
typedef void (*vol_read_cb)(vol *v, int status, uint64_t page, const uint8_t *data,
                            const char *msg, void *ud);
/* Page `page` as of `lsn` from one complete segment (others on 409 incomplete). */
int vol_read(vol *v, uint64_t page, uint64_t lsn, vol_read_cb cb, void *ud);
/* The writer's current version of the page (its base for the next delta): from the
 * cache, or read from storage at the read point and cached. */
int vol_fetch(vol *v, uint64_t page, vol_read_cb cb, void *ud);

/* ---- replica mode (src/volume/replica.c) -------------------------------------------------- */

/*
 * A replica writes another region's committed log into this region's volume:
 * the records arrive already encoded, with the primary's LSNs, epochs and
 * back-links, and are stored as they are (no delta computation, no LSN of
 * its own). vol_replica_open recovers the volume like vol_open but never
 * claims a new epoch: it fences the local storage at the highest epoch it
 * found, truncating at the recovered restart point (records above it from an
 * older epoch are voided; the primary sends them again), and is ready at four
 * fenced nodes (at once for a volume never written). A record of a newer
 * epoch than the replica's waits until everything submitted is durable, then
 * fences the local storage at that epoch (truncate = the last record) and is
 * taken once four nodes have the fence: until then submits answer MRD_EBUSY.
 * on_ready runs again each time such a fence completes. vol_write and
 * vol_fetch are not for replicas.
 */
int vol_replica_open(uv_loop_t *loop, const vol_config *cfg, const vol_cbs *cbs, void *ud,
                     vol **out, mrd_msg *msg);
/*
 * Submits one of the primary's records, encoded as enc (wire_record_encode of rec).
 * rec must continue the local chain: rec->vol_prev_lsn == vol_replica_head() and
 * rec->prev_lsn the last record of its PG (MRD_EINVAL otherwise, and for a page outside
 * the volume). MRD_EBUSY: in flight limit, or an epoch change under way; try again after
 * on_vdl or on_ready. MRD_ESTALE: an epoch below the replica's. MRD_ESTATE: not ready.
 */
int vol_replica_submit(vol *v, const wire_record *rec, const uint8_t *enc, size_t len,
                       mrd_msg *msg);
/* The last record of the local chain: where the primary resumes (0 for an empty volume). */
uint64_t vol_replica_head(const vol *v);
/* The local VDL, never going back across epoch changes. */
uint64_t vol_replica_vdl(const vol *v);
/* The epoch the local storage is fenced at (0 for a volume never written). */
uint64_t vol_replica_epoch(const vol *v);

/* ---- I/O-free parts ------------------------------------------------------------------------ */

/* PG of a page, given the topology's sizes. */
static inline uint32_t vol_pg_of(uint64_t page, uint64_t pages_per_pg)
{
    return (uint32_t)(page / pages_per_pg);
}

/* Reconnect backoff after `failures` consecutive failures (0: the first attempt). */
uint64_t vol_backoff_ms(uint32_t failures);

/* A strict unsigned decimal (no sign, no spaces, no overflow): 0 or MRD_EPARSE. */
int vol_parse_u64(const char *text, uint64_t *out);

/* How the glue treats a storage node's answer. */
typedef enum {
    VOL_ANS_OK,         /* 200 */
    VOL_ANS_STALE,      /* 409 stale_epoch: a newer writer exists; stop */
    VOL_ANS_FENCE,      /* 409 fence_required: send the fence, then retry */
    VOL_ANS_INCOMPLETE, /* 409 incomplete: read from another segment */
    VOL_ANS_GONE,       /* 410 gone */
    VOL_ANS_RETRY,      /* 503 busy, other 5xx: the request may be sent again later */
    VOL_ANS_LOG_FAILED, /* 503 log_failed: the node takes no writes until it restarts */
    VOL_ANS_BAD,        /* 400 or anything unexpected: our request was refused */
} vol_answer;

/* Classifies an answer from its status and JSON error body; code gets the error code. */
vol_answer vol_answer_classify(int status, const uint8_t *body, size_t len, char *code,
                               size_t code_len);
const char *vol_answer_name(vol_answer a);

/*
 * Pending sends: the LSNs qw asked to send, per (segment, PG), each queue in
 * ascending LSN order without duplicates, so that one append carries a run
 * of one PG's records in order. pending_max bounds the LSNs queued for one
 * segment (MRD_EBUSY beyond).
 */
typedef struct {
    uint64_t *lsns;
    uint32_t n, cap;
} vol_lsnq;

typedef struct {
    uint32_t pg_count;
    uint32_t pending_max;
    vol_lsnq q[QUORUM_SEGMENTS][QUORUM_PGS_MAX];
    uint32_t pending[QUORUM_SEGMENTS];
    uint32_t cursor[QUORUM_SEGMENTS]; /* round robin over PGs */
} vol_batcher;

int vol_batcher_init(vol_batcher *b, uint32_t pg_count, uint32_t pending_max, mrd_msg *msg);
void vol_batcher_close(vol_batcher *b);
/* Queues lsn for (seg, pg); a duplicate is ignored. */
int vol_batcher_add(vol_batcher *b, uint8_t seg, uint32_t pg, uint64_t lsn);
/* Forgets everything queued for seg (its connection went down). */
void vol_batcher_drop(vol_batcher *b, uint8_t seg);
uint32_t vol_batcher_pending(const vol_batcher *b, uint8_t seg);
/* The next PG of seg with something queued, round robin; false when none. */
bool vol_batcher_next_pg(vol_batcher *b, uint8_t seg, uint32_t *pg);
/* Bytes of an encoded record, 0 when it is no longer kept (it is then skipped). */
typedef uint32_t (*vol_size_fn)(void *ctx, uint64_t lsn);
/*
 * Takes the oldest LSNs of (seg, pg) into out: at most records_max, and at
 * most bytes_max bytes (but always at least one record). Returns how many.
 */
uint32_t vol_batcher_take(vol_batcher *b, uint8_t seg, uint32_t pg, uint32_t records_max,
                          uint32_t bytes_max, vol_size_fn size, void *ctx, uint64_t *out);

/*
 * The encoded records this writer may still send, by LSN: consecutive LSNs,
 * the newest `cap`. Putting into a full store drops the oldest record if it
 * is at or below vcl (durable, retained only for laggards), else MRD_EBUSY.
 */
typedef struct {
    mrd_buf *slots;
    uint32_t cap;
    uint32_t count;
    uint64_t first; /* LSN in the oldest slot */
    uint32_t head;  /* slot of the oldest */
} vol_store;

int vol_store_init(vol_store *s, uint32_t cap, mrd_msg *msg);
void vol_store_close(vol_store *s);
/* lsn must be the one after the newest (any LSN when empty). */
int vol_store_put(vol_store *s, uint64_t lsn, const uint8_t *data, size_t len, uint64_t vcl);
const mrd_buf *vol_store_get(const vol_store *s, uint64_t lsn);

/*
 * The writer's page versions: the base of the next delta of each cached
 * page. An entry whose last write is above VDL is pinned (its version exists
 * nowhere durable yet, and a read from storage at VDL would miss it); the
 * least recently used unpinned entry makes room for a new one.
 */
typedef struct {
    uint64_t page;
    uint64_t last_lsn; /* LSN of the last write of the page this writer made (0: none) */
    uint64_t used;     /* LRU clock */
    bool live;
} vol_cache_entry;

typedef struct {
    uint32_t pages_max;
    uint32_t page_size;
    uint32_t count;
    uint64_t clock;
    vol_cache_entry *entries; /* pages_max */
    uint8_t *data;            /* pages_max * page_size */
    uint32_t *index;          /* open addressing: entry + 1, 0 = empty */
    uint32_t index_cap;       /* power of two >= 2 * pages_max */
} vol_cache;

int vol_cache_init(vol_cache *c, uint32_t pages_max, uint32_t page_size, mrd_msg *msg);
void vol_cache_close(vol_cache *c);
/* The cached version of page, or NULL. */
const uint8_t *vol_cache_get(vol_cache *c, uint64_t page);
/*
 * Stores data as the page's version, written by this writer at last_lsn (0:
 * read from storage). MRD_EBUSY when the cache is full and every entry is
 * pinned (last_lsn above vdl).
 */
int vol_cache_put(vol_cache *c, uint64_t page, const uint8_t *data, uint64_t last_lsn,
                  uint64_t vdl);

/* Response header lookup for vol_report_decode. */
typedef const char *(*vol_header_fn)(void *ctx, const char *name);

/*
 * A storage node's answer to GET /v1/report for (pg, seg): the header fields
 * into *out and the record headers of the body (frames of header-only
 * batches) into a malloc'd array out->hdrs (free it; NULL when none), at most
 * hdrs_max. Every field is checked: MRD_EPARSE / MRD_EPROTO with a message.
 */
int vol_report_decode(uint32_t pg, uint8_t seg, vol_header_fn hdr, void *ctx,
                      const uint8_t *body, size_t len, uint32_t hdrs_max, quorum_report *out,
                      mrd_msg *msg);

/*
 * How many PGs recovery covers, from round-one reports (every report of a
 * node for PGs 0..QUORUM_PGS_MAX-1): when all six nodes reported every PG,
 * the PGs up to the highest one any node holds anything of (nothing exists
 * beyond it anywhere); otherwise all QUORUM_PGS_MAX (a PG empty on the
 * reporters may hold records on the others). Never below pg_min, never 0.
 */
uint32_t vol_recover_pg_count(const quorum_report *reports, uint32_t n, uint32_t pg_min);

/*
 * Marks in empty[] the PGs below pg_count that all six nodes reported holding
 * nothing (none, unless all six reported). Such a PG has no record anywhere;
 * one written later lies above every LSN reported, so above the restart
 * point, and the new writer's fence voids it.
 */
void vol_recover_empty_pgs(const quorum_report *reports, uint32_t n, uint32_t pg_count,
                           bool empty[QUORUM_PGS_MAX]);
/*
 * Gives the reports of empty PGs scl = highest = floor: a PG without records
 * is complete at any LSN, so it does not hold the floor down to 0 (the
 * floor is the lowest of the PGs' highest SCLs, and round two reads every
 * header above it). MRD_ESTATE when such a PG now holds records: someone
 * is writing the volume during recovery.
 */
int vol_recover_mask_empty(quorum_report *reports, uint32_t n, const bool empty[QUORUM_PGS_MAX],
                           uint64_t floor);

#endif
