/*
 * storage: the storage node role (`meridiand --role storage`), one segment of
 * every protection group (PG) of its region's volume. docs/storage-protocol.md
 * is the contract with the writer; docs/storage-format.md gives the files.
 *
 * What a storage node owns, in DATA/ID/:
 *  - seglog/: the segment log (seglog.h), the durable truth. Records arrive
 *    in any LSN order (gap fill brings old ones late), and seglog needs
 *    strictly increasing keys, so an entry's key is the node's append
 *    sequence ("log key") and its payload the encoded wire record.
 *  - meta: the metadata file (seglog_meta): epoch, reported VDL, the first
 *    log key a start must read, fences, per-PG segment index, SCL,
 *    materialized LSN and forget point, replaced atomically.
 *  - pages/pg-P.pages: materialized page versions, a cache rebuilt from the
 *    log: two checksummed slots per page, written alternately, so a crash
 *    while one is written leaves the other.
 *  - RESET: present only while a reset (POST /v1/reset) is under way. It is
 *    made durable before anything is deleted, and a start that finds it
 *    deletes the data files before it loads anything, then removes it: a node
 *    is either untouched or empty, never half-reset.
 *
 * What it guarantees:
 *  - an append is answered (wire_ack, with the SCL) only once every record
 *    of it is durable: one fdatasync per batch of log entries, run on a
 *    libuv worker while the loop gathers the next batch (group commit); an
 *    fdatasync or write error fails the log for good (503 log_failed until
 *    a restart recovers from what the disk really holds);
 *  - a fence is on disk (metadata file) before it is answered or applied;
 *    records it voids are dropped in memory and skipped when the log is
 *    read back;
 *  - SCL counts only durable records chained by back-links (seg_chain, in
 *    quorum.h, is the one place that decides it); gaps are filled from
 *    peer segments (GET /v1/records) on a timer, without the writer;
 *  - a page is served as of LSN L only when the segment is complete up to
 *    what the read needs, from the page file plus the records above it;
 *  - only records at or below both the SCL and a VDL some writer reported
 *    are materialized: those are committed, and no fence can void them;
 *  - memory stays bounded: records at or below the materialized LSN, the
 *    SCL and the reported VDL are forgotten (seg_chain's FORGET); peers get
 *    them back from the log, reports refuse floors below them
 *    (floor_forgotten), and appends leave a reserve for gap filling so that
 *    a segment full of records above a gap still takes those under it.
 *
 * The protocol logic is I/O-free: stp_* (one PG's segment: the seg_chain,
 * the record index with payloads, the mapping from the chain's persist
 * sequence to log keys, the materialization plan) and the parsers below,
 * tested in tests/unit/storage. The glue (the rest of src/storage) performs what
 * they decide with libuv, seglog and h2, on the node's one loop; blocking
 * file work (fdatasync, page-file writes, metadata replacement) runs on
 * the libuv thread pool.
 */
#ifndef MERIDIAN_STORAGE_H
#define MERIDIAN_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"
#include "meridian/node.h"
#include "meridian/quorum.h"
#include "meridian/wire.h"

/* ---- limits and timings -------------------------------------------------------------- */

#define STORAGE_HELD_MAX_DEFAULT (1u << 19)          /* records one PG's segment holds */
#define STORAGE_PAYLOAD_BYTES_MAX_DEFAULT (512u << 20) /* unmaterialized record bytes in memory */
#define STORAGE_BATCH_BYTES_MAX (32u << 20)          /* log bytes staged for one fdatasync */
#define STORAGE_TICK_MS 50u                          /* gap-fill and housekeeping timer */
#define STORAGE_GAP_RETRY_MS_DEFAULT 200u            /* seg_chain gap_retry_ms */
#define STORAGE_GAP_CALLS_PER_PG_MAX 4u              /* gap-fill requests in flight per PG */
#define STORAGE_TAIL_BACKOFF_MS_MAX 3200u            /* asks above the top, when peers had none */
#define STORAGE_PEER_BACKOFF_MS 500u                 /* after a failed connection to a peer */
#define STORAGE_MATERIALIZE_MS 100u                  /* how often a materialization may start */
#define STORAGE_MATERIALIZE_RECORDS_MAX 8192u        /* records one materialization applies */
#define STORAGE_MATERIALIZE_BYTES_MAX (16u << 20)    /* payload bytes it copies */
#define STORAGE_META_REFRESH_MS 1000u                /* rewrite metadata this often when SCLs moved */
#define STORAGE_QUERY_BYTES_MAX 512u                 /* a request's path with its query */
#define STORAGE_PEER_BODY_BYTES_MAX (WIRE_FRAME_BYTES_MAX + WIRE_FRAME_HEADER_BYTES)
#define STORAGE_PAGE_FILE_HEADER_BYTES 4096u          /* docs/storage-format.md */
#define STORAGE_SLOT_HEADER_BYTES 16u                 /* lsn, crc, page size */
#define STORAGE_OLD_RANGES_MAX 256u                   /* forgotten LSN ranges kept per PG */
#define STORAGE_HELD_MAX_ENV "MERIDIAN_STORAGE_HELD_MAX" /* overrides the default held_max */
#define STORAGE_RESET_BODY_BYTES_MAX 1024u /* a POST /v1/reset body */
#define STORAGE_RESET_RESTART_MS 100u      /* from the reset answer's stream close to the restart */
#define STORAGE_RESET_ANSWER_WAIT_MS 2000u /* restart anyway if that stream never closes */

