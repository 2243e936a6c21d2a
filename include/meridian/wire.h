/*
 * wire: the bytes of Meridian's log — log records, batches of records, and the
 * frames that carry them on a byte stream — plus the page-delta arithmetic
 * that turns two versions of a page into a record and a record back into a page.
 *
 * A log record is one change to one page: its LSN, the writer's epoch, the
 * protection group, the back-link to the previous record of that PG, the page
 * number, flags (CPL marker, full image) and the changed byte ranges. A batch
 * is a run of records in strictly increasing LSN order under a small header.
 * Both are msgpack maps with small integer keys whose first entry is the
 * format version; every message is declared once, as a field list from which
 * its encoder, decoder and size computation are generated (src/wire). A frame
 * is [u32 length][u32 crc32c of payload][payload], both integers little-endian.
 * docs/wire.md is the byte-level reference.
 *
 * The module owns no I/O and no global state. What it guarantees:
 * - Decoders treat every byte as hostile. Bounds, types, sizes and counts are
 *   checked before use; unknown keys, duplicate keys, missing required fields,
 *   trailing bytes and unknown flag bits are refused (a new field means a new
 *   version, so there is nothing to skip and no nesting to descend blindly).
 *   Decoding allocates nothing: a decoded record's deltas point into the input
 *   buffer (zero copy) and stay valid only while that buffer is unchanged and
 *   alive; a decoded batch is walked with an iterator over the same buffer.
 * - What decodes satisfies the record invariants: 1 <= lsn, prev_lsn < lsn,
 *   deltas sorted, non-overlapping, non-empty and inside WIRE_PAGE_SIZE_MAX,
 *   a full image is exactly one range at offset 0; in a batch LSNs strictly
 *   increase and epochs never go back. Encoders refuse (MRD_EINVAL) what would
 *   not decode, so decode(encode(r)) == r for every record the encoder takes.
 * - Errors are MRD_EPARSE (malformed), MRD_ETRUNC (input ends early),
 *   MRD_ETOOBIG (a named limit exceeded), MRD_EVERSION, MRD_ECRC (frames),
 *   each with a message naming what and where ("record field 4 (prev_lsn):
 *   expected unsigned integer, got string at byte 17").
 * Nothing here is thread-safe; distinct objects may be used from distinct threads.
 */
#ifndef MERIDIAN_WIRE_H
#define MERIDIAN_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"

/* ---- limits ----------------------------------------------------------------------------- */

#define WIRE_VERSION 1u                 /* the only version this code reads and writes */
#define WIRE_PAGE_SIZE_MAX 65536u       /* deltas lie inside [0, WIRE_PAGE_SIZE_MAX) */
#define WIRE_DELTAS_MAX 64u             /* byte ranges per record */
#define WIRE_BATCH_RECORDS_MAX 4096u    /* records per batch */
#define WIRE_FRAME_BYTES_MAX (4u << 20) /* payload bytes per frame */
#define WIRE_FRAME_HEADER_BYTES 8u      /* u32 length + u32 crc32c */

/* Page-delta tuning (wire_delta_compute). */
#define WIRE_DELTA_GAP_BYTES 8u     /* changed runs at most this far apart merge into one */
#define WIRE_DELTA_FULL_PERCENT 50u /* deltas covering more of the page become a full image */

/* ---- records ---------------------------------------------------------------------------- */

/* Record flags; any other bit is refused. */
#define WIRE_REC_CPL 0x1u  /* last record of a transaction: a consistency point */
#define WIRE_REC_FULL 0x2u /* one range at offset 0 covering the whole page: no base needed */
#define WIRE_REC_FLAGS_KNOWN (WIRE_REC_CPL | WIRE_REC_FULL)

/* One byte range of a page replaced by new bytes. */
typedef struct {
    uint32_t offset;     /* first byte of the page replaced */
    uint32_t len;        /* bytes replaced, >= 1 */
    const uint8_t *data; /* the new bytes; borrowed (see the lifetime note above) */
} wire_delta;

/* One change to one page. */
typedef struct {
    uint64_t lsn;      /* volume-wide, strictly increasing, >= 1 */
    uint64_t epoch;    /* volume epoch of the writer that made it */
    uint64_t prev_lsn; /* previous LSN of the same PG; 0 = the PG's first record */
    uint64_t page;     /* volume-wide page index */
    uint64_t txn;      /* optional transaction id; 0 = none (not encoded) */
    uint64_t vol_prev_lsn; /* previous LSN of the volume, any PG; 0 = the first (not encoded) */
    uint32_t pg;       /* protection group index */
    uint32_t flags;    /* WIRE_REC_* */
    uint32_t delta_count;
    wire_delta deltas[WIRE_DELTAS_MAX]; /* sorted by offset, non-overlapping */
} wire_record;

