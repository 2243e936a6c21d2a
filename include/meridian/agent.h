/*
 * agent: a region's cross-region replication agent (`meridiand --role agent`).
 *
 * In the primary region the agent follows its writer's log (GET /v1/log, the
 * frames readers get: records ahead of durability marks), keeps the committed
 * part — records at or below a mark's VDL — in a bounded backlog, and ships
 * it to every secondary region's agent over one long-lived HTTP/2 stream each
 * (POST /v1/replicate, which the primary opens: frames of zlib-compressed
 * record batches up, acknowledgements of the secondary's durable LSN down).
 * In a secondary region the agent takes that stream, checks every byte,
 * writes the records into the local storage quorum with the primary's LSNs,
 * epochs and back-links (the volume client's replica mode), acknowledges its
 * local VDL, and serves GET /v1/log to the region's readers in the writer's
 * format. docs/agent.md tells the whole story, docs/wire.md the bytes.
 *
 * This header holds the parts that do no I/O and are tested on their own:
 * the replication frames (ag_frame_*), the rolling checksum and the lag
 * accounting (ag_lag_*), which the primary keeps with its own clock only.
 * Guarantees: decoders treat every byte as hostile (every length, type and
 * limit checked; MRD_EPARSE / MRD_ETOOBIG / MRD_EVERSION / MRD_ETRUNC with a
 * message naming the field), allocate at most the declared, bounded size,
 * and encoders produce exactly what the decoders take.
 */
#ifndef MERIDIAN_AGENT_H
#define MERIDIAN_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"
#include "meridian/node.h"
#include "meridian/topo.h"
#include "meridian/wire.h"

/* ---- limits --------------------------------------------------------------------------- */

#define AG_VERSION 1u
#define AG_BACKLOG_RECORDS_MAX 262144u /* committed records the primary keeps */
#define AG_BACKLOG_BYTES_MAX (256u << 20)
#define AG_BACKLOG_RECORDS_ENV "MERIDIAN_AGENT_BACKLOG_RECORDS" /* a smaller cap, for tests */
#define AG_SEND_BATCH_RECORDS_MAX 1024u    /* records in one replication frame */
#define AG_SEND_BATCH_BYTES_MAX (1u << 20) /* raw batch bytes in one frame */
#define AG_SEND_QUEUED_MAX (4u << 20)      /* bytes queued on one stream before waiting */
#define AG_LAG_MARKS_MAX 65536u            /* commit marks the lag accounting keeps */
#define AG_READERS_MAX 32                  /* local readers streaming a secondary's log */
#define AG_READER_QUEUED_MAX (8u << 20)    /* bytes queued to one reader before cut-off */
#define AG_INBOX_BYTES_MAX (8u << 20)      /* received, unprocessed bytes of one stream */

/* ---- replication frames ---------------------------------------------------------------- */

/*
 * Inside a wire frame ([u32 length][u32 crc32c][payload]), a payload starts with a tag:
 * AG_FRAME_BATCH: u32 raw length (little-endian), then a zlib stream that inflates to
 *   exactly that many bytes: one WIRE_BATCH_LOG batch (primary -> secondary);
 * AG_FRAME_ACK: a msgpack map {0: version, 1: durable_lsn, 2: checksum, 3: checksum_known}
 *   (secondary -> primary).
 */
#define AG_FRAME_BATCH 'Z'
#define AG_FRAME_ACK 'A'
#define AG_FRAME_RAW_MAX WIRE_FRAME_BYTES_MAX /* inflated bytes of one batch */

typedef struct {
    uint64_t durable_lsn; /* the secondary's VDL */
    uint32_t checksum;    /* its rolling checksum at durable_lsn */
    bool checksum_known;
} ag_ack;

/* Appends one whole wire frame carrying batch (raw, len bytes) compressed. */
int ag_frame_batch_encode(const uint8_t *batch, size_t len, mrd_buf *out, mrd_msg *msg);
/*
 * Decodes a batch payload (after the tag): inflates into raw (reset first, at most
 * AG_FRAME_RAW_MAX bytes) and decodes the batch in it (wire_batch_decode: every record
 * checked). batch points into raw.
 */
