/*
 * vbench: `meridian volume-bench`, `meridian volume-verify` and
 * `meridian volume-probe` — load, check and measure a region's volume
 * through the writer-side quorum client (volume.h).
 *
 * volume-bench writes records (each write changes a few bytes of one of a
 * set of pages, chosen from a seeded generator; each write its own
 * transaction) with a bounded number of writes waiting for VDL, and measures
 * each write's quorum-acknowledgement latency (submit to VDL >= its LSN).
 * With a log file it appends, one line each and flushed per line:
 *
 *   recovered EPOCH VCL VDL    once ready: this writer's epoch and what recovery found
 *   submit LSN PAGE CRC32C     before the record leaves (CRC32C of the new page, hex)
 *   vdl N                      each time VDL advances
 *
 * volume-verify recovers the volume as a new writer and checks it against
 * such a log (vb_check): every logged page, read at the recovered VDL, must
 * hold the content of its last write at or below the highest logged VDL, or
 * of a later logged write (records above the logged VDL may or may not have
 * survived), and the recovered VDL must not be below the highest logged VDL.
 * A `recovered` line tells the checker that the previous writer's records
 * above that VCL were discarded (their LSNs may be used again).
 *
 * The I/O-free parts — the latency histogram, the workload generator and the
 * log checker — are declared here for tests/unit/volume.
 */
#ifndef MERIDIAN_VBENCH_H
#define MERIDIAN_VBENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/common.h"

#define VB_PAGES_MAX (1u << 16)       /* pages one bench writes (it keeps a copy of each) */
#define VB_INFLIGHT_MAX 4096u         /* writes waiting for VDL at once */
#define VB_FETCH_INFLIGHT_MAX 256u    /* page reads at once (prefetch, verify) */
#define VB_LOG_LINE_MAX 256u          /* bytes of one log line */
#define VB_CHECK_PAGES_MAX (1u << 22) /* distinct pages one log may name */
#define VB_CHECK_LATER_MAX (1u << 20) /* writes above the logged VDL kept per page */
#define VB_PROBE_COUNT_MAX 100000u

/* The CLI's entry for `meridian volume-*` (argv[1] is the command). Returns the exit code. */
int vb_cli_main(int argc, char **argv);

/* ---- latency histogram ------------------------------------------------------------------- */

/* Log-linear buckets: exact below 2^VB_LAT_SUB_BITS, then 2^(VB_LAT_SUB_BITS-1) per power
 * of two (under 1 % relative error). */
#define VB_LAT_SUB_BITS 8
#define VB_LAT_BUCKETS (64u << (VB_LAT_SUB_BITS - 1))

typedef struct {
    uint64_t counts[VB_LAT_BUCKETS];
    uint64_t n;
    uint64_t max;
    uint64_t min;
    double sum;
} vb_lat;

void vb_lat_init(vb_lat *h);
void vb_lat_add(vb_lat *h, uint64_t value);
/* Adds src's samples to dst. */
void vb_lat_merge(vb_lat *dst, const vb_lat *src);
/* The value at quantile q (0..1): the highest value of its bucket, never above max; 0 if empty. */
uint64_t vb_lat_quantile(const vb_lat *h, double q);

/* ---- workload ------------------------------------------------------------------------------ */

/* splitmix64: a seeded, portable generator (the same seed writes the same changes). */
typedef struct {
    uint64_t state;
} vb_rng;

void vb_rng_seed(vb_rng *r, uint64_t seed);
uint64_t vb_rng_next(vb_rng *r);

/* One write: which page, where, and the new bytes (delta_bytes of them into bytes). */
typedef struct {
    uint64_t page;
    uint32_t offset;
} vb_change;

/* Picks page (of pages), offset (so that delta_bytes fit in page_size) and the new bytes. */
vb_change vb_change_next(vb_rng *r, uint64_t pages, uint32_t page_size, uint32_t delta_bytes,
                         uint8_t *bytes);

/* ---- log checker --------------------------------------------------------------------------- */

typedef struct {
    uint64_t lsn;
    uint32_t crc;
} vb_write;

typedef struct {
    uint64_t page;
    bool has_base; /* a write at or below the logged VDL */
    uint64_t base_lsn;
    uint32_t base_crc;
    vb_write *later; /* writes above the VDL known when last folded, ascending */
    uint32_t n_later, cap_later;
} vb_page_hist;

typedef struct {
    uint32_t page_size;
    uint32_t zero_crc; /* CRC32C of a page never written */
    vb_page_hist *pages;
    uint32_t n_pages, cap_pages;
    uint32_t *index; /* open addressing: page entry + 1 */
    uint32_t index_cap;
    uint64_t vdl_max;  /* highest logged vdl */
    uint64_t last_lsn; /* last submitted LSN still standing */
    uint64_t lines, submits, vdls, recoveries, truncated;
} vb_check;

int vb_check_init(vb_check *c, uint32_t page_size, mrd_msg *msg);
void vb_check_close(vb_check *c);
/* One line of the log (without its newline); line_no for messages. MRD_EPARSE / MRD_EINVAL. */
int vb_check_line(vb_check *c, const char *line, uint64_t line_no, mrd_msg *msg);

typedef enum {
    VB_MATCH_DURABLE, /* the last write at or below the logged VDL (or zeros, never written) */
    VB_MATCH_LATER,   /* a later logged write */
    VB_MISMATCH,
} vb_match;

/* Checks a page read at the recovered VDL; on mismatch msg says what was expected. */
vb_match vb_check_page(vb_check *c, uint64_t page, uint32_t crc, mrd_msg *msg);
/* Pages named by the log: i in 0..c->n_pages. */
uint64_t vb_check_page_at(const vb_check *c, uint32_t i);

#endif