/* Checks the record invariants listed above; MRD_EINVAL with a message if one fails. */
int wire_record_check(const wire_record *rec, mrd_msg *msg);

/* Exact number of bytes wire_record_encode appends for rec. */
size_t wire_record_size(const wire_record *rec);

/* Appends rec's encoding to out. MRD_EINVAL if rec breaks an invariant (out unchanged). */
int wire_record_encode(const wire_record *rec, mrd_buf *out, mrd_msg *msg);

/* Decodes exactly one record from data[0..len); rec's deltas point into data. */
int wire_record_decode(const uint8_t *data, size_t len, wire_record *rec, mrd_msg *msg);

/* Same fields, same deltas (compared byte for byte, wherever they point). */
bool wire_record_equal(const wire_record *a, const wire_record *b);

/* ---- page deltas ------------------------------------------------------------------------ */

/*
 * Fills rec's deltas (and its WIRE_REC_FULL flag; other fields untouched) with
 * ranges turning base into page, both page_size bytes. Runs of changed bytes
 * closer than WIRE_DELTA_GAP_BYTES merge; the gap widens until the ranges fit
 * in WIRE_DELTAS_MAX. Without a base (base == NULL), or when the ranges would
 * cover more than WIRE_DELTA_FULL_PERCENT of the page, rec becomes a full
 * image. Identical pages give no deltas. rec's deltas point into page.
 * MRD_EINVAL if page_size is 0 or above WIRE_PAGE_SIZE_MAX.
 */
int wire_delta_compute(const uint8_t *base, const uint8_t *page, uint32_t page_size,
                       wire_record *rec);

/*
 * Applies rec's deltas to page (page_size bytes). Checks everything first and
 * changes nothing on error: MRD_EINVAL if a range ends past page_size or a
 * full image is not exactly page_size bytes.
 */
int wire_record_apply(uint8_t *page, uint32_t page_size, const wire_record *rec, mrd_msg *msg);

/* ---- batches ---------------------------------------------------------------------------- */

/* What a batch carries. */
#define WIRE_BATCH_LOG 1u /* log records, in LSN order, for storage, readers, agents */

/* A decoded batch: its header, and its records still encoded inside the input. */
typedef struct {
    uint32_t kind;  /* WIRE_BATCH_* */
    uint32_t count; /* records, 1..WIRE_BATCH_RECORDS_MAX */
    uint64_t lsn_first;
    uint64_t lsn_last;
    const uint8_t *records; /* first encoded record; points into the decoded input */
    size_t records_len;     /* bytes of all encoded records */
} wire_batch;

/*
 * Decodes and fully validates a batch, every record included; nothing is
 * allocated. batch->records points into data: walk it with wire_batch_iter.
 */
int wire_batch_decode(const uint8_t *data, size_t len, wire_batch *batch, mrd_msg *msg);

/* Walks the records of a decoded batch; embed it, no cleanup needed. */
typedef struct {
    const uint8_t *pos;
    const uint8_t *end;
    uint32_t left;
} wire_batch_iter;

void wire_batch_iter_init(wire_batch_iter *it, const wire_batch *batch);
/*
 * 1 and the next record in rec (deltas pointing into the batch's input), 0 at
 * the end. A negative error only if the input changed since wire_batch_decode.
 */
int wire_batch_iter_next(wire_batch_iter *it, wire_record *rec);

/*
 * Builds a batch at the end of an mrd_buf one record at a time, so that a
 * producer can stop when a limit is reached and start the next batch:
 * begin, add (records in strictly increasing LSN order), then finish or abort.
 * The header's LSNs and count are written fixed-width and filled in by finish.
 */
typedef struct {
    mrd_buf *out;
    size_t start; /* where the batch begins in out */
    uint32_t count;
    uint64_t lsn_first;
    uint64_t lsn_last;
    uint64_t epoch_last;
} wire_batch_builder;

int wire_batch_begin(wire_batch_builder *b, mrd_buf *out, uint32_t kind);
/*
 * Appends rec. MRD_ETOOBIG (batch unchanged, still valid to finish) when the
 * batch would pass WIRE_BATCH_RECORDS_MAX records or WIRE_FRAME_BYTES_MAX
 * bytes; MRD_EINVAL if rec breaks an invariant or the LSN/epoch order.
 */
