/*
 * quorum: the I/O-free protocol cores of the quorum-replicated volume.
 *
 * Three cores, each a step function: an event goes in (with the current time
 * inside, when time matters) and actions come out through a sink callback that
 * the caller's glue performs (send, persist, fsync, answer). No core owns a
 * socket, a file or a clock, so a seeded simulator runs thousands of
 * crash/delay/drop schedules per second against exactly the code the daemons
 * run.
 *
 *  - qw_* (writer side): tracks which segments hold which records and derives
 *    VCL (every record at or below it is durable on >= 4 of the 6 segments of
 *    its PG) and VDL (highest CPL <= VCL); fires "VDL >= L" waiters; says what
 *    to re-send to a segment that reconnects or is slow; knows each segment's
 *    SCL so reads can go to one complete segment.
 *  - seg_chain_* (storage side, one segment of one PG): accepts records in any
 *    order with duplicates, learns durability from the glue's fdatasync, walks
 *    back-links to compute SCL, asks peers for the records under a gap and
 *    answers peers' requests, and fences stale epochs.
 *  - quorum_recover (restarting writer): from a read quorum (>= 3 of 6) of
 *    every PG computes the VCL/VDL to restart at and the truncation point.
 *
 * Ownership: a core owns the memory it allocates in *_init and frees it in
 * *_close; records handed to a sink are valid only during the callback.
 *
 * Guarantees (asserted inside, checked by the simulator in tests/unit/quorum):
 * vdl <= vcl; VCL and VDL never go back within one writer; LSNs submitted to a
 * writer strictly increase; a record counts as durable on a segment only after
 * that segment reported it fdatasynced (listed in an ack, or at or below the
 * SCL it acked); SCL never exceeds what the durable back-link chain proves.
 *
 * Why recovery is safe. A record at or below the old VCL is durable on at
 * least 4 of the 6 segments of its PG; any 3 segments leave out at most 3, so
 * at least one of them holds it. Recovery reads >= 3 segments of every PG and
 * walks the volume back-link chain (vol_prev_lsn) through the union of what
 * they hold: the walk reaches every record at or below the old VCL (so the
 * recovered VCL >= old VCL >= old VDL: nothing acknowledged is lost), and it
 * stops at the first record that no reporter holds (so the recovered volume
 * has no hole). Per-PG SCLs alone would not do: a PG whose next record was
 * lost and a PG whose next record simply lies above the old VDL look the same
 * to SCL and highest-LSN reports; the volume back-link tells them apart.
 * The restart point is the last CPL on that walk (the recovered VDL), not the
 * end of the walk: records after it belong to a transaction whose commit never
 * became durable — no client heard of it — and pages must not show half of
 * it. When that CPL lies below the floor, the PG heads there are unknown at
 * this floor: quorum_recover says `again` and the caller asks for reports at
 * floor = that VDL. Everything above the restart point is discarded: the new
 * writer fences it
 * with a new epoch and a truncation point (quorum_fence), which every segment
 * applies to what it holds and to what peers or old writers send later.
 * Records between the old VCL and the recovered one may sit on fewer than 4
 * segments; the new writer's VDL stays at 0 until, for every PG, 4 segments
 * report an SCL at or above the PG's recovered head (gossip gap fill makes
 * that happen), so a restarted writer never answers from an unreplicated
 * record.
 */
#ifndef MERIDIAN_QUORUM_H
#define MERIDIAN_QUORUM_H

#include <stdbool.h>
#include <stdint.h>

#include "meridian/common.h"

#define QUORUM_SEGMENTS 6 /* segments per PG: two in each of three AZs */
#define QUORUM_AZS 3
#define QUORUM_WRITE 4                     /* write quorum: durable on 4 of 6 */
#define QUORUM_READ 3                      /* read quorum, for recovery only */
#define QUORUM_PGS_MAX 64                  /* PGs one writer tracks */
#define QUORUM_PG_ALL UINT32_MAX           /* link events for every PG of a storage node */
#define QUORUM_ACK_LSNS_MAX 64             /* LSNs one ack action lists */
#define QUORUM_SERVE_MAX 64                /* records one answer to a gap request carries */
#define QUORUM_GAPS_PER_TICK_MAX 8         /* gap requests one segment tick emits */
#define QUORUM_FENCES_MAX 16               /* epoch fences a segment remembers */
#define QUORUM_RECOVER_HDRS_MAX (1u << 20) /* record headers one recovery reads */
#define QUORUM_LSN_MAX UINT64_MAX

