/*
 * The region simulator (sim.h). One seed is a run: 2 or 3 regions start as
 * the topology says (east primary at epoch 0), then 3..5 operations follow,
 * each a scenario of one or two CLI commands under faults:
 *
 *   switchover     a planned switchover to a random region (perhaps the primary)
 *   there-and-back a switchover to a region, then one back to the old primary
 *   retarget       a switchover whose CLI dies mid-way, then one to a third region
 *   abort          a switchover whose CLI dies once the primary drains, then a
 *                  switchover to the current primary (which calls it off)
 *   failover       an unplanned failover, the old primary down or up
 *   primary-lost   a planned switchover while the primary is down: the CLI must
 *                  fail and say why; then the unplanned failover
 *   failover-after-interrupt  a switchover whose CLI dies mid-way, its target
 *                  goes down, then an unplanned failover to the third region
 *
 * Each round: faults happen (during the operation's fault window only), the
 * world moves (agents return, writers restart, open and write, volumes
 * replicate, agents learn higher epochs from their peers as peer_state
 * does), the CLI asks every region (the world may move between two asks),
 * rg_plan names a step, and a SET is posted to one agent, which accepts it
 * by the rule of src/agent/region.c (`acceptable`) and keeps it durably.
 *
 * Invariants, checked as they can be:
 *   (a) a planned promotion never happens while the target lacks an
 *       acknowledged write (of the old primary or of any earlier epoch since
 *       the last unplanned failover): checked at the moment it is applied;
 *       no acknowledged write is ever lost unless an unplanned failover to a
 *       higher epoch excuses it; no region ever holds a history that differs
 *       from its primary's unless an unplanned failover happened
 *   (b) at most one region ever believes itself primary at a given epoch; no
 *       agent's epoch ever goes down
 *   (c) every command ends in DONE within SIM_LIVENESS_ROUNDS once the fault
 *       window is over and everything answers; FAIL comes only with a reason,
 *       during faults or with a region held down, and a planned switchover
 *       whose primary does not answer always FAILs
 *   (d) once done: the target's fork_lsn is what its first writer of the new
 *       epoch recovered; every region is at the target's epoch with
 *       primary = target, no operation and the same fork_lsn; a second run of
 *       the command promotes nothing
 *
 * Two limits of what the planner is told, counted and failed only with
 * strict (MRD_SIM_STRICT=1):
 *   - forks_unconfirmed: the fork step needs the writer that opened at
 *     exactly rg_volume_epoch_min(G); when it dies before its fork step
 *     landed (the CLI never saw it, or the post was lost), the next writer
 *     opens higher and what the first recovered is known nowhere, so an
 *     unplanned failover whose target's VDL grew after the CLI looked keeps
 *     the promotion's fork. A DONE while the first writer still runs with
 *     another fork fails always.
 *   - writer_changes_undone: a promote or tell step is built from the state
 *     the CLI saw; if the agent replaced its writer (writer_gen + 1) in
 *     between, the post raises the epoch, so `acceptable` takes it and the
 *     old writer is back.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/json.h"
#include "region_topo.h"
#include "sim.h"

#define SIM_LSN_MAX 2048u       /* records per region's volume */
#define SIM_ACKED_MAX 4096u     /* acknowledged writes remembered per run */
#define SIM_EPOCHS_MAX 128u     /* global epochs per run */
#define SIM_FAULT_ROUNDS_MAX 40 /* an operation's fault window */
#define SIM_LIVENESS_ROUNDS 100 /* DONE within this many rounds once faults are over */
#define SIM_SETTLE_ROUNDS 12    /* quiet rounds after an operation, before its second run */
#define SIM_INFLIGHT_MAX 4      /* writes a writer has in flight */

typedef struct {
    uint32_t tag; /* which write */
    uint64_t chk; /* rolling checksum of the history up to here, as the agents keep one */
} sim_rec;

typedef struct {
    /* the agent: its state (durable) and whether anything reaches it */
    rg_state st;
    bool up;
    bool held_down;  /* by the scenario, until the operation ends */
    bool held_up;    /* by the scenario: no outage until the operation ends */
    int down_rounds; /* a fault: rounds until it answers again */
    /* the region's volume */
    uint64_t vdl;
    sim_rec rec[SIM_LSN_MAX + 1];
    uint64_t vol_epoch;   /* the highest volume epoch a writer claimed here */
    uint64_t primary_vdl; /* the VDL its primary last announced */
    int link_down_rounds; /* replication from its primary stalls */
    /* the writer instance the state names (a dead one is replaced by the other instance) */
    char w_id[TOPO_NAME_MAX];
    bool w_running; /* its process runs (it read its agent's state at start) */
    int w_start_in; /* not running: rounds until it starts */
    int w_open_in;  /* WRITER, DRAINED: rounds of recovery left; 0 once open */
    rg_inst_mode w_mode;
    uint64_t w_gepoch;  /* the global epoch it runs for */
    uint64_t w_version; /* the version of the state it acts on */
    uint64_t w_epoch;   /* the volume epoch it opened at */
    uint64_t w_recovered;
    int w_vdl_in; /* open: rounds until its VDL shows what it recovered (until the new
                   * epoch's first records are durable, src/quorum/writer.c says 0) */
    int w_inflight;
    /* the writer that opened at exactly rg_volume_epoch_min(first_g) */
    uint64_t first_g, first_recovered;
    bool first_seen; /* the CLI saw it open */
} sim_region;