int wire_batch_add(wire_batch_builder *b, const wire_record *rec, mrd_msg *msg);
/* Completes the batch; MRD_EINVAL if it is empty (then it is aborted). */
int wire_batch_finish(wire_batch_builder *b, mrd_msg *msg);
/* Removes the unfinished batch from out. */
void wire_batch_abort(wire_batch_builder *b);

/* ---- acknowledgements ------------------------------------------------------------------ */

/*
 * A storage node's answer to an append, sent once every record of the append
 * is durable (fdatasync'd): its epoch, the PG, the segment's SCL, and the
 * highest LSN of the PG it holds durably.
 */
typedef struct {
    uint64_t epoch;
    uint32_t pg;
    uint64_t scl;
    uint64_t lsn_durable;
} wire_ack;

int wire_ack_encode(const wire_ack *ack, mrd_buf *out, mrd_msg *msg);
/* Decodes exactly one ack from hostile bytes. */
int wire_ack_decode(const uint8_t *data, size_t len, wire_ack *ack, mrd_msg *msg);

/* ---- the writer's log stream ---------------------------------------------------------- */

/*
 * The writer streams its log to readers as frames whose payload starts with
 * a tag byte: WIRE_STREAM_BATCH and a batch of records (in LSN order, not yet
 * known durable), or WIRE_STREAM_MARK and a mark: every record up to vdl is
 * durable, and lsn_last is the last record the writer has sent so far.
 */
#define WIRE_STREAM_BATCH 'B'
#define WIRE_STREAM_MARK 'V'

typedef struct {
    uint64_t vdl;
    uint64_t epoch;
    uint64_t lsn_last;
} wire_mark;

int wire_mark_encode(const wire_mark *mark, mrd_buf *out, mrd_msg *msg);
int wire_mark_decode(const uint8_t *data, size_t len, wire_mark *mark, mrd_msg *msg);

/* ---- frames ----------------------------------------------------------------------------- */

/* Appends one frame holding payload; MRD_ETOOBIG above WIRE_FRAME_BYTES_MAX. */
int wire_frame_append(mrd_buf *out, const void *payload, size_t len, mrd_msg *msg);

/*
 * Writes a frame in place: begin reserves the header and returns its position
 * in *at; the caller appends the payload (a batch builder, say); end fills in
 * length and crc32c. On error end removes the frame from out.
 */
int wire_frame_begin(mrd_buf *out, size_t *at);
int wire_frame_end(mrd_buf *out, size_t at, mrd_msg *msg);

/* A verified frame payload, borrowed from the reader or from the fed bytes. */
typedef struct {
    const uint8_t *data;
    size_t len;
} wire_frame;

/*
 * Cuts frames out of a byte stream that arrives in arbitrary pieces. It holds
 * at most one partial frame (header + up to frame_bytes_max bytes); an
 * oversize length is refused as soon as its header has arrived. Errors are
 * sticky: after one, the stream is unusable and should be closed.
 */
typedef struct {
    mrd_buf buf;              /* the partial frame: header, then payload */
    uint32_t frame_bytes_max; /* <= WIRE_FRAME_BYTES_MAX */
    uint32_t len;             /* payload length, once the header is in */
    uint32_t crc;             /* payload crc32c from the header */
    uint64_t stream_at;       /* stream offset of the frame being read */
    bool done;                /* buf holds a frame already handed out */
    int err;                  /* sticky error, 0 while healthy */
} wire_frame_reader;

/* frame_bytes_max 0 or above WIRE_FRAME_BYTES_MAX means WIRE_FRAME_BYTES_MAX. */
void wire_frame_reader_init(wire_frame_reader *r, uint32_t frame_bytes_max);
void wire_frame_reader_close(wire_frame_reader *r);

/*
 * Consumes data until one frame is complete or data runs out; *used says how
 * many bytes were taken (call again with the rest). Returns 1 with a verified
 * frame in *frame, 0 when data ran out mid-frame, or MRD_ETOOBIG (length above
 * the limit), MRD_ECRC (payload does not match), MRD_ENOMEM. frame->data
 * points into data or into the reader: valid until the next call or close.
 */
int wire_frame_reader_feed(wire_frame_reader *r, const uint8_t *data, size_t len, size_t *used,
                           wire_frame *frame, mrd_msg *msg);

/* Bytes of an unfinished frame held; nonzero at the end of a stream means it was cut. */
size_t wire_frame_reader_pending(const wire_frame_reader *r);

#endif
