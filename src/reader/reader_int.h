/* Inside the reader role: what reader.c, stream.c, pages.c and sql.c share. */
#ifndef MERIDIAN_READER_INT_H
#define MERIDIAN_READER_INT_H

#include <sqlite3.h>

#include "meridian/reader.h"
#include "meridian/sql.h"
#include "meridian/sqlx.h"
#include "meridian/vfs.h"

#define RD_TICK_MS 20u
#define RD_RECONNECT_MS 200u
#define RD_READ_TIMEOUT_MS 15000u
#define RD_READ_RETRY_MS 50u
#define RD_READS_MAX 256u

/* A connection to a storage node. */
typedef struct {
    reader *r;
    const topo_node *tn;
    h2_client *client;
    bool closing;
    uint64_t reconnect_at_ms;
} rd_node;

typedef struct rd_read rd_read;

struct reader {
    mrd_node *node;
    const topo_region *region;
    const topo_node *writer_node; /* where the log stream comes from: writer, or agent */
    const topo_node *primary_writer; /* "strong" asks it for its VDL */
    h2_client *pc;                   /* connection to primary_writer, when not writer_node */
    bool pc_closing;
    rd_core *core;
    h2_tls *client_tls;
    uint64_t pages_per_pg;
    /* the log stream from the writer */
    h2_client *wc;
    bool wc_closing;
    h2_call *stream;
    bool stream_started; /* the first mark (the reset point) has arrived */
    wire_frame_reader fr;
    mrd_buf scratch;
    uint64_t stream_retry_at_ms;
    char stream_why[MRD_MSG_MAX];
    /* storage */
    rd_node nodes[QUORUM_SEGMENTS];
    uint32_t rr;
    rd_read *reads; /* in flight */
    bool heads_busy; /* a background head read is in flight */
    uint32_t n_reads;
    /* SQL */
    sqlx *sqlx;
    mrd_pagestore ps;
    mrd_vfs *vfs;
    sqlite3 *db;
    bool sql_ready;
    struct rd_wait *waits; /* requests waiting for the read point to move */
    uv_timer_t tick;
    bool stopping;
    mrd_metric *m_sql, *m_sql_errors, *m_lag_ms, *m_lag_lsn, *m_storage_reads, *m_resets,
        *m_applied;
};

/* stream.c */
void rd_stream_tick(reader *r, uint64_t now);
void rd_stream_stop(reader *r);
/* Starts the log stream over (a new starting point): the reader's pages are dropped. */
void rd_stream_restart(reader *r, const char *why);

/* pages.c: the page store over rd_core and the storage nodes. */
void rd_pages_init(reader *r);
void rd_nodes_tick(reader *r, uint64_t now);
void rd_reads_tick(reader *r, uint64_t now);
void rd_nodes_stop(reader *r);
void rd_reads_stop(reader *r);
/* The oldest page read in flight, for the status: ,"oldest_page_read":{...} (nothing if none). */
void rd_reads_status(reader *r, uint64_t now, mrd_buf *out);

/* sql.c */
void rd_primary_tick(reader *r, uint64_t now);
void rd_sql_route(mrd_node *node, h2_req *req, void *ud);
void rd_sql_open(reader *r);
void rd_sql_tick(reader *r, uint64_t now);
void rd_sql_closed(h2_req *req);

#endif
