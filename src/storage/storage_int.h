/*
 * The storage role's private state, shared by its glue files only. Every
 * field is the loop's, except where a comment names a worker: while a
 * uv_work_t runs, its worker owns exactly the fields of that job.
 */
#ifndef MERIDIAN_STORAGE_INT_H
#define MERIDIAN_STORAGE_INT_H

#include <uv.h>

#include "meridian/h2.h"
#include "meridian/metrics.h"
#include "meridian/node.h"
#include "meridian/seglog.h"
#include "meridian/storage.h"
#include "meridian/topo.h"
#include "meridian/wire.h"

#define STORAGE_WHY_MAX (MRD_MSG_MAX + 64)
#define STORAGE_H2_INTERNAL_ERROR 2u /* HTTP/2 error code of a stream we cannot answer */

/* A request answered later: an append waiting for an fdatasync, a fence waiting for
 * the metadata file, a gap-fill answer waiting for the log to be readable. */
typedef enum { HELD_APPEND, HELD_FENCE, HELD_RECORDS } held_kind;

typedef struct held held;
struct held {
    held *next, *prev;
    h2_req *req;
    held_kind kind;
    uint32_t pg;
    uint64_t epoch; /* append: the writer's epoch */
    uint64_t wait;  /* append: a log key; fence: a metadata generation */
    uint64_t after; /* records: the range asked for */
    uint64_t upto;
};

/* A peer storage node, asked for the records under our gaps. */
typedef struct {
    struct storage *s;
    int seg;
    const topo_node *node;
    h2_client *client;
    bool connected;
    uint64_t retry_ms; /* no new connection before this time */
} storage_peer;

/* Group commit: the batch a worker is writing and syncing. */
typedef struct {
    uv_work_t work;
    bool active;
    uint64_t run_ns; /* worker: time the write and fdatasync took */
} storage_sync;

/* The metadata file being replaced by a worker. */
typedef struct {
    uv_work_t work;
    bool active;
    uint64_t gen;      /* generation this write carries */
    seglog_meta snap;  /* worker: what it writes */
    int rc;            /* worker */
    mrd_msg msg;       /* worker */
} storage_meta_job;

typedef struct storage_mat storage_mat; /* materialize.c */

/*
 * A reset's life (reset.c). Each state may move only to those its row of
 * storage_reset_moves (reset.c) allows; IDLE is the only one that serves.
 */
typedef enum {
    RESET_IDLE,       /* serving */
    RESET_MARKING,    /* a worker writes and syncs the RESET marker */
    RESET_DRAINING,   /* waiting for the fdatasync, metadata and materialization workers */
    RESET_DELETING,   /* files closed; a worker deletes the data files, syncs the folders */
    RESET_ANSWERED,   /* answered; the restart waits for the answer's stream to close */
    RESET_RESTARTING, /* mrd_node_restart called */
    RESET_STATES
} storage_reset_state;

typedef struct {
    storage_reset_state state;
    uv_work_t work;
    bool active;      /* a worker runs */
    h2_req *req;      /* the POST /v1/reset to answer; NULL once its stream closed */
    uv_timer_t timer; /* the restart, once the answer has left */
    bool timer_open;
    uint32_t files; /* worker: entries deleted */
    int rc;         /* worker */
    mrd_msg msg;    /* worker */
} storage_reset;

struct storage {
    mrd_node *node;
    uv_loop_t *loop;
    storage_options opts;
    const topo_region *region;
    uint8_t seg;
    uint32_t page_size;
    uint64_t pages_per_pg;
    char dir[TOPO_PATH_MAX];
    char meta_path[TOPO_PATH_MAX + 16];
    char log_dir[TOPO_PATH_MAX + 16];
    char pages_dir[TOPO_PATH_MAX + 16];

    /* The log. */
    seglog_io io;
    seglog *log;
    uint64_t key_next;     /* log key of the next entry */
    uint64_t staged_bytes; /* appended since the last sync_prepare */
    bool failed;           /* an fdatasync, write or metadata error: no more writes */
    char failed_why[STORAGE_WHY_MAX];
    storage_sync sync;

    /* Segments, one per PG seen, and their page files. */
    stp *pgs[QUORUM_PGS_MAX];
    int page_fd[QUORUM_PGS_MAX];     /* -1 until the page file exists */
    bool pages_stale[QUORUM_PGS_MAX]; /* a fence voided materialized records */

    /* Epoch and fences: applied (records are checked against them), and staged
     * (written to the metadata file, applied once it is durable). */
    uint64_t epoch;
    quorum_fence fences[QUORUM_FENCES_MAX];
    uint32_t n_fences;
    uint64_t epoch_staged;
    quorum_fence fences_staged[QUORUM_FENCES_MAX];
    uint32_t n_fences_staged;
    uint64_t fence_gen; /* metadata generation holding the staged fences */

    /* Metadata writes: generations wanted, durable. */
    storage_meta_job meta;
    uint64_t meta_gen_wanted;
    uint64_t meta_gen_durable;
    uint64_t meta_written_ms;
    uint64_t meta_scl_sum; /* SCLs and materialized LSNs as last written */
    uint64_t scl_recorded[QUORUM_PGS_MAX]; /* the metadata's SCLs at start */