typedef struct {
    uint64_t lsn;
    uint32_t tag;
    uint64_t gepoch; /* the global epoch of the writer that acknowledged it */
    int region;
} sim_ack;

typedef struct {
    const rsim_options *o;
    rsim_result *res;
    const topology *t;
    int n;
    uint64_t rng;
    uint64_t round, op_round;
    int fault_end; /* op_round at which this operation's faults stop */
    bool faults;
    sim_region rg[RT_REGIONS_MAX];
    uint32_t tag;
    sim_ack acked[SIM_ACKED_MAX];
    uint32_t n_acked;
    uint64_t lossy_epoch; /* the highest epoch an unplanned failover promoted */
    int primary_at[SIM_EPOCHS_MAX];
    int target; /* the command running */
    bool allow_loss;
    int stop_on_drain; /* >= 0: the CLI dies once this region's state has a switchover */
    bool failed;
} sim;

/* ---- small helpers --------------------------------------------------------------------------- */

static uint64_t rnd(sim *s)
{
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static int below(sim *s, int n)
{
    return (int)(rnd(s) % (uint64_t)n);
}

static bool percent(sim *s, int p)
{
    return below(s, 100) < p;
}

static uint64_t mix(uint64_t h, uint32_t tag)
{
    h ^= tag + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

static void fail(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(sim *s, const char *fmt, ...)
{
    if (s->failed) return;
    s->failed = true;
    int len =
        snprintf(s->res->failure, sizeof(s->res->failure),
                 "seed %" PRIu64 " round %" PRIu64 " (%d regions): ", s->o->seed, s->round, s->n);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->res->failure + len, sizeof(s->res->failure) - (size_t)len, fmt, ap);
    va_end(ap);
}

static void trace(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(sim *s, const char *fmt, ...)
{
    if (!s->o->verbose) return;
    printf("[%5" PRIu64 "] ", s->round);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static const char *name(sim *s, int r)
{
    return s->t->regions[r].name;
}

static int region_of(sim *s, const char *nm)
{
    for (int r = 0; r < s->n; r++)
        if (strcmp(name(s, r), nm) == 0) return r;
    return -1;
}

static bool own_primary(const rg_state *st)
{
    return strcmp(st->primary, st->region) == 0;
}

/* The region primary at the highest epoch any agent holds (whether it answers or not). */
static int true_primary(sim *s)
{
    int best = -1;
    for (int r = 0; r < s->n; r++)
        if (own_primary(&s->rg[r].st) && (best < 0 || s->rg[r].st.epoch > s->rg[best].st.epoch))
            best = r;
    return best;
}

/* ---- acknowledged writes ------------------------------------------------------------------ */

/* Every acknowledged write not excused by an unplanned failover is in region r's history. */
static void check_acked(sim *s, int r, const char *when)
{
    const sim_region *g = &s->rg[r];
    for (uint32_t i = 0; i < s->n_acked && !s->failed; i++) {
        const sim_ack *a = &s->acked[i];
        if (a->gepoch < s->lossy_epoch) continue;
        if (a->lsn > g->vdl || g->rec[a->lsn].tag != a->tag)
            fail(s,
                 "%s: %s lacks LSN %" PRIu64 " (write %u) that %s acknowledged at epoch %" PRIu64
                 "; %s holds LSNs up to %" PRIu64,
                 when, name(s, r), a->lsn, a->tag, name(s, a->region), a->gepoch, name(s, r),
                 g->vdl);
    }
}

/* ---- agents ---------------------------------------------------------------------------------- */

/* The agent's acceptance rule for a posted state (src/agent/region.c, acceptable). */
static bool acceptable(const rg_state *c, const rg_state *n)
{
    if (strcmp(n->region, c->region) != 0) return false;
    if (n->epoch < c->epoch) return false;
    if (n->epoch == c->epoch && strcmp(n->primary, c->primary) != 0) return false;
    if (n->epoch == c->epoch && n->writer_gen < c->writer_gen) return false;
    return true;
}

/* The region's volume held records of an older history above the new epoch's fork:
 * the agent saves them aside and empties the volume (src/agent/rejoin.c). */
static void rejoin(sim *s, int r, const char *why)
{
    sim_region *g = &s->rg[r];
    s->res->rejoins++;
    trace(s, "%s rejoins: %s; its volume (LSN %" PRIu64 ") is emptied", name(s, r), why, g->vdl);
    if (s->lossy_epoch == 0)
        fail(s, "%s rejoins (%s) though no unplanned failover ever happened", name(s, r), why);
    g->vdl = 0;
    g->primary_vdl = 0;
}

/* Agent r takes state n, durably; unplanned: a promotion in it comes from a failover. */
static void adopt(sim *s, int r, const rg_state *n, const char *how, bool unplanned)
{
    sim_region *g = &s->rg[r];
    rg_state old = g->st;
    if (n->epoch < old.epoch)
        fail(s, "%s's epoch goes down from %" PRIu64 " to %" PRIu64 " (%s)", name(s, r), old.epoch,
             n->epoch, how);
    if (n->epoch >= SIM_EPOCHS_MAX) return fail(s, "epoch %" PRIu64 " too high", n->epoch);
    if (n->writer_gen < old.writer_gen) {
        s->res->writer_changes_undone++;
        trace(s,
              "%s's writer change is undone: %s (writer_gen %" PRIu64 ") again instead of %s "
              "(%" PRIu64 ")",
              name(s, r), n->writer, n->writer_gen, old.writer, old.writer_gen);
        if (s->o->strict)
            fail(s,
                 "%s's writer_gen goes down from %" PRIu64 " to %" PRIu64 " (%s): %s replaces "
                 "%s again",
                 name(s, r), old.writer_gen, n->writer_gen, how, n->writer, old.writer);
    }
    g->st = *n;
    g->st.version = old.version + 1;
    trace(s, "%s takes (%s): epoch %" PRIu64 " primary %s fork %" PRIu64 " op %s%s", name(s, r),
          how, n->epoch, n->primary, n->fork_lsn, n->op ? "switchover to " : "none",
          n->op ? n->op_to : "");
    if (own_primary(n)) {
        int *p = &s->primary_at[n->epoch];
        if (*p >= 0 && *p != r)
            fail(s, "two regions believe themselves primary at epoch %" PRIu64 ": %s and %s",
                 n->epoch, name(s, *p), name(s, r));
        *p = r;
        if (!own_primary(&old) || n->epoch > old.epoch) {
            if (unplanned) {
                s->res->promotions_unplanned++;
                if (n->epoch > s->lossy_epoch) s->lossy_epoch = n->epoch;
            } else {
                s->res->promotions_planned++;
                check_acked(s, r, "planned promotion");
            }
        }
    } else if (n->epoch > old.epoch && g->vdl > n->fork_lsn) {
        char why[96];
        snprintf(why, sizeof(why), "LSN %" PRIu64 " above the fork %" PRIu64 " of epoch %" PRIu64,
                 g->vdl, n->fork_lsn, n->epoch);
        rejoin(s, r, why);
    }
}

/* What peer_state does with a peer's higher epoch (src/agent/region.c). */
static void learn_from_peers(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    int q = below(s, s->n);
    if (q == r || !g->up || !s->rg[q].up || s->rg[q].st.epoch <= g->st.epoch || percent(s, 50))
        return;
    const rg_state *p = &s->rg[q].st;
    rg_state n = g->st;
    n.epoch = p->epoch;
    snprintf(n.primary, sizeof(n.primary), "%s", p->primary);
    n.fork_lsn = p->fork_lsn;
    n.op = RG_OP_NONE;
    n.op_epoch = 0;
    n.op_to[0] = '\0';
    s->res->learned_from_peers++;
    char how[64];
    snprintf(how, sizeof(how), "from its peer %s", name(s, q));
    adopt(s, r, &n, how, false);
}

/* ---- writers --------------------------------------------------------------------------------- */

static void writer_stop(sim *s, int r, int start_in)
{
    sim_region *g = &s->rg[r];
    g->w_running = false;
    g->w_start_in = start_in;
    g->w_open_in = 0;
    g->w_vdl_in = 0;
    g->w_inflight = 0; /* never acknowledged */
}

/* The process starts and reads its agent's state (src/cmd/instance.c, start). */
static void writer_start(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    g->w_running = true;
    memcpy(g->w_id, g->st.writer, sizeof(g->w_id));
    g->w_mode = rg_inst_mode_of(&g->st, g->w_id);
    g->w_gepoch = g->st.epoch;
    g->w_version = g->st.version;
    g->w_epoch = g->w_recovered = 0;
    g->w_inflight = 0;
    g->w_open_in = g->w_mode == RG_INST_STANDBY ? 0 : 1 + below(s, 3);
    s->res->writer_restarts++;
    trace(s, "%s's writer %s starts: %s at global epoch %" PRIu64, name(s, r), g->w_id,
          rg_inst_mode_name(g->w_mode), g->w_gepoch);
}

/* Recovery done: the volume epoch is claimed, the recovered VDL known. */
static void writer_open(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    uint64_t floor = g->w_gepoch > 0 ? rg_volume_epoch_min(g->w_gepoch) : 0;
    g->w_epoch = g->vol_epoch + 1 > floor ? g->vol_epoch + 1 : floor;
    g->vol_epoch = g->w_epoch;
    g->w_recovered = g->vdl;
    g->w_vdl_in = below(s, 3);
    if (g->w_gepoch > 0 && g->w_epoch == floor) {
        g->first_g = g->w_gepoch;
        g->first_recovered = g->vdl;
        g->first_seen = false;
    }
    trace(s, "%s's writer opens (%s) at volume epoch %" PRIu64 ", recovered VDL %" PRIu64,
          name(s, r), rg_inst_mode_name(g->w_mode), g->w_epoch, g->w_recovered);
}

/* A new state reached the writer (src/writer/writer.c, writer_region_changed). */
static void writer_learn(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    rg_inst_mode m = rg_inst_mode_of(&g->st, g->w_id);
    bool open_now = g->w_mode == RG_INST_WRITER || g->w_mode == RG_INST_DRAINED;
    bool open_next = m == RG_INST_WRITER || m == RG_INST_DRAINED;
    g->w_version = g->st.version;
    if (open_now && open_next && g->st.epoch == g->w_gepoch) {
        if (m != g->w_mode) trace(s, "%s's writer is now %s", name(s, r), rg_inst_mode_name(m));
        g->w_mode = m;
        return;
    }
    if (m == g->w_mode && g->st.epoch == g->w_gepoch) return;
    trace(s, "%s's writer restarts: now %s at global epoch %" PRIu64, name(s, r),
          rg_inst_mode_name(m), g->st.epoch);
    writer_stop(s, r, below(s, 2));
}

static void append(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    uint64_t l = ++g->vdl;
    g->rec[l].tag = ++s->tag;
    g->rec[l].chk = mix(g->rec[l - 1].chk, s->tag);
    if (s->n_acked < SIM_ACKED_MAX)
        s->acked[s->n_acked++] =
            (sim_ack){.lsn = l, .tag = s->tag, .gepoch = g->w_gepoch, .region = r};
    s->res->writes_acked++;
}

/* An open writer: a WRITER takes new writes, both finish those in flight. */
static void writes(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    if (g->w_mode != RG_INST_WRITER && g->w_mode != RG_INST_DRAINED) return;
    if (!own_primary(&g->st)) { /* the agent took the secondary role: storage fences it */
        g->w_inflight = 0;
        return;
    }
    bool room = g->vdl + (uint64_t)g->w_inflight + 4 < SIM_LSN_MAX && s->n_acked < SIM_ACKED_MAX;
    if (g->w_mode == RG_INST_WRITER && room && g->w_inflight < SIM_INFLIGHT_MAX)
        g->w_inflight += below(s, 3);
    int done = below(s, g->w_inflight + 1);
    for (int i = 0; i < done; i++)
        append(s, r);
    g->w_inflight -= done;
}

static void writer_tick(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    if (!g->w_running) {
        if (g->w_start_in > 0)
            g->w_start_in--;
        else if (g->up) /* it waits for its agent's first answer */
            writer_start(s, r);
        return;
    }
    if (g->up && g->st.version != g->w_version && !percent(s, 30)) {
        writer_learn(s, r);
        if (!g->w_running) return;
    }
    if (g->w_open_in > 0) {
        if (--g->w_open_in == 0) writer_open(s, r);
        return;
    }
    if (g->w_vdl_in > 0) {
        g->w_vdl_in--;
        return;
    }
    writes(s, r);
}

/* ---- replication ----------------------------------------------------------------------------- */

/* A secondary follows the primary its state names, at the same epoch, when both answer. */
static void replicate(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    if (!g->up || own_primary(&g->st) || g->link_down_rounds > 0) return;
    int p = region_of(s, g->st.primary);
    const sim_region *src = &s->rg[p];
    if (!src->up || !own_primary(&src->st) || src->st.epoch != g->st.epoch) return;
    g->primary_vdl = src->vdl;
    uint64_t m = g->vdl < src->vdl ? g->vdl : src->vdl;
    if (g->vdl > src->vdl || g->rec[m].chk != src->rec[m].chk) {
        char why[96];
        snprintf(why, sizeof(why), "its history differs from %s's at or below LSN %" PRIu64,
                 name(s, p), g->vdl);
        return rejoin(s, r, why);
    }
    uint64_t gap = src->vdl - g->vdl;
    uint64_t step = (uint64_t)below(s, 8) + gap / 4;
    if (step > gap) step = gap;
    memcpy(&g->rec[g->vdl + 1], &src->rec[g->vdl + 1], step * sizeof(sim_rec));
    g->vdl += step;
}

/* ---- the world ------------------------------------------------------------------------------- */

static void world_step(sim *s)
{
    for (int r = 0; r < s->n; r++) {
        sim_region *g = &s->rg[r];
        if (!g->up && !g->held_down && g->down_rounds > 0 && --g->down_rounds == 0) {
            g->up = true;
            trace(s, "%s's agent answers again", name(s, r));
        }
        if (g->link_down_rounds > 0) g->link_down_rounds--;
    }
    int first = below(s, s->n);
    for (int i = 0; i < s->n; i++)
        writer_tick(s, (first + i) % s->n);
    for (int i = 0; i < s->n; i++)
        replicate(s, (first + i) % s->n);
    for (int i = 0; i < s->n; i++)
        learn_from_peers(s, (first + i) % s->n);
}

/* The region's agent replaces its writer, taken for dead, by the other instance. */
static void replace_writer(sim *s, int r)
{
    sim_region *g = &s->rg[r];
    rg_state n = g->st;
    const char *nm = name(s, r);
    bool w1 = strncmp(n.writer + strlen(nm), "-w1", 4) == 0;
    snprintf(n.writer, sizeof(n.writer), "%s-%s", nm, w1 ? "r1" : "w1");
    n.writer_gen++;
    s->res->writer_replacements++;
    adopt(s, r, &n, "writer replaced", false);
    writer_stop(s, r, below(s, 3));
}

static void faults(sim *s)
{
    for (int r = 0; r < s->n; r++) {
        sim_region *g = &s->rg[r];
        if (g->up && !g->held_up && percent(s, 3)) {
            g->up = false;
            g->down_rounds = 1 + below(s, 8);
            s->res->agent_outages++;
            trace(s, "%s's agent stops answering for %d rounds", name(s, r), g->down_rounds);
        }
        if (g->up && percent(s, 2)) replace_writer(s, r);
        if (g->w_running && percent(s, 3)) {
            s->res->writer_crashes++;
            trace(s, "%s's writer crashes (%d writes in flight)", name(s, r), g->w_inflight);
            writer_stop(s, r, below(s, 3));
        }
        if (percent(s, 4)) {
            g->link_down_rounds = 1 + below(s, 6);
            s->res->link_stalls++;
        }
    }
}

/* Faults over: every agent not held down answers, every link flows. */
static void heal(sim *s)
{
    for (int r = 0; r < s->n; r++) {
        if (!s->rg[r].held_down && !s->rg[r].up) {
            s->rg[r].up = true;
            trace(s, "%s's agent answers again (faults over)", name(s, r));
        }
        s->rg[r].link_down_rounds = 0;
    }
}

static void round_begin(sim *s)
{
    s->round++;
    s->op_round++;
    s->res->rounds++;
    s->faults = (int)s->op_round < s->fault_end;
    if (s->faults)
        faults(s);
    else
        heal(s);
    world_step(s);
}

/* Cheap checks every round: the primary holds the highest acknowledged LSN that must survive. */
static void check_round(sim *s)
{
    int p = true_primary(s);
    if (p < 0) return fail(s, "no region believes itself primary");
    for (uint32_t i = s->n_acked; i-- > 0 && !s->failed;) {
        const sim_ack *a = &s->acked[i];
        if (a->gepoch < s->lossy_epoch) continue;
        if (a->lsn > s->rg[p].vdl)
            fail(s,
                 "the primary %s holds LSN %" PRIu64 ", below LSN %" PRIu64
                 " acknowledged by %s at epoch %" PRIu64,
                 name(s, p), s->rg[p].vdl, a->lsn, name(s, a->region), a->gepoch);
        break;
    }
}

/* ---- the CLI --------------------------------------------------------------------------------- */

/* What ask_agent and ask_writer (src/ctl/failover.c) learn from region r. */
static void ask(sim *s, int r, rg_view *v)
{
    sim_region *g = &s->rg[r];
    memset(v, 0, sizeof(*v));
    if (!g->up) return;
    v->reachable = true;
    v->st = g->st;
    v->vdl = g->vdl;
    v->primary_vdl = g->primary_vdl;
    if (!g->w_running || strcmp(g->w_id, g->st.writer) != 0) return;
    v->writer_reachable = true;
    v->writer_mode = g->w_mode;
    if (g->w_open_in > 0) return; /* recovering: no epoch, no VDL yet */
    bool fenced = g->w_mode != RG_INST_STANDBY && !own_primary(&g->st);
    v->writer_ready = g->w_mode == RG_INST_DRAINED ? g->w_inflight == 0 && !fenced : !fenced;
    if (g->w_mode == RG_INST_STANDBY) return;
    v->writer_epoch = g->w_epoch;
    v->writer_vdl = g->w_vdl_in > 0 ? 0 : g->vdl; /* a drained writer says "drained" then too */
    v->writer_recovered_vdl = g->w_recovered;
    if (g->first_g > 0 && g->w_epoch == rg_volume_epoch_min(g->first_g)) g->first_seen = true;
}

static void observe(sim *s, rg_view *views)
{
    for (int r = 0; r < s->n; r++) {
        if (percent(s, 20)) world_step(s); /* the CLI asks one region after the other */
        ask(s, r, &views[r]);
    }
}

/* RSIM_BROKEN_NO_CATCH_UP: the catch-up wait replaced by the promotion. */
static void broken_no_catch_up(sim *s, const rg_view *views, rg_step *step)
{
    if (step->kind != RG_STEP_WAIT || strcmp(step->name, "catch-up") != 0) return;
    const rg_state *h = rg_highest(views, s->n);
    const rg_view *pv = &views[region_of(s, h->primary)], *tv = &views[s->target];
    step->kind = RG_STEP_SET;
    step->region = s->target;
    step->set = tv->st;
    step->set.epoch = pv->st.op_epoch;
    snprintf(step->set.primary, sizeof(step->set.primary), "%s", name(s, s->target));
    step->set.fork_lsn = pv->writer_vdl;
    step->name = "promote";
}

static void plan(sim *s, const rg_view *views, rg_step *step)
{
    rg_plan_req req = {.topo = s->t, .target = s->target, .allow_loss = s->allow_loss};
    rg_plan(&req, views, step);
    if (s->o->planner == RSIM_BROKEN_NO_CATCH_UP) broken_no_catch_up(s, views, step);
}

/* Equal as the JSON says them (bytes after a name's NUL do not count). */
static bool same_state(const rg_state *a, const rg_state *b)
{
    return strcmp(a->region, b->region) == 0 && a->epoch == b->epoch &&
           strcmp(a->primary, b->primary) == 0 && a->fork_lsn == b->fork_lsn &&
           strcmp(a->writer, b->writer) == 0 && a->writer_gen == b->writer_gen && a->op == b->op &&
           a->op_epoch == b->op_epoch && strcmp(a->op_to, b->op_to) == 0 &&
           a->version == b->version;
}

/* A step is well formed; a SET survives the trip through JSON to the agent, which receives
 * *posted. */
static void check_step(sim *s, const rg_view *views, const rg_step *step, rg_state *posted)
{
    if (step->name == NULL || step->why[0] == '\0')
        return fail(s, "a step without a name or a reason (kind %d)", step->kind);
    const rg_state *h = rg_highest(views, s->n);
    if (!s->allow_loss && h != NULL && views[s->target].reachable) {
        int p = region_of(s, h->primary);
        if (p != s->target && !views[p].reachable && step->kind != RG_STEP_FAIL)
            return fail(s, "a planned switchover with the primary %s not answering: step %s (%s)",
                        name(s, p), step->name, step->why);
    }
    if (step->kind == RG_STEP_FAIL && !s->faults) {
        bool held = false;
        for (int r = 0; r < s->n; r++)
            held |= s->rg[r].held_down;
        if (!held) return fail(s, "FAIL with every region answering: %s", step->why);
    }
    if (step->kind != RG_STEP_SET) return;
    if (step->region < 0 || step->region >= s->n || !views[step->region].reachable)
        return fail(s, "SET to region %d, which did not answer", step->region);
    mrd_buf b;
    mrd_buf_init(&b);
    mrd_buf_printf(&b, "{");
    rg_state_encode(&step->set, &b);
    mrd_buf_printf(&b, "}");
    rg_state *back = posted;
    mrd_msg msg = {{0}};
    if (b.data == NULL || rg_state_decode(s->t, (const char *)b.data, b.len, back, &msg) != 0)
        fail(s, "the agent cannot decode step %s's state: %s", step->name, msg.text);
    else if (!same_state(back, &step->set))
        fail(s, "step %s's state changes on its way through JSON", step->name);
    else if (strcmp(back->region, name(s, step->region)) != 0)
        fail(s, "step %s posts %s's state to %s", step->name, back->region, name(s, step->region));
    mrd_buf_free(&b);
}

/* POST /v1/region: perhaps lost on the way there, refused or applied, perhaps unanswered. */
static void post(sim *s, const rg_step *step, const rg_state *posted)
{
    sim_region *g = &s->rg[step->region];
    s->res->sets++;
    if (percent(s, 25)) world_step(s); /* time passes between the asks and the post */
    if (s->faults && percent(s, 3)) {
        s->res->cli_crashes++;
        return trace(s, "the CLI dies before posting %s", step->name);
    }
    if (!g->up) return trace(s, "%s's agent does not answer the post", name(s, step->region));
    if (s->faults && percent(s, 4)) replace_writer(s, step->region); /* since the CLI asked */
    if (s->faults && percent(s, 6)) {
        s->res->sets_lost_before++;
        return trace(s, "the post of %s is lost", step->name);
    }
    if (!acceptable(&g->st, posted)) {
        s->res->sets_refused++;
        return trace(s, "%s refuses %s (stale)", name(s, step->region), step->name);
    }
    rg_state n = *posted;
    n.version = g->st.version;
    if (!same_state(&n, &g->st)) { /* the same state again (a retried step) changes nothing */
        s->res->sets_applied++;
        if (strcmp(step->name, "undrain") == 0) s->res->undrains++;
        if (strcmp(step->name, "fork") == 0) s->res->forks_fixed++;
        adopt(s, step->region, &n, step->name, s->allow_loss);
    }
    if (s->faults && percent(s, 6)) {
        s->res->sets_lost_after++;
        trace(s, "the answer to %s is lost", step->name);
    }
}

/* Once DONE: every region that answered agrees with the target, whose fork is its first
 * writer's recovered VDL if that writer is still there to say it. */
static void check_done(sim *s, const rg_view *views)
{
    const rg_state *ts = &views[s->target].st;
    const rg_view *tv = &views[s->target];
    if (!own_primary(ts) || ts->op != RG_OP_NONE)
        return fail(s, "DONE, but %s is not primary without an operation", name(s, s->target));
    if (tv->writer_reachable && tv->writer_epoch == rg_volume_epoch_min(ts->epoch) &&
        tv->writer_recovered_vdl != ts->fork_lsn)
        return fail(s,
                    "DONE with fork %" PRIu64 ", but %s's first writer of epoch %" PRIu64
                    " recovered VDL %" PRIu64,
                    ts->fork_lsn, name(s, s->target), ts->epoch, tv->writer_recovered_vdl);
    for (int r = 0; r < s->n; r++) {
        const rg_state *st = &views[r].st;
        if (!views[r].reachable) continue;
        if (st->epoch != ts->epoch || strcmp(st->primary, ts->primary) != 0 ||
            st->op != RG_OP_NONE || st->fork_lsn != ts->fork_lsn)
            return fail(s,
                        "DONE, but %s holds epoch %" PRIu64 " primary %s fork %" PRIu64
                        " op %d; %s holds epoch %" PRIu64 " fork %" PRIu64,
                        name(s, r), st->epoch, st->primary, st->fork_lsn, st->op,
                        name(s, s->target), ts->epoch, ts->fork_lsn);
    }
}

enum { CLI_DONE, CLI_FAIL, CLI_STOPPED };

/* One run of the command until it ends; stop_after > 0: the CLI dies after that many rounds. */
static int cli_run(sim *s, int target, bool allow_loss, int stop_after, rg_step *step)
{
    s->target = target;
    s->allow_loss = allow_loss;
    s->res->cli_runs++;
    trace(s, "CLI: %s --to %s", allow_loss ? "failover" : "switchover", name(s, target));
    for (int i = 1; !s->failed; i++) {
        if ((int)s->op_round >= s->fault_end + SIM_LIVENESS_ROUNDS) {
            fail(s, "%s to %s: not done %d rounds after the faults ended; last step %s: %s",
                 allow_loss ? "failover" : "switchover", name(s, target), SIM_LIVENESS_ROUNDS,
                 step->name, step->why);
            break;
        }
        round_begin(s);
        rg_view views[RT_REGIONS_MAX];
        observe(s, views);
        plan(s, views, step);
        rg_state posted;
        check_step(s, views, step, &posted);
        trace(s, "CLI step %s %s%s: %s", step->name, step->kind == RG_STEP_SET ? "to " : "",
              step->kind == RG_STEP_SET ? name(s, step->region) : "", step->why);
        if (step->kind == RG_STEP_DONE) {
            check_done(s, views);
            return CLI_DONE;
        }
        if (step->kind == RG_STEP_FAIL) {
            s->res->fails++;
            return CLI_FAIL;
        }
        if (step->kind == RG_STEP_SET && !s->failed) post(s, step, &posted);
        if (!s->failed) check_round(s);
        bool drain_seen = s->stop_on_drain >= 0 && s->rg[s->stop_on_drain].st.op != RG_OP_NONE;
        if ((stop_after > 0 && i >= stop_after) || drain_seen) {
            s->res->cli_crashes++;
            trace(s, "the CLI dies");
            return CLI_STOPPED;
        }
    }
    return CLI_STOPPED;
}

/* The operator runs the command again after each FAIL until it is done. */
static void cli_until_done(sim *s, int target, bool allow_loss)
{
    rg_step step = {.name = "none"};
    while (!s->failed && cli_run(s, target, allow_loss, 0, &step) == CLI_FAIL) {
        int wait = 1 + below(s, 3);
        for (int i = 0; i < wait && !s->failed; i++)
            round_begin(s);
    }
}

/* ---- scenarios ------------------------------------------------------------------------------- */

static int other_than(sim *s, int a, int b)
{
    for (;;) {
        int r = below(s, s->n);
        if (r != a && r != b) return r;
    }
}

static void op_begin(sim *s, bool with_faults)
{
    s->op_round = 0;
    s->fault_end = with_faults && percent(s, 80) ? below(s, SIM_FAULT_ROUNDS_MAX + 1) : 0;
    s->res->ops++;
}

/* Held regions return, quiet rounds pass, and the command's second run changes nothing but
 * telling; then everything agrees with the target (d). */
static void op_end(sim *s, int target)
{
    for (int r = 0; r < s->n; r++)
        s->rg[r].held_down = s->rg[r].held_up = false;
    s->fault_end = (int)s->op_round; /* no more faults */
    for (int i = 0; i < SIM_SETTLE_ROUNDS && !s->failed; i++)
        round_begin(s);
    uint64_t promotions = s->res->promotions_planned + s->res->promotions_unplanned;
    cli_until_done(s, target, false);
    if (s->failed) return;
    if (s->res->promotions_planned + s->res->promotions_unplanned != promotions)
        return fail(s, "the second run of the command to %s promoted again", name(s, target));
    const sim_region *tg = &s->rg[target];
    for (int r = 0; r < s->n; r++) {
        const sim_region *g = &s->rg[r];
        if (g->st.epoch != tg->st.epoch || strcmp(g->st.primary, name(s, target)) != 0 ||
            g->st.op != RG_OP_NONE || g->st.fork_lsn != tg->st.fork_lsn)
            return fail(s,
                        "at the end %s holds epoch %" PRIu64 " primary %s fork %" PRIu64
                        " op %d, not epoch %" PRIu64 " primary %s fork %" PRIu64,
                        name(s, r), g->st.epoch, g->st.primary, g->st.fork_lsn, g->st.op,
                        tg->st.epoch, name(s, target), tg->st.fork_lsn);
        uint64_t m = g->vdl < tg->vdl ? g->vdl : tg->vdl;
        if (g->rec[m].chk != tg->rec[m].chk)
            return fail(s, "at the end %s's history differs from %s's at or below LSN %" PRIu64,
                        name(s, r), name(s, target), m);
    }
    if (tg->st.epoch > 0 && tg->first_g == tg->st.epoch && tg->st.fork_lsn != tg->first_recovered) {
        if (s->o->strict)
            return fail(s,
                        "%s's fork_lsn is %" PRIu64 " at epoch %" PRIu64
                        ", but its first writer of the epoch recovered VDL %" PRIu64
                        " (it died %s)",
                        name(s, target), tg->st.fork_lsn, tg->st.epoch, tg->first_recovered,
                        tg->first_seen ? "before its fork step landed" : "before the CLI saw it");
        s->res->forks_unconfirmed++;
    }
    check_acked(s, target, "at the end");
}

static int primary_now(sim *s)
{
    return true_primary(s);
}

static void op_switchover(sim *s)
{
    int to = below(s, s->n);
    op_begin(s, true);
    cli_until_done(s, to, false);
    op_end(s, to);
}

static void op_there_and_back(sim *s)
{
    int from = primary_now(s), to = other_than(s, from, from);
    op_begin(s, true);
    cli_until_done(s, to, false);
    op_end(s, to);
    op_begin(s, true);
    cli_until_done(s, from, false);
    op_end(s, from);
}

static void op_retarget(sim *s)
{
    int from = primary_now(s), first = other_than(s, from, from),
        second = other_than(s, from, first);
    rg_step step = {.name = "none"};
    op_begin(s, true);
    cli_run(s, first, false, 1 + below(s, 12), &step);
    s->res->retargets++;
    cli_until_done(s, second, false);
    op_end(s, second);
}

static void op_abort(sim *s)
{
    int from = primary_now(s), to = other_than(s, from, from);
    rg_step step = {.name = "none"};
    op_begin(s, true);
    s->stop_on_drain = from;
    cli_run(s, to, false, 30, &step);
    s->stop_on_drain = -1;
    if (below(s, 3) == 0) cli_run(s, to, false, 1 + below(s, 3), &step);
    cli_until_done(s, from, false);
    op_end(s, from);
}

static void op_failover(sim *s)
{
    int from = primary_now(s), to = other_than(s, from, from);
    op_begin(s, true);
    if (percent(s, 60)) {
        s->rg[from].held_down = true;
        s->rg[from].up = false;
        trace(s, "%s (the primary) is lost", name(s, from));
    }
    cli_until_done(s, to, true);
    op_end(s, to);
}

static void op_primary_lost(sim *s)
{
    int from = primary_now(s), to = other_than(s, from, from);
    rg_step step = {.name = "none"};
    op_begin(s, false);
    s->rg[from].held_down = true;
    s->rg[from].up = false;
    trace(s, "%s (the primary) is lost", name(s, from));
    if (cli_run(s, to, false, 0, &step) != CLI_FAIL && !s->failed)
        return fail(s, "a planned switchover without its primary does not fail: %s", step.why);
    if (strstr(step.why, name(s, from)) == NULL || strstr(step.why, "does not answer") == NULL)
        return fail(s, "the switchover fails without naming the lost primary: %s", step.why);
    cli_until_done(s, to, true);
    op_end(s, to);
}

static void op_failover_after_interrupt(sim *s)
{
    int from = primary_now(s), first = other_than(s, from, from),
        second = other_than(s, from, first);
    rg_step step = {.name = "none"};
    op_begin(s, true);
    /* the old primary answers: once the switchover's target is lost, only it may know the
     * switchover's epoch (when both are lost, no planner can know it) */
    s->rg[from].held_up = true;
    s->rg[from].up = true;
    cli_run(s, first, false, 1 + below(s, 20), &step);
    s->rg[first].held_down = true;
    s->rg[first].up = false;
    trace(s, "%s (the switchover's target) is lost", name(s, first));
    cli_until_done(s, second, true);
    op_end(s, second);
}

/* ---- a run ----------------------------------------------------------------------------------- */

static void start(sim *s)
{
    for (int e = 0; e < (int)SIM_EPOCHS_MAX; e++)
        s->primary_at[e] = -1;
    for (int r = 0; r < s->n; r++) {
        sim_region *g = &s->rg[r];
        rg_state_initial(s->t, r, &g->st);
        g->st.version = 1;
        g->up = true;
    }
    s->primary_at[0] = s->t->primary_region;
    for (int i = 0; i < 5; i++)
        world_step(s);
}

bool rsim_run(const rsim_options *o, rsim_result *res)
{
    sim *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(res->failure, sizeof(res->failure), "out of memory");
        return true;
    }
    memset(res, 0, sizeof(*res));
    s->o = o;
    s->res = res;
    s->rng = o->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    s->stop_on_drain = -1;
    s->n = 2 + below(s, 2);
    s->t = s->n == 3 ? o->topo3 : o->topo2;
    start(s);
    int ops = 3 + below(s, 3);
    for (int i = 0; i < ops && !s->failed; i++) {
        int k = below(s, 100);
        if (k < 30)
            op_switchover(s);
        else if (k < 42)
            op_there_and_back(s);
        else if (k < 56)
            s->n == 3 ? op_retarget(s) : op_switchover(s);
        else if (k < 70)
            op_abort(s);
        else if (k < 86)
            op_failover(s);
        else if (k < 93)
            op_primary_lost(s);
        else
            s->n == 3 ? op_failover_after_interrupt(s) : op_failover(s);
    }
    bool failed = s->failed;
    free(s);
    return failed;
}