/* The segment index's availability zone. */
#define QUORUM_AZ_OF(seg) ((seg) / 2)

/* What the cores need to know about a log record (the payload stays with the glue). */
typedef struct {
    uint64_t lsn;          /* volume-wide, strictly increasing, >= 1 */
    uint64_t prev_lsn;     /* previous LSN of the same PG; 0 = the PG's first record */
    uint64_t vol_prev_lsn; /* previous LSN of the volume, any PG; 0 = the first */
    uint64_t epoch;        /* epoch of the writer that made it */
    uint32_t pg;
    uint32_t size_bytes;
    bool is_cpl; /* last record of a transaction */
} quorum_rec;

/* "Records of epoch < epoch above truncate_lsn are discarded." */
typedef struct {
    uint64_t epoch;
    uint64_t truncate_lsn;
} quorum_fence;

/* ---- actions: what a core asks its glue to do ---------------------------------------- */

typedef enum {
    QUORUM_ACT_SEND,    /* writer: send *rec to segment seg of pg */
    QUORUM_ACT_VCL,     /* writer: VCL advanced to lsn */
    QUORUM_ACT_VDL,     /* writer: VDL advanced to lsn */
    QUORUM_ACT_WAITER,  /* writer: waiter id is satisfied (VDL >= lsn) */
    QUORUM_ACT_PERSIST, /* segment: append *rec to the segment log; id = append sequence */
    QUORUM_ACT_SCL,     /* segment: SCL is now lsn */
    QUORUM_ACT_ACK,     /* segment: tell the writer lsns[] are durable, SCL is lsn, at epoch */
    QUORUM_ACT_GAP,     /* segment: ask a peer for its records in (after, lsn] */
    QUORUM_ACT_SERVE,   /* segment: send *rec to peer segment seg */
    QUORUM_ACT_FENCE,   /* segment: persist fence (epoch, lsn) and drop the log records it voids */
    QUORUM_ACT_SERVE_OLD, /* segment: peer seg asks for (after, lsn], records it forgot: serve
                             them from the segment log (durable, complete) */
} quorum_act_kind;

typedef struct {
    quorum_act_kind kind;
    uint32_t pg;
    uint8_t seg;           /* SEND, SERVE: target segment; segment actions: own index */
    uint64_t lsn;          /* see the kinds */
    uint64_t after;        /* GAP: lower bound, exclusive */
    uint64_t id;           /* WAITER: waiter id; PERSIST: append sequence */
    uint64_t epoch;        /* ACK, FENCE */
    const quorum_rec *rec; /* SEND, PERSIST, SERVE */
    const uint64_t *lsns;  /* ACK */
    uint32_t n_lsns;       /* ACK */
} quorum_action;

typedef struct {
    void (*fn)(void *ctx, const quorum_action *a);
    void *ctx;
} quorum_sink;

/* "SEND", "VCL", ... for traces and logs. */
const char *quorum_act_name(quorum_act_kind kind);

/* ---- recovery ----------------------------------------------------------------------- */

/* A durable record's header as a segment reports it for recovery. */
typedef struct {
    uint64_t lsn;
    uint64_t prev_lsn;
    uint64_t vol_prev_lsn;
    uint64_t epoch;
    bool is_cpl;
} quorum_hdr;

/* One segment's answer to a recovery read (seg_chain_report fills it). */
typedef struct {
    uint32_t pg;
    uint8_t seg;
    uint64_t epoch;         /* the segment's current epoch */
    uint64_t scl;           /* its SCL */
    uint64_t highest;       /* highest durable LSN it holds */
    uint64_t floor_head;    /* highest durable LSN <= floor it holds (0: none) */
    uint64_t floor_cpl;     /* highest durable CPL <= floor it holds (0: none) */
    uint64_t vdl;           /* the highest VDL a writer reported to the segment's node (0:
                               none); the glue fills it, seg_chain_report leaves it 0 */
    const quorum_hdr *hdrs; /* durable records above floor, ascending LSN */
    uint32_t n_hdrs;
} quorum_report;