/* Names in the node's data folder (DATA/ID/). */
#define STORAGE_META_FILE "meta"
#define STORAGE_LOG_DIR "seglog"
#define STORAGE_PAGES_DIR "pages"
#define STORAGE_RESET_FILE "RESET"

/* ---- the role ------------------------------------------------------------------------- */

typedef struct storage storage;

typedef struct {
    uint32_t held_max;          /* 0: STORAGE_HELD_MAX_DEFAULT */
    uint64_t payload_bytes_max; /* 0: STORAGE_PAYLOAD_BYTES_MAX_DEFAULT */
    uint64_t gap_retry_ms;      /* 0: STORAGE_GAP_RETRY_MS_DEFAULT */
} storage_options;

/*
 * Opens the node's files (recovering the log, reading every entry back into
 * the segment chains), registers the storage routes and the status, close
 * and stop hooks on node, and starts the timers. Call after mrd_node_init and
 * before mrd_node_run. The storage frees itself once the node stops.
 */
int storage_start(mrd_node *node, const storage_options *opts, mrd_msg *msg);

/* ---- one PG's segment on a node (I/O-free) --------------------------------------------- */

/* A record as the node holds it. */
typedef struct {
    uint64_t lsn;
    uint64_t page;     /* volume-wide page index */
    uint64_t key;      /* its log key (the seglog entry's LSN) */
    uint8_t *payload;  /* the encoded record; NULL once materialized (then read from the log) */
    uint32_t len;      /* payload bytes */
} stp_rec;

/* A persist the chain asked for, waiting for the fdatasync of its log key. */
typedef struct {
    uint64_t seq; /* the chain's PERSIST id */
    uint64_t key;
    uint64_t lsn;
} stp_pending;

/*
 * Forgotten records of one PG, for serving them back from the log: those with
 * an LSN in (lsn_after, lsn_upto] lie at log keys in [key_min, key_max].
 */
typedef struct {
    uint64_t lsn_after, lsn_upto;
    uint64_t key_min, key_max;
} stp_old;

/* A range to ask a peer for: records in (after, upto]. */
typedef struct {
    uint64_t after;
    uint64_t upto;
} stp_gap;

typedef struct {
    uint32_t pg;
    uint8_t seg;
    uint32_t held_max;
    uint64_t gap_retry_ms;
    uint64_t epoch;             /* the node's epoch */
    const quorum_fence *fences; /* the node's fences */
    uint32_t n_fences;
    uint64_t materialized; /* from metadata: records at or below are in the page file */
    uint64_t key_durable;  /* log keys at or below are durable (the log's state at start) */
    uint64_t base;         /* from metadata: the forget point (<= materialized; 0: none) */
    uint64_t base_cpl;     /* the last CPL at or below it */
    uint64_t base_key_max; /* log keys below the metadata's key start: where the records
                              at or below base are (those above it are read back) */
} stp_config;

/* One PG's segment. Embed it; fields are private to src/storage. */
typedef struct {
    seg_chain chain;
    uint32_t pg;
    uint8_t seg;
    uint32_t held_max;
    stp_rec *recs; /* ascending LSN: exactly the records the chain holds */
    uint32_t n_recs, cap_recs;
    stp_pending *pending; /* ascending seq and key */
    uint32_t n_pending, cap_pending;
    uint64_t key_durable;
    uint64_t lsn_durable; /* highest durable LSN held */
    uint64_t materialized;
    uint64_t payload_bytes; /* bytes of payloads held */
    stp_old old[STORAGE_OLD_RANGES_MAX]; /* forgotten ranges, ascending, contiguous */
    uint32_t n_old;
    /* What the chain asked for during the current step (the sink fills these). */
    uint64_t step_persist_seq;
    stp_gap *step_gaps;
    uint32_t step_gaps_n, step_gaps_max;
    const stp_rec **step_serve;
    uint32_t step_serve_n, step_serve_max;
    stp_gap step_old; /* SERVE_OLD: the range the log must answer */
} stp;

