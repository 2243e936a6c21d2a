/* Inside the agent role: what agent.c, backlog.c, fill.c, primary.c, secondary.c and log.c
 * share. */
#ifndef MERIDIAN_AGENT_INT_H
#define MERIDIAN_AGENT_INT_H

#include "meridian/agent.h"
#include "meridian/region.h"
#include "meridian/volume.h"

#define AG_TICK_MS 100u
#define AG_RECONNECT_MS 500u
#define AG_FILL_RETRY_MS 2500u     /* a storage read that failed is tried again */
#define AG_CATCHUP_LSNS_MAX 65536u /* LSNs one catch-up read from storage covers */
#define AG_UNCOMMITTED_MAX 16384u  /* records received ahead of a mark (the writer has 4096) */
#define AG_CPL_RING 65536u         /* commit points whose checksum a secondary keeps */
#define AG_CHECKSUM_FILE "agent.checksum"
#define AG_REOPEN_MS 2000u /* a secondary's failed volume is recovered again after this */

/* Recent records by LSN, oldest first; LSNs increase but may skip (a writer restart). */
typedef struct {
    uint64_t lsn;
    bool cpl;
    uint32_t crc; /* primary: the rolling checksum up to and including this record */
    mrd_buf enc;
} ag_rec;

typedef struct {
    ag_rec *recs;
    uint32_t head, count, cap;
    uint32_t keep; /* records kept once committed; the rest of cap is for uncommitted ones */
    uint64_t bytes, bytes_max;
} ag_backlog;

/* Room for keep records plus AG_UNCOMMITTED_MAX received ahead of their mark. */
int ag_backlog_init(ag_backlog *b, uint32_t keep, uint64_t bytes_max);
void ag_backlog_free(ag_backlog *b);
int ag_backlog_put(ag_backlog *b, uint64_t lsn, bool cpl, const uint8_t *enc, size_t len);
ag_rec *ag_backlog_at(const ag_backlog *b, uint32_t i);
/* Index of the first record with lsn > x (count if none). */
uint32_t ag_backlog_after(const ag_backlog *b, uint64_t x);
void ag_backlog_drop_oldest(ag_backlog *b);
void ag_backlog_truncate_after(ag_backlog *b, uint64_t lsn);
bool ag_backlog_full(const ag_backlog *b);

typedef struct ag_fill ag_fill;

/* The primary's stream to one secondary region. */
typedef enum {
    LINK_IDLE,
    LINK_CONNECTING,
    LINK_OPENING,
    LINK_STREAMING,
    LINK_CATCHUP, /* sending records read from storage: the backlog no longer holds them */
} ag_link_state;

typedef struct {
    agent *a;
    int region; /* index into topo regions */
    const topo_node *peer;
    ag_link_state state;
    h2_client *client;
    h2_call *call;
    bool closing; /* client to close from the tick */
    wire_frame_reader fr;
    uint64_t sent_lsn;
    uint64_t retry_at_ms;
    ag_rec *catchup; /* records read from storage for this link, ascending */
    uint32_t n_catchup;
    uint64_t catchup_upto; /* the catch-up reaches here (0: none held) */
    uint64_t catchup_want; /* the range asked for */
    bool catchup_retry;    /* ask storage again from the tick */
    int checksum_match;    /* 1 equal, 0 different, -1 not comparable yet */
    uint64_t checksum_lsn;
    uint32_t checksum;
    char why[MRD_MSG_MAX];
} ag_link;

/* A local reader following a secondary's log (GET /v1/log). */
typedef struct {
    agent *a;
    h2_req *req;
    bool live;
    uint64_t sent_lsn, sent_vdl;
} ag_reader;

/* One instance of the region, asked for its status (monitor.c). */
typedef struct {
    const topo_node *node;
    h2_client *client;
    h2_call *call;
    bool closing;
    uint64_t sent_ms, last_ok_ms, retry_at_ms;
    int status;
    mrd_buf body;
    char role[12];
    uint64_t lag_ms;
} ag_probe;