    storage_mat *mat;
    uint64_t mat_next_ms;

    uint64_t vdl; /* highest VDL a writer (or a peer) reported */
    uint64_t forgotten_unrecorded; /* records forgotten since the last metadata snapshot */
    /* From the metadata file, for the segments it names: start reads the log from
     * key_start (0: all of it) and each PG's chain starts at its forget point. */
    uint64_t key_start;
    uint64_t start_base[QUORUM_PGS_MAX];
    uint64_t start_base_cpl[QUORUM_PGS_MAX];
    held held_head; /* circular list */
    storage_peer peers[TOPO_STORAGE];
    h2_tls *tls;
    uint32_t gap_calls[QUORUM_PGS_MAX];
    uint64_t tail_next_ms[QUORUM_PGS_MAX];    /* next "anything above my top?" request */
    uint64_t tail_backoff_ms[QUORUM_PGS_MAX]; /* grows while peers answer with nothing */
    uint32_t gap_rr[QUORUM_PGS_MAX];
    uint32_t calls_open; /* gap-fill calls not yet closed */

    uv_timer_t timer;
    bool stopping;
    bool timer_open;
    storage_reset reset;

    mrd_metric *m_records;
    mrd_metric *m_bytes;
    mrd_metric *m_fsync_batches;
    mrd_metric *m_fsync_seconds;
    mrd_metric *m_gap_records;
    mrd_metric *m_stale;
};

/* node.c */
void storage_reply(storage *s, h2_req *req, int status, const char *content_type,
                   const h2_header *extra, size_t n_extra, const void *body, size_t len);
void storage_reply_error(storage *s, h2_req *req, int status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));
held *storage_hold(storage *s, h2_req *req, held_kind kind);
void storage_unhold(held *h);
void storage_fail(storage *s, const char *what, const mrd_msg *msg);
stp *storage_pg(storage *s, uint32_t pg, mrd_msg *msg); /* creates the segment if new */
uint64_t storage_payload_bytes(const storage *s);
void storage_maybe_free(storage *s);
void storage_forget_tick(storage *s);
/* The value of a request header as a u64; false (and a 400 sent) when malformed. */
bool storage_header_u64(storage *s, h2_req *req, const char *name, bool required, uint64_t *out);
bool storage_check_epoch(storage *s, h2_req *req, uint64_t epoch);

/* load.c */
int storage_open_files(storage *s, mrd_msg *msg);
int storage_replay(storage *s, mrd_msg *msg);

/* append.c */
void storage_route_append(mrd_node *node, h2_req *req, void *ud);
int storage_stage(storage *s, uint64_t key, const uint8_t *payload, size_t len, mrd_msg *msg);
void storage_sync_kick(storage *s);
bool storage_room(storage *s, uint64_t bytes);
uint32_t storage_append_room(const storage *s);

/* fence.c */
void storage_route_fence(mrd_node *node, h2_req *req, void *ud);
void storage_meta_kick(storage *s);
void storage_meta_snapshot(storage *s, seglog_meta *m);

/* serve.c */
void storage_route_records(mrd_node *node, h2_req *req, void *ud);
void storage_route_report(mrd_node *node, h2_req *req, void *ud);
void storage_records_resume(storage *s);

/* page.c */
void storage_route_page(mrd_node *node, h2_req *req, void *ud);
int storage_page_file_path(const storage *s, uint32_t pg, char *out, size_t len);
bool storage_page_file_name(const char *name, uint32_t *pg); /* "pg-0000002a.pages" */
int storage_page_file_open(storage *s, uint32_t pg, bool create, int *fd, mrd_msg *msg);
int storage_page_read(storage *s, int fd, uint64_t page, uint8_t *out, uint64_t *lsn,
                      mrd_msg *msg);

/* gap.c */
int storage_peers_init(storage *s, mrd_msg *msg);
void storage_gap_tick(storage *s, uint64_t now_ms);
void storage_peers_close(storage *s);

/* materialize.c */
void storage_materialize_tick(storage *s, uint64_t now_ms);

/* reset.c */
void storage_route_reset(mrd_node *node, h2_req *req, void *ud);
/* True (and a 503 resetting sent) while a reset runs: the node takes nothing. */
bool storage_refuse_resetting(storage *s, h2_req *req);
static inline bool storage_resetting(const storage *s)
{
    return s->reset.state != RESET_IDLE;
}
/* A background job ended: a draining reset may go on. */
void storage_reset_step(storage *s);
void storage_reset_req_closed(storage *s, h2_req *req);
void storage_reset_start_timer(storage *s); /* at start: the restart timer's handle */
void storage_reset_stop(storage *s);        /* the node stops: closes that handle */
/* At start, before anything is loaded: a RESET marker means a reset to finish. */
int storage_reset_finish(storage *s, mrd_msg *msg);

/* status.c */
void storage_status(mrd_node *node, mrd_buf *out, void *ud);
void storage_metrics_init(storage *s);
void storage_metrics_update(storage *s);

#endif