int stp_init(stp *p, const stp_config *cfg, mrd_msg *msg);
void stp_close(stp *p);

/*
 * A record read back from the log at start (durable, under log key key).
 * Returns 0 (held, a duplicate, or at or below the forget point: then its key
 * is noted for serving it from the log), MRD_ESTALE (a fence voids it: skip it),
 * or seg_chain_step's other errors. The payload is copied when the record
 * lies above the materialized LSN.
 */
int stp_load(stp *p, const quorum_rec *q, uint64_t page, uint64_t key, const uint8_t *payload,
             size_t len);

/*
 * A record from a writer or a peer. Returns seg_chain_step's result. On 0:
 * *new_key is next_key when the record is new (the caller appends payload to
 * the log under that key) and 0 for a duplicate; *wait_key is the log key
 * whose fdatasync makes the record durable (0 when it already is).
 */
int stp_receive(stp *p, const quorum_rec *q, uint64_t page, const uint8_t *payload, size_t len,
                uint64_t next_key, uint64_t *new_key, uint64_t *wait_key);

/* Every log key at or below key_durable is on disk: the chain learns which persists. */
void stp_synced(stp *p, uint64_t key_durable);

/* Applies a fence the node has made durable; *voided_materialized is set when it voided
 * a record at or below the materialized LSN (which a true VDL never allows). */
void stp_fence(stp *p, quorum_fence f, bool *voided_materialized);

/* Time passes: the ranges to ask peers for (at most max). */
uint32_t stp_tick(stp *p, uint64_t now_ms, stp_gap *gaps, uint32_t max);

/* A peer's gap request: the durable records in (after, upto], ascending, at most
 * QUORUM_SERVE_MAX (and max). When the range starts below the forget point,
 * nothing comes from memory and *old is the range to read from the log (else
 * old->after == old->upto). */
uint32_t stp_serve(stp *p, uint64_t after, uint64_t upto, const stp_rec **out, uint32_t max,
                   stp_gap *old);

/*
 * Forgets the held records at or below min(upto, the materialized LSN, SCL):
 * they are in the page file and in the log. Their log keys are remembered
 * per range (at most STORAGE_OLD_RANGES_MAX ranges; beyond, the oldest two
 * merge) so that stp_old_keys can find them again. Returns how many went.
 */
uint32_t stp_forget(stp *p, uint64_t upto);

/* The log keys holding the forgotten records in (after, upto]: false when none. */
bool stp_old_keys(const stp *p, uint64_t after, uint64_t upto, uint64_t *key_min,
                  uint64_t *key_max);

/* The forget point: records at or below it are no longer held (0: none). */
uint64_t stp_base(const stp *p);
/* The lowest log key of a held record (UINT64_MAX: none held). */
uint64_t stp_key_min(const stp *p);

/* The held record with this LSN, or NULL. */
const stp_rec *stp_find(const stp *p, uint64_t lsn);

/*
 * The durable records of page page with after < lsn <= upto, ascending, into
 * out (at most max: MRD_ETOOBIG beyond). MRD_ENOTFOUND when one of them has no
 * payload in memory (it is materialized: the caller's base is too old).
 */
int stp_page_recs(const stp *p, uint64_t page, uint64_t after, uint64_t upto,
                  const stp_rec **out, uint32_t max, uint32_t *n);

/*
 * What to materialize next: the records in (materialized, min(target, SCL)],
 * ascending, at most recs_max of them and bytes_max payload bytes (at least
 * one). *upto is the LSN to pass to stp_materialized once they are applied
 * and synced. Returns how many went into out.
 */
uint32_t stp_materialize_plan(const stp *p, uint64_t target, uint32_t recs_max,
                              uint64_t bytes_max, const stp_rec **out, uint64_t *upto);
/* Every record at or below upto is in the page file: their payloads are dropped. */
void stp_materialized(stp *p, uint64_t upto);

uint64_t stp_scl(const stp *p);
uint64_t stp_epoch(const stp *p);
uint64_t stp_lsn_durable(const stp *p);
uint32_t stp_records(const stp *p);

/* ---- fences (I/O-free) ------------------------------------------------------------------ */

