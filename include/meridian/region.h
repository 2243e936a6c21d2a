/*
 * region: which region is primary, which instance writes in each region, and
 * the steps that change either (docs/failover.md).
 *
 * Each region's agent holds its region's state (rg_state) in a small file
 * replaced atomically, serves it at GET /v1/region and takes changes at
 * POST /v1/region. The global epoch only grows: a state at a higher epoch
 * always wins, and every process that acts on "who is primary" (writers,
 * readers, routers, agents, the CLI) follows the highest epoch it has seen.
 * Storage enforces it underneath: a writer promoted at global epoch G opens
 * its volume at volume epoch >= G * RG_EPOCH_STEP + 1, above any epoch of an
 * older primary, so storage refuses every record of the old history's writers
 * wherever the new epoch's fence has reached.
 *
 * The I/O-free parts: the state's JSON (encode, strict decode of hostile
 * bytes), the adoption rule, the writer's mode, and the planner of planned
 * switchovers and unplanned failovers (rg_plan), which looks at what every
 * region reports and names the next step; the CLI carries the step out and
 * asks again, so any crash of any participant leaves a state the next run
 * continues from. The libuv glue is rg_watch (a client that follows an
 * agent's state).
 */
#ifndef MERIDIAN_REGION_H
#define MERIDIAN_REGION_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/common.h"
#include "meridian/h2.h"
#include "meridian/json.h"
#include "meridian/topo.h"

#define RG_EPOCH_STEP 1000000ull /* volume epochs per global epoch */
#define RG_STATE_FILE "region.json"
#define RG_STATE_BYTES_MAX 4096u
#define RG_POLL_HOLD_MS 1000u /* GET /v1/region?after=V holds this long for a change */

typedef enum {
    RG_OP_NONE,
    RG_OP_SWITCHOVER, /* planned: this (old primary) region drains towards op_to */
} rg_op;

/* A region's control state, as its agent keeps it. */
typedef struct {
    char region[TOPO_NAME_MAX];  /* whose state */
    uint64_t epoch;              /* the global epoch this region knows; 0 at first */
    char primary[TOPO_NAME_MAX]; /* the primary region at epoch */
    uint64_t fork_lsn;           /* epoch's history continues the log after this LSN */
    char writer[TOPO_NAME_MAX];  /* this region's writer instance */
    uint64_t writer_gen;         /* in-region writer changes so far */
    rg_op op;                    /* an operation under way that involves this region */
    uint64_t op_epoch;           /* the epoch the operation moves to */
    char op_to[TOPO_NAME_MAX];   /* its target region */
    uint64_t version;            /* changes with every update; watchers compare it */
} rg_state;

/* The state of a region never told anything: the topology's primary at epoch 0. */
void rg_state_initial(const topology *t, int region, rg_state *out);
/* Strict: unknown keys, wrong types, names not in t refused, msg names the key. */
int rg_state_decode(const topology *t, const char *text, size_t len, rg_state *out,
                    mrd_msg *msg);
/* The same, for an object of a parsed document. */
int rg_state_from_json(const topology *t, const mrd_json_doc *doc, const mrd_json *obj,
                       rg_state *out, mrd_msg *msg);
/* An agent's answer to GET /v1/region: {"state": {...}, ...}: the state. */
int rg_state_decode_answer(const topology *t, const char *text, size_t len, rg_state *out,
                           mrd_msg *msg);
/* Appends the state's members (no braces) to out: "region":...,"epoch":... */
void rg_state_encode(const rg_state *s, mrd_buf *out);
int rg_state_load(const topology *t, const char *path, rg_state *out, mrd_msg *msg);
/* Writes the state durably (temp file, fdatasync, rename, folder fsync). */
int rg_state_save(const rg_state *s, const char *path, mrd_msg *msg);

/* What a process's topology follows of state s: the primary region, s's region's writer. */
void rg_state_to_topology(const rg_state *s, topology *t);

/* The lowest volume epoch a writer of a primary at global epoch g may open at. */
static inline uint64_t rg_volume_epoch_min(uint64_t g)
{
    return g * RG_EPOCH_STEP + 1;
}