int ag_frame_batch_decode(const uint8_t *data, size_t len, mrd_buf *raw, wire_batch *batch,
                          mrd_msg *msg);
/* Appends one whole wire frame carrying ack. */
int ag_frame_ack_encode(const ag_ack *ack, mrd_buf *out, mrd_msg *msg);
/* Decodes an ack payload (after the tag). */
int ag_frame_ack_decode(const uint8_t *data, size_t len, ag_ack *ack, mrd_msg *msg);

/* ---- the rolling checksum --------------------------------------------------------------- */

/* crc32c chained over (lsn, 8 bytes little-endian) and the record's encoding. */
uint32_t ag_checksum_advance(uint32_t crc, uint64_t lsn, const uint8_t *enc, size_t len);

/* ---- lag accounting (the primary's clock only) ------------------------------------------ */

typedef struct {
    uint64_t lsn;       /* records up to here were committed ... */
    uint64_t bytes_cum; /* ... making this many record bytes since the start ... */
    uint64_t at_ms;     /* ... when the mark saying so arrived */
    uint32_t crc;       /* the rolling checksum at lsn */
} ag_mark;

typedef struct {
    uint64_t durable_lsn; /* highest durable LSN it acknowledged */
    uint64_t bytes_raw;   /* batch bytes sent, before compression */
    uint64_t bytes_sent;  /* frame bytes sent, after compression */
    bool acked;           /* it acknowledged something since the start */
} ag_peer;

typedef struct {
    ag_mark *marks; /* ring, ascending lsn */
    uint32_t cap, head, count;
    uint64_t base_lsn, base_ms; /* where the accounting began, and when */
    uint32_t base_crc;
    bool crc_known;
    uint64_t committed_lsn, bytes_cum;
    uint32_t crc; /* at committed_lsn */
    ag_peer peers[TOPO_REGIONS_MAX];
} ag_lag;

typedef struct {
    uint64_t lag_ms;    /* age of the oldest committed record not durable there; 0 if none */
    uint64_t lsn_gap;   /* committed LSN minus its durable LSN */
    uint64_t bytes_gap; /* record bytes committed above its durable LSN (as far as known) */
} ag_lag_view;

/* cap 0: AG_LAG_MARKS_MAX. base: the committed LSN (and its checksum) at the start. */
int ag_lag_init(ag_lag *l, uint32_t cap, uint64_t base_lsn, uint32_t base_crc, bool crc_known,
                uint64_t now_ms, mrd_msg *msg);
void ag_lag_free(ag_lag *l);
/* Records up to lsn (bytes of them since the last commit) are committed, checksum crc. */
void ag_lag_commit(ag_lag *l, uint64_t lsn, uint64_t bytes, uint32_t crc, uint64_t now_ms);
/* Peer p acknowledged durable_lsn (never goes back). */
void ag_lag_ack(ag_lag *l, int p, uint64_t durable_lsn);
/* Peer p was sent a frame: raw batch bytes before compression, bytes after. */
void ag_lag_sent(ag_lag *l, int p, uint64_t raw, uint64_t sent);
void ag_lag_of(const ag_lag *l, int p, uint64_t now_ms, ag_lag_view *out);
/* The checksum at exactly lsn, if a kept mark (or the base) has it. */
bool ag_lag_checksum_at(const ag_lag *l, uint64_t lsn, uint32_t *crc);
/* The highest kept mark at or below lsn (false if none): where a restart may resume. */
bool ag_lag_mark_at_or_below(const ag_lag *l, uint64_t lsn, ag_mark *out);
/* Drops marks no peer needs: all but the last at or below lsn. */
void ag_lag_forget(ag_lag *l, uint64_t lsn);

/* ---- the role ----------------------------------------------------------------------------- */

typedef struct agent agent;

int agent_start(mrd_node *node, agent **out, mrd_msg *msg);

#endif