typedef struct {
    uint64_t vcl;       /* restart here, the last complete transaction; truncate above */
    uint64_t vdl;       /* highest CPL <= vcl */
    uint64_t epoch_max; /* highest epoch any reporter has seen */
    uint64_t lost_max;  /* highest LSN seen above vcl (discarded), 0 if none */
    bool again;         /* no complete transaction at or above floor: recover again at
                           floor = vdl (the heads there are not known at this floor) */
    uint32_t pg_count;
    uint64_t pg_head[QUORUM_PGS_MAX]; /* each PG's last record <= vcl (0: none) */
} quorum_recovery;

/*
 * Round one: with reports (headers not needed) from >= 3 distinct segments of
 * each of pg_count PGs, *floor = the higher of (the lowest, over PGs, of the
 * PG's highest SCL) and (the highest VDL any reporter heard). Every record at
 * or below the first is held by some reporter (the one with that PG's highest
 * SCL); every record at or below a reported VDL was durable on 4 of the 6
 * segments of its PG, so one of any 3 reporters holds it (or held it and
 * remembers the PG's head and last CPL there: see SC_EV_FORGET), and no
 * reporter forgot anything above the VDL it heard. MRD_EBUSY when a PG lacks a
 * read quorum.
 */
int quorum_recover_floor(uint32_t pg_count, const quorum_report *reports, uint32_t n,
                         uint64_t *floor, mrd_msg *msg);

/*
 * Round two: reports taken at floor (from round one, on the same segments)
 * give the VCL/VDL to restart at: the volume back-link walk from floor through
 * the union of the reported headers (see the top of this file for why it is
 * safe). MRD_EBUSY without a read quorum, MRD_EINVAL for inconsistent reports,
 * MRD_ETOOBIG beyond QUORUM_RECOVER_HDRS_MAX headers.
 */
int quorum_recover(uint32_t pg_count, uint64_t floor, const quorum_report *reports, uint32_t n,
                   quorum_recovery *out, mrd_msg *msg);

/* ---- writer-side quorum tracker ---------------------------------------------------- */

typedef struct {
    uint32_t pg_count;     /* 1..QUORUM_PGS_MAX */
    uint32_t write_quorum; /* QUORUM_WRITE; any other value only to test the checker */
    uint32_t inflight_max; /* records above VCL; submit refuses beyond (MRD_EBUSY) */
    uint32_t retain_max;   /* records at or below VCL kept to re-send to lagging segments */
    uint32_t waiters_max;
    uint64_t resend_ms;               /* re-send a record unacknowledged this long */
    uint64_t epoch;                   /* this writer's epoch; acks from other epochs are refused */
    const quorum_recovery *recovered; /* NULL for a new volume */
} qw_config;

typedef enum {
    QW_EV_SUBMIT, /* rec: the next record, in LSN order */
    QW_EV_ACK,    /* ack: segment seg of pg made lsns[] durable; its SCL is scl */
    QW_EV_DOWN,   /* link: the connection to segment seg (of pg, or QUORUM_PG_ALL) is lost */
    QW_EV_UP,     /* link: it is back (after the epoch handshake); re-send what it lacks */
    QW_EV_TICK,   /* time passes: re-send what stayed unacknowledged resend_ms */
    QW_EV_WAIT,   /* wait: fire waiter id once VDL >= lsn */
} qw_event_kind;

typedef struct {
    qw_event_kind kind;
    uint64_t now_ms;
    union {
        quorum_rec rec;
        struct {
            uint32_t pg;
            uint8_t seg;
            uint64_t epoch;
            uint64_t scl;
            const uint64_t *lsns;
            uint32_t n_lsns;
        } ack;
        struct {
            uint32_t pg;
            uint8_t seg;
        } link;
        struct {
            uint64_t id;
            uint64_t lsn;
        } wait;
    };
} qw_event;