/*
 * Adds fence f to a list sorted by epoch (at most QUORUM_FENCES_MAX, merging
 * the two oldest like seg_chain does when full; the same epoch keeps the lower
 * truncate LSN). Returns true when the list changed.
 */
bool storage_fences_add(quorum_fence *fences, uint32_t *n, quorum_fence f);

/* ---- parsing external bytes (I/O-free, fuzzed) ------------------------------------------ */

/* A decimal u64: 1..20 digits, no sign, no leading zero (except "0"), no overflow. */
int storage_u64_parse(const char *text, uint64_t *out);

/* The query of a storage request: the keys it may carry. */
typedef enum {
    STQ_PG,
    STQ_FLOOR,
    STQ_AFTER,
    STQ_UPTO,
    STQ_PAGE,
    STQ_LSN,
    STQ_NEED,
    STQ_COUNT
} storage_query_key;

typedef struct {
    uint64_t value[STQ_COUNT];
    bool has[STQ_COUNT];
} storage_query;

/*
 * Parses the query string of path ("/v1/page?page=3&lsn=9"): pairs k=v
 * separated by '&', each key one of the names above at most once, each value
 * a storage_u64_parse number. Keys outside `allowed` (a mask of 1u << key) are
 * refused; so is a path longer than STORAGE_QUERY_BYTES_MAX. MRD_EPARSE with
 * a message naming the pair.
 */
int storage_query_parse(const char *path, unsigned allowed, storage_query *q, mrd_msg *msg);

/*
 * A body that must be exactly one frame holding one WIRE_BATCH_LOG batch
 * (an append, a gap-fill answer). An empty body gives MRD_ENOTFOUND.
 */
int storage_body_batch(const uint8_t *body, size_t len, wire_batch *batch, mrd_msg *msg);

/*
 * Checks that a decoded record belongs where it is headed: PG pg, a page of
 * that PG (pages_per_pg pages each), deltas inside page_size, a full image
 * exactly page_size bytes.
 */
int storage_record_fits(const wire_record *rec, uint32_t pg, uint64_t pages_per_pg,
                        uint32_t page_size, mrd_msg *msg);
/* The fields the quorum core needs. */
void storage_qrec(const wire_record *rec, quorum_rec *q);

/* ---- reset (I/O-free, fuzzed) ----------------------------------------------------------- */

/* What a reset does with an entry of the node's data folder. */
typedef enum {
    STORAGE_FILE_KEEP,     /* not storage's: LOCK, meridiand.pid, meridiand.log, RESET, ... */
    STORAGE_FILE_DATA,     /* a file storage writes: meta, meta.tmp, RESET.tmp */
    STORAGE_FILE_DATA_DIR, /* a folder storage owns whole: seglog, pages */
} storage_file_kind;

/* The kind of the entry named name (no slash) in the node's data folder. */
storage_file_kind storage_file_classify(const char *name);

/*
 * The body of POST /v1/reset: exactly {"node": "<self_id>"}, at most
 * STORAGE_RESET_BODY_BYTES_MAX bytes. MRD_EPARSE for a body that is not that
 * shape, MRD_EINVAL for another node's id; the message names the field.
 */
int storage_reset_parse(const uint8_t *body, size_t len, const char *self_id, mrd_msg *msg);

/* ---- page slots (I/O-free, fuzzed) ------------------------------------------------------ */

/* Bytes of one slot: header + page. */
#define STORAGE_SLOT_BYTES(page_size) (STORAGE_SLOT_HEADER_BYTES + (size_t)(page_size))

/* Writes a slot holding page (page_size bytes) as of lsn (>= 1). */
void storage_slot_encode(uint8_t *slot, uint32_t page_size, uint64_t lsn, const uint8_t *page);
/*
 * Reads a slot: 1 with *lsn and *page (pointing into slot) when it verifies,
 * 0 when it is empty (never written: LSN 0), MRD_ECRC / MRD_EPARSE when it
 * does not verify (torn by a crash while being written, or damaged).
 */
int storage_slot_decode(const uint8_t *slot, uint32_t page_size, uint64_t *lsn,
                        const uint8_t **page, mrd_msg *msg);

/* One record to apply to a page. */
typedef struct {
    uint64_t lsn;
    const uint8_t *payload;
    uint32_t len;
} storage_page_rec;

/*
 * Applies, in order, the records (ascending LSN) above *lsn to page, moving
 * *lsn to the last one applied. Each payload is decoded as hostile bytes.
 */
int storage_page_apply(uint8_t *page, uint32_t page_size, uint64_t *lsn,
                       const storage_page_rec *recs, uint32_t n, mrd_msg *msg);

#endif