/* ---- what an instance does -------------------------------------------------------------- */

typedef enum {
    RG_INST_WRITER,  /* open the volume and take writes */
    RG_INST_DRAINED, /* open the volume, finish what is in flight, take no new writes */
    RG_INST_STANDBY, /* the region is a secondary: the instance writes nothing */
    RG_INST_READER,  /* not this region's writer: serve reads */
} rg_inst_mode;

const char *rg_inst_mode_name(rg_inst_mode m);
/* Mode of instance `id` of region s->region under state s. */
rg_inst_mode rg_inst_mode_of(const rg_state *s, const char *id);

/* ---- the planner ------------------------------------------------------------------------ */

/* What the CLI learned from one region in this round. */
typedef struct {
    bool reachable;         /* its agent answered */
    rg_state st;
    uint64_t vdl;           /* the region's durable LSN: a secondary's replicated VDL */
    uint64_t primary_vdl;   /* secondary: the highest VDL the primary announced to it */
    /* the region's writer instance, when asked */
    bool writer_reachable;
    rg_inst_mode writer_mode;
    bool writer_ready;      /* open (WRITER: taking writes; DRAINED: drained) */
    uint64_t writer_epoch;  /* volume epoch it runs at */
    uint64_t writer_vdl;
    uint64_t writer_recovered_vdl; /* where its history starts: what recovery found */
} rg_view;

typedef enum {
    RG_STEP_DONE,        /* nothing to do: the target is primary everywhere reachable */
    RG_STEP_FAIL,        /* cannot go on: why says what */
    RG_STEP_WAIT,        /* something under way: ask again soon (why says what) */
    RG_STEP_SET,         /* POST set to region's agent */
} rg_step_kind;

typedef struct {
    rg_step_kind kind;
    int region;          /* SET: whose agent */
    rg_state set;        /* SET: the state to post */
    const char *name;    /* short step name for progress lines: "drain", "catch-up", ... */
    char why[MRD_MSG_MAX];
} rg_step;

typedef struct {
    const topology *topo;
    int target;          /* region to make primary */
    bool allow_loss;     /* unplanned failover: promote with what the target holds */
} rg_plan_req;

/*
 * The next step towards req->target being primary, from views[topo->region_count]
 * (one per region). Planned (allow_loss false): drain the old primary at epoch + 1,
 * wait until it has drained and the target holds its final VDL, promote the target
 * (fork = that VDL), then tell every other region; never promote a target that lacks
 * anything the old primary acknowledged. Unplanned: promote the target at epoch + 1
 * with fork = its VDL, whatever the old primary says or does not say, then tell the
 * others. Idempotent: a step already taken is never taken twice differently.
 */
void rg_plan(const rg_plan_req *req, const rg_view *views, rg_step *out);

/* The highest-epoch state among views (reachable ones); NULL if none. */
const rg_state *rg_highest(const rg_view *views, int n);

/* ---- rg_watch: following an agent's state (libuv glue) ------------------------------------ */

typedef struct rg_watch rg_watch;
/* A new state (first answer, or a change); or err != 0 when the agent could not be asked
 * (st is NULL then). */
typedef void (*rg_watch_cb)(rg_watch *w, const rg_state *st, int err, void *ud);

/* Follows region `region`'s agent (its address in t) with long polls; tls may be NULL. */
int rg_watch_start(uv_loop_t *loop, const topology *t, int region, h2_tls *tls, rg_watch_cb cb,
                   void *ud, rg_watch **out, mrd_msg *msg);
/*
 * Drops the question in flight (its answer may have waited in a socket while this
 * process was stopped) and asks with fresh=1: the agent answers once it has heard from
 * every other region's agent again. The answer is reported even when nothing changed;
 * a failure is reported as usual.
 */
void rg_watch_refresh(rg_watch *w);
/* Asks to be answered at once while the agent starts (agents asking each other: two
 * agents starting together would otherwise each wait for the other's word). */
void rg_watch_set_eager(rg_watch *w);
void rg_watch_stop(rg_watch *w);

#endif