typedef struct {
    uint64_t submitted;
    uint64_t sends;
    uint64_t resends;
    uint64_t acks_stale;    /* acks refused for their epoch */
    uint64_t freed_lagging; /* freed before every segment had them: left to gap fill */
    uint64_t busy;          /* submits refused with MRD_EBUSY */
} qw_stats;

typedef struct qw_entry qw_entry; /* private */

typedef struct {
    uint64_t id;
    uint64_t lsn;
} qw_waiter;

/* The tracker. Embed it; fields are private to src/quorum. */
typedef struct {
    qw_config cfg;
    qw_entry *ring; /* records in LSN order, oldest at head */
    uint32_t ring_cap, ring_head, ring_count;
    uint32_t below_vcl; /* ring entries (from head) at or below vcl */
    uint64_t vcl, vdl, last_lsn;
    uint64_t pg_last[QUORUM_PGS_MAX];
    uint64_t scl[QUORUM_PGS_MAX][QUORUM_SEGMENTS];
    bool up[QUORUM_PGS_MAX][QUORUM_SEGMENTS];
    qw_waiter *waiters;
    uint32_t n_waiters;
    bool fenced; /* an ack came from a higher epoch: a newer writer exists */
    qw_stats stats;
} qw;

/* Starts at VCL = VDL = 0 (or, recovered, with the PG heads as barriers). */
int qw_init(qw *w, const qw_config *cfg, mrd_msg *msg);
void qw_close(qw *w);

/*
 * One event. Returns 0, or: MRD_EBUSY (too many records in flight or waiters),
 * MRD_EINVAL (a submit that breaks LSN order or back-links), MRD_EPROTO (an
 * ack naming records that were never submitted), MRD_ESTALE (an ack from
 * another epoch; from a higher one the writer is fenced and refuses submits).
 */
int qw_step(qw *w, const qw_event *ev, quorum_sink sink);

uint64_t qw_vcl(const qw *w);
uint64_t qw_vdl(const qw *w);
uint64_t qw_last_lsn(const qw *w);
uint64_t qw_pg_last(const qw *w, uint32_t pg);
/* The SCL segment seg of pg last acknowledged to this writer. */
uint64_t qw_scl(const qw *w, uint32_t pg, uint8_t seg);
/* Records tracked above VCL. */
uint32_t qw_inflight(const qw *w);
/*
 * A connected segment of pg that holds every record of pg at or below
 * read_point (its SCL reaches the PG's last record <= read_point), preferring
 * the lowest index. MRD_ENOTFOUND if none does.
 */
int qw_read_segment(const qw *w, uint32_t pg, uint64_t read_point, uint8_t *seg);
/*
 * The SCL a segment of pg needs for a read at read_point: the PG's last
 * record at or below it as far as the tracker can tell (read_point itself
 * when that is unknown). It is what qw_read_segment compares SCLs with, and
 * what a page read asks the storage node to check (docs/storage-protocol.md).
 */
uint64_t qw_read_need(const qw *w, uint32_t pg, uint64_t read_point);

/* ---- storage-side segment chain ----------------------------------------------------- */

typedef struct {
    uint32_t pg;
    uint8_t seg;
    uint32_t held_max;          /* records held in memory; beyond, MRD_EBUSY */
    uint64_t gap_retry_ms;      /* how often to (re-)ask peers for missing records */
    uint64_t scl_base;          /* forget point: the PG's record at which every record
                                   up to it is durable, chained and no longer held (0:
                                   the PG's beginning) */
    uint64_t base_cpl;          /* the PG's last CPL at or below scl_base (0: none) */
    uint64_t epoch;             /* from the segment's metadata */
    const quorum_fence *fences; /* from the segment's metadata */
    uint32_t n_fences;
} seg_chain_config;

typedef enum {
    SC_EV_RECORD,  /* rec arrived from the writer or a peer (not yet durable) */
    SC_EV_LOAD,    /* rec read back from the segment log at start (durable) */
    SC_EV_SYNCED,  /* fdatasync covered every PERSIST up to sequence seq */
    SC_EV_GAP_REQ, /* peer seg asks for records in (after, upto] */
    SC_EV_FENCE,   /* the writer fences: epoch, truncate_lsn */
    SC_EV_TICK,    /* time passes: ask for gaps, re-announce SCL */
    SC_EV_FORGET,  /* drop held records at or below min(upto, SCL): they are durable and
                      the glue can read them back from its log; the base moves up */
} sc_event_kind;