#define AG_POLLS_MAX 64 /* GET /v1/region long polls held at once */

typedef struct {
    h2_req *req;
    uint64_t after;    /* answered when the state's version differs */
    uint64_t until_ms; /* or then */
    bool eager;        /* another agent: not held while this one starts */
} ag_poll;

struct agent {
    mrd_node *node;
    const topo_region *region;
    int region_idx;
    bool primary;
    h2_tls *client_tls;
    uv_timer_t tick;
    bool stopping;
    char ck_path[TOPO_PATH_MAX + 64];
    bool ck_file;                  /* the checksum file existed at start */
    uint64_t ck_lsn, ck_lsn_saved; /* from / to the checksum file */
    uint32_t ck_crc;
    ag_backlog backlog;
    mrd_buf scratch, frame;
    /* primary: following the writer's log */
    const topo_node *writer_node;
    h2_client *wc;
    bool wc_closing;
    h2_call *follow;
    wire_frame_reader wfr;
    bool follow_started, ever_started;
    uint64_t follow_retry_at_ms;
    uint64_t received_lsn, committed_lsn;
    uint64_t commit_bytes; /* bytes received since the last commit */
    uint32_t crc;          /* at committed_lsn */
    uint32_t recv_crc;     /* at received_lsn */
    bool crc_known;
    char gap[MRD_MSG_MAX]; /* why the log cannot continue, or empty */
    uint64_t gap_upto;     /* the writer's VDL beyond the gap */
    ag_fill *fill;         /* a gap fill from storage under way */
    uint64_t fill_retry_at_ms;
    ag_lag lag;
    bool lag_ready;
    ag_link links[TOPO_REGIONS_MAX];
    /* secondary */
    vol *vol;
    bool vol_ready;  /* recovered, resume point known */
    bool vol_failed; /* failed: reopened at reopen_at_ms */
    bool vol_closing;
    uint64_t reopen_at_ms;
    uint64_t open_head; /* the chain head recovery found */
    uint64_t chain_lsn; /* last record taken (submitted or checksummed) */
    uint64_t vdl;       /* local VDL */
    h2_req *in;         /* the primary's stream */
    char in_peer[TOPO_NAME_MAX];
    wire_frame_reader ifr;
    mrd_buf inbox, raw;
    wire_batch_iter pend_it;
    bool pend; /* raw holds a batch taken up to pend_it */
    bool paused;
    uint64_t *cpl_lsn; /* ring of commit points and their checksums */
    uint32_t *cpl_crc;
    uint32_t cpl_head, cpl_count;
    uint64_t acked_lsn;
    uint64_t records_in, frames_in, bytes_in, streams_refused;
    uint64_t in_frames; /* frames of the current stream */
    char in_why[MRD_MSG_MAX];
    ag_reader readers[AG_READERS_MAX];
    mrd_metric *m_lag_ms, *m_records, *m_bytes_raw, *m_bytes_sent, *m_durable;
    /* the region's control state (region.c) */
    rg_state rs;
    char rs_path[TOPO_PATH_MAX + 32];
    ag_poll polls[AG_POLLS_MAX];
    int n_polls;
    uint64_t settle_until_ms; /* answers wait for the other regions' word until then */
    uint64_t last_tick_ms;    /* a tick much later than AG_TICK_MS: the agent was stopped */
    rg_watch *peers[TOPO_REGIONS_MAX];
    bool peer_heard[TOPO_REGIONS_MAX];
    uint64_t last_cpl_lsn;     /* secondary: the newest commit received */
    uint64_t last_cpl_wall_ms; /* and when (wall clock) */
    char rejoin[MRD_MSG_MAX];  /* a diverged secondary's rejoin under way, or empty */
    int rejoin_step;           /* rejoin.c */
    uint64_t rejoin_head, rejoin_next_ms;
    h2_client *rj_client;
    h2_call *rj_call;
    int rj_node;               /* storage node being reset, or -1 for the writer's status */
    int rj_status;
    mrd_buf rj_body;
    bool rj_next_close;
    uint64_t rj_call_at_ms;
    char divergent_path[TOPO_PATH_MAX + 128];
    uint64_t divergent_after, divergent_to, divergent_records, divergent_commits;
    mrd_metric *m_switchovers, *m_failovers, *m_writer_failovers, *m_epoch;
    uint64_t counts[3]; /* switchovers, failovers, writer changes (region.counts) */
    ag_probe probes[TOPO_INSTANCES_MAX]; /* monitor.c */
    uint64_t writer_since_ms; /* the writer was named (or the agent started) then */
    bool no_candidate_said;
    const char *restart_why; /* a change of role: restart from `soon`, once answers left */
    uv_timer_t soon;
};

