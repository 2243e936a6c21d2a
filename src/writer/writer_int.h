/* Inside the writer role: the pieces writer.c, store.c, sql.c and stream.c share. */
#ifndef MERIDIAN_WRITER_INT_H
#define MERIDIAN_WRITER_INT_H

#include <sqlite3.h>

#include "meridian/sql.h"
#include "meridian/sqlx.h"
#include "meridian/vfs.h"
#include "meridian/volume.h"
#include "meridian/writer.h"

typedef enum {
    WR_RECOVERING, /* opening the volume */
    WR_OPENING,    /* opening SQLite on it */
    WR_READY,
    WR_FENCED, /* a newer writer exists */
    WR_FAILED,
    WR_STANDBY, /* a secondary region's writer: idle, the agent feeds the volume */
} wr_state;

/* One reader streaming the log. */
typedef struct {
    writer *w;
    h2_req *req;
    bool live;
    uint64_t sent_lsn; /* last record sent */
    uint64_t sent_vdl; /* last VDL sent */
} wr_stream;

/* The recent log, kept for readers: consecutive LSNs, oldest first. */
typedef struct {
    mrd_buf *recs;
    uint64_t first; /* LSN of recs[head] */
    uint32_t head, count, cap;
    uint64_t bytes, bytes_max;
} wr_backlog;

typedef struct wr_pcache wr_pcache;

struct writer {
    mrd_node *node;
    const topo_region *region;
    wr_state state;
    char why[MRD_MSG_MAX]; /* why FENCED or FAILED */
    vol *vol;
    sqlx *sqlx;
    mrd_pagestore ps;
    wr_pcache *pcache; /* the SQL thread's copies of pages */
    mrd_vfs *vfs;
    sqlite3 *db;
    uint64_t max_pages; /* the volume's size limit in pages */
    uint64_t commit_lsn_seen; /* highest commit LSN (set on the SQL thread, read after jobs) */
    wr_backlog backlog;
    wr_stream streams[WRITER_STREAMS_MAX];
    struct wr_commit *blocked; /* commits waiting for room (MRD_EBUSY) */
    struct sql_job *pending, *pending_tail; /* requests waiting for the next commit group */
    uint32_t n_pending;
    bool group_running;
    /* the RPO (rpo.c) */
    h2_tls *client_tls;
    h2_client *rpo_client;
    h2_call *rpo_call;
    mrd_buf rpo_body;
    uv_timer_t rpo_timer;
    bool rpo_running, rpo_closing;
    bool rpo_reported; /* the agent has been asked once: ready only then */
    bool rpo_blocked; /* atomic: the SQL thread reads it */
    char rpo_why[MRD_MSG_MAX];
    struct sql_job *held; /* answers held while the RPO is exceeded */
    uint32_t n_held;
    mrd_metric *m_rpo_blocked, *m_rpo_refusals;
    mrd_metric *m_sql, *m_sql_errors, *m_commits, *m_records, *m_durable_seconds, *m_vdl;
    bool stopping;
    rg_inst_mode mode;     /* WRITER, DRAINED or STANDBY */
    uint64_t global_epoch; /* the region state's epoch this writer runs under */
    mrd_metric *m_refused; /* requests refused: draining, standing by, fenced */
    /* stalls (writer.c): a process stopped (SIGSTOP, a frozen VM) may wake up deposed */
    uv_timer_t beat;
    bool beat_running;
    uint64_t beat_ms;      /* the beat timer last ran then */
    bool stalled;          /* answers held until the region state is confirmed afresh */
    void (*confirm)(void *ud);
    void *confirm_ud;
};

#define WRITER_BEAT_MS 100u
#define WRITER_STALL_MS 1000u /* no beat for this long: the process was stopped or starved */

/* Whether answers must wait for a fresh word of the region state (a stall was seen). */
bool wr_stalled(writer *w);
/* Drops held answers without answering (their outcome is unknown to the client). */
void wr_held_drop(writer *w);

/* A draining writer has nothing in flight: every answer it owes is out. */
bool wr_drained(const writer *w);

/* store.c: the VFS's page store over the volume client (SQL thread side + loop side). */
void wr_store_init(writer *w);
/* The volume's VDL moved: retry commits that waited for room. */
void wr_store_on_vdl(writer *w);

/* sql.c: POST /v1/sql. */
void wr_sql_route(mrd_node *node, h2_req *req, void *ud);
void wr_sql_open(writer *w);
/* The client of a SQL request went away: the job finishes and answers nobody. */
void wr_sql_closed(h2_req *req);
/* Stopping: requests not yet in a group are answered 503. */
void wr_sql_drop_pending(writer *w);
/* Answers the requests held while the writer opens once they waited WRITER_OPEN_HOLD_MS,
 * or at once when it failed or was fenced instead (called at every beat). */
void wr_sql_hold_expire(writer *w, uint64_t now_ms);

/* rpo.c */
int wr_rpo_start(writer *w, mrd_msg *msg);
void wr_rpo_stop(writer *w);
bool wr_rpo_blocked(const writer *w);
void wr_rpo_status(const writer *w, mrd_buf *out);
/* sql.c: answers held for the RPO leave once it is met again (or the writer stops). */
void wr_rpo_release(writer *w);
bool wr_rpo_applies(const writer *w);

/* stream.c: GET /v1/log, and the backlog. */
int wr_backlog_init(wr_backlog *b, uint32_t cap, uint64_t bytes_max);
void wr_backlog_put(wr_backlog *b, uint64_t lsn, const uint8_t *data, size_t len);
void wr_stream_route(mrd_node *node, h2_req *req, void *ud);
void wr_stream_pump(writer *w);
void wr_stream_closed(writer *w, h2_req *req);
void wr_streams_end(writer *w);

#endif
