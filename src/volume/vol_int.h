/* Internals shared by the volume client's glue files (src/volume). */
#ifndef MERIDIAN_VOL_INT_H
#define MERIDIAN_VOL_INT_H

#include "meridian/h2.h"
#include "meridian/volume.h"

#define VOL_FLOOR_NONE UINT64_MAX         /* report floor asking for header fields only */
#define VOL_REPORT_BYTES_MAX (64u << 20)  /* body of one report answer */
#define VOL_ANSWER_BYTES_MAX (64u * 1024) /* body of any other answer but a page */

typedef enum {
    NODE_IDLE,       /* not connected; a retry timer may be running */
    NODE_CONNECTING, /* TCP/TLS/SETTINGS under way */
    NODE_CONNECTED,  /* connected, not fenced (recovery reads reports over it) */
    NODE_FENCING,    /* our fence is on its way */
    NODE_UP,         /* fenced at our epoch: appends flow */
} vol_node_state;

typedef enum {
    PHASE_CONNECTING, /* waiting for enough nodes to start recovery */
    PHASE_ROUND1,     /* header-only reports of every PG */
    PHASE_ROUND2,     /* reports at the floor */
    PHASE_FENCE,      /* fencing at the new epoch: waiting for 4 */
    PHASE_READY,
    PHASE_FAILED,
    PHASE_CLOSING,
} vol_phase;

typedef struct vol_node {
    vol *v;
    uint8_t seg;
    const topo_node *tn;
    h2_client *client;
    vol_node_state state;
    uint32_t failures;    /* consecutive failed connections */
    uv_timer_t retry;     /* reconnect after backoff */
    uint32_t appends;     /* append calls in flight */
    uint32_t calls;       /* other calls in flight */
    uint64_t progress_ms; /* last answer, or when the first call went out */
    uint32_t round_calls; /* this recovery round's reports still open */
    bool round_in;        /* takes part in the current round */
    bool round_failed;    /* a report of this round failed */
    uint64_t scl_poll_ms; /* last SCL poll */
} vol_node;

typedef enum { CALL_REPORT, CALL_FENCE, CALL_APPEND, CALL_PAGE, CALL_SCL } vol_call_kind;

typedef struct vol_read_op vol_read_op;

/* One request in flight. */
typedef struct {
    vol *v;
    vol_node *n;
    vol_call_kind kind;
    int status;
    mrd_buf body;
    size_t body_max;
    bool too_big;
    uint32_t pg;
    uint32_t round;
    uint64_t *lsns; /* CALL_APPEND: the LSNs it carries */
    uint32_t n_lsns;
    vol_read_op *op; /* CALL_PAGE */
} vol_call;

struct vol_read_op {
    vol *v;
    vol_read_op *next, *prev;
    uint64_t page;
    uint64_t lsn;
    uint32_t pg;
    bool fetch;    /* cache the result as the writer's version */
    bool done;     /* answered from the cache: report from the loop */
    uint8_t tried; /* segments tried since the last pause */
    uint64_t deadline_ms;
    uint64_t retry_at_ms; /* 0: not waiting; else ask again from the tick at this time */
    bool in_call;         /* a CALL_PAGE holds it: freed when that answers */
    bool cancelled;       /* the vol failed or closed: no callback any more */
    vol_read_cb cb;
    void *ud;
    int status;
    char msg[MRD_MSG_MAX];
};

typedef struct {
    vol_wait_cb cb;
    void *ud;
    uint64_t lsn;
    bool live;
} vol_waiter;

struct vol {
    uv_loop_t *loop;
    vol_config cfg;
    vol_cbs cbs;
    void *ud;
    const topo_region *region;
    uint64_t pages_per_pg;
    uint32_t page_size;
    h2_tls *tls;
    vol_node nodes[QUORUM_SEGMENTS];
    uv_timer_t tick;
    uv_timer_t phase_timer;
    uv_prepare_t prepare;
    uint32_t handles_open;
    vol_phase phase;
    bool wait_expired; /* VOL_RECOVER_WAIT_MS passed: recover from >= 3 */
    uint64_t now_ms;

    /* recovery */
    uint32_t round;
    quorum_report *reports;
    uint32_t n_reports, reports_cap;
    uint64_t floor;
    bool pg_empty[QUORUM_PGS_MAX]; /* no records on any of the six (vol_recover_empty_pgs) */
    uint64_t epoch_seen;           /* highest epoch and LSN any round-one report named */
    uint64_t highest_seen;
    quorum_recovery rec;
    vol_info info;
    uint32_t fenced;

    /* writing */
    qw w;
    bool qw_live;
    vol_batcher batcher;
    vol_store store;
    vol_cache cache;
    uint64_t next_lsn;
    uint64_t txn;
    uint64_t vdl_reported; /* last VDL given to on_vdl */
    mrd_buf scratch;
    uint64_t *take; /* scratch for one batch's LSNs */
    vol_waiter *waiters;
    uint32_t *waiters_free;
    uint32_t n_waiters_free;
    uint64_t *fired; /* ring of waiter ids qw fired, dispatched from the prepare phase */
    uint32_t fired_head, n_fired;
    vol_read_op *reads; /* open reads */
    uint32_t n_reads;

    vol_stats stats;
    void (*close_done)(void *ud);
    void *close_ud;
    bool ready_reported;
    bool replica; /* vol_replica_open: another region's records, LSNs and epochs (replica.c) */
};

/* open.c */
void vol_fail(vol *v, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vol_node_drop(vol_node *n, const char *why);
int vol_qw_step(vol *v, qw_event *ev);
uint64_t vol_now_ms(vol *v);
/* Recovery starts again once all six are connected, or ms from now with >= 3. */
void vol_recover_wait(vol *v, uint64_t ms);

/* call.c */
int vol_call_start(vol_node *n, const vol_call *proto, const char *method, const char *path,
                   const h2_header *hdrs, size_t nhdrs, const void *body, size_t len);
void vol_call_free(vol_call *c);

/* recover.c */
void vol_recover_maybe_start(vol *v);
void vol_recover_on_report(vol_call *c, h2_call *call, int error);
void vol_fence_node(vol_node *n);
void vol_fence_on_answer(vol_call *c, h2_call *call, int error);
void vol_scl_poll(vol *v, vol_node *n);
void vol_scl_on_answer(vol_call *c, h2_call *call, int error);

/* append.c */
void vol_sink(void *ctx, const quorum_action *a);
void vol_flush(vol *v);
void vol_append_on_answer(vol_call *c, h2_call *call, int error);

/* replica.c: a replica's recovery ends here instead of in a new epoch. */
void vol_replica_begin(vol *v);

/* write.c */
void vol_dispatch_waiters(vol *v);

/* read.c */
void vol_read_on_answer(vol_call *c, h2_call *call, int error);
void vol_reads_dispatch(vol *v);
void vol_reads_tick(vol *v);
void vol_reads_cancel(vol *v);

#endif