/* rejoin.c: a secondary whose volume diverged from the primary's history (it was
 * primary, or followed one, past the point where the new primary's epoch forks) saves
 * its divergent tail to a file, empties its storage nodes and resyncs from the start. */
void ag_rejoin_start(agent *a, uint64_t head);
void ag_rejoin_tail_read(agent *a, bool ok, const ag_rec *recs, uint32_t n, uint64_t end,
                         const char *why);
void ag_rejoin_tick(agent *a, uint64_t now);
/* At start: a rejoin a restart interrupted after the tail was saved (the REJOIN marker). */
bool ag_rejoin_pending(agent *a);

/* monitor.c: in-region writer failover */
void ag_monitor_start(agent *a);
void ag_monitor_tick(agent *a, uint64_t now);
void ag_monitor_stop(agent *a);

/* region.c */
int ag_region_init(agent *a, mrd_msg *msg);  /* loads region.json, patches the topology */
int ag_region_start(agent *a, mrd_msg *msg); /* routes, metrics, watches of the others */
void ag_region_tick(agent *a, uint64_t now);
void ag_region_stop(agent *a);
void ag_region_closed(agent *a, h2_req *req);
int ag_region_apply(agent *a, const rg_state *n, const char *reason, mrd_msg *msg);

/* agent.c */
void ag_checksum_save(agent *a, uint64_t lsn, uint32_t crc);

/* fill.c: records (after, upto] from the region's storage: into the backlog and committed
 * (link NULL: a gap in the agent's own log), or handed to a lagging link. */
int ag_fill_start(agent *a, ag_link *link, uint64_t after, uint64_t upto);
/* The region's own records (after, upto] along the chain from after, for
 * ag_rejoin_tail_read (a diverged region saving its tail). */
int ag_fill_tail(agent *a, uint64_t after, uint64_t upto);

/* primary.c */
void ag_primary_commit(agent *a, uint64_t vdl, uint64_t now);
/* A catch-up read for l: recs (ownership passes) reach upto; or it failed. */
void ag_link_catchup_done(ag_link *l, ag_rec *recs, uint32_t n, uint64_t upto);
void ag_link_catchup_failed(ag_link *l);
int ag_primary_start(agent *a, mrd_msg *msg);
void ag_primary_tick(agent *a, uint64_t now);
void ag_primary_stop(agent *a);
void ag_primary_status(agent *a, mrd_buf *out);
/* The region's writer instance changed: follow the new one's log. */
void ag_primary_writer_changed(agent *a);

/* secondary.c */
int ag_secondary_start(agent *a, mrd_msg *msg);
void ag_secondary_tick(agent *a, uint64_t now);
void ag_secondary_stop(agent *a);
void ag_secondary_status(agent *a, mrd_buf *out);
void ag_secondary_closed(agent *a, h2_req *req);

/* log.c: GET /v1/log for a secondary's readers */
void ag_log_route(mrd_node *node, h2_req *req, void *ud);
void ag_log_pump(agent *a);
void ag_log_closed(agent *a, h2_req *req);
void ag_log_end(agent *a);

#endif