typedef struct {
    sc_event_kind kind;
    uint64_t now_ms;
    union {
        const quorum_rec *rec;
        uint64_t seq;
        struct {
            uint8_t seg;
            uint64_t after;
            uint64_t upto;
        } gap;
        quorum_fence fence;
        uint64_t upto; /* FORGET */
    };
} sc_event;

typedef struct {
    uint64_t dups;
    uint64_t refused_stale;
    uint64_t gaps_asked;
    uint64_t served;
    uint64_t discarded; /* records voided by a fence */
    uint64_t forgotten; /* records dropped by FORGET */
    uint64_t served_old; /* gap requests passed to the log (SERVE_OLD) */
} seg_chain_stats;

typedef struct {
    quorum_rec rec;
    uint64_t seq;
    bool durable;
} seg_chain_entry;

typedef struct {
    uint64_t lsn;
    uint64_t seq;
} seg_chain_pending;

/* One segment of one PG. Embed it; fields are private to src/quorum. */
typedef struct {
    seg_chain_config cfg;
    seg_chain_entry *recs; /* ascending LSN */
    uint32_t n_recs;
    seg_chain_pending *pending; /* persisted, not yet durable, in append order */
    uint32_t n_pending;
    uint64_t *synced; /* scratch: LSNs one fdatasync made durable */
    uint64_t scl;
    uint32_t scl_idx; /* entries at or below scl */
    uint64_t epoch;
    quorum_fence fences[QUORUM_FENCES_MAX]; /* ascending epoch */
    uint32_t n_fences;
    uint64_t next_seq;
    uint64_t gap_last_ms;
    uint64_t scl_acked;
    seg_chain_stats stats;
} seg_chain;

int seg_chain_init(seg_chain *c, const seg_chain_config *cfg, mrd_msg *msg);
void seg_chain_close(seg_chain *c);

/*
 * One event. Returns 0, or: MRD_ESTALE (a record of an older epoch that a
 * fence voids), MRD_ESTATE (a record of a newer epoch before its fence
 * arrived), MRD_EINVAL (a record of another PG or with a bad back-link),
 * MRD_EBUSY (held_max). Fences may arrive in any order and more than once: a
 * record of epoch e is valid while lsn <= truncate_lsn of every fence of an
 * epoch above e. The segment's epoch is the highest fence's.
 *
 * FORGET keeps memory bounded: the glue forgets up to what its log and page
 * files keep findable and what no recovery will ask about (at most the VDL a
 * writer reported: see quorum_recover_floor). A record at or below the base
 * that arrives again is a duplicate and is acknowledged; a gap request
 * reaching below the base becomes SERVE_OLD for the part the log must answer.
 */
int seg_chain_step(seg_chain *c, const sc_event *ev, quorum_sink sink);

uint64_t seg_chain_scl(const seg_chain *c);
uint64_t seg_chain_epoch(const seg_chain *c);
/* The forget point: every record at or below it is durable and no longer held (0: none). */
uint64_t seg_chain_base(const seg_chain *c);
/* The last CPL at or below the forget point (0: none). */
uint64_t seg_chain_base_cpl(const seg_chain *c);
/* Whether the segment holds lsn durably. */
bool seg_chain_has_durable(const seg_chain *c, uint64_t lsn);
/* Whether the segment holds lsn at all (durable or waiting for its fdatasync); after a
 * FENCE, a record it no longer holds was voided. */
bool seg_chain_holds(const seg_chain *c, uint64_t lsn);
/*
 * Fills *out for a recovery read at floor, writing the headers of durable
 * records above floor into hdrs (MRD_ETOOBIG beyond hdrs_max). MRD_ESTATE when
 * floor lies below the forget point (the records between are no longer held:
 * ask again at a floor at or above seg_chain_base). The forgotten records
 * still count for floor_head, floor_cpl and highest.
 */
int seg_chain_report(const seg_chain *c, uint64_t floor, quorum_report *out, quorum_hdr *hdrs,
                     uint32_t hdrs_max);

#endif
